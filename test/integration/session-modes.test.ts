/**
 * Transactions and blocking commands in ring mode and in front of a real Redis Cluster (issue 10). Ring: the
 * transaction runs on the shard of its keys, keys on two shards abort it. Cluster: a transaction and a blocking
 * command are bound to one slot (CROSSSLOT otherwise); when a slot moves and keymux's map is stale, a blocking
 * command answered MOVED is followed to the new owner (and still unblocked by a later push), a transaction answered
 * MOVED at queue time is sent again to the new owner without WATCH (nothing was applied on the old one), and with
 * WATCH the client gets an EXECABORT naming the move, never a half-applied transaction.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { ringConfig, startKeymux } from '../support/keymux.js';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20)); // no event for this; poll with a deadline
  }
}

async function blockedOn(port: number): Promise<number> {
  const info = String(await redisCommand(port, 'INFO', 'clients'));
  return Number(/blocked_clients:(\d+)/.exec(info)?.[1] ?? -1);
}

describe('ring mode', () => {
  let shards: RedisProcess[];
  let proxy: Proxy;
  beforeAll(async () => {
    shards = await Promise.all([startRedis(), startRedis(), startRedis()]);
    proxy = await startKeymux(ringConfig(shards.map((s) => s.port)));
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all(shards.map((s) => s.stop()));
  });

  const shardOf = (key: string): number =>
    proxy.topology.router.shardOfGroup(proxy.topology.router.groupFor(Buffer.from(key)));

  it('MULTI/EXEC on one shard, WATCH, and a transaction over two shards aborted with nothing applied', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    const k1 = 'ring:{u1}:a';
    const k2 = 'ring:{u1}:b';
    expect(await r.multi().set(k1, '1').incr(k1).set(k2, 'x').exec()).toEqual([
      [null, 'OK'],
      [null, 2],
      [null, 'OK'],
    ]);
    // Ring mode hashes the whole key unless a hash_tag is set: find a key on another shard. The ring depends on
    // the shards' ports, and twemproxy's fnv1a_64 (ring position = low 32 bits) puts keys that differ only in
    // their last bytes next to each other (ring:x1..ring:x6 all fell on k1's shard in about 1 run in 9): vary the
    // start of the key instead (0 misses in 20,000 simulated port sets).
    const far = Array.from({ length: 50 }, (_, i) => `${i}:ring:far`).find((k) => shardOf(k) !== shardOf(k1));
    expect(far).toBeDefined();
    await expect(r.multi().set(k1, 'no').set(far!, 'no').exec()).rejects.toThrow(/EXECABORT/);
    expect(await r.get(k1)).toBe('2');
    expect(await r.get(far!)).toBeNull();
    await r.watch(k1);
    await other.set(k1, 'other');
    expect(await r.multi().set(k1, 'mine').exec()).toBeNull();
    r.disconnect();
    other.disconnect();
  });

  it('BLPOP with timeout 0 unblocked by a push from another client', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    const k = 'ring:queue';
    const popped = r.blpop(k, 0);
    await waitUntil(async () => (await blockedOn(shards[shardOf(k)].port)) === 1);
    await other.rpush(k, 'job');
    expect(await popped).toEqual([k, 'job']);
    r.disconnect();
    other.disconnect();
  });
});

describe('Redis Cluster mode', () => {
  let cluster: RedisCluster;
  let proxy: Proxy;
  beforeAll(async () => {
    cluster = await startCluster({ masters: 3 });
    // No periodic refresh: the map goes stale after a reshard, so keymux meets MOVED on its session connections.
    proxy = await startKeymux({
      mode: 'cluster',
      cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 3_600_000 },
    });
  }, 90_000);
  afterAll(async () => {
    await proxy?.close();
    await cluster?.stop();
  });

  /** The master owning `key`'s slot now. */
  async function ownerOf(key: string): Promise<{ id: string; port: number }> {
    const slot = keySlot(Buffer.from(key));
    for (const [id, ranges] of await cluster.slotRanges()) {
      if (ranges.some(([a, z]) => slot >= a && slot <= z)) return { id, port: cluster.node(id).port };
    }
    throw new Error(`no owner for slot ${slot}`);
  }

  it('transactions run on their slot; two slots abort with CROSSSLOT; WATCH failure gives nil', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    expect(await r.multi().set('{c1}:a', '1').incr('{c1}:a').exec()).toEqual([
      [null, 'OK'],
      [null, 2],
    ]);
    await expect(r.multi().set('{c1}:a', 'x').set('{c2}:b', 'y').exec()).rejects.toThrow(/EXECABORT/);
    expect(await r.get('{c1}:a')).toBe('2');
    expect(await r.get('{c2}:b')).toBeNull();
    await r.watch('{c1}:a');
    await other.set('{c1}:a', 'other');
    expect(await r.multi().set('{c1}:a', 'mine').exec()).toBeNull();
    await expect(r.blpop('{c1}:l', '{c2}:l', 0)).rejects.toThrow(/CROSSSLOT/);
    r.disconnect();
    other.disconnect();
  });

  it('after a slot moves (stale map): BLPOP follows MOVED to the new owner; a transaction is sent again there', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    const masters = cluster.masters();
    const from = masters[0];
    const to = masters[1];
    // The first slot of `from`: reshard moves the lowest slots first.
    const first = (await cluster.slotRanges()).get(from.id)![0][0];
    let tag = 0;
    while (keySlot(Buffer.from(`{m${tag}}`)) !== first) tag++;
    const k = `{m${tag}}:q`;
    expect((await ownerOf(k)).id).toBe(from.id);
    await cluster.reshard(from.id, to.id, 1);
    expect((await ownerOf(k)).id).toBe(to.id);
    // keymux still routes the slot to `from`, which answers MOVED; the blocking command follows it.
    const movedBefore = proxy.stats.moved;
    const popped = r.blpop(k, 0);
    await waitUntil(async () => (await blockedOn(to.port)) === 1);
    expect(proxy.stats.moved).toBe(movedBefore + 1);
    await other.rpush(k, 'moved-job');
    expect(await popped).toEqual([k, 'moved-job']);
    // Transactions: reshard once more (back), so the map is stale again for a transaction without WATCH.
    await cluster.reshard(to.id, from.id, 1);
    await waitUntil(async () => (await ownerOf(k)).id === from.id);
    const t = `{m${tag}}:t`;
    const movedBeforeTx = proxy.stats.moved;
    expect(await r.multi().set(t, 'v').incr(`{m${tag}}:n`).exec()).toEqual([
      [null, 'OK'],
      [null, 1],
    ]);
    expect(await redisCommand(from.port, 'GET', t)).toBe('v');
    expect(proxy.stats.moved).toBeGreaterThan(movedBeforeTx); // it met the MOVED and went to the new owner
    // With WATCH, a slot that moves between WATCH and EXEC aborts the transaction: its watch was on the old owner.
    await r.watch(t);
    await cluster.reshard(from.id, to.id, 1);
    await expect(r.multi().set(t, 'after-move').exec()).rejects.toThrow(
      /^EXECABORT keymux: the transaction was not applied: slot \d+ moved to .* \(its WATCH was on the former owner\)/,
    );
    expect(await redisCommand(to.port, 'GET', t)).toBe('v');
    expect(await r.multi().set(t, 'retried').exec()).toEqual([[null, 'OK']]); // a retry goes to the new owner
    r.disconnect();
    other.disconnect();
  }, 60_000);
});
