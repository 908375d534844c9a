/**
 * AddressFailures: failed AUTHs counted per client address, the table the AuthGuard keeps in each process and,
 * with `workers: N`, the primary keeps for the whole process (workers/primary.ts: the authoritative count each
 * worker is told). An address whose last failure is older than FORGET_AFTER_MS starts again from zero; at most
 * MAX_HOSTS addresses are remembered, the one whose last failure is the oldest dropped first (the map is kept in
 * order of last failure, so that one is its first entry), so an attacker with many addresses cannot grow it without
 * bound. Times are the caller's performance.now(): each process has its own origin, so only durations cross IPC.
 */

/** A client address whose last failure is older than this starts again from zero. */
export const FORGET_AFTER_MS = 60_000;
/** Addresses remembered at most. */
const MAX_HOSTS = 10_000;

interface HostFailures {
  count: number;
  lastAt: number;
}

export class AddressFailures {
  private readonly hosts: Map<string, HostFailures>;

  constructor() {
    this.hosts = new Map();
  }

  /** Failures of `host` remembered at `now` (0 once its last failure is older than FORGET_AFTER_MS). */
  countOf(host: string, now: number): number {
    const h = this.hosts.get(host);
    return h === undefined || now - h.lastAt > FORGET_AFTER_MS ? 0 : h.count;
  }

  /** One more failure of `host` at `now`; its count with it. */
  add(host: string, now: number): number {
    const count = this.countOf(host, now) + 1;
    this.set(host, count, now);
    return count;
  }

  /** `host` has `count` failures, the last one at `lastAt` (a worker told the whole process's count). */
  set(host: string, count: number, lastAt: number): void {
    const h = this.hosts.get(host);
    if (h !== undefined)
      this.hosts.delete(host); // re-inserted below: the map stays in order of last failure
    else if (this.hosts.size >= MAX_HOSTS) this.hosts.delete(this.hosts.keys().next().value as string);
    this.hosts.set(host, { count, lastAt });
  }

  /** Every address remembered at `now`: [address, failures, ms since its last failure] (for a worker that starts). */
  remembered(now: number): Array<[string, number, number]> {
    const out: Array<[string, number, number]> = [];
    for (const [host, h] of this.hosts)
      if (now - h.lastAt <= FORGET_AFTER_MS) out.push([host, h.count, now - h.lastAt]);
    return out;
  }
}
