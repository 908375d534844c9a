/**
 * PubSubHub: keymux's pub/sub multiplexer, one per proxy. Every client subscription (channel, pattern, shard
 * channel) of every client is an Entry here, reference-counted by its subscribers; keymux itself subscribes to
 * each entry once per node it must listen on (a Placement), over one shared subscriber connection per node
 * (subscriber-connection.ts), and fans each message out to the entry's subscribers. Thousands of clients on a
 * handful of channels cost a handful of backend subscriptions and one connection per node.
 *
 * Where an entry is placed (`addressesFor`):
 * - slots and ring modes: a channel or shard channel on the shard its name routes to (the rule keys follow,
 *   hash tags included), so PUBLISH / SPUBLISH and SUBSCRIBE of a name meet; a pattern on every shard (a message
 *   is published on one shard only, so each pmessage still arrives once); keyspace-notification channels and
 *   patterns (`__keyspace@` / `__keyevent@` names, published by whichever shard holds the key) on every shard.
 * - cluster mode (Redis Cluster's rules): a shard channel on its slot's owner, following the slot when it moves
 *   (MOVED on SSUBSCRIBE, and the node's own sunsubscribe when it loses the slot, make keymux subscribe on the
 *   new owner); a channel or pattern on one master (PUBLISH propagates cluster-wide, so one node hears
 *   everything), first the owner of its name's slot, then wherever it is as long as that node stays a master;
 *   keyspace-notification names (node-local in a cluster) on every master.
 *
 * Guarantees kept here:
 * - A client's SUBSCRIBE is confirmed only once keymux's subscription is confirmed on every reachable node it
 *   needs (SubscribeOp); a node that is down does not hold it up: the subscription is made when it is back.
 * - Subscriptions survive a connection loss: everything placed on a node is subscribed again when its connection
 *   is back. If a node refuses a subscription (NOPERM ...), clients waiting for it get the error and clients
 *   already subscribed through it are disconnected (told, rather than silently left without messages).
 * - A topology change (reload, cluster rediscovery) moves entries make-before-break: the new placement is
 *   subscribed first, the old one dropped once the new one is confirmed.
 * - The publish gate: a PUBLISH through keymux to a node where keymux's own subscription that should receive it
 *   is being (re)made waits (at most once) until it is confirmed or its connection fails, so a move or a
 *   reconnection loses nothing published through this keymux.
 * Counts: a backend counts keymux's connection as one receiver per subscription; `receivers`, `presentOn` and
 * `localCount` let PUBLISH and PUBSUB replace that with keymux's own subscribers.
 */
import type { Topology } from '../routing/topology.js';
import type { Request } from '../core/request.js';
import { scheduleFlush, type Flushable } from '../core/flush.js';
import { parseRedirect, retryableError, formatAddress } from '../backend/redirect.js';
import { childLogger, type Logger } from '../log.js';
import { errorReply, printable } from '../errors.js';
import { KIND_CHANNEL, KIND_PATTERN, KIND_SHARD, type PubSubFrameReader, type SubKind } from './frames.js';
import { globMatch } from './glob.js';
import type { PubSubClient, SubscriptionEntry } from './client.js';
import {
  SubscriberConnection,
  type SubscriberOptions,
  type SubscriberSink,
  type SubscriberState,
} from './subscriber-connection.js';

/** What the hub needs from the proxy. */
export interface PubSubHost {
  readonly topology: Topology;
  /** Cluster mode: a sign that slots moved (MOVED, a server's sunsubscribe): rediscover soon. No-op otherwise. */
  clusterHint(): void;
}

/** One node's subscriber connection as metrics and /shards show it (PubSubHub.nodes). */
export interface SubscriberNode {
  readonly address: string;
  readonly state: SubscriberState;
  /** Backend subscriptions placed on the node (channels, patterns, shard channels): confirmed or to be made. */
  readonly subscriptions: number;
  /** Of those, the ones the node has confirmed. */
  readonly confirmed: number;
  readonly reconnects: number;
  /** Why it is not ready (null when ready). */
  readonly lastError: string | null;
  /** Date.now() since which it has not been ready (null when ready). */
  readonly notReadySince: number | null;
}

/** A session whose request waits at the publish gate (see DispatchSession.park / resumeParked). */
export interface GatedSession {
  resumeParked(req: Request): void;
}

/** Plain counters (published by metrics at scrape time). */
export class PubSubStats {
  /** Messages received from backends, by kind (message, pmessage, smessage). */
  readonly messages = [0, 0, 0];
  /** Message frames queued to clients (one per subscriber reached). */
  delivered = 0;
  /** Messages for which keymux had no subscriber any more (unsubscribed a moment before). */
  unrouted = 0;
  /** Subscriptions made again on a node after its connection came back. */
  resubscribes = 0;
  /** Entries placed on a new node after a topology change or a redirection. */
  moves = 0;
  /** Subscriptions a node refused (its error went to the clients waiting for it). */
  refused = 0;
  /** PUBLISHes that waited at the publish gate. */
  gated = 0;
  /** Client subscriptions now, by kind. */
  readonly clientSubscriptions = [0, 0, 0];
}

