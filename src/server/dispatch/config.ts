/**
 * CONFIG GET / SET / RESETSTAT: refused unless the operator turned on commands.config_broadcast; then SET and
 * RESETSTAT go to every shard (cluster mode: every master) and answer +OK only if every shard did, and GET is
 * answered by the keyless shard (the shards agree when every change came through keymux). The switch exists so
 * that tools that tune the server (Redis's own test suite) can run through keymux; it lets any client change
 * every shard's settings, so it is for deployments where every client is trusted. Inside MULTI they are queued with
 * the transaction (dispatch/session.ts): SET and RESETSTAT then reach the other shards once the transaction's shard
 * ran them.
 */
import { errorReply } from '../../errors.js';
import { dispatchBroadcast } from './broadcast.js';
import { dispatchOneShard } from './one-shard.js';
import type { DispatchHandler, DispatchSession } from './types.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Topology } from '../../routing/topology.js';

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

/** Why this client may not send `spec` (a CONFIG subcommand) to the shards, or null when it may. */
export function configRefusal(session: DispatchSession, spec: CommandSpec, topo: Topology): Buffer | null {
  if (!topo.config.commands.configBroadcast) return refusal(spec.name);
  // With users configured, only a user marked `operator: true` gets the broadcast form (security/acl.ts).
  if (!session.operator) return notOperator(spec.name);
  return null;
}

export const dispatchConfig: DispatchHandler = (session, req, spec, topo) => {
  const refused = configRefusal(session, spec, topo);
  if (refused !== null) {
    req.deliver(refused);
    return;
  }
  if (spec.merge === null) dispatchOneShard(session, req, spec, topo);
  else dispatchBroadcast(session, req, spec, topo);
};
