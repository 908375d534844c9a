/**
 * Observability end to end: keymux in slots mode over three real redis-servers with its admin server, driven by
 * ioredis and raw sockets, read back through /metrics, /shards, /hotkeys and /slowlog. Asserts exact per-shard
 * hit/miss counts (700 hits + 300 misses on shard a; 50 MGETs of 10 keys split across shards, counted per key on
 * the shard that answered), every hit/miss rule on a live server, exact client byte counters, the hot key of a
 * skewed workload first in /hotkeys and /metrics with at most K series, the slow log (threshold 0 via a reload,
 * so no wall-clock threshold is involved), metrics turned off by a reload, and that every metric the Grafana
 * dashboard queries exists in a live scrape. Counts are taken as differences between two scrapes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs, { readFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { configFrom, RawClient, ringConfig, slotsConfig, startKeymux, type ConfigObject } from '../support/keymux.js';
import { getJson, httpGet, promqlMetricNames, samplesOf, scrape, valueOf, type Sample } from '../support/metrics.js';
import { makeTempDir } from '../support/tmpdirs.js';
import { keyHash } from '../../src/metrics/hotkeys.js';
import type { Proxy } from '../../src/proxy.js';

const K = 10;
let backends: RedisProcess[] = [];
let proxy: Proxy;
let client: Redis;
let admin: number;
const SHARDS = ['a', 'b', 'c'];

/** The admin token: /hotkeys and /slowlog show key names only to its holder. */
const TOKEN = 'metrics-test-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const TOKEN_FILE = path.join(makeTempDir('keymux-metrics-'), 'token');
fs.writeFileSync(TOKEN_FILE, TOKEN);

function config(metrics: ConfigObject = {}): ConfigObject {
  return slotsConfig(
    backends.map((b) => b.port),
    {
      admin: { address: '127.0.0.1:0', token_file: TOKEN_FILE },
      metrics: { hot_keys: { k: K, sample_rate: 1 }, slowlog: { threshold_ms: 3_600_000 }, ...metrics },
    },
  );
}

function reload(metrics: ConfigObject): void {
  expect(proxy.reload(configFrom(config(metrics)))).toBeFalsy();
}

const shardOf = (key: string): string => SHARDS[proxy.topology.router.shardFor(Buffer.from(key))];

/** `n` keys named prefix + i that live on `shard`. */
function keysOn(shard: string, prefix: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (shardOf(`${prefix}${i}`) === shard) out.push(`${prefix}${i}`);
  return out;
}

/** Per-shard [hits, misses] added between two scrapes. */
function hitMissDelta(before: Sample[], after: Sample[]): Record<string, [number, number]> {
  const d: Record<string, [number, number]> = {};
  for (const shard of SHARDS) {
    d[shard] = [
      valueOf(after, 'keymux_shard_hits_total', { shard }) - valueOf(before, 'keymux_shard_hits_total', { shard }),
      valueOf(after, 'keymux_shard_misses_total', { shard }) - valueOf(before, 'keymux_shard_misses_total', { shard }),
    ];
  }
  return d;
}

