/**
 * Router: key -> shard index, the one question routing answers. SlotRouter uses CRC16 slots and the configured
 * slot map; RingRouter (ketama.ts) uses a twemproxy-compatible ketama continuum. A router is part of an immutable
 * topology snapshot and is never mutated after it is built.
 */
import type { KeymuxConfig } from '../config/schema.js';
import { crc16, SLOT_COUNT } from './crc16.js';
import { hashTagBytes, hashTagRange, type TagRange } from './hash-tag.js';
import { RingRouter } from './ketama.js';
import { SlotMap } from './slot-map.js';

export interface Router {
  /** Index of the shard owning `key`. */
  shardFor(key: Buffer): number;
  /** The slot of `key` (slots mode) or -1 where slots do not apply (ring mode). */
  slotFor(key: Buffer): number;
}

export class SlotRouter implements Router {
  readonly map: SlotMap;
  private readonly open: number;
  private readonly close: number;
  private readonly range: TagRange = { start: 0, end: 0 };

  constructor(map: SlotMap, hashTag: string | null) {
    this.map = map;
    [this.open, this.close] = hashTagBytes(hashTag);
  }

  slotFor(key: Buffer): number {
    hashTagRange(key, 0, key.length, this.open, this.close, this.range);
    return crc16(key, this.range.start, this.range.end) & (SLOT_COUNT - 1);
  }

  shardFor(key: Buffer): number {
    return this.map.owners[this.slotFor(key)];
  }
}

class RingAdapter implements Router {
  private readonly ring: RingRouter;
  constructor(ring: RingRouter) {
    this.ring = ring;
  }
  shardFor(key: Buffer): number {
    return this.ring.shardFor(key, 0, key.length);
  }
  slotFor(): number {
    return -1;
  }
}

export function buildRouter(config: KeymuxConfig): Router {
  if (config.mode === 'ring') return new RingAdapter(new RingRouter(config.shards, config.ring.hash, config.hashTag));
  return new SlotRouter(new SlotMap(config.shards.map((s) => s.slots)), config.hashTag);
}
