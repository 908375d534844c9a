// Shard changes move the keys: a reload that moves a third of the slots (slots mode) and, separately, one that adds
// a ring member (ring mode), each under client load. No client-visible error, no stale read, and afterwards every
// key is on its new owner only, with its last value and its TTL. Also: a migration survives a further reload.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import '../support/keymux.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { freePort } from '../support/ports.js';
import { halvesConfig } from '../support/slot-layout.js';
import { checkedWorkload } from '../support/model-workload.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[];
let dir: string;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis(), startRedis()]);
  dir = makeTempDir('keymux-migration-');
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
  removeTempDir(dir);
});

function write(file: string, obj: Record<string, unknown>): void {
  fs.writeFileSync(file, stringify({ listen: '127.0.0.1:0', log: { level: process.env.MIG_LOG ?? 'silent' }, ...obj }));
}

/** Loads `count` keys through keymux (every 10th with a TTL) in pipelined batches. */
async function load(port: number, count: number): Promise<Map<string, string>> {
  const model = new Map<string, string>();
  const batch: Array<Array<string>> = [];
  for (let i = 0; i < count; i++) {
    const key = `mk:${i}`;
    model.set(key, `v0:${i}`);
    batch.push(i % 10 === 0 ? ['SET', key, `v0:${i}`, 'EX', '100000'] : ['SET', key, `v0:${i}`]);
  }
  for (let i = 0; i < batch.length; i += 20_000) {
    const replies = await redisCommands(port, batch.slice(i, i + 20_000), { timeoutMs: 60_000 });
    expect(replies.every((r) => r === 'OK')).toBe(true);
  }
  return model;
}

/** Clients writing and reading their own partition of the keys until `until()` says stop. */
async function workload(port: number, model: Map<string, string>, clients: number, until: () => boolean) {
  const conns = await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 20_000 });
      await c.connect();
      return c;
    }),
  );
  const result = await checkedWorkload(conns, model, until);
  for (const c of conns) c.disconnect();
  return result;
}

/** Every key only on `owner(key)`, with the model's value; TTL kept on every 10th key. */
async function verifyPlacement(proxy: Proxy, model: Map<string, string>) {
  const keys = [...model.keys()];
  const topo = proxy.topology;
  const replies = await Promise.all(
    backends.map((b) => redisCommands(b.port, [['MGET', ...keys]], { timeoutMs: 60_000 })),
  );
  let misplaced = 0;
  let wrongValue = 0;
  keys.forEach((key, i) => {
    const owner = topo.shards[topo.router.shardFor(Buffer.from(key))].address;
    backends.forEach((b, s) => {
      const v = (replies[s][0] as Array<string | null>)[i];
      if (b.address === owner) {
        if (v !== model.get(key)) wrongValue++;
      } else if (v !== null) misplaced++;
    });
  });
  expect({ misplaced, wrongValue }).toEqual({ misplaced: 0, wrongValue: 0 });
  const ttlKeys = keys.filter((_, i) => i % 10 === 0).slice(0, 2000);
  const ttls = await Promise.all(
    ttlKeys.map(async (key) => {
      const owner = backends.find((b) => b.address === topo.shards[topo.router.shardFor(Buffer.from(key))].address)!;
      return (await redisCommands(owner.port, [['PTTL', key]]))[0] as number;
    }),
  );
  expect(ttls.filter((t) => t <= 0 || t > 100_000_000).length).toBe(0);
}

