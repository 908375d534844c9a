/**
 * Fragment: the part of a fan-out request sent to one shard (one MGET/DEL/... with that shard's keys, or one copy
 * of a broadcast command). It records which of the parent's key positions it carries, so the merger can put
 * values back in the client's key order, and counts itself off the parent when its reply arrives; the last
 * fragment to arrive triggers the merge. A broadcast piece also records the node it is meant for, so a retry goes
 * back to that node and not to whatever has the same index in a newer topology.
 */
import { UNIT_NEW, type Request, type RequestOwner, type RoutedUnit } from './request.js';
import type { ShardStats } from '../metrics/stats.js';

export type MergeFn = (parent: Request) => Buffer;

export class Fragment implements RoutedUnit {
  parent: Request;
  /** Shard index this fragment was sent to. */
  shard: number;
  /** Counters of that shard, set when the fragment is sent. */
  shardStats: ShardStats | null;
  /** Positions (0-based key ordinal in the parent command) of the keys this fragment carries. */
  keyOrdinals: number[];
  frame: Buffer;
  reply: Buffer | null;
  sentAt: number;
  redirects: number;
  merge: MergeFn;
  group: number;
  multiKey: boolean;
  state: number;
  fenced: boolean;
  redirectTo: string | null;
  asking: boolean;
  lastError: Buffer | null;
  /** A broadcast piece: the address of the node it is meant for (set when sent); null for keyed fragments. */
  node: string | null;

  constructor(parent: Request, shard: number, keyOrdinals: number[], frame: Buffer, merge: MergeFn, group: number) {
    this.parent = parent;
    this.shard = shard;
    this.shardStats = null;
    this.keyOrdinals = keyOrdinals;
    this.frame = frame;
    this.reply = null;
    this.sentAt = 0;
    this.redirects = 0;
    this.merge = merge;
    this.group = group;
    this.multiKey = keyOrdinals.length > 1;
    this.state = UNIT_NEW;
    this.fenced = false;
    this.redirectTo = null;
    this.asking = false;
    this.lastError = null;
    this.node = null;
  }

  get sessionId(): number {
    return this.parent.owner.id;
  }

  get seq(): number {
    return this.parent.seq;
  }

  get owner(): RequestOwner {
    return this.parent.owner;
  }

  get reads(): boolean {
    return this.parent.reads;
  }

  get writes(): boolean {
    return this.parent.writes;
  }

  get answered(): boolean {
    return this.reply !== null;
  }

  get protocol(): number {
    return this.parent.protocol;
  }

  deliver(frame: Buffer): void {
    if (this.reply !== null) return;
    this.reply = frame;
    if (this.fenced) this.parent.owner.onFencedUnitDone(this);
    const parent = this.parent;
    if (--parent.remaining === 0) parent.deliver(this.merge(parent));
  }
}
