/**
 * Fragment: the part of a fan-out request sent to one shard (one MGET/DEL/... with that shard's keys, or one copy
 * of a broadcast command). It records which of the parent's key positions it carries, so the merger can put
 * values back in the client's key order, and counts itself off the parent when its reply arrives; the last
 * fragment to arrive triggers the merge.
 */
import type { BackendOp, Request } from './request.js';
import type { ShardStats } from '../metrics/stats.js';

export type MergeFn = (parent: Request) => Buffer;

export class Fragment implements BackendOp {
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

  constructor(parent: Request, shard: number, keyOrdinals: number[], frame: Buffer, merge: MergeFn) {
    this.parent = parent;
    this.shard = shard;
    this.shardStats = null;
    this.keyOrdinals = keyOrdinals;
    this.frame = frame;
    this.reply = null;
    this.sentAt = 0;
    this.redirects = 0;
    this.merge = merge;
  }

  get sessionId(): number {
    return this.parent.owner.id;
  }

  deliver(frame: Buffer): void {
    if (this.reply !== null) return;
    this.reply = frame;
    const parent = this.parent;
    if (--parent.remaining === 0) parent.deliver(this.merge(parent));
  }
}