describe('migration on reload', () => {
  it('slots mode: moving a third of the slots under load, 100,000 keys', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'slots.yaml');
    const [a, b, c] = backends;
    write(file, {
      mode: 'slots',
      admin: '127.0.0.1:0',
      shards: [
        { name: 'a', address: a.address, slots: ['0-5460'] },
        { name: 'b', address: b.address, slots: ['5461-10922'] },
        { name: 'c', address: c.address, slots: ['10923-16383'] },
      ],
    });
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const model = await load(proxy.port, 100_000);
    let reloaded = false;
    const load$ = workload(
      proxy.port,
      model,
      8,
      () => reloaded && proxy.migrationProgress().every((m) => m.state === 'done'),
    );
    write(file, {
      mode: 'slots',
      admin: '127.0.0.1:0',
      shards: [
        { name: 'a', address: a.address, slots: ['0-2730'] },
        { name: 'b', address: b.address, slots: ['2731-8191'] },
        { name: 'c', address: c.address, slots: ['8192-16383'] },
      ],
    });
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    reloaded = true;
    const { problems, ops } = await load$;
    expect(problems.slice(0, 5)).toEqual([]);
    expect(ops).toBeGreaterThan(1000);
    const [m] = proxy.migrationProgress();
    expect(m.state).toBe('done');
    expect(m.keysMoved).toBeGreaterThan(25_000);
    // Progress is visible: /shards lists the migration, /metrics has its counts.
    const { request } = await import('undici');
    const shards = (await (await request(`http://127.0.0.1:${proxy.adminPort}/shards`)).body.json()) as {
      migrations: Array<{ state: string; keysMoved: number }>;
    };
    expect(shards.migrations.map((x) => [x.state, x.keysMoved])).toEqual([['done', m.keysMoved]]);
    const metrics = await (await request(`http://127.0.0.1:${proxy.adminPort}/metrics`)).body.text();
    expect(metrics).toContain(`keymux_migration_keys_moved ${m.keysMoved}`);
    expect(metrics).toContain('keymux_migration_keys_left 0');
    expect(metrics).toContain('keymux_migrations_active 0');
    await verifyPlacement(proxy, model);
    await proxy.close();
  }, 180_000);

  it('ring mode: adding a member under load, and a second reload while the first migration runs', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'ring.yaml');
    const ring = (n: number, weights: number[] = [1, 1, 1, 1]) => ({
      mode: 'ring',
      ring: { hash: 'fnv1a_64' },
      shards: backends.slice(0, n).map((b, i) => ({ address: b.address, weight: weights[i] })),
    });
    write(file, ring(3));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const model = await load(proxy.port, 40_000);
    let reloaded = false;
    const load$ = workload(
      proxy.port,
      model,
      6,
      () => reloaded && proxy.migrationProgress().every((m) => m.state === 'done'),
    );
    write(file, ring(4));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    // A further reload while the first migration is still moving keys: weights change again.
    write(file, ring(4, [1, 2, 1, 2]));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    reloaded = true;
    const { problems } = await load$;
    expect(problems.slice(0, 5)).toEqual([]);
    await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'migrations to finish', 60_000);
    await verifyPlacement(proxy, model);
    const onNew = (await redisCommands(backends[3].port, [['DBSIZE']]))[0] as number;
    expect(onNew).toBeGreaterThan(5000);
    await proxy.close();
  }, 180_000);
});

/**
 * Starts keymux again on `file` (a migration recorded in `stateFile` is resumed), reads and writes through it until
 * the migration is done (every reply checked), then checks the state file is gone and every key is on its owner.
 */
async function resumeAndVerify(file: string, stateFile: string, model: Map<string, string>): Promise<void> {
  const second = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
  const { problems } = await workload(second.port, model, 4, () =>
    second.migrationProgress().every((m) => m.state === 'done'),
  );
  expect(problems.slice(0, 5)).toEqual([]);
  await waitFor(() => !fs.existsSync(stateFile), 'the state file to be removed when done', 30_000);
  await verifyPlacement(second, model);
  await second.close();
}

