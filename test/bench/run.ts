/**
 * The performance harness behind `npm run bench`: it starts 4 redis-server shards plus one lone redis-server on
 * free loopback ports, twemproxy (nutcracker) and keymux in ring mode over the same 4 shards with the same ring
 * (ketama, fnv1a_64, hash tag "{}"), preloads the key space through every target, then runs redis-benchmark
 * against each target row by row, in short interleaved rounds with a rotating order (each cell is the median of
 * its rounds), and prints a markdown table (rps, p50/p99, keymux's rps ratios) that it also writes to
 * test/bench/RESULTS.md. It owns every process it starts and stops each by PID on exit, on Ctrl-C and on
 * errors. Load only ever goes to 127.0.0.1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';

const HOST = '127.0.0.1';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS = path.join(REPO, 'test/bench/RESULTS.md');
const KEYSPACE = 100_000;
const VALUE_SIZE = 16;
const CLIENTS = 50;
const SHARDS = 4;
const MGET_KEYS = 10;

type TargetName = 'direct' | 'twemproxy' | 'keymux';
const ALL_TARGETS: TargetName[] = ['direct', 'twemproxy', 'keymux'];
const ALIASES: Record<string, TargetName> = { direct: 'direct', redis: 'direct', twemproxy: 'twemproxy',
  nutcracker: 'twemproxy', keymux: 'keymux' };

interface Target { name: TargetName; port: number; child?: ChildProcess; log?: string }
interface Row { name: string; base: number; args: string[]; mget?: boolean }
interface Result { rps: number; p50: number; p99: number }
type Cell = { ok: Result } | { error: string };

// ---------------------------------------------------------------------------------------------------------------
// Process ownership: everything started here is tracked and stopped by PID.

const children = new Set<ChildProcess>();
const redises: RedisProcess[] = [];
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
  try { process.kill(child.pid, 'SIGTERM'); } catch { return; }
  const timer = setTimeout(() => { try { if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, 3000);
  await exited;
  clearTimeout(timer);
}

async function cleanup(keepTmp: boolean): Promise<void> {
  await Promise.all([...children].map(stopChild));
  await Promise.all(redises.map(async (r) => {
    await r.stop().catch(() => undefined);
    fs.rmSync(r.dir, { recursive: true, force: true });
  }));
  if (tmpDir !== '' && !keepTmp) fs.rmSync(tmpDir, { recursive: true, force: true });
}

process.on('exit', () => {
  for (const c of children) { try { if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
});
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
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
  return `usage: npm run bench -- [--targets direct,twemproxy,keymux]

  --targets LIST   comma-separated subset of: ${ALL_TARGETS.join(', ')} (default: all three)
  env BENCH_SCALE  multiplies every request count (default 1; 0.1 for a quick smoke run)
  env BENCH_ROUNDS splits each row into this many interleaved rounds and reports medians (default 3)
  env BENCH_TIMEOUT_S  seconds one redis-benchmark run may take before it counts as hung (default 180)`;
}

function parseArgs(argv: string[]): TargetName[] {
  let targets: TargetName[] = ALL_TARGETS;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') { console.log(usage()); process.exit(0); }
    let list: string | undefined;
    if (a === '--targets') list = argv[++i];
    else if (a.startsWith('--targets=')) list = a.slice('--targets='.length);
    else { console.error(`bench: unknown argument '${a}'\n${usage()}`); process.exit(2); }
    if (list === undefined || list === '') { console.error(`bench: --targets needs a list\n${usage()}`); process.exit(2); }
    const picked = new Set<TargetName>();
    for (const t of list.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)) {
      const name = ALIASES[t];
      if (name === undefined) { console.error(`bench: unknown target '${t}' (known: ${ALL_TARGETS.join(', ')})`); process.exit(2); }
      picked.add(name);
    }
    targets = ALL_TARGETS.filter((t) => picked.has(t));
  }
  return targets;
}

function envNumber(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) { console.error(`bench: ${name} must be a positive number, got '${raw}'`); process.exit(2); }
  return v;
}

const randKey = 'key:__rand_int__';
const ROWS: Row[] = [
  { name: 'SET, pipeline 1', base: 200_000, args: ['-t', 'set', '-P', '1'] },
  { name: 'GET, pipeline 1', base: 200_000, args: ['-t', 'get', '-P', '1'] },
  { name: 'SET, pipeline 16', base: 2_000_000, args: ['-t', 'set', '-P', '16'] },
  { name: 'GET, pipeline 16', base: 2_000_000, args: ['-t', 'get', '-P', '16'] },
  { name: `MGET ${MGET_KEYS} keys, pipeline 1`, base: 100_000, args: ['mget', ...Array<string>(MGET_KEYS).fill(randKey)], mget: true },
];

// ---------------------------------------------------------------------------------------------------------------
// Starting targets.

async function waitPing(name: string, port: number, child?: ChildProcess, log?: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child !== undefined && !alive(child)) {
      throw new Error(`${name} exited during start-up (${child.exitCode !== null ? `exit code ${child.exitCode}` : `signal ${child.signalCode}`})${logTail(log)}`);
    }
    try {
      const [r] = await redisCommands(port, [['PING']], { timeoutMs: 1000 });
      if (String(r) === 'PONG') return;
      last = `PING answered ${r instanceof Error ? `error '${r.message}'` : JSON.stringify(r)}`;
    } catch (err) { last = (err as Error).message; }
    await new Promise((res) => setTimeout(res, 100)); // polling a port has no event to await
  }
  throw new Error(`${name} did not answer PING on ${HOST}:${port} within ${timeoutMs / 1000}s (${last})${logTail(log)}`);
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
  fs.writeFileSync(conf, [
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
  ].join('\n'));
  const test = spawnSync('nutcracker', ['-t', '-c', conf], { encoding: 'utf8' });
  if (test.status !== 0) throw new Error(`nutcracker rejected its config ${conf}: ${test.stderr}${test.stdout}`);
  const child = track(spawn('nutcracker', ['-c', conf, '-o', log, '-s', String(statsPort), '-a', HOST],
    { stdio: 'ignore' }));
  child.on('error', () => undefined); // reported as "exited during start-up" by waitPing
  await waitPing('twemproxy (nutcracker)', port, child, log);
  return { name: 'twemproxy', port, child, log };
}

async function startKeymux(shards: RedisProcess[]): Promise<Target> {
  const bin = path.join(REPO, 'bin/keymux.js');
  if (!fs.existsSync(bin)) throw new Error(`keymux is not built: ${bin} does not exist (run with --targets direct,twemproxy to skip it)`);
  const port = await freePort();
  const conf = path.join(tmpDir, 'keymux.yaml');
  const log = path.join(tmpDir, 'keymux.log');
  fs.writeFileSync(conf, [
    `listen: ${HOST}:${port}`,
    'mode: ring',
    'hash_tag: "{}"',
    'ring: { hash: fnv1a_64 }',
    'shards:',
    ...shards.map((s) => `  - { address: ${s.address}, weight: 1 }`),
    'log: { level: warn }',
    '',
  ].join('\n'));
  const fd = fs.openSync(log, 'a');
  const child = track(spawn(process.execPath, [bin, '--config', conf], { cwd: REPO, stdio: ['ignore', fd, fd] }));
  fs.closeSync(fd);
  child.on('error', () => undefined);
  await waitPing('keymux', port, child, log);
  return { name: 'keymux', port, child, log };
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
      throw new Error(`${t.name}: preload SET ${keyName(start + bad)} answered ${r instanceof Error ? `error '${r.message}'` : JSON.stringify(r)}`);
    }
  }
}

/** Checks that GET and MGET through the target return the preloaded values; returns a reason when not. */
async function checkReads(t: Target, mget: boolean): Promise<string | undefined> {
  const keys = Array.from({ length: MGET_KEYS }, (_, i) => keyName(i * 9973 % KEYSPACE));
  const cmd = mget ? ['MGET', ...keys] : ['GET', keys[1]];
  let r: unknown;
  try { [r] = await redisCommands(t.port, [cmd], { timeoutMs: 5000 }); } catch (err) { return `${cmd[0]} check failed: ${(err as Error).message}`; }
  // The SET rows overwrite values with redis-benchmark's own bytes, so only the shape and size are checked.
  const isValue = (v: unknown): boolean => typeof v === 'string' && v.length === VALUE_SIZE;
  const ok = mget ? Array.isArray(r) && r.length === MGET_KEYS && r.every(isValue) : isValue(r);
  if (ok) return undefined;
  const got = r instanceof Error ? `error '${r.message}'` : JSON.stringify(r);
  return `${cmd[0]} ${cmd.length - 1 > 1 ? `of ${cmd.length - 1} preloaded keys` : cmd[1]} answered ${got}, ` +
    `expected ${mget ? `${MGET_KEYS} values` : 'a value'} of ${VALUE_SIZE} bytes`;
}