const P_CONNECTING = 0; // its connection is connecting: subscribed once it is ready
const P_QUEUED = 1; // to be sent at the next flush
const P_SENT = 2; // sent, confirmation awaited
const P_RETRY = 3; // refused with a transient cluster error: queued again after a backoff
const P_ACTIVE = 4; // confirmed
const P_DOWN = 5; // its connection is down: subscribed again when it is back
const P_GONE = 6; // dropped

/** A placement in this state may still change what its node delivers: publishes wait for it (the gate). */
function gating(state: number): boolean {
  return state <= P_RETRY;
}

/** Names sent per SUBSCRIBE / UNSUBSCRIBE command. */
const NAMES_PER_COMMAND = 512;

const KEYSPACE_PREFIX = Buffer.from('__keyspace@', 'latin1');
const KEYEVENT_PREFIX = Buffer.from('__keyevent@', 'latin1');

/** A keyspace-notification channel, or a pattern that can only match such channels (literal prefix). */
function notificationName(kind: SubKind, name: Buffer): boolean {
  if (kind === KIND_SHARD || name.length < KEYSPACE_PREFIX.length) return false;
  return (
    name.compare(KEYSPACE_PREFIX, 0, KEYSPACE_PREFIX.length, 0, KEYSPACE_PREFIX.length) === 0 ||
    name.compare(KEYEVENT_PREFIX, 0, KEYEVENT_PREFIX.length, 0, KEYEVENT_PREFIX.length) === 0
  );
}

/** One node keymux subscribes on: its connection, and what waits on it. */
class Link {
  readonly address: string;
  readonly conn: SubscriberConnection<Placement>;
  /** Placements here in a gating state. */
  pending: number;
  /** kind + key of names unsubscribed here whose confirmation has not come yet -> how many. */
  readonly leaving: Map<string, number>;
  /** PUBLISHes waiting for this node's subscriptions. */
  gated: Array<{ session: GatedSession; req: Request }>;
  /** The connection has been ready once (a later ready is a reconnection). */
  wasReady: boolean;

  constructor(address: string, conn: SubscriberConnection<Placement>) {
    this.address = address;
    this.conn = conn;
    this.pending = 0;
    this.leaving = new Map<string, number>();
    this.gated = [];
    this.wasReady = false;
  }
}

/**
 * An entry's subscribers and the sequence number of the request that subscribed each: dense arrays, so a message's
 * fan-out walks them without allocating, and an index for O(1) removal (the last one takes the removed one's place).
 */
class SubscriberSet {
  readonly clients: Array<PubSubClient<Entry>>;
  readonly since: number[];
  private readonly index: Map<PubSubClient<Entry>, number>;

  constructor() {
    this.clients = [];
    this.since = [];
    this.index = new Map<PubSubClient<Entry>, number>();
  }

  get size(): number {
    return this.clients.length;
  }

  get(client: PubSubClient<Entry>): number | undefined {
    const i = this.index.get(client);
    return i === undefined ? undefined : this.since[i];
  }

  add(client: PubSubClient<Entry>, since: number): void {
    if (this.index.has(client)) return;
    this.index.set(client, this.clients.length);
    this.clients.push(client);
    this.since.push(since);
  }

  delete(client: PubSubClient<Entry>): boolean {
    const i = this.index.get(client);
    if (i === undefined) return false;
    const last = this.clients.length - 1;
    if (i !== last) {
      const moved = this.clients[last];
      this.clients[i] = moved;
      this.since[i] = this.since[last];
      this.index.set(moved, i);
    }
    this.clients.pop();
    this.since.pop();
    this.index.delete(client);
    return true;
  }
}

/** One channel, pattern or shard channel that clients of keymux subscribe to. */
export class Entry implements SubscriptionEntry {
  readonly kind: SubKind;
  readonly key: string;
  readonly name: Buffer;
  /** Subscribed clients -> sequence number of the request that subscribed them (messages wait behind it). */
  readonly subscribers: SubscriberSet;
  placements: Placement[];

  constructor(kind: SubKind, key: string, name: Buffer) {
    this.kind = kind;
    this.key = key;
    this.name = name;
    this.subscribers = new SubscriberSet();
    this.placements = [];
  }
}

/** keymux's subscription to one entry on one node. */
class Placement {
  readonly entry: Entry;
  readonly link: Link;
  readonly name: Buffer;
  state: number;
  /** Replaced by a placement elsewhere: dropped once that one is confirmed (make-before-break). */
  retiring: boolean;
  attached: boolean;
  /** Client SUBSCRIBE commands waiting for this placement's confirmation. */
  waiters: SubscribeOp[] | null;
  /** Cluster mode: MOVED redirections followed (bounded by cluster.max_redirections). */
  redirects: number;
  /** Cluster mode: retries after ASK, TRYAGAIN, CLUSTERDOWN (bounded by cluster.retry.attempts). */
  attempts: number;
  retryAt: number;

