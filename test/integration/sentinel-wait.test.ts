/**
 * The bound on waiting for a primary (issue 13), with real processes: 3 redis-sentinel monitor master "mz", a
 * primary with no replica, so its death cannot be failed over. With sentinel.failover_wait_ms 600:
 * - requests to the dead shard wait (nothing is answered at once, nothing hangs) and then get the clear
 *   "-ERR keymux: ... no reachable primary within sentinel.failover_wait_ms" error, in order; the other shard
 *   answers meanwhile;
 * - requests sent while the primary is down and that come back before the bound are sent to it when it returns
 *   (the sentinels still name it: no failover) and succeed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startSentinels, type SentinelSetup } from '../support/sentinel.js';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let ha: SentinelSetup;
let b: RedisProcess;
let proxy: Proxy;
let client: Redis;

const WAIT_MS = 600;

beforeAll(async () => {
  ha = await startSentinels({ masters: [{ name: 'mz', replicas: 0 }], sentinels: 3 });
  b = await startRedis();
  await ha.ready('mz', 0);
  proxy = await startKeymux({
    mode: 'slots',
    sentinel: { sentinels: ha.addresses(), failover_wait_ms: WAIT_MS },
    backend: { connect_timeout_ms: 200 },
    shards: [
      { name: 'z', sentinel_master: 'mz', slots: ['0-8191'] },
      { name: 'b', address: b.address, slots: ['8192-16383'] },
    ],
  });
  client = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 10_000 });
  await client.connect();
}, 60_000);

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await ha?.stop();
  await b?.stop('SIGKILL');
});

function keyOn(shard: 'z' | 'b', name: string): string {
  for (let i = 0; ; i++) {
    const key = `${name}{t${i}}`;
    if (keySlot(Buffer.from(key)) < 8192 === (shard === 'z')) return key;
  }
}

describe('waiting for a primary, bounded', () => {
  it('requests to a shard with no primary wait failover_wait_ms, then get a clear error; others are served', async () => {
    const kz = keyOn('z', 'w');
    const kb = keyOn('b', 'w');
    expect(await client.set(kz, '1')).toBe('OK');
    const primary = ha.masters[0]!.nodes[0]!;
    await primary.stop('SIGKILL');
    await waitFor(() => !proxy.topology.shards[0]!.pool.healthy, 'keymux to see the primary down', 5000);
    const t0 = Date.now();
    const results = await Promise.allSettled([client.get(kz), client.set(kz, '2'), client.get(kb)]);
    const elapsed = Date.now() - t0;
    expect(results[0]).toMatchObject({ status: 'rejected' });
    expect(results[1]).toMatchObject({ status: 'rejected' });
    const message = (results[0] as PromiseRejectedResult).reason.message as string;
    expect(message).toBe(
      `ERR keymux: shard z (sentinel master mz): no reachable primary within sentinel.failover_wait_ms ` +
        `(${WAIT_MS} ms); the command was not sent, retry it`,
    );
    expect(results[2]).toEqual({ status: 'fulfilled', value: null });
    // They waited (ioredis answers in order: the replies came once the bound passed), and not much longer.
    expect(elapsed).toBeGreaterThanOrEqual(WAIT_MS - 100);
    console.log(
      `SENTINEL wait: requests to a shard with no primary answered after ${elapsed} ms (bound ${WAIT_MS} ms)`,
    );

    // The primary comes back (no failover was possible): a request held meanwhile (by a keymux that waits longer)
    // is sent to it and succeeds.
    const patient = await startKeymux({
      mode: 'slots',
      sentinel: { sentinels: ha.addresses(), failover_wait_ms: 20_000 },
      shards: [
        { name: 'z', sentinel_master: 'mz', slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ],
    }).catch((err: Error) => err);
    // It starts although the primary is down: the sentinels still name it (a primary that is down is not a
    // config error).
    expect(patient).not.toBeInstanceOf(Error);
    const p2 = patient as Proxy;
    const c2 = new Redis({ port: p2.port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 30_000 });
    try {
      await c2.connect();
      const pending = c2.set(kz, '3');
      await waitFor(() => (p2.sentinel?.heldCount('z') ?? 0) > 0, 'the request to be held', 5000);
      await primary.restart();
      expect(await pending).toBe('OK');
      expect(await c2.get(kz)).toBe('3');
      expect(p2.sentinel?.failovers.get('z') ?? 0).toBe(0);
    } finally {
      c2.disconnect();
      await p2.close();
    }
  }, 30_000);
});
