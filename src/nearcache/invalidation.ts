/**
 * InvalidationTracker: the near cache's dedicated invalidation connection to one shard (one redis-server: a
 * configured shard's address, or a Redis Cluster master). It owns one socket, its handshake, its keepalive and
 * its reconnection, and tells its sink which keys the shard changed and when the channel was lost.
 *
 * How (RESP2, so it does not depend on the protocol of the data connections):
 *   [AUTH ...]  CLIENT ID  ->  CLIENT TRACKING on REDIRECT <own id> BCAST  +  SUBSCRIBE __redis__:invalidate
 * Broadcasting mode with no prefix makes the shard report every key modified by anyone (writes through any
 * keymux, direct clients, scripts, transactions, expiry and eviction) in one message per event-loop iteration,
 * sent before the replies of the commands that modified them; FLUSHALL/FLUSHDB send a null message. Why BCAST
 * rather than the default mode (the shard remembers which keys each connection read): the default mode would need
 * every shared data connection to enable tracking with a REDIRECT to this connection's id in its handshake (a
 * coupling with every pool, and a data connection could run reads tracked nowhere while this one reconnects), and
 * the shard would keep a table of every key any client read through keymux (tracking-table-max-keys, evictions
 * of which invalidate spuriously). BCAST costs the shard nothing per read and us one message per modified key
 * (batched per iteration); the cost grows with the shard's write rate, not its read rate, which suits hot-key
 * caching (a shard taking mostly writes gains little from a near cache anyway).
 *
 * `ready` is true only while the subscription is confirmed: reads sent while it was not ready, or under an older
 * `generation` (the channel was lost since), are never cached. Loss (close, error, no PONG within the keepalive
 * deadline, a reply out of step) calls `sink.lost` at once, before anything else can be served.
 */
import type net from 'node:net';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { connectBackend, describeConnectError } from '../backend/connect.js';
import type { BackendTlsSettings } from '../security/tls.js';
import { commandFrame } from '../resp/writer.js';
import type { Logger } from '../log.js';

export interface TrackerOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  password: string | null;
  username: string | null;
  tls: BackendTlsSettings | null;
}

export interface TrackerSink {
  /** The shard modified `keys` (null: it flushed everything). */
  invalidated(tracker: InvalidationTracker, keys: Buffer[] | null): void;
  /** The channel was lost: nothing cached under it may be served any more. */
  lost(tracker: InvalidationTracker): void;
}

/** A PING every this many ms while subscribed; no reply for KEEPALIVE_DEADLINE_MS = the channel is lost. */
const KEEPALIVE_MS = 1000;
const KEEPALIVE_DEADLINE_MS = 3000;
const require = createRequire(import.meta.url);
/** The reference decoder: this is a control-plane socket (a few messages per shard iteration), not the data path. */
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };
type Parser = InstanceType<typeof RedisParser>;

const MIN_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;
const CHANNEL = '__redis__:invalidate';

/** TCP (and TLS) not connected yet. */
const STEP_CONNECTING = -1;
const STEP_AUTH = 0;
const STEP_ID = 1;
const STEP_TRACKING = 2;
const STEP_SUBSCRIBE = 3;
const STEP_READY = 4;

export class InvalidationTracker {
  readonly address: string;
  /** Index of the shard in the topology currently installed (set by the near cache at each topology). */
  index: number;
  ready: boolean;
  /** Incremented whenever the channel is lost: a read sent under an older generation is not cached. */
  generation: number;
  /** Invalidation messages and keys received (for tests and /metrics). */
  messages: number;
  keys: number;
  reconnects: number;
  lastError: string;
  options: TrackerOptions;

  private readonly sink: TrackerSink;
  private readonly log: Logger;
  private socket: net.Socket | null;
  private parser: Parser | null;
  private step: number;
  private closed: boolean;
  private timer: NodeJS.Timeout | null;
  private reconnectTimer: NodeJS.Timeout | null;
  private backoffMs: number;
  private lastPongAt: number;
  /** Chunks received on the current socket (the connect timer's late check: did the poll after it bring any?). */
  private bytesIn: number;

  constructor(address: string, index: number, options: TrackerOptions, sink: TrackerSink, log: Logger) {
    this.address = address;
    this.index = index;
    this.ready = false;
    this.generation = 0;
    this.messages = 0;
    this.keys = 0;
    this.reconnects = 0;
    this.lastError = 'not connected yet';
    this.options = options;
    this.sink = sink;
    this.log = log;
    this.socket = null;
    this.parser = null;
    this.step = STEP_AUTH;
    this.closed = false;
    this.timer = null;
    this.reconnectTimer = null;
    this.backoffMs = MIN_BACKOFF_MS;
    this.lastPongAt = 0;
    this.bytesIn = 0;
  }

