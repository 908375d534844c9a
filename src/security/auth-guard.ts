/**
 * AuthGuard: what keymux does about failed AUTH (and HELLO ... AUTH), so that passwords cannot be guessed at the
 * speed of a pipeline. It counts failures per client address (forgotten after a quiet minute; at most
 * MAX_HOSTS addresses remembered, the oldest dropped first) and decides, for each failure, how long its reply
 * waits (nothing for the first `clients.auth_failures.delay_after`, then delay_ms doubling up to max_delay_ms)
 * and whether the connection is closed (after `close_after` failures on it). The session holds the client's
 * later commands while a reply waits, so a pipeline of guesses is answered, and checked, one delay at a time.
 * Successful AUTHs are never delayed. Failures are counted for /metrics and logged at most once per 10 s.
 * Control-plane only: nothing here runs unless an AUTH failed.
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

export interface AuthVerdict {
  /** How long the WRONGPASS reply waits, in ms (0: at once). */
  readonly delayMs: number;
  /** Close the connection after this reply. */
  readonly close: boolean;
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
   * A failed AUTH from `host` (the client's address without the port), the `onConnection`-th on its connection,
   * for `user` (null: the default user). Returns how to answer it.
   */
  onFailure(
    config: AuthFailureConfig,
    host: string,
    onConnection: number,
    user: string | null,
    client: string,
  ): AuthVerdict {
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
    const over = h.count - config.delayAfter;
    const delayMs =
      over <= 0 || config.delayMs === 0 ? 0 : Math.min(config.maxDelayMs, config.delayMs * 2 ** Math.min(over - 1, 30));
    const close = config.closeAfter > 0 && onConnection >= config.closeAfter;
    if (close) this.disconnects++;
    this.report(now, client, user, h.count, delayMs, close);
    return { delayMs, close };
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
    delayMs: number,
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
        replyDelayMs: delayMs,
        closed: close,
        notLoggedSinceLast: this.unlogged,
      },
      'failed AUTH (wrong user name or password)',
    );
    this.unlogged = 0;
  }
}
