/**
 * keymux in front of a real Redis Cluster that speaks TLS only: every node `--port 0 --tls-port P --tls-cluster
 * yes --tls-replication yes`, asking for client certificates, made with `redis-cli --tls --cluster create`.
 * keymux is given two seeds and `backend.tls`; it must reach every other node with the same TLS settings, on the
 * `tls-port` CLUSTER SHARDS reports (there is no plain port to fall back to): masters, replicas (read_from:
 * replica) and the new owner named by MOVED after a reshard done over TLS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommand } from '../support/redis.js';
import { makePki, type TestPki } from '../support/tls.js';
import { keySlot } from '../../src/routing/crc16.js';
import { waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

let pki: TestPki;
let cluster: RedisCluster;
let proxy: Proxy;
let c: Redis;

beforeAll(async () => {
  pki = makePki();
  cluster = await startCluster({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, client: pki.client },
  });
  proxy = await startKeymux({
    mode: 'cluster',
    // Rediscovery far apart: the MOVED case must be learnt from MOVED, over TLS, not from a periodic refresh.
    cluster: { seeds: cluster.seeds().slice(0, 2), refresh_interval_ms: 600_000, read_from: 'prefer-replica' },
    backend: { tls: { enabled: true, ca_file: pki.ca.cert, cert_file: pki.client.cert, key_file: pki.client.key } },
  });
  c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
}, 120_000);

afterAll(async () => {
  c?.disconnect();
  await proxy?.close();
  await cluster?.stop();
  pki?.cleanup();
});

describe('cluster mode over TLS (tls-cluster)', () => {
  it('discovers every master and replica at its tls-port and reaches them all over TLS', async () => {
    const view = proxy.cluster!.currentView!;
    expect(view.via).toBe('shards');
    // Every node listens for TLS only, on the port the harness started it on: the view used tls-port.
    const nodePorts = new Set(cluster.nodes.map((n) => n.port));
    const viewNodes = [...view.masters, ...view.replicasOf.flat()];
    expect(viewNodes.length).toBe(6);
    for (const n of viewNodes) expect(nodePorts.has(n.port), n.address).toBe(true);
    // Every pool, masters and replicas, got a TLS connection up (nobody ever tried a plain one: there is no plain
    // port; a plain connection to a TLS port would never become ready).
    const pools = proxy.topology.allPools();
    expect(pools.length).toBe(6);
    await waitFor(() => pools.every((p) => p.healthy), 'every node connected over TLS', 10_000);
  });

  it('serves keyed and split commands in every slot, each key on its master', async () => {
    const keys = Array.from({ length: 150 }, (_, i) => `tc:${i}`);
    expect(await c.mset(Object.fromEntries(keys.map((k) => [k, `v-${k}`])))).toBe('OK');
    expect(await c.mget(...keys)).toEqual(keys.map((k) => `v-${k}`));
    const ranges = await cluster.slotRanges();
    for (const k of keys.slice(0, 20)) {
      const slot = keySlot(Buffer.from(k));
      const owner = [...ranges.entries()].find(([, rs]) => rs.some(([a, b]) => slot >= a && slot <= b))![0];
      expect(await redisCommand(cluster.node(owner).port, 'GET', k)).toBe(`v-${k}`);
    }
    expect(await c.del(...keys)).toBe(150);
  });

  it('follows MOVED to the new owner over TLS after a reshard', async () => {
    const key = 'tls-moving-key';
    await c.set(key, 'before');
    const slot = keySlot(Buffer.from(key));
    const ranges = await cluster.slotRanges();
    const owner = [...ranges.entries()].find(([, rs]) => rs.some(([a, b]) => slot >= a && slot <= b))![0];
    const target = cluster.masters().find((m) => m.id !== owner)!;
    const count = ranges.get(owner)!.reduce((n, [a, b]) => n + (b - a + 1), 0);
    await cluster.reshard(owner, target.id, count);
    expect(await redisCommand(target.port, 'GET', key)).toBe('before');
    const movedBefore = proxy.stats.moved;
    expect(await c.set(key, 'after')).toBe('OK');
    expect(proxy.stats.moved).toBeGreaterThan(movedBefore);
    expect(await redisCommand(target.port, 'GET', key)).toBe('after');
  });
});
