/**
 * Per-shard metrics of what goes over session (leased) connections: transactions and blocking commands on shard c
 * of three real redis-servers, driven by ioredis, counted exactly in keymux_shard_commands_total, _errors_total,
 * _hits_total, _misses_total and the shard latency histogram (differences between two scrapes). A transaction's
 * replies are MULTI's +OK, one +QUEUED per command and EXEC's array, whose error and hit/miss elements count as
 * the same commands sent alone would; a blocking command counts as a reply but its wait is not shard latency.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import { samplesOf, scrape, valueOf, type Sample } from '../support/metrics.js';
import type { Proxy } from '../../src/proxy.js';

const SHARDS = ['a', 'b', 'c'];
let backends: RedisProcess[] = [];
let proxy: Proxy;
let admin: number;
let client: Redis;

const delta = (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}): number => {
  const v = (s: Sample[]): number => (samplesOf(s, name, labels).length === 0 ? 0 : valueOf(s, name, labels));
  return v(after) - v(before);
};

/** A hash tag whose keys live on `shard`. */
function tagOn(shard: string): string {
  for (let i = 0; ; i++) {
    const tag = `{sess${i}}`;
    if (SHARDS[proxy.topology.router.shardFor(Buffer.from(tag))] === shard) return tag;
  }
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      { admin: { address: '127.0.0.1:0' } },
    ),
  );
  admin = proxy.adminPort!;
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true, enableAutoPipelining: false });
  await client.connect();
});

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('per-shard metrics over session connections', () => {
  it('counts 100 transactions and 20 BLPOPs on shard c: replies, errors and hits/misses in EXEC, latency without the waits', async () => {
    const t = tagOn('c');
    const before = await scrape(admin);
    for (let i = 0; i < 100; i++) {
      // GET reads the key just SET (hit) in even runs, a key never written (miss) in odd ones; LPUSH on the string
      // is a WRONGTYPE inside EXEC's reply.
      const res = await client
        .multi()
        .set(`${t}s${i}`, 'v')
        .get(i % 2 === 0 ? `${t}s${i}` : `${t}absent${i}`)
        .lpush(`${t}s${i}`, 'x')
        .exec();
      expect(res?.[1]).toEqual([null, i % 2 === 0 ? 'v' : null]);
      expect(res?.[2][0]?.message).toMatch(/^WRONGTYPE/);
    }
    for (let i = 0; i < 20; i++) expect(await client.blpop(`${t}empty`, 0.01)).toBeNull();
    const after = await scrape(admin);

    const opened = delta(before, after, 'keymux_session_connections_opened_total');
    expect(opened).toBeGreaterThan(0);
    // Per transaction: MULTI, 3 x QUEUED, EXEC; each BLPOP's nil; and each new session connection's CLIENT ID.
    expect(delta(before, after, 'keymux_shard_commands_total', { shard: 'c' })).toBe(100 * 5 + 20 + opened);
    expect(delta(before, after, 'keymux_shard_errors_total', { shard: 'c' })).toBe(100);
    expect(delta(before, after, 'keymux_shard_hits_total', { shard: 'c' })).toBe(50);
    expect(delta(before, after, 'keymux_shard_misses_total', { shard: 'c' })).toBe(50);
    // The BLPOPs' waits are not shard latency: every reply but theirs is in the histogram.
    expect(delta(before, after, 'keymux_shard_duration_seconds_count', { shard: 'c' })).toBe(100 * 5 + opened);
    for (const shard of ['a', 'b']) {
      expect(delta(before, after, 'keymux_shard_commands_total', { shard }), shard).toBe(0);
      expect(delta(before, after, 'keymux_shard_duration_seconds_count', { shard }), shard).toBe(0);
    }
  });
});
