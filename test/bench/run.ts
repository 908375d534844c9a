/**
 * The performance harness behind `npm run bench`. It runs up to four sections, chosen with --sections (default
 * all, always in this order), in one run, and writes one report, test/bench/RESULTS.md:
 *
 * - ring: 4 redis-server shards plus one lone redis-server on free loopback ports, twemproxy (nutcracker) and
 *   keymux in ring mode over the same 4 shards with the same ring (ketama, fnv1a_64, hash tag "{}"); the key
 *   space is preloaded through every target, every target serves every row once unmeasured (a warm-up: keymux's
 *   JIT), then redis-benchmark runs against each target row by row, in short interleaved rounds with a rotating
 *   order (each cell is the median of its rounds). --targets picks the targets.
 * - cluster: a real 3-master Redis Cluster and keymux in cluster mode in front of it; `redis-benchmark --cluster`
 *   straight to the cluster versus plain redis-benchmark through keymux (test/bench/cluster.ts).
 * - metrics: keymux with metrics and hot keys off versus on, /metrics scraped every second, over the ring
 *   section's shards (test/bench/metrics-overhead.ts).
 * - hotkeys: a Zipf-like read workload straight to one redis-server and through keymux with the near cache off
 *   and on (share of reads that reached a shard, hot shard load), and the cost of request coalescing on ordinary
 *   GET/SET traffic, over the ring section's shards (test/bench/hot-keys.ts).
 * - workers: keymux with `workers: 1`, 2 and one per CPU over the ring section's shards, the same redis-benchmark
 *   redis-benchmark load against each, in interleaved rounds; the table shows throughput per worker count, the
 *   scaling against workers: 1 and the machine's CPU count. (redis-benchmark --threads is not used: it measures
 *   time in quarter seconds, which quantises short runs.)
 *
 * Each section is bounded in time: every redis-benchmark run by BENCH_TIMEOUT_S, the section by
 * BENCH_SECTION_TIMEOUT_S (no run starts or continues past it), start-up steps by their own timeouts. A section
 * that fails is reported and the next one still runs; the exit code is 1 if anything failed. This process owns
 * every process it starts (directly or through cluster.ts and metrics-overhead.ts, which register theirs here)
 * and stops each by PID when its section ends, on exit, on Ctrl-C and on errors. Load only ever goes to
 * 127.0.0.1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { benchCluster, cellText, medianResult, type BenchCell, type BenchResult } from './cluster.js';
import { benchMetricsOverhead } from './metrics-overhead.js';
import { benchHotKeys } from './hot-keys.js';

const HOST = '127.0.0.1';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS = path.join(REPO, 'test/bench/RESULTS.md');
const KEYSPACE = 100_000;
const VALUE_SIZE = 16;
const CLIENTS = 50;
const SHARDS = 4;
const MGET_KEYS = 10;

type SectionName = 'ring' | 'pinned' | 'cluster' | 'metrics' | 'hotkeys' | 'workers';
const ALL_SECTIONS: SectionName[] = ['ring', 'pinned', 'cluster', 'metrics', 'hotkeys', 'workers'];
const SECTION_TITLE: Record<SectionName, string> = {
  ring: 'Ring mode: keymux vs twemproxy vs a lone redis-server',
  pinned: 'Ring mode, pinned: redis-benchmark on one CPU, the proxy and its shards on another',
  cluster: 'Cluster mode: keymux vs redis-benchmark --cluster straight to a 3-master Redis Cluster',
  metrics: 'Metrics and hot keys: keymux with observability on vs off',
  hotkeys: 'Hot keys: near cache and request coalescing (Zipf-like reads)',
  workers: 'Workers: throughput with workers 1, 2 and one per CPU (same shards, same load)',
};

type TargetName = 'direct' | 'twemproxy' | 'keymux' | 'baseline';
/** Targets --targets may name; 'baseline' is added by --baseline DIR (another built keymux checkout). */
const ALL_TARGETS: TargetName[] = ['direct', 'twemproxy', 'keymux'];
const TARGET_ORDER: TargetName[] = ['direct', 'twemproxy', 'keymux', 'baseline'];
/** --baseline DIR: a second keymux build (a checkout with bin/ and dist/ built) run in the same interleaved rounds. */
let baselineDir: string | null = null;
const ALIASES: Record<string, TargetName> = {
  direct: 'direct',
  redis: 'direct',
  twemproxy: 'twemproxy',
  nutcracker: 'twemproxy',
  keymux: 'keymux',
};

interface Target {
  name: TargetName;
  port: number;
  child?: ChildProcess;
  log?: string;
  redis?: RedisProcess;
}
interface Row {
  name: string;
  base: number;
  args: string[];
  mget?: boolean;
}
type Result = BenchResult;
type Cell = BenchCell;
interface SectionOutcome {
  markdown: string;
  failures: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// Process ownership: everything started here is tracked and stopped by PID.

const children = new Set<ChildProcess>();
const redises: RedisProcess[] = [];
/** Other things to stop (the Redis Cluster of the cluster section, which stops its nodes by PID). */
const owned = new Set<{ stop(): Promise<void> }>();
let tmpDir = '';
let shuttingDown = false;

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (!alive(child) || child.pid === undefined) return;
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, 3000);
  await exited;
  clearTimeout(timer);
}

async function stopRedis(r: RedisProcess): Promise<void> {
  await r.stop().catch(() => undefined);
  fs.rmSync(r.dir, { recursive: true, force: true });
  const i = redises.indexOf(r);
  if (i >= 0) redises.splice(i, 1);
}

async function cleanup(keepTmp: boolean): Promise<void> {
  await Promise.all([...children].map(stopChild));
  await Promise.all([...redises].map(stopRedis));
  await Promise.all([...owned].map((o) => o.stop().catch(() => undefined)));
  if (tmpDir !== '' && !keepTmp) fs.rmSync(tmpDir, { recursive: true, force: true });
}

/** When a signal is stopping everything, the code still running must not go on (or write a report): it waits
 * here until the signal handler exits the process. */
async function haltIfStopping(): Promise<void> {
  if (shuttingDown) await new Promise<never>(() => undefined);
}