const delta = (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}): number => {
  const v = (s: Sample[]): number => (samplesOf(s, name, labels).length === 0 ? 0 : valueOf(s, name, labels));
  return v(after) - v(before);
};

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(config());
  admin = proxy.adminPort!;
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true, enableAutoPipelining: false });
  await client.connect();
});

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('per-shard hit/miss', () => {
  it('counts 700 hits + 300 misses on shard a, and 50 split MGETs of 10 keys per key on each shard, exactly', async () => {
    const present = keysOn('a', 'hm:present:', 7);
    const absent = keysOn('a', 'hm:absent:', 300);
    const pool = Array.from({ length: 30 }, (_, i) => `hm:mget:${i}`);
    const stored = pool.filter((_, i) => i % 3 !== 0);
    await client.mset(...present.flatMap((k) => [k, 'v']), ...stored.flatMap((k) => [k, 'v']));
    const mgets = Array.from({ length: 50 }, (_, j) =>
      Array.from({ length: 10 }, (_, t) => pool[(j * 7 + t * 3) % 30]),
    );
    const want: Record<string, [number, number]> = { a: [700, 300], b: [0, 0], c: [0, 0] };
    const fragments: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (const keys of mgets) {
      for (const k of keys) want[shardOf(k)][stored.includes(k) ? 0 : 1]++;
      for (const s of new Set(keys.map(shardOf))) fragments[s]++;
    }
    expect(Object.values(fragments).filter((n) => n > 0).length).toBe(3); // the MGETs really span every shard

    const before = await scrape(admin);
    const p = client.pipeline();
    for (const k of present) for (let i = 0; i < 100; i++) p.get(k);
    for (const k of absent) p.get(k);
    for (const keys of mgets) p.mget(...keys);
    const replies = await p.exec();
    expect(replies!.every(([err]) => err === null)).toBe(true);
    const after = await scrape(admin);

    expect(hitMissDelta(before, after)).toEqual(want);
    expect(delta(before, after, 'keymux_commands_total', { command: 'get' })).toBe(1000);
    expect(delta(before, after, 'keymux_commands_total', { command: 'mget' })).toBe(50);
    for (const shard of SHARDS) {
      expect(delta(before, after, 'keymux_shard_commands_total', { shard }), shard).toBe(
        fragments[shard] + (shard === 'a' ? 1000 : 0),
      );
    }
    expect(delta(before, after, 'keymux_command_duration_seconds_count', { command: 'get' })).toBe(1000);
    expect(delta(before, after, 'keymux_shard_duration_seconds_count', { shard: 'a' })).toBe(1000 + fragments.a);
  });

  it("applies the rule of every read command on a live server, on the key's shard", async () => {
    const t = '{rules}';
    await client.call('HSET', `${t}h`, 'f', 'v', 'g', 'w');
    await client.call('SADD', `${t}s`, 'm', 'n');
    await client.call('RPUSH', `${t}l`, 'x', 'y');
    await client.call('ZADD', `${t}z`, '1', 'm');
    await client.call('SET', `${t}str`, 'hello');
    await client.call('SET', `${t}gx`, 'v');
    await client.call('SET', `${t}gd`, 'v');
    await client.call('XADD', `${t}x`, '*', 'f', 'v');
    const n = `${t}none`;
    const cases: Array<[string[], number, number]> = [
      [['GET', `${t}str`], 1, 0],
      [['GET', n], 0, 1],
      [['GETEX', `${t}gx`, 'PX', '100000'], 1, 0],
      [['GETEX', n], 0, 1],
      [['GETDEL', `${t}gd`], 1, 0],
      [['GETDEL', `${t}gd`], 0, 1],
      [['GETRANGE', `${t}str`, '0', '-1'], 1, 0],
      [['GETRANGE', n, '0', '-1'], 0, 1],
      [['HGET', `${t}h`, 'f'], 1, 0],
      [['HGET', `${t}h`, 'nope'], 0, 1],
      [['HGET', n, 'f'], 0, 1],
      [['HMGET', `${t}h`, 'f', 'nope', 'g'], 2, 1],
      [['HMGET', n, 'f', 'g'], 0, 2],
      [['HEXISTS', `${t}h`, 'f'], 1, 0],
      [['HEXISTS', `${t}h`, 'nope'], 0, 1],
      [['HGETALL', `${t}h`], 1, 0],
      [['HGETALL', n], 0, 1],
      [['HKEYS', `${t}h`], 1, 0],
      [['HVALS', n], 0, 1],
      [['HRANDFIELD', `${t}h`], 1, 0],
      [['HRANDFIELD', n], 0, 1],
      [['HRANDFIELD', n, '2'], 0, 1],
      [['SISMEMBER', `${t}s`, 'm'], 1, 0],
      [['SISMEMBER', `${t}s`, 'q'], 0, 1],
      [['SMISMEMBER', `${t}s`, 'm', 'q', 'n'], 2, 1],
      [['SMEMBERS', `${t}s`], 1, 0],
      [['SMEMBERS', n], 0, 1],
      [['SRANDMEMBER', `${t}s`], 1, 0],
      [['SRANDMEMBER', n], 0, 1],
      [['SRANDMEMBER', `${t}s`, '5'], 1, 0],
      [['SRANDMEMBER', n, '5'], 0, 1],
      [['LRANGE', `${t}l`, '0', '-1'], 1, 0],
      [['LRANGE', n, '0', '-1'], 0, 1],
      [['LINDEX', `${t}l`, '1'], 1, 0],
      [['LINDEX', `${t}l`, '9'], 0, 1],
      [['LPOS', `${t}l`, 'x'], 1, 0],
      [['LPOS', `${t}l`, 'q'], 0, 1],
      [['LPOS', `${t}l`, 'q', 'COUNT', '0'], 0, 1],
      [['ZSCORE', `${t}z`, 'm'], 1, 0],
      [['ZSCORE', `${t}z`, 'q'], 0, 1],
      [['ZRANK', `${t}z`, 'm'], 1, 0],
      [['ZREVRANK', `${t}z`, 'q'], 0, 1],
      [['ZMSCORE', `${t}z`, 'm', 'q'], 1, 1],
      [['ZRANGE', `${t}z`, '0', '-1'], 1, 0],
      [['ZRANGEBYSCORE', n, '-inf', '+inf'], 0, 1],
      [['ZREVRANGE', `${t}z`, '0', '-1'], 1, 0],
      [['ZRANGEBYLEX', n, '-', '+'], 0, 1],
      [['XRANGE', `${t}x`, '-', '+'], 1, 0],
      [['XREVRANGE', n, '+', '-'], 0, 1],
      [['EXISTS', `${t}str`, n, `${t}h`], 2, 1],
      [['HGET', `${t}s`, 'f'], 0, 0], // WRONGTYPE: an error is neither
      [['SET', `${t}w`, 'v'], 0, 0],
      [['LLEN', `${t}l`], 0, 0],
      [['DEL', n], 0, 0],
    ];
    const shard = shardOf(t);
    for (const [cmd, hits, misses] of cases) {
      const before = await scrape(admin);
      await client.call(cmd[0], ...cmd.slice(1)).catch(() => undefined);
      const d = hitMissDelta(before, await scrape(admin));
      const expected = Object.fromEntries(SHARDS.map((s) => [s, s === shard ? [hits, misses] : [0, 0]]));
      expect(d, cmd.join(' ')).toEqual(expected);
    }
  });

  it('counts a split EXISTS per key on each shard', async () => {
    const [a1, a2] = keysOn('a', 'ex:', 2);
    const [b1] = keysOn('b', 'ex:', 1);
    const [c1, c2] = keysOn('c', 'ex:', 2);
    await client.mset(a1, '1', c1, '1', c2, '1');
    const before = await scrape(admin);
    expect(await client.exists(a1, a2, b1, c1, c2, a1)).toBe(4);
    expect(hitMissDelta(before, await scrape(admin))).toEqual({ a: [2, 1], b: [0, 1], c: [2, 0] });
  });
});

