/**
 * A WATCH held across a Sentinel failover (real processes: 3 redis-sentinel monitoring master "mw", a primary and
 * a replica; the failover is SENTINEL FAILOVER, so the old primary stays up and becomes a replica). The watch was
 * taken on the old primary: a write on the new one would not abort it there, so keymux aborts the transaction
 * (EXEC answers null, as for any failed WATCH) instead of running it where the watch no longer means anything. The
 * client's retry (WATCH again, MULTI, EXEC) runs on the new primary. ioredis through keymux.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startSentinels, type SentinelSetup } from '../support/sentinel.js';
import { redisCommand } from '../support/redis.js';
import { startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let ha: SentinelSetup;
let proxy: Proxy;
const clients: Redis[] = [];

beforeAll(async () => {
  ha = await startSentinels({ masters: [{ name: 'mw', replicas: 1 }], sentinels: 3 });
  await ha.ready('mw', 1);
  proxy = await startKeymux({
    mode: 'slots',
    sentinel: { sentinels: ha.addresses(), refresh_interval_ms: 200, failover_wait_ms: 10_000 },
    shards: [{ name: 's', sentinel_master: 'mw', slots: ['0-16383'] }],
  });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  await ha?.stop();
});

function client(): Redis {
  const c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
  clients.push(c);
  return c;
}

async function waitUntil(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // keymux learns of the failover from the sentinels' events; the test has no hook on it: poll, bounded.
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`not in time: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('WATCH across a Sentinel failover', () => {
  it('the transaction of a WATCH taken on the old primary is aborted (null); the retry runs on the new one', async () => {
    const watcher = client();
    const old = await ha.primaryAddress('mw');
    expect(proxy.topology.shards[0]!.address).toBe(old);
    expect(await watcher.set('w:k', '0')).toBe('OK');
    expect(await watcher.watch('w:k')).toBe('OK');

    const sentinelPort = Number(ha.addresses()[0]!.split(':')[1]);
    expect(String(await redisCommand(sentinelPort, 'SENTINEL', 'FAILOVER', 'mw'))).toBe('OK');
    const { address: next } = await ha.waitForPrimary('mw', old, 30_000);
    await waitUntil(() => proxy.topology.shards[0]!.address === next, `keymux on ${next}`);

    // The watched key was not touched, but the watch lives on the old primary: EXEC must not run the writes.
    expect(await watcher.multi().set('w:k', 'from-stale-watch').exec()).toBeNull();
    const nextPort = Number(next.split(':')[1]);
    expect(String(await redisCommand(nextPort, 'GET', 'w:k'))).toBe('0');

    // The client's retry watches and writes on the new primary.
    expect(await watcher.watch('w:k')).toBe('OK');
    expect(await watcher.multi().set('w:k', 'retried').exec()).toEqual([[null, 'OK']]);
    expect(String(await redisCommand(nextPort, 'GET', 'w:k'))).toBe('retried');
  });
});
