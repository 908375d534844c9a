// SCAN while a reload moves slots (slots mode, migration on): a walk begun before the reload, whose first shard
// was already walked when that shard's slots were swapped with the last shard's, still returns every key (keys
// moving from the shard not yet walked to the one already walked are found where they went), and so does a walk
// begun while the migration is still moving keys. Without keymux's epoch-filtered phases the first walk misses
// the moved keys: the test checks they really moved away from the shard walked last. Then reloads that add or
// remove a shard half-way through the first shard's walk (slots and ring): every key is still returned.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { decodeCursor } from '../../src/keyspace/scan-cursor.js';
import type { Proxy } from '../../src/proxy.js';

const N = 30_000;
let backends: RedisProcess[];

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
});

function config(ranges: [string, string, string]) {
  return {
    mode: 'slots',
    shards: backends.map((b, i) => ({ name: 'abc'[i], address: b.address, slots: [ranges[i]] })),
  };
}
const BEFORE: [string, string, string] = ['0-5460', '5461-10922', '10923-16383'];
const SWAPPED: [string, string, string] = ['10923-16383', '5461-10922', '0-5460'];

async function load(port: number, prefix: string): Promise<string[]> {
  const keys = Array.from({ length: N }, (_, i) => `${prefix}:${i}`);
  for (let i = 0; i < N; i += 10_000) {
    const replies = await redisCommands(
      port,
      keys.slice(i, i + 10_000).map((k) => ['SET', k, 'v']),
      { timeoutMs: 60_000 },
    );
    expect(replies.every((r) => r === 'OK')).toBe(true);
  }
  return keys;
}

async function dbsizes(): Promise<number[]> {
  return Promise.all(backends.map(async (b) => (await redisCommands(b.port, [['DBSIZE']]))[0] as number));
}

describe('SCAN while a reload moves slots', () => {
  let proxy: Proxy;
  let c: Redis;

  beforeAll(async () => {
    proxy = await startKeymux(config(BEFORE));
    c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.connect();
  });
  afterAll(async () => {
    c.disconnect();
    await proxy.close();
  });

  it('returns every key to a walk that spans the reload and the migration', async () => {
    const keys = await load(proxy.port, 'mv');
    const sizesBefore = await dbsizes();
    expect(sizesBefore.every((n) => n > N / 4)).toBe(true);
    const seen = new Set<string>();
    let cursor = '0';
    // Walk until the first shard is done and the second begun.
    do {
      const [next, page] = await c.scan(cursor, 'COUNT', 50);
      for (const k of page) seen.add(k);
      cursor = next;
    } while (cursor !== '0' && decodeCursor(Buffer.from(cursor), 3)!.shard === 0);
    expect(cursor).not.toBe('0');
    const seenBeforeReload = seen.size;
    expect(seenBeforeReload).toBeGreaterThan(N / 4);
    expect(seenBeforeReload).toBeLessThan(N);

    // Shard a's slots and shard c's swap: c's keys move to a, walked already; a's move to c, not walked yet.
    expect(proxy.reload(configFrom(config(SWAPPED)))).toBeNull();
    expect(proxy.topology.migration?.active).toBe(true);
    let pages = 0;
    let pagesWhileMoving = 0;
    do {
      if (proxy.topology.migration?.active === true) pagesWhileMoving++;
      const [next, page] = await c.scan(cursor, 'COUNT', 50);
      for (const k of page) seen.add(k);
      cursor = next;
      pages++;
    } while (cursor !== '0');
    expect(pages).toBeGreaterThan(10);
    expect(pagesWhileMoving).toBeGreaterThan(0);
    expect(keys.filter((k) => !seen.has(k))).toEqual([]);
    expect(seen.size).toBe(N);

    // The keys really moved: everything that was on c is now on a, and the other way round.
    await waitFor(() => proxy.topology.migration?.active !== true, 'the migration to finish', 60_000, 50);
    const sizesAfter = await dbsizes();
    expect(sizesAfter).toEqual([sizesBefore[2], sizesBefore[1], sizesBefore[0]]);
  }, 120_000);

  it('returns every key to a walk begun while the migration is moving keys', async () => {
    const keys = await load(proxy.port, 'mv2');
    const all = new Set([...keys, ...Array.from({ length: N }, (_, i) => `mv:${i}`)]);
    expect(proxy.reload(configFrom(config(BEFORE)))).toBeNull();
    expect(proxy.topology.migration?.active).toBe(true);
    const seen = new Set<string>();
    let cursor = '0';
    do {
      const [next, page] = await c.scan(cursor, 'COUNT', 100);
      for (const k of page) seen.add(k);
      cursor = next;
    } while (cursor !== '0');
    expect([...all].filter((k) => !seen.has(k))).toEqual([]);
    await waitFor(() => proxy.topology.migration?.active !== true, 'the migration to finish', 60_000, 50);
    // Once nothing moves, a walk is a plain one again: every key exactly once.
    const again: string[] = [];
    cursor = '0';
    do {
      const [next, page] = await c.scan(cursor, 'COUNT', 1000);
      again.push(...page);
      cursor = next;
    } while (cursor !== '0');
    expect(again.length).toBe(all.size);
    expect(new Set(again).size).toBe(all.size);
  }, 120_000);
});

