/**
 * Hung workers with `workers: 2` (README "Workers": hung workers), on the real binary and real redis-servers. A
 * worker stopped with SIGSTOP stands for one whose event loop is blocked: it answers no heartbeat. Stopped for less
 * than `workers_heartbeat_timeout_ms` and continued, it is kept (same PID, no restart) though the admin endpoint
 * skipped it meanwhile; stopped for good, it is killed and replaced within the bound, counted as `hung`, its old
 * PID gone and every new connection served, while /readyz, /metrics, /shards, /hotkeys and /slowlog answer without
 * waiting for it and name it as missing. Before, nothing noticed: /readyz and every admin request waited 5 s for
 * the stopped worker on each call, and it was never replaced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { runBinary, type RunningBinary } from '../support/keymux.js';

/** The bound of the test: the default, so a stopped worker stays silent for seconds before it is replaced. */
const HEARTBEAT_TIMEOUT_MS = 5000;
const CLIENTS = 6;

let dir: string;
let shard: RedisProcess;
let port: number;
let adminPort: number;
let binary: RunningBinary;
const clients: Redis[] = [];
/** Processes this test stopped: continued at the end whatever happens, so none is left stopped. */
const stopped = new Set<number>();
const output = (): string => binary?.output() ?? '';

interface WorkersReport {
  workers: Array<{ id: number; pid: number | null; state: string; missed_heartbeats?: number }>;
  restarts: number;
  restarts_by_reason: Record<string, number>;
}

interface Missing {
  worker: number;
  pid: number | null;
  reason: string;
}

