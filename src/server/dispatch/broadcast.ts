/**
 * Broadcast dispatch: commands that concern every shard (FLUSHALL, FLUSHDB, DBSIZE, INFO...) go unchanged to each
 * shard, and the replies are merged (all +OK, summed, or INFO with the keyspace aggregated).
 */
import { broadcastFragments } from '../../fanout/split.js';
import { MERGES } from './merges.js';
import { INFO_KEYSPACE_FRAME } from '../../commands/info.js';
import { sendFragments } from './fanout.js';
import type { DispatchHandler } from './types.js';

export const dispatchBroadcast: DispatchHandler = (session, req, spec, topo) => {
  const merge = spec.merge ?? 'all-ok';
  let frame = req.frame;
  if (merge === 'info') {
    req.mergeContext = { args: req.args, topology: topo, ctx: session.ctx, session };
    frame = INFO_KEYSPACE_FRAME;
  }
  if (spec.write && session.ctx.nearCache !== null) session.ctx.nearCache.writeAll(req); // FLUSHALL...: drop all
  const fragments = broadcastFragments(req, topo.shards.length, frame, MERGES[merge]);
  sendFragments(session, fragments, topo, false);
};
