/**
 * Live resharding behind keymux (issue 3): 8 ioredis clients run a pipelined, checked mixed workload (SET, GET,
 * MGET across slots, one-slot MGET/MSET of hash-tagged groups, multi-key DEL, INCR) through keymux while
 * `redis-cli --cluster reshard` moves 4,500 slots between the three masters, a fourth master is added and
 * `--cluster rebalance` gives it a quarter of the slots. No client sees an error or a wrong value; afterwards
 * every key reads back with its last acknowledged value through keymux and directly from the node that owns
 * its slot. keymux must have absorbed MOVED and ASK redirections (or the test did not test anything).
 * Before the big moves, the one slot holding every client's "hot" group is migrated in two steps, so the workload is
 * sure to meet ASK (absent keys of a migrating slot) and TRYAGAIN (a one-slot MGET/MSET of a split group, which
 * keymux retries with backoff).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { ClusterWorkload, slotOwnerPorts } from '../support/cluster-workload.js';
import { redisCommand } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
let work: ClusterWorkload;

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
  proxy = await startKeymux({
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 1000 },
  });
}, 60_000);

afterAll(async () => {
  await work?.stop().catch(() => undefined);
  work?.close();
  await proxy?.close();
  await cluster?.stop();
});

/**
 * Moves `slot` from its owner to another master by hand, the way redis-cli does (IMPORTING, MIGRATING, MIGRATE,
 * SETSLOT NODE everywhere) but in two steps: `whilePartial` runs once the first key has moved, `whileEmpty` once
 * the others have too (the slot still migrating: the source answers ASK for every key of it).
 */
async function migrateSlotInTwoSteps(
  slot: number,
  whilePartial: () => Promise<void>,
  whileEmpty: () => Promise<void>,
): Promise<{ slot: number; keys: number; ms: number }> {
  const ranges = await cluster.slotRanges();
  const fromId = [...ranges].find(([, rs]) => rs.some(([a, z]) => a <= slot && slot <= z))![0];
  const from = cluster.node(fromId);
  const to = cluster.masters().find((m) => m.id !== fromId)!;
  const t0 = Date.now();
  await redisCommand(to.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
  await redisCommand(from.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
  // One key first; then, once the workload has run into the split, the rest at once: a split longer than keymux's
  // retry budget (5 attempts, about 600 ms by default) would rightly surface TRYAGAIN to the clients.
  let keys = 0;
  for (const count of [1, 10_000]) {
    const next = (await redisCommand(from.port, 'CLUSTER', 'GETKEYSINSLOT', slot, count)) as string[];
    if (next.length > 0) await redisCommand(from.port, 'MIGRATE', to.host, to.port, '', 0, 5000, 'KEYS', ...next);
    keys += next.length;
    if (count === 1) await whilePartial();
  }
  expect(await redisCommand(from.port, 'CLUSTER', 'COUNTKEYSINSLOT', slot)).toBe(0);
  await whileEmpty();
  for (const n of [to, from, ...cluster.masters().filter((m) => m !== to && m !== from)]) {
    await redisCommand(n.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
  }
  const ms = Date.now() - t0;
  await cluster.waitStable();
  return { slot, keys, ms };
}

describe('live resharding behind keymux', () => {
  it('moves 4,500 slots, adds a master and rebalances under a checked workload with no client-visible error', async () => {
    work = new ClusterWorkload({
      port: proxy.port,
      clients: 8,
      keysPerClient: 500,
      groups: 40,
      batch: 16,
      maxRunMs: 100_000,
      hotGroup: true,
    });
    await work.start();
    work.run();
    const t0 = Date.now();

    // First, the slot every client's hot group lives in moves in two steps, as a slow migration of a big slot
    // would: while the group is split between the nodes, its MGET/MSET get TRYAGAIN (keymux retries them), and
    // once every key has moved, the source answers ASK. Each step ends as soon as keymux has met it.
    const hot = await migrateSlotInTwoSteps(
      keySlot(Buffer.from('{hot}')),
      async () => {
        const before = proxy.stats.retries;
        await waitFor(() => proxy.stats.retries > before, 'a TRYAGAIN retry while the hot slot is half moved', 5000, 2);
      },
      async () => {
        const before = proxy.stats.ask;
        await waitFor(
          () => proxy.stats.ask > before,
          'an ASK while the hot slot is still migrating, its keys all moved',
          5000,
          2,
        );
      },
    );
    const afterHot = { moved: proxy.stats.moved, ask: proxy.stats.ask, retries: proxy.stats.retries };

    // Reshard around the three masters: 1,500 slots each time, 4,500 in all.
    const [m1, m2, m3] = cluster.masters();
    await cluster.reshard(m1!.id, m2!.id, 1500, { pipeline: 1 });
    await cluster.reshard(m2!.id, m3!.id, 1500, { pipeline: 1 });
    await cluster.reshard(m3!.id, m1!.id, 1500, { pipeline: 1 });
    const m4 = await cluster.addMaster();
    await cluster.rebalance({ pipeline: 1 });
    const ranges = await cluster.slotRanges();
    const m4Slots = (ranges.get(m4.id) ?? []).reduce((n, [a, z]) => n + z - a + 1, 0);
    expect(m4Slots).toBeGreaterThan(3000);

    // A last stretch of work on the final layout, then stop.
    await work.cleanBatches(5, 10_000);
    await work.stop();
    const elapsed = Date.now() - t0;

    const { moved, ask, retries, invalidRedirects } = proxy.stats;
    console.log(
      `hot slot ${hot.slot}: ${hot.keys} keys moved in two steps in ${hot.ms} ms; keymux absorbed MOVED ${
        afterHot.moved
      }, ASK ${afterHot.ask}, retries ${afterHot.retries} up to then`,
    );
    console.log(
      `resharding: ${work.batches} batches, ${work.ok} checked replies in ${elapsed} ms; ` +
        `keymux absorbed MOVED ${moved}, ASK ${ask}, retries ${retries}, invalid redirects ${invalidRedirects}; ` +
        `timings: ${cluster.timings.map((t) => `${t.op} ${t.ms} ms`).join(', ')}`,
    );

    expect(work.errors.slice(0, 10)).toEqual([]);
    expect(work.mismatches.slice(0, 10)).toEqual([]);
    expect(work.ok).toBeGreaterThan(10_000);
    expect(moved + ask).toBeGreaterThan(0);
    expect(afterHot.ask).toBeGreaterThan(0);
    expect(afterHot.retries).toBeGreaterThan(0);
    expect(invalidRedirects).toBe(0);

    // keymux has picked up the new master on its own (MOVED-triggered and periodic rediscovery, no restart).
    await waitFor(() => proxy.topology.shards.length === 4, 'keymux to see four masters', 5000, 20);
    expect(proxy.topology.shards.map((s) => s.address).sort()).toEqual(
      cluster
        .masters()
        .map((m) => m.address)
        .sort(),
    );

    const result = await work.verify(await slotOwnerPorts(cluster));
    expect(result.problems.slice(0, 10)).toEqual([]);
    expect(result.uncertain).toBe(0);
    expect(result.checked).toBeGreaterThan(4000);
  }, 120_000);
});