  constructor(entry: Entry, link: Link, state: number) {
    this.entry = entry;
    this.link = link;
    this.name = entry.name;
    this.state = state;
    this.retiring = false;
    this.attached = true;
    this.waiters = null;
    this.redirects = 0;
    this.attempts = 0;
    this.retryAt = 0;
  }
}

/**
 * One client SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE: its confirmations (built when it was dispatched, with the
 * client's counts at that point) leave once every placement it waits for is confirmed. If one is refused, the
 * client gets that error instead and the subscriptions this command made are undone.
 */
export class SubscribeOp {
  readonly req: Request;
  readonly client: PubSubClient<Entry>;
  readonly reply: Buffer[];
  /** Entries this command subscribed the client to (undone if it fails). */
  readonly added: Entry[];
  remaining: number;
  error: Buffer | null;

  constructor(req: Request, client: PubSubClient<Entry>) {
    this.req = req;
    this.client = client;
    this.reply = [];
    this.added = [];
    this.remaining = 1; // held open until the command's names are all processed (end())
    this.error = null;
  }
}

export class PubSubHub implements Flushable, SubscriberSink<Placement> {
  readonly stats: PubSubStats;
  flushScheduled: boolean;
  private readonly host: PubSubHost;
  private readonly log: Logger;
  /** By kind: key (name as latin1) -> entry. */
  private readonly entries: readonly [Map<string, Entry>, Map<string, Entry>, Map<string, Entry>];
  private readonly links: Map<string, Link>;
  private toSend: Placement[];
  private readonly toUnsubscribe: Map<Link, [Buffer[], Buffer[], Buffer[]]>;
  private retries: Placement[];
  private retryTimer: NodeJS.Timeout | null;
  /** Addresses of the current topology's shards (masters). */
  private shardAddresses: Set<string>;
  private closed: boolean;

  constructor(host: PubSubHost) {
    this.stats = new PubSubStats();
    this.flushScheduled = false;
    this.host = host;
    this.log = childLogger('pubsub');
    this.entries = [new Map<string, Entry>(), new Map<string, Entry>(), new Map<string, Entry>()];
    this.links = new Map<string, Link>();
    this.toSend = [];
    this.toUnsubscribe = new Map<Link, [Buffer[], Buffer[], Buffer[]]>();
    this.retries = [];
    this.retryTimer = null;
    this.shardAddresses = new Set(host.topology.shards.map((s) => s.address));
    this.closed = false;
  }

  // ---- client subscriptions -------------------------------------------------------------------------------

  /** Starts a client SUBSCRIBE-type command; `subscribe` each new name, then `end`. */
  begin(req: Request, client: PubSubClient<Entry>): SubscribeOp {
    return new SubscribeOp(req, client);
  }

  /** Subscribes `op`'s client to `name` (not subscribed yet): the entry is created and placed if it is new. */
  subscribe(op: SubscribeOp, kind: SubKind, name: Buffer, key: string): Entry {
    const map = this.entries[kind];
    let entry = map.get(key);
    if (entry === undefined) {
      entry = new Entry(kind, key, Buffer.from(name));
      map.set(key, entry);
      this.place(entry, this.host.topology);
    }
    entry.subscribers.add(op.client, op.req.seq);
    op.client.subs[kind].set(key, entry);
    op.added.push(entry);
    this.stats.clientSubscriptions[kind]++;
    for (const p of entry.placements) {
      if (p.state === P_CONNECTING || p.state === P_QUEUED || p.state === P_SENT || p.state === P_RETRY) {
        (p.waiters ??= []).push(op);
        op.remaining++;
      }
    }
    return entry;
  }

  /** The command's names are all processed: it completes now or when its placements are confirmed. */
  end(op: SubscribeOp): void {
    this.settle(op);
  }

  /** Unsubscribes `client` from `entry` (the entry goes, with keymux's subscriptions, when nobody is left). */
  unsubscribe(client: PubSubClient<Entry>, entry: Entry): void {
    client.subs[entry.kind].delete(entry.key);
    if (!entry.subscribers.delete(client)) return;
    this.stats.clientSubscriptions[entry.kind]--;
    if (entry.subscribers.size === 0) this.dropEntry(entry);
  }

  /**
   * The client is gone or reset: every subscription of it is dropped (messages already waiting for it behind a
   * confirmation stay: on RESET they still precede +RESET; the session drops them when it closes).
   */
  clientGone(client: PubSubClient<Entry>): void {
    for (const map of client.subs) {
      for (const entry of [...map.values()]) this.unsubscribe(client, entry);
    }
  }

  private settle(op: SubscribeOp): void {
    if (--op.remaining > 0) return;
    if (op.error === null) {
      op.req.deliver(op.reply.length === 1 ? op.reply[0] : Buffer.concat(op.reply));
      return;
    }
    // Undo what this command subscribed (those still held by it: a later command may have dropped them).
    for (const entry of op.added) {
      if (entry.subscribers.get(op.client) === op.req.seq) this.unsubscribe(op.client, entry);
    }
    op.req.deliver(op.error);
  }

