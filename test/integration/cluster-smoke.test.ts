// keymux in front of a real Redis Cluster (3 masters + 3 replicas): keyed commands, per-slot fan-out reassembled
// in key order, CROSSSLOT for unsplittable multi-key commands across slots, and MOVED absorbed after a reshard.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { startKeymux, configFrom } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
let c: Redis;

beforeAll(async () => {
  cluster = await startCluster();
  // Periodic rediscovery far apart: the MOVED test must see keymux learn the move from MOVED, not from a refresh
  // that happened to run while redis-cli was resharding.
  proxy = await startKeymux({
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 600_000 },
  });
  c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await c.connect();
}, 120_000);

afterAll(async () => {
  c?.disconnect();
  await proxy?.close();
  await cluster?.stop();
});

describe('cluster mode', () => {
  it('discovers 3 masters with replicas and serves keyed and fan-out commands', async () => {
    expect(proxy.topology.shards.length).toBe(3);
    expect(proxy.topology.shards.every((s) => s.replicas.length === 1)).toBe(true);
    const keys = Array.from({ length: 200 }, (_, i) => `cs:${i}`);
    const args: string[] = [];
    for (const k of keys) args.push(k, `v-${k}`);
    expect(await c.mset(...args)).toBe('OK');
    expect(await c.mget(...keys, 'cs:none', keys[0])).toEqual([...keys.map((k) => `v-${k}`), null, `v-${keys[0]}`]);
    expect(await c.exists(...keys)).toBe(200);
    expect(await c.incr('cs:counter')).toBe(1);
    expect(await c.dbsize()).toBe(201);
    await expect(c.rename('cs:1', 'cs:2')).rejects.toThrow(/CROSSSLOT/);
    expect(await c.rename('{cs}:1', '{cs}:2').catch((e: Error) => e.message)).toMatch(/no such key/);
    expect(await c.del(...keys)).toBe(200);
  });

  it('absorbs MOVED after slots move to another master', async () => {
    const key = 'moving-key';
    await c.set(key, 'before');
    const slot = keySlot(Buffer.from(key));
    const ranges = await cluster.slotRanges();
    const owner = [...ranges.entries()].find(([, rs]) => rs.some(([a, b]) => slot >= a && slot <= b))![0];
    const target = cluster.masters().find((m) => m.id !== owner)!;
    // Move every slot of the owner that is <= our slot... simpler: move enough slots that ours is included.
    const ownerRanges = ranges.get(owner)!;
    const count = ownerRanges.reduce((n, [a, b]) => n + (b - a + 1), 0);
    await cluster.reshard(owner, target.id, count);
    expect(await redisCommand(target.port, 'GET', key)).toBe('before');
    const movedBefore = proxy.stats.moved;
    expect(await c.get(key)).toBe('before');
    expect(await c.set(key, 'after')).toBe('OK');
    expect(proxy.stats.moved).toBeGreaterThan(movedBefore);
    expect(await redisCommand(target.port, 'GET', key)).toBe('after');
  });

  it('picks up an added node and drops a removed one from its pools, without a restart', async () => {
    // A reload shortens the periodic rediscovery (5 s by default) so the test need not wait for it.
    expect(
      proxy.reload(
        configFrom({ mode: 'cluster', cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 300 } }),
      ),
    ).toBeNull();
    const added = await cluster.addMaster();
    await waitFor(
      () => proxy.topology.shards.some((sh) => sh.address === added.address),
      'keymux to discover the new master',
      20_000,
      50,
    );
    const pool = proxy.topology.shards.find((sh) => sh.address === added.address)!.pool;
    await promisify(execFile)('redis-cli', ['--cluster', 'del-node', cluster.seeds()[0], added.id], {
      timeout: 30_000,
    });
    await waitFor(
      () => !proxy.topology.shards.some((sh) => sh.address === added.address),
      'keymux to drop the removed node',
      20_000,
      50,
    );
    await waitFor(() => pool.connections.every((conn) => conn.state === 'closed'), 'its pool to close', 20_000, 50);
    expect(await c.set('after-removal', '1')).toBe('OK');
    expect(await c.get('after-removal')).toBe('1');
  });
});
