/**
 * One-shard dispatch: a command that names no key and concerns no particular shard (TIME, LASTSAVE, LOLWUT,
 * FUNCTION LIST/DUMP/STATS, ... HELP, and EVAL/EVALSHA/FCALL and other keyed commands invoked with no key) goes to
 * the keyless shard: the owner of slot 0 in slots and cluster modes, the first listed server in ring mode
 * (Router.keylessGroup). Always the same one, so a script without declared keys sees the same server every time.
 */
import { ERR_SLOT_NOT_SERVED, noReplicaReachable } from '../../errors.js';
import { argAt, type Request } from '../../core/request.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Topology } from '../../routing/topology.js';
import type { DispatchHandler, DispatchSession } from './types.js';

/**
 * EVAL / EVAL_RO about to run on shard `ranOn`: its script is loaded on the other shards too (ScriptMemory.shareEval),
 * through the connections this client's later commands take, so its EVALSHA or SCRIPT EXISTS finds it on any shard.
 */
export function shareEvalScript(
  session: DispatchSession,
  req: Request,
  spec: CommandSpec,
  topo: Topology,
  ranOn: number,
): void {
  if ((spec.name !== 'eval' && spec.name !== 'eval_ro') || req.args.length < 2) return;
  const protocol = session.protocol;
  session.ctx.scripts.shareEval(argAt(req, 1), ranOn, topo, (pool) => pool.forProtocol(protocol).pick(session.id));
}

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
  if (spec.runsScript === true) shareEvalScript(session, req, spec, topo, shard.index);
  session.sendUnit(req, pool, topo);
};
