/**
 * Sentinel discovery and replica reads in slots mode (issue 13), on real processes: 3 redis-sentinel monitoring
 * master "ra" (a primary and 2 replicas), beside a shard with a fixed address and one static replica.
 * - keymux learns the sentinel shard's primary and replicas from the sentinels (/shards, keymux_shard_role);
 * - read_from: replica: GETs land on the replicas (their own INFO commandstats count them, the primaries' do not),
 *   SETs on the primaries (no replica ever refused a write: errorstat_READONLY stays 0);
 * - a replica killed is skipped (the other serves); with no usable replica left, reads get a clear error, never
 *   silently the primary; a replica whose link to its primary is down (INFO replication) is skipped too, and
 *   prefer-replica then falls back to the primary;
 * - hot_keys.read_from_replicas: under read_from: master, reads of a key in the hot-key top-K go to replicas while
 *   other keys' reads stay on the primary.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startSentinels, commandCalls, type SentinelSetup } from '../support/sentinel.js';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { shardsReport } from '../../src/metrics/endpoints.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let ha: SentinelSetup;
let bPrimary: RedisProcess;
let bReplica: RedisProcess;
const proxies: Proxy[] = [];
const clients: Redis[] = [];

beforeAll(async () => {
  ha = await startSentinels({ masters: [{ name: 'ra', replicas: 2 }], sentinels: 3 });
  bPrimary = await startRedis();
  bReplica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(bPrimary.port)] });
  await ha.ready('ra', 2);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  for (const p of proxies) await p.close();
  await ha?.stop();
  await bPrimary?.stop('SIGKILL');
  await bReplica?.stop('SIGKILL');
});

async function keymux(extra: Record<string, unknown>): Promise<{ proxy: Proxy; client: Redis }> {
  const proxy = await startKeymux({
    mode: 'slots',
    sentinel: { sentinels: ha.addresses(), refresh_interval_ms: 1000 },
    replica_checks: { interval_ms: 200 },
    shards: [
      { name: 'a', sentinel_master: 'ra', slots: ['0-8191'] },
      { name: 'b', address: bPrimary.address, replicas: [bReplica.address], slots: ['8192-16383'] },
    ],
    ...extra,
  });
  proxies.push(proxy);
  const client = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 5000 });
  await client.connect();
  clients.push(client);
  return { proxy, client };
}

/** A key named `name` whose slot belongs to shard a (0-8191) or b (8192-16383). */
function keyOn(shard: 'a' | 'b', name: string): string {
  for (let i = 0; ; i++) {
    const key = `${name}{t${i}}`;
    if (keySlot(Buffer.from(key)) < 8192 === (shard === 'a')) return key;
  }
}

const KEYS = Array.from({ length: 200 }, (_, i) => `rr:${i}`);
const ra = () => ha.masters[0]!.nodes;

async function resetStats(): Promise<void> {
  for (const n of [...ra(), bPrimary, bReplica]) {
    if (n.process.exitCode === null && n.process.signalCode === null) await redisCommand(n.port, 'CONFIG', 'RESETSTAT');
  }
}

async function readonlyErrors(port: number): Promise<number> {
  const info = String(await redisCommand(port, 'INFO', 'errorstats'));
  return Number(/^errorstat_READONLY:count=(\d+)/m.exec(info)?.[1] ?? 0);
}

/** Every replica of the proxy's topology is judged fit for reads (the replica checks ran). */
async function replicasReadable(proxy: Proxy, n: number): Promise<void> {
  await waitFor(
    () => proxy.topology.shards.flatMap((s) => s.replicas).filter((r) => r.readable && r.healthy).length >= n,
    `${n} readable replicas`,
    15_000,
    20,
  );
}

