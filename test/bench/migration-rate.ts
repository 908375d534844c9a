/**
 * The migration rate behind `keymux plan`'s default (migration/estimate.ts DEFAULT_KEYS_PER_SECOND), and what a
 * migration costs the clients reading meanwhile: N keys of 100 bytes on a 3-member ring (real redis-servers on
 * free ports) behind the real binary with `workers: W`, then a reload that adds a fourth member (about a quarter
 * of the keys move) while 4 clients GET random keys one at a time. Prints the keys the migration moved, the time
 * from its start to its end (scanning included), keys/s, and the clients' GET latency during the migration by the
 * role of the worker serving them (with W > 1 worker 1 moves every key; the others ask it through the primary).
 * Run: `npx tsx test/bench/migration-rate.ts [N] [--workers W]` (defaults 100,000 and 1).
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { startRedis, redisCommands } from '../support/redis.js';
import { runBinary } from '../support/keymux.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const args = process.argv.slice(2);
const flag = args.indexOf('--workers');
const WORKERS = flag === -1 ? 1 : Number(args[flag + 1]);
const N = Number(args.find((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--workers') ?? 100_000);
const CLIENTS = 4;

const redis = await Promise.all([0, 1, 2, 3].map(() => startRedis()));
const dir = makeTempDir('keymux-rate-');
const file = path.join(dir, 'keymux.yaml');
const [port, adminPort] = [await freePort(), await freePort()];
const config = (members: number): string =>
  stringify({
    listen: `127.0.0.1:${port}`,
    admin: `127.0.0.1:${adminPort}`,
    workers: WORKERS,
    mode: 'ring',
    shards: redis.slice(0, members).map((r, i) => ({ name: 'abcd'[i], address: r.address })),
    log: { level: 'info' },
  });
const admin = async (pathname: string, method = 'GET'): Promise<unknown> =>
  (await fetch(`http://127.0.0.1:${adminPort}${pathname}`, { method })).json();

fs.writeFileSync(file, config(3));
const keymux = await runBinary(file, WORKERS > 1 ? '"keymux workers serving"' : '"keymux listening"');
try {
  for (let i = 0; i < N; i += 10_000) {
    const batch = Array.from({ length: Math.min(10_000, N - i) }, (_, j) => ['SET', `k:${i + j}`, 'v'.repeat(100)]);
    await redisCommands(port, batch, { timeoutMs: 60_000 });
  }
  const leaderPid =
    WORKERS > 1
      ? (admin('/workers') as Promise<{ workers: Array<{ pid: number }> }>).then((w) => w.workers[0]!.pid)
      : 0;
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const client = new Redis({ port, host: '127.0.0.1' });
      const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))![1]);
      return { client, role: WORKERS === 1 ? 'alone' : pid === (await leaderPid) ? 'leader' : 'follower' };
    }),
  );
  const latencies = new Map<string, number[]>();
  let migrating = true;
  fs.writeFileSync(file, config(4));
  await admin('/reload', 'POST');
  const readers = clients.map(async ({ client, role }) => {
    const own = latencies.get(role) ?? [];
    latencies.set(role, own);
    while (migrating) {
      const t0 = performance.now();
      await client.get(`k:${Math.floor(Math.random() * N)}`);
      own.push(performance.now() - t0);
    }
  });
  type Row = { state: string; keysMoved: number; startedAt: number; finishedAt: number | null };
  for (;;) {
    const m = ((await admin('/shards')) as { migrations: Row[] }).migrations.at(-1);
    if (m !== undefined && m.state === 'done') {
      migrating = false;
      await Promise.all(readers);
      const seconds = (m.finishedAt! - m.startedAt) / 1000;
      console.log(
        `workers: ${WORKERS}: ${N} keys, ${m.keysMoved} moved in ${seconds.toFixed(2)} s: ` +
          `${Math.round(m.keysMoved / seconds)} keys/s`,
      );
      for (const [role, ms] of latencies) {
        ms.sort((a, b) => a - b);
        const at = (q: number): string => (ms[Math.min(ms.length - 1, Math.floor(q * ms.length))] ?? 0).toFixed(2);
        console.log(
          `  GET during the migration, clients of ${role} worker(s): ${ms.length} requests, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`,
        );
      }
      break;
    }
    await new Promise((r) => setTimeout(r, 50)); // polling the progress; a benchmark, not a test
  }
  for (const { client } of clients) client.disconnect();
} finally {
  await keymux.kill();
  await Promise.all(redis.map((r) => r.stop()));
  removeTempDir(dir);
}