process.on('exit', () => {
  for (const c of children) {
    if (!alive(c)) continue; // its PID may belong to another process by now
    try {
      if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const) {
  process.on(sig, () => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.error(`\nbench: ${sig}, stopping everything it started`);
    void cleanup(false).finally(() => process.exit(code));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Arguments and sizes.

function usage(): string {
  return `usage: npm run bench -- [--sections ring,cluster,metrics,hotkeys,workers] [--targets direct,twemproxy,keymux]
                       [--baseline DIR]

  --sections LIST  comma-separated subset of: ${ALL_SECTIONS.join(', ')} (default: all six; they always run in
                   this order). ring: keymux vs twemproxy vs one redis-server; pinned: the same rows with
                   redis-benchmark on one CPU and every server and proxy on another (taskset; the first two CPUs
                   the bench may use; the layout issue 14's predixy figures were taken in); cluster: keymux in cluster mode vs
                   redis-benchmark --cluster on a 3-master Redis Cluster; metrics: keymux with metrics and hot
                   keys on vs off; hotkeys: Zipf-like reads, near cache off/on vs one redis-server; workers:
                   keymux with workers 1, 2 and one per CPU
  --targets LIST   targets of the ring section, a subset of: ${ALL_TARGETS.join(', ')} (default: all three)
  --baseline DIR   adds a ring target 'baseline': the keymux built in checkout DIR (npm ci && npm run build
                   there), run in the same interleaved rounds; the table gains a keymux/baseline column (is
                   this change slower than that commit?)
  env BENCH_KEYMUX_YAML  extra top-level YAML for the ring section's keymux (not the baseline), lines split
                   at a literal \\n, e.g. 'near_cache: { coalesce: false }'
  env BENCH_SCALE  multiplies every request count (default 1; 0.1 for a quick smoke run)
  env BENCH_ROUNDS splits each row into this many interleaved rounds and reports medians (default 3)
  env BENCH_TIMEOUT_S  seconds one redis-benchmark run may take before it counts as hung (default 180)
  env BENCH_SECTION_TIMEOUT_S  seconds one section may take; no run starts or goes on after that (default
                   240, times BENCH_SCALE when that is above 1)`;
}

function parseList<T extends string>(
  flag: string,
  list: string | undefined,
  known: readonly T[],
  aliases: Record<string, T>,
): T[] {
  if (list === undefined || list === '') {
    console.error(`bench: ${flag} needs a list\n${usage()}`);
    process.exit(2);
  }
  const picked = new Set<T>();
  for (const t of list
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean)) {
    const name = aliases[t];
    if (name === undefined) {
      console.error(`bench: unknown ${flag.slice(2, -1)} '${t}' (known: ${known.join(', ')})`);
      process.exit(2);
    }
    picked.add(name);
  }
  if (picked.size === 0) {
    console.error(`bench: ${flag} needs at least one name\n${usage()}`);
    process.exit(2);
  }
  return known.filter((t) => picked.has(t));
}

function parseArgs(argv: string[]): { targets: TargetName[]; sections: SectionName[] } {
  let targets: TargetName[] = ALL_TARGETS;
  let sections: SectionName[] = ALL_SECTIONS;
  const sectionAliases = Object.fromEntries(ALL_SECTIONS.map((s) => [s, s])) as Record<string, SectionName>;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      console.log(usage());
      process.exit(0);
    }
    if (a === '--targets') targets = parseList('--targets', argv[++i], ALL_TARGETS, ALIASES);
    else if (a.startsWith('--targets='))
      targets = parseList('--targets', a.slice('--targets='.length), ALL_TARGETS, ALIASES);
    else if (a === '--baseline' || a.startsWith('--baseline=')) {
      const dir = a === '--baseline' ? argv[++i] : a.slice('--baseline='.length);
      if (dir === undefined || dir === '') {
        console.error(`bench: --baseline needs a directory\n${usage()}`);
        process.exit(2);
      }
      baselineDir = path.resolve(dir);
    } else if (a === '--sections') sections = parseList('--sections', argv[++i], ALL_SECTIONS, sectionAliases);
    else if (a.startsWith('--sections='))
      sections = parseList('--sections', a.slice('--sections='.length), ALL_SECTIONS, sectionAliases);
    else {
      console.error(`bench: unknown argument '${a}'\n${usage()}`);
      process.exit(2);
    }
  }
  if (baselineDir !== null) targets = [...targets, 'baseline'];
  return { targets, sections };
}

function envNumber(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`bench: ${name} must be a positive number, got '${raw}'`);
    process.exit(2);
  }
  return v;
}

const randKey = 'key:__rand_int__';
const ROWS: Row[] = [
  { name: 'SET, pipeline 1', base: 200_000, args: ['-t', 'set', '-P', '1'] },
  { name: 'GET, pipeline 1', base: 200_000, args: ['-t', 'get', '-P', '1'] },
  { name: 'SET, pipeline 16', base: 2_000_000, args: ['-t', 'set', '-P', '16'] },
  { name: 'GET, pipeline 16', base: 2_000_000, args: ['-t', 'get', '-P', '16'] },
  {
    name: `MGET ${MGET_KEYS} keys, pipeline 1`,
    base: 100_000,
    args: ['mget', ...Array<string>(MGET_KEYS).fill(randKey)],
    mget: true,
  },
];

// ---------------------------------------------------------------------------------------------------------------
// Starting targets.

