/**
 * The plain-number side of metrics: what the data path and the control plane increment. A Histogram is a
 * Float64Array of bucket counts plus a sum; ShardStats and CommandStats are fixed-shape objects of counters with
 * their Prometheus labels precomputed; StatsRegistry holds them by name (proxy-wide counters live in ProxyStats,
 * server/context.ts). Nothing here allocates per observation or knows about prom-client: metrics.ts reads these
 * at scrape time (collect()) and publishes them.
 * Stats objects are keyed by shard name and command name and live as long as the proxy, across reloads, so
 * counters never go backwards.
 */

import { hitMissRule } from './hit-miss.js';

/** Latency bucket upper bounds in seconds, suited to sub-millisecond work. */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
]);

/** The same bounds as a typed array: the hot path reads them without touching a frozen JS array. */
const BOUNDS = Float64Array.from(LATENCY_BUCKETS);
const BOUND_COUNT = BOUNDS.length;

export class Histogram {
  /** counts[i] = observations <= LATENCY_BUCKETS[i] and > the previous bound; last slot = above every bound. */
  readonly counts: Float64Array;
  sum: number;
  count: number;

  constructor() {
    this.counts = new Float64Array(LATENCY_BUCKETS.length + 1);
    this.sum = 0;
    this.count = 0;
  }

  observe(seconds: number): void {
    const b = BOUNDS;
    let i = 0;
    while (i < BOUND_COUNT && seconds > b[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }
}

export class ShardStats {
  readonly name: string;
  address: string;
  /** Replies received from the shard (backend side, every connection: shared and session). */
  commands: number;
  /** Error replies from the shard (and error elements of its EXEC replies: dispatch/session.ts). */
  errors: number;
  /** Read commands (or keys of multi-key reads) that found a value; the rules are in hit-miss.ts. */
  hits: number;
  misses: number;
  reconnects: number;
  timeouts: number;
  /** Client sessions paused because a connection to the shard held backend.max_pending operations. */
  pushbacks: number;
  /** Near cache (src/nearcache/): reads of this shard's keys answered from keymux memory, and looked up there but not found. */
  nearHits: number;
  nearMisses: number;
  /** Reads of this shard's keys answered with the reply of an identical read already in flight (coalesced). */
  coalesced: number;
  readonly latency: Histogram;
  /** Prometheus labels, built once. */
  readonly labels: Readonly<{ shard: string }>;

  constructor(name: string, address: string) {
    this.name = name;
    this.address = address;
    this.commands = 0;
    this.errors = 0;
    this.hits = 0;
    this.misses = 0;
    this.reconnects = 0;
    this.timeouts = 0;
    this.pushbacks = 0;
    this.nearHits = 0;
    this.nearMisses = 0;
    this.coalesced = 0;
    this.latency = new Histogram();
    this.labels = Object.freeze({ shard: name });
  }
}

export class CommandStats {
  readonly name: string;
  /** The command's hit/miss rule (hit-miss.ts), RULE_NONE for commands that are not cache lookups. */
  readonly hitMiss: number;
  count: number;
  errors: number;
  /** Replies slower than the slow-log threshold. */
  slow: number;
  readonly latency: Histogram;
  /** Prometheus labels, built once. */
  readonly labels: Readonly<{ command: string }>;

  constructor(name: string) {
    this.name = name;
    this.hitMiss = hitMissRule(name);
    this.count = 0;
    this.errors = 0;
    this.slow = 0;
    this.latency = new Histogram();
    this.labels = Object.freeze({ command: name });
  }
}

/** Shard and command stats by name; shared by every topology snapshot of a proxy. */
export class StatsRegistry {
  readonly shards = new Map<string, ShardStats>();
  readonly commands = new Map<string, CommandStats>();

  shard(name: string, address: string): ShardStats {
    let s = this.shards.get(name);
    if (s === undefined) this.shards.set(name, (s = new ShardStats(name, address)));
    s.address = address;
    return s;
  }

  command(name: string): CommandStats {
    let c = this.commands.get(name);
    if (c === undefined) this.commands.set(name, (c = new CommandStats(name)));
    return c;
  }
}
