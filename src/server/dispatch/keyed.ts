/**
 * Keyed dispatch: every key of the command must route to one group (a shard in slots and ring modes, a slot on a
 * Redis Cluster; else -CROSSSLOT); the client's own bytes go to that shard, unchanged. Read-only commands may go
 * to a replica (read_from). The fast path: one key lookup, one routing decision, one send. An invocation with no
 * key at all (EVAL with numkeys 0) goes to the keyless shard (one-shard.ts). With the near cache or coalescing on,
 * reads of near_cache.commands go through it and writes (scripts too) tell it their keys (src/nearcache/). SORT with
 * a `*` pattern or a STORE on another shard is run by keymux (keyspace/sort.ts). Scripts: one-shard.ts's
 * shareEvalScript and sendToShard (an EVALSHA_RO whose replica lacks the script runs on the primary).
 */
import {
  KEYS_ERROR_OPTION_REFUSED,
  findKeyIndexes,
  isKeylessOrBadNumkeys,
  keysErrorReply,
} from '../../commands/keys.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Request } from '../../core/request.js';
import type { Topology } from '../../routing/topology.js';
import { parseSort, runSort } from '../../keyspace/sort.js';
import type { DispatchSession } from './types.js';
import { ERR_CROSSSLOT, ERR_SLOT_NOT_SERVED, noReplicaReachable } from '../../errors.js';
import { dispatchOneShard, sendToShard, shareEvalScript } from './one-shard.js';
import type { DispatchHandler } from './types.js';

export const dispatchKeyed: DispatchHandler = (session, req, spec, topo) => {
  const idx = session.keyIndexes;
  const n = findKeyIndexes(spec, req.args, idx);
  if (n <= 0) {
    // No key in this invocation (EVAL script 0, FCALL f 0, SINTERCARD 0 ...): nothing to route by, and nothing it
    // could touch but what a script reaches undeclared; the keyless shard runs it. A numkeys the server rejects
    // (not an integer, negative, more than the arguments) goes there too: the server refuses it without running
    // anything, in each command's own words (EVAL's differ from SINTERCARD's or ZMPOP's).
    if (isKeylessOrBadNumkeys(n)) dispatchOneShard(session, req, spec, topo);
    else if (n === KEYS_ERROR_OPTION_REFUSED && sortsHere(spec, topo)) sortInKeymux(session, req, spec, topo);
    else req.deliver(keysErrorReply(n, spec));
    return;
  }
  const router = topo.router;
  const args = req.args;
  const group = router.groupFor(args[idx[0]]);
  for (let i = 1; i < n; i++) {
    if (router.groupFor(args[idx[i]]) !== group) {
      if (sortsHere(spec, topo))
        sortInKeymux(session, req, spec, topo); // SORT ... STORE on another shard
      else req.deliver(ERR_CROSSSLOT);
      return;
    }
  }
  req.group = group;
  req.multiKey = n > 1;
  const shard = topo.shards[router.shardOfGroup(group)];
  if (shard === undefined) {
    // Cluster mode: no master for this slot right now (failover): the controller retries it with backoff.
    if (topo.onUnserved === null || !topo.onUnserved(req)) req.deliver(ERR_SLOT_NOT_SERVED);
    return;
  }
  const migration = topo.migration;
  if (migration !== null && migration.active && session.holdForMigration(req, migration, idx, n)) return;
  req.shard = shard.index;
  const pool = spec.readonly ? topo.readPool(shard, session.id, args[idx[0]]) : shard.pool;
  if (pool === null) {
    req.deliver(noReplicaReachable(shard.name));
    return;
  }
  req.shardStats = pool.stats ?? null;
  session.ctx.onKeyRouted(args[idx[0]]);
  if (spec.runsScript === true) shareEvalScript(session, req, spec, topo, pool === shard.pool ? shard.index : -1);
  const nc = session.ctx.nearCache;
  if (nc !== null) {
    // Near cache / coalescing (src/nearcache/): reads it serves go through it; writes drop and hold their keys.
    // A script (EVAL, FCALL; not flagged write) may write its declared keys: treated as a write of them.
    if (spec.write || spec.runsScript === true) nc.write(req, idx, n, 1);
    else if (n === 1 && req.protocol === 2) {
      // RESP2 replies only: a cached or shared reply is bytes, and RESP3 ones differ (maps, `_` nulls).
      const role = nc.roleOf(spec);
      if (role !== 0) {
        nc.read(session, req, role, args[idx[0]], shard, pool, topo);
        return;
      }
    }
  }
  if (spec.runsScript === true) sendToShard(session, req, spec, topo, shard, pool);
  else session.sendUnit(req, pool, topo);
};

/**
 * SORT / SORT_RO that the key's shard cannot run alone (a BY/GET pattern with `*`, a STORE on another shard): keymux
 * runs it (keyspace/sort.ts), in slots and ring modes; cluster mode refuses it, as Redis Cluster does.
 */
function sortsHere(spec: CommandSpec, topo: Topology): boolean {
  return (spec.name === 'sort' || spec.name === 'sort_ro') && topo.config.mode !== 'cluster';
}

function sortInKeymux(session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology): void {
  const plan = parseSort(req.args, spec.name === 'sort_ro');
  if (Buffer.isBuffer(plan)) req.deliver(plan);
  else runSort(session, req, topo, plan);
}
