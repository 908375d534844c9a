/**
 * Proves RingRouter routes exactly as a real twemproxy (Debian nutcracker 0.5.0): four real redis-servers with
 * weights 1,2,1,3 behind nutcracker; >= 10,000 keys (plain, {hash tagged}, malformed tags, empty, random bytes,
 * and keys aimed at the continuum's ends) are written through nutcracker, then every backend is read directly
 * and the backend holding each key must be the shard RingRouter names. Run for every twemproxy hash, with and
 * without server names, and once more for two servers whose ketama points collide (tie order).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HashName, ShardConfig } from '../../src/config/schema.js';
import { HASHERS, md5Words4 } from '../../src/routing/hashers.js';
import { ketamaPointCount, RingRouter } from '../../src/routing/ketama.js';
import { startNutcracker } from '../support/nutcracker.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux } from '../support/keymux.js';

const WEIGHTS = [1, 2, 1, 3];
// Config order differs from twemproxy's name order (shorter first, then bytewise): c, alpha, shard-b, shard-delta.
const NAMES = ['shard-delta', 'alpha', 'shard-b', 'c'];
const ALL_HASHES: HashName[] = [
  'fnv1a_64',
  'md5',
  'murmur',
  'one_at_a_time',
  'crc16',
  'crc32',
  'crc32a',
  'fnv1_64',
  'fnv1_32',
  'fnv1a_32',
  'hsieh',
  'jenkins',
];

/** Deterministic PRNG (mulberry32) so a failure can be reproduced. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function baseKeys(): Buffer[] {
  const rand = rng(0x6b65796d);
  const out: Buffer[] = [Buffer.alloc(0), Buffer.from('{}'), Buffer.from('{'), Buffer.from('}{'), Buffer.from('{a}')];
  for (let i = 0; i < 3000; i++) out.push(Buffer.from(`user:${i}:profile`));
  for (let i = 0; i < 1500; i++) out.push(Buffer.from(`{tag${i % 97}}:${i}`));
  for (let i = 0; i < 500; i++) out.push(Buffer.from(`order:{${i % 40}}:line:${i}`));
  for (let i = 0; i < 300; i++) out.push(Buffer.from(`{}empty-tag:${i}`));
  for (let i = 0; i < 300; i++) out.push(Buffer.from(`{unclosed:${i}`));
  for (let i = 0; i < 300; i++) out.push(Buffer.from(`}backwards{${i}`));
  for (let i = 0; i < 300; i++) out.push(Buffer.from(`a{b${i % 7}}{c${i}}`));
  for (let i = 0; i < 4500; i++) {
    const len = 1 + Math.floor(rand() * 40);
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) {
      const r = rand();
      b[j] = r < 0.05 ? 0x7b : r < 0.1 ? 0x7d : Math.floor(rand() * 256);
    }
    out.push(b);
  }
  return out;
}

function shardsFor(redis: RedisProcess[], named: boolean, names = NAMES, weights = WEIGHTS): ShardConfig[] {
  return redis.map((r, i) => ({
    name: named ? names[i] : r.address,
    named,
    address: r.address,
    host: r.host,
    port: r.port,
    slots: null,
    weight: weights[i],
  }));
}

/** Keys whose hash lands past the last point (wraparound) or at/below the first point, for this ring. */
function edgeKeys(router: RingRouter, hash: HashName, want: number): Buffer[] {
  const pts = router.continuum.points;
  const lo = pts[0];
  const hi = pts[pts.length - 1];
  const h = HASHERS[hash];
  const out: Buffer[] = [];
  let above = 0;
  let below = 0;
  for (let i = 0; i < 2_000_000 && (above < want || below < want); i++) {
    const k = Buffer.from(`edge:${hash}:${i}`);
    const v = h(k, 0, k.length);
    if (v > hi && above < want) {
      out.push(k);
      above++;
    } else if (v <= lo && below < want) {
      out.push(k);
      below++;
    }
  }
  return out;
}

function dedupe(keys: Buffer[]): Buffer[] {
  const seen = new Set<string>();
  return keys.filter((k) => {
    const s = k.toString('latin1');
    if (seen.has(s)) return false;
    seen.add(s);
    return true;
  });
}

/**
 * Writes every key through nutcracker (one pipelined connection), reads every backend directly, and returns
 * where each key actually lives alongside RingRouter's answer.
 */
