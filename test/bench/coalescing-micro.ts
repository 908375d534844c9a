/**
 * Micro benchmark: what request coalescing (on by default) adds to one GET on keymux's data path, in CPU time,
 * in-process and without sockets (the machine's load does not blur it as it blurs rps). A GET Request is built,
 * handed to the near cache's read path (coalescing on, cache off: the default) or sent plainly, and answered in
 * batches of 16 (a pipeline), over 4,000 distinct keys (cache-resident, as bytes just read from a socket are).
 * Prints ns of CPU per request for each, median of 5 rounds of 1,000,000.
 *   npx tsx test/bench/coalescing-micro.ts
 */
import { pino } from 'pino';
import { NearCache, type NearCacheSettings } from '../../src/nearcache/near-cache.js';
import { Request } from '../../src/core/request.js';
import { ShardStats } from '../../src/metrics/stats.js';
import { ROLE_GET } from '../../src/nearcache/store.js';
import type { ShardPool } from '../../src/backend/pool.js';
import type { ShardRuntime, Topology } from '../../src/routing/topology.js';
import { idleOwner } from '../support/owner.js';

const owner = idleOwner();
const settings: NearCacheSettings = {
  enabled: false,
  maxBytes: 1 << 26,
  maxEntryBytes: 65536,
  admit: 'all',
  ttlMs: 0,
  commands: ['GET', 'MGET', 'HGET', 'HGETALL', 'EXISTS'],
  coalesce: true,
};
const nc = new NearCache(settings, () => null, pino({ level: 'silent' }));
const stats = new ShardStats('a', '127.0.0.1:1');
const pool = { shard: {}, stats, pick: () => null } as unknown as ShardPool;
const shard = { index: 0, pool } as unknown as ShardRuntime;
const topo = { shards: [shard] } as unknown as Topology;
const pending: Request[] = [];
const session = {
  id: 1,
  sendUnit(u: Request) {
    pending.push(u);
  },
};
const KEYS = 4000;
const frames = Array.from({ length: KEYS }, (_, i) => {
  const k = `key:${String(i).padStart(12, '0')}`;
  return {
    frame: Buffer.from(`*2\r\n$3\r\nGET\r\n$${k.length}\r\n${k}\r\n`),
    args: [Buffer.from('GET'), Buffer.from(k)],
  };
});
const reply = Buffer.from('$3\r\nabc\r\n');

function run(throughCache: boolean, iterations: number): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    const f = frames[(i * 7919) % KEYS];
    const req = new Request(owner, f.frame, f.args, 0, i);
    req.shardStats = stats;
    if (throughCache) nc.read(session, req, ROLE_GET, f.args[1], shard, pool, topo);
    else session.sendUnit(req);
    if (pending.length >= 16) {
      for (const p of pending) p.deliver(reply);
      pending.length = 0;
    }
  }
  for (const p of pending) p.deliver(reply);
  pending.length = 0;
  const c = process.cpuUsage(c0);
  return ((c.user + c.system) * 1000) / iterations;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const plain: number[] = [];
const coalescing: number[] = [];
for (let r = 0; r < 5; r++) {
  plain.push(run(false, 1_000_000));
  coalescing.push(run(true, 1_000_000));
}
console.log(
  `GET sent plainly: ${median(plain).toFixed(1)} ns CPU/request; through coalescing: ` +
    `${median(coalescing).toFixed(1)} ns; added: ${(median(coalescing) - median(plain)).toFixed(1)} ns`,
);
nc.close();
