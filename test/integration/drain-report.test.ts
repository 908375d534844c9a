/**
 * What a drain tells the operator, from the real binary (dist/, JSON logs): a drain whose grace period runs out
 * while a client still waits for a reply logs, at warn level, how many clients it cut and how many requests they
 * had in flight; with `workers: 2`, `GET /workers` says each worker is `draining` (or `stopped` once it exited)
 * while the primary drains, not `serving`, and `keymux_workers{state}` says the same. The shard is a scripted
 * backend that answers GET only when the test says so, or a real redis-server stopped with SIGSTOP (continued with
 * SIGCONT), so a request stays in flight for as long as the test needs.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { FakeBackend, bulk, waitFor, type FakeConnection } from '../support/fake-backend.js';
import { RawClient, runBinary } from '../support/keymux.js';
import { getJson, scrape, valueOf } from '../support/metrics.js';
import { startRedis } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A shard that answers +OK to everything but GET, which it answers only when `release` is called. */
async function holdingShard(): Promise<{ fake: FakeBackend; held: () => boolean; release(): void }> {
  let pending: Array<{ conn: FakeConnection; key: string }> = [];
  const fake = await FakeBackend.start((cmd, conn) => {
    if (cmd[0].toUpperCase() !== 'GET') return '+OK\r\n';
    pending.push({ conn, key: cmd[1] });
    return null;
  });
  cleanups.push(() => fake.close());
  return {
    fake,
    held: () => pending.length > 0,
    release() {
      for (const p of pending) p.conn.write(bulk(`value-of-${p.key}`));
      pending = [];
    },
  };
}

/** Starts the binary on a ring of the one shard; returns it with its ports. */
async function start(shard: { address: string }, extra: Record<string, unknown>, ready: string) {
  const dir = makeTempDir('keymux-drain-report-');
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({
      mode: 'ring',
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      log: { level: 'info' },
      shards: [{ address: shard.address }],
      backend: { timeout_ms: 0 }, // the held GET never times out: only the drain ends it
      ...extra,
    }),
  );
  const binary = await runBinary(file, ready);
  cleanups.push(async () => {
    await binary.kill();
    removeTempDir(dir);
  });
  return { binary, port, adminPort };
}

interface LogLine {
  level: number;
  msg: string;
  graceMs?: number;
  clientsCut?: number;
  requestsInFlight?: number;
}

const logLines = (output: string): LogLine[] =>
  output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

describe('a drain whose grace runs out', () => {
  it('logs at warn level how many clients it cut and how many requests they had in flight', async () => {
    const shard = await holdingShard();
    const { binary, port } = await start(shard.fake, { drain: { grace_s: 1 } }, 'keymux listening');
    const waiting = await RawClient.connect(port);
    cleanups.push(() => waiting.close());
    const idle = await RawClient.connect(port);
    cleanups.push(() => idle.close());
    expect(await idle.exchange('*1\r\n$4\r\nPING\r\n', 1)).toEqual(['PONG']);
    waiting.write('*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n*2\r\n$3\r\nGET\r\n$4\r\nkey2\r\n');
    await waitFor(
      () => shard.fake.commands.filter((c) => c[0].toUpperCase() === 'GET').length === 2,
      'both GETs at the shard',
    );

    binary.child.kill('SIGTERM');
    expect(await binary.exited).toBe(0);
    const lines = logLines(binary.output());
    const cut = lines.find((l) => l.msg.startsWith('drain grace period ended'));
    expect(cut, binary.output()).toMatchObject({ level: 40, graceMs: 1000, clientsCut: 1, requestsInFlight: 2 });
    // The idle client was closed at the start of the drain: not among those cut.
    expect(lines.map((l) => l.msg)).toContain('stopped');
  });

  it('logs nothing of the kind when every client finished within the grace', async () => {
    const shard = await holdingShard();
    const { binary, port } = await start(shard.fake, { drain: { grace_s: 60 } }, 'keymux listening');
    const waiting = await RawClient.connect(port);
    cleanups.push(() => waiting.close());
    waiting.write('*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n');
    await waitFor(shard.held, 'the GET at the shard');
    binary.child.kill('SIGTERM');
    await waitFor(() => binary.output().includes('"draining"'), 'the drain to start');
    shard.release();
    expect(await waiting.untilClosed()).toBe('$13\r\nvalue-of-key1\r\n');
    expect(await binary.exited).toBe(0);
    expect(logLines(binary.output()).some((l) => l.msg.startsWith('drain grace period ended'))).toBe(false);
  });
});