describe('migration across a restart', () => {
  it('resumes from the state file: keys not yet moved are still found and end on their new owner', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'restart.yaml');
    const stateFile = path.join(dir, 'migration-state.json');
    const [a, b, c] = backends;
    const migration = { state_file: stateFile };
    write(file, {
      mode: 'slots',
      migration,
      shards: [
        { name: 'a', address: a.address, slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ],
    });
    const first = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const model = await load(first.port, 30_000);
    write(file, {
      mode: 'slots',
      migration,
      shards: [
        { name: 'a', address: a.address, slots: ['0-4095'] },
        { name: 'b', address: b.address, slots: ['4096-12287'] },
        { name: 'c', address: c.address, slots: ['12288-16383'] },
      ],
    });
    expect((await first.reloadFromFile('test')).errors).toEqual([]);
    await first.close(); // keymux goes away while the migration runs
    expect(fs.existsSync(stateFile)).toBe(true);
    const movedBefore = (await redisCommands(c.port, [['DBSIZE']]))[0] as number;
    expect(movedBefore).toBeLessThan(7_000); // most of c's share has not arrived yet

    await resumeAndVerify(file, stateFile, model);
  }, 120_000);
});

describe('chained migrations across a restart', () => {
  it('a reload during a migration, then a restart: keys still on the first owners are found and end on the last', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'chain.yaml');
    const stateFile = path.join(dir, 'chain-state.json');
    const [a, b, c, d] = backends;
    const layout = (shards: Array<[RedisProcess, string]>) => ({
      mode: 'slots',
      migration: { state_file: stateFile },
      shards: shards.map(([s, slots], i) => ({ name: `s${i}`, address: s.address, slots: [slots] })),
    });
    write(
      file,
      layout([
        [a, '0-8191'],
        [b, '8192-16383'],
      ]),
    );
    const first = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const model = await load(first.port, 30_000);
    // Slots 4096-8191 go from a to c, and before that migration ends, on to d.
    write(
      file,
      layout([
        [a, '0-4095'],
        [c, '4096-8191'],
        [b, '8192-16383'],
      ]),
    );
    expect((await first.reloadFromFile('test')).errors).toEqual([]);
    write(
      file,
      layout([
        [a, '0-4095'],
        [d, '4096-8191'],
        [b, '8192-12287'],
        [c, '12288-16383'],
      ]),
    );
    expect((await first.reloadFromFile('test')).errors).toEqual([]);
    await first.close(); // keymux goes away while both migrations are unfinished
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { chain: unknown[] };
    expect(state.chain).toHaveLength(2);
    expect((await redisCommands(a.port, [['DBSIZE']]))[0] as number).toBeGreaterThan(10_000); // most keys not moved

    await resumeAndVerify(file, stateFile, model);
  }, 120_000);
});

describe('leftovers on a source shard', () => {
  it('a stale copy of a key on a shard that gives slots away never replaces the key on its owner', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'leftover.yaml');
    const [a, b, c] = backends;
    const layout = (bSlots: string[], cSlots: string[]) => ({
      mode: 'slots',
      shards: [
        { name: 'a', address: a.address, slots: ['0-5460'] },
        { name: 'b', address: b.address, slots: bSlots },
        ...(cSlots.length > 0 ? [{ name: 'c', address: c.address, slots: cSlots }] : []),
      ],
    });
    write(file, layout(['5461-16383'], []));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    // `live` keys live on a (slots 0-5460, which do not move); b also holds an old copy of each (written to b
    // directly, as an earlier topology or a client behind keymux's back could have left it).
    const live = Array.from({ length: 200 }, (_, i) => `left:${i}`).filter(
      (k) => proxy.topology.router.shardFor(Buffer.from(k)) === 0,
    );
    expect(live.length).toBeGreaterThan(20);
    for (const k of live) {
      expect(await redisCommand(proxy.port, 'SET', k, `live:${k}`)).toBe('OK');
      expect(await redisCommand(b.port, 'SET', k, `stale:${k}`)).toBe('OK');
    }
    // b gives half of its slots to c: b is scanned as a source and finds the old copies.
    write(file, layout(['5461-10922'], ['10923-16383']));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration', 30_000);
    for (const k of live) expect(await redisCommand(proxy.port, 'GET', k)).toBe(`live:${k}`);
    for (const k of live) expect(await redisCommand(a.port, 'GET', k)).toBe(`live:${k}`);
    await proxy.close();
  }, 60_000);
});