  // ---- placement ------------------------------------------------------------------------------------------

  /** The addresses `entry` must be subscribed on in `topo` (see the file comment). */
  private addressesFor(entry: Entry, topo: Topology): string[] {
    const shards = topo.shards;
    if (shards.length === 0) return [];
    const cluster = topo.config.mode === 'cluster';
    if (notificationName(entry.kind, entry.name) || (!cluster && entry.kind === KIND_PATTERN)) {
      return shards.map((s) => s.address);
    }
    const router = topo.router;
    if (!cluster) {
      const shard = shards[router.shardFor(entry.name)];
      return shard === undefined ? [] : [shard.address];
    }
    if (entry.kind !== KIND_SHARD) {
      // Any master hears every PUBLISH: stay where we are while that node is a master.
      for (const p of entry.placements) {
        if (!p.retiring && this.shardAddresses.has(p.link.address)) return [p.link.address];
      }
    }
    const owner = shards[router.shardOfGroup(router.slotFor(entry.name))];
    if (owner !== undefined) return [owner.address];
    // No owner in this view (a failover window): stay where we are until one is known.
    return entry.placements.filter((p) => !p.retiring).map((p) => p.link.address);
  }

  private place(entry: Entry, topo: Topology): void {
    for (const address of this.addressesFor(entry, topo)) this.addPlacement(entry, this.link(address, topo));
  }

  private addPlacement(entry: Entry, link: Link): Placement {
    const conn = link.conn;
    if (conn.state === 'down' && conn.placements.size === 0) conn.connectNow();
    const state = conn.state === 'ready' ? P_QUEUED : conn.state === 'connecting' ? P_CONNECTING : P_DOWN;
    const p = new Placement(entry, link, P_GONE);
    this.setState(p, state);
    conn.placements.add(p);
    entry.placements.push(p);
    if (state === P_QUEUED) this.queue(p);
    return p;
  }

  private link(address: string, topo: Topology): Link {
    let link = this.links.get(address);
    if (link === undefined) {
      const conn = new SubscriberConnection<Placement>(address, this.optionsFor(address, topo), this, this.log);
      link = new Link(address, conn);
      this.links.set(address, link);
      conn.connect();
    }
    return link;
  }

  private optionsFor(address: string, topo: Topology): SubscriberOptions {
    const b = topo.config.backend;
    const shard = topo.shards.find((s) => s.address === address);
    let host: string;
    let port: number;
    if (shard !== undefined) {
      host = shard.config.host;
      port = shard.config.port;
    } else {
      const sep = address.lastIndexOf(':');
      host = address.slice(0, sep).replace(/^\[|\]$/g, '');
      port = Number(address.slice(sep + 1));
    }
    return {
      host,
      port,
      connectTimeoutMs: b.connectTimeoutMs,
      timeoutMs: b.timeoutMs,
      password: b.password,
      username: b.username,
      tls: b.tls,
    };
  }

  private setState(p: Placement, state: number): void {
    const was = gating(p.state);
    p.state = state;
    const now = gating(state);
    if (was === now) return;
    const link = p.link;
    if (now) {
      link.pending++;
    } else if (--link.pending === 0 && link.gated.length > 0) {
      this.releaseGated(link);
    }
  }

  private queue(p: Placement): void {
    this.toSend.push(p);
    scheduleFlush(this);
  }

  /** Drops a placement (unsubscribing it on its node if it may be subscribed there). */
  private detach(p: Placement): void {
    if (!p.attached) return;
    p.attached = false;
    const link = p.link;
    link.conn.placements.delete(p);
    const subscribed = p.state === P_SENT || p.state === P_ACTIVE;
    this.setState(p, P_GONE);
    this.releaseWaiters(p);
    if (subscribed && link.conn.state === 'ready') {
      let lists = this.toUnsubscribe.get(link);
      if (lists === undefined) {
        lists = [[], [], []];
        this.toUnsubscribe.set(link, lists);
      }
      lists[p.entry.kind].push(p.name);
      scheduleFlush(this);
    }
    if (link.conn.placements.size === 0 && !this.shardAddresses.has(link.address)) this.dropLink(link);
  }

  private dropEntry(entry: Entry): void {
    const map = this.entries[entry.kind];
    if (map.get(entry.key) === entry) map.delete(entry.key);
    for (const p of entry.placements) this.detach(p);
    entry.placements = [];
  }

  private dropLink(link: Link): void {
    if (this.links.get(link.address) !== link) return;
    this.links.delete(link.address);
    this.toUnsubscribe.delete(link);
    link.conn.close();
    this.releaseGated(link);
  }

  /** The waiters of `p` no longer wait for it (confirmed, dropped, or its node went down). */
  private releaseWaiters(p: Placement): void {
    const waiters = p.waiters;
    if (waiters === null) return;
    p.waiters = null;
    for (const op of waiters) this.settle(op);
  }

