/**
 * Broadcast dispatch: commands that concern every shard (FLUSHALL, FLUSHDB, DBSIZE, INFO...) go unchanged to each
 * shard, and the replies are merged (all +OK, summed, INFO with the keyspace aggregated, KEYS concatenated, SCRIPT
 * and FUNCTION changes checked alike on every shard: keyspace/merges.ts). Cluster mode: every master.
 * While keys move between shards (src/migration/) such a command is sent only once no MIGRATE runs, and none
 * starts until its replies are in (ProxyContext.pauseMigrations: this process's moves, or with workers the
 * leader's): it sees every key once, and a FLUSHALL leaves none behind.
 */
import { broadcastFragments } from '../../fanout/split.js';
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
  const fragments = broadcastFragments(req, topo.shards.length, frame, (parent) => {
    pause.release();
    return merge(parent);
  });
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