async function placeAndLocate(redis: RedisProcess[], nutcrackerPort: number, keys: Buffer[]): Promise<number[]> {
  await Promise.all(redis.map((r) => redisCommands(r.port, [['FLUSHALL']])));
  const sets = keys.map((k, i) => ['SET', k, String(i)]);
  const replies = await redisCommands(nutcrackerPort, sets, { timeoutMs: 20_000 });
  const failed = replies.map((r, i) => [r, i] as const).filter(([r]) => r !== 'OK');
  expect(failed.slice(0, 5), 'every SET through nutcracker answers OK').toEqual([]);
  const where = new Array<number>(keys.length).fill(-1);
  const values = await Promise.all(
    redis.map((r) => redisCommands(r.port, [['MGET', ...keys]], { buffers: true, timeoutMs: 20_000 })),
  );
  values.forEach(([reply], shard) => {
    const arr = reply as Array<Buffer | null>;
    arr.forEach((v, i) => {
      if (v === null) return;
      expect(v.toString(), `value of key #${i}`).toBe(String(i));
      expect(where[i], `key #${i} (${keys[i].toString('hex')}) found on two backends`).toBe(-1);
      where[i] = shard;
    });
  });
  return where;
}

/** Writes every key through a keymux in ring mode over the same servers; returns where each key lives. */
async function placeViaKeymux(
  redis: RedisProcess[],
  shards: ShardConfig[],
  hash: HashName,
  named: boolean,
  keys: Buffer[],
): Promise<number[]> {
  await Promise.all(redis.map((r) => redisCommands(r.port, [['FLUSHALL']])));
  const proxy = await startKeymux({
    mode: 'ring',
    hash_tag: '{}',
    ring: { hash },
    shards: shards.map((s) =>
      named ? { name: s.name, address: s.address, weight: s.weight } : { address: s.address, weight: s.weight },
    ),
  });
  try {
    const replies = await redisCommands(
      proxy.port,
      keys.map((k, i) => ['SET', k, String(i)]),
      { timeoutMs: 20_000 },
    );
    expect(replies.filter((r) => r !== 'OK').slice(0, 5), 'every SET through keymux answers OK').toEqual([]);
  } finally {
    await proxy.close();
  }
  const where = new Array<number>(keys.length).fill(-1);
  const values = await Promise.all(
    redis.map((r) => redisCommands(r.port, [['MGET', ...keys]], { buffers: true, timeoutMs: 20_000 })),
  );
  values.forEach(([reply], shard) =>
    (reply as Array<Buffer | null>).forEach((v, i) => {
      if (v !== null) where[i] = shard;
    }),
  );
  return where;
}

