/**
 * CONFIG GET / SET / RESETSTAT: refused unless the operator turned on commands.config_broadcast; then SET and
 * RESETSTAT go to every shard (cluster mode: every master) and answer +OK only if every shard did, and GET is
 * answered by the keyless shard (the shards agree when every change came through keymux). The switch exists so
 * that tools that tune the server (Redis's own test suite) can run through keymux; it lets any client change
 * every shard's settings, so it is for deployments where every client is trusted. Inside MULTI they are queued with
 * the transaction (dispatch/session.ts): SET and RESETSTAT then reach the other shards once the transaction's shard
 * ran them. Whoever sends them, the shards' credentials stay keymux's: CONFIG GET's reply leaves out the
 * parameters in SECRET_PARAMETERS (as if the shard did not have them; withoutSecrets, in a transaction too) and
 * CONFIG SET of any of them is refused.
 */
import { ERR_SLOT_NOT_SERVED, errorReply } from '../../errors.js';
import { Fragment } from '../../core/fragment.js';
import type { Request } from '../../core/request.js';
import { elementEnd, readBulk } from '../../resp/reply-reader.js';
import { dispatchBroadcast } from './broadcast.js';
import type { DispatchHandler, DispatchSession } from './types.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Topology } from '../../routing/topology.js';

/**
 * The shards' passwords (the one keymux authenticates with, the one a replica gives its master, TLS key
 * passphrases): never read nor changed through keymux.
 */
export const SECRET_PARAMETERS: ReadonlySet<string> = new Set([
  'requirepass',
  'masterauth',
  'masteruser',
  'tls-key-file-pass',
  'tls-client-key-file-pass',
]);

const refusals = new Map<string, Buffer>();

function refusal(name: string): Buffer {
  let r = refusals.get(name);
  if (r === undefined) {
    r = errorReply(
      `ERR keymux: command '${name}' is not supported: configure each shard directly (an operator may turn on ` +
        'commands.config_broadcast to send CONFIG GET, SET and RESETSTAT to every shard)',
    );
    refusals.set(name, r);
  }
  return r;
}

function notOperator(name: string): Buffer {
  return errorReply(
    `ERR keymux: command '${name}' is for operators: commands.config_broadcast is on, but only users marked ` +
      '`operator: true` in clients.users may send it to every shard',
  );
}

function secretRefused(name: string): Buffer {
  return errorReply(
    `ERR keymux: CONFIG SET ${name} is refused: the shards' credentials (${[...SECRET_PARAMETERS].join(', ')}) ` +
      "are not read nor changed through keymux (keymux's own connections depend on them); set them on each shard",
  );
}

/**
 * Why this client may not send `spec` (a CONFIG subcommand, `args` the whole command) to the shards, or null when it
 * may.
 */
export function configRefusal(
  session: DispatchSession,
  spec: CommandSpec,
  args: Buffer[],
  topo: Topology,
): Buffer | null {
  if (!topo.config.commands.configBroadcast) return refusal(spec.name);
  // With users configured, only a user marked `operator: true` gets the broadcast form (security/acl.ts).
  if (!session.operator) return notOperator(spec.name);
  if (spec.name === 'config|set') {
    for (let i = 2; i < args.length; i += 2) {
      const name = args[i].toString('latin1').toLowerCase();
      if (SECRET_PARAMETERS.has(name)) return secretRefused(name);
    }
  }
  return null;
}

/**
 * CONFIG GET's reply (RESP2: a flat array of names and values; RESP3: a map) without the pairs of
 * SECRET_PARAMETERS. Left out rather than masked: the reply is then what a server without them answers (CONFIG GET
 * of an unknown name is an empty reply), where a mask would be taken for the value. Anything else (an error) as is.
 */
export function withoutSecrets(reply: Buffer): Buffer {
  const type = reply[0];
  if (type !== 42 /* * */ && type !== 37 /* % */) return reply;
  const eol = reply.indexOf('\r\n', 1, 'latin1');
  const count = Number(reply.toString('latin1', 1, eol));
  const pairs = type === 42 ? count >> 1 : count;
  if (!(pairs > 0)) return reply;
  const kept: Buffer[] = [];
  let pos = eol + 2;
  for (let i = 0; i < pairs; i++) {
    const nameEnd = elementEnd(reply, pos);
    const valueEnd = nameEnd < 0 ? -1 : elementEnd(reply, nameEnd);
    if (valueEnd < 0) return reply;
    const name = readBulk(reply.subarray(pos, nameEnd));
    if (name === null || !SECRET_PARAMETERS.has(name.toString('latin1').toLowerCase()))
      kept.push(reply.subarray(pos, valueEnd));
    pos = valueEnd;
  }
  if (kept.length === pairs) return reply;
  const header = type === 42 ? `*${kept.length * 2}\r\n` : `%${kept.length}\r\n`;
  return Buffer.concat([Buffer.from(header, 'latin1'), ...kept]);
}

const mergeWithoutSecrets = (parent: Request): Buffer =>
  withoutSecrets((parent.fragments as Fragment[])[0].reply as Buffer);

/** CONFIG GET: to the keyless shard, as a one-piece fan-out whose merge leaves the secrets out. */
function configGet(session: DispatchSession, req: Request, topo: Topology): void {
  const router = topo.router;
  const shardIndex = router.shardOfGroup(router.keylessGroup());
  const shard = topo.shards[shardIndex];
  if (shard === undefined) {
    if (topo.onUnserved === null || !topo.onUnserved(req)) req.deliver(ERR_SLOT_NOT_SERVED);
    return;
  }
  const pool = shard.pool;
  const piece = new Fragment(req, shardIndex, [], req.frame, mergeWithoutSecrets, -1);
  req.fragments = [piece];
  req.remaining = 1;
  piece.shardStats = pool.stats ?? null;
  piece.node = shard.address; // a broadcast piece: retried on this node (cluster mode)
  session.sendUnit(piece, pool, topo);
}

export const dispatchConfig: DispatchHandler = (session, req, spec, topo) => {
  const refused = configRefusal(session, spec, req.args, topo);
  if (refused !== null) {
    req.deliver(refused);
    return;
  }
  if (spec.merge === null) configGet(session, req, topo);
  else dispatchBroadcast(session, req, spec, topo);
};