  /** Drops the retiring placements of `entry` once its other placements are settled (confirmed or down). */
  private settleRetiring(entry: Entry): void {
    let retiring = false;
    for (const p of entry.placements) {
      if (p.retiring) retiring = true;
      else if (gating(p.state)) return;
    }
    if (!retiring) return;
    const kept: Placement[] = [];
    for (const p of entry.placements) {
      if (p.retiring) this.detach(p);
      else kept.push(p);
    }
    entry.placements = kept;
  }

  /** A topology was installed: every entry goes where the new one says (make-before-break). */
  onTopology(topo: Topology): void {
    if (this.closed) return;
    this.shardAddresses = new Set(topo.shards.map((s) => s.address));
    for (const link of this.links.values()) {
      if (link.conn.setOptions(this.optionsFor(link.address, topo)) && link.conn.state !== 'down') {
        link.conn.restart('backend settings changed');
      }
    }
    for (const map of this.entries) for (const entry of map.values()) this.replace(entry, topo);
    for (const link of [...this.links.values()]) {
      if (link.conn.placements.size === 0 && !this.shardAddresses.has(link.address)) this.dropLink(link);
    }
  }

  private replace(entry: Entry, topo: Topology): void {
    const want = this.addressesFor(entry, topo);
    for (const p of entry.placements) {
      if (!p.retiring && !want.includes(p.link.address)) p.retiring = true;
    }
    for (const address of want) {
      let found = false;
      for (const p of entry.placements) {
        if (p.link.address !== address) continue;
        if (!found) {
          p.retiring = false; // wanted here again
          found = true;
        }
      }
      if (!found) {
        this.addPlacement(entry, this.link(address, topo));
        this.stats.moves++;
      }
    }
    this.settleRetiring(entry);
  }

  // ---- sending (once per event-loop turn) -----------------------------------------------------------------

  flush(): void {
    if (this.closed) return;
    // Unsubscriptions first: a name dropped and taken again in one turn is unsubscribed, then subscribed.
    for (const [link, lists] of this.toUnsubscribe) {
      if (link.conn.state !== 'ready') continue;
      for (let kind = 0; kind < 3; kind++) {
        const names = lists[kind];
        for (let i = 0; i < names.length; i += NAMES_PER_COMMAND) {
          const chunk = names.slice(i, i + NAMES_PER_COMMAND);
          link.conn.unsubscribe(kind as SubKind, chunk);
          for (const n of chunk) {
            const k = kind + n.toString('latin1');
            link.leaving.set(k, (link.leaving.get(k) ?? 0) + 1);
          }
        }
      }
    }
    this.toUnsubscribe.clear();
    const toSend = this.toSend;
    if (toSend.length === 0) return;
    this.toSend = [];
    const topo = this.host.topology;
    const perSlot = topo.config.mode === 'cluster';
    // link -> group key (kind, or kind and slot for cluster shard channels) -> placements
    const groups = new Map<Link, Map<number, Placement[]>>();
    for (const p of toSend) {
      if (!p.attached || p.state !== P_QUEUED || p.link.conn.state !== 'ready') continue;
      const kind = p.entry.kind;
      const group = kind === KIND_SHARD && perSlot ? 3 + topo.router.slotFor(p.name) : kind;
      let byGroup = groups.get(p.link);
      if (byGroup === undefined) {
        byGroup = new Map<number, Placement[]>();
        groups.set(p.link, byGroup);
      }
      const list = byGroup.get(group);
      if (list === undefined) byGroup.set(group, [p]);
      else list.push(p);
    }
    for (const [link, byGroup] of groups) {
      for (const [group, list] of byGroup) {
        const kind = (group >= 3 ? KIND_SHARD : group) as SubKind;
        for (let i = 0; i < list.length; i += NAMES_PER_COMMAND) {
          const chunk = list.slice(i, i + NAMES_PER_COMMAND);
          for (const p of chunk) this.setState(p, P_SENT);
          link.conn.subscribe(kind, chunk);
        }
      }
    }
  }

  // ---- subscriber connection events -----------------------------------------------------------------------

  private linkOf(conn: SubscriberConnection<Placement>): Link | null {
    const link = this.links.get(conn.address);
    return link !== undefined && link.conn === conn ? link : null;
  }

  subscriberReady(conn: SubscriberConnection<Placement>): void {
    const link = this.linkOf(conn);
    if (link === null) return;
    const again = link.wasReady;
    link.wasReady = true;
    for (const p of conn.placements) {
      if (p.state === P_ACTIVE || p.state === P_QUEUED || p.state === P_SENT) continue;
      this.setState(p, P_QUEUED);
      this.queue(p);
      if (again) this.stats.resubscribes++;
    }
    if (again && conn.placements.size > 0) {
      this.log.info(
        { address: link.address, subscriptions: conn.placements.size },
        'subscribing again after reconnect',
      );
    }
  }