async function waitPing(
  name: string,
  port: number,
  child?: ChildProcess,
  log?: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child !== undefined && !alive(child)) {
      throw new Error(
        `${name} exited during start-up (${child.exitCode !== null ? `exit code ${child.exitCode}` : `signal ${child.signalCode}`})${logTail(log)}`,
      );
    }
    try {
      const [r] = await redisCommands(port, [['PING']], { timeoutMs: 1000 });
      if (String(r) === 'PONG') return;
      last = `PING answered ${r instanceof Error ? `error '${r.message}'` : JSON.stringify(r)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((res) => setTimeout(res, 100)); // polling a port has no event to await
  }
  throw new Error(
    `${name} did not answer PING on ${HOST}:${port} within ${timeoutMs / 1000}s (${last})${logTail(log)}`,
  );
}

function logTail(log?: string): string {
  if (log === undefined || !fs.existsSync(log)) return '';
  const lines = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-20);
  return lines.length > 0 && lines[0] !== '' ? `\n--- last lines of ${log} ---\n${lines.join('\n')}` : '';
}

async function startTwemproxy(shards: RedisProcess[]): Promise<Target> {
  const port = await freePort();
  const statsPort = await freePort();
  const conf = path.join(tmpDir, 'nutcracker.yml');
  const log = path.join(tmpDir, 'nutcracker.log');
  fs.writeFileSync(
    conf,
    [
      'bench:',
      `  listen: ${HOST}:${port}`,
      '  hash: fnv1a_64',
      '  distribution: ketama',
      '  hash_tag: "{}"',
      '  redis: true',
      '  server_connections: 1',
      '  auto_eject_hosts: false',
      '  servers:',
      ...shards.map((s) => `    - ${s.address}:1`),
      '',
    ].join('\n'),
  );
  const test = spawnSync('nutcracker', ['-t', '-c', conf], { encoding: 'utf8' });
  if (test.status !== 0) throw new Error(`nutcracker rejected its config ${conf}: ${test.stderr}${test.stdout}`);
  const child = track(
    spawn('nutcracker', ['-c', conf, '-o', log, '-s', String(statsPort), '-a', HOST], { stdio: 'ignore' }),
  );
  child.on('error', () => undefined); // reported as "exited during start-up" by waitPing
  try {
    await waitPing('twemproxy (nutcracker)', port, child, log);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { name: 'twemproxy', port, child, log };
}

/** Writes `listen: 127.0.0.1:<free port>` plus `yaml` to NAME.yaml in the work dir, spawns the built CLI
 * (`node bin/keymux.js --config FILE`, logging to NAME.log) and waits until it answers PING. */
async function startKeymuxProcess(
  name: string,
  yaml: string[],
  repo = REPO,
): Promise<{ port: number; child: ChildProcess; log: string }> {
  const bin = path.join(repo, 'bin/keymux.js');
  if (!fs.existsSync(bin) || !fs.existsSync(path.join(repo, 'dist/main.js'))) {
    throw new Error(
      `keymux is not built (${bin}, dist/): run npm run build, or bench only --sections ring --targets direct,twemproxy`,
    );
  }
  const port = await freePort();
  const conf = path.join(tmpDir, `${name}.yaml`);
  const log = path.join(tmpDir, `${name}.log`);
  fs.writeFileSync(conf, [`listen: ${HOST}:${port}`, ...yaml, ''].join('\n'));
  const fd = fs.openSync(log, 'a');
  const child = track(spawn(process.execPath, [bin, '--config', conf], { cwd: repo, stdio: ['ignore', fd, fd] }));
  fs.closeSync(fd);
  child.on('error', () => undefined);
  try {
    await waitPing(name, port, child, log);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { port, child, log };
}

/** keymux in ring mode over the shards, with twemproxy's ring (ketama, fnv1a_64, hash tag "{}"). */
async function startKeymux(shards: RedisProcess[], name = 'keymux'): Promise<Target> {
  const k = await startKeymuxProcess(
    name,
    [
      'mode: ring',
      'hash_tag: "{}"',
      'ring: { hash: fnv1a_64 }',
      'shards:',
      ...shards.map((s) => `  - { address: ${s.address}, weight: 1 }`),
      'log: { level: warn }',
      // BENCH_KEYMUX_YAML: extra top-level YAML lines for this checkout's keymux only (e.g. to turn a feature off).
      ...(name === 'baseline' ? [] : (process.env.BENCH_KEYMUX_YAML ?? '').split('\\n').filter(Boolean)),
    ],
    name === 'baseline' ? (baselineDir as string) : REPO,
  );
  return { name: name === 'baseline' ? 'baseline' : 'keymux', ...k };
}

// ---------------------------------------------------------------------------------------------------------------
// Preload and checks.

const VALUE = 'v'.repeat(VALUE_SIZE);
const keyName = (i: number): string => `key:${String(i).padStart(12, '0')}`;

/** SETs every key of the benchmark key space through the target, in pipelined batches, and checks each OK. */
async function preload(t: Target): Promise<void> {
  const batch = 5000;
  for (let start = 0; start < KEYSPACE; start += batch) {
    const cmds: string[][] = [];
    for (let i = start; i < Math.min(KEYSPACE, start + batch); i++) cmds.push(['SET', keyName(i), VALUE]);
    const replies = await redisCommands(t.port, cmds, { timeoutMs: 60_000 });
    const bad = replies.findIndex((r) => r !== 'OK');
    if (bad >= 0) {
      const r = replies[bad];
      throw new Error(
        `${t.name}: preload SET ${keyName(start + bad)} answered ${r instanceof Error ? `error '${r.message}'` : JSON.stringify(r)}`,
      );
    }
  }
}

/** Checks that GET and MGET through the target return the preloaded values; returns a reason when not. */
async function checkReads(t: Target, mget: boolean): Promise<string | undefined> {
  const keys = Array.from({ length: MGET_KEYS }, (_, i) => keyName((i * 9973) % KEYSPACE));
  const cmd = mget ? ['MGET', ...keys] : ['GET', keys[1]];
  let r: unknown;
  try {
    [r] = await redisCommands(t.port, [cmd], { timeoutMs: 5000 });
  } catch (err) {
    return `${cmd[0]} check failed: ${(err as Error).message}`;
  }
  // The SET rows overwrite values with redis-benchmark's own bytes, so only the shape and size are checked.
  const isValue = (v: unknown): boolean => typeof v === 'string' && v.length === VALUE_SIZE;
  const ok = mget ? Array.isArray(r) && r.length === MGET_KEYS && r.every(isValue) : isValue(r);
  if (ok) return undefined;
  const got = r instanceof Error ? `error '${r.message}'` : JSON.stringify(r);
  return (
    `${cmd[0]} ${cmd.length - 1 > 1 ? `of ${cmd.length - 1} preloaded keys` : cmd[1]} answered ${got}, ` +
    `expected ${mget ? `${MGET_KEYS} values` : 'a value'} of ${VALUE_SIZE} bytes`
  );
}

async function dbsizes(shards: RedisProcess[]): Promise<number[]> {
  return Promise.all(shards.map(async (s) => Number((await redisCommands(s.port, [['DBSIZE']]))[0])));
}

// ---------------------------------------------------------------------------------------------------------------
// redis-benchmark.

const timeoutS = envNumber('BENCH_TIMEOUT_S', 180);
/** The pinned section: the CPU redis-benchmark runs on (null: not pinned). */
let loadCpu: number | null = null;
/** No redis-benchmark run of the current section starts, or goes on, after this (epoch ms). */
let sectionDeadline = Infinity;

/** `redis-benchmark -h 127.0.0.1 -p PORT -c 50 -n N -r KEYSPACE -d 16 --csv ...args`; resolves with rps, p50 and
 * p99, or with an error (never rejects). Bounded by BENCH_TIMEOUT_S and by the section's deadline. */
function redisBenchmark(port: number, n: number, keyspace: number, extra: string[]): Promise<Cell> {
  if (shuttingDown) return new Promise(() => undefined); // the signal handler is stopping everything and exits
  const limitMs = Math.min(timeoutS * 1000, sectionDeadline - Date.now());
  if (limitMs <= 0)
    return Promise.resolve({ error: 'not run: the section is over its time budget (BENCH_SECTION_TIMEOUT_S)' });
  const args = [
    '-h',
    HOST,
    '-p',
    String(port),
    '-c',
    String(CLIENTS),
    '-n',
    String(n),
    '-r',
    String(keyspace),
    '-d',
    String(VALUE_SIZE),
    '--csv',
    ...extra,
  ];
  return new Promise((resolve) => {
    const child = track(
      loadCpu === null
        ? spawn('redis-benchmark', args, { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('taskset', ['-c', String(loadCpu), 'redis-benchmark', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => {
      timedOut = true;
      void stopChild(child);
    }, limitMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: `redis-benchmark failed to start: ${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (shuttingDown) return; // stopped by Ctrl-C: no result to report
      const detail = (err + out)
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('"') && !l.includes('Could not fetch server CONFIG'))
        .slice(0, 3)
        .join(' | ');
      if (timedOut) {
        const why =
          limitMs < timeoutS * 1000 ? "the section's time budget (BENCH_SECTION_TIMEOUT_S)" : 'BENCH_TIMEOUT_S';
        resolve({
          error: `redis-benchmark stopped after ${(limitMs / 1000).toFixed(1)}s by ${why}${detail ? `: ${detail}` : ''}`,
        });
        return;
      }
      if (code !== 0) {
        resolve({ error: `redis-benchmark exited ${code}${detail ? `: ${detail}` : ''}` });
        return;
      }
      const lines = out.split('\n').filter((l) => l.startsWith('"'));
      const header = lines.findIndex((l) => l.startsWith('"test"'));
      const data = header >= 0 ? lines[header + 1] : undefined;
      if (data === undefined) {
        resolve({ error: `no CSV result from redis-benchmark${detail ? `: ${detail}` : ''}` });
        return;
      }
      const cols = [...lines[header].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const vals = [...data.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const get = (c: string): number => Number(vals[cols.indexOf(c)]);
      const res = { rps: get('rps'), p50: get('p50_latency_ms'), p99: get('p99_latency_ms') };
      if (![res.rps, res.p50, res.p99].every(Number.isFinite)) {
        resolve({ error: `unparsable CSV: ${data}` });
        return;
      }
      resolve({ ok: res });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Report.

function version(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const m = re.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  return m ? m[1] : 'unknown';
}

function gitRev(): string {
  const r = spawnSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  if (r.status !== 0) return 'unknown';
  const dirty = spawnSync('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'bin'], { encoding: 'utf8' });
  return r.stdout.trim() + (dirty.stdout?.trim() ? ' + uncommitted changes' : '');
}

const oneLine = (s: string): string => {
  const l = s.split('\n')[0];
  return l.length > 300 ? `${l.slice(0, 300)}…` : l;
};

const fmtInt = (v: number): string => Math.round(v).toLocaleString('en-US');
const fmtMs = (v: number): string => v.toFixed(3);
const LABEL: Record<TargetName, string> = {
  direct: 'direct',
  twemproxy: 'twemproxy',
  keymux: 'keymux',
  baseline: 'baseline',
};

/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU seconds (user + system) process `pid` has used so far, or NaN when /proc cannot say. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime are 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds used so far by process `pid` and its children (a keymux primary and its workers: the workers are
 * its children, and a child's time reaches the parent's own counters only once it has exited and been waited for).
 */
function treeCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let sum = cpuSeconds(pid);
  let children: string[] = [];
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      children = children.concat(fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/));
    }
  } catch {
    return NaN;
  }
  for (const c of children) if (c !== '') sum += treeCpuSeconds(Number(c));
  return sum;
}

