/**
 * Estimate, from the live shards, how many keys and bytes a new config would make the migration move, and how
 * long that would take. Control plane only (`keymux plan`, `POST /reload?dry_run=1`); it never touches a
 * client's connection.
 *
 * Each source shard is asked DBSIZE, then SCANned until `keysPerShard` keys are sampled or `timeMs` has passed,
 * and MEMORY USAGE is asked of every sampled key. SCAN walks Redis's hash table in bucket order, and a key's
 * bucket comes from Redis's own (seeded SipHash) hash, unrelated to CRC16 or ketama, so the first n keys of a
 * SCAN are, for this purpose, a random sample of the shard. A sampled key moves when the new config routes it to
 * another address than the shard it was found on: the rule the migration applies (migration.ts). From the
 * sample, for each (source, target) pair: keys = N * k / n and bytes = N * mean(bytes moving), each with a margin
 * of z * N * sqrt(s^2 / n * (N - n) / (N - 1)) at 99.9% confidence (z = 3.29; s^2 the sample variance of the
 * per-key value, 1/0 for keys, bytes/0 for bytes; finite-population corrected, so a shard scanned in full has
 * no margin). Bytes are MEMORY USAGE: what the keys take in the shard's memory, not the bytes on the wire.
 *
 * Duration = keys / rate, where the rate is the last migration's measured keys per second (keys moved / time
 * from start to end, scanning included) or, when none has been measured, DEFAULT_KEYS_PER_SECOND, and the
 * report says which.
 */
import type net from 'node:net';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import type { KeymuxConfig } from '../config/schema.js';
import { commandFrame } from '../resp/writer.js';
import { connectBackend, describeConnectError, isTlsError } from '../backend/connect.js';
import type { BackendTlsSettings } from '../security/tls.js';
import { buildRouter } from '../routing/router.js';
import { planTopology, type ShardRef, type TopologyPlan } from '../routing/plan.js';
import type { MigrationProgress } from './migration.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

/** Keys per second assumed when no migration has been measured (see README: "Planning a change"). */
export const DEFAULT_KEYS_PER_SECOND = 20_000;
/** Two-sided 99.9% normal quantile. */
export const Z_999 = 3.29;
export const DEFAULT_SAMPLE_KEYS = 2000;
export const DEFAULT_SAMPLE_TIME_MS = 3000;
const SCAN_COUNT = 500;
const MEMORY_BATCH = 500;

export interface SampleOptions {
  /** Keys sampled per shard at most (the whole shard when it holds fewer). */
  keysPerShard: number;
  /** Time budget for the whole sampling (shards are sampled in parallel). */
  timeMs: number;
  /** Called as shards finish: (shards done, shards in all, keys sampled so far). */
  onProgress?: (done: number, total: number, keys: number) => void;
}

export interface ShardSampleReport extends ShardRef {
  /** DBSIZE when sampling started. */
  keys: number;
  sampled: number;
  /** The whole shard was scanned: its figures are exact. */
  exact: boolean;
  elapsedMs: number;
  error: string | null;
}

export interface MoveEstimate {
  from: ShardRef;
  to: ShardRef;
  keys: number;
  keysMargin: number;
  bytes: number;
  bytesMargin: number;
}

export interface RateInfo {
  keysPerSecond: number;
  measured: boolean;
  /** Where the rate comes from, for people. */
  basis: string;
}

export interface LiveEstimate {
  confidence: number;
  shards: ShardSampleReport[];
  moves: MoveEstimate[];
  total: { keys: number; keysMargin: number; bytes: number; bytesMargin: number; keysOnSources: number };
  rate: RateInfo;
  /** Estimated migration time in seconds (total keys / rate) and its margin from the keys' margin. */
  durationS: number;
  durationMarginS: number;
  /** Sampling stopped on the time budget before `keysPerShard` keys on some shard. */
  timeLimited: boolean;
}

/** Credentials and timeouts for talking to the shards (from the running config). */
export interface ShardAccess {
  password: string | null;
  username: string | null;
  connectTimeoutMs: number;
  /** backend.tls: sampled over TLS when enabled. */
  tls: BackendTlsSettings | null;
}

