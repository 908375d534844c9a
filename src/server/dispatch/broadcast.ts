/**
 * Broadcast dispatch: commands that concern every shard (FLUSHALL, FLUSHDB, DBSIZE, INFO...) go unchanged to each
 * shard, and the replies are merged (all +OK, summed, INFO with the keyspace aggregated, KEYS concatenated, SCRIPT
 * and FUNCTION changes checked alike on every shard: keyspace/merges.ts). Cluster mode: every master.
 * While keys move between shards (src/migration/) such a command is sent only once no MIGRATE runs, and none
 * starts until its replies are in (ProxyContext.pauseMigrations: this process's moves, or with workers the
 * leader's): it sees every key once, and a FLUSHALL leaves none behind.
 * A command flagged toReplicas (SCRIPT FLUSH) also goes to every replica of the slots and ring modes' shards that
 * keymux can reach, and is answered once they have answered too: EVALSHA_RO runs on those replicas and keymux loads
 * scripts there, but Redis does not propagate SCRIPT FLUSH, so a replica left out would still run a flushed script.
 * A replica that is down is skipped: keymux reads nothing from it, and a restarted Redis has no scripts. Cluster
 * mode sends EVALSHA_RO to the masters, and retries a broadcast piece on masters only: masters only there.
 */
import { broadcastFragments } from '../../fanout/split.js';
import { Fragment, type MergeFn } from '../../core/fragment.js';
import type { ShardPool } from '../../backend/pool.js';
import type { Request } from '../../core/request.js';
import type { Topology } from '../../routing/topology.js';
import { MERGES } from './merges.js';
import { infoShardFrame } from '../../commands/info.js';
import { sendFragments } from './fanout.js';
import type { DispatchHandler } from './types.js';

export const dispatchBroadcast: DispatchHandler = (session, req, spec, topo) => {
  const merge = MERGES[spec.merge ?? 'all-ok'];
  let frame = req.frame;
  req.mergeContext = { args: req.args, topology: topo, ctx: session.ctx, session };
  if (spec.merge === 'info') frame = infoShardFrame(req.args);
  if (spec.write && session.ctx.nearCache !== null) session.ctx.nearCache.writeAll(req); // FLUSHALL...: drop all
  // With no key moving this sends at once (the pause is quiet); it costs an object per broadcast, which is rare.
  const pause = session.ctx.pauseMigrations();
  const mergeAll: MergeFn = (parent) => {
    pause.release();
    return merge(parent);
  };
  const fragments = broadcastFragments(req, topo.shards.length, frame, mergeAll);
  const replicaPieces = spec.toReplicas === true ? addReplicaPieces(req, topo, frame, mergeAll) : null;
  let sent = false;
  let holding = false;
  pause.whenQuiet(() => {
    sent = true;
    const now = session.ctx.topology;
    if (now !== topo) {
      // A reload came while MIGRATEs ended: the shards to ask are the new topology's (its migration pauses anew).
      pause.release();
      dispatchBroadcast(session, req, spec, now);
    } else {
      sendFragments(session, fragments, topo, false);
      if (replicaPieces !== null) {
        for (const [piece, replica] of replicaPieces) {
          piece.shardStats = replica.stats ?? null;
          session.sendUnit(piece, replica, topo);
        }
      }
    }
    // Sent first: the client's later commands, released now, reach each shard after it.
    if (holding) session.releaseLater();
  });
  if (!sent) {
    // MIGRATEs are running: the client's later commands wait behind this one, in its order.
    holding = true;
    session.holdLater();
  }
};

/**
 * One more piece of `req` per reachable replica (slots and ring modes), counted in its merge like a shard's; each
 * with the pool it goes to. The pieces carry their shard's index, which the merges of such commands do not read.
 */
function addReplicaPieces(
  req: Request,
  topo: Topology,
  frame: Buffer,
  merge: MergeFn,
): Array<[Fragment, ShardPool]> | null {
  if (topo.resender !== null) return null;
  const pieces: Array<[Fragment, ShardPool]> = [];
  const all = req.fragments as Fragment[];
  for (const shard of topo.shards) {
    for (const replica of shard.replicas) {
      if (!replica.usable) continue;
      const piece = new Fragment(req, shard.index, [], frame, merge, -1);
      all.push(piece);
      pieces.push([piece, replica]);
    }
  }
  req.remaining = all.length;
  return pieces;
}