describe('ring mode', () => {
  it('counts hits and misses per ring member exactly, and /shards shows weights', async () => {
    const ring = await startKeymux(
      ringConfig(
        backends.map((b) => b.port),
        { admin: '127.0.0.1:0' },
      ),
    );
    const rc = new Redis({ port: ring.port, host: '127.0.0.1', lazyConnect: true });
    try {
      await rc.connect();
      const names = ring.topology.shards.map((s) => s.name);
      const owner = (k: string): string => names[ring.topology.router.shardFor(Buffer.from(k))];
      // Keys that differ in their first bytes (twemproxy's fnv1a_64 puts ring:0..39 on one shard in ~30% of port
      // sets, which would make the per-shard counts trivially right).
      const keys = Array.from({ length: 40 }, (_, i) => `${i}:ring`);
      const stored = keys.filter((_, i) => i % 4 !== 0);
      await rc.mset(...stored.flatMap((k) => [k, 'v']));
      const want: Record<string, [number, number]> = Object.fromEntries(names.map((n) => [n, [0, 0]]));
      for (const k of keys) want[owner(k)][stored.includes(k) ? 0 : 1] += 2; // one GET and one key of the MGET
      expect(Object.values(want).every(([hits, misses]) => hits + misses > 0)).toBe(true); // every member counted
      const before = await scrape(ring.adminPort!);
      const p = rc.pipeline();
      for (const k of keys) p.get(k);
      p.mget(...keys);
      await p.exec();
      const after = await scrape(ring.adminPort!);
      const got = Object.fromEntries(
        names.map((shard) => [
          shard,
          [
            valueOf(after, 'keymux_shard_hits_total', { shard }) -
              valueOf(before, 'keymux_shard_hits_total', { shard }),
            valueOf(after, 'keymux_shard_misses_total', { shard }) -
              valueOf(before, 'keymux_shard_misses_total', { shard }),
          ],
        ]),
      );
      expect(got).toEqual(want);
      const shards = await getJson(ring.adminPort!, '/shards');
      expect(shards.mode).toBe('ring');
      expect(
        shards.shards.map((s: { name: string; weight: number; slots: null }) => [s.name, s.weight, s.slots]),
      ).toEqual(names.map((n) => [n, 1, null]));
    } finally {
      rc.disconnect();
      await ring.close();
    }
  });
});

