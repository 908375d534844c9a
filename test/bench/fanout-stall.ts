/**
 * How much a huge fan-out stalls other clients (issue 11): three pipelined MGETs of N keys each (default
 * 1,000,000; 1 in 10 keys holds a 16-byte value, the rest are missing) sent at once by one client through a
 * spawned keymux on 3 real redis-servers, while another client sends PING after PING and times each round trip.
 * Prints the PING round trips during the MGETs (p50, p99, max, count), the time until all three replies arrived,
 * and keymux's RSS after (VmRSS) and at its peak (VmHWM), read from /proc.
 * Run: `npm run build && npx tsx test/bench/fanout-stall.ts [N] [keymux dir]` (the dir holds bin/ and dist/ of the
 * keymux to measure, default this checkout: point it at a build of another commit to compare).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { startRedis } from '../support/redis.js';
import { freePort } from '../support/ports.js';

const N = Number(process.argv[2] ?? 1_000_000);
const home = path.resolve(process.argv[3] ?? '.');

function encode(args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

const key = (i: number): string => `k:${i}`;
const value = (i: number): string => `v${String(i).padStart(15, '0')}`;
const hasValue = (i: number): boolean => i % 10 === 0;

const redis = await Promise.all([0, 1, 2].map(() => startRedis()));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keymux-stall-'));
const port = await freePort();
const file = path.join(dir, 'keymux.yaml');
fs.writeFileSync(
  file,
  stringify({
    listen: `127.0.0.1:${port}`,
    mode: 'ring',
    shards: redis.map((r) => ({ address: r.address })),
    log: { level: 'warn' },
  }),
);
const nodeArgs = (process.env.KEYMUX_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
const child = spawn(process.execPath, [...nodeArgs, path.join(home, 'bin/keymux.js'), '--config', file, '--no-watch'], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
const status = (field: string): number => {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
};

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

try {
  let setup: net.Socket | null = null;
  for (let i = 0; i < 200 && setup === null; i++) {
    setup = await connect().catch(() => null);
    if (setup === null) await new Promise((r) => setTimeout(r, 50));
  }
  if (setup === null) throw new Error('keymux did not start');
  // Values for 1 key in 10, written in MSETs of 500 keys (small fan-outs).
  const batches: Buffer[] = [];
  let expectedSets = 0;
  for (let i = 0; i < N; i += 5000) {
    const args: string[] = ['MSET'];
    for (let j = i; j < Math.min(N, i + 5000); j++) if (hasValue(j)) args.push(key(j), value(j));
    if (args.length > 1) {
      batches.push(encode(args));
      expectedSets++;
    }
  }
  await new Promise<void>((resolve) => {
    let got = 0;
    setup.on('data', (d: Buffer) => {
      got += d.toString('latin1').split('+OK').length - 1;
      if (got >= expectedSets) resolve();
    });
    setup.write(Buffer.concat(batches));
  });
  setup.destroy();

  const mgetArgs: string[] = ['MGET'];
  let replyBytes = `*${N}\r\n`.length;
  for (let i = 0; i < N; i++) {
    mgetArgs.push(key(i));
    replyBytes += hasValue(i) ? `$16\r\n`.length + 16 + 2 : 5;
  }
  const mget = encode(mgetArgs);
  const rssBefore = status('VmRSS');

  const pinger = await connect();
  const big = await connect();
  const rtts: number[] = [];
  let running = true;
  let sentAt = 0;
  pinger.on('data', () => {
    rtts.push(performance.now() - sentAt);
    if (running) {
      sentAt = performance.now();
      pinger.write('*1\r\n$4\r\nPING\r\n');
    }
  });
  const t0 = performance.now();
  const done = new Promise<number>((resolve) => {
    let got = 0;
    big.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 3 * replyBytes) resolve(performance.now() - t0);
    });
  });
  big.write(Buffer.concat([mget, mget, mget]));
  sentAt = performance.now();
  pinger.write('*1\r\n$4\r\nPING\r\n');
  const elapsed = await done;
  running = false;
  const rssAfter = status('VmRSS');
  const peak = status('VmHWM');
  const sorted = [...rtts].sort((a, b) => a - b);
  const q = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  console.log(
    JSON.stringify({
      keys: N,
      mgetsMs: Math.round(elapsed),
      pings: sorted.length,
      pingMs: { p50: +q(0.5).toFixed(2), p99: +q(0.99).toFixed(2), max: +sorted[sorted.length - 1].toFixed(1) },
      rssMB: { before: Math.round(rssBefore), after: Math.round(rssAfter), peak: Math.round(peak) },
    }),
  );
  pinger.destroy();
  big.destroy();
} finally {
  child.kill(nodeArgs.length > 0 ? 'SIGINT' : 'SIGKILL');
  if (nodeArgs.length > 0) await new Promise((r) => child.once('exit', r));
  await Promise.all(redis.map((r) => r.stop('SIGKILL')));
  fs.rmSync(dir, { recursive: true, force: true });
}