  subscriberDown(conn: SubscriberConnection<Placement>): void {
    const link = this.linkOf(conn);
    if (link === null) return;
    link.leaving.clear();
    this.toUnsubscribe.delete(link);
    for (const p of conn.placements) {
      this.setState(p, P_DOWN);
      this.releaseWaiters(p);
    }
    if (link.gated.length > 0) this.releaseGated(link);
  }

  subscriptionConfirmed(_conn: SubscriberConnection<Placement>, p: Placement): void {
    if (p.state !== P_SENT) return;
    this.setState(p, P_ACTIVE);
    p.redirects = 0;
    p.attempts = 0;
    this.releaseWaiters(p);
    this.settleRetiring(p.entry);
  }

  unsubscriptionConfirmed(conn: SubscriberConnection<Placement>, kind: SubKind, name: Buffer): void {
    const link = this.linkOf(conn);
    if (link === null) return;
    const k = kind + name.toString('latin1');
    const n = link.leaving.get(k);
    if (n === undefined) return;
    if (n <= 1) link.leaving.delete(k);
    else link.leaving.set(k, n - 1);
  }

  subscriptionRefused(conn: SubscriberConnection<Placement>, targets: readonly Placement[], error: Buffer): void {
    for (const p of targets) {
      if (p.attached && p.state === P_SENT) this.refused(conn, p, error);
    }
  }

  /** A node refused `p`: cluster redirections are followed and transient errors retried; anything else fails it. */
  private refused(conn: SubscriberConnection<Placement>, p: Placement, error: Buffer): void {
    const topo = this.host.topology;
    const cluster = topo.config.cluster;
    if (cluster !== null) {
      const redirect = parseRedirect(error);
      if (redirect !== null && redirect.kind === 'moved' && p.redirects < cluster.maxRedirections) {
        this.host.clusterHint();
        const address = redirect.sameHost
          ? formatAddress(this.optionsFor(conn.address, topo).host, redirect.port)
          : redirect.address;
        this.log.info(
          { from: conn.address, to: address, slot: redirect.slot },
          'shard channel subscription redirected (MOVED): subscribing on the slot owner',
        );
        const moved = this.addPlacement(p.entry, this.link(address, topo));
        moved.redirects = p.redirects + 1;
        moved.attempts = p.attempts;
        if (p.waiters !== null && gating(moved.state)) {
          moved.waiters = p.waiters; // they wait for the new owner instead
          p.waiters = null;
        }
        this.setState(p, P_GONE); // refused: nothing to unsubscribe
        this.detach(p);
        p.entry.placements = p.entry.placements.filter((q) => q !== p);
        this.stats.moves++;
        return;
      }
      const transient = (redirect !== null && redirect.kind === 'ask') || retryableError(error) !== null;
      if (transient && p.attempts < cluster.retry.attempts) {
        this.host.clusterHint();
        const delay = Math.min(cluster.retry.maxDelayMs, cluster.retry.baseDelayMs * 2 ** p.attempts);
        p.attempts++;
        this.setState(p, P_RETRY);
        p.retryAt = Date.now() + delay;
        this.retries.push(p);
        this.armRetry(delay);
        return;
      }
    }
    // A client never sees MOVED / ASK: out of redirections or retries, it gets an error it can act on.
    const redirect = cluster === null ? null : parseRedirect(error);
    this.fail(
      p,
      redirect === null
        ? error
        : errorReply(
            `TRYAGAIN keymux: the slot of shard channel '${printable(p.name)}' kept moving (last: ${error.toString('latin1', 1, Math.min(error.length - 2, 200))}); retry`,
          ),
    );
  }

  /** `p` cannot be made: waiting clients get `error`; clients already subscribed through it are disconnected. */
  private fail(p: Placement, error: Buffer): void {
    const entry = p.entry;
    this.stats.refused++;
    this.log.warn(
      {
        address: p.link.address,
        name: entry.name.toString('latin1').slice(0, 200),
        error: error.toString('latin1', 1, Math.min(error.length - 2, 200)),
      },
      'a node refused a subscription',
    );
    const waiting = new Set<PubSubClient<Entry>>();
    const waiters = p.waiters;
    p.waiters = null;
    this.setState(p, P_GONE);
    this.detach(p);
    entry.placements = entry.placements.filter((q) => q !== p);
    if (waiters !== null) {
      for (const op of waiters) {
        op.error ??= error;
        waiting.add(op.client);
      }
      for (const op of waiters) this.settle(op);
    }
    for (const client of entry.subscribers.clients.slice()) {
      if (!waiting.has(client)) client.session.kill('a backend refused to subscribe again to one of its subscriptions');
    }
  }