describe('client-side counters', () => {
  it('counts bytes in and out, commands and protocol errors exactly', async () => {
    const before = await scrape(admin);
    const raw = await RawClient.connect(proxy.port);
    raw.write('*1\r\n$4\r\nPING\r\n');
    await raw.untilText('+PONG\r\n');
    const mid = await scrape(admin);
    expect(delta(before, mid, 'keymux_client_received_bytes_total')).toBe(14);
    expect(delta(before, mid, 'keymux_client_sent_bytes_total')).toBe(7);
    expect(delta(before, mid, 'keymux_commands_total', { command: 'ping' })).toBe(1);
    expect(delta(before, mid, 'keymux_client_connections_total')).toBe(1);
    expect(valueOf(mid, 'keymux_client_connections')).toBe(proxy.clientCount());
    raw.write('*x\r\n');
    await raw.untilClosed();
    expect(delta(mid, await scrape(admin), 'keymux_protocol_errors_total')).toBe(1);
  });

  it('counts a known command keymux refuses (wrong arity, unknown subcommand, NOAUTH) under its name, not unknown', async () => {
    const before = await scrape(admin);
    const raw = await RawClient.connect(proxy.port);
    const replies = await raw.exchange(
      '*1\r\n$3\r\nGET\r\n*2\r\n$6\r\nOBJECT\r\n$4\r\nNOPE\r\n*1\r\n$6\r\nFOOBAR\r\n',
      3,
    );
    expect(String(replies[0])).toMatch(/wrong number of arguments/);
    expect(String(replies[1])).toMatch(/unknown subcommand/i);
    expect(String(replies[2])).toMatch(/unknown command/);
    // Clients that have not sent the (new) password: their GETs and SETs are still GETs and SETs.
    const password = 'metrics-test-password';
    expect(proxy.reload(configFrom({ ...config(), clients: { password } }))).toBeFalsy();
    try {
      const noauth = await RawClient.connect(proxy.port);
      const refused = await noauth.exchange(
        '*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n',
        2,
      );
      expect(refused.map(String)).toEqual([expect.stringMatching(/NOAUTH/), expect.stringMatching(/NOAUTH/)]);
      noauth.close();
    } finally {
      expect(proxy.reload(configFrom(config()))).toBeFalsy();
    }
    raw.close();
    const after = await scrape(admin);
    for (const [command, n] of [
      ['get', 2],
      ['object', 1],
      ['set', 1],
      ['unknown', 1],
    ] as const) {
      expect(delta(before, after, 'keymux_commands_total', { command }), command).toBe(n);
      expect(delta(before, after, 'keymux_command_errors_total', { command }), command).toBe(n);
    }
  });
});

