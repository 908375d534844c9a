/**
 * Session connections of a node that leaves the topology (a reload drops a shard): idle ones are closed at once,
 * not after backend.session_connections.idle_timeout_s (here 0: never), and one still leased by a client (a
 * WATCH) is closed when the client gives it back, so the removed redis-server ends up with no connection from
 * keymux at all and can be decommissioned. The session gauges stop listing the node. Real redis-servers, ioredis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { configFrom, slotsConfig, startKeymux } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

/** A key whose slot is in the upper half (shard b of a two-shard slotsConfig). */
function keyOnSecondShard(prefix: string): string {
  for (let i = 0; ; i++) if (keySlot(Buffer.from(`${prefix}${i}`)) >= 8192) return `${prefix}${i}`;
}

/** Connections the redis-server on `port` has, the asking one excluded. */
async function clientsOf(port: number): Promise<number> {
  const list = String(await redisCommand(port, 'CLIENT', 'LIST'));
  return list.split('\n').filter((l) => l.trim() !== '').length - 1;
}

async function waitUntil(pred: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // The redis-server tells of a closed connection only when asked: poll it, bounded.
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('session connections of a removed node', () => {
  let a: RedisProcess;
  let b: RedisProcess;
  let proxy: Proxy;
  const extra = {
    backend: { session_connections: { idle_timeout_s: 0 } },
    migration: { enabled: false },
  };

  beforeAll(async () => {
    [a, b] = await Promise.all([startRedis(), startRedis()]);
    proxy = await startKeymux(slotsConfig([a.port, b.port], extra));
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('closes idle ones at the reload and a leased one when it is given back; the node keeps no connection', async () => {
    const key = keyOnSecondShard('retire:');
    const idleUser = new Redis(proxy.port, '127.0.0.1');
    const watcher = new Redis(proxy.port, '127.0.0.1');
    // Two session connections to b: one leased by a WATCH, one left idle by a transaction that ran meanwhile.
    expect(await watcher.watch(key)).toBe('OK');
    expect(await idleUser.multi().set(key, '1').get(key).exec()).toEqual([
      [null, 'OK'],
      [null, '1'],
    ]);
    const onB = () => proxy.sessions.gauges().find((g) => g.address === b.address);
    expect(onB()).toMatchObject({ leased: 1, idle: 1 });

    expect(proxy.reload(configFrom(slotsConfig([a.port], extra)))).toBeNull();
    // The idle one is closed now; the leased one stays with its client.
    expect(onB()).toMatchObject({ leased: 1, idle: 0 });
    // The WATCH's transaction ends (aborted: the reload moved its key); its connection is given back and closed.
    const tx = await watcher.multi().set(key, '2').exec();
    expect(tx).toBeNull();
    expect(onB()).toBeUndefined();
    // b: no connection from keymux is left (shared pool retired, both session connections closed).
    await waitUntil(async () => (await clientsOf(b.port)) === 0, `no keymux connection on ${b.address}`);
    // a serves the key now, with session connections of its own.
    expect(await idleUser.multi().set(key, '3').get(key).exec()).toEqual([
      [null, 'OK'],
      [null, '3'],
    ]);
    expect(await redisCommand(a.port, 'GET', key)).toBe('3');
    idleUser.disconnect();
    watcher.disconnect();
  });

  it('a node that comes back gets a session pool again', async () => {
    expect(proxy.reload(configFrom(slotsConfig([a.port, b.port], extra)))).toBeNull();
    const key = keyOnSecondShard('back:');
    const r = new Redis(proxy.port, '127.0.0.1');
    expect(await r.multi().set(key, 'x').exec()).toEqual([[null, 'OK']]);
    expect(await redisCommand(b.port, 'GET', key)).toBe('x');
    expect(proxy.sessions.gauges().find((g) => g.address === b.address)).toMatchObject({ leased: 0, idle: 1 });
    r.disconnect();
  });
});
