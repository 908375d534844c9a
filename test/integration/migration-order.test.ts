/**
 * Key migration on reload (slots and ring modes), model-checked for order (issue 9): while a reload moves a third of
 * the slots (or adds a ring member) and keymux migrates the keys under load, clients pipeline batches of SET, GET,
 * INCR, DEL and MGET on their own keys (test/support/order-workload.ts) and every reply is compared with the only
 * value an in-order execution allows. 0 wrong answers, 0 errors; afterwards every key reads back exactly through
 * keymux and directly from its new owner.
 * Also: a key whose new owner already holds a stale copy (left by an earlier topology or a direct write) is moved
 * with REPLACE: the current value wins, nothing stays on the old owner (no BUSYKEY).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { OrderWorkload, loadBallast } from '../support/order-workload.js';
import '../support/keymux.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import { waitFor } from '../support/fake-backend.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

let backends: RedisProcess[];
let dir: string;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis(), startRedis()]);
  dir = makeTempDir('keymux-migration-order-');
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
  removeTempDir(dir);
});

function write(file: string, obj: Record<string, unknown>): void {
  fs.writeFileSync(file, stringify({ listen: '127.0.0.1:0', log: { level: 'silent' }, ...obj }));
}

const slots = (a: string, b: string, c: string) => ({
  mode: 'slots',
  shards: [
    { name: 'a', address: backends[0]!.address, slots: [a] },
    { name: 'b', address: backends[1]!.address, slots: [b] },
    { name: 'c', address: backends[2]!.address, slots: [c] },
  ],
});

const ring = (n: number) => ({
  mode: 'ring',
  ring: { hash: 'fnv1a_64' },
  shards: backends.slice(0, n).map((b) => ({ address: b.address })),
});

async function runCase(before: Record<string, unknown>, after: Record<string, unknown>, label: string) {
  await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
  const file = path.join(dir, `${label}.yaml`);
  write(file, before);
  const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
  try {
    const portOf = (k: Buffer): number => {
      const topo = proxy.topology;
      return backends.find((b) => b.address === topo.shards[topo.router.shardFor(k)]!.address)!.port;
    };
    await loadBallast(60_000, portOf);
    const work = new OrderWorkload({ port: proxy.port, clients: 8, seed: Number(process.env.KEYMUX_ORDER_SEED ?? 5) });
    await work.start();
    try {
      await work.runCommands(20_000);
      write(file, after);
      expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
      const commandsAtReload = work.commands;
      await waitFor(
        () => proxy.migrationProgress().every((m) => m.state === 'done'),
        'the migration to end',
        120_000,
        20,
      );
      const duringMigration = work.commands - commandsAtReload;
      await work.runCommands(20_000);
      await work.stop();
      const [m] = proxy.migrationProgress();
      console.log(
        `ORDER ${label}: ${work.commands} commands (${duringMigration} while keys moved), ${m!.keysMoved} keys moved; ` +
          `errors ${work.errors.length}, wrong answers ${work.wrong.length}`,
      );
      expect(work.wrong.slice(0, 5)).toEqual([]);
      expect(work.errors.slice(0, 5)).toEqual([]);
      expect(m!.keysMoved).toBeGreaterThan(10_000);
      expect(duringMigration).toBeGreaterThan(0);
      const viaKeymux = await work.verify(() => proxy.port);
      expect(viaKeymux.problems.slice(0, 5)).toEqual([]);
      const direct = await work.verify(portOf);
      expect(direct.problems.slice(0, 5)).toEqual([]);
    } finally {
      work.close();
    }
  } finally {
    await proxy.close();
  }
}

describe('migration on reload, checked for order', () => {
  it('slots mode: a third of the slots move under a model-checked pipelined workload', async () => {
    await runCase(slots('0-5460', '5461-10922', '10923-16383'), slots('0-2730', '2731-8191', '8192-16383'), 'slots');
  }, 180_000);

  it('ring mode: a fourth member joins under a model-checked pipelined workload', async () => {
    await runCase(ring(3), ring(4), 'ring');
  }, 180_000);

  it('a stale copy on the new owner is replaced by the current value (no BUSYKEY, nothing left behind)', async () => {
    await Promise.all(backends.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const file = path.join(dir, 'busykey.yaml');
    write(file, slots('0-5460', '5461-10922', '10923-16383'));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    try {
      // Keys of slots 2731..5460: on a now, on b after the reload. b already holds stale copies of them.
      const keys: string[] = [];
      for (let i = 0; keys.length < 200; i++) {
        const k = `stale:${i}`;
        const s = proxy.topology.router.slotFor(Buffer.from(k));
        if (s >= 2731 && s <= 5460) keys.push(k);
      }
      expect(
        await redisCommands(
          proxy.port,
          keys.map((k) => ['SET', k, `current:${k}`]),
        ),
      ).toEqual(keys.map(() => 'OK'));
      await redisCommands(
        backends[1]!.port,
        keys.map((k) => ['SET', k, `stale:${k}`]),
      );
      write(file, slots('0-2730', '2731-8191', '8192-16383'));
      expect((await proxy.reloadFromFile('test')).errors).toEqual([]);
      // Read half of them at once (each is moved on demand), the rest move in the background.
      const first = await redisCommands(
        proxy.port,
        keys.slice(0, 100).map((k) => ['GET', k]),
      );
      expect(first).toEqual(keys.slice(0, 100).map((k) => `current:${k}`));
      await waitFor(
        () => proxy.migrationProgress().every((m) => m.state === 'done'),
        'the migration to end',
        60_000,
        20,
      );
      expect(proxy.migrationProgress()[0]!.errors).toBe(0);
      expect(
        await redisCommands(
          proxy.port,
          keys.map((k) => ['GET', k]),
        ),
      ).toEqual(keys.map((k) => `current:${k}`));
      expect(await redisCommand(backends[0]!.port, 'DBSIZE')).toBe(0);
      expect(
        await redisCommands(
          backends[1]!.port,
          keys.map((k) => ['GET', k]),
        ),
      ).toEqual(keys.map((k) => `current:${k}`));
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
