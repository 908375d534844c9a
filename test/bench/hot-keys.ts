/**
 * The hot-key benchmark (issue 12): a Zipf-like read workload straight to one redis-server and through keymux with
 * the near cache off and on, plus the cost of request coalescing (on by default) on ordinary GET/SET traffic. It
 * owns the keymux processes it starts (the built CLI, bin/keymux.js, in ring mode over the given shards), a lone
 * redis-server for the "direct" row, and every redis-benchmark it runs; each is stopped by PID.
 *
 * The workload: redis-benchmark has no Zipf distribution, so four redis-benchmark processes run at once with the
 * same client count and request count, reading GET hk:__rand_int__ over key spaces of 1, 16, 256 and 4096 keys
 * (-r). Together: a quarter of the reads on one key, a quarter on 16 keys, a quarter on 256, a quarter on 4096 — a
 * power law over four decades, the rank-frequency shape of Zipf with s ≈ 1 by decade. Every key is preloaded.
 * Throughput is all requests over the wall time of the slowest of the four; p50 is the median of the four
 * processes' p50, p99 the largest p99. "Reached a shard" counts GET calls in the shards' own INFO commandstats
 * (CONFIG RESETSTAT before each run) over the requests sent; "hot shard" is the shard with the most GET calls with
 * the cache off, and its load is its calls per second.
 *
 * Rows (each the median of `rounds` interleaved rounds, rotating order):
 * - direct: the lone redis-server, all keys on it;
 * - keymux, near cache off (coalescing on, the default);
 * - keymux, near cache on, admit: hot (metrics.hot_keys k: 300, so the 273 keys of the three hottest groups are
 *   eligible; the 4096-key tail is mostly not);
 * - keymux, near cache on, admit: all.
 * Coalescing cost: keymux with near_cache.coalesce false versus the default, GET pipeline 1 and 16 and SET
 * pipeline 16 over 100,000 keys of 16 bytes (the ring section's key space shape), interleaved rounds.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';

const HOST = '127.0.0.1';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const GROUPS = [1, 16, 256, 4096];
const KEYS = GROUPS[GROUPS.length - 1];

export interface HotKeysOptions {
  /** redis-server shards ("host:port") keymux runs over (ring mode). */
  shards: RedisProcess[];
  workDir: string;
  /** Requests per redis-benchmark process per round (four run at once in a Zipf-like run). */
  requests: number;
  rounds: number;
  /** Clients per redis-benchmark process. */
  clients: number;
  log?: (line: string) => void;
  track?: (child: ChildProcess) => void;
  timeoutMs?: number;
  deadline?: number;
}

interface Run {
  /** keymux's CPU µs per request (NaN for the direct row). */
  cpuUs: number;
  rps: number;
  p50: number;
  p99: number;
  /** GET calls the shards received / requests sent. */
  reached: number;
  /** GET calls per shard port. */
  calls: Map<number, number>;
  seconds: number;
}

interface KeymuxInstance {
  name: string;
  port: number;
  child: ChildProcess;
  log: string;
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat; NaN when unavailable. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ
  } catch {
    return NaN;
  }
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

const CPUS = os.cpus().length;
const HAVE_TASKSET = CPUS >= 2 && spawnSync('taskset', ['-c', '0', 'true']).status === 0;
function pinned(cpu: number, cmd: string, args: string[]): [string, string[]] {
  return HAVE_TASKSET ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

async function startKeymux(name: string, extra: string[], o: HotKeysOptions): Promise<KeymuxInstance> {
  const bin = path.join(REPO, 'bin/keymux.js');
  if (!fs.existsSync(path.join(REPO, 'dist/main.js'))) throw new Error('keymux is not built: run npm run build');
  const port = await freePort();
  const conf = path.join(o.workDir, `keymux-hot-${name}.yaml`);
  const log = path.join(o.workDir, `keymux-hot-${name}.log`);
  fs.writeFileSync(
    conf,
    [
      `listen: ${HOST}:${port}`,
      'mode: ring',
      'hash_tag: "{}"',
      'ring: { hash: fnv1a_64 }',
      'shards:',
      ...o.shards.map((s) => `  - { address: ${s.address}, weight: 1 }`),
      'log: { level: warn }',
      ...extra,
      '',
    ].join('\n'),
  );
  const fd = fs.openSync(log, 'a');
  const [cmd, argv] = pinned(CPUS - 1, process.execPath, [bin, '--config', conf]);
  const child = spawn(cmd, argv, { cwd: REPO, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  o.track?.(child);
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
  return { name, port, child, log };
}

/** One redis-benchmark; resolves with its CSV row. */
function redisBenchmark(
  port: number,
  args: string[],
  o: HotKeysOptions,
): Promise<{ rps: number; p50: number; p99: number }> {
  const limitMs = Math.min(o.timeoutMs ?? 180_000, (o.deadline ?? Infinity) - Date.now());
  if (limitMs <= 0) return Promise.reject(new Error('out of time (deadline passed)'));
  return new Promise((resolve, reject) => {
    const [cmd, argv] = pinned(0, 'redis-benchmark', ['-h', HOST, '-p', String(port), '--csv', ...args]);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    o.track?.(child);
    let out = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void stop(child);
    }, limitMs);
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) return reject(new Error(`redis-benchmark stopped after ${(limitMs / 1000).toFixed(1)}s`));
      const lines = out.split('\n').filter((l) => l.startsWith('"'));
      const h = lines.findIndex((l) => l.startsWith('"test"'));
      if (code !== 0 || h < 0 || lines[h + 1] === undefined) {
        return reject(new Error(`redis-benchmark failed (${code}): ${out.slice(0, 300)}`));
      }
      const cols = [...lines[h].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const vals = [...lines[h + 1].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const get = (c: string): number => Number(vals[cols.indexOf(c)]);
      resolve({ rps: get('rps'), p50: get('p50_latency_ms'), p99: get('p99_latency_ms') });
    });
  });
}