describe('sentinel discovery and replica reads (slots mode)', () => {
  it('learns the primary and replicas from the sentinels and shows them in /shards and the metrics', async () => {
    const { proxy } = await keymux({});
    const primary = await ha.primaryAddress('ra');
    const a = proxy.topology.shards[0]!;
    expect(a.address).toBe(primary);
    expect(a.sentinelMaster).toBe('ra');
    expect(a.replicas.map((r) => r.shard.address).sort()).toEqual(
      ra()
        .slice(1)
        .map((n) => n.address)
        .sort(),
    );
    await replicasReadable(proxy, 3);
    const report = shardsReport(proxy) as { shards: Array<Record<string, unknown>> };
    expect(report.shards[0]).toMatchObject({ name: 'a', address: primary, sentinel_master: 'ra', failovers: 0 });
    expect((report.shards[0]!.replicas as Array<Record<string, unknown>>).map((r) => r.readable)).toEqual([true, true]);
    const text = await new Metrics(proxy).registry.metrics();
    expect(text).toContain(`keymux_shard_role{shard="a",address="${primary}",role="primary"} 1`);
    expect(text).toContain(`keymux_shard_role{shard="b",address="${bReplica.address}",role="replica"} 1`);
    expect(text).toContain('keymux_failovers_total{shard="a"} 0');
    // Subscribed to every sentinel's events (keymux_sentinel_up: 1 each once its subscription is confirmed).
    await waitFor(
      async () => {
        const now = await new Metrics(proxy).registry.metrics();
        return ha.addresses().every((addr) => now.includes(`keymux_sentinel_up{sentinel="${addr}"} 1`));
      },
      'keymux_sentinel_up 1 for every sentinel',
      10_000,
    );
  });

  it('read_from: replica: reads land on the replicas, writes on the primaries', async () => {
    const { proxy, client } = await keymux({ read_from: 'replica' });
    await replicasReadable(proxy, 3);
    for (const k of KEYS) await client.set(k, `v-${k}`);
    // Reads right after writes may see a replica that is behind: wait until each replica has its primary's keys.
    const dbsize = async (n: RedisProcess): Promise<number> => Number(await redisCommand(n.port, 'DBSIZE'));
    await waitFor(
      async () =>
        (await dbsize(ra()[1]!)) === (await dbsize(ra()[0]!)) &&
        (await dbsize(ra()[2]!)) === (await dbsize(ra()[0]!)) &&
        (await dbsize(bReplica)) === (await dbsize(bPrimary)),
      'replicas to have every write',
      10_000,
      20,
    );
    await resetStats();
    const values = await Promise.all(KEYS.map((k) => client.get(k)));
    expect(values).toEqual(KEYS.map((k) => `v-${k}`));
    await client.set('rr:after', 'x');
    const [pa, r1, r2] = await Promise.all(ra().map((n) => commandCalls(n.port)));
    const [pb, rb] = await Promise.all([commandCalls(bPrimary.port), commandCalls(bReplica.port)]);
    expect(pa!.get ?? 0).toBe(0);
    expect(pb!.get ?? 0).toBe(0);
    // ioredis's one connection is one keymux session: it reads from one replica of each shard (spread by session).
    expect((r1!.get ?? 0) + (r2!.get ?? 0)).toBeGreaterThan(0);
    expect(rb!.get ?? 0).toBeGreaterThan(0);
    expect((r1!.get ?? 0) + (r2!.get ?? 0) + (rb!.get ?? 0)).toBe(KEYS.length);
    for (const n of [...ra(), bReplica]) expect(await readonlyErrors(n.port)).toBe(0);
    // Many sessions spread over both replicas of a.
    const many = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
        await c.connect();
        clients.push(c);
        return c;
      }),
    );
    await resetStats();
    // A key per session: identical reads in flight at once would be coalesced into one shard request.
    await Promise.all(many.map((c, i) => c.get(keyOn('a', `x${i}`))));
    const perReplica = await Promise.all(
      ra()
        .slice(1)
        .map((n) => commandCalls(n.port)),
    );
    expect(perReplica.filter((c) => (c.get ?? 0) > 0).length).toBe(2);
  });

  it('skips a replica that is down or out of sync; read_from: replica never falls back to the primary', async () => {
    const { proxy, client } = await keymux({
      read_from: 'replica',
      shards: [
        { name: 'a', sentinel_master: 'ra', slots: ['0-8191'] },
        {
          name: 'b',
          address: bPrimary.address,
          replicas: [bReplica.address],
          slots: ['8192-16383'],
          read_from: 'replica',
        },
      ],
    });
    const { proxy: preferProxy, client: prefer } = await keymux({ read_from: 'prefer-replica' });
    await replicasReadable(proxy, 3);
    await replicasReadable(preferProxy, 3);
    const keyB = keyOn('b', 'rr:b');
    const keyA = keyOn('a', 'rr:a');
    expect(proxy.topology.router.shardFor(Buffer.from(keyB))).toBe(1);
    expect(proxy.topology.router.shardFor(Buffer.from(keyA))).toBe(0);
    await client.set(keyB, 'B');
    await client.set(keyA, 'A');
    await waitFor(
      async () => (await client.get(keyA)) === 'A' && (await client.get(keyB)) === 'B',
      'replicated',
      10_000,
    );

    // b's only replica loses its link to the primary (INFO replication: master_link_status down): skipped.
    const dead = await startRedis();
    const deadPort = dead.port;
    await dead.stop('SIGKILL');
    await redisCommand(bReplica.port, 'REPLICAOF', '127.0.0.1', String(deadPort));
    await waitFor(() => !proxy.topology.shards[1]!.replicas[0]!.readable, 'replica b judged out of sync', 10_000, 20);
    await waitFor(() => !preferProxy.topology.shards[1]!.replicas[0]!.readable, 'same for prefer', 10_000, 20);
    expect(proxy.topology.shards[1]!.replicas[0]!.readableReason).toMatch(/link to the primary is down|syncing/);
    await resetStats();
    await expect(client.get(keyB)).rejects.toThrow(/keymux: no replica/);
    expect(await prefer.get(keyB)).toBe('B'); // prefer-replica: the primary serves
    expect((await commandCalls(bPrimary.port)).get ?? 0).toBe(1); // only prefer-replica's read
    await redisCommand(bReplica.port, 'REPLICAOF', '127.0.0.1', String(bPrimary.port));
    await waitFor(() => proxy.topology.shards[1]!.replicas[0]!.readable, 'replica b back in sync', 15_000, 20);
    expect(await client.get(keyB)).toBe('B');

    // One of a's replicas is killed: the other serves every read of a; the primary none.
    const [, r1, r2] = ra();
    await r1!.stop('SIGKILL');
    await resetStats();
    for (let i = 0; i < 20; i++) expect(await client.get(keyA)).toBe('A');
    expect((await commandCalls(r2!.port)).get ?? 0).toBe(20);
    expect((await commandCalls(ra()[0]!.port)).get ?? 0).toBe(0);
    // And with both down: a clear error, never the primary.
    await r2!.stop('SIGKILL');
    await waitFor(
      () => proxy.topology.shards[0]!.replicas.every((r) => !r.usable || !r.readable),
      'a replicas down',
      10_000,
    );
    await expect(client.get(keyA)).rejects.toThrow(/keymux: no replica/);
    expect((await commandCalls(ra()[0]!.port)).get ?? 0).toBe(0);
    await r1!.restart();
    await r2!.restart();
    await redisCommand(r1!.port, 'REPLICAOF', '127.0.0.1', String(ra()[0]!.port));
    await redisCommand(r2!.port, 'REPLICAOF', '127.0.0.1', String(ra()[0]!.port));
  }, 60_000);

  it('hot_keys.read_from_replicas: reads of hot keys go to replicas under read_from: master', async () => {
    const { proxy, client } = await keymux({
      metrics: { hot_keys: { sample_rate: 1, k: 3, read_from_replicas: true } },
    });
    await replicasReadable(proxy, 1);
    const hot = keyOn('b', 'hot');
    const cold = keyOn('b', 'cold');
    await client.set(hot, 'H');
    await redisCommand(bPrimary.port, 'SET', cold, 'C'); // not through keymux: never counted as requested
    // Warm keys, each read more than the cold key will be: the top-3 is the hot key and two of them.
    for (let w = 0; w < 4; w++) for (let i = 0; i < 30; i++) await client.get(keyOn('b', `warm${w}`));
    await waitFor(async () => (await redisCommand(bReplica.port, 'EXISTS', cold)) === 1, 'replicated', 10_000);
    await resetStats();
    for (let i = 0; i < 200; i++) await client.get(hot);
    // Once the hot-key set refreshes (every second), the hot key's reads move to the replica.
    await waitFor(
      async () => {
        await client.get(hot);
        return ((await commandCalls(bReplica.port)).get ?? 0) > 0;
      },
      'hot key reads on the replica',
      10_000,
      50,
    );
    await resetStats();
    for (let i = 0; i < 5; i++) expect(await client.get(cold)).toBe('C');
    expect((await commandCalls(bPrimary.port)).get ?? 0).toBe(5);
    expect((await commandCalls(bReplica.port)).get ?? 0).toBe(0);
  }, 30_000);
});
