/**
 * A reload that moves keys while a large fan-out is still being sent in slices (fanout/sliced.ts): the slices not
 * yet sent must be routed by the new topology (their keys moved first while the migration runs), never by the one
 * the fan-out started with. Routed by the old one they reached the old owner after the migration's fence, so keys
 * the migration had already moved were written there again: the MSET answered +OK, yet some keys read their old
 * value through keymux and stayed on the old owner.
 * Deterministic: the old owner pauses writes (CLIENT PAUSE WRITE) before the MSET, so only the first window of
 * slices can be sent; the reload comes once the first slice has reached the other shard (its commandstats), and the
 * old owner is unpaused right after it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, redisCommand, redisCommands, encodeCommand, type RedisProcess } from '../support/redis.js';
import { configFrom, RawClient } from '../support/keymux.js';
import { halvesConfig } from '../support/slot-layout.js';
import { waitFor } from '../support/fake-backend.js';
import { Proxy } from '../../src/proxy.js';

let a: RedisProcess;
let b: RedisProcess;
let c: RedisProcess;

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all([a, b, c].map((r) => r.stop()));
});

/** The low half of the slots on `low`, the high half on b. */
const layout = (low: RedisProcess) => configFrom({ ...halvesConfig(low, b), log: { level: 'silent' } });

/** MSET commands a redis-server has run (INFO commandstats). */
async function msetCalls(r: RedisProcess): Promise<number> {
  const info = String(await redisCommand(r.port, 'INFO', 'commandstats'));
  return Number(/cmdstat_mset:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

async function dbsize(r: RedisProcess): Promise<number> {
  return Number(await redisCommand(r.port, 'DBSIZE'));
}

const N = 200_000;
/** Keys per slice and slices at the shards at once (fanout/sliced.ts SLICE_KEYS, WINDOW). */
const SLICE_KEYS = 8192;
const WINDOW = 4;

describe('a reload that moves keys during a sliced fan-out', () => {
  it('MSET of 200,000 keys: the slices after the reload go to the new owner; every key reads the new value', async () => {
    const proxy = await Proxy.start(layout(a));
    const raw = await RawClient.connect(proxy.port);
    try {
      const keys = Array.from({ length: N }, (_, i) => `sl:${i}`);
      // Every key exists with an old value first (batches below the slicing threshold).
      const load: string[][] = [];
      for (let i = 0; i < N; i += 1000) load.push(['MSET', ...keys.slice(i, i + 1000).flatMap((k) => [k, 'old'])]);
      const loaded = await redisCommands(proxy.port, load, { timeoutMs: 60_000 });
      expect(loaded.every((r) => r === 'OK')).toBe(true);
      const [baseA, baseB] = await Promise.all([msetCalls(a), msetCalls(b)]);

      // The first key again at the end with another value: written by the last slice, after the reload, it wins.
      const mset = encodeCommand(['MSET', ...keys.flatMap((k) => [k, 'new']), keys[0], 'last']);
      const slices = Math.ceil((N + 1) / SLICE_KEYS);
      expect(await redisCommand(a.port, 'CLIENT', 'PAUSE', '30000', 'WRITE')).toBe('OK');
      raw.write(mset);
      // The first slice has reached b: the fan-out is under way, and no more than a window of slices is sent
      // while a holds their MSETs.
      await waitFor(async () => (await msetCalls(b)) > baseB, 'the first slice on b', 20_000, 2);
      expect(proxy.reload(layout(c))).toBe(null);
      expect(await redisCommand(a.port, 'CLIENT', 'UNPAUSE')).toBe('OK');

      await raw.untilText('\r\n', 60_000);
      expect(raw.data.toString('latin1')).toBe('+OK\r\n');
      await waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration', 60_000);
      expect(proxy.migrationProgress()).toHaveLength(1);

      // Through keymux: every key has the MSET's value.
      const read: string[][] = [];
      for (let i = 0; i < N; i += 10_000) read.push(['MGET', ...keys.slice(i, i + 10_000)]);
      const values = (await redisCommands(proxy.port, read, { timeoutMs: 60_000 })).flat() as Array<string | null>;
      expect(values).toHaveLength(N);
      expect(values[0]).toBe('last');
      let stale = 0;
      for (let i = 1; i < N; i++) if (values[i] !== 'new') stale++;
      expect(stale).toBe(0);
      // Nothing is left on the old owner; b and c hold every key once.
      expect(await dbsize(a)).toBe(0);
      expect((await dbsize(b)) + (await dbsize(c))).toBe(N);
      // The old owner got only the slices sent before the reload (at most a window); c got the others.
      const [toA, toC] = [(await msetCalls(a)) - baseA, await msetCalls(c)];
      expect(toA).toBeLessThanOrEqual(WINDOW);
      expect(toA + toC).toBe(slices);
    } finally {
      await redisCommand(a.port, 'CLIENT', 'UNPAUSE').catch(() => undefined);
      raw.close();
      await proxy.close();
    }
  });
});