describe('progress across scan passes', () => {
  it('a pass after errors counts its keys again from zero (not on top of the pass before)', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'passes.yaml');
    const [a, b] = backends;
    // The new owner of a's slots listens nowhere: every MIGRATE fails, and the migration scans again and again.
    const nowhere = `127.0.0.1:${await freePort()}`;
    const layout = (owner: string) => halvesConfig({ address: owner }, b);
    write(file, layout(a.address));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const keys = Array.from({ length: 200 }, (_, i) => `pass:${i}`).filter(
      (k) => proxy.topology.router.shardFor(Buffer.from(k)) === 0,
    );
    for (const k of keys) expect(await redisCommand(a.port, 'SET', k, 'v')).toBe('OK');
    write(file, layout(nowhere));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    await waitFor(() => (proxy.migrationProgress()[0]?.passes ?? 0) >= 3, 'a third scan pass', 30_000);
    // Wait for the third pass to have scanned a (its SCAN's answer), then read its counts.
    await waitFor(() => proxy.migrationProgress()[0]!.keysScanned >= keys.length, 'the pass to scan a', 30_000);
    const m = proxy.migrationProgress()[0]!;
    expect(m.state).toBe('running');
    expect(m.keysMoved).toBe(0);
    expect(m.keysScanned).toBe(keys.length);
    expect(m.keysLeft).toBe(0);
    expect(await redisCommand(a.port, 'DBSIZE')).toBe(keys.length);
    await proxy.close();
  }, 60_000);
});

describe('one command with many keys in motion', () => {
  it('an MGET of 150,000 keys during a migration moves them in bounded MIGRATEs and reads every value', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'many-keys.yaml');
    const [a, b, c] = backends;
    const layout = (owner: RedisProcess) => ({
      mode: 'slots',
      migration: { enabled: true },
      shards: [
        { name: 'low', address: owner.address, slots: ['0-16382'] },
        { name: 'high', address: b.address, slots: ['16383'] },
      ],
    });
    write(file, layout(a));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const keys = Array.from({ length: 150_000 }, (_, i) => `many:${i}`).filter(
      (k) => proxy.topology.router.shardFor(Buffer.from(k)) === 0,
    );
    expect(keys.length).toBeGreaterThan(140_000);
    for (let i = 0; i < keys.length; i += 10_000) {
      const part = keys.slice(i, i + 10_000);
      expect(await redisCommand(a.port, 'MSET', ...part.flatMap((k) => [k, `v${k}`]))).toBe('OK');
    }
    // c takes no writes for a while: the migration's first MIGRATE waits, so every key is still on a when the MGET
    // arrives and all of them must be moved for it (before the fix: one MIGRATE frame built by spreading 150,000
    // keys into one call, a RangeError that ended the process).
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '1000', 'WRITE')).toBe('OK');
    write(file, layout(c));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    const [values] = (await redisCommands(proxy.port, [['MGET', ...keys]], { timeoutMs: 60_000 })) as [
      Array<string | null>,
    ];
    expect(values.length).toBe(keys.length);
    const wrong = keys.filter((k, i) => values[i] !== `v${k}`);
    expect(wrong.length).toBe(0);
    await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration', 60_000);
    expect(await redisCommand(a.port, 'DBSIZE')).toBe(0);
    expect(await redisCommand(c.port, 'DBSIZE')).toBe(keys.length);
    await proxy.close();
  }, 120_000);
});

