/**
 * Key migration with `workers: 2` (the real binary: a primary and two worker processes on real redis-servers),
 * coordinated by the primary: worker 1 scans and moves, worker 2 asks it to move the keys its clients touch.
 * - A swap of slot ranges between two shards (keys move both ways at once, from both workers' clients) under a
 *   pipelined read/write load on both workers: no client error, no stale read, and afterwards every key is on its
 *   new owner only, with its last value and its TTL; the state file is gone.
 * - The leader, killed while its MIGRATEs are blocked (the target shard paused for writes), is replaced and goes
 *   on; a reload during that migration chains a second one to it (some keys move a -> c -> b); the follower's
 *   clients, whose keys wait for the leader meanwhile, get every reply right, and every key ends where the last
 *   config puts it.
 * - A keymux started with an interrupted migration in the state file resumes it in every worker.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { runBinary, type RunningBinary } from '../support/keymux.js';
import { checkedWorkload } from '../support/model-workload.js';
import { adminRequest, pollUntil, slotOwner, slotShards, type SlotLayout } from '../support/slot-layout.js';
import { loadConfigFile } from '../../src/config/load.js';
import { routingOf, writeMigrationState } from '../../src/migration/state-file.js';

const KEYS = 30_000;

let a: RedisProcess, b: RedisProcess, c: RedisProcess;
let dir: string;
let file: string;
let stateFile: string;
let port: number;
let adminPort: number;
let keymux: RunningBinary | undefined;

type Layout = SlotLayout;

function writeConfig(layout: Layout, to = file): void {
  fs.writeFileSync(
    to,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'slots',
      workers: 2,
      log: { level: 'info' },
      drain: { grace_s: 2 },
      // The leader's MIGRATEs block their source shard while the target is paused below (3 s): requests to that
      // shard wait for it rather than time out.
      backend: { timeout_ms: 10_000 },
      migration: { enabled: true, state_file: stateFile },
      shards: slotShards(layout),
    }),
  );
}

const ownerOf = slotOwner;

const admin = (pathname: string, method = 'GET') => adminRequest(adminPort, pathname, method);

interface MigrationRow {
  id: number;
  state: string;
  keysMoved: number;
  startedAt: number;
  finishedAt: number;
}

async function migrations(): Promise<MigrationRow[]> {
  return (JSON.parse((await admin('/shards')).text) as { migrations: MigrationRow[] }).migrations;
}

async function workerPids(): Promise<number[]> {
  const report = JSON.parse((await admin('/workers')).text) as { workers: Array<{ pid: number; state: string }> };
  return report.workers.map((w) => (w.state === 'serving' ? w.pid : 0));
}

// A bound that only catches a hang: 30,000 keys move in about 10 s on a quiet machine, 40 s at load average 13.
const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> =>
  pollUntil(what, probe, timeoutMs, () => keymux?.output().slice(-3000) ?? '');

/** The newest migration's row once it is done. */
function migrationDone(): Promise<MigrationRow> {
  return until('the migration to finish', async () => {
    const rows = await migrations();
    const last = rows[rows.length - 1];
    return last !== undefined && last.state === 'done' ? last : undefined;
  });
}

/** Loads the keys through keymux (every 10th with a TTL); the model of their values. */
async function load(): Promise<Map<string, string>> {
  const model = new Map<string, string>();
  const batch: string[][] = [];
  for (let i = 0; i < KEYS; i++) {
    const key = `wk:${i}`;
    model.set(key, `v0:${i}`);
    batch.push(i % 10 === 0 ? ['SET', key, `v0:${i}`, 'EX', '100000'] : ['SET', key, `v0:${i}`]);
  }
  const replies = await redisCommands(port, batch, { timeoutMs: 60_000 });
  expect(replies.every((r) => r === 'OK')).toBe(true);
  return model;
}

