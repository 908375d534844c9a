/**
 * Reloads that switch a shard between `address` and `sentinel_master` (issue 13), on real processes (3
 * redis-sentinel monitoring master "ma": a primary and a replica; a plain shard b beside it):
 * - slots mode: a → sentinel_master ma (its primary is the address it had) and back: the dry-run plan sees no
 *   move, no migration starts, every key stays readable and writes go on, from the same client connection;
 * - ring mode: an unnamed shard (ring identity "host:port") becomes sentinel_master ma named "host:port": the ring
 *   is the same (no migration);
 * - a reload naming a master no sentinel knows is refused with a clear error and the running config stays.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startSentinels, type SentinelSetup } from '../support/sentinel.js';
import { startRedis, type RedisProcess } from '../support/redis.js';
import '../support/keymux.js'; // silences the proxy's logger
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';

let ha: SentinelSetup;
let b: RedisProcess;
let dir: string;
const proxies: Proxy[] = [];
const clients: Redis[] = [];

beforeAll(async () => {
  ha = await startSentinels({ masters: [{ name: 'ma', replicas: 1 }], sentinels: 3 });
  b = await startRedis();
  await ha.ready('ma', 1);
  dir = makeTempDir('keymux-sentinel-reload-');
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  for (const p of proxies) await p.close();
  await ha?.stop();
  await b?.stop('SIGKILL');
  removeTempDir(dir);
});

function write(file: string, doc: Record<string, unknown>): void {
  fs.writeFileSync(
    file,
    stringify({
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      sentinel: { sentinels: ha.addresses() },
      log: { level: 'silent' },
      ...doc,
    }),
  );
}

async function start(file: string): Promise<{ proxy: Proxy; client: Redis }> {
  const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
  proxies.push(proxy);
  const client = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await client.connect();
  clients.push(client);
  return { proxy, client };
}

async function dryRun(proxy: Proxy): Promise<{ plan: { unchanged: boolean; moves: unknown[]; changed: unknown[] } }> {
  const res = await request(`http://127.0.0.1:${proxy.adminPort}/reload?dry_run=1&sample=0`, { method: 'POST' });
  return (await res.body.json()) as { plan: { unchanged: boolean; moves: unknown[]; changed: unknown[] } };
}

const KEYS = Array.from({ length: 100 }, (_, i) => `k:${i}`);

describe('reloads between address and sentinel_master', () => {
  it('slots mode: switching shard a to its sentinel master and back moves no key and starts no migration', async () => {
    const primary = await ha.primaryAddress('ma');
    const file = path.join(dir, 'slots.yaml');
    const asAddress = {
      mode: 'slots',
      shards: [
        { name: 'a', address: primary, slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ],
    };
    const asSentinel = {
      mode: 'slots',
      shards: [
        { name: 'a', sentinel_master: 'ma', slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ],
    };
    write(file, asAddress);
    const { proxy, client } = await start(file);
    for (const k of KEYS) await client.set(k, k);

    write(file, asSentinel);
    const plan = await dryRun(proxy);
    expect(plan.plan.unchanged).toBe(true);
    expect(plan.plan.moves).toEqual([]);
    expect(plan.plan.changed).toEqual([{ name: 'a', address: primary, changes: ['now sentinel_master ma'] }]);
    const r1 = await proxy.reloadFromFile('test');
    expect(r1).toMatchObject({ ok: true });
    expect(proxy.topology.migration).toBeNull();
    expect(proxy.topology.shards[0]).toMatchObject({ address: primary, sentinelMaster: 'ma' });
    expect(proxy.topology.shards[0]!.replicas.map((r) => r.shard.address)).toEqual(
      ha.masters[0]!.nodes.slice(1).map((n) => n.address),
    );
    expect(await client.mget(...KEYS)).toEqual(KEYS);
    await client.set('after-switch', '1');

    write(file, asAddress);
    expect(await proxy.reloadFromFile('test')).toMatchObject({ ok: true });
    expect(proxy.topology.migration).toBeNull();
    expect(proxy.topology.shards[0]).toMatchObject({ address: primary, sentinelMaster: null });
    expect(await client.mget(...KEYS, 'after-switch')).toEqual([...KEYS, '1']);
    expect(proxy.migrationProgress()).toEqual([]);
  });

  it('ring mode: an unnamed shard becomes a sentinel shard named by its address: the ring stays', async () => {
    const primary = await ha.primaryAddress('ma');
    const file = path.join(dir, 'ring.yaml');
    write(file, { mode: 'ring', shards: [{ address: primary }, { address: b.address }] });
    const { proxy, client } = await start(file);
    for (const k of KEYS) await client.set(k, `r-${k}`);
    const owners = KEYS.map((k) => proxy.topology.router.shardFor(Buffer.from(k)));
    const signature = proxy.topology.routingSignature();

    write(file, { mode: 'ring', shards: [{ name: primary, sentinel_master: 'ma' }, { address: b.address }] });
    expect((await dryRun(proxy)).plan.unchanged).toBe(true);
    expect(await proxy.reloadFromFile('test')).toMatchObject({ ok: true });
    expect(proxy.topology.shards[0]!.sentinelMaster).toBe('ma');
    expect(proxy.topology.routingSignature()).toBe(signature);
    expect(proxy.topology.migration).toBeNull();
    expect(KEYS.map((k) => proxy.topology.router.shardFor(Buffer.from(k)))).toEqual(owners);
    expect(await client.mget(...KEYS)).toEqual(KEYS.map((k) => `r-${k}`));
  });

  it('refuses a reload naming a master no sentinel knows; the running config stays', async () => {
    const primary = await ha.primaryAddress('ma');
    const file = path.join(dir, 'unknown.yaml');
    write(file, { mode: 'ring', shards: [{ name: 'a', sentinel_master: 'ma' }, { address: b.address }] });
    const { proxy, client } = await start(file);
    expect(proxy.topology.shards[0]!.address).toBe(primary);
    write(file, { mode: 'ring', shards: [{ name: 'a', sentinel_master: 'nope' }, { address: b.address }] });
    const r = await proxy.reloadFromFile('test');
    expect(r.ok).toBe(false);
    expect(r.errors[0]).toMatch(/sentinel: no sentinel named a primary for "nope" \(.*does not know a master named/);
    expect(proxy.topology.shards[0]!.sentinelMaster).toBe('ma');
    expect(await client.set('still', 'ok')).toBe('OK');
  });
});
