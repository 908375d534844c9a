/**
 * AuthGuard: what keymux does about failed AUTH (and HELLO ... AUTH), so that passwords cannot be guessed at the
 * speed of a pipeline, of many connections or of a transaction. It counts failures per client address
 * (address-failures.ts: forgotten after a quiet minute, a bounded number of addresses) and decides how long an
 * AUTH from an address waits (`holdMs`: nothing while the address has fewer than `clients.auth_failures.delay_after`
 * failures, then delay_ms doubling with each further failure up to max_delay_ms): a failure's reply by default,
 * the check itself with `delay_correct` (a correct password then waits like a wrong one, and an answer's timing
 * says nothing; off by default, since every client of a shared address would wait behind one with a stale
 * password). It also decides, for each failure, whether the connection is closed (after `close_after` failures on
 * it). The session holds the client's later commands while an AUTH waits, so a pipeline of guesses is answered one
 * delay at a time; inside EXEC the holds add up and its reply waits for them all (server/client-session.ts).
 * Failures are counted for /metrics and logged at most once per 10 s.
 *
 * With `workers: N` the count is the whole process's (shareWith): each failure is counted here at once and
 * reported to the primary, which keeps the authoritative count per address and tells every worker the new count
 * (onShared); the count here is the primary's plus this worker's own failures it has not counted yet, so a
 * worker never counts fewer failures than it saw itself, and the others' arrive within an IPC hop. holdMs only
 * reads the table: an AUTH never waits for the primary. If the primary cannot be reached, failures are counted
 * here alone (per worker, as before). Control-plane only: nothing here runs for a client that never failed an AUTH.
 */
import { performance } from 'node:perf_hooks';
import type { KeymuxConfig } from '../config/schema.js';
import { childLogger, type Logger } from '../log.js';
import { AddressFailures } from './address-failures.js';

export { FORGET_AFTER_MS } from './address-failures.js';

const LOG_EVERY_MS = 10_000;

export type AuthFailureConfig = KeymuxConfig['clients']['authFailures'];

/** Reports one failure of `host` to whoever counts for the whole process; false when it cannot be reached. */
export type ShareFailure = (host: string) => boolean;

export class AuthGuard {
  /** Failures since start (keymux_auth_failures_total). */
  failures: number;
  /** Connections closed for failing AUTH too often. */
  disconnects: number;
  private readonly counts: AddressFailures;
  /** With workers: where failures are reported (null: this process counts alone). */
  private share: ShareFailure | null;
  /** This process's failures reported but not yet in a count the primary sent back, by address. */
  private readonly unshared: Map<string, number>;
  private log: Logger | null;
  private loggedAt: number;
  private unlogged: number;

  constructor() {
    this.failures = 0;
    this.disconnects = 0;
    this.counts = new AddressFailures();
    this.share = null;
    this.unshared = new Map();
    this.log = null;
    this.loggedAt = Number.NEGATIVE_INFINITY;
    this.unlogged = 0;
  }

  /** Counts failures with the rest of the process (a worker: `share` reports each one to the primary). */
  shareWith(share: ShareFailure | null): void {
    this.share = share;
  }

  /**
   * The primary's count of `host`'s failures in the whole process, its last one `quietMs` ago; `own`: it counts
   * the failure this process reported first of those it has not seen counted (the primary answers in order).
   */
  onShared(host: string, count: number, quietMs: number, own: boolean): void {
    let unshared = this.unshared.get(host) ?? 0;
    if (own && unshared > 0) {
      unshared--;
      if (unshared === 0) this.unshared.delete(host);
      else this.unshared.set(host, unshared);
    }
    this.counts.set(host, count + unshared, performance.now() - quietMs);
  }

  /**
   * How long an AUTH (or HELLO ... AUTH) from `host` (the client's address without the port) waits before its
   * password is checked: the delay its failure would earn, 0 while the address has fewer than delayAfter recent
   * failures.
   */
  holdMs(config: AuthFailureConfig, host: string): number {
    if (config.delayMs === 0) return 0;
    const count = this.counts.countOf(host, performance.now());
    const over = count + 1 - config.delayAfter;
    return count === 0 || over <= 0 ? 0 : Math.min(config.maxDelayMs, config.delayMs * 2 ** Math.min(over - 1, 30));
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
    const fromHost = this.counts.add(host, now);
    // With delay_ms 0 no AUTH is ever held, so the count only feeds the log line: not worth a message per guess.
    if (this.share !== null && config.delayMs > 0 && this.share(host))
      this.unshared.set(host, (this.unshared.get(host) ?? 0) + 1);
    const close = config.closeAfter > 0 && onConnection >= config.closeAfter;
    if (close) this.disconnects++;
    this.report(now, client, user, fromHost, heldMs, close);
    return close;
  }

  /** Failures remembered for `host` (tests, diagnostics). */
  failuresOf(host: string): number {
    return this.counts.countOf(host, performance.now());
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