/** Targets whose CPU per request the ring table shows: the proxies (not the lone redis-server). */
const CPU_TARGETS: readonly TargetName[] = ['twemproxy', 'keymux', 'baseline'];

function ratio(a: Cell | undefined, b: Cell | undefined): string {
  if (a === undefined || b === undefined || !('ok' in a) || !('ok' in b) || b.ok.rps === 0) return 'n/a';
  return `${(a.ok.rps / b.ok.rps).toFixed(2)}×`;
}

function table(targets: TargetName[], results: Map<string, Cell>[], counts: number[], rounds: number): string {
  const head = ['row', 'requests'];
  for (const t of targets) {
    head.push(`${LABEL[t]} rps`, `${LABEL[t]} p50 / p99 ms`);
    if (CPU_TARGETS.includes(t)) head.push(`${LABEL[t]} CPU µs/req`);
  }
  const ratios: Array<[TargetName, TargetName]> = [];
  if (targets.includes('keymux') && targets.includes('twemproxy')) ratios.push(['keymux', 'twemproxy']);
  if (targets.includes('keymux') && targets.includes('direct')) ratios.push(['keymux', 'direct']);
  if (targets.includes('keymux') && targets.includes('baseline')) ratios.push(['keymux', 'baseline']);
  if (!targets.includes('keymux') && targets.includes('twemproxy') && targets.includes('direct'))
    ratios.push(['twemproxy', 'direct']);
  for (const [a, b] of ratios) head.push(`${a}/${b} rps`);
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`];
  ROWS.forEach((row, i) => {
    const cells = [row.name, rounds > 1 ? `${rounds} × ${fmtInt(counts[i])}` : fmtInt(counts[i])];
    for (const t of targets) {
      const c = results[i].get(t);
      if (c !== undefined && 'ok' in c) cells.push(fmtInt(c.ok.rps), `${fmtMs(c.ok.p50)} / ${fmtMs(c.ok.p99)}`);
      else cells.push('failed', '—');
      if (CPU_TARGETS.includes(t)) {
        const cpu = c !== undefined && 'ok' in c ? c.ok.cpuUs : undefined;
        cells.push(cpu === undefined || Number.isNaN(cpu) ? 'n/a' : cpu.toFixed(2));
      }
    }
    for (const [a, b] of ratios) cells.push(ratio(results[i].get(a), results[i].get(b)));
    lines.push(`| ${cells.join(' | ')} |`);
  });
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Sections.

/** The 4 ring shards: started by the first section that needs them (ring or metrics), kept for the next. */
const shards: RedisProcess[] = [];
/** True once the bench key space has been written to the shards through a ring (twemproxy's or keymux's). */
let shardsPreloaded = false;

async function ensureShards(): Promise<RedisProcess[]> {
  if (shards.length === 0) {
    for (let i = 0; i < SHARDS; i++) {
      const r = await startRedis();
      redises.push(r);
      shards.push(r);
    }
    console.log(`bench: ${SHARDS} shards on ${shards.map((s) => s.port).join(', ')}`);
  }
  return shards;
}

// ---------------------------------------------------------------------------------------------------------------
// CPU pinning (the pinned section).

/**
 * The first two CPUs this process may use (CPU 0 and 1 on most machines): redis-benchmark on the first, every server
 * and proxy on the second, as issue 14's predixy figures were measured. Null when there are fewer than two or
 * taskset does not work (then the section measures nothing and says why).
 */
let pinCpus: { load: number; server: number } | null = null;

/** Why the pinned layout cannot be used here, or null when it can (and pinCpus is set). */
function pinningUnavailable(): string | null {
  let list: string;
  try {
    list = affinityOf(process.pid);
  } catch {
    return 'needs taskset (Debian package util-linux)';
  }
  const cpus = expandCpuList(list);
  if (cpus.length < 2) return `needs 2 CPUs, this process may use ${cpus.length} (${list})`;
  pinCpus = { load: cpus[0], server: cpus[1] };
  return null;
}

/** "0-2,5" -> [0, 1, 2, 5]. */
function expandCpuList(list: string): number[] {
  const cpus: number[] = [];
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    if (!Number.isInteger(a)) continue;
    for (let c = a; c <= (Number.isInteger(b) ? b : a); c++) cpus.push(c);
  }
  return cpus;
}

/** The CPU list a process may run on (taskset -c -p), e.g. "0-1". */
function affinityOf(pid: number): string {
  const r = spawnSync('taskset', ['-c', '-p', String(pid)], { encoding: 'utf8' });
  const list = /:\s*(\S+)\s*$/.exec(r.stdout ?? '')?.[1];
  if (r.status !== 0 || list === undefined)
    throw new Error(`taskset -c -p ${pid} failed: ${(r.stderr || r.stdout || String(r.error)).trim()}`);
  return list;
}

/** Sets the CPUs of every thread of a running process (taskset -a -p); throws when taskset fails. */
function setCpus(pid: number | undefined, cpus: string): void {
  if (pid === undefined) throw new Error('pinning: a process without a PID');
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset -a -p -c ${cpus} ${pid} failed: ${(r.stderr || r.stdout).trim()}`);
}

