import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[] = [];
let proxy: Proxy;
let client: Redis;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(backends.map((b) => b.port)));
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true });
  await client.connect();
});

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('smoke', () => {
  it('sets and gets through keymux', async () => {
    expect(await client.set('smoke:a', '1')).toBe('OK');
    expect(await client.get('smoke:a')).toBe('1');
    expect(await client.mget('smoke:a', 'smoke:b', 'smoke:c', 'smoke:a')).toEqual(['1', null, null, '1']);
    expect(await client.mset('smoke:x', 'X', 'smoke:y', 'Y', 'smoke:z', 'Z')).toBe('OK');
    const found = await Promise.all(
      backends.map((b) => redisCommand(b.port, 'EXISTS', 'smoke:x', 'smoke:y', 'smoke:z')),
    );
    expect(found.reduce((a: number, b) => a + (b as number), 0)).toBe(3);
    expect(await client.del('smoke:x', 'smoke:y', 'smoke:z', 'smoke:nope')).toBe(3);
  });
});
