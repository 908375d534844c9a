// The near cache in cluster mode, against a real 3-master Redis Cluster: one invalidation channel per master, hot
// reads served from memory, a direct write to the owning node invalidates, and a slot moved to another master
// (redis-cli --cluster reshard) drops what moved: the key then reads its new owner's writes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { slotOwnerPorts } from '../support/cluster-workload.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
let client: Redis;

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const hits = (): number => [...proxy.topology.stats.shards.values()].reduce((n, st) => n + st.nearHits, 0);

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 0 });
  proxy = await startKeymux({
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 1000 },
    near_cache: { enabled: true, admit: 'all' },
  });
  client = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
  await until('a channel per master', () => {
    const ch = proxy.nearCache?.channels() ?? [];
    return ch.length === 3 && ch.every((c) => c.ready);
  });
}, 90_000);

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await cluster?.stop();
});

describe('near cache in cluster mode', () => {
  it('serves from memory, is invalidated by a write on the owning node, and drops a slot that moved', async () => {
    // A key in the first slot of a master: `--cluster reshard` of one slot moves exactly that one.
    const ranges = await cluster.slotRanges();
    const [fromId, fromRanges] = [...ranges.entries()][0];
    const toId = [...ranges.keys()][1];
    const slot = fromRanges[0][0];
    let key = '';
    for (let i = 0; key === ''; i++) if (keySlot(Buffer.from(`ncc:${i}`)) === slot) key = `ncc:${i}`;

    await client.set(key, 'v1');
    expect(await client.get(key)).toBe('v1');
    const before = hits();
    expect(await client.get(key)).toBe('v1');
    expect(hits() - before).toBe(1);

    const ownerPort = (await slotOwnerPorts(cluster))(slot);
    await redisCommand(ownerPort, 'SET', key, 'v2');
    await until('the invalidation from the owner', async () => (await client.get(key)) === 'v2');

    expect(await client.get(key)).toBe('v2'); // cached again
    await cluster.reshard(fromId, toId, 1);
    const newOwner = (await slotOwnerPorts(cluster))(slot);
    expect(newOwner).toBe(cluster.node(toId).port);
    await redisCommand(newOwner, 'SET', key, 'v3');
    await until("the new owner's value", async () => (await client.get(key)) === 'v3');
    for (let i = 0; i < 20; i++) expect(await client.get(key)).toBe('v3');
    // And the new owner's channel invalidates it from now on.
    await redisCommand(newOwner, 'SET', key, 'v4');
    await until('the invalidation from the new owner', async () => (await client.get(key)) === 'v4');
  }, 60_000);
});
