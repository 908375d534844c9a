/**
 * Broadcast dispatch: commands that concern every shard (FLUSHALL, FLUSHDB, DBSIZE, INFO...) go unchanged to each
 * shard, and the replies are merged (all +OK, summed, INFO with the keyspace aggregated, KEYS concatenated, SCRIPT
 * and FUNCTION changes checked alike on every shard: keyspace/merges.ts). Cluster mode: every master.
 */
import { broadcastFragments } from '../../fanout/split.js';
import { MERGES } from './merges.js';
import { infoShardFrame } from '../../commands/info.js';
import { sendFragments } from './fanout.js';
import type { DispatchHandler } from './types.js';

export const dispatchBroadcast: DispatchHandler = (session, req, spec, topo) => {
  const merge = spec.merge ?? 'all-ok';
  let frame = req.frame;
  req.mergeContext = { args: req.args, topology: topo, ctx: session.ctx, session };
  if (merge === 'info') frame = infoShardFrame(req.args);
  if (spec.write && session.ctx.nearCache !== null) session.ctx.nearCache.writeAll(req); // FLUSHALL...: drop all
  const fragments = broadcastFragments(req, topo.shards.length, frame, MERGES[merge]);
  sendFragments(session, fragments, topo, false);
};
