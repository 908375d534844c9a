/**
 * Router: key -> shard index, the one question routing answers, plus the grouping used to split multi-key
 * commands. SlotRouter uses CRC16 slots and a slot map (from the YAML, or discovered from a Redis Cluster);
 * RingRouter (ketama.ts) uses a twemproxy-compatible ketama continuum. A router is part of an immutable
 * topology snapshot and is never mutated after it is built.
 *
 * Grouping: with a YAML slot map or a ring, keys that reach the same shard can travel in one sub-command, so a
 * group is a shard. On a Redis Cluster every key of one command must share a slot (the server checks), so a
 * group is a slot.
 */
import type { KeymuxConfig } from '../config/schema.js';
import { crc16, SLOT_COUNT } from './crc16.js';
import { hashTagBytes, hashTagRange, type TagRange } from './hash-tag.js';
import { RingRouter } from './ketama.js';
import { SlotMap } from './slot-map.js';

export interface Router {
  /** Index of the shard owning `key` (>= shard count when no shard serves its slot). */
  shardFor(key: Buffer): number;
  /** The slot of `key` (slot routers) or -1 where slots do not apply (ring). */
  slotFor(key: Buffer): number;
  /** The split group of `key`: its slot when groups are slots, else its shard. */
  groupFor(key: Buffer): number;
  /** The shard serving a group. */
  shardOfGroup(group: number): number;
  readonly groupsAreSlots: boolean;
}

export class SlotRouter implements Router {
  readonly map: SlotMap;
  readonly groupsAreSlots: boolean;
  private readonly open: number;
  private readonly close: number;
  private readonly range: TagRange = { start: 0, end: 0 };

  constructor(map: SlotMap, hashTag: string | null, groupsAreSlots = false) {
    this.map = map;
    this.groupsAreSlots = groupsAreSlots;
    [this.open, this.close] = hashTagBytes(hashTag);
  }

  slotFor(key: Buffer): number {
    hashTagRange(key, 0, key.length, this.open, this.close, this.range);
    return crc16(key, this.range.start, this.range.end) & (SLOT_COUNT - 1);
  }

  shardFor(key: Buffer): number {
    return this.map.owners[this.slotFor(key)];
  }

  groupFor(key: Buffer): number {
    return this.groupsAreSlots ? this.slotFor(key) : this.shardFor(key);
  }

  shardOfGroup(group: number): number {
    return this.groupsAreSlots ? this.map.owners[group] : group;
  }
}

class RingAdapter implements Router {
  readonly groupsAreSlots = false;
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
  groupFor(key: Buffer): number {
    return this.ring.shardFor(key, 0, key.length);
  }
  shardOfGroup(group: number): number {
    return group;
  }
}

/** The router for a YAML-configured topology (slots or ring mode). */
export function buildRouter(config: KeymuxConfig): Router {
  if (config.mode === 'ring') return new RingAdapter(new RingRouter(config.shards, config.ring.hash, config.hashTag));
  return new SlotRouter(new SlotMap(config.shards.map((s) => s.slots)), config.hashTag);
}
