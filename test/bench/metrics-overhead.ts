/**
 * The "metrics and hot keys on vs off" benchmark row(s): the cost of keymux's observability on throughput. It
 * owns two keymux processes (the built CLI, bin/keymux.js) in ring mode over the same shards with the same ring:
 * "off" runs with `metrics: { enabled: false }`; "on" runs with the defaults (per-command counters and latency,
 * per-shard hit/miss, hot keys at the default sample rate, slow log) and has its /metrics scraped once a second
 * while it is measured, as Prometheus would. redis-benchmark runs each row against both, in interleaved rounds
 * with alternating order; each cell is the median of its rounds. cost = 1 - on rps / off rps (the budget:
 * at most 5%). It stops every process it starts, by PID.
 *
 * Use from test/bench/run.ts (shards already started and preloaded with the bench key space):
 *   const { markdown, rows } = await benchMetricsOverhead({ shards: shards.map((s) => s.address), workDir: tmpDir,
 *     requests: Math.round(200_000 * scale / rounds), rounds, clients: CLIENTS, keyspace: KEYSPACE, valueSize: VALUE_SIZE,
 *     track, timeoutMs, deadline });
 * (track, timeoutMs and deadline are optional: the caller's process registry, so that it can stop these processes
 * by PID on Ctrl-C too, and bounds on one redis-benchmark run and on the whole comparison.)
 * Standalone (starts and preloads its own four shards): npm run build && npx tsx test/bench/metrics-overhead.ts
 * (env BENCH_SCALE, BENCH_ROUNDS as in run.ts).
 */
import { spawnSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { freePort } from '../support/ports.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';

const HOST = '127.0.0.1';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface OverheadOptions {
  /** "host:port" of running redis-server shards, preloaded with keys key:000000000000 .. key:<keyspace-1>. */
  shards: string[];
  /** Where the two keymux configs and logs go. */
  workDir: string;
  /** redis-benchmark requests per round per row (MGET rows run half as many). */
  requests: number;
  rounds: number;
  clients: number;
  keyspace: number;
  valueSize: number;
  /** Progress lines (default console.log). */
  log?: (line: string) => void;
  /** Called with every process this starts (keymux, redis-benchmark), e.g. to stop it by PID on Ctrl-C. */
  track?: (child: ChildProcess) => void;
  /** Bound on one redis-benchmark run, in ms: it is stopped and the comparison fails. Default 180000. */
  timeoutMs?: number;
  /** Epoch ms after which no redis-benchmark run starts or continues (the comparison fails). Default none. */
  deadline?: number;
}

export interface BenchResult {
  rps: number;
  p50: number;
  p99: number;
  /** keymux's CPU time (user + system, from /proc) per request in microseconds; NaN where /proc is missing. */
  cpuUs: number;
}

export interface OverheadRow {
  name: string;
  off: BenchResult;
  on: BenchResult;
  /** 1 - on.rps / off.rps: the share of throughput the metrics cost (negative = noise in favour of "on"). */
  cost: number;
  /** on.cpuUs / off.cpuUs - 1: the extra CPU per request; steadier than rps on a busy machine. */
  cpuCost: number;
}

const ROWS: Array<{ name: string; args: string[]; share: number }> = [
  { name: 'GET, pipeline 1', args: ['-t', 'get', '-P', '1'], share: 1 },
  { name: 'GET, pipeline 16', args: ['-t', 'get', '-P', '16'], share: 4 },
  { name: 'SET, pipeline 16', args: ['-t', 'set', '-P', '16'], share: 4 },
  { name: 'MGET 10 keys, pipeline 1', args: ['mget', ...Array<string>(10).fill('key:__rand_int__')], share: 0.5 },
];

interface Instance {
  name: 'off' | 'on';
  port: number;
  adminPort: number;
  child: ChildProcess;
  log: string;
}

const alive = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;

async function stop(c: ChildProcess): Promise<void> {
  if (!alive(c) || c.pid === undefined) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  const t = setTimeout(() => {
    if (alive(c)) c.kill('SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(t);
}

/**
 * CPU pinning: with taskset and at least two CPUs, keymux runs on the last CPU and redis-benchmark on the first,
 * so the two keymux instances compared (which run one at a time) see the same, uncontended core, and their CPU
 * time per request is not inflated by sharing it with the load generator. Without taskset, nothing is pinned.
 */
const CPUS = os.cpus().length;
const HAVE_TASKSET = CPUS >= 2 && spawnSync('taskset', ['-c', '0', 'true']).status === 0;
const PROXY_CPU = CPUS - 1;
const LOAD_CPU = 0;

function pinned(cpu: number, cmd: string, args: string[]): [string, string[]] {
  return HAVE_TASKSET ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

async function startInstance(
  name: 'off' | 'on',
  shards: string[],
  workDir: string,
  track?: (child: ChildProcess) => void,
): Promise<Instance> {
  const bin = path.join(REPO, 'bin/keymux.js');
  if (!fs.existsSync(path.join(REPO, 'dist/main.js'))) throw new Error('keymux is not built: run npm run build');
  const port = await freePort();
  const adminPort = await freePort();
  const conf = path.join(workDir, `keymux-metrics-${name}.yaml`);
  const log = path.join(workDir, `keymux-metrics-${name}.log`);
  fs.writeFileSync(
    conf,
    [
      `listen: ${HOST}:${port}`,
      `admin: ${HOST}:${adminPort}`,
      'mode: ring',
      'hash_tag: "{}"',
      'ring: { hash: fnv1a_64 }',
      'shards:',
      ...shards.map((a) => `  - { address: ${a}, weight: 1 }`),
      'log: { level: warn }',
      name === 'off' ? 'metrics: { enabled: false }' : 'metrics: { enabled: true, hot_keys: { enabled: true } }',
      '',
    ].join('\n'),
  );
  const fd = fs.openSync(log, 'a');
  const [cmd, argv] = pinned(PROXY_CPU, process.execPath, [bin, '--config', conf]);
  const child = spawn(cmd, argv, { cwd: REPO, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  track?.(child);
  child.on('error', () => undefined);
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (!alive(child)) throw new Error(`keymux (${name}) exited at start; see ${log}`);
    try {
      const [r] = await redisCommands(port, [['PING']], { timeoutMs: 1000 });
      if (String(r) === 'PONG') break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop(child);
      throw new Error(`keymux (${name}) did not answer PING; see ${log}`);
    }
    await new Promise((r) => setTimeout(r, 100)); // polling a port has no event to await
  }
  return { name, port, adminPort, child, log };
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat; NaN when unavailable. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** USER_HZ: the unit of /proc/PID/stat times (100 on Linux x86 and arm). */
const CLOCK_TICKS = 100;

async function measured(inst: Instance, args: string[], n: number, o: OverheadOptions): Promise<BenchResult> {
  const before = cpuSeconds(inst.child.pid);
  const r = await redisBenchmark(inst.port, args, n, o);
  const cpu = cpuSeconds(inst.child.pid) - before;
  return { ...r, cpuUs: (cpu * 1e6) / n };
}

function redisBenchmark(
  port: number,
  args: string[],
  n: number,
  o: OverheadOptions,
): Promise<Omit<BenchResult, 'cpuUs'>> {
  const all = [
    '-h',
    HOST,
    '-p',
    String(port),
    '-c',
    String(o.clients),
    '-n',
    String(n),
    '-r',
    String(o.keyspace),
    '-d',
    String(o.valueSize),
    '--csv',
    ...args,
  ];
  const limitMs = Math.min(o.timeoutMs ?? 180_000, (o.deadline ?? Infinity) - Date.now());
  if (limitMs <= 0) return Promise.reject(new Error('out of time (deadline passed)'));
  return new Promise((resolve, reject) => {
    const [cmd, argv] = pinned(LOAD_CPU, 'redis-benchmark', all);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    o.track?.(child);
    let out = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void stop(child);
    }, limitMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new Error(
            `redis-benchmark stopped after ${(limitMs / 1000).toFixed(1)}s (time bound: BENCH_TIMEOUT_S or the section's deadline)`,
          ),
        );
        return;
      }
      const lines = out.split('\n').filter((l) => l.startsWith('"'));
      const h = lines.findIndex((l) => l.startsWith('"test"'));
      if (code !== 0 || h < 0 || lines[h + 1] === undefined) {
        reject(new Error(`redis-benchmark failed (${code}): ${out.slice(0, 300)}`));
        return;
      }
      const cols = [...lines[h].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const vals = [...lines[h + 1].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const get = (c: string): number => Number(vals[cols.indexOf(c)]);
      resolve({ rps: get('rps'), p50: get('p50_latency_ms'), p99: get('p99_latency_ms') });
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Runs the on/off comparison; returns the rows and a markdown table. */
export async function benchMetricsOverhead(o: OverheadOptions): Promise<{ rows: OverheadRow[]; markdown: string }> {
  const log = o.log ?? ((l: string) => console.log(l));
  const instances: Instance[] = [];
  let scraping = true;
  let scrapes = 0;
  let scraper: Promise<void> = Promise.resolve();
  try {
    instances.push(await startInstance('off', o.shards, o.workDir, o.track));
    instances.push(await startInstance('on', o.shards, o.workDir, o.track));
    const on = instances[1];
    scraper = (async () => {
      while (scraping) {
        try {
          const r = await request(`http://${HOST}:${on.adminPort}/metrics`);
          await r.body.text();
          scrapes++;
        } catch {
          /* counted by its absence */
        }
        await new Promise((r) => setTimeout(r, 1000)); // a Prometheus-like scrape interval
      }
    })();
    const rows: OverheadRow[] = [];
    for (const row of ROWS) {
      const n = Math.max(1000, Math.round(o.requests * row.share));
      const samples: Record<'off' | 'on', BenchResult[]> = { off: [], on: [] };
      for (let round = 0; round < o.rounds; round++) {
        const order = round % 2 === 0 ? instances : [...instances].reverse();
        for (const inst of order) {
          if (!alive(inst.child)) throw new Error(`keymux (${inst.name}) exited; see ${inst.log}`);
          const r = await measured(inst, row.args, n, o);
          samples[inst.name].push(r);
          log(
            `bench: metrics ${inst.name.padEnd(3)} ${row.name.padEnd(26)} round ${round + 1}/${o.rounds} ` +
              `${Math.round(r.rps)} rps, ${r.cpuUs.toFixed(2)} µs CPU per request`,
          );
        }
      }
      const cell = (xs: BenchResult[]): BenchResult => ({
        rps: median(xs.map((x) => x.rps)),
        p50: median(xs.map((x) => x.p50)),
        p99: median(xs.map((x) => x.p99)),
        cpuUs: median(xs.map((x) => x.cpuUs)),
      });
      const off = cell(samples.off);
      const onCell = cell(samples.on);
      rows.push({
        name: row.name,
        off,
        on: onCell,
        cost: 1 - onCell.rps / off.rps,
        cpuCost: onCell.cpuUs / off.cpuUs - 1,
      });
    }
    const fmt = (v: number): string => Math.round(v).toLocaleString('en-US');
    const pct = (v: number): string => (Number.isNaN(v) ? 'n/a' : `${(v * 100).toFixed(1)}%`);
    const markdown = [
      '| metrics and hot keys on vs off | metrics off rps | metrics on rps | off p50 / p99 ms | on p50 / p99 ms | rps cost | ' +
        'off / on CPU µs per request | CPU cost |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows.map(
        (r) =>
          `| ${r.name} | ${fmt(r.off.rps)} | ${fmt(r.on.rps)} | ${r.off.p50.toFixed(3)} / ${r.off.p99.toFixed(3)} | ` +
          `${r.on.p50.toFixed(3)} / ${r.on.p99.toFixed(3)} | ${pct(r.cost)} | ${r.off.cpuUs.toFixed(2)} / ${r.on.cpuUs.toFixed(2)} | ` +
          `${pct(r.cpuCost)} |`,
      ),
      '',
      `"on" is keymux's defaults (per-command and per-shard counters and latency histograms, hit/miss, hot keys ` +
        `sampling 1 key in 16, slow log) with /metrics scraped every second (${scrapes} scrapes); "off" is ` +
        '`metrics: { enabled: false }`. rps cost = 1 - on/off rps; CPU cost = on/off keymux CPU time per request - 1 ' +
        '(from /proc; steadier than rps when the machine is shared). The budget is 5%.',
    ].join('\n');
    return { rows, markdown };
  } finally {
    scraping = false;
    await scraper;
    await Promise.all(instances.map((i) => stop(i.child)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Standalone: four fresh shards, preloaded through the "off" configuration's ring (any keymux places keys alike).

async function main(): Promise<void> {
  const scale = Number(process.env.BENCH_SCALE ?? 1);
  const rounds = Math.round(Number(process.env.BENCH_ROUNDS ?? 3));
  const keyspace = 100_000;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-bench-metrics-'));
  const shards: RedisProcess[] = [];
  let preloader: Instance | null = null;
  try {
    for (let i = 0; i < 4; i++) shards.push(await startRedis());
    preloader = await startInstance(
      'off',
      shards.map((s) => s.address),
      workDir,
    );
    for (let start = 0; start < keyspace; start += 5000) {
      const cmds: string[][] = [];
      for (let i = start; i < start + 5000; i++)
        cmds.push(['SET', `key:${String(i).padStart(12, '0')}`, 'v'.repeat(16)]);
      await redisCommands(preloader.port, cmds, { timeoutMs: 60_000 });
    }
    await stop(preloader.child);
    preloader = null;
    const { markdown } = await benchMetricsOverhead({
      shards: shards.map((s) => s.address),
      workDir,
      requests: Math.round((200_000 * scale) / rounds),
      rounds,
      clients: 50,
      keyspace,
      valueSize: 16,
    });
    console.log(`\n${markdown}`);
  } finally {
    if (preloader !== null) await stop(preloader.child);
    await Promise.all(shards.map((s) => s.stop()));
    for (const s of shards) fs.rmSync(s.dir, { recursive: true, force: true });
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`bench: FAILED: ${(err as Error).message}`);
    process.exit(1);
  });
}
