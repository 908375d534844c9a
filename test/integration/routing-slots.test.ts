// Slot routing agrees with Redis itself: for 10,000 random keys (with hash tags, empty tags, nested braces and
// binary bytes) keymux's slot equals CLUSTER KEYSLOT of a real cluster-enabled redis-server, and a key written
// through keymux lands on the shard that owns its slot in the config.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { startKeymux, configFrom } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import { SlotRouter } from '../../src/routing/router.js';
import { SlotMap } from '../../src/routing/slot-map.js';
import type { Proxy } from '../../src/proxy.js';

let clusterNode: RedisProcess;

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomKeys(count: number, seed: number): Buffer[] {
  const rnd = prng(seed);
  const keys: Buffer[] = [];
  const pick = (n: number) => Math.floor(rnd() * n);
  for (let i = 0; i < count; i++) {
    const len = 1 + pick(24);
    const bytes: number[] = [];
    const kind = pick(6);
    for (let j = 0; j < len; j++) bytes.push(kind === 0 ? pick(256) : 97 + pick(26));
    let key = Buffer.from(bytes);
    if (kind === 1) key = Buffer.concat([Buffer.from('{'), key.subarray(0, 3), Buffer.from('}'), key]); // tag
    if (kind === 2) key = Buffer.concat([Buffer.from('{}'), key]); // empty tag: whole key hashed
    if (kind === 3) key = Buffer.concat([key, Buffer.from('{a{b}c}')]); // nested: first { to first }
    if (kind === 4) key = Buffer.concat([Buffer.from('}'), key, Buffer.from('{x')]); // close before open, unclosed
    keys.push(key);
  }
  return keys;
}

beforeAll(async () => {
  clusterNode = await startRedis({ args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'] });
});
afterAll(async () => {
  await clusterNode?.stop();
});

describe('slot routing', () => {
  it('matches CLUSTER KEYSLOT for 10,000 random keys', async () => {
    const keys = randomKeys(10_000, 42);
    const replies = await redisCommands(
      clusterNode.port,
      keys.map((k) => ['CLUSTER', 'KEYSLOT', k]),
      { timeoutMs: 30000 },
    );
    let mismatches = 0;
    keys.forEach((k, i) => {
      if (keySlot(k) !== replies[i]) mismatches++;
    });
    expect(mismatches).toBe(0);
    // The router with the config's hash tag agrees too.
    const router = new SlotRouter(new SlotMap([[[0, 16383]]]), '{}');
    keys.forEach((k, i) => {
      if (router.slotFor(k) !== replies[i]) mismatches++;
    });
    expect(mismatches).toBe(0);
  });

  it('honours a custom hash tag and no hash tag', () => {
    const noTag = new SlotRouter(new SlotMap([[[0, 16383]]]), null);
    expect(noTag.slotFor(Buffer.from('{user}:1'))).toBe(keySlot(Buffer.from('{user}:1'), -1, -1));
    expect(noTag.slotFor(Buffer.from('{user}:1'))).not.toBe(keySlot(Buffer.from('user')));
    const angle = new SlotRouter(new SlotMap([[[0, 16383]]]), '<>');
    expect(angle.slotFor(Buffer.from('a<user>b'))).toBe(keySlot(Buffer.from('user')));
  });
});

describe('keys land on the shard that owns their slot', () => {
  let backends: RedisProcess[];
  let proxy: Proxy;
  let client: Redis;
  beforeAll(async () => {
    backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
    // Uneven, interleaved ranges so the test is not fooled by an even split.
    proxy = await startKeymux({
      mode: 'slots',
      shards: [
        { name: 'a', address: backends[0].address, slots: ['0-99', '5000-9999'] },
        { name: 'b', address: backends[1].address, slots: ['100-4999', 12000] },
        { name: 'c', address: backends[2].address, slots: ['10000-11999', '12001-16383'] },
      ],
    });
    client = new Redis({ port: proxy.port, lazyConnect: true });
    await client.connect();
  });
  afterAll(async () => {
    client?.disconnect();
    await proxy?.close();
    await Promise.all(backends.map((b) => b.stop()));
  });

  it('writes 3,000 keys and finds each on its owner', async () => {
    const config = configFrom({
      mode: 'slots',
      shards: [
        { name: 'a', address: backends[0].address, slots: ['0-99', '5000-9999'] },
        { name: 'b', address: backends[1].address, slots: ['100-4999', 12000] },
        { name: 'c', address: backends[2].address, slots: ['10000-11999', '12001-16383'] },
      ],
    });
    const map = new SlotMap(config.shards.map((s) => s.slots));
    const keys = Array.from({ length: 3000 }, (_, i) => `own:${i}`);
    const pipe = client.pipeline();
    for (const k of keys) pipe.set(k, k);
    await pipe.exec();
    const onBackend = await Promise.all(
      backends.map((b) =>
        redisCommands(
          b.port,
          keys.map((k) => ['EXISTS', k]),
        ),
      ),
    );
    let wrong = 0;
    keys.forEach((k, i) => {
      const owner = map.ownerOf(keySlot(Buffer.from(k)));
      backends.forEach((_, s) => {
        if ((onBackend[s][i] === 1) !== (s === owner)) wrong++;
      });
    });
    expect(wrong).toBe(0);
  });
});
