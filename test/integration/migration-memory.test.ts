/**
 * Reloads that move keys do not pile up memory: once a migration is done, neither it nor the topologies it came
 * from stay reachable. Before, each done migration kept the placement it started from, whose topology kept its own
 * migration and so on back to the first reload (about 15 KB per reload, for the life of the process), and the
 * proxy's list of migrations kept every one. Checked with weak references and a full collection (V8's gc exposed
 * at run time) over 12 reloads that each swap two shards' slot halves (real redis-servers, a few keys each way).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { configFrom, slotsConfig, startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let a: RedisProcess;
let b: RedisProcess;
let proxy: Proxy;

/** Shard a holds the lower half of the slots (or, flipped, the upper half); b the rest. */
function layout(flipped: boolean) {
  const c = slotsConfig([a.port, b.port]);
  const shards = c.shards as Array<{ slots: string[] }>;
  if (flipped) [shards[0]!.slots, shards[1]!.slots] = [shards[1]!.slots, shards[0]!.slots];
  return configFrom(c);
}

beforeAll(async () => {
  [a, b] = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig([a.port, b.port]));
});
afterAll(async () => {
  await proxy?.close();
  await Promise.all([a?.stop(), b?.stop()]);
});

describe('memory across reloads that move keys', () => {
  it('a done migration and the topologies before it are collected; the keys are where the last layout puts them', async () => {
    for (let i = 0; i < 20; i++) expect(await redisCommand(proxy.port, 'SET', `mem:${i}`, String(i))).toBe('OK');
    const firstTopology = new WeakRef(proxy.topology);
    let firstMigration: WeakRef<object> | null = null;
    for (let i = 1; i <= 12; i++) {
      expect(proxy.reload(layout(i % 2 === 1))).toBeNull();
      const m = proxy.topology.migration;
      expect(m).not.toBeNull();
      firstMigration ??= new WeakRef(m!);
      await waitFor(() => m!.state === 'done', `migration ${i} done`, 30_000);
    }
    // Weak targets stay alive until the current job ends: collect from a later turn.
    await new Promise((r) => setImmediate(r));
    gc();
    expect(firstTopology.deref()).toBeUndefined();
    expect(firstMigration!.deref()).toBeUndefined();
    // Twelve swaps: the layout is the first one again, and every key was moved back and forth.
    for (let i = 0; i < 20; i++) expect(await redisCommand(proxy.port, 'GET', `mem:${i}`)).toBe(String(i));
    const onA = Number(await redisCommand(a.port, 'DBSIZE'));
    const onB = Number(await redisCommand(b.port, 'DBSIZE'));
    expect(onA + onB).toBe(20);
  });
});
