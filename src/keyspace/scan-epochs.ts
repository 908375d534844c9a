/**
 * The routings SCAN walks have begun under, by epoch (8 bits of a hash of Topology.routingSignature()), so that a
 * walk spanning a reload filters each shard's keys by the routing it began with and knows that routing's shard list
 * (keyspace/scan-cursor.ts, server/dispatch/scan.ts). Filled lazily by SCAN itself (a walk's first call records its
 * routing); the last 16 are kept, each under a number of its own (the hash, or the next free number when a kept
 * routing has it). A cursor whose epoch is unknown here (keymux restarted with another routing, another keymux or
 * worker that served no SCAN while the walk's routing was in force, or 16 routings since) is read against the
 * current routing: the walk goes on, without the guarantee for keys moved before that.
 */
import type { Router } from '../routing/router.js';
import type { Topology } from '../routing/topology.js';
import { EPOCHS } from './scan-cursor.js';

export interface ScanEpoch {
  readonly epoch: number;
  readonly signature: string;
  readonly router: Router;
  /** The routing's shards in order (a cursor's shard numbers index this list). */
  readonly shards: readonly ScanShard[];
  /** The shards' ids joined: two epochs with the same list of shards have the same text. */
  readonly shardList: string;
}

export interface ScanShard {
  /**
   * What makes it the same shard in another routing: its address, or for a shard whose primary the sentinels name,
   * that master name (a failover changes the address, not the keys).
   */
  readonly id: string;
  readonly address: string;
}

const KEEP = 16;

export class ScanEpochs {
  private readonly byTopology = new WeakMap<Topology, ScanEpoch>();
  private readonly byEpoch = new Map<number, ScanEpoch>();

  /** The epoch of `topo` (computed once per snapshot), recorded as the latest for its number. */
  of(topo: Topology): ScanEpoch {
    let e = this.byTopology.get(topo);
    if (e === undefined) {
      const signature = topo.routingSignature();
      // 8 bits collide (1 in 256 for two routings): a new routing whose number a kept one already has takes the
      // next free number instead, or a walk begun under the old one would be read against the new one and miss the
      // keys that moved (seen once in CI: a third of the keys).
      let epoch = hash8(signature);
      for (let i = 0; i < EPOCHS; i++) {
        const held = this.byEpoch.get(epoch);
        if (held === undefined || held.signature === signature) break;
        epoch = (epoch + 1) & (EPOCHS - 1);
      }
      const shards = topo.shards.map((s) => ({
        id: s.sentinelMaster === null ? s.address : `sentinel:${s.sentinelMaster}`,
        address: s.address,
      }));
      e = { epoch, signature, router: topo.router, shards, shardList: shards.map((s) => s.id).join(',') };
      this.byTopology.set(topo, e);
      this.byEpoch.delete(e.epoch);
      this.byEpoch.set(e.epoch, e);
      if (this.byEpoch.size > KEEP) this.byEpoch.delete(this.byEpoch.keys().next().value as number);
    }
    return e;
  }

  /** A recorded epoch by number, or undefined. */
  get(epoch: number): ScanEpoch | undefined {
    return this.byEpoch.get(epoch);
  }
}

/** FNV-1a of the text, folded to 0..EPOCHS-1. */
export function hash8(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h >>>= 0;
  return (h ^ (h >>> 8) ^ (h >>> 16) ^ (h >>> 24)) & (EPOCHS - 1);
}
