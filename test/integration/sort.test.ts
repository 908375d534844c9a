// SORT / SORT_RO that keymux runs itself (keyspace/sort.ts): BY and GET patterns with `*`, and STORE on another
// shard, in slots and ring mode over three real redis-servers. The oracle is a fourth redis-server holding the same
// data, asked the same commands directly: every reply through keymux must equal Redis's own (element order
// included; no two ALPHA weights are equal, since Redis leaves the order of ALPHA ties unspecified), for lists, sets and sorted sets, numeric and ALPHA, ASC/DESC, LIMIT, missing and wrong-type weights,
// hash fields, GET #, several GETs, STORE (read back with LRANGE) and the errors (syntax, LIMIT, bad double,
// WRONGTYPE). The weights and GET keys are spread over every shard (checked). Inside MULTI and in cluster mode the
// pattern forms are refused with keymux's error; a plain SORT is still forwarded to its shard.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let oracle: RedisProcess;
let direct: Redis;

beforeAll(async () => {
  [oracle, ...shards] = await Promise.all([startRedis(), startRedis(), startRedis(), startRedis()]);
  direct = new Redis({ port: oracle.port });
});
afterAll(async () => {
  direct.disconnect();
  await Promise.all([oracle, ...shards].map((s) => s.stop()));
});

/** The same data through `c` and on the oracle. */
async function load(c: Redis): Promise<void> {
  for (const r of [c, direct]) {
    await r.flushall();
    const ids = Array.from({ length: 40 }, (_, i) => String(i));
    await r.rpush('tosort', ...ids);
    await r.sadd('tosort-set', ...ids);
    await r.zadd('tosort-z', ...ids.flatMap((id) => [String(100 - Number(id)), id]));
    await r.rpush('words', 'pear', 'apple', 'fig', 'banana', 'kiwi');
    await r.sadd('wordset', 'pear', 'apple', 'fig', 'banana', 'kiwi');
    for (const id of ids) {
      const n = Number(id);
      if (n % 7 !== 3) await r.set(`weight_${id}`, String((n * 37) % 11)); // some missing: weight 0
      await r.hset(`wobj_${id}`, 'weight', String((n * 13) % 5), 'name', `name-${id}`);
      await r.set(`alpha_${id}`, `w${String((n * 17) % 41).padStart(2, '0')}`); // unique: ALPHA ties have no set order
    }
    await r.del('weight_5');
    await r.lpush('weight_5', 'x'); // a weight key of the wrong type: no weight
    await r.mset(
      'price_pear',
      '3.5',
      'price_apple',
      '12',
      'price_fig',
      '7.25',
      'price_banana',
      '0.5',
      'price_kiwi',
      '10',
    );
    await r.rpush('bad', '1', '2');
    await r.mset('bd_1', '10', 'bd_2', 'not-a-double');
    await r.set('str', 'v');
  }
}

