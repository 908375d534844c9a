/**
 * Edges of the coordinated key migration with `workers: 2` (the real binary: a primary and two worker processes on
 * real redis-servers):
 * - migration.state_file that cannot be written (its directory does not exist): a reload that moves keys is
 *   refused before anything changes: POST /reload answers 400 with the error, SIGHUP logs it and the primary keeps
 *   running; clients are served by the running placement. Refused while a migration runs, that migration goes on
 *   in every worker and ends: the follower's requests for its keys in motion are answered.
 * - a scan-done report the primary gets while a chained reload is in flight: the leader finishes migration 1 while
 *   both workers wait for a sentinel to apply reload 2 (which the primary already numbered 2); the sentinel fails
 *   them, reload 2 is refused and the primary reinstates migration 1, which the leader has already finished: the
 *   primary ends it at once (state file removed, every worker told, keymux_migrations_active back to 0).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { runBinary, type RunningBinary } from '../support/keymux.js';
import { adminRequest, pollUntil, slotOwner, slotShards, type SlotLayout } from '../support/slot-layout.js';

const KEYS = 2_000;

let a: RedisProcess, b: RedisProcess, c: RedisProcess;
let dir: string;
let file: string;
let port: number;
let adminPort: number;
let keymux: RunningBinary | undefined;
const clients: Redis[] = [];

type Layout = SlotLayout;

/** a: 0-8191, b: 8192-16383. */
const START = (): Layout => [
  [a, ['0-8191']],
  [b, ['8192-16383']],
];
/** a's lower half goes to c. */
const TO_C = (): Layout => [
  [c, ['0-4095']],
  [a, ['4096-8191']],
  [b, ['8192-16383']],
];
/** Then a's upper half goes to b. */
const FURTHER = (): Layout => [
  [c, ['0-4095']],
  [b, ['4096-16383']],
];

function writeConfig(layout: Layout, stateFile: string | null, extra: Record<string, unknown> = {}): void {
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'slots',
      workers: 2,
      log: { level: 'info' },
      drain: { grace_s: 2 },
      // The leader's MIGRATEs block their source shard while the target is paused for writes: requests to that
      // shard wait for it rather than time out.
      backend: { timeout_ms: 20_000 },
      migration: { enabled: true, state_file: stateFile },
      shards: slotShards(layout),
      ...extra,
    }),
  );
}

const ownerOf = slotOwner;

const admin = (pathname: string, method = 'GET') => adminRequest(adminPort, pathname, method);