/** Every key only on its owner in `layout`, with the model's value; TTLs kept. */
async function verifyPlacement(layout: Layout, model: Map<string, string>): Promise<void> {
  const keys = [...model.keys()];
  const shards = [a, b, c];
  const replies = await Promise.all(
    shards.map((s) => redisCommands(s.port, [['MGET', ...keys]], { timeoutMs: 60_000 })),
  );
  let misplaced = 0;
  let wrongValue = 0;
  keys.forEach((key, i) => {
    const owner = ownerOf(layout, key);
    shards.forEach((s, n) => {
      const v = (replies[n]![0] as Array<string | null>)[i];
      if (s === owner) {
        if (v !== model.get(key)) wrongValue++;
      } else if (v !== null) misplaced++;
    });
  });
  expect({ misplaced, wrongValue }).toEqual({ misplaced: 0, wrongValue: 0 });
  const ttlKeys = keys.filter((_, i) => i % 10 === 0).slice(0, 300);
  const ttls = await Promise.all(
    ttlKeys.map(async (key) => (await redisCommand(ownerOf(layout, key).port, 'PTTL', key)) as number),
  );
  expect(ttls.filter((t) => t <= 0 || t > 100_000_000)).toEqual([]);
}

/**
 * At least `n` ioredis clients, and the PID of the worker serving each: more until both workers serve one (node:cluster
 * hands a connection to a worker that has taken the one before, so on a loaded machine a slow worker can miss a few).
 */
async function connect(n: number): Promise<Array<{ client: Redis; pid: number }>> {
  const out: Array<{ client: Redis; pid: number }> = [];
  while (out.length < n || (new Set(out.map((x) => x.pid)).size < 2 && out.length < 8 * n)) {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, commandTimeout: 30_000 });
    client.on('error', () => undefined); // the leader's clients lose their connection when it is killed
    const info = await client.info('server');
    out.push({ client, pid: Number(/process_id:(\d+)/.exec(info)![1]) });
  }
  return out;
}

const START: Layout = [];
const SWAPPED: Layout = [];
const TO_C: Layout = [];
const CHAIN: Layout = [];

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  [port, adminPort] = [await freePort(), await freePort()];
  dir = makeTempDir('keymux-workers-migration-');
  file = path.join(dir, 'keymux.yaml');
  stateFile = path.join(dir, 'migration.json');
  START.push([a, ['0-8191']], [b, ['8192-16383']]);
  // A swap: half of a's slots go to b and half of b's to a, so MIGRATEs run both ways.
  SWAPPED.push([a, ['0-4095', '8192-12287']], [b, ['4096-8191', '12288-16383']]);
  TO_C.push([c, ['0-4095']], [a, ['8192-12287']], [b, ['4096-8191', '12288-16383']]);
  CHAIN.push([b, ['0-8191']], [a, ['8192-12287']], [c, ['12288-16383']]);
  writeConfig(START);
  keymux = await runBinary(file, 'keymux workers serving');
});

afterAll(async () => {
  await keymux?.kill();
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  if (dir !== undefined) removeTempDir(dir);
});