export function accessOf(config: KeymuxConfig): ShardAccess {
  return {
    password: config.backend.password,
    username: config.backend.username,
    connectTimeoutMs: Math.max(1000, config.backend.connectTimeoutMs),
    tls: config.backend.tls,
  };
}

/** The rate of the most recent migration that moved keys, else the default. */
export function migrationRate(progress: readonly MigrationProgress[]): RateInfo {
  for (let i = progress.length - 1; i >= 0; i--) {
    const m = progress[i];
    const end = m.finishedAt ?? (m.state === 'running' ? Date.now() : null);
    if (end === null || m.keysMoved === 0) continue;
    const seconds = Math.max(0.001, (end - m.startedAt) / 1000);
    return {
      keysPerSecond: Math.round(m.keysMoved / seconds),
      measured: true,
      basis: `migration #${m.id}${m.state === 'running' ? ' (running)' : ''}: ${m.keysMoved} keys in ${seconds.toFixed(1)} s`,
    };
  }
  return {
    keysPerSecond: DEFAULT_KEYS_PER_SECOND,
    measured: false,
    basis: `no migration measured yet: default ${DEFAULT_KEYS_PER_SECOND} keys/s`,
  };
}

interface Accumulator {
  keys: number;
  bytes: number;
  bytesSq: number;
}

interface ShardSample {
  report: ShardSampleReport;
  /** target address -> sums over sampled keys moving there */
  byTarget: Map<string, Accumulator>;
}

/**
 * Samples `sources` (the addresses keys are on now) and estimates what `next` would move. `names` gives a name
 * for an address (shards of the old and the new config).
 */
export async function estimateMoves(
  sources: readonly ShardRef[],
  next: KeymuxConfig,
  access: ShardAccess,
  options: SampleOptions,
  rate: RateInfo,
  nameOf: (address: string) => ShardRef,
): Promise<LiveEstimate> {
  const router = buildRouter(next);
  const route = (key: Buffer): string => next.shards[router.shardFor(key)]?.address ?? '';
  const deadline = performance.now() + options.timeMs;
  let done = 0;
  let sampledKeys = 0;
  const samples = await Promise.all(
    sources.map(async (src) => {
      const s = await sampleShard(src, route, access, options.keysPerShard, deadline);
      done++;
      sampledKeys += s.report.sampled;
      options.onProgress?.(done, sources.length, sampledKeys);
      return s;
    }),
  );
  const moves: MoveEstimate[] = [];
  let totalKeys = 0;
  let totalBytes = 0;
  let keysVar = 0;
  let bytesVar = 0;
  let onSources = 0;
  let timeLimited = false;
  for (const s of samples) {
    const r = s.report;
    onSources += r.keys;
    if (!r.exact && r.sampled < Math.min(options.keysPerShard, r.keys)) timeLimited = true;
    const all: Accumulator = { keys: 0, bytes: 0, bytesSq: 0 };
    for (const [target, acc] of s.byTarget) {
      const e = scale(acc, r);
      moves.push({
        from: nameOf(r.address),
        to: nameOf(target),
        keys: Math.round(e.keys),
        keysMargin: Math.ceil(Z_999 * e.keysSe),
        bytes: Math.round(e.bytes),
        bytesMargin: Math.ceil(Z_999 * e.bytesSe),
      });
      all.keys += acc.keys;
      all.bytes += acc.bytes;
      all.bytesSq += acc.bytesSq;
    }
    // Totals per source: the indicator "moves anywhere" (its variance is not the sum of the per-target ones).
    const e = scale(all, r);
    totalKeys += e.keys;
    totalBytes += e.bytes;
    keysVar += e.keysSe ** 2;
    bytesVar += e.bytesSe ** 2;
  }
  moves.sort((a, b) => b.keys - a.keys || a.from.name.localeCompare(b.from.name));
  const keys = Math.round(totalKeys);
  const keysMargin = Math.ceil(Z_999 * Math.sqrt(keysVar));
  return {
    confidence: 0.999,
    shards: samples.map((s) => s.report),
    moves,
    total: {
      keys,
      keysMargin,
      bytes: Math.round(totalBytes),
      bytesMargin: Math.ceil(Z_999 * Math.sqrt(bytesVar)),
      keysOnSources: onSources,
    },
    rate,
    durationS: keys / rate.keysPerSecond,
    durationMarginS: keysMargin / rate.keysPerSecond,
    timeLimited,
  };
}

