/**
 * `workers: 2`: the real binary runs a primary and two worker processes behind one client port, on real
 * redis-servers. Clients (ioredis) land on both workers (INFO's process_id tells which) and get correct
 * GET/SET/MGET replies; /metrics counts the commands of both workers, and gives prom-client's per-process
 * process_max_fds as one process's limit, not their sum; a shard-list reload (POST /reload, then
 * SIGHUP) is applied by both workers, so keys route to the new shard from every connection; a reload of the
 * unchanged file is answered "unchanged" and reaches no worker; with migration on, a
 * reload that moves a shard's slots moves its keys (coordinated across both workers), and a change of `workers`
 * is refused; /hotkeys merges counts before ranking; a worker killed by its PID (learned from /workers) is replaced and new
 * clients are served; SIGTERM drains every worker and the process exits 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { runBinary, type RunningBinary } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';

const CLIENTS = 12;

let dir: string;
let file: string;
let a: RedisProcess, b: RedisProcess, c: RedisProcess;
let port: number;
let adminPort: number;
let binary: RunningBinary;
let keymux: RunningBinary['child'];
let exited: Promise<number | null>;
const output = (): string => binary?.output() ?? '';
const clients: Redis[] = [];

interface WorkersReport {
  workers: Array<{ id: number; pid: number | null; state: string }>;
  restarts: number;
}

function writeConfig(firstShard: RedisProcess, migration = false, workers = 2): void {
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'slots',
      workers,
      log: { level: 'info' },
      drain: { grace_s: 5 },
      // The leader's MIGRATEs block their source shard while they run: on a machine starved of CPU (a CI run beside
      // two busy processes) a request to it waited over the default 2 s and failed; it should wait.
      backend: { timeout_ms: 10_000 },
      migration: { enabled: migration },
      metrics: { hot_keys: { sample_rate: 1 } },
      shards: [
        { name: 'a', address: firstShard.address, slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ],
    }),
  );
}

async function admin(pathname: string, method = 'GET'): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}${pathname}`, { method });
  return { status: res.status, text: await res.text() };
}

async function workers(): Promise<WorkersReport> {
  return JSON.parse((await admin('/workers')).text) as WorkersReport;
}

async function pidOf(client: Redis): Promise<number> {
  const info = await client.info('server');
  return Number(/process_id:(\d+)/.exec(info)![1]);
}

/** The value of a metric line (labels as written), summed over its series when `labels` is a prefix. */
async function metric(name: string, labels = ''): Promise<number> {
  const text = (await admin('/metrics')).text;
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}${labels}`)) sum += Number(line.split(' ').pop());
  return sum;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50)); // poll-until-condition: no event tells the test from outside
  }
}

/** A key whose slot is in 0..8191 (shard a's range), distinct per `i`. */
function lowSlotKey(i: number): string {
  for (let n = 0; ; n++) {
    const key = `low:${i}:${n}`;
    if (keySlot(Buffer.from(key)) < 8192) return key;
  }
}

/** Clients grouped by the worker serving them. */
async function byWorker(): Promise<Map<number, Redis[]>> {
  const out = new Map<number, Redis[]>();
  for (const client of clients) {
    const pid = await pidOf(client);
    out.set(pid, [...(out.get(pid) ?? []), client]);
  }
  return out;
}

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  [port, adminPort] = [await freePort(), await freePort()];
  dir = makeTempDir('keymux-workers-');
  file = path.join(dir, 'keymux.yaml');
  writeConfig(a);
  binary = await runBinary(file, 'keymux workers serving');
  keymux = binary.child;
  exited = binary.exited;
  for (let i = 0; i < CLIENTS; i++) {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    client.on('error', () => undefined); // reconnecting after a worker or keymux went away is expected here
    clients.push(client);
  }
});

afterAll(async () => {
  for (const client of clients) client.disconnect();
  await binary?.kill();
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  if (dir !== undefined) removeTempDir(dir);
});

describe('workers: 2', () => {
  it('serves clients from both workers, with correct GET/SET/MGET', async () => {
    const report = await workers();
    const pids = report.workers.map((w) => w.pid);
    expect(report.workers.map((w) => w.state)).toEqual(['serving', 'serving']);
    expect(new Set(pids).size).toBe(2);
    const served = await byWorker();
    expect([...served.keys()].sort()).toEqual([...pids].sort());
    await Promise.all(
      clients.map(async (client, i) => {
        const keys = Array.from({ length: 10 }, (_, k) => `user:${i}:${k}`);
        for (const [k, key] of keys.entries()) expect(await client.set(key, `v${i}-${k}`)).toBe('OK');
        expect(await client.get(keys[3]!)).toBe(`v${i}-3`);
        expect(await client.mget(...keys, 'missing')).toEqual([...keys.map((_, k) => `v${i}-${k}`), null]);
      }),
    );
    // Written through one worker, read through the other: one keyspace.
    const [first, second] = [...served.values()];
    await first![0]!.set('shared', 'from-one');
    expect(await second![0]!.get('shared')).toBe('from-one');
    expect((await admin('/readyz')).status).toBe(200);
  });

  it('gives each client its own CLIENT ID across workers; CLIENT UNBLOCK reaches only that client', async () => {
    const ids = (await Promise.all(clients.map((c) => c.client('ID')))) as number[];
    expect(new Set(ids).size).toBe(clients.length); // each worker counting from 1 gave equal ids
    const extra: Redis[] = [];
    try {
      // Two clients on each worker (connections are handed out round-robin, not strictly alternately).
      const byPid = new Map<number, Redis[]>();
      while (extra.length < 30 && (byPid.size < 2 || [...byPid.values()].some((g) => g.length < 2))) {
        const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0 });
        extra.push(c);
        const pid = await pidOf(c);
        byPid.set(pid, [...(byPid.get(pid) ?? []), c]);
      }
      const [onA, onB] = [...byPid.values()];
      expect(onA!.length).toBeGreaterThanOrEqual(2);
      expect(onB!.length).toBeGreaterThanOrEqual(2);
      const [x, y, z, w] = [onB![0]!, onA![0]!, onA![1]!, onB![1]!];
      const [idX, idY] = (await Promise.all([x.client('ID'), y.client('ID')])) as number[];
      expect(idX).not.toBe(idY);
      const poppedX = x.blpop('ub:x', 0);
      const poppedY = y.blpop('ub:y', 0);
      const blockedOnShards = async (): Promise<number> => {
        let n = 0;
        for (const shard of [a, b]) {
          const info = String(await redisCommand(shard.port, 'INFO', 'clients'));
          n += Number(/blocked_clients:(\d+)/.exec(info)![1]);
        }
        return n;
      };
      await until('both blocked', async () => ((await blockedOnShards()) >= 2 ? true : undefined));
      // z is on worker A: X (worker B) is no client of its worker; Y must stay blocked.
      expect(await z.client('UNBLOCK', String(idX))).toBe(0);
      expect(await z.client('UNBLOCK', String(idY))).toBe(1);
      expect(await poppedY).toBeNull();
      expect(await w.client('UNBLOCK', String(idX))).toBe(1);
      expect(await poppedX).toBeNull();
    } finally {
      for (const c of extra) c.disconnect();
    }
  });

  it('/metrics sums the commands of both workers', async () => {
    const before = await metric('keymux_commands_total', '{command="get"}');
    const served = await byWorker();
    let sent = 0;
    for (const [, group] of served) {
      for (let n = 0; n < 25; n++) await group[0]!.get(`count:${n}`);
      sent += 25;
    }
    expect(served.size).toBe(2);
    expect((await metric('keymux_commands_total', '{command="get"}')) - before).toBe(sent);
    expect(await metric('keymux_workers', '{state="serving"}')).toBe(2);
    expect(await metric('keymux_ready')).toBe(1);
  });

  it("/metrics gives process_max_fds as each process's own limit (not summed) and the primary's start time", async () => {
    // Each process's soft limit of open files, as the kernel has it (node raises its own at start).
    const maxFds = (pid: number): number =>
      Number(/^Max open files\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))![1]);
    const pids = [keymux.pid!, ...(await workers()).workers.map((w) => w.pid!)];
    expect(pids).toHaveLength(3);
    expect(await metric('process_max_fds')).toBe(Math.min(...pids.map(maxFds)));
    // prom-client omits it from a merge; the primary's start is the merged counters' start.
    expect(await metric('process_start_time_seconds')).toBeGreaterThan(0);
  });

  it('merges /hotkeys (counts summed across workers, re-ranked) and answers one /shards', async () => {
    const [[, one], [, two]] = [...(await byWorker())];
    for (let n = 0; n < 40; n++) await one![0]!.get('hot:one');
    for (let n = 0; n < 60; n++) await two![0]!.get('hot:one');
    for (let n = 0; n < 70; n++) await two![0]!.get('hot:two');
    const hot = JSON.parse((await admin('/hotkeys')).text) as {
      workers: number;
      keys: Array<{ rank: number; key: string; requests: number }>;
    };
    expect(hot.workers).toBe(2);
    // hot:one is 40 + 60 = 100 over two workers, above hot:two's 70 from one worker: merged before ranking. (Without
    // the admin token, keys are shown hashed: the first 16 hex digits of their SHA-256.)
    const hashed = (key: string): string => crypto.createHash('sha256').update(key).digest('hex').slice(0, 16);
    expect(hot.keys.slice(0, 2)).toMatchObject([
      { rank: 1, key: hashed('hot:one'), requests: 100 },
      { rank: 2, key: hashed('hot:two'), requests: 70 },
    ]);
    const shards = JSON.parse((await admin('/shards')).text) as {
      shards: Array<{ name: string; state: string; connections: Array<{ worker: number }> }>;
      workers: WorkersReport;
    };
    expect(shards.shards.map((s) => s.name)).toEqual(['a', 'b']);
    for (const shard of shards.shards) {
      expect(shard.state).toBe('ready');
      expect(new Set(shard.connections.map((c) => c.worker))).toEqual(new Set([1, 2]));
    }
    expect(shards.workers.workers).toHaveLength(2);
  });

  it('applies a shard-list reload in both workers (POST /reload, then SIGHUP)', async () => {
    writeConfig(c);
    const reload = await admin('/reload', 'POST');
    expect(reload.status, reload.text).toBe(200);
    // Every connection, on either worker, routes shard a's slots to c now.
    await Promise.all(clients.map((client, i) => client.set(lowSlotKey(i), `to-c-${i}`)));
    for (let i = 0; i < CLIENTS; i++) {
      expect(await redisCommand(c.port, 'GET', lowSlotKey(i))).toBe(`to-c-${i}`);
      expect(await redisCommand(a.port, 'GET', lowSlotKey(i))).toBeNull();
    }
    const version = JSON.parse((await admin('/config')).text).version as number;
    writeConfig(a);
    keymux.kill('SIGHUP');
    await until('the SIGHUP reload', async () =>
      JSON.parse((await admin('/config')).text).version > version ? true : undefined,
    );
    await Promise.all(clients.map((client, i) => client.set(lowSlotKey(i), `to-a-${i}`)));
    for (let i = 0; i < CLIENTS; i++) expect(await redisCommand(a.port, 'GET', lowSlotKey(i))).toBe(`to-a-${i}`);
  });

  it('answers a reload of the unchanged file (POST /reload, SIGHUP) as unchanged; no worker applies it', async () => {
    const shards = async (): Promise<{ version: number; worker_versions: Record<string, number> }> =>
      JSON.parse((await admin('/shards')).text) as { version: number; worker_versions: Record<string, number> };
    const before = await shards();
    const unchanged = await metric('keymux_config_reloads_total', '{result="unchanged"}');
    const applied = await metric('keymux_config_reloads_total', '{result="ok"}');
    const reload = await admin('/reload', 'POST');
    expect(reload.status, reload.text).toBe(200);
    expect(JSON.parse(reload.text)).toEqual({ ok: true, unchanged: true, errors: [], version: before.version });
    keymux.kill('SIGHUP');
    await until('the SIGHUP reload', async () =>
      (await metric('keymux_config_reloads_total', '{result="unchanged"}')) === unchanged + 2 ? true : undefined,
    );
    expect(await metric('keymux_config_reloads_total', '{result="ok"}')).toBe(applied);
    expect(await metric('keymux_config_version')).toBe(before.version);
    // Each worker's own topology version: a reload sent to a worker would have raised it.
    expect(await shards()).toMatchObject({ version: before.version, worker_versions: before.worker_versions });
    expect(output()).toContain('config unchanged: nothing to apply');
  });

  it('moves keys with a migration coordinated across both workers; refuses a change of workers', async () => {
    await Promise.all(clients.map((client, i) => client.set(lowSlotKey(i), `moving-${i}`)));
    writeConfig(c, true);
    // A dry run (what `keymux plan --against` asks) sees nothing to refuse: the workers migrate together.
    const dry = JSON.parse((await admin('/reload?dry_run=1&sample=0', 'POST')).text) as { plan: { refused: unknown } };
    expect(dry.plan.refused).toBe(null);
    const reload = await admin('/reload', 'POST');
    expect(reload.status, reload.text).toBe(200);
    // Right after the reload, through either worker: each key is read where it is, moved or not yet.
    await Promise.all(clients.map(async (client, i) => expect(await client.get(lowSlotKey(i))).toBe(`moving-${i}`)));
    await until('the migration to finish', async () =>
      (await metric('keymux_migrations_active')) === 0 ? true : undefined,
    );
    for (let i = 0; i < CLIENTS; i++) {
      expect(await redisCommand(c.port, 'GET', lowSlotKey(i))).toBe(`moving-${i}`);
      expect(await redisCommand(a.port, 'GET', lowSlotKey(i))).toBeNull();
    }
    expect(output()).toContain('key migration finished in every worker');
    writeConfig(c, true, 3);
    const resize = await admin('/reload', 'POST');
    expect(resize.status).toBe(400);
    expect(resize.text).toContain('workers (the number of worker processes) cannot change without a restart');
    expect((await workers()).workers).toHaveLength(2);
    writeConfig(c);
  });

  it('replaces a killed worker; reconnecting clients are served', async () => {
    const before = await workers();
    const victim = before.workers[0]!.pid!;
    const survivor = before.workers[1]!.pid!;
    // Counters summed over the workers before the kill (the scrape also records each worker's last answer).
    const commandsBefore = await metric('keymux_commands_total');
    const versionBefore = await metric('keymux_config_version');
    const shardCommands = async (): Promise<number> => {
      const report = JSON.parse((await admin('/shards')).text) as { shards: Array<{ commands: number }> };
      return report.shards.reduce((n, s) => n + s.commands, 0);
    };
    const shardCommandsBefore = await shardCommands();
    expect(commandsBefore).toBeGreaterThan(0);
    process.kill(victim, 'SIGKILL');
    const after = await until('a replacement worker', async () => {
      const r = await workers();
      const w = r.workers[0]!;
      return w.state === 'serving' && w.pid !== victim ? r : undefined;
    });
    expect(after.restarts).toBe(1);
    expect(after.workers[1]!.pid).toBe(survivor);
    expect(await metric('keymux_worker_restarts_total')).toBe(1);
    // The dead worker's counts stay in the sum (its replacement counts from 0): counters never go backwards; the
    // config version is the process's, not the new worker's 1.
    expect(await metric('keymux_commands_total')).toBeGreaterThanOrEqual(commandsBefore);
    expect(await metric('keymux_config_version')).toBe(versionBefore);
    expect(await shardCommands()).toBeGreaterThanOrEqual(shardCommandsBefore);
    const replacement = after.workers[0]!.pid!;
    // Clients of the dead worker reconnect (ioredis does) and are served; new connections reach the new worker.
    await Promise.all(clients.map(async (client, i) => expect(await client.get(`user:${i}:3`)).toBe(`v${i}-3`)));
    const pids = new Set<number>();
    for (let n = 0; n < 8 && !pids.has(replacement); n++) {
      const fresh = new Redis({ port, host: '127.0.0.1' });
      pids.add(await pidOf(fresh));
      expect(await fresh.get('shared')).toBe('from-one');
      fresh.disconnect();
    }
    expect(pids.has(replacement)).toBe(true);
    expect(pids.has(victim)).toBe(false);
  });

  it('drains every worker on SIGTERM and exits 0', async () => {
    const pids = (await workers()).workers.map((w) => w.pid!);
    keymux.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(output()).toContain('draining every worker');
  });
});

describe('workers: 2, ring mode: a reload to a ring two shards hash onto as one', () => {
  it('is refused by the primary; every worker and every client connection stays', async () => {
    // An unnamed shard on port 11211 hashes as its host alone, as does the shard named after that host: the
    // workers could not build the ring (they threw, and the primary killed every one of them).
    const [ringPort, ringAdmin] = [await freePort(), await freePort()];
    const ringFile = path.join(dir, 'ring.yaml');
    const ringConfig = (extra: object[]): string =>
      stringify({
        listen: `127.0.0.1:${ringPort}`,
        admin: `127.0.0.1:${ringAdmin}`,
        mode: 'ring',
        workers: 2,
        log: { level: 'info' },
        shards: [{ address: a.address }, { address: b.address }, ...extra],
      });
    fs.writeFileSync(ringFile, ringConfig([]));
    const ring = await runBinary(ringFile, 'keymux workers serving');
    const ask = async (p: string, init?: RequestInit): Promise<{ status: number; text: string }> => {
      const res = await fetch(`http://127.0.0.1:${ringAdmin}${p}`, init);
      return { status: res.status, text: await res.text() };
    };
    const ringClients = Array.from({ length: 4 }, () => new Redis({ port: ringPort, retryStrategy: () => null }));
    let closed = 0;
    for (const client of ringClients) client.on('close', () => closed++);
    try {
      await Promise.all(ringClients.map((client) => client.ping()));
      const pids = (JSON.parse((await ask('/workers')).text) as WorkersReport).workers.map((w) => w.pid);
      const dup = ringConfig([{ address: '127.0.0.1:11211' }, { name: '127.0.0.1', address: c.address }]);
      const expected =
        'shards[3].name: shard "127.0.0.1" hashes on the ring as "127.0.0.1", as does shard "127.0.0.1:11211"';
      const dry = await ask('/reload?dry_run=1', {
        method: 'POST',
        headers: { 'content-type': 'application/yaml' },
        body: dup,
      });
      expect(dry.status).toBe(400);
      expect((JSON.parse(dry.text) as { errors: string[] }).errors).toEqual([
        expect.stringContaining(`<request body>:11: ${expected}`),
      ]);
      fs.writeFileSync(ringFile, dup);
      const reload = await ask('/reload', { method: 'POST' });
      expect(reload.status).toBe(400);
      expect((JSON.parse(reload.text) as { errors: string[] }).errors).toEqual([
        expect.stringContaining(`${ringFile}:11: ${expected}`),
      ]);
      const report = JSON.parse((await ask('/workers')).text) as WorkersReport;
      expect(report.restarts).toBe(0);
      expect(report.workers.map((w) => w.pid)).toEqual(pids);
      expect(await Promise.all(ringClients.map((client) => client.ping()))).toEqual(['PONG', 'PONG', 'PONG', 'PONG']);
      expect(closed).toBe(0);
    } finally {
      for (const client of ringClients) client.disconnect();
      await ring.kill();
    }
  });
});