afterEach((ctx) => {
  // A failure shows keymux's own log (which move failed and why, which worker was replaced): CI keeps no more.
  // Every warning and error of the run first (a MIGRATE that failed early is far more than 6000 chars back).
  if (ctx.task.result?.state !== 'fail') return;
  const out = keymux?.output() ?? '';
  const warnings = out.split('\n').filter((line) => /^\{"level":(4|5|6)0,/.test(line));
  console.log(`keymux warnings and errors:\n${warnings.join('\n')}`);
  console.log(`keymux output (last 6000 chars):\n${out.slice(-6000)}`);
});

describe('key migration with workers: 2', () => {
  let model: Map<string, string>;

  it('a swap of slots between two shards under load on both workers: every key ends on its owner only', async () => {
    model = await load();
    const conns = await connect(8);
    expect(new Set(conns.map((x) => x.pid)).size).toBe(2);
    let done = false;
    const running = checkedWorkload(
      conns.map((x) => x.client),
      model,
      () => done,
    );
    writeConfig(SWAPPED);
    const reload = await admin('/reload', 'POST');
    expect(reload.status, reload.text).toBe(200);
    const row = await migrationDone();
    done = true;
    const { problems, ops } = await running;
    for (const x of conns) x.client.disconnect();
    expect(problems).toEqual([]);
    expect(ops).toBeGreaterThan(1000);
    expect(row.keysMoved).toBeGreaterThan(KEYS / 4);
    await verifyPlacement(SWAPPED, model);
    const out = keymux!.output();
    expect(out).toContain('key migration started in every worker');
    expect(out).toContain('key migration finished in every worker');
    expect(out).toMatch(/"role":"leader","msg":"migration started"/);
    expect(out).toMatch(/"role":"follower","msg":"migration started"/);
    expect(fs.existsSync(stateFile)).toBe(false);
    expect(out).not.toContain('MIGRATE failed');
    // `keymux plan` (a dry run at the primary) estimates at the rate worker 1 measured, not the default.
    writeConfig(TO_C, path.join(dir, 'plan.yaml'));
    fs.copyFileSync(path.join(dir, 'plan.yaml'), file);
    const dry = JSON.parse((await admin('/reload?dry_run=1&sample=200&time_ms=2000', 'POST')).text) as {
      estimate: { rate: { measured: boolean; keysPerSecond: number } };
    };
    writeConfig(SWAPPED);
    expect(dry.estimate.rate.measured).toBe(true);
    expect(dry.estimate.rate.keysPerSecond).toBe(Math.round(row.keysMoved / ((row.finishedAt - row.startedAt) / 1000)));
  }, 150_000);

  it('a killed leader is replaced and goes on; a reload during the migration chains a second one to it', async () => {
    const [leaderPid, followerPid] = await workerPids();
    const conns = await connect(8);
    const followers = conns.filter((x) => x.pid === followerPid);
    for (const x of conns) if (x.pid !== followerPid) x.client.disconnect();
    expect(followers.length).toBeGreaterThan(0);
    // Writes to c wait for 4 s: the MIGRATEs into c block, so the first migration is surely still running below.
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '4000', 'WRITE')).toBe('OK');
    writeConfig(TO_C);
    expect((await admin('/reload', 'POST')).status).toBe(200);
    expect(fs.existsSync(stateFile)).toBe(true);
    let done = false;
    const running = checkedWorkload(
      followers.map((x) => x.client),
      model,
      () => done,
    );
    expect((await migrations()).at(-1)!.state).toBe('running');
    process.kill(leaderPid!, 'SIGKILL');
    const pids = await until('a new leader', async () => {
      const now = await workerPids();
      return now[0] !== 0 && now[0] !== leaderPid ? now : undefined;
    });
    expect(pids[1]).toBe(followerPid);
    // While the first one still runs (c is still paused), another move: keys of slots 0-4095 go a -> c -> b.
    const dry = JSON.parse((await admin('/reload?dry_run=1&sample=0', 'POST')).text) as { plan: { refused: unknown } };
    expect(dry.plan.refused).toBe(null);
    writeConfig(CHAIN);
    const second = await admin('/reload', 'POST');
    expect(second.status, second.text).toBe(200);
    await migrationDone();
    done = true;
    const { problems, ops } = await running;
    for (const x of followers) x.client.disconnect();
    expect(problems).toEqual([]);
    expect(ops).toBeGreaterThan(100);
    await verifyPlacement(CHAIN, model);
    expect(fs.existsSync(stateFile)).toBe(false);
    const out = keymux!.output();
    expect(out).toContain('joining a running migration');
    expect(out).toMatch(/"chainedTo":\d+/);
  }, 150_000);

  it('resumes an interrupted migration from the state file in every worker at start', async () => {
    keymux!.child.kill('SIGTERM');
    expect(await keymux!.exited).toBe(0);
    // As if keymux had stopped right after a reload from CHAIN to SWAPPED: the keys are where CHAIN put them.
    const before = path.join(dir, 'before.yaml');
    writeConfig(CHAIN, before);
    writeMigrationState(stateFile, Date.now(), [routingOf(loadConfigFile(before))]);
    writeConfig(SWAPPED);
    keymux = await runBinary(file, 'keymux workers serving');
    const conns = await connect(4);
    // Read through both workers while it resumes: every key where it is.
    const sample = [...model.keys()].filter((_, i) => i % 97 === 0);
    for (const { client } of conns) expect(await client.mget(...sample)).toEqual(sample.map((k) => model.get(k)));
    await migrationDone();
    for (const x of conns) x.client.disconnect();
    await verifyPlacement(SWAPPED, model);
    expect(fs.existsSync(stateFile)).toBe(false);
    expect(keymux.output()).toContain('resuming an interrupted key migration in every worker');
  }, 150_000);
});
