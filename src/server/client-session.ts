/**
 * ClientSession: one client connection. It owns
 * - the request parser fed by the socket, and the ordered ring of in-flight requests: replies are written in
 *   request order, whichever shard answers first; only the session writes to its socket;
 * - dispatch: the command table decides whether a command is answered here, forwarded to the shard of its keys
 *   (the client's exact bytes), split per shard and merged, broadcast to all shards, or refused;
 * - per-client state: authentication, name, protocol (RESP2, or RESP3 after HELLO 3: its commands then use the
 *   pools' RESP3 twins, and a switch waits for the earlier commands, see switchProtocol), and closing (QUIT or a
 *   protocol error ends the stream after the replies before it have been written);
 * - permissions: the user's rules (security/acl.ts) are checked on every command once it is resolved and before
 *   it is answered, forwarded or queued, whatever its dispatch kind; a config without limits costs one test;
 *   an AUTH from an address the AuthGuard penalises waits before its password is checked, later commands waiting
 *   behind it (inside EXEC the holds of its AUTHs add up and delay EXEC's reply instead), and a failed one may
 *   close the connection;
 * - backpressure: past `clients.maxInflight` requests, while the client is not reading its replies, or while a
 *   backend connection it sent to is full (backend.max_pending; the connection resumes it once drained), the
 *   session stops reading the socket, so neither a fast pipeliner nor a slow reader grows memory without bound;
 * - the output bound: replies the client has not taken (pending here plus the socket's buffer) past
 *   `clients.maxOutputBytes` disconnect it (counted, logged at most every few seconds), as Redis's
 *   client-output-buffer-limit does, so a client that does not read costs only itself while the shared backend
 *   connections keep being read for everyone;
 * - pub/sub delivery: messages (src/pubsub/) are written out of band, whole frames encoded for the client's
 *   protocol, between replies; one reaches the client only after the confirmation of its subscription has been
 *   queued (PubSubClient holds it until then: `writtenSeq` says which reply was queued last); RESP2 subscribed
 *   mode accepts only what Redis accepts there (dispatch/pubsub.ts subscribedModeReply);
 * - closing: every socket it ends is destroyed once the last bytes are written (socket-close.ts); its
 *   subscriptions are dropped at once;
 * - limits across clients (client-limits.ts): off the fast path, when a command spans socket chunks, its socket
 *   holds unsent replies or its MULTI queues commands, it reports the bytes it holds (limits.max_buffered_bytes may
 *   evict it, largest holders first) and when its current unfinished command started (clients.partial_command_timeout_s closes it).
 * A request whose client went away still completes (its backend reply must be consumed in order) and is dropped.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { turnNow } from '../core/clock.js';
import { RequestParser, type RequestSink } from '../resp/request-parser.js';
import {
  Request,
  UNIT_AT_BACKEND,
  materializeArgs,
  ownBytes,
  type RequestOwner,
  type RoutedUnit,
} from '../core/request.js';
import { RingQueue } from '../core/ring-queue.js';
import { CONCAT_LIMIT, NO_BYTES, concatFirst, scheduleFlush, writeBatch, type Flushable } from '../core/flush.js';
import { DirectWriter, type DirectWriteOwner } from './client-writes.js';
import { readInto } from './client-reads.js';
import type { CommandSpec } from '../commands/spec.js';
import { resolveSubcommand } from '../commands/table.js';
import {
  ERR_CLIENT_GONE,
  ERR_ENDED_BEFORE_BLOCKING,
  ERR_MIGRATION_FAILED,
  ERR_NOAUTH,
  ERR_WRONGPASS,
  ERR_AUTH_NOT_CHECKED,
  errorReply,
  unknownCommand,
  unknownSubcommand,
  wrongArity,
} from '../errors.js';
import { REPLY_ON, REPLY_SKIP_NEXT } from '../commands/local.js';
import type { ClientListing, ListedClient } from '../commands/client-list.js';
import type { ProxyContext } from './context.js';
import type { Topology } from '../routing/topology.js';
import type { Migration } from '../migration/migration.js';
import type { ShardPool } from '../backend/pool.js';
import { DISPATCH, type DispatchSession } from './dispatch/index.js';
import { OrderFences } from './order-fence.js';
import { childLogger, type Logger } from '../log.js';
import { CLOSE_LINGER_MS, endThenDestroy } from './socket-close.js';
import { PubSubClient, type PubSubSession } from '../pubsub/client.js';
import type { Entry } from '../pubsub/hub.js';
import { forProtocol } from '../pubsub/frames.js';
import { subscribedModeReply } from './dispatch/pubsub.js';
import {
  checkPermission,
  recheckAtExec,
  subscriptionAllowed,
  type AccessControl,
  type AclUser,
} from '../security/acl.js';
import { NOT_QUEUED, queueInTransaction } from './dispatch/session.js';
import { SessionState } from '../session/client-state.js';
import type { ClientLimits, LimitedSession } from './client-limits.js';

/** Commands whose replies are pub/sub confirmations: pushed even under CLIENT REPLY OFF (Redis CLIENT_PUSHING). */
const PUSHED_CONFIRMATIONS = new Set([
  'subscribe',
  'psubscribe',
  'ssubscribe',
  'unsubscribe',
  'punsubscribe',
  'sunsubscribe',
]);

/** Output-limit disconnects are logged at most once per this period (with the number left unlogged). */
const OUTPUT_LIMIT_LOG_EVERY_MS = 10_000;
let outputLimitLog: Logger | null = null;
let outputLimitLoggedAt = Number.NEGATIVE_INFINITY;
let outputLimitUnlogged = 0;

function logOutputLimit(session: ClientSession, pendingBytes: number, limit: number): void {
  const now = performance.now();
  if (now - outputLimitLoggedAt < OUTPUT_LIMIT_LOG_EVERY_MS) {
    outputLimitUnlogged++;
    return;
  }
  outputLimitLoggedAt = now;
  (outputLimitLog ??= childLogger('clients')).warn(
    { client: session.remote, id: session.id, pendingBytes, limit, notLoggedSinceLast: outputLimitUnlogged },
    'client disconnected: replies it has not read exceed clients.max_output_bytes',
  );
  outputLimitUnlogged = 0;
}

/** Past this many bytes held for one unfinished command, the session reads one chunk per event-loop turn. */
const YIELD_ABOVE_BYTES = 1024 * 1024;

/** The command named `name` is QUIT as the running command table has it (answered here: not one a deny list refused). */
function isQuit(topo: Topology, name: Buffer): boolean {
  if (name.length !== 4) return false;
  const spec = topo.table.lookup(name, 0, name.length);
  return spec !== undefined && spec.name === 'quit' && spec.dispatch === 'local';
}

