// The near cache against real redis-servers: hot keys are served from keymux memory, and no read returns a value
// older than the last write whose invalidation was delivered — whoever wrote it (a client of the same keymux, a
// second keymux, or a client talking to the shard directly) — over 100,000+ reads while a shard is killed and
// restarted, an invalidation channel is cut with CLIENT KILL, and the topology is reloaded. A client that writes
// through the keymux never reads older than its own last write. Memory stays within max_bytes; keys with a TTL
// expire no later than in Redis; ring mode works too.
import { BUCKETS } from '../../src/metrics/hotkeys.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { configFrom, ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

const NEAR = { near_cache: { enabled: true, admit: 'all' } };

let shards: RedisProcess[];
let cached: Proxy; // keymux under test: near cache on
let other: Proxy; // a second keymux (no near cache) that other clients write through
const conns: Redis[] = [];

function client(port: number): Redis {
  const c = new Redis({ port, maxRetriesPerRequest: 0, retryStrategy: () => 20, enableOfflineQueue: true });
  c.on('error', () => undefined);
  conns.push(c);
  return c;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const channelsReady = (p: Proxy): boolean => {
  const ch = p.nearCache?.channels() ?? [];
  return ch.length === p.topology.shards.length && ch.every((c) => c.ready);
};

function nearHits(p: Proxy): number {
  let n = 0;
  for (const st of p.topology.stats.shards.values()) n += st.nearHits;
  return n;
}

beforeAll(async () => {
  // appendfsync always: a shard killed and restarted comes back with every acknowledged write.
  const aof = { args: ['--appendonly', 'yes', '--appendfsync', 'always'] };
  shards = await Promise.all([startRedis(aof), startRedis(aof)]);
  const ports = shards.map((s) => s.port);
  cached = await startKeymux(slotsConfig(ports, NEAR));
  other = await startKeymux(slotsConfig(ports));
  await until('invalidation channels', () => channelsReady(cached));
});

afterAll(async () => {
  for (const c of conns) c.disconnect();
  await cached?.close();
  await other?.close();
  await Promise.all((shards ?? []).map((s) => s.stop()));
});

describe('near cache: reads never older than a delivered write', () => {
  it('0 stale reads over 100,000+ reads with writers everywhere, a shard restart, a cut channel and a reload', async () => {
    const nc = cached.nearCache!;
    const N = 10;
    const direct = Array.from({ length: N }, (_, i) => `nc:d:${i}`); // written straight to the shards
    const remote = Array.from({ length: N }, (_, i) => `nc:x:${i}`); // written through the second keymux
    const own = Array.from({ length: N }, (_, i) => `nc:o:${i}`); // written through the keymux under test
    const all = [...direct, ...remote, ...own];
    const ownerPort = (k: string): number => shards[cached.topology.router.shardFor(Buffer.from(k))].port;
    const addressOf = (k: string): string => `127.0.0.1:${ownerPort(k)}`;
    for (const k of all) await redisCommand(ownerPort(k), 'SET', k, '0');

    // floor[k]: the newest version whose write is acknowledged and (for others' writes) whose invalidation reached
    // the keymux under test. A read that starts after that must return at least that version.
    const floor = new Map<string, number>(all.map((k) => [k, 0]));
    const writes = new Map<string, number>(all.map((k) => [k, 0])); // writes of each key not yet seen invalidated
    const seen = new Map<string, number>(all.map((k) => [k, 0]));
    const waiters = new Map<string, () => void>();
    nc.onInvalidation = (address, key) => {
      if (key === null) {
        // The shard's entries were all dropped: every write acknowledged so far is as good as delivered.
        for (const k of all) {
          if (addressOf(k) !== address) continue;
          seen.set(k, writes.get(k)!);
          waiters.get(k)?.();
        }
        return;
      }
      const k = key.toString();
      if (!seen.has(k)) return;
      seen.set(k, seen.get(k)! + 1);
      if (seen.get(k)! >= writes.get(k)!) waiters.get(k)?.();
    };
    const delivered = (k: string): Promise<boolean> =>
      new Promise((resolve) => {
        if (seen.get(k)! >= writes.get(k)!) return resolve(true);
        const timer = setTimeout(() => {
          waiters.delete(k);
          resolve(false); // lost with its channel between ack and resubscription: not counted as delivered
        }, 1000);
        waiters.set(k, () => {
          clearTimeout(timer);
          waiters.delete(k);
          resolve(true);
        });
      });

    let stop = false;
    let reads = 0;
    let ownReads = 0;
    const violations: string[] = [];

    // Others' writers: one sequential writer per key class, so each write is one invalidation of its key.
    const othersWriter = async (keys: string[], via: (k: string) => Redis): Promise<void> => {
      let v = 0;
      while (!stop) {
        v++;
        const k = keys[v % keys.length];
        for (;;) {
          try {
            await via(k).set(k, String(v));
            break;
          } catch {
            if (stop) return;
            await new Promise((r) => setTimeout(r, 20)); // shard down: the same write again (SET is idempotent)
          }
        }
        writes.set(k, writes.get(k)! + 1);
        if (await delivered(k)) floor.set(k, Math.max(floor.get(k)!, v));
        else seen.set(k, writes.get(k)!);
      }
    };
    const directConns = new Map(shards.map((s) => [s.port, client(s.port)]));
    const viaOther = client(other.port);

    // Own writers: a client of the keymux under test writes, then reads its own key.
    const ownWriter = async (keys: string[], c: Redis, base: number): Promise<void> => {
      let v = base;
      for (let i = 0; !stop; i++) {
        v += 1000;
        const k = keys[i % keys.length];
        try {
          await c.set(k, String(v));
        } catch {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        floor.set(k, Math.max(floor.get(k)!, v));
        try {
          const got = Number(await c.get(k));
          ownReads++;
          if (got < v) violations.push(`own write: ${k} read ${got} after writing ${v}`);
        } catch {
          /* the shard is down */
        }
      }
    };

    const reader = async (c: Redis, seed: number): Promise<void> => {
      let x = seed;
      while (!stop) {
        const batch: Array<[string, number]> = [];
        for (let i = 0; i < 64; i++) {
          x = (x * 1103515245 + 12345) & 0x7fffffff;
          const k = all[x % all.length];
          batch.push([k, floor.get(k)!]);
        }
        const got = await Promise.allSettled(batch.map(([k]) => c.get(k)));
        got.forEach((r, i) => {
          if (r.status !== 'fulfilled') return;
          reads++;
          const [k, min] = batch[i];
          if (Number(r.value) < min) violations.push(`${k}: read ${r.value}, but ${min} was delivered before`);
        });
      }
    };

    const started = Date.now();
    const work = [
      othersWriter(direct, (k) => directConns.get(ownerPort(k))!),
      othersWriter(remote, () => viaOther),
      ownWriter(own.slice(0, 5), client(cached.port), 1),
      ownWriter(own.slice(5), client(cached.port), 2),
      ...Array.from({ length: 6 }, (_, i) => reader(client(cached.port), i + 1)),
    ];

    // Faults, while everything runs.
    await until('first reads', () => reads > 20_000, 20_000);
    await shards[1].stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    await shards[1].restart();
    await until('channels after the restart', () => channelsReady(cached));
    const afterRestart = reads;
    await until('reads after the restart', () => reads > afterRestart + 20_000, 20_000);
    await redisCommand(shards[0].port, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
    await until('channels after CLIENT KILL', () => channelsReady(cached));
    const afterKill = reads;
    await until('reads after the cut', () => reads > afterKill + 20_000, 20_000);
    expect(
      cached.reload(
        configFrom(
          slotsConfig(
            shards.map((s) => s.port),
            NEAR,
          ),
        ),
      ),
    ).toBeNull();
    await until('reads after the reload', () => reads >= 100_000 && Date.now() - started > 8000, 40_000);
    stop = true;
    await Promise.all(work);
    nc.onInvalidation = null;

    expect(violations.slice(0, 5)).toEqual([]);
    expect(reads).toBeGreaterThanOrEqual(100_000);
    expect(ownReads).toBeGreaterThan(100);
    // Not vacuous: the cache served a good share of the reads, and others' writes were seen invalidated.
    expect(nearHits(cached)).toBeGreaterThan(reads / 10);
    expect([...floor.entries()].filter(([k, v]) => direct.includes(k) && v > 0).length).toBeGreaterThan(0);
    expect([...floor.entries()].filter(([k, v]) => remote.includes(k) && v > 0).length).toBeGreaterThan(0);
  }, 90_000);
});

describe('near cache: memory, expiry, commands', () => {
  it('stays within max_bytes, evicting least recently used keys', async () => {
    const small = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        { near_cache: { enabled: true, admit: 'all', max_bytes: 65_536 } },
      ),
    );
    try {
      await until('channels', () => channelsReady(small));
      const c = client(small.port);
      const value = 'v'.repeat(100);
      const keys = Array.from({ length: 3000 }, (_, i) => `mem:${i}`);
      await c.mset(...keys.flatMap((k) => [k, value]));
      let maxSeen = 0;
      for (let i = 0; i < keys.length; i += 100) {
        await Promise.all(keys.slice(i, i + 100).map((k) => c.get(k)));
        maxSeen = Math.max(maxSeen, small.nearCache!.store.bytes);
      }
      const store = small.nearCache!.store;
      expect(maxSeen).toBeLessThanOrEqual(65_536);
      expect(store.counters.evictions).toBeGreaterThan(0);
      expect(store.size).toBeGreaterThan(100);
      // The most recent keys are the ones kept.
      expect(small.nearCache!.isCached(Buffer.from(keys[keys.length - 1]))).toBe(true);
      expect(small.nearCache!.isCached(Buffer.from(keys[0]))).toBe(false);
    } finally {
      await small.close();
    }
  });

  it('a key with a TTL expires in the near cache no later than in Redis', async () => {
    const c = client(cached.port);
    await c.set('ttl:k', 'x', 'PX', 300);
    expect(await c.get('ttl:k')).toBe('x');
    expect(await c.get('ttl:k')).toBe('x'); // from memory now
    expect(cached.nearCache!.isCached(Buffer.from('ttl:k'))).toBe(true);
    const expiresBy = Date.now() + 300;
    // Read until Redis's expiry time: the near cache must never answer 'x' to a read sent past it (the time is taken
    // before the read is sent: a reply that took long to be read, on a loaded machine, was counted as late).
    let late = 0;
    for (let sentAt = Date.now(); sentAt <= expiresBy + 100; sentAt = Date.now()) {
      if ((await c.get('ttl:k')) === 'x' && sentAt > expiresBy + 5) late++;
    }
    expect(late).toBe(0);
    expect(
      await redisCommand(shards[cached.topology.router.shardFor(Buffer.from('ttl:k'))].port, 'EXISTS', 'ttl:k'),
    ).toBe(0);
  });

  it('serves GET, HGET, HGETALL, EXISTS and MGET from memory, byte for byte', async () => {
    const c = client(cached.port);
    await c.set('cmd:s', 'hello');
    await c.hset('cmd:h', 'f', 'v', 'g', 'w');
    const read = (): Promise<unknown[]> =>
      Promise.all([c.get('cmd:s'), c.hget('cmd:h', 'f'), c.hgetall('cmd:h'), c.exists('cmd:s'), c.get('cmd:none')]);
    const first = await read();
    const before = nearHits(cached);
    const second = await read();
    expect(second).toEqual(first);
    expect(nearHits(cached) - before).toBe(5);
    expect(await c.mget('cmd:s', 'cmd:none')).toEqual(['hello', null]);
    expect(nearHits(cached) - before).toBe(7);
    await redisCommand(shards[cached.topology.router.shardFor(Buffer.from('cmd:h'))].port, 'HSET', 'cmd:h', 'f', 'z');
    await until('the invalidation', async () => (await c.hget('cmd:h', 'f')) === 'z', 5000);
    expect(await c.hgetall('cmd:h')).toEqual({ f: 'z', g: 'w' });
  });

  it('/hotkeys says which hot keys are cached, and a FLUSHALL through keymux empties the cache', async () => {
    const c = client(cached.port);
    // The earlier tests made thousands of keys hotter than this one: start a fresh window (every sub-window rotated
    // out) so the report's top K is this test's traffic.
    const hot = cached.observer.hotKeys!;
    for (let i = 0; i < BUCKETS; i++) hot.rotate();
    await c.set('hk:hot', '1');
    for (let i = 0; i < 300; i++) await c.get('hk:hot');
    const { hotKeysReport } = await import('../../src/metrics/endpoints.js');
    const report = hotKeysReport(cached) as { keys: Array<{ key: string; cached: boolean }> };
    expect(report.keys.find((k) => k.key === 'hk:hot')?.cached).toBe(true);
    await c.flushall();
    expect(cached.nearCache!.store.size).toBe(0);
    expect(await c.get('hk:hot')).toBeNull();
  });
});

describe('near cache: ring mode and admit: hot', () => {
  it('ring mode: cached, invalidated by a direct write; only hot keys admitted', async () => {
    const ring = await startKeymux(
      ringConfig(
        shards.map((s) => s.port),
        { near_cache: { enabled: true, admit: 'hot' }, metrics: { hot_keys: { k: 1, sample_rate: 1 } } },
      ),
    );
    try {
      await until('channels', () => channelsReady(ring));
      const c = client(ring.port);
      await c.set('ring:hot', 'a');
      await c.set('ring:cold', 'b');
      for (let i = 0; i < 200; i++) await c.get('ring:hot');
      ring.nearCache!.refreshHot();
      await c.get('ring:hot');
      await c.get('ring:cold');
      await c.get('ring:hot');
      expect(ring.nearCache!.isCached(Buffer.from('ring:hot'))).toBe(true);
      expect(ring.nearCache!.isCached(Buffer.from('ring:cold'))).toBe(false);
      const owner = shards.find(
        (s) => s.address === ring.topology.shards[ring.topology.router.shardFor(Buffer.from('ring:hot'))].address,
      )!;
      await redisCommand(owner.port, 'SET', 'ring:hot', 'z');
      await until('the invalidation', async () => (await c.get('ring:hot')) === 'z', 5000);
    } finally {
      await ring.close();
    }
  });
});
