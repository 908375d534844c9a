// SCAN, KEYS and RANDOMKEY over three shards (slots and ring mode) and a real Redis Cluster: ioredis's scanStream
// and node-redis's scanIterator see every key exactly once while nothing changes; MATCH, COUNT and TYPE reach the
// shards; the cursor is a plain unsigned integer that another keymux with the same shards continues (no state in
// keymux); bad cursors are refused as Redis refuses them; KEYS merges every shard; RANDOMKEY finds the only key
// wherever it is, and nil when there is none.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import type { Proxy } from '../../src/proxy.js';

const N = 3000;

/** N keys through keymux: strings, every 5th a hash, every 7th a set. */
async function load(port: number, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  const cmds: string[][] = [];
  for (let i = 0; i < N; i++) {
    const key = `${prefix}:${i}`;
    keys.push(key);
    if (i % 5 === 0) cmds.push(['HSET', key, 'f', String(i)]);
    else if (i % 7 === 0) cmds.push(['SADD', key, String(i)]);
    else cmds.push(['SET', key, String(i)]);
  }
  const replies = await redisCommands(port, cmds, { timeoutMs: 30_000 });
  expect(replies.filter((r) => r instanceof Error)).toEqual([]);
  return keys;
}

function counts(keys: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}

async function scanStream(c: Redis, options: { match?: string; count?: number; type?: string } = {}) {
  const seen: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = c.scanStream(options);
    s.on('data', (batch: string[]) => seen.push(...batch));
    s.on('end', resolve);
    s.on('error', reject);
  });
  return seen;
}

function walkChecks(getProxy: () => Proxy, getClient: () => Redis, prefix: string, expectedShards: number) {
  let keys: string[];

  it('every key exactly once through ioredis scanStream and node-redis scanIterator', async () => {
    const proxy = getProxy();
    expect(proxy.topology.shards.length).toBe(expectedShards);
    keys = await load(proxy.port, prefix);
    const viaIoredis = await scanStream(getClient(), { match: `${prefix}:*` });
    const m = counts(viaIoredis);
    expect(m.size).toBe(N);
    expect([...m.values()].every((n) => n === 1)).toBe(true);
    expect(keys.every((k) => m.has(k))).toBe(true);

    const nr = createClient({ socket: { port: proxy.port } });
    await nr.connect();
    try {
      const seen: string[] = [];
      for await (const batch of nr.scanIterator({ MATCH: `${prefix}:*`, COUNT: 100 })) seen.push(...batch);
      const n = counts(seen);
      expect(n.size).toBe(N);
      expect([...n.values()].every((x) => x === 1)).toBe(true);
    } finally {
      await nr.quit();
    }
  });

  it('passes MATCH, COUNT and TYPE to the shards', async () => {
    const c = getClient();
    const matched = await scanStream(c, { match: `${prefix}:1*` });
    expect(new Set(matched)).toEqual(new Set(keys.filter((k) => k.startsWith(`${prefix}:1`))));
    const hashes = await scanStream(c, { match: `${prefix}:*`, type: 'hash' });
    expect(new Set(hashes)).toEqual(new Set(keys.filter((_, i) => i % 5 === 0)));
    // A large COUNT takes fewer round trips than the default 10.
    let calls = 0;
    let cursor = '0';
    do {
      const [next, page] = await c.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      expect(next).toMatch(/^\d+$/);
      calls++;
      cursor = next;
      expect(page.length).toBeLessThanOrEqual(2000);
    } while (cursor !== '0');
    expect(calls).toBeLessThan(N / 10);
    await expect(c.call('SCAN', '0', 'TYPE')).rejects.toThrow(/syntax error/);
  });

  it('reads cursors as Redis does: refuses what is not an unsigned 64-bit integer', async () => {
    const c = getClient();
    for (const bad of ['abc', '1.5', '18446744073709551616', ' 1', '-'])
      await expect(c.scan(bad), bad).rejects.toThrow('ERR invalid cursor');
    // strtoul's leniency, as in Redis: "" and "+0" start a walk; "-1" is 2^64 - 1 (some position of a walk).
    for (const odd of ['', '+0', '-1', '18446744073709551615']) expect((await c.scan(odd))[0], odd).toMatch(/^\d+$/);
    await expect(c.call('SCAN')).rejects.toThrow("ERR wrong number of arguments for 'scan' command");
  });

  it('merges KEYS from every shard and finds the one RANDOMKEY wherever it is', async () => {
    const c = getClient();
    expect(new Set(await c.keys(`${prefix}:2*`))).toEqual(new Set(keys.filter((k) => k.startsWith(`${prefix}:2`))));
    expect(await c.dbsize()).toBeGreaterThanOrEqual(N);
    expect(keys).toContain(await c.randomkey());
    expect(await c.flushall()).toBe('OK');
    expect(await c.randomkey()).toBeNull();
    expect(await c.keys('*')).toEqual([]);
    for (let i = 0; i < 9; i++) {
      const only = `only-${i}`;
      await c.set(only, '1');
      expect(await c.randomkey()).toBe(only);
      await c.del(only);
    }
  });
}

describe('slots and ring mode', () => {
  let backends: RedisProcess[];
  beforeAll(async () => {
    backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all(backends.map((b) => b.stop()));
  });

  for (const mode of ['slots', 'ring'] as const) {
    describe(`${mode} mode`, () => {
      let proxy: Proxy;
      let c: Redis;
      beforeAll(async () => {
        for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
        const ports = backends.map((b) => b.port);
        proxy = await startKeymux(mode === 'slots' ? slotsConfig(ports) : ringConfig(ports));
        c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
        await c.connect();
      });
      afterAll(async () => {
        c.disconnect();
        await proxy.close();
      });
      walkChecks(
        () => proxy,
        () => c,
        `sc-${mode}`,
        3,
      );
    });
  }

  it('a cursor is plain data: a second keymux with the same shards continues it', async () => {
    for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
    const ports = backends.map((b) => b.port);
    const first = await startKeymux(slotsConfig(ports));
    const second = await startKeymux(slotsConfig(ports));
    const a = new Redis({ port: first.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    const b = new Redis({ port: second.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await a.connect();
      await b.connect();
      const keys = await load(first.port, 'handoff');
      const seen: string[] = [];
      let cursor = '0';
      let turn = 0;
      do {
        // Alternate between the two keymux instances, page by page.
        const [next, page] = await (turn++ % 2 === 0 ? a : b).scan(cursor, 'COUNT', 50);
        seen.push(...page);
        cursor = next;
      } while (cursor !== '0');
      const m = counts(seen);
      expect(m.size).toBe(keys.length);
      expect([...m.values()].every((n) => n === 1)).toBe(true);
      expect(turn).toBeGreaterThan(10);
    } finally {
      a.disconnect();
      b.disconnect();
      await first.close();
      await second.close();
    }
  });
});

describe('cluster mode', () => {
  let cluster: RedisCluster;
  let proxy: Proxy;
  let c: Redis;
  beforeAll(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 0 });
    proxy = await startKeymux({ mode: 'cluster', cluster: { seeds: cluster.seeds() } });
    c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.connect();
  }, 120_000);
  afterAll(async () => {
    c?.disconnect();
    await proxy?.close();
    await cluster?.stop();
  });
  walkChecks(
    () => proxy,
    () => c,
    'sc-cluster',
    3,
  );
});
