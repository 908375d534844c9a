/**
 * BackendConnection: one socket to one redis-server, shared by many clients. It owns
 * - the FIFO of operations waiting for replies (a RingQueue; replies arrive in send order, so the head is always
 *   the next to be answered), and the raw-frame ReplyScanner that finds where each reply ends;
 * - where reply bytes land: a pool's connections over plain TCP read into slabs of their own (SlabReads, at the
 *   end of this file) instead of a new Buffer per read; leased and short-lived connections, and TLS, use 'data';
 * - batched writes: frames queued during an event-loop turn leave in one write (core/flush.ts);
 * - the handshake (AUTH with password or ACL user, HELLO 3 on a RESP3 connection, READONLY when asked, ROLE when
 *   the node must be a primary: a Sentinel-managed shard's primary that answers "slave" — an old primary come
 *   back — fails the handshake, so no write is ever sent to it; on a pool's connections (`pingHandshake`), PING
 *   when none of these is sent, any reply to it will do) run before any client command is sent. The connection is
 *   ready only once the server has answered, within the connect timeout: a frozen server (SIGSTOP, docker pause)
 *   still completes TCP connects from its listen backlog, and must read as down (shard_up 0, /shards, /readyz)
 *   until it answers again;
 * - the protocol it speaks (`protocol`, 2 unless the options say 3: a shard pool's RESP3 twin, pool.ts): replies
 *   pass through as bytes either way. A push frame ('>', out of band) is never a reply: keymux enables nothing
 *   that pushes on a shared connection (no CLIENT TRACKING, no SUBSCRIBE), so one that arrives anyway is dropped
 *   and logged, never delivered to the request at the head of the queue;
 * - one timer, used as the connect timeout while connecting and as the operation timeout while ready; there is
 *   never a timer per request. The shard is late only when it makes no progress for `timeoutMs`: counted from
 *   when the oldest unanswered request was written to the socket (not from when it was queued in keymux; frames
 *   waiting for the connection or for 'drain' do not count) or from the last reply bytes that arrived (or the
 *   last 'drain', the shard taking our bytes), whichever is later. A shard streaming a large reply, or working
 *   through a deep pipeline, is busy, not dead. Before declaring it late, the timer lets one I/O poll run, so
 *   reply bytes that waited in the kernel while keymux itself was busy (a long turn, a GC pause) still count. A
 *   blocking command (session connections, BackendOp.blockMs) may be silent for its own timeout on top of that,
 *   and for ever when it has none;
 * - a bound on what it holds (`maxPending` operations, waiting and unsent): a client session whose request finds
 *   it full is paused (it stops reading its socket) and registered here, and every registered session is resumed
 *   once the queue drains to half the bound: full queues push back instead of growing or timing out;
 * - failure handling: on loss, timeout or a reply stream that is not RESP, every waiting operation is answered
 *   with an error naming the shard (never retried: a write may have been applied; in cluster mode, ops whose
 *   bytes were never written go to the redirect handler instead), the socket is destroyed so no
 *   late reply can reach a later request, and reconnection starts with exponential backoff. While down, new
 *   operations are answered at once with the last error, so other shards keep serving.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { connectBackend, describeConnectError, type ReadInto } from './connect.js';
import type { BackendTlsSettings } from '../security/tls.js';
import { shardError } from '../errors.js';
import { RingQueue } from '../core/ring-queue.js';
import { Request, type BackendOp, type RequestOwner } from '../core/request.js';
import { Fragment } from '../core/fragment.js';
import { scheduleFlush, writeBatch, type Flushable } from '../core/flush.js';
import { turnNow } from '../core/clock.js';
import { viewOf } from '../core/byte-view.js';
import { ReplyScanner, type ReplySink } from '../resp/reply-scanner.js';
import { errorText, isErrorFrame, isPushFrame } from '../resp/reply-reader.js';
import { commandFrame } from '../resp/writer.js';
import type { Logger } from '../log.js';
import { ShardStats } from '../metrics/stats.js';

/** setTimeout's largest delay (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface ShardIdentity {
  name: string;
  address: string;
  host: string;
  port: number;
}

export interface BackendOptions {
  connectTimeoutMs: number;
  /** Operation timeout: no progress for this long fails what waits; 0 disables it. */
  timeoutMs: number;
  /**
   * Operations (waiting for a reply or not yet written) past which sessions sending here are paused until the
   * queue drains to half of it; 0 or absent: unbounded (control-plane connections).
   */
  maxPending?: number;
  /**
   * Plain TCP reads land in a 64 KiB slab of the connection's own instead of a new Buffer per read (SlabReads): for
   * the long-lived shared connections of a shard's pool, not for the many leased or short-lived ones.
   */
  slabReads?: boolean;
  password: string | null;
  username: string | null;
  /** Send READONLY after connecting (cluster replicas). */
  readOnly: boolean;
  /** Ask ROLE after connecting and refuse a node that is not a primary (Sentinel-managed shards). */
  expectPrimary?: boolean;
  /** Cluster mode only. */
  redirectHandler?: RedirectHandler | null;
  /** backend.tls: connect over TLS when enabled (connect.ts); absent or null: plain TCP. */
  tls?: BackendTlsSettings | null;
  /** RESP version to speak: 3 sends HELLO 3 in the handshake (a pool's RESP3 twin); absent: 2. */
  protocol?: 2 | 3;
  /**
   * Send PING in the handshake when nothing else is sent there, so the connection is ready only once the server has
   * answered (a frozen server still completes TCP connects): set for a shard pool's connections (pool.ts), whose
   * readiness is the shard's health (keymux_shard_up, /shards, /readyz). Session and migration connections are not
   * reported as health and fail on their first command's timeout instead; they save the round trip.
   */
  pingHandshake?: boolean;
  /**
   * false: a failure closes the connection for good instead of reconnecting (session connections, src/session/:
   * their state, a WATCH or a block, dies with the socket, so a fresh socket under the same object would lie).
   */
  reconnect?: boolean;
  /**
   * Ops may carry their own silence bound (BackendOp.blockMs: session connections). A reply may then also wait for
   * every command written in the same batches after it: Redis runs the whole batch it read before it writes the
   * replies, so a CLIENT ID sent ahead of a script that runs for seconds is answered only when the script ends.
   */
  blockingOps?: boolean;
}

