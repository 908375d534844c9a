// Request coalescing end to end against real redis-servers: a stampede of 200 clients reading one missing key
// reaches the shard as a handful of GETs (the shard's own INFO commandstats says so), every client gets the
// right reply in its own order, and a write in between ends coalescing, so a client reads its own write.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let shard: RedisProcess;
let proxy: Proxy;
let clients: Redis[] = [];

/** cmdstat_<name>:calls from the shard's own INFO commandstats. */
async function calls(name: string): Promise<number> {
  const info = String(await redisCommand(shard.port, 'INFO', 'commandstats'));
  const m = new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(info);
  return m === null ? 0 : Number(m[1]);
}

function coalescedTotal(): number {
  let n = 0;
  for (const st of proxy.topology.stats.shards.values()) n += st.coalesced;
  return n;
}

beforeAll(async () => {
  shard = await startRedis({ args: ['--enable-debug-command', 'yes'] });
  proxy = await startKeymux(slotsConfig([shard.port]));
  clients = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await c.connect();
      return c;
    }),
  );
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  await shard?.stop();
});

describe('request coalescing', () => {
  it('200 clients reading one missing key at once: the shard receives a handful of GETs', async () => {
    // Keep the shard busy for a moment so that all 200 GETs are surely in keymux while the first is in flight.
    const sleeper = redisCommand(shard.port, 'DEBUG', 'SLEEP', '0.3');
    await redisCommand(shard.port, 'CONFIG', 'RESETSTAT').catch(() => undefined);
    const before = coalescedTotal();
    const replies = await Promise.all(clients.map((c) => c.get('stampede:missing')));
    await sleeper;
    expect(replies.every((r) => r === null)).toBe(true);
    const gets = await calls('get');
    expect(gets).toBeGreaterThanOrEqual(1);
    expect(gets).toBeLessThanOrEqual(5);
    expect(coalescedTotal() - before).toBe(200 - gets);
  });

  it('coalesced clients keep their own order and get the value their read was concurrent with', async () => {
    await redisCommand(shard.port, 'SET', 'co:k', 'v1');
    // Each client pipelines GET co:k, then a command of its own: replies come back in each client's order.
    const out = await Promise.all(
      clients.slice(0, 50).map(async (c, i) => {
        const res = await c.pipeline().get('co:k').echo(`mine-${i}`).get('co:k').exec();
        return res?.map(([e, v]) => (e ? String(e) : v));
      }),
    );
    out.forEach((r, i) => expect(r).toEqual(['v1', `mine-${i}`, 'v1']));
  });

  it('a write in between ends coalescing: a client reads its own write', async () => {
    await redisCommand(shard.port, 'SET', 'co:w', '0');
    for (let round = 1; round <= 20; round++) {
      const sleeper = redisCommand(shard.port, 'DEBUG', 'SLEEP', '0.02');
      // Readers start a flight; the writer then writes and reads in one pipeline: its read must see its write.
      const readers = clients.slice(0, 20).map((c) => c.get('co:w'));
      const writer = clients[100].pipeline().set('co:w', String(round)).get('co:w').exec();
      const [res] = await Promise.all([writer, ...readers]);
      await sleeper;
      expect(res?.[1]?.[1]).toBe(String(round));
    }
  });

  it('different command bytes are not coalesced together', async () => {
    await redisCommand(shard.port, 'HSET', 'co:h', 'a', '1', 'b', '2');
    const sleeper = redisCommand(shard.port, 'DEBUG', 'SLEEP', '0.1');
    const [a, b, all] = await Promise.all([
      clients[0].hget('co:h', 'a'),
      clients[1].hget('co:h', 'b'),
      clients[2].hgetall('co:h'),
    ]);
    await sleeper;
    expect([a, b, all]).toEqual(['1', '2', { a: '1', b: '2' }]);
  });
});