/** Scales sample sums to the shard: estimates and their standard errors. */
function scale(
  acc: Accumulator,
  r: ShardSampleReport,
): { keys: number; keysSe: number; bytes: number; bytesSe: number } {
  const n = r.sampled;
  const N = Math.max(r.keys, n);
  if (n === 0) return { keys: 0, keysSe: 0, bytes: 0, bytesSe: 0 };
  const fpc = r.exact || N <= 1 ? 0 : Math.max(0, (N - n) / (N - 1));
  const p = acc.keys / n;
  const keysVarMean = n > 1 ? ((p * (1 - p)) / (n - 1)) * n : 0; // sample variance of the 0/1 indicator
  const meanBytes = acc.bytes / n;
  const bytesVarMean = n > 1 ? (acc.bytesSq - n * meanBytes * meanBytes) / (n - 1) : 0;
  return {
    keys: N * p,
    keysSe: N * Math.sqrt((keysVarMean / n) * fpc),
    bytes: N * meanBytes,
    bytesSe: N * Math.sqrt((Math.max(0, bytesVarMean) / n) * fpc),
  };
}

async function sampleShard(
  src: ShardRef,
  route: (key: Buffer) => string,
  access: ShardAccess,
  limit: number,
  deadline: number,
): Promise<ShardSample> {
  const started = performance.now();
  const report: ShardSampleReport = { ...src, keys: 0, sampled: 0, exact: false, elapsedMs: 0, error: null };
  const byTarget = new Map<string, Accumulator>();
  const sep = src.address.lastIndexOf(':');
  const conn = new SampleConnection(
    src.address.slice(0, sep).replace(/^\[|\]$/g, ''),
    Number(src.address.slice(sep + 1)),
    access,
  );
  try {
    await conn.open(Math.max(100, Math.min(access.connectTimeoutMs, deadline - performance.now())));
    const [size] = await conn.send([['DBSIZE']]);
    report.keys = typeof size === 'number' ? size : 0;
    const seen = new Map<string, Buffer>();
    let cursor = '0';
    do {
      const [reply] = await conn.send([['SCAN', cursor, 'COUNT', String(SCAN_COUNT)]]);
      if (!Array.isArray(reply)) throw new Error(`SCAN answered ${String(reply)}`);
      cursor = (reply[0] as Buffer).toString('latin1');
      for (const k of reply[1] as Buffer[]) if (seen.size < limit) seen.set(k.toString('latin1'), k);
    } while (cursor !== '0' && seen.size < limit && performance.now() < deadline);
    const keys = [...seen.values()];
    // Keys that disappear between SCAN and MEMORY USAGE (expired, deleted) leave the sample.
    for (let i = 0; i < keys.length && (i === 0 || performance.now() < deadline); i += MEMORY_BATCH) {
      const batch = keys.slice(i, i + MEMORY_BATCH);
      const sizes = await conn.send(batch.map((k) => ['MEMORY', 'USAGE', k]));
      batch.forEach((key, j) => {
        const bytes = sizes[j];
        if (typeof bytes !== 'number') return;
        report.sampled++;
        const target = route(key);
        if (target === src.address) return;
        let acc = byTarget.get(target);
        if (acc === undefined) byTarget.set(target, (acc = { keys: 0, bytes: 0, bytesSq: 0 }));
        acc.keys++;
        acc.bytes += bytes;
        acc.bytesSq += bytes * bytes;
      });
    }
    report.exact = cursor === '0' && report.sampled === seen.size && seen.size < limit;
    if (report.exact) report.keys = report.sampled;
  } catch (err) {
    report.error = (err as Error).message;
  } finally {
    conn.close();
    report.elapsedMs = Math.round(performance.now() - started);
  }
  return { report, byTarget };
}

/** One pipelined connection with replies decoded as Buffers (keys may be any bytes). */
class SampleConnection {
  private readonly host: string;
  private readonly port: number;
  private readonly access: ShardAccess;
  private sock: net.Socket | null = null;
  private waiting: Array<{ left: number; replies: unknown[]; resolve: (r: unknown[]) => void }> = [];
  private failure: Error | null = null;
  private onFail: ((e: Error) => void) | null = null;

