/**
 * SubscriberConnection: one socket in subscribed mode to one backend node, shared by every client of keymux that
 * subscribes to channels, patterns or shard channels placed on that node (the hub, hub.ts, decides what goes
 * where and owns the reference counts). It owns
 * - the socket, the handshake (AUTH with password or ACL user, else a PING: any reply to it will do), and
 *   reconnection with exponential backoff (50 ms to 2 s; `connectNow()` skips the wait when a publisher needs the
 *   node's subscriptions back). The connection is ready only once the server has answered its handshake, within
 *   the connect timeout: a frozen server (SIGSTOP, docker pause) still completes TCP connects from its listen
 *   backlog, and a connection ready on TCP connect alone would subscribe everything again, time out, and do it
 *   all over every backoff, reading as ready half the time;
 * - the commands it sent and the confirmations each still expects, in order (Redis confirms each name of a
 *   SUBSCRIBE / UNSUBSCRIBE ... in turn, in command order, interleaved with messages): a confirmation is matched
 *   to the command that asked for it, so a stale confirmation can never confirm a newer subscription; a
 *   confirmation nobody asked for is a server's own unsubscription (Redis Cluster drops shard channels of a slot
 *   the node lost) and goes to the sink; anything else out of step resets the connection;
 * - one timer: the connect timeout while connecting; while commands wait for confirmations, the operation
 *   timeout (no byte for `timeoutMs` after the oldest was written: reset, like a data connection); while idle, a
 *   PING every KEEPALIVE_MS so that a node that stopped answering is noticed even when no message flows.
 * It always reads: messages are handed to the sink as they arrive and never wait for a slow client (each client
 * has its own output bound), so a node never sees keymux as a slow subscriber because of one client.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { connectBackend, describeConnectError, isTlsError } from '../backend/connect.js';
import type { BackendTlsSettings } from '../security/tls.js';
import { RingQueue } from '../core/ring-queue.js';
import { scheduleFlush, writeBatch, type Flushable } from '../core/flush.js';
import { ReplyScanner, type ReplySink } from '../resp/reply-scanner.js';
import { errorText, isErrorFrame } from '../resp/reply-reader.js';
import { commandFrame } from '../resp/writer.js';
import type { Logger } from '../log.js';
import {
  IN_MESSAGE,
  IN_SUBSCRIBED,
  IN_UNSUBSCRIBED,
  PubSubFrameReader,
  SUBSCRIBE_VERB,
  UNSUBSCRIBE_VERB,
  subscriberCommand,
  type SubKind,
} from './frames.js';

export interface SubscriberOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** No byte for this long while confirmations are awaited: the connection is reset (0: never). */
  timeoutMs: number;
  password: string | null;
  username: string | null;
  /** backend.tls: subscriber connections reach the shard the way data connections do (backend/connect.ts). */
  tls: BackendTlsSettings | null;
}

/** What a subscribe command subscribes: the hub's placement of one channel, pattern or shard channel. */
export interface SubscribeTarget {
  readonly name: Buffer;
}

/** The hub's side of a subscriber connection. */
export interface SubscriberSink<T extends SubscribeTarget> {
  /** Connected (first time or again): everything placed here must be subscribed again. */
  subscriberReady(conn: SubscriberConnection<T>): void;
  /** Lost (or failed to connect): nothing is subscribed here any more until subscriberReady. */
  subscriberDown(conn: SubscriberConnection<T>, reason: string): void;
  /** The backend confirmed `target` (its name in a SUBSCRIBE-type command sent by `subscribe`). */
  subscriptionConfirmed(conn: SubscriberConnection<T>, target: T): void;
  /** The backend confirmed the unsubscription of `name` (asked for by `unsubscribe`). */
  unsubscriptionConfirmed(conn: SubscriberConnection<T>, kind: SubKind, name: Buffer): void;
  /** The backend answered a SUBSCRIBE-type command with an error (MOVED, NOPERM ...): none of `targets` holds. */
  subscriptionRefused(conn: SubscriberConnection<T>, targets: readonly T[], error: Buffer): void;
  /** A message, pmessage or smessage; `reader` holds where its parts are in `frame`. */
  message(conn: SubscriberConnection<T>, frame: Buffer, reader: PubSubFrameReader): void;
  /** The server unsubscribed keymux on its own (Redis Cluster: the node lost the shard channel's slot). */
  serverUnsubscribed(conn: SubscriberConnection<T>, kind: SubKind, name: Buffer): void;
}

