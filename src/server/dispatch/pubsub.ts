/**
 * Pub/sub dispatch: SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE and their UNSUBSCRIBEs (the client's subscriptions,
 * multiplexed over keymux's shared subscriber connections by the hub, src/pubsub/hub.ts), PUBLISH / SPUBLISH
 * (sent to the node the channel routes to, behind the publish gate, receiver count rewritten), and PUBSUB
 * CHANNELS / NUMSUB / NUMPAT / SHARDCHANNELS / SHARDNUMSUB / HELP (asked of every shard and merged with keymux's
 * own knowledge: src/pubsub/merges.ts). One handler per command name, as data.
 *
 * Also the RESP2 subscribed-mode rule (`subscribedModeReply`): while a RESP2 client has subscriptions, only
 * (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING (answered `pong` as an array), QUIT and RESET are accepted, others get
 * Redis's error. Reply shapes and counts are Redis's (frames.ts); counts are the client's own.
 */
import { Fragment } from '../../core/fragment.js';
import type { Request } from '../../core/request.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Topology } from '../../routing/topology.js';
import { broadcastFragments } from '../../fanout/split.js';
import { ERR_CROSSSLOT, errorReply, printable, wrongArity } from '../../errors.js';
import { arrayReply, simpleReply } from '../../resp/writer.js';
import {
  KIND_CHANNEL,
  KIND_PATTERN,
  KIND_SHARD,
  subscribedFrame,
  subscribedPong,
  unsubscribedFrame,
  type SubKind,
} from '../../pubsub/frames.js';
import {
  mergeChannels,
  mergeNumpat,
  mergeNumsub,
  mergePublish,
  type IntrospectionContext,
  type PublishContext,
} from '../../pubsub/merges.js';
import type { MergeFn } from '../../core/fragment.js';
import { sendFragments } from './fanout.js';
import type { DispatchHandler, DispatchSession } from './types.js';

type Handler = (session: DispatchSession, req: Request, topo: Topology) => void;

const subscribe =
  (kind: SubKind): Handler =>
  (session, req, topo) => {
    const args = req.args;
    if (kind === KIND_SHARD && topo.config.mode === 'cluster') {
      // Redis Cluster's rule: the shard channels of one SSUBSCRIBE share a slot.
      const slot = topo.router.slotFor(args[1]);
      for (let i = 2; i < args.length; i++) {
        if (topo.router.slotFor(args[i]) !== slot) return req.deliver(ERR_CROSSSLOT);
      }
    }
    const client = session.pubsubClient();
    const hub = session.ctx.pubsub;
    const op = hub.begin(req, client);
    const subs = client.subs[kind];
    for (let i = 1; i < args.length; i++) {
      const name = args[i];
      const key = name.toString('latin1');
      if (!subs.has(key)) hub.subscribe(op, kind, name, key);
      op.reply.push(subscribedFrame(kind, name, client.count(kind), session.protocol));
    }
    hub.end(op);
  };