export type ConnectionState = 'connecting' | 'handshake' | 'ready' | 'down' | 'closed';

/**
 * Cluster mode's hook into a connection (backend/cluster.ts): sees error replies before they are delivered, so
 * MOVED/ASK/TRYAGAIN/CLUSTERDOWN are absorbed and the op re-sent; and sees ops sent while the node is down, so
 * they can wait for a failover instead of failing at once. Returns true when it took the op over.
 */
export interface RedirectHandler {
  interceptReply(op: BackendOp, frame: Buffer, from: BackendConnection): boolean;
  interceptUnavailable(op: BackendOp, from: BackendConnection): boolean;
  /** The connection is ready again: ops the handler holds for it go first (Sentinel shards' failover wait). */
  connectionReady?(from: BackendConnection): void;
  /** The connection failed (Sentinel shards: a hint to ask the sentinels now). */
  connectionFailed?(from: BackendConnection, reason: string): void;
}

/** The handshake of a connection that has no other handshake command (see the constructor). */
const PING = commandFrame(['PING']);

const MIN_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;
/** Dropped push frames are logged at most once per this period per connection (with the count since). */
const PUSH_LOG_EVERY_MS = 10_000;

export class BackendConnection implements ReplySink, Flushable {
  readonly shard: ShardIdentity;
  /** Plain counters shared by every connection of the shard (published by metrics at scrape time). */
  readonly stats: ShardStats;
  state: ConnectionState;
  flushScheduled: boolean;
  /** Counters read by metrics and /shards. */
  replies: number;
  reconnects: number;
  timeouts: number;
  lastError: string;
  /** Push frames received on this shared connection and dropped (none are expected: see the file comment). */
  pushesDropped: number;
  /** RESP version the connection speaks (2, or 3 for a pool's RESP3 twin). */
  readonly protocol: 2 | 3;

