/**
 * Observer: the data path's calls into metrics. `onReplied(req)` runs once for every reply handed to a client
 * and `onKeyRouted(key)` once for every key routed to a shard. onReplied records at once, with the turn clock
 * (core/clock.ts: one clock read per event-loop turn), so no request is kept alive past its reply.
 * Recording only bumps plain numbers (stats.ts), updates a fixed-size sketch (hotkeys.ts) or compares against a
 * threshold; building slow-log entries happens only for slow commands.
 * What is recorded per reply:
 * - per command: count, errors, client-observed latency (parse to reply written), slow count;
 * - per shard: cache hits and misses by the command's rule (hit-miss.ts): for a request sent whole to one shard,
 *   from its reply and that shard's counters (req.shardStats); for a split request, from each fragment's own
 *   reply and shard, so per-shard counts are exact;
 * - the slow log, for replies at or above its threshold.
 * Hot-key tracking samples keys with a xorshift generator (sample_rate) so its cost can be bounded. Unknown
 * commands are counted under one "unknown" name so a client cannot create unbounded label values. With
 * `metrics.enabled: false` both calls return at once. `configure` applies a reloaded config.
 */
import type { Request } from '../core/request.js';
import { turnNow } from '../core/clock.js';
import type { MetricsConfig } from '../config/schema.js';
import type { StatsRegistry, CommandStats } from './stats.js';
import { countHitMiss, RULE_NONE } from './hit-miss.js';
import { HotKeys } from './hotkeys.js';
import { SlowLog } from './slowlog.js';

const TWO_32 = 4294967296;

export class Observer {
  /** False: onReplied and onKeyRouted do nothing. */
  enabled: boolean;
  /** Non-null while hot-key tracking is on. */
  hotKeys: HotKeys | null;
  readonly slowlog: SlowLog;
  config: MetricsConfig;
  private readonly stats: StatsRegistry;
  private lastName: string;
  private lastStats: CommandStats | null;
  /** A sampled key passes when the generator's next value (as uint32) is below this. */
  private sampleThreshold: number;
  private rng: number;

  constructor(stats: StatsRegistry, config: MetricsConfig) {
    this.enabled = false;
    this.hotKeys = null;
    this.slowlog = new SlowLog(config.slowlog);
    this.config = config;
    this.stats = stats;
    this.lastName = '';
    this.lastStats = null;
    this.sampleThreshold = 0;
    this.rng = 0x2545f491;
    this.configure(config);
  }

  /** Applies (new) metrics settings; hot-key counts restart only when k, the window or the sample rate change. */
  configure(config: MetricsConfig): void {
    const prev = this.config.hotKeys;
    const hk = config.hotKeys;
    this.config = config;
    this.enabled = config.enabled;
    this.slowlog.configure(config.slowlog);
    const wanted = config.enabled && hk.enabled;
    const same =
      this.hotKeys !== null && prev.k === hk.k && prev.windowS === hk.windowS && prev.sampleRate === hk.sampleRate;
    if (!wanted || !same) {
      this.hotKeys?.close();
      this.hotKeys = wanted ? new HotKeys({ k: hk.k, windowS: hk.windowS, sampleRate: hk.sampleRate }) : null;
    }
    this.sampleThreshold = hk.sampleRate * TWO_32;
  }

  onReplied(req: Request): void {
    if (!this.enabled) return;
    // Recorded right away with the turn clock (core/clock.ts): queueing requests until the end of the turn kept
    // whole turns of them alive through young-generation GCs.
    this.record(req, turnNow());
  }

  /** Nothing is pending (recording is immediate); kept so callers may mark the end of a batch. */
  flush(): void {
    // no-op
  }

  private record(req: Request, now: number): void {
    const spec = req.spec;
    const name = spec === null ? 'unknown' : spec.name;
    let cs = this.lastStats;
    if (name !== this.lastName || cs === null) {
      cs = this.stats.command(name);
      this.lastName = name;
      this.lastStats = cs;
    }
    cs.count++;
    const reply = req.reply as Buffer;
    if (reply[0] === 45 /* - */) cs.errors++;
    // A request parsed after this turn's clock read and answered in the same turn (a local command) counts as 0.
    const seconds = now > req.startedAt ? (now - req.startedAt) / 1000 : 0;
    cs.latency.observe(seconds);
    if (cs.hitMiss !== RULE_NONE) this.countHits(req, cs.hitMiss, reply);
    if (seconds >= this.slowlog.thresholdSeconds) {
      cs.slow++;
      this.slowlog.record(req, name, seconds);
    }
  }

  /** Hot-key tracking: counts a sample of the keys routed to shards. */
  onKeyRouted(key: Buffer): void {
    const hk = this.hotKeys;
    if (hk === null) return;
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x;
    if (x >>> 0 < this.sampleThreshold) hk.record(key);
  }

  close(): void {
    this.flush();
    this.hotKeys?.close();
    this.hotKeys = null;
  }

  private countHits(req: Request, rule: number, reply: Buffer): void {
    const fragments = req.fragments;
    if (fragments === null) {
      const st = req.shardStats;
      if (st !== null) countHitMiss(rule, reply, req.args.length - 1, st);
      return;
    }
    for (let i = 0; i < fragments.length; i++) {
      const f = fragments[i];
      const st = f.shardStats;
      const r = f.reply;
      if (st !== null && r !== null) countHitMiss(rule, r, f.keyOrdinals.length, st);
    }
  }
}
