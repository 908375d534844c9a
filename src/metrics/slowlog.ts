/**
 * The slow log: the most recent commands whose client-observed latency (parse to reply written) reached
 * `metrics.slowlog.threshold_ms`, in a fixed-size ring of `max_entries` (0 turns it off). The data path only
 * compares one number against the threshold; building an entry is the slow path and happens only for slow
 * commands. An entry holds the command name, the shards it went to, the latency, the time and the argument
 * count; never values, and keys only when `log_keys` is set (then at most MAX_KEYS keys, each cut to
 * MAX_KEY_BYTES bytes).
 */
import type { Request } from '../core/request.js';
import { findKeyIndexes } from '../commands/keys.js';
import { keyText } from './hotkeys.js';

const MAX_KEYS = 16;
const MAX_KEY_BYTES = 128;

export interface SlowLogOptions {
  thresholdMs: number;
  maxEntries: number;
  logKeys: boolean;
}

export interface SlowEntry {
  /** Increasing id, as Redis SLOWLOG numbers its entries. */
  id: number;
  /** Unix time in milliseconds when the reply was written. */
  time: number;
  command: string;
  /** Names of the shards the command went to (empty for commands keymux answers itself). */
  shards: string[];
  latencyMs: number;
  /** Number of arguments after the command name. */
  args: number;
  /** The keys (only with log_keys), else null. */
  keys: string[] | null;
}

export class SlowLog {
  /** Threshold in seconds, compared on the data path; Infinity when the slow log is off. */
  thresholdSeconds: number;
  private options: SlowLogOptions;
  private ring: Array<SlowEntry | undefined>;
  private next: number;
  private nextId: number;
  private readonly keyIndexes: number[];

  constructor(options: SlowLogOptions) {
    this.options = options;
    this.thresholdSeconds = Infinity;
    this.ring = [];
    this.next = 0;
    this.nextId = 1;
    this.keyIndexes = [];
    this.configure(options);
  }

  get thresholdMs(): number {
    return this.options.thresholdMs;
  }
  get maxEntries(): number {
    return this.options.maxEntries;
  }
  get logKeys(): boolean {
    return this.options.logKeys;
  }

  /** Applies new options; keeps the newest entries that still fit. */
  configure(options: SlowLogOptions): void {
    const kept = this.entries().slice(0, options.maxEntries).reverse();
    this.options = options;
    this.thresholdSeconds = options.maxEntries > 0 ? options.thresholdMs / 1000 : Infinity;
    this.ring = new Array<SlowEntry | undefined>(options.maxEntries);
    this.next = 0;
    for (const e of kept) this.push(e);
  }

  /** Records a slow request (the caller checked the threshold). */
  record(req: Request, command: string, seconds: number): void {
    const shards: string[] = [];
    if (req.fragments !== null) {
      for (const f of req.fragments)
        if (f.shardStats !== null && !shards.includes(f.shardStats.name)) shards.push(f.shardStats.name);
    } else if (req.shardStats !== null) {
      shards.push(req.shardStats.name);
    }
    this.push({
      id: this.nextId++,
      time: Date.now(),
      command,
      shards,
      latencyMs: seconds * 1000,
      args: Math.max(0, req.args.length - 1),
      keys: this.options.logKeys ? this.keysOf(req) : null,
    });
  }

  /** Newest first. */
  entries(limit = Infinity): SlowEntry[] {
    const out: SlowEntry[] = [];
    const n = this.ring.length;
    for (let i = 1; i <= n && out.length < limit; i++) {
      const e = this.ring[(this.next - i + n) % n];
      if (e === undefined) break;
      out.push(e);
    }
    return out;
  }

  reset(): void {
    this.ring = new Array<SlowEntry | undefined>(this.options.maxEntries);
    this.next = 0;
  }

  private push(e: SlowEntry): void {
    const n = this.ring.length;
    if (n === 0) return;
    this.ring[this.next] = e;
    this.next = (this.next + 1) % n;
  }

  private keysOf(req: Request): string[] {
    const spec = req.spec;
    if (spec === null) return [];
    const idx = this.keyIndexes;
    let n: number;
    try {
      n = findKeyIndexes(spec, req.args, idx);
    } catch {
      n = 0;
    }
    const out: string[] = [];
    for (let i = 0; i < n && i < MAX_KEYS; i++) {
      const key = req.args[idx[i]];
      out.push(keyText(key.length > MAX_KEY_BYTES ? key.subarray(0, MAX_KEY_BYTES) : key, 'key'));
    }
    return out;
  }
}