  private readonly options: BackendOptions;
  private readonly log: Logger;
  private readonly scanner: ReplyScanner;
  private readonly waiting: RingQueue<BackendOp>;
  private socket: net.Socket | null;
  private out: Buffer[];
  private outBytes: number;
  private handshakePending: number;
  private timer: NodeJS.Timeout | null;
  private timerArmed: boolean;
  private reconnectTimer: NodeJS.Timeout | null;
  private backoffMs: number;
  private downReply: Buffer;
  private retiring: boolean;
  private readonly handshakeFrames: Buffer[];
  /**
   * The handshake is only the PING that proves the server answers: any reply does, an error too (NOAUTH from a
   * server that wants a password keymux was not given, LOADING, a NOPERM for PING): clients get those errors from
   * their commands, as they would without the PING.
   */
  private readonly livenessOnly: boolean;
  /** The last handshake frame is ROLE and the node must say "master". */
  private readonly checkRole: boolean;
  private readonly redirects: RedirectHandler | null;
  /** The socket's write buffer is full: wait for 'drain' before writing more. */
  private writeBlocked: boolean;
  /** When the shard last showed progress: reply bytes arrived, or the socket drained (turn clock). */
  private progressAt: number;
  /** Counts those progress events; the late check compares it across one I/O poll. */
  private progressSeq: number;
  /** A late-looking timer is waiting for the next I/O poll (confirmLate); progressSeq as it was then. */
  private lateCheckPending: boolean;
  /** The state the connect timer found (confirmConnectLate: connected in the poll that followed it?). */
  private lateState: ConnectionState;
  /** blockingOps: the longest blockMs written since nothing written was unanswered (see BackendOptions). */
  private writtenBlockMs: number;
  private lateSeq: number;
  private readonly maxPending: number;
  private readonly lowWater: number;
  /** BackendOptions.blockingOps: ops may carry a blockMs (session connections). */
  private readonly blockingOps: boolean;
  /** Sessions paused because this connection was full, resumed when it drains to `lowWater`. */
  private readonly blockedSenders: Set<RequestOwner>;
  private pushLoggedAt: number;
  private pushesUnlogged: number;