export type SubscriberState = 'connecting' | 'ready' | 'down' | 'closed';

/** An idle connection sends PING this often, to notice a node that stopped answering. */
export const KEEPALIVE_MS = 10_000;
const MIN_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;
const PING_FRAME = commandFrame(['PING']);

/** A command sent on the connection and the confirmations it still expects. */
class SentCommand<T> {
  readonly subscribe: boolean;
  readonly kind: SubKind;
  readonly names: readonly Buffer[];
  /** Subscribe commands: the target of each name (confirmed in turn). */
  readonly targets: readonly T[] | null;
  /** Handshake command (AUTH): one plain reply. PING: one pong. */
  readonly plain: boolean;
  next: number;
  sentAt: number;

  constructor(
    subscribe: boolean,
    kind: SubKind,
    names: readonly Buffer[],
    targets: readonly T[] | null,
    plain: boolean,
  ) {
    this.subscribe = subscribe;
    this.kind = kind;
    this.names = names;
    this.targets = targets;
    this.plain = plain;
    this.next = 0;
    this.sentAt = 0;
  }
}

export class SubscriberConnection<T extends SubscribeTarget> implements ReplySink, Flushable {
  readonly address: string;
  /** Placements on this connection (kept by the hub). */
  readonly placements: Set<T>;
  state: SubscriberState;
  flushScheduled: boolean;
  reconnects: number;
  lastError: string;
  /**
   * Date.now() since which the connection has not been ready (its creation, for one never ready yet), 0 while it is
   * ready: an operator reading /shards asks "down since when", not only "down".
   */
  notReadySince: number;

  private options: SubscriberOptions;
  private readonly sink: SubscriberSink<T>;
  private readonly log: Logger;
  private readonly scanner: ReplyScanner;
  private readonly reader: PubSubFrameReader;
  private readonly expecting: RingQueue<SentCommand<T>>;
  private socket: net.Socket | null;
  private out: Buffer[];
  private outBytes: number;
  /** Commands queued since the last flush (their sentAt is set when written). */
  private unsent: number;
  private writeBlocked: boolean;
  private handshaking: boolean;
  /** The handshake is a PING (no AUTH): it only shows the server is alive, so any reply, an error too, will do. */
  private livenessHandshake: boolean;
  private timer: NodeJS.Timeout | null;
  /** The armed timer is the idle keepalive (a write must re-arm it as the operation timeout). */
  private timerIsKeepalive: boolean;
  private reconnectTimer: NodeJS.Timeout | null;
  private backoffMs: number;
  /** This outage (since the connection was made, or last ready) has had its warning: its retries log at debug. */
  private outageLogged: boolean;
  /** performance.now() of the last byte received (or connection start). */
  private progressAt: number;
  private progressSeq: number;
  private lateSeq: number;
  private lateCheckPending: boolean;
  /** Whether TCP had connected when the connect timer ran (confirmConnectLate: connected in the poll after it?). */
  private lateHandshaking: boolean;

  constructor(address: string, options: SubscriberOptions, sink: SubscriberSink<T>, log: Logger) {
    this.address = address;
    this.placements = new Set<T>();
    this.state = 'down';
    this.flushScheduled = false;
    this.reconnects = 0;
    this.lastError = 'not connected yet';
    this.notReadySince = Date.now();
    this.options = options;
    this.sink = sink;
    this.log = log;
    this.scanner = new ReplyScanner(this);
    this.reader = new PubSubFrameReader();
    this.expecting = new RingQueue<SentCommand<T>>(16);
    this.socket = null;
    this.out = [];
    this.outBytes = 0;
    this.unsent = 0;
    this.writeBlocked = false;
    this.handshaking = false;
    this.livenessHandshake = false;
    this.timer = null;
    this.timerIsKeepalive = false;
    this.reconnectTimer = null;
    this.backoffMs = MIN_BACKOFF_MS;
    this.outageLogged = false;
    this.progressAt = 0;
    this.progressSeq = 0;
    this.lateSeq = 0;
    this.lateCheckPending = false;
    this.lateHandshaking = false;
    this.onTimer = this.onTimer.bind(this);
    this.confirmLate = this.confirmLate.bind(this);
    this.confirmConnectLate = this.confirmConnectLate.bind(this);
  }

