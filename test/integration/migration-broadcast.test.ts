/**
 * Commands for every shard while a reload's migration moves keys (slots mode): a FLUSHALL sent while a MIGRATE
 * runs must not let that MIGRATE restore its keys on a shard the FLUSHALL had already emptied (it answered +OK and
 * a batch of keys survived for good), and DBSIZE must not count a batch twice or not at all. keymux holds such a
 * command until the running MIGRATEs end and starts none until its replies are in. A gate in front of the target
 * shard holds the source's RESTORE, so the MIGRATE is caught running exactly when the FLUSHALL comes. With
 * `workers: 2` the FLUSHALL of worker 2's client must hold worker 1's MIGRATEs (it runs them all).
 * Real redis-server shards, ioredis, an in-process keymux and the real binary with two workers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, runBinary, type RunningBinary } from '../support/keymux.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { adminRequest, pollUntil } from '../support/slot-layout.js';
import { waitFor } from '../support/fake-backend.js';
import { keySlot } from '../../src/routing/crc16.js';
import { Proxy } from '../../src/proxy.js';
import { migrationPauses } from '../../src/migration/migration.js';
import { Gate } from '../support/gate.js';

let a: RedisProcess;
let b: RedisProcess;

beforeAll(async () => {
  [a, b] = await Promise.all([startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all([a, b].map((s) => s.stop()));
});

/** `low` owns slots 0-`split`, `high` the rest. */
function layout(low: string, high: string, split: number) {
  return configFrom({
    mode: 'slots',
    log: { level: 'silent' },
    migration: { enabled: true },
    shards: [
      { name: 'low', address: low, slots: [`0-${split}`] },
      { name: 'high', address: high, slots: [`${split + 1}-16383`] },
    ],
  });
}

describe('FLUSHALL while keys move', () => {
  it('waits for the running MIGRATE: no key survives, and no MIGRATE starts before its replies', async () => {
    const gate = await Gate.start(b.port);
    const proxy = await Proxy.start(layout(a.address, gate.address, 8191));
    const r = new Redis(proxy.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await r.connect();
      // 300 keys in slots 4096-8191: on `low` (a) now, on `high` (b, through the gate) after the reload.
      const keys: string[] = [];
      for (let i = 0; keys.length < 300; i++) {
        const slot = keySlot(Buffer.from(`fm:${i}`));
        if (slot >= 4096 && slot <= 8191) keys.push(`fm:${i}`);
      }
      await redisCommands(
        proxy.port,
        keys.map((k) => ['SET', k, 'v']),
      );
      const restoreHeld = gate.holdFrom('RESTORE');
      expect(proxy.reload(layout(a.address, gate.address, 4095))).toBeNull();
      await restoreHeld; // a runs MIGRATE to b: b has not restored the keys, a waits for it

      const flushed = r.flushall();
      // Without the pause the FLUSHALL reaches b at once (and a only once its MIGRATE ends); with it, none is sent.
      await Promise.race([
        gate.answered('flushall'), // ioredis writes command names in lowercase
        waitFor(() => migrationPauses() > 0, 'the FLUSHALL to pause the migration'),
      ]);
      gate.release();
      expect(await flushed).toBe('OK');
      await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration to finish');

      expect(await r.dbsize()).toBe(0);
      expect(await redisCommand(a.port, 'DBSIZE')).toBe(0);
      expect(await redisCommand(b.port, 'DBSIZE')).toBe(0);
      expect(migrationPauses()).toBe(0);
    } finally {
      r.disconnect();
      await proxy.close();
      await gate.close();
    }
  });
});

describe('FLUSHALL on the worker that does not move keys (workers: 2)', () => {
  it("the leader holds its MIGRATEs for the other worker's FLUSHALL: no key survives", async () => {
    const gate = await Gate.start(b.port);
    const dir = makeTempDir('keymux-flush-workers-');
    const file = path.join(dir, 'keymux.yaml');
    const [port, adminPort] = [await freePort(), await freePort()];
    const write = (split: number): void =>
      fs.writeFileSync(
        file,
        stringify({
          listen: `127.0.0.1:${port}`,
          admin: `127.0.0.1:${adminPort}`,
          mode: 'slots',
          workers: 2,
          log: { level: 'debug' },
          migration: { enabled: true },
          shards: [
            { name: 'low', address: a.address, slots: [`0-${split}`] },
            { name: 'high', address: gate.address, slots: [`${split + 1}-16383`] },
          ],
        }),
      );
    write(8191);
    let keymux: RunningBinary | null = null;
    const clients: Redis[] = [];
    try {
      keymux = await runBinary(file, 'keymux workers serving');
      const keys: string[] = [];
      for (let i = 0; keys.length < 300; i++) {
        const slot = keySlot(Buffer.from(`fw:${i}`));
        if (slot >= 4096 && slot <= 8191) keys.push(`fw:${i}`);
      }
      await redisCommands(
        port,
        keys.map((k) => ['SET', k, 'v']),
      );
      // A client of worker 2, which follows the migration (worker 1 runs every MIGRATE): its client ids are in
      // worker 2's block (workers/primary.ts clientIdsFor), and the primary hands connections out in turn.
      let follower: Redis | null = null;
      while (follower === null) {
        const r = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
        clients.push(r);
        await r.connect();
        if (Math.floor(Number(await r.client('ID')) / 2 ** 44) === 2) follower = r;
      }
      const restoreHeld = gate.holdFrom('RESTORE');
      write(4095);
      expect((await adminRequest(adminPort, '/reload', 'POST')).status).toBe(200);
      await restoreHeld; // worker 1's MIGRATE from a to b is under way: b has not restored its keys

      const flushed = follower.flushall();
      const output = (keymux as RunningBinary).output;
      await Promise.race([
        gate.answered('flushall'), // ioredis writes command names in lowercase
        pollUntil(
          "worker 1 to hold its moves for worker 2's FLUSHALL",
          async () => (output().includes("key moves held for another worker's command") ? true : undefined),
          30_000,
        ),
      ]);
      gate.release();
      expect(await flushed).toBe('OK');
      await pollUntil(
        'the migration to finish',
        async () => {
          const rows = (
            JSON.parse((await adminRequest(adminPort, '/shards')).text) as { migrations: Array<{ state: string }> }
          ).migrations;
          return rows.length > 0 && rows.every((m) => m.state === 'done') ? true : undefined;
        },
        30_000,
      );
      expect(await redisCommand(a.port, 'DBSIZE')).toBe(0);
      expect(await redisCommand(b.port, 'DBSIZE')).toBe(0);
    } finally {
      for (const r of clients) r.disconnect();
      await keymux?.kill();
      await gate.close();
      removeTempDir(dir);
    }
  });
});