const QUERIES: string[][] = [
  ['SORT', 'tosort', 'BY', 'weight_*'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'DESC'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '5', '10'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '-3', '4'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '38', '10'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '50', '10'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '0', '-1'],
  ['SORT', 'tosort', 'BY', 'wobj_*->weight'],
  ['SORT', 'tosort', 'BY', 'wobj_*->weight', 'GET', '#', 'GET', 'wobj_*->name', 'GET', 'weight_*'],
  ['SORT', 'tosort', 'BY', 'alpha_*', 'ALPHA'],
  ['SORT', 'tosort', 'BY', 'alpha_*', 'ALPHA', 'DESC', 'LIMIT', '2', '7'],
  ['SORT', 'tosort', 'GET', 'weight_*'],
  ['SORT', 'tosort', 'GET', '#', 'GET', 'nostar', 'GET', 'wobj_*->'],
  ['SORT', 'tosort', 'BY', 'nosort', 'GET', 'wobj_*->name', 'LIMIT', '3', '4'],
  ['SORT', 'tosort-set', 'BY', 'weight_*', 'GET', '#'],
  ['SORT', 'tosort-z', 'BY', 'weight_*'],
  ['SORT', 'tosort-z', 'BY', 'nosort', 'GET', 'weight_*', 'DESC', 'LIMIT', '0', '5'],
  ['SORT', 'words', 'BY', 'price_*', 'GET', '#', 'GET', 'price_*'],
  ['SORT', 'wordset', 'BY', 'price_*', 'ALPHA', 'GET', 'price_*'],
  ['SORT', 'words', 'ALPHA', 'GET', 'price_*'],
  ['SORT_RO', 'tosort', 'BY', 'weight_*', 'GET', '#'],
  ['SORT', 'nosuchkey', 'BY', 'weight_*'],
  // Errors: Redis's words.
  ['SORT', 'bad', 'BY', 'bd_*'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', 'x', '1'],
  ['SORT', 'tosort', 'BY', 'weight_*', 'FOO'],
  ['SORT', 'str', 'BY', 'weight_*'],
  ['SORT_RO', 'tosort', 'BY', 'weight_*', 'STORE', 'x'],
];

/** `SORT ... STORE dst` then the stored list, as one comparable value. */
const STORES: string[][] = [
  ['SORT', 'tosort', 'BY', 'weight_*', 'STORE', 'sorted-a'],
  ['SORT', 'tosort', 'BY', 'wobj_*->weight', 'GET', 'nostar', 'GET', '#', 'STORE', 'sorted-b'],
  ['SORT', 'tosort', 'BY', 'nosort', 'STORE', 'sorted-c'],
  ['SORT', 'wordset', 'BY', 'nosort', 'STORE', 'sorted-d'], // a set stored unsorted: sorted ALPHA by Redis
  ['SORT', 'tosort', 'LIMIT', '0', '5', 'DESC', 'STORE', 'sorted-e'],
  ['SORT', 'nosuchkey', 'BY', 'weight_*', 'STORE', 'sorted-a'], // an empty result deletes the destination
];

async function reply(c: Redis, cmd: string[]): Promise<unknown> {
  return c.call(cmd[0]!, ...cmd.slice(1)).then(
    (v) => v,
    (e: Error) => `error: ${e.message}`,
  );
}

async function compare(c: Redis): Promise<void> {
  for (const q of QUERIES) expect(await reply(c, q), q.join(' ')).toEqual(await reply(direct, q));
  for (const q of STORES) {
    const dst = q[q.length - 1]!;
    const mine = [await reply(c, q), await c.lrange(dst, 0, -1), await c.exists(dst)];
    const theirs = [await reply(direct, q), await direct.lrange(dst, 0, -1), await direct.exists(dst)];
    expect(mine, q.join(' ')).toEqual(theirs);
  }
}

for (const mode of ['slots', 'ring'] as const) {
  describe(`SORT with patterns and STORE across shards (${mode} mode)`, () => {
    let proxy: Proxy;
    let c: Redis;
    beforeAll(async () => {
      const ports = shards.map((s) => s.port);
      proxy = await startKeymux(
        mode === 'slots' ? slotsConfig(ports) : ringConfig(ports, { ring: { hash: 'murmur' } }),
      );
      c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
      await load(c);
    });
    afterAll(async () => {
      c.disconnect();
      await proxy.close();
    });

    it('the data it reads is on every shard', () => {
      const on = new Set(
        Array.from({ length: 40 }, (_, i) => proxy.topology.router.shardFor(Buffer.from(`weight_${i}`))),
      );
      expect(on.size).toBe(3);
    });

    it("answers every form exactly as one redis-server does (the oracle's replies)", async () => {
      await compare(c);
    });

    it('keeps the client order: a write before SORT is seen, one after is not', async () => {
      const [, sorted, ,] = await Promise.all([
        c.set('weight_0', '1000'),
        c.call('SORT', 'tosort', 'BY', 'weight_*', 'DESC', 'LIMIT', '0', '1'),
        c.set('weight_0', '-1'),
        c.get('weight_0'),
      ]);
      expect(sorted).toEqual(['0']);
      expect(await c.call('SORT', 'tosort', 'BY', 'weight_*', 'LIMIT', '0', '1')).toEqual(['0']);
      await c.set('weight_0', '0');
    });

    it('inside MULTI a pattern is refused and the transaction aborted; a plain SORT is queued', async () => {
      const res = await c
        .multi()
        .call('SORT', 'tosort', 'BY', 'weight_*')
        .exec()
        .catch((e: Error) => e.message);
      expect(String(res)).toMatch(/EXECABORT/);
      const ok = await c.multi().call('SORT', 'words', 'ALPHA').exec();
      expect(ok?.[0]?.[1]).toEqual(['apple', 'banana', 'fig', 'kiwi', 'pear']);
    });
  });
}
