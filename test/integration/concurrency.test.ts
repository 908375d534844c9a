// 100 concurrent clients each pipelining 1,000 commands (SET, GET, INCR, MGET across shards, DEL) through keymux
// at once; every reply is checked against the client's own request. Any reply delivered to the wrong client or
// out of order shows up as a value that belongs to another key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[];
let proxy: Proxy;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      { backend: { connections: 2 } },
    ),
  );
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

async function runClient(id: number): Promise<number> {
  const c = new Redis({ port: proxy.port, lazyConnect: true, enableAutoPipelining: false });
  await c.connect();
  const pipe = c.pipeline();
  const expected: unknown[] = [];
  for (let i = 0; i < 1000; i++) {
    const key = `cc:${id}:${i % 50}`;
    switch (i % 5) {
      case 0:
        pipe.set(key, `${id}:${i}`);
        expected.push('OK');
        break;
      case 1:
        pipe.get(`cc:${id}:${(i - 1) % 50}`);
        expected.push(`${id}:${i - 1}`);
        break;
      case 2:
        pipe.incr(`cc:${id}:counter`);
        expected.push(Math.floor(i / 5) + 1);
        break;
      case 3:
        pipe.mget(`cc:${id}:${(i - 3) % 50}`, `cc:${id}:counter`, `cc:${id}:missing`);
        expected.push([`${id}:${i - 3}`, String(Math.floor(i / 5) + 1), null]);
        break;
      default:
        pipe.echo(`${id}/${i}`);
        expected.push(`${id}/${i}`);
    }
  }
  const results = await pipe.exec();
  c.disconnect();
  let wrong = 0;
  results?.forEach(([err, value], i) => {
    if (err !== null || JSON.stringify(value) !== JSON.stringify(expected[i])) wrong++;
  });
  return wrong + (results?.length === 1000 ? 0 : 1000);
}

describe('concurrency', () => {
  it('100 clients x 1,000 pipelined commands: every reply matches its request', async () => {
    const wrong = await Promise.all(Array.from({ length: 100 }, (_, id) => runClient(id)));
    expect(wrong.reduce((a, b) => a + b, 0)).toBe(0);
  });
});
