/**
 * AuthGuard: what keymux does about failed AUTH (and HELLO ... AUTH), so that passwords cannot be guessed at the
 * speed of a pipeline, of many connections or of a transaction. It counts failures per client address (forgotten
 * after a quiet minute; at most MAX_HOSTS addresses remembered, the oldest dropped first) and decides how long an
 * AUTH from an address waits (`holdMs`: nothing while the address has fewer than `clients.auth_failures.delay_after`
 * failures, then delay_ms doubling with each further failure up to max_delay_ms): a failure's reply by default,
 * the check itself with `delay_correct` (a correct password then waits like a wrong one, and an answer's timing
 * says nothing; off by default, since every client of a shared address would wait behind one with a stale
 * password). It also decides, for each failure, whether the connection is closed (after `close_after` failures on
 * it). The session holds the client's later commands while an AUTH waits, so a pipeline of guesses is answered one
 * delay at a time; inside EXEC the holds add up and its reply waits for them all (server/client-session.ts).
 * Failures are counted for /metrics and logged at most once per 10 s. Per process: with `workers: N` each worker
 * counts its own connections' failures. Control-plane only: nothing here runs for a client that never failed an AUTH.
 */
import { performance } from 'node:perf_hooks';
import type { KeymuxConfig } from '../config/schema.js';
import { childLogger, type Logger } from '../log.js';

/** A client address whose last failure is older than this starts again from zero. */
export const FORGET_AFTER_MS = 60_000;
/** Addresses remembered at most (an attacker with many addresses cannot grow this without bound). */
const MAX_HOSTS = 10_000;
const LOG_EVERY_MS = 10_000;

export type AuthFailureConfig = KeymuxConfig['clients']['authFailures'];

interface HostFailures {
  count: number;
  lastAt: number;
}

export class AuthGuard {
  /** Failures since start (keymux_auth_failures_total). */
  failures: number;
  /** Connections closed for failing AUTH too often. */
  disconnects: number;
  private readonly hosts: Map<string, HostFailures>;
  private log: Logger | null;
  private loggedAt: number;
  private unlogged: number;

  constructor() {
    this.failures = 0;
    this.disconnects = 0;
    this.hosts = new Map();
    this.log = null;
    this.loggedAt = Number.NEGATIVE_INFINITY;
    this.unlogged = 0;
  }

  /**
   * How long an AUTH (or HELLO ... AUTH) from `host` (the client's address without the port) waits before its
   * password is checked: the delay its failure would earn, 0 while the address has fewer than delayAfter recent
   * failures.
   */
  holdMs(config: AuthFailureConfig, host: string): number {
    if (config.delayMs === 0) return 0;
    const h = this.hosts.get(host);
    if (h === undefined || performance.now() - h.lastAt > FORGET_AFTER_MS) return 0;
    const over = h.count + 1 - config.delayAfter;
    return over <= 0 ? 0 : Math.min(config.maxDelayMs, config.delayMs * 2 ** Math.min(over - 1, 30));
  }

  /**
   * A failed AUTH from `host`, the `onConnection`-th on its connection, for `user` (null: the default user), after
   * it waited `heldMs` (holdMs). True when the connection is to be closed after its reply.
   */
  onFailure(
    config: AuthFailureConfig,
    host: string,
    onConnection: number,
    user: string | null,
    client: string,
    heldMs: number,
  ): boolean {
    this.failures++;
    const now = performance.now();
    let h = this.hosts.get(host);
    if (h === undefined || now - h.lastAt > FORGET_AFTER_MS) {
      if (h !== undefined) this.hosts.delete(host);
      if (this.hosts.size >= MAX_HOSTS) this.hosts.delete(this.hosts.keys().next().value as string);
      h = { count: 0, lastAt: now };
    } else {
      this.hosts.delete(host); // re-inserted below: the map stays in order of last failure
    }
    h.count++;
    h.lastAt = now;
    this.hosts.set(host, h);
    const close = config.closeAfter > 0 && onConnection >= config.closeAfter;
    if (close) this.disconnects++;
    this.report(now, client, user, h.count, heldMs, close);
    return close;
  }

  /** Failures remembered for `host` (tests, diagnostics). */
  failuresOf(host: string): number {
    return this.hosts.get(host)?.count ?? 0;
  }

  private report(
    now: number,
    client: string,
    user: string | null,
    fromHost: number,
    heldMs: number,
    close: boolean,
  ): void {
    if (now - this.loggedAt < LOG_EVERY_MS) {
      this.unlogged++;
      return;
    }
    this.loggedAt = now;
    (this.log ??= childLogger('clients')).warn(
      {
        client,
        user: user === null ? 'default' : user.slice(0, 64),
        failuresFromAddress: fromHost,
        heldMs,
        closed: close,
        notLoggedSinceLast: this.unlogged,
      },
      'failed AUTH (wrong user name or password)',
    );
    this.unlogged = 0;
  }
}