  connect(): void {
    if (this.closed || this.socket !== null) return;
    const o = this.options;
    const { socket: sock, readyEvent } = connectBackend(o.host, o.port, o.tls);
    this.socket = sock;
    this.step = STEP_CONNECTING;
    const parser = new RedisParser({
      returnBuffers: true,
      returnReply: (reply: unknown) => {
        if (this.socket === sock) this.onReply(reply);
      },
      returnError: (err: Error) => {
        if (this.socket === sock) this.fail(`refused the tracking handshake: ${err.message}`);
      },
      returnFatalError: () => {
        if (this.socket === sock) this.fail('sent bytes that are not RESP');
      },
    });
    this.parser = parser;
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 30_000);
    sock.on(readyEvent, () => {
      if (this.socket !== sock) return;
      this.step = o.password !== null ? STEP_AUTH : STEP_ID;
      const frames: Buffer[] = [];
      if (o.password !== null) {
        frames.push(commandFrame(o.username !== null ? ['AUTH', o.username, o.password] : ['AUTH', o.password]));
      }
      frames.push(commandFrame(['CLIENT', 'ID']));
      sock.write(Buffer.concat(frames));
    });
    sock.on('data', (chunk: Buffer) => {
      if (this.socket !== sock) return;
      this.bytesIn++;
      parser.execute(chunk);
    });
    sock.on('error', (err: Error) => {
      if (this.socket === sock) this.fail(describeConnectError(err));
    });
    sock.on('close', () => {
      if (this.socket === sock) this.fail('closed the connection');
    });
    this.arm(o.connectTimeoutMs, this.connectTimedOut);
  }

  /**
   * The connect timer ran. After a stalled event loop it runs before that iteration's I/O poll, where the connect
   * or the handshake's replies may already wait: the poll runs first, and only if nothing came in it (and the
   * handshake did not move) does the channel fail. Anything in it starts a new bound.
   */
  private readonly connectTimedOut = (): void => {
    this.timer = null;
    const sock = this.socket;
    const step = this.step;
    const bytes = this.bytesIn;
    setImmediate(() => {
      if (this.socket !== sock || sock === null || this.ready || this.timer !== null) return;
      const o = this.options;
      if (this.step !== step || this.bytesIn !== bytes) this.arm(o.connectTimeoutMs, this.connectTimedOut);
      else this.fail(`did not complete the handshake within ${o.connectTimeoutMs} ms`);
    });
  };

  /** Closes for good. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drop('closed by keymux');
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private onReply(reply: unknown): void {
    switch (this.step) {
      case STEP_AUTH:
        this.step = STEP_ID;
        return;
      case STEP_ID: {
        const id = Number(reply);
        if (!Number.isSafeInteger(id)) {
          this.fail('answered CLIENT ID with something that is not an id');
          return;
        }
        this.step = STEP_TRACKING;
        (this.socket as net.Socket).write(
          Buffer.concat([
            commandFrame(['CLIENT', 'TRACKING', 'on', 'REDIRECT', String(id), 'BCAST']),
            commandFrame(['SUBSCRIBE', CHANNEL]),
          ]),
        );
        return;
      }
      case STEP_TRACKING:
        this.step = STEP_SUBSCRIBE;
        return;
      case STEP_SUBSCRIBE:
        if (!Array.isArray(reply) || String(reply[0]).toLowerCase() !== 'subscribe') {
          this.fail('answered SUBSCRIBE out of step');
          return;
        }
        this.step = STEP_READY;
        this.ready = true;
        this.backoffMs = MIN_BACKOFF_MS;
        this.lastPongAt = performance.now();
        this.arm(KEEPALIVE_MS, this.keepalive);
        this.log.info({ shard: this.address }, 'near cache: invalidation channel ready');
        return;
      default:
        this.onPush(reply);
    }
  }

  private onPush(reply: unknown): void {
    if (!Array.isArray(reply) || reply.length < 2) {
      this.fail('sent a reply out of step on the invalidation channel');
      return;
    }
    const kind = String(reply[0]).toLowerCase();
    if (kind === 'pong') {
      this.lastPongAt = performance.now();
      return;
    }
    if (kind !== 'message' || reply.length !== 3) {
      this.fail(`sent an unexpected ${kind} on the invalidation channel`);
      return;
    }
    this.messages++;
    const payload = reply[2] as unknown;
    if (Array.isArray(payload)) {
      this.keys += payload.length;
      this.sink.invalidated(this, payload as Buffer[]);
    } else {
      this.sink.invalidated(this, null); // FLUSHALL / FLUSHDB (a null payload)
    }
  }

  private readonly keepalive = (): void => {
    this.timer = null;
    if (!this.ready || this.socket === null) return;
    if (performance.now() - this.lastPongAt > KEEPALIVE_DEADLINE_MS) {
      this.fail(`did not answer PING within ${KEEPALIVE_DEADLINE_MS} ms`);
      return;
    }
    this.socket.write(commandFrame(['PING']));
    this.arm(KEEPALIVE_MS, this.keepalive);
  };

  /** Lost: tell the sink at once, then reconnect with backoff. */
  private fail(reason: string): void {
    if (this.closed || this.socket === null) return;
    const wasReady = this.ready;
    this.lastError = reason;
    this.drop(reason);
    (wasReady ? this.log.warn : this.log.debug).call(
      this.log,
      { shard: this.address, reason, retryInMs: this.backoffMs },
      'near cache: invalidation channel lost; entries of this shard dropped',
    );
    const delay = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.reconnects++;
      this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }

  private drop(_reason: string): void {
    this.ready = false;
    this.generation++;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const sock = this.socket;
    this.socket = null;
    this.parser = null;
    sock?.destroy();
    this.sink.lost(this);
  }

  private arm(ms: number, fn: () => void): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(fn, ms);
    this.timer.unref();
  }
}