describe('a reload while a migration is still fencing', () => {
  it('the requests its fence holds meet the newer placement: an acknowledged write is never moved over', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'fencing.yaml');
    const [a, b, c, d] = backends;
    const layout = (owner: RedisProcess) => halvesConfig(owner, b);
    write(file, layout(a));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    let k = 'fk:0';
    for (let i = 0; proxy.topology.router.shardFor(Buffer.from(k)) !== 0; i++) k = `fk:${i}`;
    expect(await redisCommand(proxy.port, 'SET', k, 'v1')).toBe('OK');
    // a answers nothing for a while: the first migration's fence (a PING behind everything sent to a) waits.
    expect(await redisCommand(a.port, 'CLIENT', 'PAUSE', '1000', 'ALL')).toBe('OK');
    write(file, layout(c));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    const written = redisCommand(proxy.port, 'SET', k, 'v2'); // held by the first migration's fence
    await waitFor(() => proxy.migrationProgress().some((m) => m.held === 1), 'the SET to be held', 10_000);
    write(file, layout(d)); // chained: the keys go to d instead
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    expect(await written).toBe('OK');
    await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migrations', 30_000);
    // Before the fix the held SET was routed by the placement the second reload replaced, to c (the first
    // migration's target, which moved nothing), and the second migration moved v1 from a to d: GET said v1.
    expect(await redisCommand(proxy.port, 'GET', k)).toBe('v2');
    expect(await redisCommand(d.port, 'GET', k)).toBe('v2');
    expect(await redisCommand(c.port, 'EXISTS', k)).toBe(0);
    await proxy.close();
  }, 60_000);
});

describe('reloads a running migration refuses', () => {
  it('turning migration off while keys move is refused; the migration ends and every key reads its value', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'switch-off.yaml');
    const [a, b, c] = backends;
    const layout = (owner: RedisProcess, enabled: boolean) => halvesConfig(owner, b, { enabled });
    write(file, layout(a, true));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const keys = Array.from({ length: 2000 }, (_, i) => `off:${i}`);
    expect(await redisCommand(proxy.port, 'MSET', ...keys.flatMap((k) => [k, 'old']))).toBe('OK');
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '1000', 'WRITE')).toBe('OK'); // the MIGRATEs wait
    write(file, layout(c, true));
    expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
    expect(proxy.migrationProgress().some((m) => m.state === 'running' || m.state === 'fencing')).toBe(true);
    write(file, layout(c, false));
    const refused = await proxy.reloadFromFile('test');
    // Accepted before the fix: keymux routed by c alone at once, and the scan went on moving old values over new writes.
    expect(refused.ok).toBe(false);
    expect(refused.errors.join()).toMatch(/is moving keys/);
    // Nor may the state file move while it runs (the record of where keys are would be split across two files).
    write(file, { ...layout(c, true), migration: { enabled: true, state_file: path.join(dir, 'elsewhere.json') } });
    const moved = await proxy.reloadFromFile('test');
    expect(moved.ok).toBe(false);
    expect(moved.errors.join()).toMatch(/state_file cannot change/);
    write(file, layout(c, false));
    expect(await redisCommand(proxy.port, 'MSET', ...keys.flatMap((k) => [k, 'new']))).toBe('OK');
    await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration', 30_000);
    const values = (await redisCommand(proxy.port, 'MGET', ...keys)) as string[];
    expect(values.filter((v) => v !== 'new').length).toBe(0);
    expect((await proxy.reloadFromFile('test')).ok).toBe(true); // once it is done, the same file is taken
    await proxy.close();
  }, 60_000);

  it('a state file that cannot be written: start and reload are refused with the path, nothing half-started', async () => {
    const file = path.join(dir, 'bad-state.yaml');
    const [a, b, c] = backends;
    const missing = path.join(dir, 'no-such-dir', 'state.json');
    const layout = (owner: RedisProcess, stateFile: string | null) => halvesConfig(owner, b, { state_file: stateFile });
    write(file, layout(a, missing));
    await expect(Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false })).rejects.toThrow(
      /state_file .*no-such-dir/,
    );
    write(file, layout(a, null));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    expect(await redisCommand(proxy.port, 'SET', 'sf:1', 'v')).toBe('OK');
    write(file, layout(c, missing));
    // Before: the topology was swapped, then writing the state file threw; the migration never left its fence
    // and every request for a key in motion waited for good.
    const refused = await proxy.reloadFromFile('test');
    expect(refused.ok).toBe(false);
    expect(refused.errors.join()).toMatch(/state_file .*no-such-dir/);
    expect(proxy.migrationProgress()).toEqual([]);
    expect(await redisCommand(proxy.port, 'GET', 'sf:1')).toBe('v');
    await proxy.close();
  }, 60_000);
});
