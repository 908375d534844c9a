/**
 * Replies read into slabs (backend-connection.ts SlabReads): a shard's pooled connection reads into the unused rest
 * of a 64 KiB slab of its own and replies are views of it, so a reply held while later reads arrive (a slow
 * client's, one waiting for an earlier reply of its client from another shard, an MGET's parts) must never see its
 * bytes overwritten, including across slab changes and replies larger than a slab. Values of random sizes from 1 byte
 * to 200 KB, written straight to two real redis-servers, are read back through keymux by ioredis clients that
 * pipeline GETs and MGETs across both shards at once; every byte is compared.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;
const values = new Map<string, Buffer>();

/** A deterministic pseudo-random generator (a failing run can be replayed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(shards.map((s) => s.port)));
  const rand = rng(20261206);
  for (let i = 0; i < 300; i++) {
    const key = `slab:${i}`;
    // Mostly small values, some around and above the 64 KiB slab and its 8 KiB floor, a few of 200 KB.
    const r = rand();
    const size = r < 0.6 ? 1 + Math.floor(rand() * 64) : r < 0.9 ? 4000 + Math.floor(rand() * 70_000) : 200_000;
    const value = Buffer.alloc(size);
    for (let j = 0; j < size; j++) value[j] = (i * 31 + j * 7) & 0xff;
    values.set(key, value);
    const shard = keySlot(Buffer.from(key)) < 8192 ? shards[0]! : shards[1]!;
    await redisCommand(shard.port, 'SET', key, value);
  }
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

describe('replies read into slabs stay intact', () => {
  it('pipelined GETs and MGETs of values from 1 byte to 200 KB, 8 clients at once, every byte as written', async () => {
    const keys = [...values.keys()];
    const clients = Array.from({ length: 8 }, () => new Redis({ port: proxy.port, lazyConnect: true }));
    await Promise.all(clients.map((c) => c.connect()));
    try {
      const rounds = await Promise.all(
        clients.map(async (c, ci) => {
          const rand = rng(ci + 1);
          const pipe = c.pipeline();
          const asked: string[][] = [];
          for (let i = 0; i < 400; i++) {
            if (i % 10 === 9) {
              const some = Array.from({ length: 5 }, () => keys[Math.floor(rand() * keys.length)]!);
              pipe.mgetBuffer(...some);
              asked.push(some);
            } else {
              const k = keys[Math.floor(rand() * keys.length)]!;
              pipe.getBuffer(k);
              asked.push([k]);
            }
          }
          const replies = (await pipe.exec()) ?? [];
          let bad = 0;
          replies.forEach(([err, got], i) => {
            const want = asked[i]!.map((k) => values.get(k)!);
            const list = asked[i]!.length === 1 && !Array.isArray(got) ? [got] : (got as Buffer[]);
            if (err !== null || list.length !== want.length) bad++;
            else for (let j = 0; j < want.length; j++) if (!want[j]!.equals(list[j] as Buffer)) bad++;
          });
          return { bad, replies: replies.length };
        }),
      );
      expect(rounds.map((r) => r.replies)).toEqual(Array(8).fill(400));
      expect(rounds.map((r) => r.bad)).toEqual(Array(8).fill(0));
    } finally {
      for (const c of clients) c.disconnect();
    }
  }, 60_000);
});