  constructor(host: string, port: number, access: ShardAccess) {
    this.host = host;
    this.port = port;
    this.access = access;
  }

  async open(timeoutMs: number): Promise<void> {
    const { socket: sock, readyEvent } = connectBackend(this.host, this.port, this.access.tls);
    this.sock = sock;
    const parser = new RedisParser({
      returnBuffers: true,
      returnReply: (r) => this.deliver(r),
      returnError: (e) => this.deliver(e),
      returnFatalError: (e) => this.fail(e),
    });
    sock.on('data', (d: Buffer) => parser.execute(d));
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error(`connection to ${this.host}:${this.port} closed`)));
    sock.setTimeout(Math.max(timeoutMs, 5000), () =>
      this.fail(new Error(`${this.host}:${this.port} stopped answering`)),
    );
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`cannot connect to ${this.host}:${this.port} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      sock.once(readyEvent, () => {
        clearTimeout(timer);
        resolve();
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(isTlsError(e) ? new Error(describeConnectError(e)) : e);
      });
    });
    if (this.access.password !== null) {
      const auth =
        this.access.username !== null
          ? ['AUTH', this.access.username, this.access.password]
          : ['AUTH', this.access.password];
      const [r] = await this.send([auth]);
      if (r instanceof Error) throw new Error(`AUTH failed: ${r.message}`);
    }
  }

  send(commands: Array<Array<string | Buffer>>): Promise<unknown[]> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.onFail = reject;
      this.waiting.push({ left: commands.length, replies: [], resolve });
      this.sock!.write(Buffer.concat(commands.map((c) => commandFrame(c))));
    });
  }

  close(): void {
    this.failure ??= new Error('closed');
    this.sock?.destroy();
  }

  private deliver(reply: unknown): void {
    const head = this.waiting[0];
    if (head === undefined) return;
    head.replies.push(reply); // integers arrive as numbers, bulk strings as Buffers, nil as null
    if (--head.left === 0) {
      this.waiting.shift();
      head.resolve(head.replies);
    }
  }

  private fail(err: Error): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.sock?.destroy();
    this.onFail?.(err);
  }
}

/** What `keymux plan` and `POST /reload?dry_run=1` answer. */
export interface PlanReport {
  from: string;
  to: string;
  plan: TopologyPlan;
  /** Live figures, or null when not sampled (see `estimateSkipped`). */
  estimate: LiveEstimate | null;
  estimateSkipped: string | null;
  /** A migration is still running: keys may be on the old owners of an earlier reload (they are sampled too). */
  migrationRunning: boolean;
}

/**
 * The plan from `current` to `next`, with live estimates when `sample` is given and something would move.
 * `extraSources` are addresses keys may still be on (the sources of a running migration).
 */
export async function planReport(
  current: KeymuxConfig,
  next: KeymuxConfig,
  sample: SampleOptions | null,
  progress: readonly MigrationProgress[],
): Promise<PlanReport> {
  const plan = planTopology(current, next);
  const running = progress.filter((m) => m.state === 'fencing' || m.state === 'running');
  const report: PlanReport = {
    from: current.source,
    to: next.source,
    plan,
    estimate: null,
    estimateSkipped: null,
    migrationRunning: running.length > 0,
  };
  if (plan.refused !== null) report.estimateSkipped = 'the reload would be refused';
  else if (plan.unchanged && running.length === 0) report.estimateSkipped = 'no key changes owner';
  else if (sample === null) report.estimateSkipped = 'sampling was not asked for';
  if (report.estimateSkipped !== null || sample === null) return report;
  const names = new Map<string, ShardRef>();
  for (const s of current.shards) names.set(s.address, { name: s.name, address: s.address });
  for (const s of next.shards) if (!names.has(s.address)) names.set(s.address, { name: s.name, address: s.address });
  const nameOf = (address: string): ShardRef => names.get(address) ?? { name: address, address };
  const sources = new Map<string, ShardRef>();
  for (const s of current.shards) sources.set(s.address, nameOf(s.address));
  for (const m of running) for (const a of m.sources) sources.set(a, nameOf(a));
  report.estimate = await estimateMoves(
    [...sources.values()],
    next,
    accessOf(current),
    sample,
    migrationRate(progress),
    nameOf,
  );
  return report;
}
