/**
 * Instructions per request: `npm run bench:instructions -- [--baseline DIR] [--rows LIST]`. Runs keymux (and the
 * keymux built in DIR) under valgrind's callgrind, in ring mode over 4 real redis-server shards, and counts the
 * machine instructions keymux executes per request of a redis-benchmark row, after a warm-up. Unlike rps and CPU
 * time, which vary by 5–15% from run to run on a shared machine, the count repeats within about 0.5% on the
 * pipeline-16 rows: it is how a change of a few percent on the data path is judged (the issue-10 rule: no row slower
 * by more than 3%). Rows with fewer measured requests (MGET: 10,000) move by a few percent when a garbage collection
 * falls in or out of the measured window: run them twice.
 *
 * Two numbers per row: every instruction of the measured phase, and the same without V8's optimizing compiler
 * (TurboFan still compiles during the measured phase under valgrind; natively that work ends early, so the second
 * number is the steady state the bench's long runs see). Kernel work (socket reads and writes, half of keymux's
 * CPU time) is not counted: it is the same for builds that make the same system calls. node runs with
 * --single-threaded (no concurrent compiler or GC threads, so the count is of one thread and repeatable).
 * Under valgrind a request takes about 50 times as long, so nearly every one passes the slow log's default 10 ms
 * threshold and is recorded there (about 590 instructions per GET at pipeline 16), which at real speed almost none
 * is: the same for both builds, so comparisons stand, but the absolute count is that much above the native path.
 *
 * env BENCH_KEYMUX_YAML: extra top-level YAML for this checkout's keymux (not the baseline), lines split at a
 * literal \n, e.g. 'near_cache: { coalesce: false }' with `--baseline .` compares a setting with the default.
 *
 * Needs valgrind (Debian package `valgrind`), redis-server and redis-benchmark. About 90 s per row and build.
 * Prints a Markdown table and writes it to test/bench/INSTRUCTIONS.md. Every process it starts is stopped by PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.js';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis.js';

const HOST = '127.0.0.1';
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT_FILE = path.join(REPO, 'test/bench/INSTRUCTIONS.md');

interface Row {
  name: string;
  /** redis-benchmark arguments after the common ones. */
  args: string[];
  warmup: number;
  measured: number;
}

const ROWS: Record<string, Row> = {
  'set-p16': { name: 'SET, pipeline 16', args: ['-t', 'set', '-P', '16'], warmup: 300_000, measured: 100_000 },
  'get-p16': { name: 'GET, pipeline 16', args: ['-t', 'get', '-P', '16'], warmup: 300_000, measured: 100_000 },
  'set-p1': { name: 'SET, pipeline 1', args: ['-t', 'set'], warmup: 60_000, measured: 20_000 },
  'get-p1': { name: 'GET, pipeline 1', args: ['-t', 'get'], warmup: 60_000, measured: 20_000 },
  'mget-p1': {
    name: 'MGET 10 keys, pipeline 1',
    args: ['mget', ...Array<string>(10).fill('key:__rand_int__')], // as npm run bench (each key its own random)
    warmup: 30_000,
    measured: 10_000,
  },
};

/** V8's optimizing compilers: their work in the measured phase is warm-up that natively ends early. */
const COMPILER = /v8::internal::(compiler|maglev|turboshaft)::|v8::internal::(OptimizingCompileDispatcher|Compiler::)/;

const children = new Set<ChildProcess>();

function usage(): string {
  return `usage: npm run bench:instructions -- [--baseline DIR] [--rows ${Object.keys(ROWS).join(',')}]`;
}

function parseArgs(argv: string[]): { baseline: string | null; rows: string[] } {
  let baseline: string | null = null;
  let rows = ['set-p16', 'get-p16', 'set-p1', 'get-p1', 'mget-p1'];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--baseline') baseline = path.resolve(argv[++i] ?? '');
    else if (a === '--rows') rows = (argv[++i] ?? '').split(',').filter(Boolean);
    else throw new Error(`unknown argument ${a}\n${usage()}`);
  }
  for (const r of rows) if (ROWS[r] === undefined) throw new Error(`unknown row ${r}\n${usage()}`);
  if (baseline !== null && !fs.existsSync(path.join(baseline, 'dist/main.js')))
    throw new Error(`--baseline ${baseline}: no dist/main.js there (npm ci && npm run build in it first)`);
  return { baseline, rows };
}

function need(cmd: string, args: string[]): void {
  if (spawnSync(cmd, args, { stdio: 'ignore' }).status !== 0)
    throw new Error(`${cmd} is missing (Debian: apt-get install valgrind redis-server redis-tools)`);
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(child);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out.slice(-500)}`));
    });
  });
}

async function waitForPing(port: number, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      if ((await redisCommand(port, 'PING')) === 'PONG') return;
    } catch {
      // not listening yet (node starts slowly under valgrind)
    }
    if (Date.now() > until) throw new Error(`keymux did not answer PING on ${port} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function benchmark(port: number, row: Row, n: number): Promise<string> {
  const args = ['-h', HOST, '-p', String(port), '-c', '50', '-n', String(n), '-r', '100000', '-d', '16', '-q'];
  return run('redis-benchmark', [...args, ...row.args], 900_000);
}