  constructor(shard: ShardIdentity, options: BackendOptions, log: Logger, stats?: ShardStats) {
    this.shard = shard;
    this.stats = stats ?? new ShardStats(shard.name, shard.address);
    this.state = 'down';
    this.flushScheduled = false;
    this.replies = 0;
    this.reconnects = 0;
    this.timeouts = 0;
    this.lastError = 'not connected yet';
    this.pushesDropped = 0;
    this.protocol = options.protocol ?? 2;
    this.options = options;
    this.log = log;
    this.scanner = new ReplyScanner(this);
    this.waiting = new RingQueue<BackendOp>(64);
    this.socket = null;
    this.out = [];
    this.outBytes = 0;
    this.handshakePending = 0;
    this.timer = null;
    this.timerArmed = false;
    this.writtenBlockMs = 0;
    this.reconnectTimer = null;
    this.backoffMs = MIN_BACKOFF_MS;
    this.downReply = shardError(shard.name, shard.address, 'is unavailable: not connected yet');
    this.retiring = false;
    const frames: Buffer[] = [];
    if (options.password !== null) {
      frames.push(
        commandFrame(
          options.username !== null ? ['AUTH', options.username, options.password] : ['AUTH', options.password],
        ),
      );
    }
    if (this.protocol === 3) frames.push(commandFrame(['HELLO', '3']));
    if (options.readOnly) frames.push(commandFrame(['READONLY']));
    // Last, so that its reply is the last of the handshake (onHandshakeReply checks it there).
    this.checkRole = options.expectPrimary === true;
    if (this.checkRole) frames.push(commandFrame(['ROLE']));
    // A connection is ready only once the server has answered something: a frozen server (SIGSTOP, docker pause)
    // still completes TCP connects from its listen backlog, and without a command to answer it would read as up.
    this.livenessOnly = frames.length === 0 && options.pingHandshake === true;
    if (this.livenessOnly) frames.push(PING);
    this.handshakeFrames = frames;
    this.redirects = options.redirectHandler ?? null;
    this.writeBlocked = false;
    this.progressAt = 0;
    this.progressSeq = 0;
    this.lateCheckPending = false;
    this.lateState = 'connecting';
    this.lateSeq = 0;
    this.maxPending = options.maxPending !== undefined && options.maxPending > 0 ? options.maxPending : 0;
    this.lowWater = this.maxPending >> 1;
    this.blockingOps = options.blockingOps === true;
    this.blockedSenders = new Set<RequestOwner>();
    this.pushLoggedAt = Number.NEGATIVE_INFINITY;
    this.pushesUnlogged = 0;
    this.onTimer = this.onTimer.bind(this);
    this.confirmLate = this.confirmLate.bind(this);
    this.confirmConnectLate = this.confirmConnectLate.bind(this);
  }

  /**
   * New operations go to the redirect handler as if the connection were down (held there), though it is up: set
   * while a Sentinel failover of this shard's primary is in progress (sentinel.ts), so nothing new reaches a primary
   * that is being replaced.
   */
  holding = false;

  /** The error reply new operations get while the node is down. */
  get unavailableReply(): Buffer {
    return this.downReply;
  }

  /** Operations sent and not yet answered. */
  get inflight(): number {
    return this.waiting.length;
  }

  /**
   * Where `op` stands in this connection's order when it is the op sent last: a position that is never given
   * twice (ops are numbered as they are queued), for waitingAt; -1 when `op` is not the last one queued.
   */
  positionOfLast(op: BackendOp): number {
    const waiting = this.waiting;
    return waiting.last() === op ? waiting.taken + waiting.length - 1 : -1;
  }

  /** The op at a position positionOfLast gave, while it still waits for its reply; undefined once answered. */
  waitingAt(position: number): BackendOp | undefined {
    return this.waiting.at(position - this.waiting.taken);
  }