async function ringSection(targetNames: TargetName[], scale: number, rounds: number): Promise<SectionOutcome> {
  return ringRows(targetNames, scale, rounds, false);
}

/**
 * The ring rows again with redis-benchmark on one CPU and the shards, the direct redis-server and the proxy under test
 * on another: the proxy's CPU cost per request decides its throughput, since it shares its CPU with its shards only.
 */
async function pinnedSection(targetNames: TargetName[], scale: number, rounds: number): Promise<SectionOutcome> {
  const why = pinningUnavailable();
  if (why !== null) {
    return { markdown: `## ${SECTION_TITLE.pinned}\n\nNot measured: ${why}.`, failures: [] };
  }
  return ringRows(targetNames, scale, rounds, true);
}

async function ringRows(
  targetNames: TargetName[],
  scale: number,
  rounds: number,
  pinned: boolean,
): Promise<SectionOutcome> {
  const counts = ROWS.map((r) => Math.max(1000, Math.round((r.base * scale) / rounds))); // requests per round
  if (targetNames.includes('twemproxy') || targetNames.includes('keymux')) await ensureShards();
  const targets: Target[] = [];
  try {
    for (const name of targetNames) {
      if (name === 'direct') {
        const r = await startRedis();
        redises.push(r);
        targets.push({ name, port: r.port, child: r.process, redis: r });
      } else if (name === 'twemproxy') targets.push(await startTwemproxy(shards));
      else targets.push(await startKeymux(shards, name));
      console.log(`bench: ${name} answers PING on ${HOST}:${targets[targets.length - 1].port}`);
    }

    // Preload the whole key space through each target so GET and MGET read real values. twemproxy first, then
    // keymux: if keymux's ring agrees with twemproxy's, its preload rewrites the same keys on the same shards.
    const notes: string[] = [];
    let afterTwemproxy: number[] | undefined;
    for (const t of [...targets].sort((a, b) => TARGET_ORDER.indexOf(a.name) - TARGET_ORDER.indexOf(b.name))) {
      const t0 = Date.now();
      try {
        await preload(t);
      } catch (err) {
        throw new Error(`preloading through ${t.name} failed: ${(err as Error).message}${logTail(t.log)}`, {
          cause: err,
        });
      }
      console.log(
        `bench: preloaded ${fmtInt(KEYSPACE)} keys through ${t.name} in ${((Date.now() - t0) / 1000).toFixed(1)}s`,
      );
      const bad = await checkReads(t, false);
      if (bad !== undefined) throw new Error(`${t.name} does not read back what it stored: ${bad}${logTail(t.log)}`);
      if (t.name !== 'direct') shardsPreloaded = true;
      if (t.name === 'twemproxy') afterTwemproxy = await dbsizes(shards);
      if (t.name === 'keymux' && afterTwemproxy !== undefined) {
        const after = await dbsizes(shards);
        const agree = after.every((v, i) => v === afterTwemproxy![i]);
        const msg = agree
          ? `keymux and twemproxy place keys identically (keys per shard: ${after.join(', ')})`
          : `WARNING: keymux and twemproxy place keys differently (keys per shard after twemproxy's preload: ${afterTwemproxy.join(', ')}; after keymux's: ${after.join(', ')})`;
        console.log(`bench: ${msg}`);
        notes.push(msg);
      }
    }

    let unpin = (): void => undefined;
    if (pinned) {
      // Every thread of the servers and proxies on the second CPU, redis-benchmark on the first; the shards get their
      // CPUs back afterwards (later sections use them unpinned).
      const everyCpu = affinityOf(process.pid);
      const servers = [...shards.map((s) => s.pid), ...targets.map((t) => t.child?.pid)];
      unpin = () => {
        loadCpu = null;
        for (const s of shards) if (alive(s.process)) setCpus(s.pid, everyCpu);
      };
      try {
        const { load, server } = pinCpus as { load: number; server: number };
        for (const pid of servers) setCpus(pid, String(server));
        loadCpu = load;
      } catch (err) {
        unpin();
        throw err;
      }
    }
    const results: Map<string, Cell>[] = [];
    try {
      // Warm-up, unmeasured: every target serves every row once (half a round), so the table compares steady
      // states. keymux's JIT compiles each kind of traffic's hot path during its first second or so of it: measured
      // cold, GET at pipeline 1 had p99 1.5 ms in that second against 0.9 ms warm, a cost twemproxy never pays.
      for (const t of targets) {
        for (let i = 0; i < ROWS.length; i++) {
          const warm = await redisBenchmark(t.port, Math.max(1000, Math.round(counts[i] / 2)), KEYSPACE, ROWS[i].args);
          if ('error' in warm) console.log(`bench: warm-up of ${t.name} on ${ROWS[i].name} failed: ${warm.error}`);
        }
      }
      console.log(`bench: every target warmed up on every row (half a round each, not measured)`);
      // Each row runs in rounds; within a round the targets run back to back, in an order that rotates every round
      // so no target always goes last. Interleaving short rounds spreads background noise on a shared machine over
      // all targets; each cell reports the median rps, p50 and p99 of its rounds. A failed round fails the cell.
      for (let i = 0; i < ROWS.length; i++) {
        const row = ROWS[i];
        const samples = new Map<TargetName, Result[]>(targets.map((t) => [t.name, []]));
        const cells = new Map<string, Cell>();
        results.push(cells);
        for (let round = 0; round < rounds; round++) {
          for (let k = 0; k < targets.length; k++) {
            const t = targets[(i * rounds + round + k) % targets.length];
            if (cells.has(t.name)) continue; // already failed
            let cell: Cell;
            if (t.child !== undefined && !alive(t.child)) {
              cell = {
                error: `${t.name} is no longer running (exit ${t.child.exitCode ?? t.child.signalCode})${logTail(t.log)}`,
              };
            } else {
              const bad = row.mget && round === 0 ? await checkReads(t, true) : undefined;
              // The proxy's own CPU time over the run, per request: less sensitive to a busy machine than rps.
              const cpuBefore = cpuSeconds(t.child?.pid);
              cell = bad !== undefined ? { error: bad } : await redisBenchmark(t.port, counts[i], KEYSPACE, row.args);
              if ('ok' in cell && CPU_TARGETS.includes(t.name))
                cell.ok.cpuUs = ((cpuSeconds(t.child?.pid) - cpuBefore) * 1e6) / counts[i];
            }
            if ('ok' in cell) samples.get(t.name)!.push(cell.ok);
            else cells.set(t.name, cell);
            const shown = cellText(cell);
            console.log(
              `bench: ring ${row.name.padEnd(24)} round ${round + 1}/${rounds} ${t.name.padEnd(10)} ${shown}`,
            );
          }
        }
        for (const t of targets) {
          const got = samples.get(t.name)!;
          if (!cells.has(t.name)) cells.set(t.name, { ok: medianResult(got) });
        }
      }
    } finally {
      unpin();
    }

    const section = pinned ? 'pinned' : 'ring';
    const failures: string[] = [];
    ROWS.forEach((row, i) => {
      for (const [t, c] of results[i]) if ('error' in c) failures.push(`${section} / ${row.name} / ${t}: ${c.error}`);
    });
    for (const t of targets) {
      if (t.child !== undefined && !alive(t.child))
        failures.push(`${section}: ${t.name} exited during the run${logTail(t.log)}`);
    }

    const markdown = [
      `## ${SECTION_TITLE[section]}`,
      '',
      `- load: redis-benchmark on loopback, ${CLIENTS} clients, ${fmtInt(KEYSPACE)} random keys (-r), ${VALUE_SIZE}-byte values (-d), ` +
        'key space preloaded; direct is one redis-server; twemproxy and keymux each front the same ' +
        `${SHARDS} redis-server shards (ketama, fnv1a_64, hash tag "{}", one connection per shard)`,
      ...(pinned
        ? [
            `- pinned (taskset): redis-benchmark on CPU ${pinCpus?.load}; the ${SHARDS} shards, the direct ` +
              `redis-server, twemproxy and keymux (every thread) on CPU ${pinCpus?.server}, so a proxy's throughput is set by its CPU ` +
              'cost per request next to its shards, not by how the scheduler shares the machine',
          ]
        : []),
      ...notes.map((n) => `- ${n}`),
      '',
      table(targetNames, results, counts, rounds),
      '',
      'rps is requests per second as redis-benchmark counts them (one MGET is one request); p50 / p99 are its ' +
        "latency percentiles in milliseconds. A ratio is the first target's rps divided by the second's on the " +
        'same row: 1.00× is parity, below 1 is slower. ' +
        (pinned
          ? 'Absolute numbers depend on the machine; compare ratios from one run.'
          : 'All processes share the same CPUs, so absolute numbers depend on the machine; compare ratios from one run.'),
    ].join('\n');
    return { markdown, failures };
  } finally {
    // The shards stay for the metrics section; the targets are done.
    for (const t of targets) {
      if (t.redis !== undefined) await stopRedis(t.redis);
      else if (t.child !== undefined) await stopChild(t.child);
    }
  }
}

