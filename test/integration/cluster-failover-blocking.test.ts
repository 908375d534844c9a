/**
 * A blocking command, and a transaction, sent while its slot's master is down and not yet failed over (a real 3 + 3 Redis Cluster,
 * cluster-node-timeout 1000 ms, the master SIGKILLed): keymux cannot reach the node (ECONNREFUSED before anything
 * was written), then the slot has no master, then the nodes answer CLUSTERDOWN; none of these ran the command, so
 * it is sent again after a backoff within cluster.retry, as a plain command is, and runs (blocks) on the promoted
 * replica. Before, the client got the connection error at once. A push after the failover reaches the BLPOP, and
 * the MULTI/EXEC (no WATCH) is applied once, on the new master.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
let proxy: Proxy;
const clients: Redis[] = [];

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1, nodeTimeoutMs: 1000 });
  proxy = await startKeymux({
    mode: 'cluster',
    // About 15 s of retries: more than a failover takes here (2-4 s).
    cluster: { seeds: cluster.seeds(), retry: { attempts: 40, base_delay_ms: 20, max_delay_ms: 400 } },
  });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  await cluster?.stop();
});

function client(): Redis {
  const c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0, enableReadyCheck: false });
  clients.push(c);
  return c;
}

describe('a blocking command during a failover', () => {
  it('sent while the master is down: retried until the replica is promoted; BLPOP gets the push, MULTI/EXEC runs', async () => {
    const victim = cluster.masters()[0]!;
    const ranges = (await cluster.slotRanges()).get(victim.id)!;
    let tag = 0;
    const onVictim = (t: number): boolean => {
      const slot = keySlot(Buffer.from(`{fo${t}}`));
      return ranges.some(([a, z]) => a <= slot && slot <= z);
    };
    while (!onVictim(tag)) tag++;
    const queue = `{fo${tag}}q`;
    const consumer = client();
    const producer = client();
    expect(await producer.ping()).toBe('PONG');

    const retriesBefore = proxy.stats.retries;
    await cluster.killMaster(victim.id);
    // keymux has not noticed yet: the BLPOP and the transaction go to the dead master's address first.
    const popped = consumer.blpop(queue, 0);
    const transaction = client().multi().set(`{fo${tag}}k`, 'v').incr(`{fo${tag}}n`).exec();
    const { newMaster } = await cluster.waitForFailover(victim.id);
    // Pushed through keymux once the promoted replica serves the slot (a push keymux retries too).
    expect(await producer.rpush(queue, 'job-1')).toBe(1);
    expect(await popped).toEqual([queue, 'job-1']);
    expect(await transaction).toEqual([
      [null, 'OK'],
      [null, 1],
    ]);
    expect(await producer.get(`{fo${tag}}k`)).toBe('v');
    expect(proxy.stats.retries).toBeGreaterThan(retriesBefore);
    // The item was taken by the BLPOP, on the new master.
    expect(await producer.llen(queue)).toBe(0);
    expect(newMaster.id).not.toBe(victim.id);
  });
});
