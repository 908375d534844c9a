/**
 * A client blocked (BLPOP) on a shard when a reload gives its key to another shard: a push now goes to the new
 * owner, so the call would wait on the old one for good. keymux unblocks it there (the client gets nil, as on a
 * timeout), and the client's next BLPOP blocks on the new owner and gets the pushed item. A blocked call whose key
 * stayed is left alone. Real redis-servers, an in-process keymux, ioredis clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { configFrom } from '../support/keymux.js';
import { halvesConfig } from '../support/slot-layout.js';
import { waitFor } from '../support/fake-backend.js';
import { Proxy } from '../../src/proxy.js';
import { Gate } from '../support/gate.js';

let a: RedisProcess, b: RedisProcess, c: RedisProcess;

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
});

/** `low` owns slots 0-8191, b the rest. */
const layout = (low: RedisProcess) => configFrom({ ...halvesConfig(low, b), log: { level: 'silent' } });

async function blockedOn(s: RedisProcess): Promise<number> {
  const info = (await redisCommand(s.port, 'INFO', 'clients')) as string;
  return Number(/blocked_clients:(\d+)/.exec(info)?.[1] ?? -1);
}

describe('a blocked client across a reload that moves its key', () => {
  it('is unblocked with nil on the old owner; its next BLPOP gets the item pushed to the new owner', async () => {
    const proxy = await Proxy.start(layout(a));
    let moving = 'bq:0';
    for (let i = 0; proxy.topology.router.shardFor(Buffer.from(moving)) !== 0; i++) moving = `bq:${i}`;
    let staying = 'bs:0';
    for (let i = 0; proxy.topology.router.shardFor(Buffer.from(staying)) !== 1; i++) staying = `bs:${i}`;
    const waiter = new Redis({ port: proxy.port, lazyConnect: true });
    const other = new Redis({ port: proxy.port, lazyConnect: true });
    const pusher = new Redis({ port: proxy.port, lazyConnect: true });
    await Promise.all([waiter.connect(), other.connect(), pusher.connect()]);
    try {
      const first = waiter.blpop(moving, 0);
      const onB = other.blpop(staying, 0);
      await waitFor(async () => (await blockedOn(a)) === 1 && (await blockedOn(b)) === 1, 'both to block', 10_000);
      expect(proxy.reload(layout(c))).toBe(null);
      // Before the fix the call stayed blocked on a (the push below went to c) and this never resolved.
      expect(await first).toBe(null);
      expect(await blockedOn(a)).toBe(0);
      const second = waiter.blpop(moving, 0);
      await waitFor(async () => (await blockedOn(c)) === 1, 'the retry to block on c', 10_000);
      expect(await pusher.lpush(moving, 'item')).toBe(1);
      expect(await second).toEqual([moving, 'item']);
      // The call whose key stayed on b was not disturbed: it is still blocked and gets its item.
      expect(await blockedOn(b)).toBe(1);
      expect(await pusher.lpush(staying, 'kept')).toBe(1);
      expect(await onB).toEqual([staying, 'kept']);
    } finally {
      waiter.disconnect();
      other.disconnect();
      pusher.disconnect();
      await proxy.close();
    }
  }, 30_000);

  it('a BLPOP still on its way to the old owner when the reload comes is unblocked once it blocks there', async () => {
    const gate = await Gate.start(a.port);
    const proxy = await Proxy.start(layout({ address: gate.address } as RedisProcess));
    let moving = 'br:0';
    for (let i = 0; proxy.topology.router.shardFor(Buffer.from(moving)) !== 0; i++) moving = `br:${i}`;
    const waiter = new Redis({ port: proxy.port, lazyConnect: true });
    const pusher = new Redis({ port: proxy.port, lazyConnect: true });
    await Promise.all([waiter.connect(), pusher.connect()]);
    try {
      // A first BLPOP that times out leaves its session connection idle, its CLIENT ID known; the next one reuses it.
      expect(await waiter.blpop(moving, 0.05)).toBe(null);
      // That connection's next bytes (the BLPOP) are held at the gate: keymux counts the call blocked, the shard
      // has not seen it.
      const held = gate.holdFrom(moving);
      const first = waiter.blpop(moving, 0);
      await held;
      const unblockAnswered = gate.answered('UNBLOCK');
      expect(proxy.reload(layout(c))).toBe(null);
      // The first CLIENT UNBLOCK finds nothing blocked on a (0); the call then blocks there once released, and only
      // a later try ends it (before the fix it waited on a for good).
      await unblockAnswered;
      gate.release();
      expect(await first).toBe(null);
      const second = waiter.blpop(moving, 0);
      await waitFor(async () => (await blockedOn(c)) === 1, 'the retry to block on c', 10_000);
      expect(await pusher.lpush(moving, 'item')).toBe(1);
      expect(await second).toEqual([moving, 'item']);
    } finally {
      waiter.disconnect();
      pusher.disconnect();
      await proxy.close();
      await gate.close();
    }
  }, 30_000);
});
