/**
 * ClientLimits: the limits that hold across all client connections, so that no number of abusive clients can
 * grow keymux without bound or hold its connections for ever. The listener owns one; sessions report to it only
 * off the fast path (a command split across socket chunks, a client whose socket holds unsent replies, a MULTI queue).
 * - Memory: `limits.max_buffered_bytes` bounds the bytes held for all clients together: the accumulators of
 *   commands still arriving (a half-sent 1 MiB bulk), the commands a client queued in a MULTI (held until EXEC or
 *   DISCARD) and the replies a client has not taken yet (its socket's unsent bytes). Past it, the clients holding the most are disconnected, largest first, until the total is back
 *   under the bound, as Redis's maxmemory-clients does. Pausing reads instead would not free anything (the bytes
 *   are already held, and a client that does not read or never finishes its command holds them for ever) and
 *   would stall every well-behaved client; evicting the largest holders frees memory at once and costs only the
 *   clients that hold it. Holders are refreshed from their true numbers before choosing, and the check runs once
 *   per event-loop turn (setImmediate), never inside a session's own callbacks.
 * - Slowloris: a client that has sent part of a command and not completed it within
 *   `clients.partial_command_timeout_s` is closed (with an error and a log line). The clock starts at the first
 *   byte of the unfinished command and restarts whenever a command completes, so a client streaming a long
 *   pipeline whose chunks split commands is never mistaken for one; a client that sends one byte a second is.
 *   Only sessions holding a partial command are watched, by one sweep timer for all of them (no timer per client).
 * - Connection rate: `clients.max_new_connections_per_s` is a token bucket holding one second of connections; a
 *   connection beyond it is refused at once (plain port: an error, then the socket is destroyed; TLS port: the
 *   socket is destroyed before any handshake work).
 * Each limit has a counter (stats) and a log line, at most one per 10 s per limit with the count not logged since.
 * The limits are read from the current config on each use, so a reload changes them for connected clients too.
 */
import { performance } from 'node:perf_hooks';
import type { ProxyContext } from './context.js';
import { childLogger, type Logger } from '../log.js';

/** A client session as the limits see it. */
export interface LimitedSession {
  readonly id: number;
  readonly remote: string;
  /** Bytes last reported as held for this session (input accumulator + unsent output). */
  heldBytes: number;
  /** When its current unfinished command started (performance.now()), or -1 when it holds none. */
  partialSince: number;
  /** Bytes held now, measured (refreshes what was reported). */
  measureHeld(): number;
  /** Still holds the same unfinished command as when partialSince was set. */
  stillPartial(): boolean;
  /** Closes the session: its command stayed unfinished too long. */
  closeForPartialTimeout(timeoutS: number): void;
  /** Closes the session at once: it holds the most while the total is over the bound. */
  evictForMemory(): void;
}

const LOG_EVERY_MS = 10_000;

/** One log line per period at most, with the number of events not logged since the last one. */
export class RateLimitedLog {
  private unlogged = 0;
  private loggedAt = Number.NEGATIVE_INFINITY;
  private log: Logger | null = null;

  constructor(
    private readonly component: string,
    private readonly message: string,
    private readonly everyMs = LOG_EVERY_MS,
  ) {}

  note(fields: Record<string, unknown>): void {
    const now = performance.now();
    if (now - this.loggedAt < this.everyMs) {
      this.unlogged++;
      return;
    }
    this.loggedAt = now;
    (this.log ??= childLogger(this.component)).warn({ ...fields, notLoggedSinceLast: this.unlogged }, this.message);
    this.unlogged = 0;
  }
}

