/**
 * Fan-out dispatch: a multi-key command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) is split into one sub-command per
 * group (shard, or slot on a Redis Cluster), each carrying its keys in the client's order, and the replies are merged
 * back (fanout/merge.ts). When every key lands in one group the client's own bytes go there, unsplit.
 * `sendFragments` is shared with broadcast dispatch. A fan-out of more than SLICE_ABOVE_KEYS keys (slots and ring
 * modes, no migration running when it starts) goes out in slices that let other clients through (fanout/sliced.ts;
 * a reload meanwhile routes its remaining slices by the new topology); the common small fan-out pays one comparison
 * for it.
 */
import { ERR_SLOT_NOT_SERVED, noReplicaReachable, wrongArity } from '../../errors.js';
import { buildFragments, groupKeys, spansGroups } from '../../fanout/split.js';
import { SLICE_ABOVE_KEYS, SlicedFanout } from '../../fanout/sliced.js';
import { MERGES } from './merges.js';
import type { Fragment } from '../../core/fragment.js';
import { materializeArgs, type Request } from '../../core/request.js';
import type { FanoutShape } from '../../commands/spec.js';
import type { Topology, UnservedHandler } from '../../routing/topology.js';
import type { DispatchHandler, DispatchSession } from './types.js';
import { ROLE_MGET } from '../../nearcache/near-cache.js';

export const dispatchFanout: DispatchHandler = (session, req, spec, topo) => {
  const shape = spec.fanoutShape ?? 'keys';
  if (shape === 'key-value' && (req.args.length - 1) % 2 !== 0) {
    req.deliver(wrongArity(spec.name));
    return;
  }
  const nc = session.ctx.nearCache;
  if (nc !== null) {
    // Near cache / coalescing (src/nearcache/): writes drop and hold their keys; MGET may be served from memory.
    if (spec.write) nc.write(req, null, 0, shape === 'key-value' ? 2 : 1);
    else if (req.protocol === 2 && nc.roleOf(spec) === ROLE_MGET && nc.serveMget(req, topo)) return;
  }
  const router = topo.router;
  const migration = topo.migration;
  // A large fan-out over several shards goes in slices; one whose keys all share a shard (a hash tag) keeps the
  // one-go path below: forwarded whole, it stays one atomic command on that shard, as the client meant.
  if (
    req.args.length - 1 > SLICE_ABOVE_KEYS * (shape === 'key-value' ? 2 : 1) &&
    topo.resender === null &&
    (migration === null || !migration.active) &&
    spansGroups(req, shape, router)
  ) {
    const read = spec.readonly;
    const merge = MERGES[spec.merge ?? 'mget'];
    new SlicedFanout(session, req, spec, topo, shape, merge, (f, t) => sendFragments(session, f, t, read)).start();
    return;
  }
  materializeArgs(req);
  if (migration !== null && migration.active) {
    const idx = session.keyIndexes;
    idx.length = 0;
    for (let i = 1; i < req.args.length; i += shape === 'key-value' ? 2 : 1) idx.push(i);
    if (session.holdForMigration(req, migration, idx, idx.length)) return;
  }
  const { single, groups } = groupKeys(req, shape, router);
  if (groups === null) {
    // Every key in one group: forward the client's own bytes, no split and no merge.
    req.group = single;
    req.multiKey = req.args.length > (shape === 'key-value' ? 3 : 2);
    const shard = topo.shards[router.shardOfGroup(single)];
    if (shard === undefined) {
      if (topo.onUnserved === null || !topo.onUnserved(req)) req.deliver(ERR_SLOT_NOT_SERVED);
      return;
    }
    req.shard = shard.index;
    const pool = spec.readonly ? topo.readPool(shard, session.id, req.args[1]) : shard.pool;
    if (pool === null) {
      req.deliver(noReplicaReachable(shard.name));
      return;
    }
    req.shardStats = pool.stats ?? null;
    routedKeys(session, req, shape);
    if (nc !== null && !spec.write && req.args.length === 2 && req.protocol === 2) {
      const role = nc.roleOf(spec); // single-key EXISTS: served, coalesced or cached like a keyed read
      if (role !== 0 && role !== ROLE_MGET) {
        nc.read(session, req, role, req.args[1], shard, pool, topo);
        return;
      }
    }
    session.sendUnit(req, pool, topo);
    return;
  }
  const fragments = buildFragments(req, shape, groups, router, MERGES[spec.merge ?? 'mget']);
  if (topo.onUnserved === null) {
    for (const f of fragments) {
      if (topo.shards[f.shard] === undefined) {
        req.deliver(ERR_SLOT_NOT_SERVED);
        return;
      }
    }
  }
  routedKeys(session, req, shape);
  sendFragments(session, fragments, topo, spec.readonly);
};

/** Sends each fragment to its shard (a replica's pool for reads under read_from), through the ordering fences. */
export function sendFragments(session: DispatchSession, fragments: Fragment[], topo: Topology, read: boolean): void {
  for (const f of fragments) {
    const shard = topo.shards[f.shard];
    if (shard === undefined) {
      // Cluster mode only (other modes refuse such a request before sending any fragment): retried later.
      if (!(topo.onUnserved as UnservedHandler)(f)) f.deliver(ERR_SLOT_NOT_SERVED);
      continue;
    }
    const pool = read ? topo.readPool(shard, session.id) : shard.pool;
    if (pool === null) {
      f.deliver(noReplicaReachable(shard.name));
      continue;
    }
    f.shardStats = pool.stats ?? null;
    if (f.group < 0) f.node = shard.address; // a broadcast piece is retried on this node, whatever the topology then
    session.sendUnit(f, pool, topo);
  }
}

/** Reports every key of a fan-out command to hot-key tracking. */
function routedKeys(session: DispatchSession, req: Request, shape: FanoutShape): void {
  const args = req.args;
  const stride = shape === 'key-value' ? 2 : 1;
  for (let i = 1; i < args.length; i += stride) session.ctx.onKeyRouted(args[i]);
}
