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
import { RoutingRules } from './rules.js';

export interface Router {
  /** Index of the shard owning `key` (>= shard count when no shard serves its slot). */
  shardFor(key: Buffer): number;
  /** The slot of `key` (slot routers) or -1 where slots do not apply (ring). */
  slotFor(key: Buffer): number;
  /** The split group of `key`: its slot when groups are slots, else its shard. */
  groupFor(key: Buffer): number;
  /** The shard serving a group. */
  shardOfGroup(group: number): number;
  /**
   * The group of commands that name no key (EVAL with numkeys 0, TIME, FUNCTION LIST...): the owner of slot 0
   * (slots mode; cluster mode: slot 0 itself) or the first listed server (ring mode). Deterministic, documented.
   */
  keylessGroup(): number;
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

  keylessGroup(): number {
    return this.groupsAreSlots ? 0 : this.map.owners[0];
  }
}

/** A slot router with routing rules (routing.ts): a key a rule matches hashes its captured bytes. */
class RuledSlotRouter extends SlotRouter {
  private readonly rules: RoutingRules;
  private readonly ruled: TagRange = { start: 0, end: 0 };
  private readonly tagged: TagRange = { start: 0, end: 0 };
  private readonly tagOpen: number;
  private readonly tagClose: number;

  constructor(map: SlotMap, hashTag: string | null, rules: RoutingRules) {
    super(map, hashTag, false);
    this.rules = rules;
    [this.tagOpen, this.tagClose] = hashTagBytes(hashTag);
  }

  override slotFor(key: Buffer): number {
    const r = this.ruled;
    if (!this.rules.apply(key, r)) return super.slotFor(key);
    const t = this.tagged;
    hashTagRange(key, r.start, r.end, this.tagOpen, this.tagClose, t);
    return crc16(key, t.start, t.end) & (SLOT_COUNT - 1);
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
  keylessGroup(): number {
    return 0;
  }
}

/** A ring router with routing rules: a key a rule matches is placed by its captured bytes. */
class RuledRingAdapter extends RingAdapter {
  private readonly rules: RoutingRules;
  private readonly ringRouter: RingRouter;
  private readonly ruled: TagRange = { start: 0, end: 0 };

  constructor(ring: RingRouter, rules: RoutingRules) {
    super(ring);
    this.ringRouter = ring;
    this.rules = rules;
  }

  override shardFor(key: Buffer): number {
    const r = this.ruled;
    if (!this.rules.apply(key, r)) return super.shardFor(key);
    return this.ringRouter.shardFor(key, r.start, r.end);
  }

  override groupFor(key: Buffer): number {
    return this.shardFor(key);
  }
}

/**
 * The router for a YAML-configured topology (slots or ring mode). Without routing rules (the default) these are
 * the plain routers: the rules cost nothing unless configured.
 */
export function buildRouter(config: KeymuxConfig): Router {
  const rules = config.routing.length > 0 ? new RoutingRules(config.routing) : null;
  if (config.mode === 'ring') {
    const ring = new RingRouter(config.shards, config.ring.hash, config.hashTag);
    return rules === null ? new RingAdapter(ring) : new RuledRingAdapter(ring, rules);
  }
  const map = new SlotMap(config.shards.map((s) => s.slots));
  return rules === null ? new SlotRouter(map, config.hashTag) : new RuledSlotRouter(map, config.hashTag, rules);
}