async function dbsizes(shards: RedisProcess[]): Promise<number[]> {
  return Promise.all(shards.map(async (s) => Number((await redisCommands(s.port, [['DBSIZE']]))[0])));
}

// ---------------------------------------------------------------------------------------------------------------
// redis-benchmark.

const timeoutS = envNumber('BENCH_TIMEOUT_S', 180);

function runBenchmark(t: Target, row: Row, n: number): Promise<Cell> {
  if (shuttingDown) return new Promise(() => undefined); // the signal handler is stopping everything and exits
  const args = ['-h', HOST, '-p', String(t.port), '-c', String(CLIENTS), '-n', String(n), '-r', String(KEYSPACE),
    '-d', String(VALUE_SIZE), '--csv', ...row.args];
  return new Promise((resolve) => {
    const child = track(spawn('redis-benchmark', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { timedOut = true; void stopChild(child); }, timeoutS * 1000);
    child.on('error', (e) => { clearTimeout(timer); resolve({ error: `redis-benchmark failed to start: ${e.message}` }); });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (shuttingDown) return; // stopped by Ctrl-C: no result to report
      const detail = (err + out).split('\n').map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('"') && !l.includes('Could not fetch server CONFIG')).slice(0, 3).join(' | ');
      if (timedOut) { resolve({ error: `redis-benchmark hung for ${timeoutS}s (BENCH_TIMEOUT_S)${detail ? `: ${detail}` : ''}` }); return; }
      if (code !== 0) { resolve({ error: `redis-benchmark exited ${code}${detail ? `: ${detail}` : ''}` }); return; }
      const lines = out.split('\n').filter((l) => l.startsWith('"'));
      const header = lines.findIndex((l) => l.startsWith('"test"'));
      const data = header >= 0 ? lines[header + 1] : undefined;
      if (data === undefined) { resolve({ error: `no CSV result from redis-benchmark${detail ? `: ${detail}` : ''}` }); return; }
      const cols = [...lines[header].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const vals = [...data.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
      const get = (c: string): number => Number(vals[cols.indexOf(c)]);
      const res = { rps: get('rps'), p50: get('p50_latency_ms'), p99: get('p99_latency_ms') };
      if (![res.rps, res.p50, res.p99].every(Number.isFinite)) { resolve({ error: `unparsable CSV: ${data}` }); return; }
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

const oneLine = (s: string): string => { const l = s.split('\n')[0]; return l.length > 300 ? `${l.slice(0, 300)}…` : l; };
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const fmtInt = (v: number): string => Math.round(v).toLocaleString('en-US');
const fmtMs = (v: number): string => v.toFixed(3);
const LABEL: Record<TargetName, string> = { direct: 'direct', twemproxy: 'twemproxy', keymux: 'keymux' };

function ratio(a: Cell | undefined, b: Cell | undefined): string {
  if (a === undefined || b === undefined || !('ok' in a) || !('ok' in b) || b.ok.rps === 0) return 'n/a';
  return `${(a.ok.rps / b.ok.rps).toFixed(2)}×`;
}

function table(targets: TargetName[], results: Map<string, Cell>[], counts: number[], rounds: number): string {
  const head = ['row', 'requests'];
  for (const t of targets) head.push(`${LABEL[t]} rps`, `${LABEL[t]} p50 / p99 ms`);
  const ratios: Array<[TargetName, TargetName]> = [];
  if (targets.includes('keymux') && targets.includes('twemproxy')) ratios.push(['keymux', 'twemproxy']);
  if (targets.includes('keymux') && targets.includes('direct')) ratios.push(['keymux', 'direct']);
  if (!targets.includes('keymux') && targets.includes('twemproxy') && targets.includes('direct')) ratios.push(['twemproxy', 'direct']);
  for (const [a, b] of ratios) head.push(`${a}/${b} rps`);
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`];
  ROWS.forEach((row, i) => {
    const cells = [row.name, rounds > 1 ? `${rounds} × ${fmtInt(counts[i])}` : fmtInt(counts[i])];
    for (const t of targets) {
      const c = results[i].get(t);
      if (c !== undefined && 'ok' in c) cells.push(fmtInt(c.ok.rps), `${fmtMs(c.ok.p50)} / ${fmtMs(c.ok.p99)}`);
      else cells.push('failed', '—');
    }
    for (const [a, b] of ratios) cells.push(ratio(results[i].get(a), results[i].get(b)));
    lines.push(`| ${cells.join(' | ')} |`);
  });
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Main.

async function main(): Promise<number> {
  const targetNames = parseArgs(process.argv.slice(2));
  const scale = envNumber('BENCH_SCALE', 1);
  const rounds = Math.round(envNumber('BENCH_ROUNDS', 3));
  const counts = ROWS.map((r) => Math.max(1000, Math.round(r.base * scale / rounds))); // requests per round
  const load = os.loadavg()[0].toFixed(2);
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-bench-'));
  const started = Date.now();
  console.log(`bench: targets ${targetNames.join(', ')}; scale ${scale}; rounds ${rounds}; load average ${load}; work dir ${tmpDir}`);

  const needShards = targetNames.includes('twemproxy') || targetNames.includes('keymux');
  const shards: RedisProcess[] = [];
  if (needShards) {
    for (let i = 0; i < SHARDS; i++) { const r = await startRedis(); redises.push(r); shards.push(r); }
    console.log(`bench: ${SHARDS} shards on ${shards.map((s) => s.port).join(', ')}`);
  }
  const targets: Target[] = [];
  for (const name of targetNames) {
    if (name === 'direct') {
      const r = await startRedis(); redises.push(r);
      targets.push({ name, port: r.port, child: r.process });
    } else if (name === 'twemproxy') targets.push(await startTwemproxy(shards));
    else targets.push(await startKeymux(shards));
    console.log(`bench: ${name} answers PING on ${HOST}:${targets[targets.length - 1].port}`);
  }

  // Preload the whole key space through each target so GET and MGET read real values. twemproxy first, then
  // keymux: if keymux's ring agrees with twemproxy's, its preload rewrites the same keys on the same shards.
  const notes: string[] = [];
  let afterTwemproxy: number[] | undefined;
  for (const t of [...targets].sort((a, b) => ALL_TARGETS.indexOf(a.name) - ALL_TARGETS.indexOf(b.name))) {
    const t0 = Date.now();
    try { await preload(t); } catch (err) {
      throw new Error(`preloading through ${t.name} failed: ${(err as Error).message}${logTail(t.log)}`);
    }
    console.log(`bench: preloaded ${fmtInt(KEYSPACE)} keys through ${t.name} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const bad = await checkReads(t, false);
    if (bad !== undefined) throw new Error(`${t.name} does not read back what it stored: ${bad}${logTail(t.log)}`);
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

  // Each row runs in rounds; within a round the targets run back to back, in an order that rotates every round
  // so no target always goes last. Interleaving short rounds spreads background noise on a shared machine over
  // all targets; each cell reports the median rps, p50 and p99 of its rounds. A failed round fails the cell.
  const results: Map<string, Cell>[] = [];
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
          cell = { error: `${t.name} is no longer running (exit ${t.child.exitCode ?? t.child.signalCode})${logTail(t.log)}` };
        } else {
          const bad = row.mget && round === 0 ? await checkReads(t, true) : undefined;
          cell = bad !== undefined ? { error: bad } : await runBenchmark(t, row, counts[i]);
        }
        if ('ok' in cell) samples.get(t.name)!.push(cell.ok);
        else cells.set(t.name, cell);
        const shown = 'ok' in cell ? `${fmtInt(cell.ok.rps)} rps, p50 ${fmtMs(cell.ok.p50)} ms, p99 ${fmtMs(cell.ok.p99)} ms`
          : `FAILED: ${cell.error}`;
        console.log(`bench: ${row.name.padEnd(24)} round ${round + 1}/${rounds} ${t.name.padEnd(10)} ${shown}`);
      }
    }
    for (const t of targets) {
      const got = samples.get(t.name)!;
      if (!cells.has(t.name)) {
        cells.set(t.name, { ok: { rps: median(got.map((r) => r.rps)), p50: median(got.map((r) => r.p50)), p99: median(got.map((r) => r.p99)) } });
      }
    }
  }

  const failures: string[] = [];
  ROWS.forEach((row, i) => {
    for (const [t, c] of results[i]) if ('error' in c) failures.push(`${row.name} / ${t}: ${c.error}`);
  });
  for (const t of targets) {
    if (t.child !== undefined && !alive(t.child)) failures.push(`${t.name} exited during the run${logTail(t.log)}`);
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
    `- load: redis-benchmark on loopback, ${CLIENTS} clients, ${fmtInt(KEYSPACE)} random keys (-r), ${VALUE_SIZE}-byte values (-d), ` +
      'key space preloaded; direct is one redis-server; twemproxy and keymux each front the same ' +
      `${SHARDS} redis-server shards (ketama, fnv1a_64, hash tag "{}", one connection per shard)`,
    `- BENCH_SCALE ${scale}, BENCH_ROUNDS ${rounds} (each cell is the median of ${rounds} interleaved rounds); ` +
      `1-minute load average at start ${load}; whole run ${((Date.now() - started) / 1000).toFixed(0)}s`,
    ...notes.map((n) => `- ${n}`),
    '',
    table(targetNames, results, counts, rounds),
    '',
    'rps is requests per second as redis-benchmark counts them (one MGET is one request); p50 / p99 are its ' +
      'latency percentiles in milliseconds. A ratio is the first target\'s rps divided by the second\'s on the ' +
      'same row: 1.00× is parity, below 1 is slower. All processes share the same CPUs, so absolute numbers ' +
      'depend on the machine; compare ratios from one run.',
    ...(failures.length > 0 ? ['', '## Failures', '', ...failures.map((f) => `- ${oneLine(f)}`)] : []),
    '',
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
  async (code) => { if (!shuttingDown) { shuttingDown = true; await cleanup(code !== 0); if (code !== 0) console.error(`bench: logs kept in ${tmpDir}`); process.exit(code); } },
  async (err: unknown) => {
    if (shuttingDown) return;
    shuttingDown = true;
    console.error(`bench: FAILED: ${err instanceof Error ? err.message : String(err)}`);
    await cleanup(true);
    if (tmpDir !== '') console.error(`bench: logs kept in ${tmpDir}`);
    process.exit(1);
  },
);
