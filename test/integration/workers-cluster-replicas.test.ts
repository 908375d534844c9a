/**
 * `workers: 2` in cluster mode with `read_from: replica`, the real binary on a real Redis Cluster of 3 masters + 3
 * replicas: clients on both workers (INFO's process_id tells which) send GETs, which the replicas serve. /shards
 * then lists, in each shard's replica row, both workers' connections (each with its `worker`) and the counts of
 * both workers summed: `commands` equal to the GETs the replica served (its own INFO commandstats), `hits` and
 * `misses` equal to the hits and misses sent to it. Before, the replica rows were the first answering worker's
 * only: one worker's connections, and about half the commands. RESP3 clients (node-redis) on both workers make
 * each worker open its RESP3 connections to the masters (SET) and replicas (GET): every row's `resp3_connections`
 * lists both workers' (the shards' rows were the first worker's only too).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { stringify } from 'yaml';
import { startCluster, type ClusterNode, type RedisCluster } from '../support/cluster.js';
import { slotOwnerPorts } from '../support/cluster-workload.js';
import { waitFor } from '../support/fake-backend.js';
import { freePort } from '../support/ports.js';
import { redisCommand } from '../support/redis.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { runBinary, type RunningBinary } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';

const CLIENTS = 8;

let cluster: RedisCluster;
let dir: string;
let adminPort: number;
let binary: RunningBinary;
const clients: Redis[] = [];
const resp3Clients: Array<ReturnType<typeof createClient>> = [];
let port: number;

interface ConnectionRow {
  worker?: number;
  state: string;
}
interface ReplicaRow {
  address: string;
  role: string;
  state: string;
  commands: number;
  hits: number;
  misses: number;
  errors: number;
  inflight: number;
  readable: boolean;
  connections: ConnectionRow[];
}
interface ShardsReport {
  shards: Array<{
    name: string;
    address: string;
    connections: ConnectionRow[];
    resp3_connections: ConnectionRow[];
    replicas: Array<ReplicaRow & { resp3_connections: ConnectionRow[] }>;
  }>;
}

async function shards(): Promise<ShardsReport> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/shards`);
  return (await res.json()) as ShardsReport;
}

async function pidOf(client: Redis): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await client.info('server'))![1]);
}

/** calls of one command in a node's INFO commandstats (0 when it never ran). */
async function calls(node: ClusterNode, command: string): Promise<number> {
  const info = String(await redisCommand(node.port, 'INFO', 'commandstats'));
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
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

beforeAll(async () => {
  cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
  port = await freePort();
  adminPort = await freePort();
  dir = makeTempDir('keymux-workers-cluster-');
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'cluster',
      workers: 2,
      log: { level: 'info' },
      cluster: { seeds: cluster.seeds().slice(0, 2), read_from: 'replica' },
      // Every GET a client sends reaches a replica (none joins another client's identical GET in flight), so the
      // GETs the replicas served, the commands /shards counts and the hits and misses are the same numbers.
      near_cache: { coalesce: false },
    }),
  );
  binary = await runBinary(file, 'keymux workers serving');
  for (let i = 0; i < CLIENTS; i++) {
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, commandTimeout: 5000 });
    client.on('error', () => undefined); // a connection closed when keymux is killed at the end is expected
    clients.push(client);
  }
}, 90_000);

afterAll(async () => {
  for (const client of clients) client.disconnect();
  for (const client of resp3Clients) if (client.isOpen) client.destroy();
  await binary?.kill();
  await cluster?.stop();
  if (dir !== undefined) removeTempDir(dir);
});