  /** Starts connecting (idempotent while connecting or connected). */
  connect(): void {
    if (this.state !== 'down') return;
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
    this.state = 'connecting';
    const { socket: sock, readyEvent } = connectBackend(this.options.host, this.options.port, this.options.tls);
    this.socket = sock;
    this.writeBlocked = false;
    this.scanner.reset();
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 30_000);
    sock.on(readyEvent, () => {
      if (this.socket === sock) this.onConnected();
    });
    sock.on('data', (chunk: Buffer) => {
      if (this.socket !== sock) return;
      this.progressAt = performance.now();
      this.progressSeq++;
      this.scanner.feed(chunk);
    });
    sock.on('drain', () => {
      if (this.socket !== sock) return;
      this.writeBlocked = false;
      if (this.out.length > 0) scheduleFlush(this);
    });
    sock.on('error', (err: Error) => {
      if (this.socket === sock) this.fail(isTlsError(err) ? describeConnectError(err) : describeSocketError(err));
    });
    sock.on('close', () => {
      if (this.socket === sock) this.fail('closed the connection');
    });
    this.arm(this.options.connectTimeoutMs);
  }

  /** Down and waiting to reconnect: try now instead (a publisher waits for this node's subscriptions). */
  connectNow(): void {
    if (this.state === 'down' && this.reconnectTimer !== null) {
      this.reconnects++;
      this.connect();
    }
  }

  /** New settings (a reload changed credentials or timeouts): used from the next connection on. */
  setOptions(options: SubscriberOptions): boolean {
    const changed = JSON.stringify(options) !== JSON.stringify(this.options);
    this.options = options;
    return changed;
  }

  /** Sends `VERB name...` subscribing `targets` (ready only; the hub re-sends everything on subscriberReady). */
  subscribe(kind: SubKind, targets: readonly T[]): void {
    const names = targets.map((t) => t.name);
    this.send(new SentCommand<T>(true, kind, names, targets, false), subscriberCommand(SUBSCRIBE_VERB[kind], names));
  }

  /** Sends `UNVERB name...` (ready only; once the connection is lost nothing is subscribed anyway). */
  unsubscribe(kind: SubKind, names: readonly Buffer[]): void {
    this.send(new SentCommand<T>(false, kind, names, null, false), subscriberCommand(UNSUBSCRIBE_VERB[kind], names));
  }

  /** Drops the connection and reconnects (new settings): everything is subscribed again once it is back. */
  restart(reason: string): void {
    if (this.state === 'connecting' || this.state === 'ready') this.fail(reason);
  }

  /** Closes for good (no reconnection). */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.stopTimers();
    this.expecting.drain();
    this.out = [];
    this.outBytes = 0;
    this.unsent = 0;
    if (this.socket !== null) {
      this.socket.destroy();
      this.socket = null;
    }
  }

  /** Commands sent whose confirmations have not all arrived. */
  get awaiting(): number {
    return this.expecting.length;
  }

  // ---- writing --------------------------------------------------------------------------------------------

  private send(cmd: SentCommand<T>, frame: Buffer): void {
    if (this.state !== 'ready' && !(this.handshaking && cmd.plain)) return;
    this.expecting.push(cmd);
    this.out.push(frame);
    this.outBytes += frame.length;
    this.unsent++;
    scheduleFlush(this);
  }

  flush(): void {
    const sock = this.socket;
    if (sock === null || this.out.length === 0 || this.writeBlocked) return;
    if (this.state !== 'ready' && !this.handshaking) return;
    const now = performance.now();
    const q = this.expecting;
    for (let i = q.length - this.unsent; i < q.length; i++) (q.at(i) as SentCommand<T>).sentAt = now;
    this.unsent = 0;
    const ok = writeBatch(sock, this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    if (!ok) this.writeBlocked = true;
    if ((this.timer === null || this.timerIsKeepalive) && !this.lateCheckPending) this.armForState();
  }

  // ---- reading --------------------------------------------------------------------------------------------

  onReply(frame: Buffer): void {
    const reader = this.reader;
    if (reader.read(frame) && reader.type === IN_MESSAGE) {
      this.sink.message(this, frame, reader);
      return;
    }
    const head = this.expecting.peek();
    if (head === undefined) {
      if (reader.type === IN_UNSUBSCRIBED && reader.nameStart >= 0) {
        this.sink.serverUnsubscribed(this, reader.kind, Buffer.from(frame.subarray(reader.nameStart, reader.nameEnd)));
        return;
      }
      this.fail('sent a reply keymux did not ask for');
      return;
    }
    if (isErrorFrame(frame)) {
      // An error answers the whole command (Redis checks before confirming any name).
      this.expecting.shift();
      if (head.plain) {
        if (this.handshaking && this.livenessHandshake) this.becomeReady();
        else if (this.handshaking) this.fail(`refused the handshake: ${errorText(frame)}`);
        return;
      }
      if (head.subscribe && head.targets !== null) this.sink.subscriptionRefused(this, head.targets, frame);
      this.afterProgress();
      return;
    }
    if (head.plain) {
      this.expecting.shift();
      if (this.handshaking && this.expecting.length === 0) this.becomeReady();
      this.afterProgress();
      return;
    }
    const wanted = head.subscribe ? IN_SUBSCRIBED : IN_UNSUBSCRIBED;
    if (reader.type !== wanted || reader.kind !== head.kind || !this.nameIs(frame, head.names[head.next])) {
      if (reader.type === IN_UNSUBSCRIBED && reader.nameStart >= 0) {
        this.sink.serverUnsubscribed(this, reader.kind, Buffer.from(frame.subarray(reader.nameStart, reader.nameEnd)));
        return;
      }
      this.fail('sent a pub/sub reply out of step with the commands keymux sent');
      return;
    }
    const i = head.next++;
    if (head.next === head.names.length) this.expecting.shift();
    if (head.targets !== null) this.sink.subscriptionConfirmed(this, head.targets[i]);
    else this.sink.unsubscriptionConfirmed(this, head.kind, head.names[i]);
    this.afterProgress();
  }

  onReplyProtocolError(detail: string): void {
    this.fail(`sent bytes that are not RESP (${detail})`);
  }

  private nameIs(frame: Buffer, name: Buffer): boolean {
    const r = this.reader;
    if (r.nameStart < 0) return false;
    return frame.subarray(r.nameStart, r.nameEnd).equals(name);
  }

  // ---- life cycle -----------------------------------------------------------------------------------------

  private onConnected(): void {
    this.progressAt = performance.now();
    const o = this.options;
    // The connect timer keeps running until the handshake is answered (becomeReady).
    this.handshaking = true;
    this.livenessHandshake = o.password === null;
    if (o.password !== null) {
      const auth = o.username !== null ? ['AUTH', o.username, o.password] : ['AUTH', o.password];
      this.send(new SentCommand<T>(false, 0, [], null, true), commandFrame(auth));
      return;
    }
    // An error (NOAUTH from a server with a password keymux does not know) shows it alive too; the SUBSCRIBEs that
    // follow get the same error, and their clients are told (subscriptionRefused).
    this.send(new SentCommand<T>(false, 0, [], null, true), PING_FRAME);
  }

  private becomeReady(): void {
    this.handshaking = false;
    this.livenessHandshake = false;
    this.state = 'ready';
    this.backoffMs = MIN_BACKOFF_MS;
    this.outageLogged = false;
    this.lastError = '';
    this.notReadySince = 0;
    this.clearTimer();
    this.lateCheckPending = false; // a connect timer's late check is moot: ready in that poll
    this.log.info({ address: this.address }, 'subscriber connection ready');
    this.sink.subscriberReady(this);
    if (this.state === 'ready') this.armForState();
  }

  /** Reply bytes arrived for an expected command: the timer restarts from here. */
  private afterProgress(): void {
    if (this.expecting.length === 0 && this.state === 'ready' && !this.lateCheckPending) this.armForState();
  }

  private arm(ms: number, keepalive = false): void {
    this.clearTimer();
    this.timer = setTimeout(this.onTimer, Math.max(1, ms));
    this.timerIsKeepalive = keepalive;
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Ready: the operation timeout while something is awaited, else the keepalive period (no timer if both off). */
  private armForState(): void {
    const timeoutMs = this.options.timeoutMs;
    if (timeoutMs <= 0) {
      this.clearTimer();
      return;
    }
    if (this.expecting.length > 0) this.arm(timeoutMs);
    else this.arm(KEEPALIVE_MS, true);
  }

  private onTimer(): void {
    this.timer = null;
    if (this.state === 'connecting') {
      // A timer run after a stalled event loop runs before that iteration's I/O poll, where the connect or the
      // handshake's reply may already wait: let the poll run first (confirmConnectLate), as for the operation timeout.
      this.lateCheckPending = true;
      this.lateSeq = this.progressSeq;
      this.lateHandshaking = this.handshaking;
      setImmediate(this.confirmConnectLate);
      return;
    }
    if (this.state !== 'ready') return;
    this.check(false);
  }

  private check(confirmed: boolean): void {
    const timeoutMs = this.options.timeoutMs;
    if (timeoutMs <= 0) return;
    const now = performance.now();
    const head = this.expecting.peek();
    if (head === undefined) {
      // Idle: a keepalive PING. Its pong (or anything) must come within the operation timeout. A timer can fire a
      // little before KEEPALIVE_MS by performance.now() (libuv counts from its loop's cached, whole-millisecond time),
      // and bytes may have come since it was armed: the rest of the period is waited, not a whole new one (which
      // made a frozen node's detection take up to twice the keepalive).
      const quietMs = now - this.progressAt;
      if (quietMs < KEEPALIVE_MS) {
        this.arm(KEEPALIVE_MS - quietMs, true);
        return;
      }
      this.send(new SentCommand<T>(false, 0, [], null, true), PING_FRAME);
      this.armForState();
      return;
    }
    const idle = now - Math.max(head.sentAt, this.progressAt);
    if (head.sentAt === 0 || idle < timeoutMs) {
      this.arm(timeoutMs - (head.sentAt === 0 ? 0 : idle));
      return;
    }
    if (!confirmed) {
      // Let this turn's I/O poll run first: bytes that waited in the kernel while keymux was busy still count.
      this.lateCheckPending = true;
      this.lateSeq = this.progressSeq;
      setImmediate(this.confirmLate);
      return;
    }
    this.fail(`timed out: no reply within ${timeoutMs} ms`);
  }

  /**
   * After the I/O poll that followed the connect timer: still connecting and nothing came in that poll: the node did
   * not answer in time. Connected, or bytes of the handshake's reply in that poll: it is answering, a new bound starts.
   */
  private confirmConnectLate(): void {
    if (!this.lateCheckPending) return; // failed, closed or ready meanwhile
    this.lateCheckPending = false;
    if (this.state !== 'connecting') return;
    if (this.progressSeq !== this.lateSeq || this.handshaking !== this.lateHandshaking) {
      this.arm(this.options.connectTimeoutMs);
      return;
    }
    this.fail(`did not answer the connection within ${this.options.connectTimeoutMs} ms`);
  }

  private confirmLate(): void {
    if (!this.lateCheckPending) return;
    this.lateCheckPending = false;
    if (this.state !== 'ready') return;
    if (this.progressSeq === this.lateSeq) this.check(true);
    else this.armForState();
  }

  private fail(reason: string): void {
    if (this.state === 'closed' || this.state === 'down') return;
    // One warning per outage, the first failure's, whether the connection had been ready (a node lost) or not yet
    // (a node down or frozen when keymux first needed it); every retry after it at debug.
    const firstOfOutage = !this.outageLogged;
    this.outageLogged = true;
    this.state = 'down';
    this.handshaking = false;
    this.livenessHandshake = false;
    this.lastError = reason;
    if (this.notReadySince === 0) this.notReadySince = Date.now(); // a retry keeps the outage's start
    const sock = this.socket;
    this.socket = null;
    if (sock !== null) sock.destroy();
    this.scanner.reset();
    this.stopTimers();
    this.expecting.drain();
    this.out = [];
    this.outBytes = 0;
    this.unsent = 0;
    (firstOfOutage ? this.log.warn : this.log.debug).call(
      this.log,
      { address: this.address, reason, retryInMs: this.backoffMs },
      'subscriber connection failed',
    );
    this.sink.subscriberDown(this, reason);
    if (this.state !== 'down') return; // closed by the sink
    const delay = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.reconnects++;
      this.connect();
    }, delay);
  }

  private stopTimers(): void {
    this.clearTimer();
    this.lateCheckPending = false;
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }
}

function describeSocketError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined ? `connection error ${code}` : `connection error: ${err.message}`;
}