function partialTimeoutError(timeoutS: number): Buffer {
  return Buffer.from(
    `-ERR keymux: command not completed within ${timeoutS} s (clients.partial_command_timeout_s); closing the connection\r\n`,
    'latin1',
  );
}

export class ClientSession
  implements
    RequestSink,
    RequestOwner,
    Flushable,
    DispatchSession,
    PubSubSession,
    LimitedSession,
    DirectWriteOwner,
    ListedClient
{
  readonly id: number;
  readonly socket: net.Socket;
  /** The client as logs name it: "ip:port", or "/path/of/the.sock:0" over the Unix socket (as Redis shows it). */
  readonly remote: string;
  /**
   * The address failed AUTHs are counted by (AuthGuard): the client's IP, or "unix:/path/of/the.sock" for every
   * client of the Unix socket together (they have no address of their own, like clients behind one NAT).
   */
  readonly host: string;
  readonly connectedAt: number;
  /**
   * CLIENT LIST's idle= and cmd=: the turn-clock second of its last read (a small integer: no number box written
   * per read), and its last command's spec, stored only when it differs from the one before (a run of GETs writes
   * nothing). Storing a time and a name per command cost about 2% of the instructions of a GET at pipeline 16.
   */
  private lastReadS: number;
  private lastSpec: CommandSpec | null;
  flushScheduled: boolean;
  /** CLIENT SETNAME value. */
  name: Buffer | null;
  authenticated: boolean;
  /** User the client authenticated as ("default" for a bare password). */
  user: string | null;
  /** That user's compiled rules, from `aclFrom` (found again by name when a reload compiles new ones). */
  private aclUser: AclUser | null;
  private aclFrom: AccessControl | null;
  /** Failed AUTHs on this connection (AuthGuard closes it past clients.auth_failures.close_after). */
  private authFailures: number;
  /** The AuthGuard hold the AUTH being checked waited (for the guard's log line). */
  private authHeldMs: number;
  /** While EXEC runs its queued local commands: the holds of its AUTHs, and whether one closes the connection. */
  private execAuth: { holdMs: number; close: boolean } | null;
  libName: Buffer | null;
  libVersion: Buffer | null;
  /** CLIENT REPLY mode (local.ts REPLY_ON / REPLY_OFF / REPLY_SKIP_NEXT). */
  replyMode: number;
  /** RESP version the client speaks: 2, or 3 after HELLO 3 (switchProtocol). */
  protocol: number;
  /** Pub/sub subscriptions (null until the first SUBSCRIBE-type command). */
  pubsub: PubSubClient<Entry> | null;
  /** Sequence number of the last request whose reply was queued for writing (pub/sub messages wait behind it). */
  writtenSeq: number;
  /** Bytes reported to the limits as held for this client (parser accumulator + socket's unsent replies). */
  heldBytes: number;
  /** When the unfinished command the parser holds started (performance.now()), -1 when there is none. */
  partialSince: number;

  readonly ctx: ProxyContext;
  private readonly parser: RequestParser;
  private readonly limits: ClientLimits;
  /** nextSeq when partialSince was set: a command completed since means a new unfinished one. */
  private partialSeq: number;
  /** Reported input and output parts of heldBytes, and the commands queued in a MULTI (SessionState.queuedBytes). */
  private heldIn: number;
  private heldOut: number;
  private heldQueue: number;
  private readonly inflight: RingQueue<Request>;
  /**
   * Topology fence: requests dispatched and not yet answered, the snapshot they were routed with, and requests
   * held back because the topology changed while some were outstanding. A client's commands to one key must not
   * overtake each other, and after a reload (new pools, moved slots) a new request could take a different path
   * than the one still in flight; so a session whose snapshot changed waits for its outstanding requests before
   * routing more. Costs one comparison per request when nothing changes.
   */
  private outstanding: number;
  private routedWith: Topology | null;
  private readonly held: RingQueue<Request>;
  private releasing: boolean;
  /**
   * Requests that later requests of this client wait behind (client order): requests waiting for their keys to be
   * migrated, and a write sent to every node in cluster mode (`exclusive`).
   */
  private blockers: number;
  /**
   * Cluster mode: a write sent to every node (FLUSHALL, FLUSHDB, SCRIPT FLUSH...) runs alone: it leaves only once
   * the client's earlier commands are answered, and later ones wait for it, so a retried piece of it can neither
   * overtake nor be overtaken. `exclusiveParked` while it waits for the earlier ones.
   */
  private exclusive: Request | null;
  private exclusiveParked: boolean;
  readonly keyIndexes: number[];
  /** Sequence number of the next command (client order, for the ordering fences). */
  private nextSeq: number;
  /** Cluster mode: per-slot ordering fences, created on the first retry, redirection or multi-key command. */
  private fences: OrderFences | null;
  /**
   * Transaction, WATCH and blocked-command state (src/session/client-state.ts); null until the first MULTI,
   * WATCH or blocking command. While a MULTI is open every command is queued there (dispatch/session.ts).
   */
  txn: SessionState | null;
  /**
   * WAIT (dispatch/wait.ts): the shards' shared pools this client sent a command that is not read-only to since its
   * last WAIT (null: none), and the last one added (one comparison per write when a client writes to one shard).
   */
  private writtenPools: Set<ShardPool> | null;
  private lastWritten: ShardPool | null;
  private readonly maxInflight: number;
  /** clients.max_output_bytes (0: no limit). */
  private readonly maxOutputBytes: number;
  /** Backend connections this session found full and waits for (it reads nothing meanwhile). */
  private backendWaits: number;
  /** Sliced fan-outs still sending (reading waits for them). */
  private readHolds: number;
  /** Reading is paused until the next turn (a huge command is arriving: endYield resumes it). */
  private yielding: boolean;
  /** This client's read is being parsed (replies completed meanwhile wait for the end of the turn). */
  private parsing: boolean;
  /**
   * Replies to write at the end of this turn: out[0 .. outCount). The array is kept from turn to turn (a new one
   * per flush was about a tenth of a GET's garbage at pipeline 1); written slots are cleared so they keep nothing.
   */
  private readonly out: Buffer[];
  private outCount: number;
  private outBytes: number;
  private readPaused: boolean;
  private writeBlocked: boolean;
  /** Writes replies straight to the socket's handle (plain TCP); null: through socket.write. */
  private readonly direct: DirectWriter | null;
  /** No further commands are accepted (QUIT, protocol error, drain). */
  private closing: boolean;
  /**
   * A request that ends the connection ran (QUIT, an AUTH failure that disconnects, a user a reload removed): the
   * requests held behind it never run, as Redis runs nothing after QUIT.
   */
  private stopped: boolean;
  /** A QUIT waits its turn (held): later bytes are not commands, nor protocol errors (Redis reads nothing after it). */
  private quitHeld: boolean;
  /** A request marked closeAfter has been queued for writing: end the socket after this flush. */
  private endAfterWrite: boolean;
  private closed: boolean;
  /** Bytes the client sends are no longer parsed (a partial-command timeout, or the session closed). */
  private inputClosed: boolean;
  /** The client ended its side (TCP FIN): what it sent is answered, but nothing of it may block any more. */
  private peerEnded: boolean;

  /**
   * `sharedReads`: a plain (not TLS) socket, read through the shared scratch buffer (client-reads.ts) when possible.
   * `unixPath`: the client came over the Unix socket at this path (its socket has no remote address).
   */
  constructor(
    id: number,
    socket: net.Socket,
    ctx: ProxyContext,
    limits: ClientLimits,
    sharedReads = false,
    unixPath: string | null = null,
  ) {
    this.id = id;
    this.socket = socket;
    this.remote = unixPath !== null ? `${unixPath}:0` : `${socket.remoteAddress}:${socket.remotePort}`;
    this.host = unixPath !== null ? `unix:${unixPath}` : (socket.remoteAddress ?? '');
    this.connectedAt = Date.now();
    this.lastReadS = (performance.now() / 1000) | 0;
    this.lastSpec = null;
    this.flushScheduled = false;
    this.name = null;
    const clients = ctx.topology.config.clients;
    const acl = ctx.topology.acl;
    this.authenticated = acl.connectUser !== null;
    this.user = acl.connectUser?.name ?? null;
    this.aclUser = acl.connectUser;
    this.aclFrom = acl;
    this.authFailures = 0;
    this.authHeldMs = 0;
    this.execAuth = null;
    this.libName = null;
    this.libVersion = null;
    this.replyMode = REPLY_ON;
    this.protocol = 2;
    this.pubsub = null;
    this.writtenSeq = -1;
    this.heldBytes = 0;
    this.partialSince = -1;
    this.ctx = ctx;
    this.parser = new RequestParser(ctx.topology.config.limits, this);
    this.limits = limits;
    this.partialSeq = 0;
    this.heldIn = 0;
    this.heldOut = 0;
    this.heldQueue = 0;
    this.inflight = new RingQueue<Request>(16);
    this.outstanding = 0;
    this.routedWith = null;
    this.held = new RingQueue<Request>(4);
    this.releasing = false;
    this.blockers = 0;
    this.exclusive = null;
    this.exclusiveParked = false;
    this.keyIndexes = [];
    this.nextSeq = 0;
    this.fences = null;
    this.txn = null;
    this.writtenPools = null;
    this.lastWritten = null;
    this.maxInflight = clients.maxInflight;
    this.maxOutputBytes = clients.maxOutputBytes;
    this.backendWaits = 0;
    this.readHolds = 0;
    this.yielding = false;
    this.parsing = false;
    this.out = [];
    this.outCount = 0;
    this.outBytes = 0;
    this.readPaused = false;
    this.writeBlocked = false;
    this.closing = false;
    this.stopped = false;
    this.quitHeld = false;
    this.endAfterWrite = false;
    this.closed = false;
    this.inputClosed = false;
    this.peerEnded = false;

    this.onData = this.onData.bind(this);
    this.onDrain = this.onDrain.bind(this);
    this.onClose = this.onClose.bind(this);
    this.closeWhenDone = this.closeWhenDone.bind(this);
    this.onEnd = this.onEnd.bind(this);
    this.endYield = this.endYield.bind(this);
    socket.setNoDelay(true);
    if (!sharedReads || !readInto(socket, this.onData)) socket.on('data', this.onData);
    // Plain clients (TCP or Unix) read through the shared buffer are also written to directly (client-writes.ts).
    this.direct = sharedReads ? DirectWriter.for(socket, this) : null;
    socket.on('drain', this.onDrain);
    socket.on('close', this.onClose);
    // The client half-closed (sent everything, e.g. `printf ... | nc -N`): answer what it sent, then end, as Redis does.
    // A blocked client is gone, though (Redis frees it): see onEnd.
    socket.on('end', this.onEnd);
    socket.on('error', () => {
      /* 'close' follows; nothing to add */
    });
    if (clients.idleTimeoutS > 0) {
      socket.setTimeout(clients.idleTimeoutS * 1000, () => {
        // As in Redis, a subscribed client is not idle: it waits for messages.
        if (this.inflight.length === 0 && (this.pubsub === null || this.pubsub.total === 0)) socket.destroy();
      });
    }
  }

  get pendingRequests(): number {
    return this.inflight.length;
  }

  // ---- input ----------------------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.inputClosed) return; // after a partial-command timeout or the close: read and dropped
    this.ctx.stats.bytesIn += chunk.length;
    const second = (turnNow() / 1000) | 0;
    if (this.lastReadS !== second) this.lastReadS = second;
    this.parsing = true;
    this.parser.feed(chunk);
    this.parsing = false;
    // Off the fast path: only a command split across chunks (or one that just finished being) gets here.
    if (this.parser.holding || this.heldIn !== 0) this.afterHeldInput();
  }

  /** Reports the parser's held bytes and when the unfinished command started (client-limits.ts). */
  private afterHeldInput(): void {
    if (this.closed) return;
    const parser = this.parser;
    const held = parser.heldBytes;
    // A huge command arriving: one socket chunk of it per event-loop turn, so that its parsing (libuv reads up to
    // 32 chunks per wake-up) does not keep other clients' commands waiting.
    if (held > YIELD_ABOVE_BYTES && !this.yielding) {
      this.yielding = true;
      this.socket.pause();
      setImmediate(this.endYield);
    }
    if (held !== this.heldIn) {
      this.heldIn = held;
      this.limits.setHeld(this, held + this.heldOut + this.heldQueue);
    }
    if (parser.partial) {
      if (this.partialSince < 0 || this.partialSeq !== this.nextSeq) {
        // A new unfinished command (the first, or one after a command completed): its clock starts now.
        this.partialSince = performance.now();
        this.partialSeq = this.nextSeq;
        this.limits.trackPartial(this);
      }
    } else if (this.partialSince >= 0) {
      this.partialSince = -1;
      this.limits.trackPartial(this);
    }
  }

  private endYield(): void {
    this.yielding = false;
    if (!this.readPaused && !this.closed) this.socket.resume();
  }

  measureHeld(): number {
    if (this.closed) return 0;
    this.heldIn = this.parser.heldBytes;
    this.heldOut = this.unsentBytes();
    this.heldQueue = this.txn === null ? 0 : this.txn.queuedBytes;
    return this.heldIn + this.heldOut + this.heldQueue;
  }

  stillPartial(): boolean {
    return !this.closed && !this.closing && !this.quitHeld && this.parser.partial && this.partialSeq === this.nextSeq;
  }

  /**
   * Slowloris: the client left a command unfinished too long. Nothing more it sends is parsed; the replies before
   * this point are written, then an error saying why, then the connection ends (as after a protocol error).
   */
  closeForPartialTimeout(timeoutS: number): void {
    if (this.closed || this.closing) return;
    this.inputClosed = true;
    this.parser.abandon();
    this.heldIn = 0;
    this.limits.setHeld(this, this.heldOut + this.heldQueue);
    const reply = partialTimeoutError(timeoutS);
    const req = new Request(this, reply, [], turnNow(), this.nextSeq++);
    req.closeAfter = true;
    this.inflight.push(req);
    this.outstanding++;
    this.closing = true;
    req.deliver(reply);
  }

  /** limits.max_buffered_bytes: this client holds the most; it is disconnected at once. */
  evictForMemory(): void {
    this.closeNow();
  }

  onCommand(frame: Buffer, args: Buffer[], lazy: Uint32Array | null): void {
    // After QUIT or an error that ends the stream, later commands are not run; nor, once the client is gone, are
    // commands still buffered in the parser.
    if (this.closing || this.closed || this.quitHeld) return;
    const req = new Request(this, frame, args, turnNow(), this.nextSeq++);
    if (lazy !== null) req.argOffsets = lazy;
    this.inflight.push(req);
    if (this.inflight.length >= this.maxInflight) this.pauseReading();
    const topo = this.ctx.topology;
    if (this.held.length > 0 || this.blockers > 0 || (topo !== this.routedWith && this.outstanding > 0)) {
      // Behind a blocking command it may wait for hours: its own bytes, not a shared read pool (core/request.ts).
      ownBytes(req);
      this.held.push(req);
      // A QUIT waiting its turn: what follows it is not a command (Redis reads nothing after QUIT).
      if (isQuit(topo, args[0])) this.quitHeld = true;
      return;
    }
    this.routedWith = topo;
    this.outstanding++;
    this.dispatch(req);
  }

  /** Routes held requests once nothing routed with an older snapshot is outstanding. */
  private releaseHeld(): void {
    if (this.releasing) return;
    this.releasing = true;
    // Once a request that ends the connection ran (QUIT...), the held requests after it never run.
    while (this.held.length > 0 && this.blockers === 0 && !this.stopped) {
      const topo = this.ctx.topology;
      if (topo !== this.routedWith && this.outstanding > 0) break;
      this.routedWith = topo;
      this.outstanding++;
      this.dispatch(this.held.shift() as Request);
    }
    this.releasing = false;
  }

  onProtocolError(reply: Buffer): void {
    // After QUIT (or once closing for a drain) later bytes are not commands: Redis parses nothing after QUIT, so
    // malformed ones get no reply and are no protocol error.
    if (this.closing || this.closed || this.quitHeld) return;
    this.ctx.stats.protocolErrors++;
    const req = new Request(this, reply, [], turnNow(), this.nextSeq++);
    req.closeAfter = true;
    this.inflight.push(req);
    this.outstanding++;
    req.deliver(reply);
    this.closing = true;
  }

  // ---- dispatch -------------------------------------------------------------------------------------------

  private dispatch(req: Request): void {
    const topo = this.ctx.topology;
    const args = req.args;
    const nameArg = args[0];
    let spec = topo.table.lookup(nameArg, 0, nameArg.length);
    // A command of thousands of arguments: only a fan-out reads them lazily (in slices); others get every view, and
    // so does a fan-out whose keys a user's rules check or a transaction queues (both read req.args).
    if (
      req.argOffsets !== null &&
      (spec === undefined ||
        spec.dispatch !== 'fanout' ||
        topo.acl.restricted ||
        topo.acl !== this.aclFrom ||
        this.txn?.inMulti === true)
    )
      materializeArgs(req);
    if (this.replyMode !== REPLY_ON) this.applyReplyMode(req, spec);
    if (spec === undefined) {
      this.reject(req, unknownCommand(nameArg, args));
      return;
    }
    // A known command is counted under its own name (keymux_commands_total, errors, slow log) even when refused
    // below (NOAUTH, wrong arity, unknown subcommand: under the parent's name); only unknown names are 'unknown'.
    req.spec = spec;
    if (!this.authenticated && spec.dispatch !== 'local') {
      this.reject(req, ERR_NOAUTH);
      return;
    }
    const argc = args.length;
    if (spec.arity > 0 ? argc !== spec.arity : argc < -spec.arity) {
      this.reject(req, wrongArity(spec.name));
      return;
    }
    if (spec.subcommands !== null && argc > 1) {
      const sub = resolveSubcommand(spec, args);
      if (sub === undefined) {
        this.reject(req, unknownSubcommand(spec.name, args[1]));
        return;
      }
      spec = sub;
      req.spec = spec;
      if (spec.arity > 0 ? argc !== spec.arity : argc < -spec.arity) {
        this.reject(req, wrongArity(spec.name));
        return;
      }
    }
    req.spec = spec;
    if (this.lastSpec !== spec) this.lastSpec = spec;
    req.protocol = this.protocol;
    const acl = topo.acl;
    if (this.authenticated && (acl.restricted || acl !== this.aclFrom)) {
      const denied = this.permissionDenied(req, spec, acl);
      if (denied !== null) {
        this.reject(req, denied); // inside MULTI, a NOPERM aborts the transaction, as in Redis
        return;
      }
    }
    const pubsub = this.pubsub;
    if (pubsub !== null && pubsub.total > 0 && this.protocol === 2) {
      const reply = subscribedModeReply(spec, req);
      if (reply !== null) {
        req.deliver(reply);
        return;
      }
    }
    const txn = this.txn;
    if (txn !== null && txn.inMulti && !NOT_QUEUED.has(spec.name)) {
      queueInTransaction(this, txn, req, spec, topo);
      return;
    }
    if (spec.dispatch === 'all-shards' && spec.write && topo.resender !== null) {
      this.exclusive = req;
      this.blockers++;
      if (this.outstanding > 1) {
        this.exclusiveParked = true; // dispatched by onRequestDone once the client's earlier commands are answered
        return;
      }
    }
    DISPATCH[spec.dispatch](this, req, spec, topo);
  }

  /** An error before dispatch; inside MULTI it also aborts the transaction (EXEC answers EXECABORT), as in Redis. */
  private reject(req: Request, reply: Buffer): void {
    const txn = this.txn;
    if (txn !== null && txn.inMulti) txn.dirty = true;
    req.deliver(reply);
  }

  sessionState(): SessionState {
    return (this.txn ??= new SessionState(this.ctx.sessions, this.id, (bytes) => this.reportQueued(bytes)));
  }

  runAlone(req: Request, blocks = false): boolean {
    if (this.closed) {
      // The client left while this waited its turn: nothing may be leased for it (a BLPOP sent now would pop an
      // item nobody receives). Its reply is dropped anyway.
      req.deliver(ERR_CLIENT_GONE);
      return false;
    }
    if (blocks && this.peerEnded) {
      // The client ended its side before this blocking command (or WAIT) could run: it was parked behind earlier
      // commands (`GET k; BLPOP q 0` then exit). Redis would block it and free it at the end of its input, so it
      // pops nothing; run, it would pop an item nobody receives and hold its lease and this session until one
      // came. Not run: the earlier replies are written, then this error, then the connection ends.
      req.closeAfter = true;
      req.deliver(ERR_ENDED_BEFORE_BLOCKING);
      return false;
    }
    if (this.exclusive === req) return true; // dispatched again after the earlier ones were answered
    // What runs alone (a blocking command, WAIT, WATCH, EXEC, an isolated script) may be held for long, here or at
    // its lease: it keeps its own bytes, not the shared read pool it was parsed from (core/request.ts).
    ownBytes(req);
    this.exclusive = req;
    this.blockers++;
    if (this.outstanding > 1) {
      this.exclusiveParked = true;
      return false;
    }
    return true;
  }

  /**
   * The user's permissions for this command (security/acl.ts): null when allowed, else the reply (NOPERM...).
   * After a reload the user is found again by name: a changed password keeps the connection (as Redis keeps
   * authenticated clients); a user the reload removed is answered with an error and disconnected.
   */
  private permissionDenied(req: Request, spec: CommandSpec, acl: AccessControl): Buffer | null {
    if (this.aclFrom !== acl) {
      this.aclFrom = acl;
      this.aclUser = acl.users.get(this.user ?? 'default') ?? null;
    }
    const user = this.aclUser;
    if (user === null) {
      req.closeAfter = true;
      this.stopReading();
      return errorReply(
        `ERR keymux: user '${(this.user ?? '').slice(0, 64)}' no longer exists (a config reload removed it); ` +
          'connect again and AUTH',
      );
    }
    return user.unrestricted ? null : checkPermission(user, spec, req.args, this.keyIndexes);
  }

  permissionAtExec(spec: CommandSpec, args: Buffer[]): Buffer | null {
    const acl = this.ctx.topology.acl;
    if (this.aclFrom !== acl) {
      this.aclFrom = acl;
      this.aclUser = acl.users.get(this.user ?? 'default') ?? null;
    }
    return recheckAtExec(this.aclUser, spec, args, this.keyIndexes);
  }

  /**
   * A reload compiled new users (the proxy calls this on every session): a subscribed client whose user is gone,
   * or whose rules no longer allow one of its subscriptions, is disconnected, as Redis disconnects it. Other
   * clients learn their new rules at their next command.
   */
  onAccessChanged(acl: AccessControl): void {
    const pubsub = this.pubsub;
    if (!this.authenticated || this.closed || pubsub === null || pubsub.total === 0) return;
    const user = acl.users.get(this.user ?? 'default') ?? null;
    this.aclFrom = acl;
    this.aclUser = user;
    if (user === null) {
      this.kill('its user was removed by a config reload');
      return;
    }
    for (let kind = 0; kind < 3; kind++) {
      for (const entry of pubsub.subs[kind].values()) {
        if (!subscriptionAllowed(user, kind, entry.name)) {
          this.kill('its user may no longer hold one of its subscriptions (config reload)');
          return;
        }
      }
    }
  }

  /** The client is gone (its connection closed): nothing may be leased or sent for it any more. */
  get left(): boolean {
    return this.closed;
  }

  /** May use the operator forms the config grants (commands.config_broadcast): a user marked operator. */
  get operator(): boolean {
    if (!this.authenticated) return false;
    const acl = this.ctx.topology.acl;
    if (this.aclFrom !== acl) {
      this.aclFrom = acl;
      this.aclUser = acl.users.get(this.user ?? 'default') ?? null;
    }
    return this.aclUser !== null && this.aclUser.operator;
  }

  signIn(user: AclUser, acl: AccessControl): void {
    this.authenticated = true;
    this.user = user.name;
    this.aclUser = user;
    this.aclFrom = acl;
  }

  /**
   * AUTH or HELLO ... AUTH: `check` checks the password and answers `req`. A failure's reply waits the AuthGuard's
   * hold for the client's address (0 unless it failed AUTH delay_after times lately), the client's later commands
   * behind it (authFailed), so a pipeline of guesses gets one answer per hold; a correct password is answered at
   * once. With `delay_correct` the check itself waits the hold, so a correct password waits like a wrong one and a
   * connection per guess learns nothing sooner. Inside EXEC it runs at once and the holds are added to EXEC's reply
   * instead (answerAfterExecAuth); once a failure there reached close_after, later AUTHs of the transaction are not
   * checked.
   */
  checkAuthWhenDue(req: Request, check: () => void): void {
    const guard = this.ctx.authGuard;
    const config = this.ctx.topology.config.clients.authFailures;
    const holdMs = guard.holdMs(config, this.host);
    const inExec = this.execAuth;
    this.authHeldMs = holdMs;
    if (inExec !== null) {
      if (inExec.close) {
        req.deliver(ERR_AUTH_NOT_CHECKED);
        return;
      }
      if (config.delayCorrect) inExec.holdMs += holdMs; // else added by authFailed, for a failure only
      check();
      return;
    }
    if (holdMs === 0 || !config.delayCorrect) {
      check(); // a failure's reply waits the hold (authFailed)
      return;
    }
    ownBytes(req); // its arguments are read after the hold
    this.blockers++;
    setTimeout(() => {
      this.blockers--;
      if (this.closed) req.deliver(ERR_CLIENT_GONE);
      else check();
      if (this.blockers === 0 && this.held.length > 0) this.releaseHeld();
    }, holdMs).unref();
  }

  /**
   * A failed AUTH (its hold already waited, checkAuthWhenDue): counted and logged by the AuthGuard, answered
   * WRONGPASS at once; the connection closes after it past close_after (inside EXEC, after EXEC's reply).
   */
  authFailed(req: Request, user: Buffer | null): void {
    this.authFailures++;
    const close = this.ctx.authGuard.onFailure(
      this.ctx.topology.config.clients.authFailures,
      this.host,
      this.authFailures,
      user === null ? null : user.subarray(0, 64).toString('utf8'),
      this.remote,
      this.authHeldMs,
    );
    if (close) {
      if (this.execAuth !== null) this.execAuth.close = true;
      else {
        req.closeAfter = true;
        this.stopReading();
      }
    }
    const heldAlready = this.ctx.topology.config.clients.authFailures.delayCorrect;
    const holdMs = this.authHeldMs;
    if (heldAlready || holdMs === 0) {
      req.deliver(ERR_WRONGPASS);
      return;
    }
    if (this.execAuth !== null) {
      this.execAuth.holdMs += holdMs; // EXEC's reply waits for it
      req.deliver(ERR_WRONGPASS);
      return;
    }
    // The failure's reply waits, the client's later commands behind it: a pipeline of guesses is answered, and
    // checked, one hold at a time.
    this.blockers++;
    setTimeout(() => {
      this.blockers--;
      req.deliver(ERR_WRONGPASS);
      if (this.blockers === 0 && this.held.length > 0) this.releaseHeld();
    }, holdMs).unref();
  }

  beginExecAuth(): void {
    this.execAuth = { holdMs: 0, close: false };
  }

  answerAfterExecAuth(req: Request, reply: Buffer): void {
    const inExec = this.execAuth;
    this.execAuth = null;
    if (inExec === null || (inExec.holdMs === 0 && !inExec.close)) {
      req.deliver(reply);
      return;
    }
    if (inExec.close) {
      req.closeAfter = true;
      this.stopReading();
    }
    // EXEC runs alone (runAlone): the client's later commands wait until this reply is delivered.
    if (inExec.holdMs === 0) req.deliver(reply);
    else setTimeout(() => req.deliver(reply), inExec.holdMs).unref();
  }

  /**
   * CLIENT REPLY OFF / SKIP: this request's reply is not written (it still runs, in order). Subscription
   * confirmations are pushed regardless, as Redis pushes them (and messages, which are not replies).
   */
  private applyReplyMode(req: Request, spec: CommandSpec | undefined): void {
    if (spec === undefined || !PUSHED_CONFIRMATIONS.has(spec.name)) req.silent = true;
    if (this.replyMode === REPLY_SKIP_NEXT) this.replyMode = REPLY_ON;
  }

  /** Sends a routed unit, behind the client's ordering fence for its slot when cluster mode needs one. */
  sendUnit(unit: RoutedUnit, pool: ShardPool, topo: Topology): void {
    if (pool !== this.lastWritten && unit.writes) this.noteWrite(pool);
    if (topo.resender !== null && (this.fences !== null || unit.multiKey)) {
      const fences = (this.fences ??= new OrderFences(this.inflight, topo.resender));
      if (fences.admit(unit)) return;
    }
    unit.state = UNIT_AT_BACKEND;
    (this.protocol === 2 ? pool : pool.resp3()).pick(this.id).send(unit, unit.frame);
  }

  noteWrite(pool: ShardPool): void {
    this.lastWritten = pool;
    (this.writtenPools ??= new Set()).add(pool);
  }

  takeWritten(): ShardPool[] {
    const written = this.writtenPools;
    this.writtenPools = null;
    this.lastWritten = null;
    return written === null ? [] : [...written];
  }

  onFencedUnitDone(unit: RoutedUnit): void {
    this.fences?.done(unit);
  }

  retryInOrder(unit: RoutedUnit, delayMs: number): void {
    const resender = this.ctx.topology.resender;
    if (resender === null) {
      unit.deliver(unit.lastError ?? ERR_MIGRATION_FAILED); // not reached: only cluster mode retries
      return;
    }
    (this.fences ??= new OrderFences(this.inflight, resender)).retry(unit, delayMs);
  }

  holdRedirect(unit: RoutedUnit): boolean {
    return this.fences !== null && this.fences.hold(unit);
  }

  /**
   * During a migration: if any key of `req` is still on its old owner, moves those keys first and routes the
   * request again afterwards (slow path, only for keys in motion). Returns true when it took the request.
   */
  holdForMigration(
    req: Request,
    migration: Migration,
    idx: number[],
    n: number,
    given?: Buffer[],
    failed?: () => void,
  ): boolean {
    let keys: Buffer[] | null = null;
    if (given !== undefined) {
      for (const key of given) if (migration.needsMove(key)) (keys ??= []).push(key);
    }
    for (let i = 0; i < n; i++) {
      const key = req.args[idx[i]];
      if (migration.needsMove(key)) (keys ??= []).push(key);
    }
    if (keys === null) return false;
    this.blockers++;
    migration.moveThen(keys, (ok) => {
      this.blockers--;
      if (ok) this.dispatch(req);
      else {
        failed?.();
        req.deliver(ERR_MIGRATION_FAILED);
      }
      if (this.blockers === 0 && this.held.length > 0) this.releaseHeld();
    });
    return true;
  }

  /** `req` waits (the publish gate); later requests of this client are held behind it until resumeParked. */
  park(_req: Request): void {
    this.blockers++;
  }

  resumeParked(req: Request): void {
    this.blockers--;
    this.dispatch(req);
    if (this.blockers === 0 && this.held.length > 0) this.releaseHeld();
  }

  /**
   * A sliced fan-out is still sending: later requests are held, and nothing more is read or parsed meanwhile (held
   * requests could not be routed anyway, and a pipeline of several huge commands would otherwise hold all their
   * parsed arguments at once).
   */
  holdLater(): void {
    this.blockers++;
    this.readHolds++;
    this.pauseReading();
  }

  releaseLater(): void {
    this.blockers--;
    this.readHolds--;
    if (this.blockers === 0 && this.held.length > 0) this.releaseHeld();
    this.maybeResume();
  }

  // ---- pub/sub ----------------------------------------------------------------------------------------------

  pubsubClient(): PubSubClient<Entry> {
    return (this.pubsub ??= new PubSubClient<Entry>(this));
  }

  /** A message, out of band: queued after what is queued now, encoded for the client's protocol. */
  writeMessage(frame: Buffer): boolean {
    // After QUIT (or while draining) nothing more is delivered, as Redis stops adding output after QUIT.
    if (this.closed || this.closing) return false;
    const bytes = forProtocol(frame, this.protocol);
    this.out[this.outCount++] = bytes;
    this.outBytes += bytes.length;
    scheduleFlush(this);
    return true;
  }

  overOutputBound(heldBytes: number): boolean {
    if (this.closed) return true;
    const max = this.maxOutputBytes;
    if (max <= 0) return false;
    const pending = this.unsentBytes() + this.outBytes + heldBytes;
    if (pending <= max) return false;
    this.disconnectForOutput(pending);
    return true;
  }

  /**
   * The bytes of its commands read and not answered yet (held behind others, or at a shard; held ones are in
   * `inflight` too): with an unfinished one, CLIENT LIST's qbuf, as Redis counts the commands in its query buffer,
   * the one running included.
   */
  private unansweredBytes(): number {
    let bytes = 0;
    const q = this.inflight;
    for (let i = 0; i < q.length; i++) {
      const req = q.at(i) as Request;
      if (!req.done) bytes += req.frame.length;
    }
    return bytes;
  }

  /** CLIENT LIST's view of this connection (commands/client-list.ts). */
  listing(): ClientListing {
    const now = Date.now();
    const pubsub = this.pubsub;
    const txn = this.txn;
    const inMulti = txn !== null && txn.inMulti;
    const head = this.inflight.peek();
    const blocked = head !== undefined && !head.done && head.spec !== null && head.spec.flags.includes('blocking');
    let flags = '';
    if (pubsub !== null && pubsub.total > 0) flags += 'P';
    if (inMulti) flags += 'x';
    if (blocked) flags += 'b';
    if (this.closing || this.endAfterWrite) flags += 'c';
    const sock = this.socket;
    const handle = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
    const omem = this.closed ? 0 : this.unsentBytes() + this.outBytes;
    return {
      id: this.id,
      addr: this.remote,
      laddr: this.host.startsWith('unix:') ? this.remote : `${sock.localAddress}:${sock.localPort}`,
      fd: typeof handle?.fd === 'number' ? handle.fd : -1,
      name: this.name === null ? '' : this.name.toString('latin1'),
      ageS: Math.floor((now - this.connectedAt) / 1000),
      idleS: Math.max(0, ((performance.now() / 1000) | 0) - this.lastReadS),
      flags: flags === '' ? 'N' : flags,
      sub: pubsub === null ? 0 : pubsub.subs[0].size,
      psub: pubsub === null ? 0 : pubsub.subs[1].size,
      ssub: pubsub === null ? 0 : pubsub.subs[2].size,
      multi: inMulti ? txn.queued.length : -1,
      qbuf: this.parser.heldBytes + this.unansweredBytes(),
      multiMem: txn === null ? 0 : txn.queuedBytes,
      oll: this.outCount,
      omem,
      events: (this.readPaused ? '' : 'r') + (this.writeBlocked ? 'w' : ''),
      cmd: this.lastSpec === null ? 'NULL' : this.lastSpec.name,
      user: this.user ?? 'default',
      resp: this.protocol,
      libName: this.libName === null ? '' : this.libName.toString('latin1'),
      libVer: this.libVersion === null ? '' : this.libVersion.toString('latin1'),
    };
  }

  /** Ends the connection at once (the client is told by the close). */
  kill(reason: string): void {
    if (this.closed) return;
    (outputLimitLog ??= childLogger('clients')).warn(
      { client: this.remote, id: this.id, reason },
      'client disconnected',
    );
    this.closeNow();
  }

  /** Ends the connection at once: what is buffered for the client is dropped; requests sent still complete. */
  private closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropOutput();
    this.outBytes = 0;
    this.leavePubSub();
    this.socket.destroy();
    this.ctx.sessionClosed(this);
  }

  /** RESET: back to a new connection's state (Redis clearClientConnectionState, for what keymux keeps). */
  reset(): void {
    if (this.pubsub !== null) this.ctx.pubsub.clientGone(this.pubsub);
    this.name = null;
    const acl = this.ctx.topology.acl;
    this.authenticated = acl.connectUser !== null;
    this.user = acl.connectUser?.name ?? null;
    this.aclUser = acl.connectUser;
    this.aclFrom = acl;
    this.txn?.reset();
    this.replyMode = REPLY_ON;
    this.switchProtocol(2);
  }

  /**
   * HELLO 2|3, RESET: the client speaks `protocol` from its next command on. Those commands go to the pools'
   * connections of that protocol, a different socket per shard than the earlier ones: so, as after a topology
   * swap, the next command is routed only once every earlier one is answered, and none overtakes them.
   */
  switchProtocol(protocol: number): void {
    if (protocol === this.protocol) return;
    this.protocol = protocol;
    this.routedWith = null;
  }

  /**
   * The client is gone: its subscriptions and the messages waiting for it are dropped; a session connection with
   * a command of it in flight is closed (never reused), its WATCH connection given back.
   */
  private leavePubSub(): void {
    if (this.txn !== null) this.txn.clientGone();
    const pubsub = this.pubsub;
    if (pubsub === null) return;
    this.ctx.pubsub.clientGone(pubsub);
    pubsub.dropHeld();
  }

  // ---- output ---------------------------------------------------------------------------------------------

  onRequestDone(req: Request): void {
    this.outstanding--;
    if (this.exclusive !== null) this.exclusiveStep(req);
    if (this.held.length > 0 && this.blockers === 0) this.releaseHeld();
    if (this.closed || this.inflight.peek() !== req) return; // replies leave in order: wait for the head
    const q = this.inflight;
    let head = q.peek();
    while (head !== undefined && head.done) {
      q.shift();
      if (!head.silent) {
        const reply = head.reply as Buffer;
        this.out[this.outCount++] = reply;
        this.outBytes += reply.length;
      }
      this.writtenSeq = head.seq;
      if (this.pubsub !== null && this.pubsub.holding) this.pubsub.release(head.seq);
      this.ctx.onReplied(head);
      if (head.closeAfter) {
        this.endAfterWrite = true;
        break;
      }
      head = q.peek();
    }
    if (q.length === 0 && this.outCount === 1 && !this.parsing) {
      // A client without pipelining (its one command is answered, nothing else in flight) gets its reply now, not at
      // the end of the turn, where it would wait for the rest of the turn's work (other clients' replies and
      // commands): the same one write, earlier. Not inside its own read being parsed (a read's commands answered by
      // keymux itself are written together), and pipelined batches keep the end-of-turn write.
      this.flush();
      return;
    }
    scheduleFlush(this); // reading resumes there, once it is known whether the socket takes these replies
  }

  /** Cluster mode: the exclusive write is answered (later commands may go), or is now alone (it may go). */
  private exclusiveStep(done: Request): void {
    const ex = this.exclusive as Request;
    if (done === ex) {
      this.exclusive = null;
      this.blockers--;
    } else if (this.exclusiveParked && this.outstanding === 1) {
      this.exclusiveParked = false;
      const topo = this.ctx.topology;
      this.routedWith = topo;
      DISPATCH[(ex.spec as CommandSpec).dispatch](this, ex, ex.spec as CommandSpec, topo);
    }
  }

  flush(): void {
    if (this.closed) return;
    const sock = this.socket;
    const out = this.out;
    const count = this.outCount;
    if (count > 0) {
      // What the client has not taken yet, counting this batch. A client that took everything so far may still
      // get one reply larger than the bound (it is reading); otherwise it is cut once the bound is passed.
      const untaken = this.unsentBytes();
      if (this.maxOutputBytes > 0 && untaken + this.outBytes > this.maxOutputBytes && (untaken > 0 || count > 1)) {
        this.disconnectForOutput(untaken + this.outBytes);
        return;
      }
      this.ctx.stats.bytesOut += this.outBytes;
      const direct = this.direct;
      const ok = direct === null ? writeBatch(sock, out, this.outBytes, count) : this.writeDirect(direct, out, count);
      this.dropOutput();
      this.outBytes = 0;
      if (!ok && !this.writeBlocked) {
        // The client is not reading its replies: stop reading its commands until it catches up.
        this.writeBlocked = true;
        this.pauseReading();
      }
      // Replies its socket still holds count towards limits.max_buffered_bytes (a property read per flush).
      const unsent = this.unsentBytes();
      if (unsent !== this.heldOut) this.reportOutput(unsent);
    }
    // Decided after the write, not when replies complete: resuming before knowing whether the client takes
    // them would read (and answer) one more batch from a client that has stopped reading.
    this.maybeResume();
    if (this.endAfterWrite || (this.closing && this.inflight.length === 0)) {
      // QUIT / protocol error / drain: everything up to it has been written; nothing after it is answered.
      // The socket is destroyed once that is written (or the client stops taking it): never left half-open.
      this.closed = true;
      this.inputClosed = true;
      this.leavePubSub();
      endThenDestroy(sock, CLOSE_LINGER_MS, undefined, () => this.unsentBytes());
      this.ctx.sessionClosed(this);
    }
  }

  /** The commands queued in its MULTI hold `bytes` (until EXEC, DISCARD, RESET or the client leaves). */
  private reportQueued(bytes: number): void {
    if (this.closed) return; // gone: the limits forgot it
    this.heldQueue = bytes;
    this.limits.setHeld(this, this.heldIn + this.heldOut + bytes);
  }

  private reportOutput(unsent: number): void {
    this.heldOut = unsent;
    this.limits.setHeld(this, this.heldIn + unsent + this.heldQueue);
  }

  /**
   * A turn's replies through the direct writer: one write of them all when small (one copy, one syscall), else each
   * as it is (large replies are not copied; libuv queues what the kernel does not take, in order). False when
   * anything is queued. The same three cases as core/flush.ts writeBatch, kept apart on purpose: one writeBatch for
   * both kinds of target made its writes polymorphic and cost 1.1% more instructions per GET at pipeline 16.
   */
  private writeDirect(direct: DirectWriter, out: Buffer[], count: number): boolean {
    if (count === 1) return direct.write(out[0]);
    if (this.outBytes <= CONCAT_LIMIT) return direct.write(concatFirst(out, count, this.outBytes));
    let ok = true;
    for (let i = 0; i < count; i++) if (!direct.write(out[i])) ok = false;
    return ok;
  }

  /** Forgets the replies of out[0 .. outCount) (written or dropped): the kept array must not hold them. */
  private dropOutput(): void {
    const out = this.out;
    for (let i = 0; i < this.outCount; i++) out[i] = NO_BYTES;
    this.outCount = 0;
  }

  /** Replies written but not yet taken by the kernel: in Node's Writable, and in libuv's queue (direct writes). */
  private unsentBytes(): number {
    return this.direct === null ? this.socket.writableLength : this.socket.writableLength + this.direct.pending;
  }

  private onDrain(): void {
    if (this.heldOut !== 0 && !this.closed) this.reportOutput(this.unsentBytes());
    // Both ways of writing must have caught up: Node's Writable ('drain') and the direct writes (directWriteDone).
    if ((this.direct !== null && this.direct.pending > 0) || this.socket.writableNeedDrain) return;
    this.writeBlocked = false;
    this.maybeResume();
  }

  /** A direct write the kernel did not take at once is written (or failed: the socket is destroyed, 'close' follows). */
  directWriteDone(status: number): void {
    if (status >= 0) this.onDrain();
  }

  /** Reads again once nothing holds it back: the socket takes replies, few requests in flight, no full backend. */
  private maybeResume(): void {
    if (
      this.readPaused &&
      !this.writeBlocked &&
      this.backendWaits === 0 &&
      this.readHolds === 0 &&
      !this.closed &&
      this.inflight.length < this.maxInflight >> 1
    )
      this.resumeReading();
  }

  /** A backend connection this session sent to is full: read nothing more until it drains. */
  backendFull(): void {
    this.backendWaits++;
    this.pauseReading();
  }

  backendDrained(): void {
    this.backendWaits--;
    this.maybeResume();
  }

  /**
   * The client has not taken `pendingBytes` of replies, more than clients.max_output_bytes: it is disconnected
   * at once (what is buffered for it is dropped). Its requests already sent still complete and are dropped.
   */
  private disconnectForOutput(pendingBytes: number): void {
    this.ctx.stats.outputLimitDisconnects++;
    logOutputLimit(this, pendingBytes, this.maxOutputBytes);
    this.closeNow();
  }

  /** Stops reading: the socket (no more bytes) and the parser (no more commands from bytes already read). */
  private pauseReading(): void {
    if (this.readPaused) return;
    this.readPaused = true;
    this.socket.pause();
    this.parser.pause();
  }

  private resumeReading(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    this.socket.resume();
    this.parser.resume(); // may deliver buffered commands, and pause again
  }

  private onClose(): void {
    this.leavePubSub();
    if (!this.closed) {
      this.closed = true;
      this.ctx.sessionClosed(this);
    }
  }

  /**
   * The client ended its side. Normally its commands are answered first; but a blocked command (or WAIT) may never be
   * answered, and if it were, after the client left, it could pop an item nobody receives: the client is gone
   * now, and its session connection closed (src/session/).
   */
  private onEnd(): void {
    this.peerEnded = true;
    const txn = this.txn;
    if (txn === null || (!txn.blocking && txn.waiting === null) || this.closed) {
      this.closeWhenDone();
      return;
    }
    this.closed = true;
    this.dropOutput();
    this.outBytes = 0;
    this.leavePubSub();
    this.socket.destroy();
    this.ctx.sessionClosed(this);
  }

  /** Accepts no further commands; the socket ends once the replies before this point are written (QUIT). */
  stopReading(): void {
    this.closing = true;
    this.stopped = true;
  }

  /** Starts closing after in-flight requests are answered (used by drain). */
  closeWhenDone(): void {
    this.closing = true;
    if (this.inflight.length === 0) scheduleFlush(this);
  }

  /** Closes immediately. */
  destroy(): void {
    this.closed = true;
    this.leavePubSub();
    this.socket.destroy();
  }
}
