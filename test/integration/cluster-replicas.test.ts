/**
 * Replica reads behind keymux (issue 3), on a real cluster of 3 masters + 3 replicas:
 * - read_from: replica: GETs (and the per-slot pieces of an MGET) are served by the replicas (READONLY
 *   connections; their INFO commandstats count the GETs, the masters' do not), while SETs go to the masters (a
 *   replica's cmdstat_set counts only the SETs replicated from its master, and no replica ever refused a write
 *   with -READONLY: keymux never sends one there);
 * - read_from: prefer-replica: with a master's replica killed, reads of that master's slots fall back to the
 *   master, with no client-visible error, while the other masters' reads stay on their replicas;
 * - EVALSHA_RO is served by the masters (the replicas lack the scripts loaded through keymux).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster, type ClusterNode } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import { slotOwnerPorts } from '../support/cluster-workload.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let cluster: RedisCluster;
const proxies: Proxy[] = [];
const clients: Redis[] = [];

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  for (const p of proxies) await p.close();
  await cluster?.stop();
});

async function keymuxWith(readFrom: string): Promise<{ proxy: Proxy; client: Redis }> {
  const proxy = await startKeymux({
    mode: 'cluster',
    cluster: { seeds: cluster.seeds().slice(0, 2), read_from: readFrom },
  });
  proxies.push(proxy);
  const client = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0, commandTimeout: 5000 });
  await client.connect();
  clients.push(client);
  return { proxy, client };
}

/** calls of one command in a node's INFO commandstats (0 when it never ran). */
async function calls(node: ClusterNode, command: string): Promise<number> {
  const info = String(await redisCommand(node.port, 'INFO', 'commandstats'));
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
}

/** Writes (via INFO errorstats) a node refused because it is a replica. */
async function readonlyErrors(node: ClusterNode): Promise<number> {
  const info = String(await redisCommand(node.port, 'INFO', 'errorstats'));
  return Number(/^errorstat_READONLY:count=(\d+)/m.exec(info)?.[1] ?? 0);
}

async function resetStats(): Promise<void> {
  await Promise.all(cluster.nodes.filter((n) => n.alive).map((n) => redisCommand(n.port, 'CONFIG', 'RESETSTAT')));
}

/** Waits until every replica has applied its master's writes (master_repl_offset reached). */
async function replicated(): Promise<void> {
  for (const m of cluster.masters()) {
    const offset = /^master_repl_offset:(\d+)/m.exec(String(await redisCommand(m.port, 'INFO', 'replication')))![1];
    for (const r of cluster.replicasOf(m.id)) {
      await waitFor(
        async () =>
          Number(
            /^slave_repl_offset:(\d+)/m.exec(String(await redisCommand(r.port, 'INFO', 'replication')))?.[1] ?? -1,
          ) >= Number(offset),
        `replica ${r.address} to catch up`,
        10_000,
        20,
      );
    }
  }
}

const KEYS = Array.from({ length: 300 }, (_, i) => `rr:${i}`);