describe('admin endpoints', () => {
  it('/shards lists each shard with address, role, slots and connection state', async () => {
    const r = await getJson(admin, '/shards', AUTH);
    expect(r.mode).toBe('slots');
    expect(
      r.shards.map((s: { name: string; address: string; role: string; state: string; weight: null }) => [
        s.name,
        s.address,
        s.role,
        s.state,
        s.weight,
      ]),
    ).toEqual(backends.map((b, i) => [SHARDS[i], b.address, 'master', 'ready', null]));
    expect(r.shards[0].slots).toEqual(['0-5460']);
    expect(r.shards[2].slots).toEqual(['10922-16383']);
    expect(r.shards[0].connections).toEqual([
      { state: 'ready', inflight: 0, reconnects: 0, timeouts: 0, last_error: null },
    ]);
    expect(r.shards[0].inflight).toBe(0);
  });

  it('/hotkeys and /metrics put the 30% key of a skewed workload over 10,000 keys first, with at most K keys', async () => {
    const hot = 'user:hot';
    const total = 20_000;
    let hotCount = 0;
    for (let start = 0; start < total; start += 5000) {
      const p = client.pipeline();
      for (let i = start; i < start + 5000; i++) {
        if (i % 10 < 3) {
          p.get(hot);
          hotCount++;
        } else p.get(`user:${(i * 7919) % 10_000}`);
      }
      await p.exec();
    }
    const r = await getJson(admin, '/hotkeys', AUTH);
    expect(r).toMatchObject({ enabled: true, k: K, sample_rate: 1, export: 'key' });
    expect(r.keys.length).toBeLessThanOrEqual(K);
    expect(r.keys[0]).toMatchObject({ rank: 1, key: hot, shard: shardOf(hot) });
    expect(r.keys[0].requests).toBeGreaterThanOrEqual(hotCount);
    expect(r.keys[0].requests).toBeLessThan(hotCount * 1.05);
    expect(r.keys[0].rate).toBeGreaterThan(0);

    const series = samplesOf(await scrape(admin), 'keymux_hot_key_requests_per_second');
    expect(series.length).toBeGreaterThan(0);
    expect(series.length).toBeLessThanOrEqual(K);
    const top = series.reduce((x, y) => (y.value > x.value ? y : x));
    expect(top.labels).toEqual({ key: hot, shard: shardOf(hot) });

    reload({ hot_keys: { k: K, sample_rate: 1, export: 'hash' } }); // same k, window, rate: the counts stay
    const hashed = await getJson(admin, '/hotkeys', AUTH);
    expect(hashed.export).toBe('hash');
    expect(hashed.keys[0].key).toBe(keyHash(Buffer.from(hot)));
    expect(JSON.stringify(hashed)).not.toContain('user:');
    const hashedSeries = samplesOf(await scrape(admin), 'keymux_hot_key_requests_per_second');
    expect(hashedSeries.map((s) => s.labels.key)).toContain(keyHash(Buffer.from(hot)));
    expect(hashedSeries.every((s) => /^[0-9a-f]{16}$/.test(s.labels.key))).toBe(true);
    reload({});
  });

  it('/slowlog records commands at or above the threshold, keys only when configured', async () => {
    reload({ slowlog: { threshold_ms: 0, max_entries: 5, log_keys: false } });
    const before = await scrape(admin);
    await client.get('slow:1');
    let r = await getJson(admin, '/slowlog', AUTH);
    expect(r).toMatchObject({ threshold_ms: 0, max_entries: 5, log_keys: false });
    expect(r.entries[0]).toMatchObject({ command: 'get', shards: [shardOf('slow:1')], args: 1 });
    expect(r.entries[0].keys).toBeUndefined();
    expect(r.entries[0].latency_ms).toBeGreaterThanOrEqual(0);
    expect(Number.isNaN(Date.parse(r.entries[0].time))).toBe(false);
    expect(delta(before, await scrape(admin), 'keymux_slow_commands_total', { command: 'get' })).toBe(1);

    reload({ slowlog: { threshold_ms: 0, max_entries: 5, log_keys: true } });
    const keys = [...keysOn('a', 'slow:', 1), ...keysOn('c', 'slow:', 1)];
    await client.mget(...keys);
    r = await getJson(admin, '/slowlog?limit=1', AUTH);
    expect(r.entries).toEqual([expect.objectContaining({ command: 'mget', shards: ['a', 'c'], keys, args: 2 })]);
    for (let i = 0; i < 8; i++) await client.get(`slow:more:${i}`);
    r = await getJson(admin, '/slowlog', AUTH);
    expect(r.entries.length).toBe(5);
    expect(r.entries[0].keys).toEqual(['slow:more:7']);
    expect(r.entries.map((e: { id: number }) => e.id)).toEqual(
      [...r.entries.map((e: { id: number }) => e.id)].sort((x, y) => y - x),
    );
    expect((await httpGet(admin, '/slowlog', 'DELETE', AUTH)).status).toBe(200);
    expect((await getJson(admin, '/slowlog', AUTH)).entries).toEqual([]);
    reload({});
  });

  it('metrics: enabled: false stops per-command, hit/miss and hot-key tracking; shard counters go on', async () => {
    reload({ enabled: false });
    const before = await scrape(admin);
    await client.get('off:1');
    const after = await scrape(admin);
    expect(delta(before, after, 'keymux_commands_total', { command: 'get' })).toBe(0);
    expect(
      Object.values(hitMissDelta(before, after))
        .flat()
        .every((n) => n === 0),
    ).toBe(true);
    expect(delta(before, after, 'keymux_shard_commands_total', { shard: shardOf('off:1') })).toBe(1);
    expect((await getJson(admin, '/hotkeys', AUTH)).enabled).toBe(false);
    expect(samplesOf(after, 'keymux_hot_key_requests_per_second')).toEqual([]);
    reload({});
    expect((await getJson(admin, '/hotkeys', AUTH)).enabled).toBe(true);
  });
});