  /** Starts connecting (idempotent while connecting or connected). */
  connect(): void {
    if (this.state === 'closed' || this.state === 'connecting' || this.state === 'handshake' || this.state === 'ready')
      return;
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
    this.state = 'connecting';
    const onChunk = (chunk: Buffer): void => {
      if (this.socket !== sock) return;
      this.progressAt = turnNow();
      this.progressSeq++;
      this.scanner.feed(chunk);
    };
    const {
      socket: sock,
      readyEvent,
      userReads,
    } = connectBackend(
      this.shard.host,
      this.shard.port,
      this.options.tls ?? null,
      this.options.slabReads === true ? new SlabReads(onChunk) : undefined,
    );
    this.socket = sock;
    this.writeBlocked = false;
    this.progressAt = 0;
    this.scanner.reset();
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 30_000);
    sock.on(readyEvent, () => {
      if (this.socket === sock) this.onConnected();
    });
    if (userReads !== true) sock.on('data', onChunk);
    sock.on('drain', () => {
      if (this.socket !== sock) return;
      this.writeBlocked = false;
      this.progressAt = turnNow();
      this.progressSeq++;
      if (this.out.length > 0) scheduleFlush(this);
    });
    sock.on('error', (err: Error) => {
      if (this.socket === sock) this.fail(describeConnectError(err, this.options.tls ?? null));
    });
    sock.on('close', () => {
      if (this.socket === sock) this.fail('closed the connection');
    });
    this.armTimer(this.options.connectTimeoutMs);
  }

  /**
   * Queues `frame` and its operation. The op is answered exactly once: by the reply, or by an error on failure.
   * While the shard is down the error comes synchronously. The op is always taken; if it fills the connection,
   * the session that sent it is paused until the connection drains (see `maxPending`).
   */
  send(op: BackendOp, frame: Buffer): void {
    const state = this.state;
    if (state === 'down' || state === 'closed' || this.holding) {
      if (this.redirects !== null && this.redirects.interceptUnavailable(op, this)) return;
      op.deliver(this.downReply);
      return;
    }
    this.waiting.push(op);
    this.out.push(frame);
    this.outBytes += frame.length;
    if (state === 'ready') scheduleFlush(this);
    if (this.maxPending > 0 && this.waiting.length >= this.maxPending) this.pushBack(op);
  }

  flush(): void {
    const sock = this.socket;
    // While the socket pushes back (the shard reads slower than we write), frames wait here for 'drain': they are
    // bounded by maxPending, and batching them later costs fewer writes.
    if (this.state !== 'ready' || sock === null || this.out.length === 0 || this.writeBlocked) return;
    // The ops of these frames (the last out.length waiting, one frame each) are written now: their time starts.
    const waiting = this.waiting;
    const now = performance.now();
    const from = waiting.length - this.out.length;
    if (this.blockingOps) {
      if (from === 0) this.writtenBlockMs = 0; // nothing written before is unanswered
      for (let i = from; i < waiting.length; i++) {
        const op = waiting.at(i) as BackendOp;
        op.sentAt = now;
        const block = op.blockMs;
        if (block !== undefined && block > this.writtenBlockMs) this.writtenBlockMs = block;
      }
    } else {
      for (let i = from; i < waiting.length; i++) (waiting.at(i) as BackendOp).sentAt = now;
    }
    const ok = writeBatch(sock, this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    if (!ok) this.writeBlocked = true;
    if (!this.timerArmed && !this.lateCheckPending && this.options.timeoutMs > 0) this.armTimer(this.options.timeoutMs);
  }

  onReply(frame: Buffer): void {
    const type = frame[0];
    if (type === 62 /* > */ || (type === 124 /* | */ && isPushFrame(frame))) {
      this.dropPush(frame);
      return;
    }
    if (this.handshakePending > 0) {
      this.onHandshakeReply(frame);
      return;
    }
    const op = this.waiting.shift();
    if (op === undefined) {
      // A reply nobody asked for: the stream is out of step; trusting it could misdeliver later replies.
      this.fail('sent a reply with no request waiting for it');
      return;
    }
    this.replies++;
    const stats = this.stats;
    stats.commands++;
    if (frame[0] === 45 /* - */) stats.errors++;
    // A blocking command's wait (or an isolated script's run: ops with a blockMs, session connections only) is the
    // client's choice, not the shard's latency: not in the histogram. Shared connections never read blockMs.
    if (!this.blockingOps || op.blockMs === undefined) {
      const elapsed = turnNow() - op.sentAt;
      stats.latency.observe(elapsed > 0 ? elapsed / 1000 : 0);
    }
    if (frame[0] !== 45 || this.redirects === null || !this.redirects.interceptReply(op, frame, this))
      op.deliver(frame);
    // The timer stays off while a blocking command with no timeout is the oldest unanswered: what was written behind
    // it is timed from now on.
    if (!this.timerArmed && this.waiting.length > this.out.length && !this.lateCheckPending) this.rearm();
    if (this.blockedSenders.size > 0 && this.waiting.length <= this.lowWater) this.releaseSenders();
    if (this.retiring && this.waiting.length === 0) this.close();
  }

  /** A push frame (out of band) on a shared connection: not a reply to anything waiting here; dropped, logged. */
  private dropPush(frame: Buffer): void {
    this.pushesDropped++;
    const now = performance.now();
    if (now - this.pushLoggedAt < PUSH_LOG_EVERY_MS) {
      this.pushesUnlogged++;
      return;
    }
    this.pushLoggedAt = now;
    this.log.warn(
      {
        shard: this.shard.name,
        address: this.shard.address,
        push: frame.toString('latin1', 0, Math.min(frame.length, 80)),
        notLoggedSinceLast: this.pushesUnlogged,
      },
      'backend sent a push frame on a shared connection; dropped (keymux enables no pushes there)',
    );
    this.pushesUnlogged = 0;
  }

  onReplyProtocolError(detail: string): void {
    this.fail(`sent bytes that are not RESP (${detail})`);
  }

  /** Closes now: waiting operations are answered with an error; no reconnection. */
  close(): void {
    if (this.state === 'closed') return;
    this.failWaiting(shardError(this.shard.name, this.shard.address, 'connection closed by keymux'));
    this.state = 'closed';
    this.stopTimers();
    if (this.socket !== null) {
      this.socket.destroy();
      this.socket = null;
    }
    // Last: a resumed session may send again at once, and must find this connection closed.
    if (this.blockedSenders.size > 0) this.releaseSenders();
  }

  /** Retires the connection: it closes as soon as no operation is waiting (used when a reload drops a shard). */
  closeWhenIdle(): void {
    this.retiring = true;
    if (this.waiting.length === 0 && this.out.length === 0) this.close();
  }

  private onConnected(): void {
    if (this.handshakeFrames.length > 0) {
      this.state = 'handshake';
      this.handshakePending = this.handshakeFrames.length;
      (this.socket as net.Socket).write(Buffer.concat(this.handshakeFrames));
      return;
    }
    this.becomeReady();
  }

  private onHandshakeReply(frame: Buffer): void {
    if (isErrorFrame(frame) && !this.livenessOnly) {
      this.fail(`refused the handshake: ${errorText(frame)}`);
      return;
    }
    if (--this.handshakePending === 0) {
      const role = this.checkRole ? roleOf(frame) : 'master';
      if (role !== 'master') {
        this.fail(`is not a primary (ROLE says ${role}): not used for writes`);
        return;
      }
      this.becomeReady();
    }
  }

  private becomeReady(): void {
    this.state = 'ready';
    this.backoffMs = MIN_BACKOFF_MS;
    this.log.info({ shard: this.shard.name, address: this.shard.address }, 'backend connected');
    // The connect timer is done; the operation timer starts with the first write (operations queued while
    // connecting get their full timeout from the moment they are written).
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerArmed = false;
    this.lateCheckPending = false; // a connect timer's late check (confirmConnectLate) is moot: ready in that poll
    // Ops held while the node was down go first, before any new request can reach this connection.
    this.redirects?.connectionReady?.(this);
    if (this.waiting.length > 0) scheduleFlush(this);
  }

  private rearm(): void {
    if (this.state === 'ready' && this.options.timeoutMs > 0) this.armTimer(this.options.timeoutMs);
  }

  private armTimer(ms: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    // Capped at setTimeout's largest delay (a blocking command's timeout may be far longer: WAIT 0 2^63-1); past
    // it Node would fire at once. The check re-arms for what is left.
    this.timer = setTimeout(this.onTimer, Math.min(MAX_TIMER_MS, Math.max(1, ms)));
    this.timerArmed = true;
  }

  private onTimer(): void {
    this.timerArmed = false;
    if (this.state === 'connecting' || this.state === 'handshake') {
      // A timer run after a stalled event loop (a long turn, a GC pause, a CPU-starved process) runs before that
      // iteration's I/O poll, where the connect or the handshake's reply may already be waiting: let the poll run
      // first, as checkProgress does for requests (confirmConnectLate), and fail only if nothing moved in it.
      this.lateCheckPending = true;
      this.lateSeq = this.progressSeq;
      this.lateState = this.state;
      setImmediate(this.confirmConnectLate);
      return;
    }
    this.checkProgress(false);
  }

  /**
   * After the I/O poll that followed the connect timer: the connection is still connecting (or its handshake still
   * unanswered) and no byte came in that poll: the server did not answer in time. If it connected or answered part
   * of the handshake in that poll, it is answering: a new bound starts.
   */
  private confirmConnectLate(): void {
    if (!this.lateCheckPending) return; // failed or closed meanwhile
    this.lateCheckPending = false;
    if (this.state !== 'connecting' && this.state !== 'handshake') return;
    if (this.state !== this.lateState || this.progressSeq !== this.lateSeq) {
      this.armTimer(this.options.connectTimeoutMs);
      return;
    }
    const tls = this.state === 'connecting' && this.options.tls?.enabled === true;
    // In 'handshake', TCP connected (a frozen server's kernel still accepts connects) but the server said nothing.
    this.fail(
      tls
        ? `did not complete the TLS handshake within ${this.options.connectTimeoutMs} ms (is it a TLS port?)`
        : `did not answer the connection within ${this.options.connectTimeoutMs} ms`,
    );
  }

  /**
   * The operation timeout: re-arms for what is left when the shard made progress since the oldest unanswered
   * request was written; when it has not, lets this turn's I/O poll run first (confirmLate) and only then fails.
   * Nothing written and unanswered: the timer stays off until the next write.
   */
  private checkProgress(confirmed: boolean): void {
    if (this.state !== 'ready' || this.options.timeoutMs <= 0) return;
    if (this.waiting.length === this.out.length) return; // nothing written is waiting for a reply
    const head = this.waiting.peek() as BackendOp;
    // A blocking command (session connections) may rightly be silent for its own timeout too; with none, for ever
    // (the timer is armed again once it is answered: onReply).
    const timeoutMs = this.options.timeoutMs + Math.max(head.blockMs ?? 0, this.writtenBlockMs);
    if (timeoutMs === Infinity) return;
    const idle = performance.now() - Math.max(head.sentAt, this.progressAt);
    if (idle < timeoutMs) {
      this.armTimer(timeoutMs - idle);
      return;
    }
    if (!confirmed) {
      this.lateCheckPending = true;
      this.lateSeq = this.progressSeq;
      setImmediate(this.confirmLate);
      return;
    }
    this.timeouts++;
    this.stats.timeouts++;
    this.fail(`timed out: no reply within ${timeoutMs} ms`);
  }

  /** Runs after the I/O poll that followed a late-looking timer: late only if no byte came in that poll either. */
  private confirmLate(): void {
    if (!this.lateCheckPending) return; // the connection failed or closed meanwhile
    this.lateCheckPending = false;
    if (this.progressSeq === this.lateSeq) {
      this.checkProgress(true);
      return;
    }
    // Bytes came in that poll (read in this very event-loop iteration): the shard is making progress now.
    this.progressAt = performance.now();
    this.checkProgress(false);
  }

  /** `op` filled the connection: its session stops reading until the connection drains (once per session). */
  private pushBack(op: BackendOp): void {
    const sender = op instanceof Request ? op.owner : op instanceof Fragment ? op.parent.owner : null;
    if (sender === null || this.blockedSenders.has(sender)) return;
    this.blockedSenders.add(sender);
    this.stats.pushbacks++;
    sender.backendFull();
  }

  private releaseSenders(): void {
    const senders = [...this.blockedSenders];
    this.blockedSenders.clear();
    for (const s of senders) s.backendDrained();
  }

  /** Tears the connection down, answers every waiting operation with the error, and schedules a reconnect. */
  private fail(reason: string): void {
    if (this.state === 'closed' || this.state === 'down') return;
    const wasReady = this.state === 'ready';
    // A refused TLS handshake is a configuration problem, not a shard still starting: worth a warning (once, not
    // at every reconnection attempt).
    const loud = wasReady || (reason.startsWith('TLS') && reason !== this.lastError);
    this.lastError = reason;
    const reply = shardError(this.shard.name, this.shard.address, reason);
    this.downReply = shardError(this.shard.name, this.shard.address, `is unavailable: ${reason}`);
    this.state = 'down';
    const sock = this.socket;
    this.socket = null;
    if (sock !== null) sock.destroy();
    this.scanner.reset();
    this.handshakePending = 0;
    this.stopTimers();
    this.failWaiting(reply);
    if (this.blockedSenders.size > 0) this.releaseSenders(); // they find the connection down: answered at once
    this.redirects?.connectionFailed?.(this, reason);
    (loud ? this.log.warn : this.log.debug).call(
      this.log,
      { shard: this.shard.name, address: this.shard.address, reason, retryInMs: this.backoffMs },
      'backend connection failed',
    );
    if (this.retiring || this.options.reconnect === false) {
      this.state = 'closed';
      return;
    }
    this.scheduleReconnect();
  }

  private failWaiting(reply: Buffer): void {
    // The last `out.length` waiting ops never left keymux (queued while connecting, or since the last flush: one
    // frame per op), so they cannot have been applied: the cluster controller may re-send them (e.g. to the
    // slot's new owner after a failover). Ops already written get the error: re-sending could apply them twice.
    let written = this.waiting.length - this.out.length;
    this.out = [];
    this.outBytes = 0;
    const redirects = this.redirects;
    while (this.waiting.length > 0) {
      const op = this.waiting.shift() as BackendOp;
      if (written-- > 0 || redirects === null || !redirects.interceptUnavailable(op, this)) op.deliver(reply);
    }
  }

  private scheduleReconnect(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.reconnects++;
      this.stats.reconnects++;
      this.connect();
    }, delay);
  }

  private stopTimers(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.timerArmed = false;
    this.lateCheckPending = false;
    if (this.state === 'closed' && this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }
}