describe('replica reads', () => {
  it('read_from replica: GETs are served by replicas, SETs by masters', async () => {
    const { proxy, client } = await keymuxWith('replica');
    expect(proxy.topology.shards.map((s) => s.replicas.length)).toEqual([1, 1, 1]);
    await resetStats();

    const p = client.pipeline();
    for (const k of KEYS) p.set(k, `v:${k}`);
    for (const [err, rep] of (await p.exec())!) {
      expect(err).toBeNull();
      expect(rep).toBe('OK');
    }
    await replicated();

    const g = client.pipeline();
    for (const k of KEYS) g.get(k);
    const got = (await g.exec())!;
    got.forEach(([err, rep], i) => {
      expect(err).toBeNull();
      expect(rep).toBe(`v:${KEYS[i]}`);
    });
    // An MGET across slots: one MGET per slot, each on the replica of the slot's master.
    expect(await client.mget(...KEYS.slice(0, 50))).toEqual(KEYS.slice(0, 50).map((k) => `v:${k}`));

    const masters = cluster.masters();
    const replicas = cluster.replicas();
    const masterGets = await Promise.all(masters.map((m) => calls(m, 'get')));
    const masterMgets = await Promise.all(masters.map((m) => calls(m, 'mget')));
    const replicaGets = await Promise.all(replicas.map((r) => calls(r, 'get')));
    const replicaMgets = await Promise.all(replicas.map((r) => calls(r, 'mget')));
    const masterSets = await Promise.all(masters.map((m) => calls(m, 'set')));
    const replicaSets = await Promise.all(replicas.map((r) => calls(r, 'set')));
    const replicaRefused = await Promise.all(replicas.map((r) => readonlyErrors(r)));
    console.log(
      `read_from replica: GET calls masters ${masterGets} replicas ${replicaGets}; MGET calls masters ${
        masterMgets
      } replicas ${replicaMgets}; SET calls masters ${masterSets} replicas ${replicaSets}; READONLY refusals on replicas ${replicaRefused}`,
    );

    // Each master got the SETs of its own keys; its replica got the GETs of those same keys.
    const ownerPort = await slotOwnerPorts(cluster);
    for (const m of masters) {
      const mine = KEYS.filter((k) => ownerPort(keySlot(Buffer.from(k))) === m.port).length;
      const [replica] = cluster.replicasOf(m.id);
      expect(mine).toBeGreaterThan(0);
      expect(await calls(m, 'set')).toBe(mine);
      expect(await calls(replica!, 'get')).toBe(mine);
      expect(await calls(m, 'get')).toBe(0);
      // A replica counts the SETs it applies from the replication stream too: exactly its master's, no more. A SET
      // sent to it by keymux would have been refused (-READONLY, counted in errorstats, checked below).
      expect(await calls(replica!, 'set')).toBe(mine);
    }
    expect(masterMgets.reduce((a, b) => a + b, 0)).toBe(0);
    expect(replicaMgets.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(replicaGets.reduce((a, b) => a + b, 0)).toBe(KEYS.length);
    expect(replicaRefused).toEqual([0, 0, 0]);

    // Replicas lack the scripts loaded through keymux (Redis does not propagate SCRIPT LOAD): EVALSHA_RO goes to the
    // master, EVAL_RO (carrying its body) to the replica, FCALL_RO too (functions are replicated).
    const sha = (await client.script('LOAD', "return 'ro'")) as string;
    for (const k of KEYS.slice(0, 20)) expect(await client.call('EVALSHA_RO', sha, '1', k)).toBe('ro');
    expect(await client.call('EVALSHA_RO', sha, '0')).toBe('ro');
    for (const r of replicas) expect(await redisCommand(r.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
    expect(proxy.stats.moved + proxy.stats.retries).toBe(0);
  });

  it('read_from prefer-replica: reads fall back to the master when its replica is down', async () => {
    const { proxy, client } = await keymuxWith('prefer-replica');
    expect(proxy.topology.shards.map((s) => s.replicas.length)).toEqual([1, 1, 1]);
    const [victimMaster, ...others] = cluster.masters();
    const [deadReplica] = cluster.replicasOf(victimMaster!.id);
    await cluster.killNode(deadReplica!.id);
    // keymux sees the replica's connection drop (kill -9 closes its sockets); no event reaches the test for it.
    const shard = proxy.topology.shards.find((s) => s.address === victimMaster!.address)!;
    await waitFor(() => !shard.replicas[0]!.healthy, 'the replica pool to go down', 5000);
    await resetStats();

    const g = client.pipeline();
    for (const k of KEYS) g.get(k);
    const got = (await g.exec())!;
    got.forEach(([err, rep], i) => {
      expect(err).toBeNull();
      expect(rep).toBe(`v:${KEYS[i]}`);
    });

    const ownerPort = await slotOwnerPorts(cluster);
    const onVictim = KEYS.filter((k) => ownerPort(keySlot(Buffer.from(k))) === victimMaster!.port).length;
    const victimGets = await calls(victimMaster!, 'get');
    const otherGets = await Promise.all(others.map((m) => calls(m, 'get')));
    const otherReplicaGets = await Promise.all(others.map((m) => calls(cluster.replicasOf(m.id)[0]!, 'get')));
    console.log(
      `prefer-replica with ${deadReplica!.address} down: GET calls on its master ${victimGets} (of ${onVictim} keys); ` +
        `other masters ${otherGets}; their replicas ${otherReplicaGets}`,
    );
    expect(victimGets).toBe(onVictim);
    expect(otherGets).toEqual([0, 0]);
    expect(otherReplicaGets.reduce((a, b) => a + b, 0)).toBe(KEYS.length - onVictim);
  });
});