  private armRetry(delay: number): void {
    if (this.retryTimer !== null || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.runRetries();
    }, delay);
  }

  private runRetries(): void {
    const now = Date.now();
    const later: Placement[] = [];
    let next = Infinity;
    for (const p of this.retries) {
      if (!p.attached || p.state !== P_RETRY) continue;
      if (p.retryAt > now) {
        later.push(p);
        next = Math.min(next, p.retryAt - now);
        continue;
      }
      if (p.link.conn.state === 'ready') {
        this.setState(p, P_QUEUED);
        this.queue(p);
      } else {
        this.setState(p, p.link.conn.state === 'connecting' ? P_CONNECTING : P_DOWN);
        this.releaseWaiters(p);
      }
    }
    this.retries = later;
    if (later.length > 0) this.armRetry(next);
  }

  message(conn: SubscriberConnection<Placement>, frame: Buffer, reader: PubSubFrameReader): void {
    const kind = reader.kind;
    this.stats.messages[kind]++;
    const key =
      kind === KIND_PATTERN
        ? frame.toString('latin1', reader.patternStart, reader.patternEnd)
        : frame.toString('latin1', reader.nameStart, reader.nameEnd);
    const entry = this.entries[kind].get(key);
    if (entry === undefined) {
      this.stats.unrouted++;
      return;
    }
    // Backwards: a client disconnected by its output bound while being served leaves its place to one already served.
    const { clients, since } = entry.subscribers;
    let delivered = 0;
    for (let i = clients.length - 1; i >= 0; i--) {
      if (i < clients.length && clients[i].deliver(frame, since[i])) delivered++;
    }
    this.stats.delivered += delivered;
  }

  serverUnsubscribed(conn: SubscriberConnection<Placement>, kind: SubKind, name: Buffer): void {
    // Redis Cluster dropped a shard channel of a slot this node lost: subscribe again (the node answers MOVED to
    // the slot's new owner, which keymux follows), and look at the slot map again.
    const link = this.linkOf(conn);
    if (link === null) return;
    this.host.clusterHint();
    const entry = this.entries[kind].get(name.toString('latin1'));
    if (entry === undefined) return;
    this.log.info(
      { address: link.address, name: printable(name) },
      'a node dropped a shard channel subscription (its slot moved): subscribing again',
    );
    for (const p of entry.placements) {
      if (p.link === link && p.attached && p.state === P_ACTIVE) {
        this.setState(p, P_QUEUED);
        this.queue(p);
      }
    }
  }

  // ---- the publish gate -----------------------------------------------------------------------------------

  /**
   * Whether a PUBLISH (kind channel) / SPUBLISH (kind shard) of `name` sent to `address` (null: cluster-wide
   * propagation, any node matters) must wait: returns the node whose subscriptions it waits for, or null. A node
   * whose connection is down is asked to reconnect now and waited for.
   */
  gateFor(kind: SubKind, name: Buffer, key: string, address: string | null): Link | null {
    const entry = this.entries[kind].get(key);
    if (entry !== undefined) {
      const link = this.gateOf(entry, address);
      if (link !== null) return link;
    }
    if (kind !== KIND_CHANNEL || this.entries[KIND_PATTERN].size === 0) return null;
    for (const pattern of this.entries[KIND_PATTERN].values()) {
      if (!globMatch(pattern.name, name)) continue;
      const link = this.gateOf(pattern, address);
      if (link !== null) return link;
    }
    return null;
  }

  private gateOf(entry: Entry, address: string | null): Link | null {
    for (const p of entry.placements) {
      if (address !== null && p.link.address !== address) continue;
      if (gating(p.state)) return p.link;
      const conn = p.link.conn;
      if (p.state !== P_DOWN) continue;
      // Down: reconnect now. Or already reconnecting on its own (its backoff ran out): the node may be back and
      // take this publish before keymux's subscriptions there are made again, so it waits for them all the same.
      if (conn.state === 'down') conn.connectNow();
      if ((conn.state as SubscriberState) === 'connecting') {
        for (const q of conn.placements) if (q.state === P_DOWN) this.setState(q, P_CONNECTING);
        return p.link;
      }
    }
    return null;
  }

  /** Parks `req` (its session holds later requests) until `link`'s subscriptions settle. */
  wait(link: Link, session: GatedSession, req: Request): void {
    this.stats.gated++;
    link.gated.push({ session, req });
  }

  private releaseGated(link: Link): void {
    const gated = link.gated;
    if (gated.length === 0) return;
    link.gated = [];
    for (const g of gated) g.session.resumeParked(g.req);
  }

  // ---- counts ---------------------------------------------------------------------------------------------

  /** 1 when keymux's connection to `address` is (or may still be) subscribed to (kind, key) there, else 0. */
  presentOn(kind: SubKind, key: string, address: string): number {
    const link = this.links.get(address);
    if (link === undefined) return 0;
    if ((link.leaving.get(kind + key) ?? 0) > 0) return 1;
    const entry = this.entries[kind].get(key);
    if (entry === undefined) return 0;
    for (const p of entry.placements) if (p.link === link && p.state === P_ACTIVE) return 1;
    return 0;
  }

  /** Clients of keymux subscribed to (kind, key). */
  localCount(kind: SubKind, key: string): number {
    return this.entries[kind].get(key)?.subscribers.size ?? 0;
  }

  /**
   * The receiver count of a PUBLISH / SPUBLISH of `name` answered `n` by the node at `address`: keymux's own
   * subscriptions there (one per channel and matching pattern) replaced by the clients of keymux they reach.
   */
  receivers(kind: SubKind, name: Buffer, key: string, address: string, n: number): number {
    let ours = this.presentOn(kind, key, address);
    let active = this.activeOn(kind, key, address);
    let local = this.localCount(kind, key);
    if (kind === KIND_CHANNEL && this.entries[KIND_PATTERN].size > 0) {
      for (const pattern of this.entries[KIND_PATTERN].values()) {
        if (!globMatch(pattern.name, name)) continue;
        local += pattern.subscribers.size;
        ours += this.presentOn(KIND_PATTERN, pattern.key, address);
        active += this.activeOn(KIND_PATTERN, pattern.key, address);
      }
    }
    const link = kind === KIND_CHANNEL ? this.links.get(address) : undefined;
    if (link !== undefined && link.leaving.size > 0) {
      // Patterns nobody here subscribes to any more whose unsubscription may not have reached the node yet.
      for (const k of link.leaving.keys()) {
        if (k.charCodeAt(0) !== 49 /* '1': KIND_PATTERN */ || this.entries[KIND_PATTERN].has(k.slice(1))) continue;
        if (globMatch(Buffer.from(k.slice(1), 'latin1'), name)) ours++;
      }
    }
    // The node counts each of keymux's confirmed subscriptions there as one receiver. Fewer than that: one was not
    // there when the message was published (the node dropped it, e.g. a cluster master losing the slot of a shard
    // channel, before keymux heard), so keymux's clients cannot be counted as reached; the node's own count is the
    // truth that is known.
    if (n < active) return n;
    return Math.max(0, n - ours) + local;
  }

  /** 1 when keymux's subscription to (kind, key) on `address` is confirmed (not one on its way in or out). */
  private activeOn(kind: SubKind, key: string, address: string): number {
    const link = this.links.get(address);
    const entry = this.entries[kind].get(key);
    if (link === undefined || entry === undefined) return 0;
    for (const p of entry.placements) if (p.link === link && p.state === P_ACTIVE && !p.retiring) return 1;
    return 0;
  }

  /** Patterns keymux is (or may still be) subscribed to on `address`. */
  patternsOn(address: string): number {
    const link = this.links.get(address);
    if (link === undefined) return 0;
    let n = 0;
    for (const p of link.conn.placements) if (p.entry.kind === KIND_PATTERN && p.state === P_ACTIVE) n++;
    for (const [k, count] of link.leaving) if (count > 0 && k.charCodeAt(0) === 49 /* '1' */) n++;
    return n;
  }

  /** A name a node lists only because keymux's unsubscription has not reached it yet. */
  leavingOnly(kind: SubKind, key: string, address: string): boolean {
    const link = this.links.get(address);
    return link !== undefined && (link.leaving.get(kind + key) ?? 0) > 0 && !this.entries[kind].has(key);
  }

  /** How many names of `kind` clients of keymux subscribe to. */
  entryCount(kind: SubKind): number {
    return this.entries[kind].size;
  }

  /** Entries of `kind` (the names clients of keymux subscribe to). */
  names(kind: SubKind): IterableIterator<Entry> {
    return this.entries[kind].values();
  }

  /** The state of keymux's subscriber connection to `address` (null: none), and why it is not ready. */
  subscriberState(address: string): { state: SubscriberState; lastError: string; reconnects: number } | null {
    const conn = this.links.get(address)?.conn;
    return conn === undefined ? null : { state: conn.state, lastError: conn.lastError, reconnects: conn.reconnects };
  }

  /**
   * keymux's subscriber connection to each node it has one to (metrics, /shards): its state, the backend
   * subscriptions placed on it (`subscriptions`: confirmed, being made, or to be made again once it is back) and
   * how many of them the node has confirmed, and, when not ready, why and since when. Nodes only, never names, so
   * what an operator sees per node stays bounded by the topology.
   */
  nodes(): SubscriberNode[] {
    const out: SubscriberNode[] = [];
    for (const link of this.links.values()) {
      const conn = link.conn;
      let confirmed = 0;
      for (const p of conn.placements) if (p.state === P_ACTIVE) confirmed++;
      const ready = conn.state === 'ready';
      out.push({
        address: link.address,
        state: conn.state,
        subscriptions: conn.placements.size,
        confirmed,
        reconnects: conn.reconnects,
        lastError: ready ? null : conn.lastError,
        notReadySince: ready ? null : conn.notReadySince,
      });
    }
    return out;
  }

  /** Unique entries by kind, and subscriber connections ready / known (metrics). */
  gauges(): { entries: number[]; connectionsReady: number; connections: number } {
    let ready = 0;
    for (const l of this.links.values()) if (l.conn.state === 'ready') ready++;
    return { entries: this.entries.map((m) => m.size), connectionsReady: ready, connections: this.links.size };
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    for (const link of this.links.values()) link.conn.close();
    this.links.clear();
  }
}