function clusterSection(scale: number, rounds: number): Promise<SectionOutcome> {
  return benchCluster({
    workDir: tmpDir,
    scale,
    rounds,
    clients: CLIENTS,
    valueSize: VALUE_SIZE,
    log: (line) => console.log(line),
    own: (resource) => {
      owned.add(resource);
      return () => {
        owned.delete(resource);
      };
    },
    startKeymux: startKeymuxProcess,
    stopProcess: stopChild,
    redisBenchmark,
    stopping: () => shuttingDown,
  });
}

const METRICS_BUDGET = 0.05;

async function metricsSection(scale: number, rounds: number): Promise<SectionOutcome> {
  const shardList = await ensureShards();
  if (!shardsPreloaded) {
    const t0 = Date.now();
    const k = await startKeymux(shardList, 'keymux-preload');
    try {
      await preload(k);
    } finally {
      await stopChild(k.child!);
    }
    shardsPreloaded = true;
    console.log(
      `bench: preloaded ${fmtInt(KEYSPACE)} keys into the shards in ${((Date.now() - t0) / 1000).toFixed(1)}s`,
    );
  }
  const { rows, markdown } = await benchMetricsOverhead({
    shards: shardList.map((s) => s.address),
    workDir: tmpDir,
    requests: Math.round((200_000 * scale) / rounds),
    rounds,
    clients: CLIENTS,
    keyspace: KEYSPACE,
    valueSize: VALUE_SIZE,
    log: (line) => console.log(line),
    track: (child) => {
      track(child);
    },
    timeoutMs: timeoutS * 1000,
    deadline: sectionDeadline,
  });
  const pctOf = (v: number): string => `${(v * 100).toFixed(1)}%`;
  const over = rows.filter((r) => r.cost > METRICS_BUDGET);
  const cpuOver = rows.filter((r) => r.cpuCost > METRICS_BUDGET);
  const budget =
    over.length === 0
      ? `within the ${pctOf(METRICS_BUDGET)} budget on every row (largest rps cost ${pctOf(Math.max(...rows.map((r) => r.cost)))})`
      : `over the ${pctOf(METRICS_BUDGET)} budget on ${over.map((r) => `${r.name} (${pctOf(r.cost)})`).join(', ')}` +
        (cpuOver.length === 0
          ? '; CPU per request stays within it on every row, so the rps gap is likely noise — rerun to confirm'
          : '');
  console.log(`bench: metrics cost ${budget}`);
  return {
    markdown: [
      `## ${SECTION_TITLE.metrics}`,
      '',
      `- setup: two keymux processes in ring mode over the ring section's ${SHARDS} redis-server shards (same ring, ` +
        `${fmtInt(KEYSPACE)} preloaded keys), each measured with redis-benchmark, ${CLIENTS} clients, ${VALUE_SIZE}-byte ` +
        `values, in ${rounds} interleaved rounds of alternating order (medians); test/bench/metrics-overhead.ts`,
      `- issue 4 budget, rps cost ≤ ${pctOf(METRICS_BUDGET)}: ${budget}`,
      '',
      markdown,
    ].join('\n'),
    failures: [],
  };
}

