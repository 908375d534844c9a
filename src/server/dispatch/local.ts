/**
 * Local dispatch: commands keymux answers itself (PING, ECHO, AUTH, HELLO, CLIENT ..., COMMAND ...; handlers in
 * commands/local.ts), but PING with commands.ping: shards, which every shard answers. Before authentication only
 * AUTH, HELLO, QUIT and RESET are answered; refused dispatch answers with the
 * command's pre-encoded refusal.
 */
import { LOCAL_HANDLERS } from '../../commands/local.js';
import { ERR_NESTED_MULTI, ERR_NOAUTH, unknownCommand } from '../../errors.js';
import type { CommandSpec } from '../../commands/spec.js';
import { dispatchBroadcast } from './broadcast.js';
import type { DispatchHandler } from './types.js';

/** PING's spec sent to every shard, merged 'same' (the shards' reply when they agree, else the first error). */
const broadcastPings = new WeakMap<CommandSpec, CommandSpec>();
function pingEverywhere(spec: CommandSpec): CommandSpec {
  let b = broadcastPings.get(spec);
  if (b === undefined) {
    b = { ...spec, dispatch: 'all-shards', merge: 'same' };
    broadcastPings.set(spec, b);
  }
  return b;
}

export const dispatchLocal: DispatchHandler = (session, req, spec, topo) => {
  if (
    !session.authenticated &&
    !spec.name.startsWith('auth') &&
    !spec.name.startsWith('hello') &&
    spec.name !== 'quit' &&
    spec.name !== 'reset'
  ) {
    req.deliver(ERR_NOAUTH);
    return;
  }
  if (topo.config.commands.ping === 'shards' && spec.name === 'ping') {
    // commands.ping: shards: every shard answers, as one server would (BUSY while a script runs, LOADING...).
    dispatchBroadcast(session, req, pingEverywhere(spec), topo);
    return;
  }
  const handler = LOCAL_HANDLERS[spec.name];
  if (handler === undefined) {
    req.deliver(unknownCommand(req.args[0], req.args));
    return;
  }
  handler(session, req, session.ctx);
};

export const dispatchRefused: DispatchHandler = (session, req, spec) => {
  // A refused MULTI (commands.deny) refuses what depends on it, up to EXEC or DISCARD (server/dispatch/session.ts).
  if (spec.name === 'multi') {
    const state = session.sessionState();
    if (state.inMulti) {
      req.deliver(ERR_NESTED_MULTI);
      return;
    }
    state.beginRefused();
  }
  req.deliver(spec.refuseReason as Buffer);
};