describe('GET /workers during a drain (workers: 2)', () => {
  it('says draining for a worker still finishing its clients, stopped for one that exited; never serving', async () => {
    const shard = await holdingShard();
    const { binary, port, adminPort } = await start(
      shard.fake,
      { workers: 2, drain: { grace_s: 60 } },
      'keymux workers serving',
    );
    type Report = { workers: Array<{ id: number; state: string }> };
    const states = async (): Promise<string[]> =>
      (await getJson<Report>(adminPort, '/workers')).workers.map((w) => w.state);
    expect(await states()).toEqual(['serving', 'serving']);
    const waiting = await RawClient.connect(port);
    cleanups.push(() => waiting.close());
    waiting.write('*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n');
    await waitFor(shard.held, 'the GET at the shard');

    binary.child.kill('SIGTERM');
    // The worker holding the client drains until its GET is answered (the grace is long); the other one exits.
    await waitFor(async () => (await states()).includes('stopped'), 'the idle worker stopped', 10_000);
    expect((await states()).sort()).toEqual(['draining', 'stopped']);
    shard.release();
    expect(await waiting.untilClosed()).toBe('$13\r\nvalue-of-key1\r\n');
    expect(await binary.exited).toBe(0);
  });

  it('keymux_workers{state} counts them draining and stopped as /workers says (a real shard holding a GET)', async () => {
    const shard = await startRedis();
    let stopped = false;
    cleanups.push(async () => {
      if (stopped) process.kill(shard.pid, 'SIGCONT');
      await shard.stop();
    });
    const { binary, port, adminPort } = await start(
      shard,
      { workers: 2, drain: { grace_s: 60 } },
      'keymux workers serving',
    );
    type Report = { workers: Array<{ id: number; state: string }> };
    const states = async (): Promise<string[]> =>
      (await getJson<Report>(adminPort, '/workers')).workers.map((w) => w.state).sort();
    const gauge = async (): Promise<Record<string, number>> => {
      const samples = await scrape(adminPort);
      const out: Record<string, number> = {};
      for (const state of ['serving', 'starting', 'restarting', 'draining', 'stopped'])
        out[state] = valueOf(samples, 'keymux_workers', { state });
      return out;
    };
    expect(await gauge()).toEqual({ serving: 2, starting: 0, restarting: 0, draining: 0, stopped: 0 });
    const waiting = await RawClient.connect(port);
    cleanups.push(() => waiting.close());
    // The shard is stopped: the GET is written to it and stays unanswered (in flight) until SIGCONT.
    process.kill(shard.pid, 'SIGSTOP');
    stopped = true;
    waiting.write('*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n');
    type Shards = { shards: Array<{ inflight: number }> };
    await waitFor(
      async () => (await getJson<Shards>(adminPort, '/shards')).shards[0]!.inflight === 1,
      'the GET in flight to the stopped shard',
    );

    binary.child.kill('SIGTERM');
    // The worker holding the client drains until its GET is answered (the grace is long); the other one exits.
    await waitFor(async () => (await states()).includes('stopped'), 'the idle worker stopped', 10_000);
    expect(await states()).toEqual(['draining', 'stopped']);
    expect(await gauge()).toEqual({ serving: 0, starting: 0, restarting: 0, draining: 1, stopped: 1 });
    process.kill(shard.pid, 'SIGCONT');
    stopped = false;
    expect(await waiting.untilClosed()).toBe('$-1\r\n');
    expect(await binary.exited).toBe(0);
  });
});