async function hotKeysSection(scale: number, rounds: number): Promise<SectionOutcome> {
  const shardList = await ensureShards();
  const { markdown } = await benchHotKeys({
    shards: shardList,
    workDir: tmpDir,
    requests: Math.max(2000, Math.round((100_000 * scale) / rounds)),
    rounds,
    clients: Math.max(1, Math.round(CLIENTS / 4)),
    log: (line) => console.log(line),
    track: (child) => {
      track(child);
    },
    timeoutMs: timeoutS * 1000,
    deadline: sectionDeadline,
  });
  return { markdown: [`## ${SECTION_TITLE.hotkeys}`, '', markdown].join('\n'), failures: [] };
}

/** The workers section's rows: the ring section's plain rows, at pipeline 1 and 16. */
const WORKER_ROWS: Row[] = ROWS.filter((r) => !r.mget);

async function workersSection(scale: number, rounds: number): Promise<SectionOutcome> {
  const shardList = await ensureShards();
  const cpus = os.availableParallelism();
  const counts = [...new Set([1, 2, cpus])].sort((a, b) => a - b);
  const targets: Array<{ workers: number; port: number; child: ChildProcess; log: string }> = [];
  try {
    for (const workers of counts) {
      const k = await startKeymuxProcess(`keymux-workers-${workers}`, [
        'mode: ring',
        'hash_tag: "{}"',
        'ring: { hash: fnv1a_64 }',
        'shards:',
        ...shardList.map((s) => `  - { address: ${s.address}, weight: 1 }`),
        'log: { level: warn }',
        `workers: ${workers}`,
      ]);
      targets.push({ workers, ...k });
      console.log(`bench: keymux with workers: ${workers} answers PING on ${HOST}:${k.port}`);
    }
    if (!shardsPreloaded) {
      const t0 = Date.now();
      await preload({ name: 'keymux', port: targets[0]!.port });
      shardsPreloaded = true;
      console.log(`bench: preloaded ${fmtInt(KEYSPACE)} keys in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    }
    const requests = WORKER_ROWS.map((r) => Math.max(1000, Math.round((r.base * scale) / rounds)));
    const results: Array<Map<number, Cell>> = [];
    for (let i = 0; i < WORKER_ROWS.length; i++) {
      const row = WORKER_ROWS[i]!;
      const samples = new Map<number, Result[]>(counts.map((w) => [w, []]));
      const cells = new Map<number, Cell>();
      results.push(cells);
      for (let round = 0; round < rounds; round++) {
        for (let k = 0; k < targets.length; k++) {
          const t = targets[(round + k) % targets.length]!; // rotating order: no count always goes last
          if (cells.has(t.workers)) continue;
          const cpuBefore = treeCpuSeconds(t.child.pid);
          const cell = alive(t.child)
            ? await redisBenchmark(t.port, requests[i]!, KEYSPACE, row.args)
            : { error: `keymux (workers: ${t.workers}) is no longer running${logTail(t.log)}` };
          if ('ok' in cell) {
            // Every keymux process of the target (primary and workers): what the requests cost the machine.
            cell.ok.cpuUs = ((treeCpuSeconds(t.child.pid) - cpuBefore) * 1e6) / requests[i]!;
            samples.get(t.workers)!.push(cell.ok);
          } else cells.set(t.workers, cell);
          const shown = 'ok' in cell ? `${fmtInt(cell.ok.rps)} rps` : `FAILED: ${cell.error}`;
          console.log(
            `bench: workers ${row.name.padEnd(18)} round ${round + 1}/${rounds} workers ${t.workers} ${shown}`,
          );
        }
      }
      for (const w of counts) {
        const got = samples.get(w)!;
        if (!cells.has(w)) cells.set(w, { ok: medianResult(got) });
      }
    }
    const head = [
      'row',
      'requests',
      ...counts.map((w) => `workers ${w} rps`),
      ...counts.slice(1).map((w) => `${w} / 1`),
      ...counts.map((w) => `workers ${w} CPU µs/req`),
      ...counts.slice(1).map((w) => `CPU/req ${w} / 1`),
    ];
    const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`];
    const failures: string[] = [];
    WORKER_ROWS.forEach((row, i) => {
      const cells = results[i]!;
      const one = cells.get(1);
      const out = [row.name, `${rounds} × ${fmtInt(requests[i]!)}`];
      for (const w of counts) {
        const c = cells.get(w)!;
        out.push('ok' in c ? fmtInt(c.ok.rps) : 'failed');
        if ('error' in c) failures.push(`workers / ${row.name} / ${w}: ${c.error}`);
      }
      for (const w of counts.slice(1)) out.push(ratio(cells.get(w), one));
      const cpuOf = (w: number): number => {
        const c = cells.get(w);
        return c !== undefined && 'ok' in c && c.ok.cpuUs !== undefined ? c.ok.cpuUs : NaN;
      };
      for (const w of counts) out.push(Number.isNaN(cpuOf(w)) ? 'n/a' : cpuOf(w).toFixed(2));
      for (const w of counts.slice(1)) {
        const r = cpuOf(w) / cpuOf(1);
        out.push(Number.isFinite(r) ? `${r.toFixed(2)}×` : 'n/a');
      }
      lines.push(`| ${out.join(' | ')} |`);
    });
    return {
      markdown: [
        `## ${SECTION_TITLE.workers}`,
        '',
        `- machine: ${cpus} CPUs available to node (os.availableParallelism()), 1-minute load average before the ` +
          `section ${os.loadavg()[0]!.toFixed(2)}; the ${SHARDS} redis-server shards, redis-benchmark and every ` +
          'keymux process share them, so a worker added beyond what the CPUs can run adds little',
        `- load: redis-benchmark (one thread), ${CLIENTS} clients, ${fmtInt(KEYSPACE)} random keys, ${VALUE_SIZE}-byte ` +
          `values, against keymux in ring mode over the same shards with workers ${counts.join(', ')}; ${rounds} ` +
          'interleaved rounds, medians',
        '- CPU µs/req: user + system CPU of every keymux process of the target (the primary and its workers, from ' +
          '/proc) over the run, divided by its requests. With idle cores for the workers, throughput per added ' +
          'worker follows how the CPU per request holds: `CPU/req N / 1` at 1.00× means a request costs N workers ' +
          'what it costs one (nothing shared on the data path); above 1 is what the extra worker adds: each worker ' +
          'has fewer clients per event-loop turn (less batching per system call) and shard connections of its own, ' +
          'and on a machine without idle cores the processes also preempt each other',
        '',
        lines.join('\n'),
      ].join('\n'),
      failures,
    };
  } finally {
    await Promise.all(targets.map((t) => stopChild(t.child)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Main.

async function main(): Promise<number> {
  const { targets: targetNames, sections } = parseArgs(process.argv.slice(2));
  const scale = envNumber('BENCH_SCALE', 1);
  const rounds = Math.round(envNumber('BENCH_ROUNDS', 3));
  const sectionBudgetS = envNumber('BENCH_SECTION_TIMEOUT_S', 240 * Math.max(1, scale));
  const load = os.loadavg()[0].toFixed(2);
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-bench-'));
  // Everything started from here keeps its files under the work dir, removed at the end (kept on failure):
  // test/support/redis.ts makes each redis-server's directory in os.tmpdir(), which reads TMPDIR.
  process.env.TMPDIR = tmpDir;
  const started = Date.now();
  console.log(
    `bench: sections ${sections.join(', ')}` +
      `${sections.includes('ring') ? `; ring targets ${targetNames.join(', ')}` : ''}; scale ${scale}; rounds ${rounds}; ` +
      `section budget ${sectionBudgetS}s; load average ${load}; work dir ${tmpDir}`,
  );

  const parts: string[] = [];
  const failures: string[] = [];
  const durations: string[] = [];
  for (const section of sections) {
    const t0 = Date.now();
    sectionDeadline = t0 + sectionBudgetS * 1000;
    console.log(`bench: --- section ${section} ---`);
    let out: SectionOutcome;
    try {
      if (section === 'ring') out = await ringSection(targetNames, scale, rounds);
      else if (section === 'pinned') out = await pinnedSection(targetNames, scale, rounds);
      else if (section === 'cluster') out = await clusterSection(scale, rounds);
      else if (section === 'metrics') out = await metricsSection(scale, rounds);
      else if (section === 'hotkeys') out = await hotKeysSection(scale, rounds);
      else out = await workersSection(scale, rounds);
    } catch (err) {
      await haltIfStopping();
      const msg = err instanceof Error ? err.message : String(err);
      console.error(`bench: section ${section} FAILED: ${msg}`);
      out = {
        markdown: `## ${SECTION_TITLE[section]}\n\nNot measured: ${oneLine(msg)}`,
        failures: [`${section}: ${msg}`],
      };
    }
    await haltIfStopping();
    sectionDeadline = Infinity;
    const took = (Date.now() - t0) / 1000;
    if (took > sectionBudgetS)
      out.failures.push(
        `${section}: took ${took.toFixed(1)}s, over its budget of ${sectionBudgetS}s (BENCH_SECTION_TIMEOUT_S)`,
      );
    durations.push(`${section} ${took.toFixed(0)}s`);
    parts.push(out.markdown);
    failures.push(...out.failures);
  }

  const cpus = os.cpus();
  const md = [
    '# keymux benchmark results',
    '',
    '<!-- Written by `npm run bench` (test/bench/run.ts); every run overwrites this file. -->',
    '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} CPUs (${cpus[0]?.model.trim() ?? 'unknown'}), ${os.type()} ${os.release()}`,
    `- node ${process.version}, redis-server ${version('redis-server', ['--version'], /v=(\S+)/)}, ` +
      `redis-benchmark ${version('redis-benchmark', ['--version'], /redis-benchmark (\S+)/)}, ` +
      `nutcracker ${version('nutcracker', ['--version'], /nutcracker-(\S+)/)}, keymux ${gitRev()}`,
    `- BENCH_SCALE ${scale}, BENCH_ROUNDS ${rounds} (each cell is the median of ${rounds} interleaved rounds); ` +
      `1-minute load average at start ${load}; whole run ${((Date.now() - started) / 1000).toFixed(0)}s (${durations.join(', ')})`,
    '',
    ...parts.flatMap((p) => [p, '']),
    ...(failures.length > 0 ? ['## Failures', '', ...failures.map((f) => `- ${oneLine(f)}`), ''] : []),
  ].join('\n');
  console.log(`\n${md}`);
  fs.writeFileSync(RESULTS, md);
  console.log(`bench: wrote ${path.relative(process.cwd(), RESULTS) || RESULTS}`);
  if (failures.length > 0) {
    console.error(`bench: ${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join('\n')}`);
    return 1;
  }
  return 0;
}

main().then(
  async (code) => {
    if (!shuttingDown) {
      shuttingDown = true;
      await cleanup(code !== 0);
      if (code !== 0) console.error(`bench: logs kept in ${tmpDir}`);
      process.exit(code);
    }
  },
  async (err: unknown) => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.error(`bench: FAILED: ${err instanceof Error ? err.message : String(err)}`);
    await cleanup(true);
    if (tmpDir !== '') console.error(`bench: logs kept in ${tmpDir}`);
    process.exit(1);
  },
);