const unsubscribe =
  (kind: SubKind): Handler =>
  (session, req) => {
    const client = session.pubsub;
    const hub = session.ctx.pubsub;
    const protocol = session.protocol;
    const args = req.args;
    const frames: Buffer[] = [];
    if (args.length === 1) {
      const entries = client === null ? [] : [...client.subs[kind].values()];
      for (const entry of entries) {
        hub.unsubscribe(client!, entry);
        frames.push(unsubscribedFrame(kind, entry.name, client!.count(kind), protocol));
      }
      if (frames.length === 0) frames.push(unsubscribedFrame(kind, null, client?.count(kind) ?? 0, protocol));
    } else {
      for (let i = 1; i < args.length; i++) {
        const name = args[i];
        const entry = client?.subs[kind].get(name.toString('latin1'));
        if (entry !== undefined) hub.unsubscribe(client!, entry);
        frames.push(unsubscribedFrame(kind, name, client?.count(kind) ?? 0, protocol));
      }
    }
    req.deliver(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  };

/**
 * PUBLISH / SPUBLISH: to the node the channel routes to (slots and ring: its shard, where keymux's subscription
 * for it lives; cluster mode: its slot's owner, which propagates a PUBLISH cluster-wide), as one fragment whose
 * reply count is rewritten (merges.ts). Waits once at the publish gate while keymux's own subscription that
 * should hear it is being made (hub.ts).
 */
const publish =
  (kind: SubKind): Handler =>
  (session, req, topo) => {
    const hub = session.ctx.pubsub;
    const channel = req.args[1];
    const router = topo.router;
    const cluster = topo.config.mode === 'cluster';
    const group = router.groupFor(channel);
    const shardIndex = router.shardOfGroup(group);
    const shard = topo.shards[shardIndex];
    let ctx = req.mergeContext as PublishContext | null;
    if (ctx === null) {
      ctx = { hub, kind, channel, key: channel.toString('latin1'), address: null, gated: false };
      req.mergeContext = ctx;
    }
    ctx.address = shard?.address ?? null;
    if (!ctx.gated && shard !== undefined) {
      const link = hub.gateFor(kind, channel, ctx.key, cluster && kind === KIND_CHANNEL ? null : shard.address);
      if (link !== null) {
        ctx.gated = true;
        session.park(req);
        hub.wait(link, session, req);
        return;
      }
    }
    const fragment = new Fragment(req, shardIndex, [], req.frame, mergePublish, group);
    req.fragments = [fragment];
    req.remaining = 1;
    sendFragments(session, [fragment], topo, false);
  };

const introspect =
  (kind: SubKind, merge: MergeFn): Handler =>
  (session, req, topo) => {
    const ctx: IntrospectionContext = {
      hub: session.ctx.pubsub,
      kind,
      addresses: topo.shards.map((s) => s.address),
      cluster: topo.config.mode === 'cluster',
    };
    req.mergeContext = ctx;
    sendFragments(session, broadcastFragments(req, topo.shards.length, req.frame, merge), topo, false);
  };

/** CHANNELS takes at most one pattern (Redis checks it in the command, after the table's arity). */
const channels =
  (kind: SubKind): Handler =>
  (session, req, topo) => {
    if (req.args.length > 3) {
      return req.deliver(
        errorReply(
          `ERR unknown subcommand or wrong number of arguments for '${printable(req.args[1])}'. Try PUBSUB HELP.`,
        ),
      );
    }
    introspect(kind, mergeChannels)(session, req, topo);
  };

const HELP = arrayReply(
  [
    'PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
    'CHANNELS [<pattern>]',
    "    Return the currently active channels matching a <pattern> (default: '*').",
    'NUMPAT',
    '    Return number of subscriptions to patterns.',
    'NUMSUB [<channel> ...]',
    '    Return the number of subscribers for the specified channels, excluding',
    '    pattern subscriptions(default: no channels).',
    'SHARDCHANNELS [<pattern>]',
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    'SHARDNUMSUB [<shardchannel> ...]',
    '    Return the number of subscribers for the specified shard level channel(s)',
    'HELP',
    '    Prints this help.',
  ].map((line) => simpleReply(line)),
);

const HANDLERS: Readonly<Record<string, Handler>> = {
  subscribe: subscribe(KIND_CHANNEL),
  psubscribe: subscribe(KIND_PATTERN),
  ssubscribe: subscribe(KIND_SHARD),
  unsubscribe: unsubscribe(KIND_CHANNEL),
  punsubscribe: unsubscribe(KIND_PATTERN),
  sunsubscribe: unsubscribe(KIND_SHARD),
  publish: publish(KIND_CHANNEL),
  spublish: publish(KIND_SHARD),
  'pubsub|channels': channels(KIND_CHANNEL),
  'pubsub|shardchannels': channels(KIND_SHARD),
  'pubsub|numsub': introspect(KIND_CHANNEL, mergeNumsub),
  'pubsub|shardnumsub': introspect(KIND_SHARD, mergeNumsub),
  'pubsub|numpat': introspect(KIND_PATTERN, mergeNumpat),
  'pubsub|help': (_session, req) => req.deliver(HELP),
};

/** The pub/sub commands keymux serves (the command table gives them this dispatch kind). */
export const PUBSUB_COMMANDS: readonly string[] = Object.keys(HANDLERS);

export const dispatchPubSub: DispatchHandler = (session, req, spec, topo) => {
  const handler = HANDLERS[spec.name];
  if (handler === undefined) return req.deliver(errorReply(`ERR keymux: command '${spec.name}' is not supported`));
  handler(session, req, topo);
};

/** Commands a RESP2 client in subscribed mode may send (Redis: processCommand). */
const ALLOWED_SUBSCRIBED = new Set([
  'subscribe',
  'psubscribe',
  'ssubscribe',
  'unsubscribe',
  'punsubscribe',
  'sunsubscribe',
  'ping',
  'quit',
  'reset',
]);

/**
 * A RESP2 client in subscribed mode sent `spec`: its reply when keymux answers it here (PING's pub/sub form, or
 * Redis's refusal), or null when it runs as usual.
 */
export function subscribedModeReply(spec: CommandSpec, req: Request): Buffer | null {
  const name = spec.name;
  if (name === 'ping') {
    const args = req.args;
    if (args.length > 2) return wrongArity('ping');
    return subscribedPong(args.length === 2 ? args[1] : null);
  }
  if (ALLOWED_SUBSCRIBED.has(name)) return null;
  return errorReply(
    `ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`,
  );
}