async function admin(pathname: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}${pathname}`);
  return { status: res.status, text: await res.text() };
}

async function workers(): Promise<WorkersReport> {
  return JSON.parse((await admin('/workers')).text) as WorkersReport;
}

async function pidOf(client: Redis): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await client.info('server'))![1]);
}

/** The value of one metric line (name and labels exactly as written), or undefined when absent. */
function metricLine(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50)); // poll-until-condition: the admin endpoint is the event source
  }
}

/** Waits until the primary reports that worker `id` missed a heartbeat (it is silent now). */
function untilSilent(id: number): Promise<WorkersReport> {
  return until(`worker ${id} to miss a heartbeat`, async () => {
    const r = await workers();
    return (r.workers[id - 1]!.missed_heartbeats ?? 0) > 0 ? r : undefined;
  });
}

function stop(pid: number): void {
  stopped.add(pid);
  process.kill(pid, 'SIGSTOP');
}

function resume(pid: number): void {
  stopped.delete(pid);
  try {
    process.kill(pid, 'SIGCONT');
  } catch {
    // already gone (killed as hung)
  }
}

beforeAll(async () => {
  shard = await startRedis();
  [port, adminPort] = [await freePort(), await freePort()];
  dir = makeTempDir('keymux-workers-hung-');
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'slots',
      workers: 2,
      workers_heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
      log: { level: 'info' },
      drain: { grace_s: 2 },
      shards: [{ name: 'a', address: shard.address, slots: ['0-16383'] }],
    }),
  );
  binary = await runBinary(file, 'keymux workers serving');
  for (let i = 0; i < CLIENTS; i++) {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    client.on('error', () => undefined); // the clients of a killed worker reconnect: expected here
    clients.push(client);
    await client.set(`k${i}`, `v${i}`);
  }
});

afterAll(async () => {
  for (const pid of [...stopped]) resume(pid);
  for (const client of clients) client.disconnect();
  await binary?.kill();
  await shard?.stop();
  if (dir !== undefined) removeTempDir(dir);
});

describe('workers: 2, a worker that answers no heartbeat', () => {
  it('is kept when it answers again within the bound (busy, not hung); the admin endpoint skips it meanwhile', async () => {
    const before = await workers();
    const busy = before.workers[1]!.pid!;
    stop(busy);
    try {
      await untilSilent(2);
      // Known silent: /readyz does not wait for it, and says which worker it is.
      const ready = await admin('/readyz');
      expect(ready.status).toBe(503);
      expect(ready.text).toContain(`worker 2 (pid ${busy}): silent`);
    } finally {
      resume(busy);
    }
    const after = await until('worker 2 to answer heartbeats again', async () => {
      const r = await workers();
      return r.workers[1]!.missed_heartbeats === 0 ? r : undefined;
    });
    expect(after.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
    expect(after.workers.map((w) => w.state)).toEqual(['serving', 'serving']);
    expect(after.restarts).toBe(0);
    expect(output()).toContain('worker answering heartbeats again');
    expect(output()).not.toContain('worker hung');
    // Its clients were only delayed: every client is served, on the same workers as before.
    for (let i = 0; i < CLIENTS; i++) expect(await clients[i]!.get(`k${i}`)).toBe(`v${i}`);
    expect(new Set(await Promise.all(clients.map(pidOf)))).toEqual(new Set(before.workers.map((w) => w.pid)));
    expect((await admin('/readyz')).status).toBe(200);
  });

  it('is killed and replaced within the bound when it stays silent; admin requests answer without waiting for it', async () => {
    const before = await workers();
    const survivor = before.workers[0]!.pid!;
    const hung = before.workers[1]!.pid!;
    stop(hung);
    await untilSilent(2);
    // While it is silent (and not yet replaced: that comes at the bound), every admin request answers without it
    // and names it as missing, with its PID and why.
    const ready = await admin('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.text).toContain(`worker 2 (pid ${hung}): silent`);
    const metrics = await admin('/metrics');
    expect(metrics.status).toBe(200);
    expect(metricLine(metrics.text, 'keymux_worker_answered{worker="1"}')).toBe(1);
    expect(metricLine(metrics.text, 'keymux_worker_answered{worker="2"}')).toBe(0);
    expect(metricLine(metrics.text, 'keymux_ready')).toBe(0);
    for (const pathname of ['/shards', '/hotkeys', '/slowlog']) {
      const res = await admin(pathname);
      expect(res.status).toBe(200);
      const missing = (JSON.parse(res.text) as { missing_workers: Missing[] }).missing_workers;
      expect(missing).toHaveLength(1);
      expect(missing[0]).toMatchObject({ worker: 2, pid: hung });
      expect(missing[0]!.reason).toMatch(/^silent: no heartbeat answered for \d+ ms/);
    }

    const after = await until('a new worker 2', async () => {
      const r = await workers();
      const w = r.workers[1]!;
      return w.state === 'serving' && w.pid !== hung ? r : undefined;
    });
    stopped.delete(hung);
    const replacement = after.workers[1]!.pid!;
    expect(after.workers[0]!.pid).toBe(survivor);
    expect(after.restarts_by_reason).toEqual({ exited: 0, hung: 1, reload: 0 });
    expect(() => process.kill(hung, 0)).toThrow(); // killed (SIGKILL works on a stopped process) and reaped
    expect(output()).toContain('worker hung: no heartbeat answered within workers_heartbeat_timeout_ms');
    const scrape = (await admin('/metrics')).text;
    expect(metricLine(scrape, 'keymux_worker_restarts_total{reason="hung"}')).toBe(1);
    expect(metricLine(scrape, 'keymux_worker_restarts_total{reason="exited"}')).toBe(0);

    // New connections are all served, by the survivor and the replacement (none by the hung worker).
    const pids = new Set<number>();
    for (let n = 0; n < 8; n++) {
      const fresh = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
      try {
        expect(await fresh.get('k0')).toBe('v0');
        pids.add(await pidOf(fresh));
      } finally {
        fresh.disconnect();
      }
    }
    expect([...pids].sort()).toEqual([survivor, replacement].sort());
    // The hung worker's clients lost their connections (as with a crash); they reconnect and are served.
    for (let i = 0; i < CLIENTS; i++) expect(await clients[i]!.get(`k${i}`)).toBe(`v${i}`);
    await until('/readyz 200 with the new worker', async () =>
      (await admin('/readyz')).status === 200 ? true : undefined,
    );
    expect(metricLine((await admin('/metrics')).text, 'keymux_worker_answered{worker="2"}')).toBe(1);
  });
});