describe('workers: 2, cluster mode, read_from: replica', () => {
  it("/shards' replica rows list both workers' connections and their counts summed", async () => {
    // Clients land on the workers round robin: group them by the worker serving them.
    const byWorker = new Map<number, Redis[]>();
    for (const client of clients) {
      const pid = await pidOf(client);
      byWorker.set(pid, [...(byWorker.get(pid) ?? []), client]);
    }
    expect(byWorker.size).toBe(2);

    const keys = Array.from({ length: 120 }, (_, i) => `wr:${i}`);
    const setter = clients[0]!;
    for (const k of keys) expect(await setter.set(k, `v:${k}`)).toBe('OK');
    await replicated();
    await Promise.all(cluster.nodes.map((n) => redisCommand(n.port, 'CONFIG', 'RESETSTAT')));
    const before = await shards();
    const replicaRow = (report: ShardsReport, address: string): ReplicaRow | undefined =>
      report.shards.flatMap((s) => s.replicas).find((r) => r.address === address);

    // Every client of both workers reads every key once (hits), and one missing key each (a miss), in its own
    // order so that both workers read from every replica.
    const sent = new Map<string, { hits: number; misses: number }>();
    const ownerPort = await slotOwnerPorts(cluster);
    const replicaOf = (key: string): ClusterNode => {
      const master = cluster.masters().find((m) => m.port === ownerPort(keySlot(Buffer.from(key))))!;
      return cluster.replicasOf(master.id)[0]!;
    };
    const count = (key: string, hit: boolean): void => {
      const r = replicaOf(key).address;
      const c = sent.get(r) ?? { hits: 0, misses: 0 };
      if (hit) c.hits++;
      else c.misses++;
      sent.set(r, c);
    };
    await Promise.all(
      clients.map(async (client, i) => {
        for (const k of keys) {
          expect(await client.get(k)).toBe(`v:${k}`);
          count(k, true);
        }
        const missing = `wr:missing:${i}`;
        expect(await client.get(missing)).toBeNull();
        count(missing, false);
      }),
    );

    const after = await shards();
    const replicas = cluster.replicas();
    expect(after.shards.map((s) => s.replicas.length)).toEqual([1, 1, 1]);
    for (const node of replicas) {
      const row = replicaRow(after, node.address);
      const earlier = replicaRow(before, node.address);
      expect(row, `replica ${node.address} in /shards`).toBeDefined();
      expect(earlier, `replica ${node.address} in /shards before the reads`).toBeDefined();
      const served = await calls(node, 'get');
      const want = sent.get(node.address) ?? { hits: 0, misses: 0 };
      console.log(
        `replica ${node.address}: served ${served} GETs; /shards commands +${row!.commands - earlier!.commands}, ` +
          `hits +${row!.hits - earlier!.hits}, misses +${row!.misses - earlier!.misses}; connections of workers ${row!.connections.map((c) => c.worker)}`,
      );
      expect(served).toBe(want.hits + want.misses);
      expect(row!.role).toBe('replica');
      expect(row!.state).toBe('ready');
      expect(row!.readable).toBe(true);
      expect(row!.inflight).toBe(0);
      expect(row!.errors - earlier!.errors).toBe(0);
      expect(row!.commands - earlier!.commands).toBe(served);
      expect(row!.hits - earlier!.hits).toBe(want.hits);
      expect(row!.misses - earlier!.misses).toBe(want.misses);
      // Every worker's connections to the replica, each with its worker, all ready.
      expect([...new Set(row!.connections.map((c) => c.worker))].sort()).toEqual([1, 2]);
      expect(row!.connections.every((c) => c.state === 'ready')).toBe(true);
    }
  }, 60_000);

  it("lists both workers' RESP3 connections in every shard and replica row", async () => {
    // Two connections in a row land on different workers (round robin): each worker gets a RESP3 client.
    const pids = new Set<number>();
    for (let i = 0; i < 2; i++) {
      const client = createClient({ socket: { port, host: '127.0.0.1', reconnectStrategy: false }, RESP: 3 });
      client.on('error', () => undefined); // a connection closed when keymux is killed at the end is expected
      await client.connect();
      resp3Clients.push(client);
      pids.add(Number(/process_id:(\d+)/.exec(String(await client.info('server')))![1]));
    }
    expect(pids.size).toBe(2);
    // Keys on every master: each worker's SETs open its RESP3 connections to every master, its GETs to every replica.
    const keys = Array.from({ length: 60 }, (_, i) => `wr3:${i}`);
    for (const client of resp3Clients) {
      for (const k of keys) expect(await client.set(k, 'v')).toBe('OK');
      await replicated();
      for (const k of keys) expect(await client.get(k)).toBe('v');
    }
    const report = await shards();
    const workersOf = (list: ConnectionRow[]): Array<number | undefined> =>
      [...new Set(list.map((c) => c.worker))].sort();
    for (const shard of report.shards) {
      expect(workersOf(shard.resp3_connections), `shard ${shard.name}`).toEqual([1, 2]);
      expect(shard.resp3_connections.every((c) => c.state === 'ready')).toBe(true);
      for (const r of shard.replicas) {
        expect(workersOf(r.resp3_connections), `replica ${r.address}`).toEqual([1, 2]);
        expect(r.resp3_connections.every((c) => c.state === 'ready')).toBe(true);
      }
    }
  }, 60_000);
});
