/**
 * Commands on a slot that is half-way through a migration (CLUSTER SETSLOT IMPORTING / MIGRATING set by hand on a
 * real 3-master Redis Cluster, keys moved with MIGRATE one by one), through keymux:
 * - a multi-key command whose keys are on neither node, or only on the importing one: the source answers ASK, the
 *   target (after ASKING) TRYAGAIN; keymux retries for its whole retry budget and then answers Redis's TRYAGAIN
 *   (before, each retry met the ASK again and counted it as a redirection: "too many cluster redirections" after
 *   ~0.6 s); once the slot is stable the same command succeeds;
 * - MULTI/EXEC without WATCH whose key already moved: sent again to the importing node with ASKING and applied
 *   there (before: EXECABORT for the whole migration of its slot); one whose keys are split between the two nodes
 *   cannot run atomically on either: it is retried within cluster.retry (it runs once the keys are together),
 *   then aborted with EXECABORT naming the split (nothing applied).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type ClusterNode, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { keySlot } from '../../src/routing/crc16.js';
import { waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
let client: Redis;

beforeAll(async () => {
  cluster = await startCluster({ masters: 3 });
  proxy = await startKeymux({
    mode: 'cluster',
    cluster: {
      seeds: cluster.seeds(),
      refresh_interval_ms: 60_000,
      retry: { attempts: 8, base_delay_ms: 5, max_delay_ms: 100 },
    },
  });
  client = new Redis({ port: proxy.port, maxRetriesPerRequest: 0, enableReadyCheck: false });
}, 120_000);

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await cluster?.stop();
});

/** The slot of hash tag `tag`, its owner, and another master; sets the slot IMPORTING / MIGRATING between them. */
async function startMigrating(tag: string): Promise<{ slot: number; from: ClusterNode; to: ClusterNode }> {
  const slot = keySlot(Buffer.from(`{${tag}}`));
  const ranges = await cluster.slotRanges();
  const fromId = [...ranges].find(([, rs]) => rs.some(([a, z]) => a <= slot && slot <= z))![0];
  const from = cluster.node(fromId);
  const to = cluster.masters().find((m) => m.id !== fromId)!;
  expect(await redisCommand(to.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id)).toBe('OK');
  expect(await redisCommand(from.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id)).toBe('OK');
  return { slot, from, to };
}

async function migrateKeys(from: ClusterNode, to: ClusterNode, ...keys: string[]): Promise<void> {
  expect(await redisCommand(from.port, 'MIGRATE', to.host, to.port, '', 0, 5000, 'KEYS', ...keys)).toBe('OK');
}

/** Ends the migration of `slot`: `to` owns it on every master. */
async function finish(slot: number, to: ClusterNode): Promise<void> {
  for (const n of cluster.masters()) await redisCommand(n.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
  await cluster.waitStable();
}

describe('a slot half-way through a migration', () => {
  it('a multi-key command on keys the source does not hold: retried for its budget, then TRYAGAIN; fine after', async () => {
    expect(await client.set('{mk}a', '1')).toBe('OK');
    const { slot, from, to } = await startMigrating('mk');
    // {mk}a only on the target, {mk}b nowhere: the source answers ASK, the target TRYAGAIN.
    await migrateKeys(from, to, '{mk}a');
    const retriesBefore = proxy.stats.retries;
    await expect(client.mget('{mk}a', '{mk}b')).rejects.toThrow(/^TRYAGAIN /);
    await expect(client.mset('{mk}c', '3', '{mk}d', '4')).rejects.toThrow(/^TRYAGAIN /);
    // Every attempt of both was used (8 each), none ended early on the redirection bound.
    expect(proxy.stats.retries - retriesBefore).toBe(16);
    await finish(slot, to);
    expect(await client.mget('{mk}a', '{mk}b')).toEqual(['1', null]);
    expect(await client.mset('{mk}c', '3', '{mk}d', '4')).toBe('OK');
    expect(await redisCommand(to.port, 'MGET', '{mk}c', '{mk}d')).toEqual(['3', '4']);
  });

  it('MULTI/EXEC: a key already moved runs on the importing node; keys split: retried, then EXECABORT', async () => {
    expect(await client.mset('{tx}a', '10', '{tx}b', '10')).toBe('OK');
    const { slot, from, to } = await startMigrating('tx');
    await migrateKeys(from, to, '{tx}a');
    // {tx}a has moved: the source asks for it; the transaction runs on the target with ASKING.
    expect(await client.multi().incr('{tx}a').get('{tx}a').exec()).toEqual([
      [null, 11],
      [null, '11'],
    ]);
    // {tx}b is still on the source, {tx}a on the target: no node can run both. Retried within cluster.retry, then
    // EXECABORT naming the split; nothing applied.
    const split = () => client.multi().incr('{tx}a').incr('{tx}b').exec();
    await expect(split()).rejects.toThrow(/^EXECABORT keymux: the transaction was not applied: .*split between/);
    expect(await redisCommand(from.port, 'GET', '{tx}b')).toBe('10');
    // The same while the migration goes on: once {tx}b has moved too, a retry runs it on the target.
    const retries = proxy.stats.retries;
    const pending = split();
    await waitFor(() => proxy.stats.retries > retries, 'the transaction to be retried', 5000, 2);
    await migrateKeys(from, to, '{tx}b');
    expect(await pending).toEqual([
      [null, 12],
      [null, 11],
    ]);
    await finish(slot, to);
    expect(await redisCommand(to.port, 'MGET', '{tx}a', '{tx}b')).toEqual(['12', '11']);
  });
});
