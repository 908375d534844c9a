/**
 * CONFIG GET / SET / RESETSTAT: refused unless the operator turned on commands.config_broadcast; then SET and
 * RESETSTAT go to every shard (cluster mode: every master) and answer +OK only if every shard did, and GET is
 * answered by the keyless shard (the shards agree when every change came through keymux). The switch exists so
 * that tools that tune the server (Redis's own test suite) can run through keymux; it lets any client change
 * every shard's settings, so it is for deployments where every client is trusted.
 */
import { errorReply } from '../../errors.js';
import { dispatchBroadcast } from './broadcast.js';
import { dispatchOneShard } from './one-shard.js';
import type { DispatchHandler } from './types.js';

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

export const dispatchConfig: DispatchHandler = (session, req, spec, topo) => {
  if (!topo.config.commands.configBroadcast) {
    req.deliver(refusal(spec.name));
    return;
  }
  if (!session.operator) {
    // With users configured, only a user marked `operator: true` gets the broadcast form (security/acl.ts).
    req.deliver(notOperator(spec.name));
    return;
  }
  if (spec.merge === null) dispatchOneShard(session, req, spec, topo);
  else dispatchBroadcast(session, req, spec, topo);
};
