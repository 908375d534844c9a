/**
 * Commands for every shard while a reload's migration moves keys (slots mode): a FLUSHALL sent while a MIGRATE
 * runs must not let that MIGRATE restore its keys on a shard the FLUSHALL had already emptied (it answered +OK and
 * a batch of keys survived for good), and DBSIZE must not count a batch twice or not at all. keymux holds such a
 * command until the running MIGRATEs end and starts none until its replies are in. A gate in front of the target
 * shard holds the source's RESTORE, so the MIGRATE is caught running exactly when the FLUSHALL comes.
 * Real redis-server shards, ioredis, an in-process keymux.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom } from '../support/keymux.js';
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
