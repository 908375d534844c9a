/**
 * One-shard dispatch: a command that names no key and concerns no particular shard (TIME, LASTSAVE, LOLWUT,
 * FUNCTION LIST/DUMP/STATS, ... HELP, and EVAL/EVALSHA/FCALL and other keyed commands invoked with no key) goes to
 * the keyless shard: the owner of slot 0 in slots and cluster modes, the first listed server in ring mode
 * (Router.keylessGroup). Always the same one, so a script without declared keys sees the same server every time.
 * Also what keyed dispatch shares for scripts: an EVAL's body loaded on the other shards (shareEvalScript), and an
 * EVALSHA_RO sent to a replica that lacks its script run on the primary instead (sendToShard).
 */
import { ERR_SLOT_NOT_SERVED, noReplicaReachable } from '../../errors.js';
import { argAt, UNIT_AT_BACKEND, type BackendOp, type Request } from '../../core/request.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { ShardRuntime, Topology } from '../../routing/topology.js';
import type { ShardPool } from '../../backend/pool.js';
import type { BackendConnection } from '../../backend/backend-connection.js';
import type { ScriptMemory } from '../../keyspace/script-memory.js';
import type { DispatchHandler, DispatchSession } from './types.js';

/**
 * EVAL / EVAL_RO about to run on the primary of shard `ranOn` (-1: on a replica): its script is loaded on the other
 * primaries too (ScriptMemory.shareEval), through the connections this client's later commands take, so its EVALSHA
 * or SCRIPT EXISTS finds it on any shard.
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
  if (spec.runsScript === true) shareEvalScript(session, req, spec, topo, pool === shard.pool ? shard.index : -1);
  sendToShard(session, req, spec, topo, shard, pool);
};

/**
 * Sends `req`, routed to `shard`, through `pool` (the shard's primary or, for a read-only command, a replica).
 * EVALSHA_RO is the one read a replica may be unable to serve: Redis 7 propagates neither SCRIPT LOAD nor its script
 * cache to replicas, and keymux loads scripts (SCRIPT LOAD, EVAL sharing, the replay on new shards) on primaries. So
 * on a replica its -NOSCRIPT is not the answer: the call runs on the shard's primary, which has every script loaded
 * through keymux (an EVALSHA's view), and a script keymux remembers is loaded on that replica meanwhile, so later calls
 * are served there. Asking the replica each time, rather than tracking what it has, stays right whoever the replicas
 * are (restarted, replaced after a failover or a reload). Cluster mode re-sends units itself (redirections, retries):
 * there EVALSHA_RO goes to the primary.
 */
export function sendToShard(
  session: DispatchSession,
  req: Request,
  spec: CommandSpec,
  topo: Topology,
  shard: ShardRuntime,
  pool: ShardPool,
): void {
  if (pool === shard.pool || spec.name !== 'evalsha_ro') session.sendUnit(req, pool, topo);
  else if (topo.resender !== null) session.sendUnit(req, shard.pool, topo);
  else {
    req.state = UNIT_AT_BACKEND;
    const replica = pool.forProtocol(req.protocol).pick(session.id);
    replica.send(new ReplicaScriptCall(req, replica, shard.pool, session.ctx.scripts), req.frame);
  }
}

/** EVALSHA_RO on a replica: its reply, unless NOSCRIPT, which sends the call to the primary (see sendToShard). */
class ReplicaScriptCall implements BackendOp {
  sentAt = 0;
  redirects = 0;
  constructor(
    private readonly req: Request,
    private readonly replica: BackendConnection,
    private readonly primary: ShardPool,
    private readonly scripts: ScriptMemory,
  ) {}

  get frame(): Buffer {
    return this.req.frame;
  }

  get sessionId(): number {
    return this.req.owner.id;
  }

  deliver(reply: Buffer): void {
    const req = this.req;
    if (req.done || !isNoScript(reply) || req.args.length < 2) {
      req.deliver(reply);
      return;
    }
    this.scripts.loadOn(this.replica, argAt(req, 1).toString('latin1'));
    req.shardStats = this.primary.stats ?? null;
    this.primary.forProtocol(req.protocol).pick(req.owner.id).send(req, req.frame);
  }
}

const NOSCRIPT = Buffer.from('-NOSCRIPT ');

function isNoScript(reply: Buffer): boolean {
  return reply.length > NOSCRIPT.length && reply.subarray(0, NOSCRIPT.length).equals(NOSCRIPT);
}