describe('the Grafana dashboard', () => {
  const dash = JSON.parse(readFileSync('dashboards/keymux.json', 'utf8'));
  const panels: Array<{
    type: string;
    title: string;
    datasource?: { uid: string };
    targets?: Array<{ expr: string; datasource: { uid: string } }>;
  }> = dash.panels;

  it('takes its datasource from a variable', () => {
    const ds = dash.templating.list.find((v: { type: string }) => v.type === 'datasource');
    expect(ds).toMatchObject({ name: 'DS_PROMETHEUS', query: 'prometheus' });
    for (const p of panels.filter((x) => x.type !== 'row')) {
      expect(p.datasource?.uid, p.title).toBe('${DS_PROMETHEUS}');
      for (const t of p.targets ?? []) expect(t.datasource.uid, p.title).toBe('${DS_PROMETHEUS}');
    }
  });

  it('has the panels the issue asks for', () => {
    const titles = panels.map((p) => p.title.toLowerCase());
    for (const want of [
      'hit ratio per shard',
      'ops/s per command',
      'ops/s per shard',
      'p50 / p99 per command',
      'p50 / p99 per shard',
      'errors',
      'redirections',
      'hot keys',
      'connections',
    ]) {
      expect(
        titles.some((t) => t.includes(want)),
        want,
      ).toBe(true);
    }
    expect(panels.find((p) => p.type !== 'row' && p.title.toLowerCase().startsWith('hot keys'))?.type).toBe('table');
  });

  it('queries only metrics that exist in a live /metrics', async () => {
    // Traffic first, so that every labelled series (commands, histograms, hot keys) has been created.
    await client.mget('dash:1', 'dash:2', 'dash:3');
    await client.get('dash:1');
    // A subscription: per-node pub/sub series exist for nodes keymux subscribes on.
    const sub = client.duplicate();
    await sub.subscribe('dash:news');
    const live = new Set((await scrape(admin)).map((s) => s.name));
    const exprs = [
      ...panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
      ...dash.templating.list
        .filter((v: { type: string }) => v.type === 'query')
        .map((v: { query: { query: string } }) => v.query.query),
    ];
    expect(exprs.length).toBeGreaterThan(20);
    const names = new Set(exprs.flatMap(promqlMetricNames));
    expect(names.size).toBeGreaterThan(15);
    for (const name of names) {
      expect(name, name).toMatch(/^keymux_/);
      expect(live.has(name), `${name} is not in /metrics`).toBe(true);
    }
    sub.disconnect();
  });
});
