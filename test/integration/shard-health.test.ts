/**
 * Shard health against a frozen shard: a real redis-server stopped with SIGSTOP (as `docker pause` does) still
 * completes TCP connects from its listen backlog, so a connection that counted as ready once TCP connected read the
 * shard as up while every request to it timed out. Here keymux's connection to shard c times out, reconnects, and
 * must stay down (keymux_shard_up 0, /readyz counting 2 of 3 shards, /shards down with the handshake's
 * "did not answer") until the server answers again after SIGCONT, when requests are served again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import { getJson, httpGet, scrape, valueOf } from '../support/metrics.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

const CONNECT_TIMEOUT_MS = 300;
let backends: RedisProcess[] = [];
let proxy: Proxy;
let admin: number;
let client: Redis;

interface ShardsReport {
  shards: Array<{ name: string; state: string; connections: Array<{ state: string; last_error: string | null }> }>;
}

async function shardC(): Promise<ShardsReport['shards'][number]> {
  const report = await getJson<ShardsReport>(admin, '/shards');
  return report.shards.find((s) => s.name === 'c')!;
}

const shardUp = async (shard: string): Promise<number> => valueOf(await scrape(admin), 'keymux_shard_up', { shard });
const readyz = async (): Promise<string> => (await httpGet(admin, '/readyz')).body;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      {
        admin: { address: '127.0.0.1:0' },
        backend: { connect_timeout_ms: CONNECT_TIMEOUT_MS, timeout_ms: CONNECT_TIMEOUT_MS },
      },
    ),
  );
  admin = proxy.adminPort!;
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  await client.connect();
  await waitFor(async () => (await readyz()) === 'ready: 3/3 shards reachable\n', 'every shard connected');
});

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('a frozen shard', () => {
  it('reads as down while SIGSTOPped (its connection is not ready until it answers), and up again after SIGCONT', async () => {
    const frozen = backends[2];
    const key = keyOn(proxy, 2, 'frozen');
    await client.set(key, 'before');
    expect(await shardUp('c')).toBe(1);

    process.kill(frozen.pid, 'SIGSTOP');
    try {
      // The request times out (timeout_ms), the connection is reset and keymux reconnects: TCP connects, the
      // handshake's PING gets no answer within connect_timeout_ms.
      await expect(client.get(key)).rejects.toThrow(/timed out/);
      await waitFor(
        async () => (await shardC()).connections[0].last_error?.includes('did not answer') === true,
        'shard c reported as not answering',
      );
      // Never ready while frozen: the connection cycles between connecting, handshake and down.
      const c = await shardC();
      expect(c.state).not.toBe('ready');
      expect(await shardUp('c')).toBe(0);
      expect(await readyz()).toBe('ready: 2/3 shards reachable\n');
      await expect(client.get(key)).rejects.toThrow(/shard 'c'/);
    } finally {
      process.kill(frozen.pid, 'SIGCONT');
    }

    await waitFor(async () => (await shardUp('c')) === 1, 'shard c up again after SIGCONT');
    expect(await readyz()).toBe('ready: 3/3 shards reachable\n');
    expect((await shardC()).state).toBe('ready');
    expect(await client.get(key)).toBe('before');
  });
});