/** The sum over the merged /metrics of the samples of `name` (no labels). */
async function metric(name: string): Promise<number> {
  const text = (await admin('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no ${name} in /metrics`);
  return Number(line.split(' ').pop());
}

const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> =>
  pollUntil(what, probe, timeoutMs, () => keymux?.output().slice(-3000) ?? '');

const count = (text: string, pattern: RegExp): number => (text.match(new RegExp(pattern, 'g')) ?? []).length;

/** Resolves once keymux's output holds `times` matches of `pattern` (rejects if it exits or after timeoutMs). */
function outputHas(pattern: RegExp, times = 1, timeoutMs = 15_000): Promise<void> {
  const bin = keymux!;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (count(bin.output(), pattern) < times) return;
      stop();
      resolve();
    };
    const onExit = (code: number | null): void => {
      stop();
      reject(new Error(`keymux exited (${code}) waiting for ${String(pattern)}\n${bin.output().slice(-3000)}`));
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${String(pattern)} x${times}\n${bin.output().slice(-3000)}`));
    }, timeoutMs);
    // runBinary's own listeners (added first) have appended the chunk to output() when these run.
    const stop = (): void => {
      clearTimeout(timer);
      bin.child.stdout!.off('data', check);
      bin.child.stderr!.off('data', check);
      bin.child.off('exit', onExit);
    };
    bin.child.stdout!.on('data', check);
    bin.child.stderr!.on('data', check);
    bin.child.once('exit', onExit);
    check();
  });
}

/** Clients until at least `n` are on each worker: { leader, follower } (by INFO's process_id and /workers). */
async function clientsOnBoth(n: number): Promise<{ leader: Redis[]; follower: Redis[] }> {
  const report = JSON.parse((await admin('/workers')).text) as { workers: Array<{ id: number; pid: number }> };
  const leaderPid = report.workers.find((w) => w.id === 1)!.pid;
  const out = { leader: [] as Redis[], follower: [] as Redis[] };
  for (let i = 0; i < 8 * n && (out.leader.length < n || out.follower.length < n); i++) {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, commandTimeout: 20_000 });
    clients.push(client);
    const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))![1]);
    (pid === leaderPid ? out.leader : out.follower).push(client);
  }
  expect(Math.min(out.leader.length, out.follower.length)).toBeGreaterThanOrEqual(n);
  return out;
}

/** Writes KEYS keys through keymux; the model of their values. */
async function load(prefix: string): Promise<Map<string, string>> {
  const model = new Map<string, string>();
  const batch: string[][] = [];
  for (let i = 0; i < KEYS; i++) {
    model.set(`${prefix}:${i}`, `v:${i}`);
    batch.push(['SET', `${prefix}:${i}`, `v:${i}`]);
  }
  const replies = await redisCommands(port, batch, { timeoutMs: 30_000 });
  expect(replies.every((r) => r === 'OK')).toBe(true);
  return model;
}

/** Every key only on its owner in `layout`, with the model's value. */
async function verifyPlacement(layout: Layout, model: Map<string, string>): Promise<void> {
  const keys = [...model.keys()];
  const shards = [a, b, c];
  const replies = await Promise.all(shards.map((s) => redisCommands(s.port, [['MGET', ...keys]])));
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
}

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  [port, adminPort] = [await freePort(), await freePort()];
  dir = makeTempDir('keymux-workers-migration-edges-');
  file = path.join(dir, 'keymux.yaml');
});

afterEach(async (ctx) => {
  // A failure shows keymux's own log (which worker died or was replaced, which connection closed): CI keeps no more.
  if (ctx.task.result?.state === 'fail')
    console.log(`keymux output (last 6000 chars):\n${keymux?.output().slice(-6000)}`);
  for (const client of clients.splice(0)) client.disconnect();
  await redisCommand(c.port, 'CLIENT', 'UNPAUSE');
  await keymux?.kill();
  keymux = undefined;
  await Promise.all([a, b, c].map((s) => redisCommands(s.port, [['FLUSHALL']])));
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  if (dir !== undefined) removeTempDir(dir);
});

describe('migration.state_file that cannot be written (workers: 2)', () => {
  it('a reload that moves keys is refused (POST /reload, SIGHUP); the primary serves on the running placement', async () => {
    const missing = path.join(dir, 'no-such-dir', 'migration.json');
    // A start with it is refused, the path named (a config error like any other).
    writeConfig(START(), missing);
    await expect(runBinary(file, 'keymux workers serving')).rejects.toThrow(/cannot start[\s\S]*no-such-dir/);
    writeConfig(START(), path.join(dir, 'migration-ok.json'));
    keymux = await runBinary(file, 'keymux workers serving');
    const model = await load('sf');
    writeConfig(TO_C(), missing);
    const reload = await admin('/reload', 'POST');
    expect(reload.status, reload.text).toBe(400);
    const refused = JSON.parse(reload.text) as { ok: boolean; errors: string[]; version: number };
    expect(refused.ok).toBe(false);
    expect(refused.version).toBe(1);
    expect(refused.errors.join('\n')).toContain('migration.state_file');
    expect(refused.errors.join('\n')).toContain(missing);
    // The same reload through SIGHUP: logged and refused; the primary lives on.
    const rejected = count(keymux.output(), /config reload rejected/);
    keymux.child.kill('SIGHUP');
    await outputHas(/config reload rejected/, rejected + 1);
    expect(keymux.child.exitCode).toBe(null);
    const workers = JSON.parse((await admin('/workers')).text) as {
      workers: Array<{ state: string }>;
      config_version: number;
    };
    expect(workers.workers.map((w) => w.state)).toEqual(['serving', 'serving']);
    expect(workers.config_version).toBe(1);
    // Both workers serve every key where it is (nothing moved, nothing is held), and take writes.
    const { leader, follower } = await clientsOnBoth(2);
    const keys = [...model.keys()];
    for (const client of [...leader, ...follower]) expect(await client.mget(...keys)).toEqual([...model.values()]);
    for (const [i, client] of [...leader, ...follower].entries()) {
      const key = keys[i * 7]!;
      model.set(key, `w:${i}`);
      expect(await client.set(key, `w:${i}`)).toBe('OK');
    }
    await verifyPlacement(START(), model);
    expect(await metric('keymux_migrations_active')).toBe(0);
    expect(fs.existsSync(path.dirname(missing))).toBe(false);
    expect(keymux.output()).not.toContain('key migration started');
  });

  it('refused during a running migration: that migration goes on in every worker and ends', async () => {
    const missing = path.join(dir, 'no-such-dir', 'migration.json');
    writeConfig(START(), null);
    keymux = await runBinary(file, 'keymux workers serving');
    const model = await load('sr');
    // Connected (INFO tells which worker serves each) before a shard blocks in a MIGRATE: INFO asks every shard.
    const { follower } = await clientsOnBoth(2);
    // Writes to c wait: the leader's MIGRATEs into c block, so migration 1 is surely still running below.
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '30000', 'WRITE')).toBe('OK');
    writeConfig(TO_C(), null);
    const first = await admin('/reload', 'POST');
    expect(first.status, first.text).toBe(200);
    // A further move, with a state file that cannot be written: refused, migration 1 untouched.
    writeConfig(FURTHER(), missing);
    const second = await admin('/reload', 'POST');
    expect(second.status, second.text).toBe(400);
    expect(second.text).toContain(missing);
    const rejected = count(keymux.output(), /config reload rejected/);
    keymux.child.kill('SIGHUP');
    await outputHas(/config reload rejected/, rejected + 1);
    expect(keymux.child.exitCode).toBe(null);
    expect(await metric('keymux_migrations_active')).toBe(1);
    // The follower's clients read keys migration 1 moves (a -> c): they wait for the leader, then are answered.
    const moving = [...model.keys()].filter((k) => ownerOf(TO_C(), k) === c).slice(0, 50);
    expect(moving.length).toBe(50);
    const reads = follower.map((client) => client.mget(...moving));
    expect(await redisCommand(c.port, 'CLIENT', 'UNPAUSE')).toBe('OK');
    await outputHas(/key migration finished in every worker/);
    for (const got of await Promise.all(reads)) expect(got).toEqual(moving.map((k) => model.get(k)));
    await until('every worker to end migration 1', async () =>
      (await metric('keymux_migrations_active')) === 0 ? true : undefined,
    );
    await verifyPlacement(TO_C(), model);
    expect(keymux.output()).toMatch(/"migration":1,"seconds":[\d.]+,"msg":"key migration finished in every worker"/);
  });
});

describe('a scan-done report that comes while a chained reload is in flight (workers: 2)', () => {
  let sentinel: net.Server;
  const held: net.Socket[] = [];
  let arrived: () => void = () => undefined;
  let release = false;

  beforeAll(async () => {
    // A sentinel that answers nothing: a worker applying a reload that names a new sentinel_master waits for it
    // until the test closes the connection (then the reload is refused: no sentinel named a primary).
    sentinel = net.createServer((socket) => {
      socket.on('error', () => undefined);
      if (release) socket.destroy();
      else {
        held.push(socket);
        arrived();
      }
    });
    await new Promise<void>((r) => sentinel.listen(0, '127.0.0.1', r));
  });

  afterAll(async () => {
    for (const s of held) s.destroy();
    await new Promise((r) => sentinel.close(r));
  });

  it('the reinstated migration the leader already finished is ended at once', async () => {
    const stateFile = path.join(dir, 'migration.json');
    writeConfig(START(), stateFile);
    keymux = await runBinary(file, 'keymux workers serving');
    const model = await load('sd');
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '30000', 'WRITE')).toBe('OK');
    writeConfig(TO_C(), stateFile);
    const first = await admin('/reload', 'POST');
    expect(first.status, first.text).toBe(200);
    expect(fs.existsSync(stateFile)).toBe(true);
    // Migration 2 (b's upper half to a sentinel shard) is chained to 1: both workers wait for the sentinel.
    const { port: sentinelPort } = sentinel.address() as net.AddressInfo;
    const bothAsked = new Promise<void>((r) => (arrived = () => held.length >= 2 && r()));
    writeConfig(
      [
        [c, ['0-4095']],
        [a, ['4096-8191']],
        [b, ['8192-12287']],
        [{ master: 'm' }, ['12288-16383']],
      ],
      stateFile,
      { sentinel: { sentinels: [`127.0.0.1:${sentinelPort}`], timeout_ms: 30_000 } },
    );
    const second = admin('/reload', 'POST');
    await bothAsked;
    // Meanwhile the leader's scan of migration 1 ends (c takes writes again): it reports it to the primary,
    // whose current migration is 2 by now.
    const finished = count(keymux.output(), /"msg":"migration finished"/);
    expect(await redisCommand(c.port, 'CLIENT', 'UNPAUSE')).toBe('OK');
    await outputHas(/"msg":"migration finished"/, finished + 1);
    expect(keymux.output()).not.toContain('key migration finished in every worker');
    // The sentinel fails both workers: reload 2 is refused; migration 1 is the primary's again, and it is over.
    release = true;
    for (const s of held.splice(0)) s.destroy();
    const refused = await second;
    expect(refused.status, refused.text).toBe(400);
    expect(refused.text).toContain('sentinel');
    await outputHas(/"migration":1,"seconds":[\d.]+,"msg":"key migration finished in every worker"/);
    expect(fs.existsSync(stateFile)).toBe(false);
    await until('every worker to end migration 1', async () =>
      (await metric('keymux_migrations_active')) === 0 ? true : undefined,
    );
    const { leader, follower } = await clientsOnBoth(1);
    const keys = [...model.keys()];
    for (const client of [...leader, ...follower]) expect(await client.mget(...keys)).toEqual([...model.values()]);
    await verifyPlacement(TO_C(), model);
  });
});