export class ClientLimits {
  private readonly ctx: ProxyContext;
  /** Bytes held for all clients (sum of the sessions' heldBytes). */
  private total = 0;
  /** Sessions holding bytes now. */
  private readonly holders = new Set<LimitedSession>();
  /** Sessions holding an unfinished command. */
  private readonly partial = new Set<LimitedSession>();
  private sweep: NodeJS.Timeout | null = null;
  private sweepEveryMs = 0;
  private evictScheduled = false;
  private tokens = -1;
  private tokensAt = 0;
  private readonly evictLog = new RateLimitedLog(
    'clients',
    'client disconnected: bytes held for all clients exceed limits.max_buffered_bytes (largest holder first)',
  );
  private readonly rateLog = new RateLimitedLog(
    'listener',
    'connection refused: more new connections per second than clients.max_new_connections_per_s',
  );
  readonly partialLog = new RateLimitedLog(
    'clients',
    'client disconnected: it left a command unfinished longer than clients.partial_command_timeout_s',
  );

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    this.runEviction = this.runEviction.bind(this);
  }

  /** Bytes held for all clients now (as last reported). */
  get bufferedBytes(): number {
    return this.total;
  }

  // ---- memory -------------------------------------------------------------------------------------------------

  /** `session` now holds `bytes` (input accumulator + unsent output). */
  setHeld(session: LimitedSession, bytes: number): void {
    this.total += bytes - session.heldBytes;
    session.heldBytes = bytes;
    if (bytes > 0) this.holders.add(session);
    else this.holders.delete(session);
    const limit = this.ctx.topology.config.limits.maxBufferedBytes;
    if (limit > 0 && this.total > limit && !this.evictScheduled) {
      this.evictScheduled = true;
      setImmediate(this.runEviction);
    }
  }

  /** Disconnects the largest holders until the total is under the bound (measured afresh first). */
  private runEviction(): void {
    this.evictScheduled = false;
    const limit = this.ctx.topology.config.limits.maxBufferedBytes;
    if (limit <= 0) return;
    let total = 0;
    const sizes: Array<[LimitedSession, number]> = [];
    for (const s of this.holders) {
      const held = s.measureHeld();
      s.heldBytes = held;
      total += held;
      if (held > 0) sizes.push([s, held]);
      else this.holders.delete(s);
    }
    this.total = total;
    if (total <= limit) return;
    sizes.sort((a, b) => b[1] - a[1]);
    for (const [s, held] of sizes) {
      if (this.total <= limit) break;
      this.ctx.stats.bufferEvictions++;
      this.evictLog.note({ client: s.remote, id: s.id, heldBytes: held, totalBytes: this.total, limit });
      s.evictForMemory();
      this.forget(s);
    }
  }

  // ---- slowloris ----------------------------------------------------------------------------------------------

  /** `session` holds an unfinished command since `session.partialSince` (or no longer, when it is -1). */
  trackPartial(session: LimitedSession): void {
    if (session.partialSince < 0) {
      this.partial.delete(session);
      return;
    }
    const timeoutS = this.ctx.topology.config.clients.partialCommandTimeoutS;
    if (timeoutS <= 0) return;
    this.partial.add(session);
    this.ensureSweep(timeoutS);
  }

  /** One timer for every watched session: checks a few times per timeout, at least once a second. */
  private ensureSweep(timeoutS: number): void {
    const every = Math.max(50, Math.min(1000, (timeoutS * 1000) / 4));
    if (this.sweep !== null && this.sweepEveryMs === every) return;
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweepEveryMs = every;
    this.sweep = setInterval(() => this.sweepPartial(), every);
    this.sweep.unref();
  }

  private sweepPartial(): void {
    const timeoutS = this.ctx.topology.config.clients.partialCommandTimeoutS;
    if (this.partial.size === 0 || timeoutS <= 0) {
      this.partial.clear();
      if (this.sweep !== null) clearInterval(this.sweep);
      this.sweep = null;
      return;
    }
    const now = performance.now();
    for (const s of this.partial) {
      if (s.partialSince < 0 || !s.stillPartial()) {
        // Its command completed (or it closed): a later unfinished one starts its own clock.
        s.partialSince = -1;
        this.partial.delete(s);
        continue;
      }
      if (now - s.partialSince < timeoutS * 1000) continue;
      this.partial.delete(s);
      this.ctx.stats.partialCommandTimeouts++;
      this.partialLog.note({
        client: s.remote,
        id: s.id,
        heldBytes: s.heldBytes,
        waitedMs: Math.round(now - s.partialSince),
        timeoutS,
      });
      s.closeForPartialTimeout(timeoutS);
    }
  }

  // ---- connection rate ------------------------------------------------------------------------------------------

  /** True when a new connection may be accepted now (and takes its token); counts and logs a refusal. */
  admitConnection(remote: string | undefined): boolean {
    const rate = this.ctx.topology.config.clients.maxNewConnectionsPerS;
    if (rate <= 0) return true;
    const now = performance.now();
    if (this.tokens < 0) this.tokens = rate;
    else this.tokens = Math.min(rate, this.tokens + ((now - this.tokensAt) * rate) / 1000);
    this.tokensAt = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    this.ctx.stats.connectionRateRefused++;
    this.rateLog.note({ remote, limit: rate });
    return false;
  }

  // ---- lifecycle ------------------------------------------------------------------------------------------------

  /** The session is gone: what it held no longer counts. */
  forget(session: LimitedSession): void {
    if (session.heldBytes !== 0) this.total -= session.heldBytes;
    session.heldBytes = 0;
    session.partialSince = -1;
    this.holders.delete(session);
    this.partial.delete(session);
  }

  stop(): void {
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweep = null;
  }
}