// A reload that adds or removes a shard during a walk (migration on, as by default: the keys of the slots or ring
// arcs that change owner move to the new shard, or off the removed one, so every key stays readable through keymux
// for the whole walk). The cursor is read with the shard count of the routing the walk began with, its shard
// numbers name that routing's shards, the added shards are walked at the end, and a removed shard is read through
// the migration's connection while its keys are still leaving. Before, the cursor was read with the new shard
// count: 20,000 keys, the reload half-way through the first shard, returned 4,000 to 13,000 of them and ended
// without an error.
describe('SCAN while a reload adds or removes a shard', () => {
  const KEYS = 20_000;
  let extra: RedisProcess;
  let all: RedisProcess[];
  beforeAll(async () => {
    extra = await startRedis();
    all = [...backends, extra];
  });
  afterAll(async () => {
    await extra.stop();
  });

  const ports = (picked: number[]): number[] => picked.map((i) => all[i].port);

  /**
   * Loads KEYS keys under `from`, walks until half of the first shard's share is seen, reloads to `to` and walks
   * on; every key must be returned. `check` runs once the migration is over, on the shards' sizes.
   */
  async function walkAcrossReload(
    from: ReturnType<typeof slotsConfig>,
    to: ReturnType<typeof slotsConfig>,
    fromShards: number,
    check: (sizes: number[]) => void,
    afterReload?: (c: Redis, cursor: string) => Promise<void>,
  ): Promise<void> {
    await Promise.all(all.map((b) => redisCommands(b.port, [['FLUSHALL']])));
    const proxy = await startKeymux(from);
    const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await c.connect();
      const keys = Array.from({ length: KEYS }, (_, i) => `sh:${i}`);
      const replies = await redisCommands(
        proxy.port,
        keys.map((k) => ['SET', k, 'v']),
        { timeoutMs: 60_000 },
      );
      expect(replies.every((r) => r === 'OK')).toBe(true);
      const seen = new Set<string>();
      let cursor = '0';
      do {
        const [next, page] = await c.scan(cursor, 'COUNT', 100);
        for (const k of page) seen.add(k);
        cursor = next;
      } while (seen.size < KEYS / fromShards / 2);
      expect(cursor).not.toBe('0');
      expect(proxy.reload(configFrom(to))).toBeNull();
      expect(proxy.topology.migration?.active).toBe(true);
      if (afterReload !== undefined) await afterReload(c, cursor);
      do {
        const [next, page] = await c.scan(cursor, 'COUNT', 100);
        for (const k of page) seen.add(k);
        cursor = next;
      } while (cursor !== '0');
      expect(keys.filter((k) => !seen.has(k)).length).toBe(0);
      await waitFor(() => proxy.topology.migration?.active !== true, 'the migration to finish', 60_000, 50);
      const sizes = await Promise.all(all.map(async (b) => (await redisCommands(b.port, [['DBSIZE']]))[0] as number));
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(KEYS);
      check(sizes);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  }

  it('slots: 3 shards -> 4 (keys move to the added shard)', async () => {
    await walkAcrossReload(slotsConfig(ports([0, 1, 2])), slotsConfig(ports([0, 1, 2, 3])), 3, (sizes) =>
      expect(sizes[3]).toBeGreaterThan(KEYS / 8),
    );
  }, 120_000);

  it("slots: 4 shards -> 3 (the removed shard's keys move off it)", async () => {
    await walkAcrossReload(slotsConfig(ports([0, 1, 2, 3])), slotsConfig(ports([0, 1, 2])), 4, (sizes) =>
      expect(sizes[3]).toBe(0),
    );
  }, 120_000);

  it('ring: 3 servers -> 2', async () => {
    await walkAcrossReload(ringConfig(ports([0, 1, 2])), ringConfig(ports([0, 1])), 3, (sizes) =>
      expect(sizes[2]).toBe(0),
    );
  }, 120_000);

  it('ring: 2 servers -> 3', async () => {
    await walkAcrossReload(ringConfig(ports([0, 1])), ringConfig(ports([0, 1, 2])), 2, (sizes) =>
      expect(sizes[2]).toBeGreaterThan(KEYS / 8),
    );
  }, 120_000);

  it('slots: the shard being walked is removed; its keys still there are read through the migration', async () => {
    const before = slotsConfig(ports([0, 1, 2]));
    await walkAcrossReload(
      before,
      slotsConfig(ports([1, 2])),
      3,
      (sizes) => expect(sizes[0]).toBe(0),
      async (c, cursor) => {
        // The next page is the removed shard's own: what is still on it, not an empty page.
        const [, page] = await c.scan(cursor, 'COUNT', 100_000);
        expect(page.length).toBeGreaterThan(0);
      },
    );
  }, 120_000);
});