/** The role in a ROLE reply ("master", "slave", "sentinel"), read from its first element; "unknown" otherwise. */
function roleOf(frame: Buffer): string {
  // *N\r\n$L\r\n<role>\r\n...: a handshake reply, read once per connection (not the data path).
  const m = /^\*\d+\r\n\$\d+\r\n([a-z]+)\r\n/.exec(frame.subarray(0, 40).toString('latin1'));
  return m === null ? 'unknown' : m[1];
}

/** Bytes of one read slab, and the least room a read is given (a slab with less left is replaced). */
const SLAB_BYTES = 64 * 1024;
const MIN_READ_ROOM = 8 * 1024;

/**
 * A backend connection's reads (plain TCP): each lands in the unused rest of a 64 KiB slab of the connection's own,
 * after the bytes of the reads before it, so a read allocates nothing (Node's default mallocs 64 KiB per read, then
 * shrinks it and wraps it in a new Buffer) and views of earlier reads stay valid. A slab is dropped when less than
 * 8 KiB is left; views into it keep it alive until they go, as a read chunk did before.
 */
class SlabReads implements ReadInto {
  private slab = new ArrayBuffer(SLAB_BYTES);
  private used = 0;
  private readonly onChunk: (chunk: Buffer) => void;

  constructor(onChunk: (chunk: Buffer) => void) {
    this.onChunk = onChunk;
  }

  next(): Uint8Array {
    if (SLAB_BYTES - this.used < MIN_READ_ROOM) {
      this.slab = new ArrayBuffer(SLAB_BYTES);
      this.used = 0;
    }
    return viewOf(this.slab, this.used, SLAB_BYTES - this.used);
  }

  chunk(buf: Uint8Array, n: number): void {
    this.used = buf.byteOffset + n;
    this.onChunk(viewOf(buf.buffer, buf.byteOffset, n));
  }
}
