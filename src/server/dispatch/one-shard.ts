/**
 * One-shard dispatch: a command that names no key and concerns no particular shard (TIME, LASTSAVE, LOLWUT,
 * FUNCTION LIST/DUMP/STATS, ... HELP, and EVAL/EVALSHA/FCALL and other keyed commands invoked with no key) goes to
 * the keyless shard: the owner of slot 0 in slots and cluster modes, the first listed server in ring mode
 * (Router.keylessGroup). Always the same one, so a script without declared keys sees the same server every time.
 */
import { ERR_SLOT_NOT_SERVED, noReplicaReachable } from '../../errors.js';
import type { DispatchHandler } from './types.js';

export const dispatchOneShard: DispatchHandler = (session, req, spec, topo) => {
  const router = topo.router;
  const group = router.keylessGroup();
  req.group = group;
  const shard = topo.shards[router.shardOfGroup(group)];
  if (shard === undefined) {
    if (topo.onUnserved === null || !topo.onUnserved(req)) req.deliver(ERR_SLOT_NOT_SERVED);
    return;
  }
  req.shard = shard.index;
  const pool = spec.readonly ? topo.readPool(shard, session.id) : shard.pool;
  if (pool === null) {
    req.deliver(noReplicaReachable(shard.name));
    return;
  }
  req.shardStats = pool.stats ?? null;
  session.sendUnit(req, pool, topo);
};