describe('RingRouter agrees with a real nutcracker 0.5.0', () => {
  let redis: RedisProcess[] = [];
  const keys = dedupe(baseKeys());

  beforeAll(async () => {
    redis = await Promise.all([0, 1, 2, 3, 4].map(() => startRedis()));
  });
  afterAll(async () => {
    await Promise.all(redis.map((r) => r.stop()));
  });

  for (const hash of ALL_HASHES) {
    for (const named of [false, true]) {
      it(`hash ${hash}, ${named ? 'named servers' : 'host:port servers'}, weights ${WEIGHTS.join(',')}`, async () => {
        const shards = shardsFor(redis.slice(0, 4), named);
        const router = new RingRouter(shards, hash, '{}');
        const all = dedupe([...keys, ...edgeKeys(router, hash, 10)]);
        expect(all.length).toBeGreaterThanOrEqual(10_000);
        const nc = await startNutcracker({
          hash,
          hashTag: '{}',
          servers: shards.map((s) => ({
            host: s.host,
            port: s.port,
            weight: s.weight,
            name: named ? s.name : undefined,
          })),
        });
        try {
          const where = await placeAndLocate(redis.slice(0, 4), nc.port, all);
          const mismatches: string[] = [];
          const perShard = [0, 0, 0, 0];
          for (let i = 0; i < all.length; i++) {
            const want = router.shardFor(all[i], 0, all[i].length);
            if (where[i] >= 0) perShard[where[i]]++;
            if (where[i] !== want)
              mismatches.push(`${all[i].toString('hex') || '(empty)'}: nutcracker ${where[i]}, keymux ${want}`);
          }
          expect(mismatches.slice(0, 10), `${mismatches.length} of ${all.length} keys differ`).toEqual([]);
          // Not vacuous: every key was found, and every backend got some. Except crc32: libmemcached's crc32 is
          // 15 bits (0..32767), so under ketama (almost) every key lands on the owner of the first point >= 0,
          // one backend, in twemproxy too.
          expect(perShard.reduce((a, b) => a + b, 0)).toBe(all.length);
          if (hash !== 'crc32') for (const n of perShard) expect(n).toBeGreaterThan(0);
          if (hash === 'fnv1a_64' || hash === 'md5' || hash === 'murmur') {
            // End to end: the same keys written through keymux land on the same backends as through nutcracker.
            const viaKeymux = await placeViaKeymux(redis.slice(0, 4), shards, hash, named, all);
            const differ = viaKeymux.filter((s, i) => s !== where[i]).length;
            expect(differ, `keys placed differently by keymux and nutcracker`).toBe(0);
          }
        } finally {
          await nc.stop();
        }
      });
    }
  }

  it('point counts use C float arithmetic: weights 1,11,1,11,1 give the weight-1 servers 28 points, not 32', async () => {
    const weights = [1, 11, 1, 11, 1];
    // Exact arithmetic says 1/25 * 160/4 * 5 = 8 hashes (32 points); C's single-precision floats say 7.99999...
    expect(ketamaPointCount(1, 25, 5)).toBe(28);
    expect(ketamaPointCount(11, 25, 5)).toBe(352);
    const shards = shardsFor(redis, true, ['v', 'w', 'x', 'y', 'z'], weights);
    const router = new RingRouter(shards, 'fnv1a_64', '{}');
    expect(router.continuum.size).toBe(28 * 3 + 352 * 2);
    const nc = await startNutcracker({
      hash: 'fnv1a_64',
      hashTag: '{}',
      servers: shards.map((s) => ({ host: s.host, port: s.port, weight: s.weight, name: s.name })),
    });
    try {
      const where = await placeAndLocate(redis, nc.port, keys);
      const mismatches = keys
        .map((k, i) => [k, i] as const)
        .filter(([k, i]) => router.shardFor(k, 0, k.length) !== where[i]);
      expect(mismatches.length, 'keys routed differently from nutcracker').toBe(0);
    } finally {
      await nc.stop();
    }
  });

  it('equal point values: the server first in twemproxy name order owns the tie', async () => {
    // Find two names (weight 1 each, two servers -> 160 points each) with a common ketama point value.
    const digest = new Uint32Array(4);
    const seen = new Map<number, string>();
    let pair: [string, string, number] | null = null;
    for (let n = 0; n < 20_000 && pair === null; n++) {
      const name = `tie-${n}`;
      const mine = new Set<number>();
      for (let i = 0; i < 40; i++) {
        const label = Buffer.from(`${name}-${i}`);
        md5Words4(label, 0, label.length, digest);
        for (const v of digest) mine.add(v);
      }
      for (const v of mine) {
        const other = seen.get(v);
        // Want names of different lengths where the shorter is bytewise greater ("tie-84" vs "tie-666"), so
        // twemproxy's order (length first), plain bytewise order and config order all give different answers.
        if (other !== undefined && other.length < name.length && other > name) {
          pair = [other, name, v];
          break;
        }
      }
      for (const v of mine) seen.set(v, name);
    }
    expect(pair, 'a colliding pair of names').not.toBeNull();
    const [shorter, longer, value] = pair!;
    // twemproxy orders by length first, so `shorter` wins the tie; list it second in the config, where neither
    // config order nor plain bytewise order would pick it.
    const names = [longer, shorter];
    const shards = shardsFor(redis.slice(0, 2), true, names, [1, 1]);
    const router = new RingRouter(shards, 'md5', null);
    const pts = router.continuum.points;
    const at = pts.indexOf(value);
    expect(pts[at + 1]).toBe(value); // the tie is in the continuum
    const prev = at > 0 ? pts[at - 1] : -1;
    // Keys hashing into (prev, value] land on the tied point.
    const tieKeys: Buffer[] = [];
    for (let i = 0; tieKeys.length < 25 && i < 5_000_000; i++) {
      const k = Buffer.from(`tie-key:${i}`);
      const h = HASHERS.md5(k, 0, k.length);
      if (h > prev && h <= value) tieKeys.push(k);
    }
    expect(tieKeys.length).toBe(25);
    for (const k of tieKeys) expect(router.shardFor(k, 0, k.length)).toBe(1); // names[1] = shorter
    const nc = await startNutcracker({
      hash: 'md5',
      hashTag: null,
      servers: shards.map((s) => ({ host: s.host, port: s.port, weight: 1, name: s.name })),
    });
    try {
      const where = await placeAndLocate(redis.slice(0, 2), nc.port, tieKeys);
      expect(where).toEqual(tieKeys.map(() => 1));
    } finally {
      await nc.stop();
    }
  });
});
