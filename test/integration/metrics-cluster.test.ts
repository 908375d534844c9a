/**
 * Observability in cluster mode: keymux in front of a real Redis Cluster (3 masters, 1 replica each). Per-shard
 * hit/miss counts are exact for keyed GETs and for MGETs split per slot across masters; /shards and
 * keymux_shard_info show every master with its replica and role; a MOVED absorbed after one slot moves to another
 * master shows up in keymux_redirections_total{type="moved"}; hot keys name the master that owns the key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import { getJson, samplesOf, scrape, valueOf, type Sample } from '../support/metrics.js';
import { keyHash } from '../../src/metrics/hotkeys.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
let client: Redis;
let admin: number;

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
  proxy = await startKeymux({
    // No periodic refresh: the test's own reshard must reach keymux as a MOVED, not as a rediscovery.
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 3_600_000 },
    admin: '127.0.0.1:0',
    metrics: { hot_keys: { sample_rate: 1, k: 5 } },
  });
  admin = proxy.adminPort!;
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  await client.connect();
}, 120_000);

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await cluster?.stop();
});

const shardOf = (key: string): string => proxy.topology.shards[proxy.topology.router.shardFor(Buffer.from(key))].name;

function hitMiss(before: Sample[], after: Sample[], shards: string[]): Record<string, [number, number]> {
  const v = (s: Sample[], name: string, shard: string): number =>
    samplesOf(s, name, { shard }).length === 0 ? 0 : valueOf(s, name, { shard });
  return Object.fromEntries(
    shards.map((shard) => [
      shard,
      [
        v(after, 'keymux_shard_hits_total', shard) - v(before, 'keymux_shard_hits_total', shard),
        v(after, 'keymux_shard_misses_total', shard) - v(before, 'keymux_shard_misses_total', shard),
      ],
    ]),
  );
}

describe('metrics in cluster mode', () => {
  it('counts hits and misses per master exactly, for keyed GETs and MGETs split per slot', async () => {
    const masters = proxy.topology.shards.map((s) => s.name);
    expect(masters.length).toBe(3);
    const keys = Array.from({ length: 60 }, (_, i) => `cm:${i}`);
    const stored = keys.filter((_, i) => i % 3 !== 0);
    for (const k of stored) await client.set(k, 'v');
    const want: Record<string, [number, number]> = Object.fromEntries(masters.map((m) => [m, [0, 0]]));
    const before = await scrape(admin);
    for (const k of keys) {
      for (let r = 0; r < 3; r++) await client.get(k);
      want[shardOf(k)][stored.includes(k) ? 0 : 1] += 3;
    }
    for (let j = 0; j < 20; j++) {
      const mk = Array.from({ length: 8 }, (_, t) => keys[(j * 11 + t * 7) % keys.length]);
      await client.mget(...mk);
      for (const k of mk) want[shardOf(k)][stored.includes(k) ? 0 : 1]++;
    }
    expect(hitMiss(before, await scrape(admin), masters)).toEqual(want);
  });

  it('shows every master with its replica in /shards and keymux_shard_info', async () => {
    const r = await getJson(admin, '/shards');
    expect(r.mode).toBe('cluster');
    expect(r.shards.length).toBe(3);
    const masters = cluster
      .masters()
      .map((m) => m.address)
      .sort();
    expect(r.shards.map((s: { address: string }) => s.address).sort()).toEqual(masters);
    for (const s of r.shards) {
      expect(s.role).toBe('master');
      expect(s.slots.length).toBeGreaterThan(0);
      expect(s.replicas.length).toBe(1);
      expect(s.replicas[0].role).toBe('replica');
    }
    const info = samplesOf(await scrape(admin), 'keymux_shard_info');
    expect(
      info
        .filter((x) => x.labels.role === 'master')
        .map((x) => x.labels.address)
        .sort(),
    ).toEqual(masters);
    expect(
      info
        .filter((x) => x.labels.role === 'replica')
        .map((x) => x.labels.address)
        .sort(),
    ).toEqual(
      cluster
        .replicas()
        .map((n) => n.address)
        .sort(),
    );
  });

  it('counts a MOVED absorbed after a slot moves to another master', async () => {
    // redis-cli moves the lowest slots of the source first: pick a key in the owner's lowest slot and move one slot.
    const ranges = await cluster.slotRanges();
    const [owner, ownerRanges] = [...ranges.entries()][0];
    const slot = Math.min(...ownerRanges.map(([a]) => a));
    let key = '';
    for (let i = 0; key === ''; i++) if (keySlot(Buffer.from(`cm:moving:${i}`)) === slot) key = `cm:moving:${i}`;
    await client.set(key, 'v');
    const target = cluster.masters().find((m) => m.id !== owner)!;
    await cluster.reshard(owner, target.id, 1);
    expect((await cluster.slotRanges()).get(target.id)!.some(([a, b]) => slot >= a && slot <= b)).toBe(true);
    const before = await scrape(admin);
    expect(await client.get(key)).toBe('v');
    const after = await scrape(admin);
    const moved =
      valueOf(after, 'keymux_redirections_total', { type: 'moved' }) -
      valueOf(before, 'keymux_redirections_total', { type: 'moved' });
    expect(moved).toBe(1);
    expect(valueOf(after, 'keymux_redirections_total', { type: 'moved' })).toBe(proxy.stats.moved);
    expect(valueOf(after, 'keymux_redirections_total', { type: 'ask' })).toBe(proxy.stats.ask);
    expect(valueOf(after, 'keymux_retries_total')).toBe(proxy.stats.retries);
  }, 60_000);

  it('names the master that owns a hot key', async () => {
    for (let i = 0; i < 200; i++) await client.get('cm:hot');
    const r = await getJson(admin, '/hotkeys');
    // No admin token here: the key is shown hashed.
    expect(r.keys[0]).toMatchObject({ key: keyHash(Buffer.from('cm:hot')), shard: shardOf('cm:hot') });
  });
});