async function getCalls(port: number): Promise<number> {
  const [info] = await redisCommands(port, [['INFO', 'commandstats']]);
  const m = /cmdstat_get:calls=(\d+)/.exec(String(info));
  return m === null ? 0 : Number(m[1]);
}

/** The four-process Zipf-like read run against `port`; `counted` are the redis-servers whose GET calls count. */
async function zipfRun(port: number, counted: RedisProcess[], o: HotKeysOptions, pid?: number): Promise<Run> {
  await Promise.all(counted.map((s) => redisCommands(s.port, [['CONFIG', 'RESETSTAT']])));
  const cpu0 = pid === undefined ? NaN : cpuSeconds(pid);
  const t0 = performance.now();
  const results = await Promise.all(
    GROUPS.map((r) =>
      redisBenchmark(
        port,
        ['-c', String(o.clients), '-n', String(o.requests), '-r', String(r), 'GET', 'hk:__rand_int__'],
        o,
      ),
    ),
  );
  const seconds = (performance.now() - t0) / 1000;
  const calls = new Map<number, number>();
  for (const s of counted) calls.set(s.port, await getCalls(s.port));
  const total = o.requests * GROUPS.length;
  const sorted = results.map((x) => x.p50).sort((a, b) => a - b);
  return {
    cpuUs: ((cpuSeconds(pid) - cpu0) * 1e6) / total,
    rps: total / seconds,
    p50: (sorted[1] + sorted[2]) / 2,
    p99: Math.max(...results.map((x) => x.p99)),
    reached: [...calls.values()].reduce((a, b) => a + b, 0) / total,
    calls,
    seconds,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Preloads hk:000000000000 .. hk:<KEYS-1> (16-byte values) through `port`. */
async function preload(port: number): Promise<void> {
  const batch: string[][] = [];
  for (let i = 0; i < KEYS; i += 256) {
    const args = ['MSET'];
    for (let j = i; j < Math.min(KEYS, i + 256); j++) args.push(`hk:${String(j).padStart(12, '0')}`, 'v'.repeat(16));
    batch.push(args);
  }
  await redisCommands(port, batch, { timeoutMs: 60_000 });
}

export async function benchHotKeys(o: HotKeysOptions): Promise<{ markdown: string }> {
  const log = o.log ?? ((l: string) => console.log(l));
  const started: ChildProcess[] = [];
  const lone: RedisProcess = await startRedis();
  o.track?.(lone.process);
  const rows: Array<{ name: string; port: number; counted: RedisProcess[]; pid?: number }> = [];
  const instances: KeymuxInstance[] = [];
  try {
    const off = await startKeymux('cache-off', [], o);
    const hot = await startKeymux(
      'cache-hot',
      ['near_cache: { enabled: true, admit: hot }', 'metrics: { hot_keys: { k: 300 } }'],
      o,
    );
    const all = await startKeymux('cache-all', ['near_cache: { enabled: true, admit: all }'], o);
    const noCoalesce = await startKeymux('no-coalesce', ['near_cache: { coalesce: false }'], o);
    instances.push(off, hot, all, noCoalesce);
    for (const k of instances) started.push(k.child);
    await preload(off.port);
    await preload(lone.port);
    rows.push(
      { name: 'redis-server, direct (one process, all keys)', port: lone.port, counted: [lone] },
      { name: 'keymux, near cache off (coalescing on)', port: off.port, counted: o.shards, pid: off.child.pid },
      { name: 'keymux, near cache on, admit: hot (k 300)', port: hot.port, counted: o.shards, pid: hot.child.pid },
      { name: 'keymux, near cache on, admit: all', port: all.port, counted: o.shards, pid: all.child.pid },
    );
    // Warm-up: hot-key tracking needs a window of traffic before keys are admitted; caches fill.
    for (const r of rows.slice(2))
      await zipfRun(r.port, r.counted, { ...o, requests: Math.max(2000, o.requests >> 2) });
    await new Promise((r) => setTimeout(r, 600)); // admit: hot reads the top-K every 500 ms

    const runs = new Map<string, Run[]>(rows.map((r) => [r.name, []]));
    for (let round = 0; round < o.rounds; round++) {
      for (let i = 0; i < rows.length; i++) {
        const r = rows[(i + round) % rows.length];
        const run = await zipfRun(r.port, r.counted, o, r.pid);
        runs.get(r.name)!.push(run);
        log(
          `bench: hot keys round ${round + 1}/${o.rounds} ${r.name}: ${Math.round(run.rps)} rps, ` +
            `${(run.reached * 100).toFixed(1)}% reached a shard`,
        );
      }
    }
    // The hot shard: the one with the most GET calls with the cache off.
    const offRuns = runs.get(rows[1].name)!;
    const hotPort = [...offRuns[0].calls.entries()].sort((a, b) => b[1] - a[1])[0][0];
    const hotLoad = (rs: Run[]): number => median(rs.map((x) => (x.calls.get(hotPort) ?? 0) / x.seconds));
    const offLoad = hotLoad(offRuns);
    const directRps = median(runs.get(rows[0].name)!.map((x) => x.rps));
    const table = [
      '| target | rps | p50 ms | p99 ms | reads that reached a shard | hot shard GET/s | hot shard load vs cache off | rps vs direct | keymux CPU µs/req |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => {
        const rs = runs.get(r.name)!;
        const rps = median(rs.map((x) => x.rps));
        const isKeymux = r.counted === o.shards;
        const load = isKeymux ? hotLoad(rs) : NaN;
        return (
          `| ${r.name} | ${Math.round(rps)} | ${median(rs.map((x) => x.p50)).toFixed(3)} | ` +
          `${median(rs.map((x) => x.p99)).toFixed(3)} | ${(median(rs.map((x) => x.reached)) * 100).toFixed(2)}% | ` +
          `${isKeymux ? Math.round(load) : '-'} | ${isKeymux ? loadDrop(offLoad, load) : '-'} | ` +
          `${(rps / directRps).toFixed(2)}× | ${isKeymux ? median(rs.map((x) => x.cpuUs)).toFixed(2) : '-'} |`
        );
      }),
    ];

    // Coalescing cost on ordinary traffic (uniform keys, where there is nothing to coalesce).
    const cost = [
      ['GET, pipeline 1', ['-t', 'get', '-P', '1']],
      ['GET, pipeline 16', ['-t', 'get', '-P', '16']],
      ['SET, pipeline 16', ['-t', 'set', '-P', '16']],
    ] as const;
    const costRows: string[] = [
      '| row | coalescing off rps | coalescing on (default) rps | on / off rps | off CPU µs/req | on CPU µs/req | on / off CPU |',
      '|---|---:|---:|---:|---:|---:|---:|',
    ];
    for (const [name, args] of cost) {
      const offR: number[] = [];
      const onR: number[] = [];
      const offC: number[] = [];
      const onC: number[] = [];
      for (let round = 0; round < o.rounds; round++) {
        const order = round % 2 === 0 ? [noCoalesce, off] : [off, noCoalesce];
        for (const k of order) {
          const n = (args as readonly string[]).includes('16') ? o.requests * 4 : o.requests;
          const cpu0 = cpuSeconds(k.child.pid);
          const res = await redisBenchmark(
            k.port,
            ['-c', String(o.clients * 4), '-n', String(n), '-r', '100000', '-d', '16', ...args],
            o,
          );
          (k === off ? onR : offR).push(res.rps);
          (k === off ? onC : offC).push(((cpuSeconds(k.child.pid) - cpu0) * 1e6) / n);
        }
      }
      const a = median(offR);
      const b = median(onR);
      const ca = median(offC);
      const cb = median(onC);
      log(
        `bench: coalescing cost ${name}: off ${Math.round(a)} rps ${ca.toFixed(2)} µs, on ${Math.round(b)} rps ${cb.toFixed(2)} µs`,
      );
      costRows.push(
        `| ${name} | ${Math.round(a)} | ${Math.round(b)} | ${(b / a).toFixed(3)} | ${ca.toFixed(2)} | ${cb.toFixed(2)} | ${(cb / ca).toFixed(3)} |`,
      );
    }
    return {
      markdown: [
        `- workload: four redis-benchmark processes at once, ${o.clients} clients and ${o.requests} GETs each, over ` +
          `key spaces of ${GROUPS.join(', ')} keys (a Zipf-like power law: a quarter of the reads on one key); ` +
          `${o.rounds} interleaved rounds, medians; keymux in ring mode over ${o.shards.length} shards; ` +
          'test/bench/hot-keys.ts',
        '',
        ...table,
        '',
        `Request coalescing on ordinary traffic (uniform over 100,000 keys, ${o.clients * 4} clients; keymux ` +
          'with near_cache.coalesce false vs the default):',
        '',
        ...costRows,
      ].join('\n'),
    };
  } finally {
    for (const c of started) await stop(c);
    await lone.stop();
  }
}

/** The hot shard's load with the cache on against off, as "N× less" (a run where no GET reached it says so). */
function loadDrop(offLoad: number, load: number): string {
  return load > 0 ? `${(offLoad / load).toFixed(1)}× less` : 'no GET reached it';
}