/** Instructions in a callgrind dump: [all, without the optimizing compiler]. */
function countDump(file: string): [number, number] {
  const out = spawnSync('callgrind_annotate', ['--threshold=100', '--inclusive=no', file], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  }).stdout;
  let total = 0;
  let compiler = 0;
  for (const line of out.split('\n')) {
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$/.exec(line);
    if (m === null) continue;
    const n = Number(m[1].replace(/,/g, ''));
    if (m[2].startsWith('PROGRAM TOTALS')) total = n;
    else if (COMPILER.test(m[2])) compiler += n;
  }
  if (total === 0) throw new Error(`no totals in ${file}`);
  return [total, total - compiler];
}

/** BENCH_KEYMUX_YAML: extra top-level YAML for this checkout's keymux only (as in run.ts), lines split at "\n". */
const EXTRA_YAML = (process.env.BENCH_KEYMUX_YAML ?? '').split('\\n').filter(Boolean);

async function measure(
  build: string,
  shards: RedisProcess[],
  row: Row,
  dir: string,
  extra: string[],
): Promise<[number, number]> {
  const port = await freePort();
  const yaml = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    yaml,
    [
      `listen: ${HOST}:${port}`,
      'mode: ring',
      'hash_tag: "{}"',
      'ring: { hash: fnv1a_64 }',
      'shards:',
      ...shards.map((s) => `  - { address: ${HOST}:${s.port}, weight: 1 }`),
      'log: { level: warn }',
      ...extra,
      '',
    ].join('\n'),
  );
  const dumps = path.join(dir, `cg-${Date.now()}`);
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      `--callgrind-out-file=${dumps}.%p`,
      'node',
      '--single-threaded',
      path.join(build, 'bin/keymux.js'),
      '--config',
      yaml,
    ],
    { cwd: build, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.add(child);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    await waitForPing(port, 180_000);
    await benchmark(port, row, row.warmup);
    await run('callgrind_control', ['-z', String(child.pid)], 60_000);
    await benchmark(port, row, row.measured);
    await run('callgrind_control', ['-d', String(child.pid)], 120_000);
  } finally {
    child.kill('SIGINT');
    await exited;
    children.delete(child);
  }
  const [all, steady] = countDump(`${dumps}.${child.pid}.1`);
  return [all / row.measured, steady / row.measured];
}

function commitOf(dir: string): string {
  const r = spawnSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

async function main(): Promise<void> {
  const { baseline, rows } = parseArgs(process.argv.slice(2));
  need('valgrind', ['--version']);
  need('redis-benchmark', ['--version']);
  const builds: Array<[string, string]> = [['keymux', REPO]];
  if (baseline !== null) builds.push(['baseline', baseline]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-instructions-'));
  const shards: RedisProcess[] = [];
  const lines: string[] = [];
  try {
    for (let i = 0; i < 4; i++) shards.push(await startRedis());
    const header = ['row', ...builds.flatMap(([n]) => [`${n} instr/req`, `${n} steady instr/req`])];
    if (baseline !== null) header.push('keymux/baseline steady');
    lines.push(
      '# keymux instructions per request',
      '',
      '<!-- Written by `npm run bench:instructions` (test/bench/instructions.ts); every run overwrites this file. -->',
      '',
      `- date: ${new Date().toISOString()}; node ${process.version}; ` +
        builds.map(([n, d]) => `${n} ${commitOf(d)}`).join(', ') +
        (EXTRA_YAML.length > 0 ? `; keymux with ${EXTRA_YAML.join(' ')}` : ''),
      '- keymux in ring mode over 4 redis-server shards, redis-benchmark -c 50 -r 100000 -d 16; callgrind counts ' +
        "keymux's user-space instructions over the measured requests after a warm-up; steady = without V8's " +
        'optimizing compiler (see test/bench/instructions.ts)',
      '',
      `| ${header.join(' | ')} |`,
      `| ${header.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    );
    for (const r of rows) {
      const row = ROWS[r];
      const cells: string[] = [`${row.name} (${row.measured.toLocaleString('en-US')} measured)`];
      const steady: number[] = [];
      for (const [name, build] of builds) {
        const [all, st] = await measure(build, shards, row, dir, name === 'keymux' ? EXTRA_YAML : []);
        console.log(`instructions: ${row.name} ${name}: ${Math.round(all)} per request, steady ${Math.round(st)}`);
        cells.push(Math.round(all).toLocaleString('en-US'), Math.round(st).toLocaleString('en-US'));
        steady.push(st);
      }
      if (baseline !== null) cells.push(`${(steady[0] / steady[1]).toFixed(3)}×`);
      lines.push(`| ${cells.join(' | ')} |`);
    }
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(shards.map((s) => s.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
  lines.push(
    '',
    'Fewer is better; a ratio below 1.000 means keymux executes fewer instructions than the baseline. ' +
      'Repeat runs agree within about 0.5% on the pipeline-16 rows; the MGET row moves by a few percent (GC).',
    '',
  );
  const text = lines.join('\n');
  console.log(`\n${text}`);
  fs.writeFileSync(OUT_FILE, text);
  console.log(`instructions: wrote ${path.relative(REPO, OUT_FILE)}`);
}

main().catch((err: unknown) => {
  console.error(`instructions: ${err instanceof Error ? err.message : String(err)}`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
