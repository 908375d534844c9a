// Live reloads: 20 clients pipelining continuously while the config file is reloaded 50 times (timeouts, pool
// sizes, deny lists, a shard added and removed) see zero errors and every reply matches its request; a bad config
// is rejected and the running one stays; a change to the file is picked up by the directory watch; a reload of an
// unchanged configuration (SIGHUP's path, POST /reload, the watch) is a no-op reported as unchanged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import { configFrom, ringConfig, startKeymux, type ConfigObject } from '../support/keymux.js'; // silences the logger
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import { keySlot } from '../../src/routing/crc16.js';
import { ketamaKey } from '../../src/routing/ketama.js';
import type { KeymuxConfig } from '../../src/config/schema.js';
import { rootLogger } from '../../src/log.js';
import { secretVolume } from '../support/tls.js';
import { scrape, valueOf } from '../support/metrics.js';

let backends: RedisProcess[];
let dir: string;
let file: string;

/** Hash tags whose slots are all below 8192: owned by shard a in every config below. */
const TAGS: string[] = [];
for (let i = 0; TAGS.length < 20; i++) if (keySlot(Buffer.from(`t${i}`)) < 8192) TAGS.push(`t${i}`);

// connect_timeout_ms bounds the TCP connect and the PING handshake of each pool's new connections (a reload changing
// backend settings makes new pools): kept well above what a loaded CI machine needs to run a shard and this
// process's loop (a 500 ms bound failed once there at load average 8.7: the timer ran late, before the poll that
// held the PONG, fixed in backend-connection.ts; see backend-connect-timer.test.ts), since this test is about
// reloads, not timeouts.
function configText(step: number): string {
  const [a, b, c] = backends;
  const withC = step % 4 === 1;
  const shards = withC
    ? [
        { name: 'a', address: a.address, slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-12287'] },
        { name: 'c', address: c.address, slots: ['12288-16383'] },
      ]
    : [
        { name: 'a', address: a.address, slots: ['0-8191'] },
        { name: 'b', address: b.address, slots: ['8192-16383'] },
      ];
  return stringify({
    listen: '127.0.0.1:0',
    mode: 'slots',
    shards,
    backend: { connections: 1 + (step % 3), timeout_ms: 1000 + 100 * (step % 5), connect_timeout_ms: 2000 + step },
    clients: { max_inflight: 256 + step },
    commands: { deny: step % 2 === 0 ? ['flushall'] : ['flushall', 'keys'] },
    log: { level: 'silent' },
  });
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  dir = makeTempDir('keymux-reload-');
  file = path.join(dir, 'keymux.yaml');
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
  removeTempDir(dir);
});

describe('reload under load', () => {
  it('50 reloads while 20 clients pipeline: zero errors, every reply matches its request', async () => {
    fs.writeFileSync(file, configText(0));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    let stop = false;
    let checked = 0;
    const problems: string[] = [];
    const worker = async (id: number) => {
      const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await c.connect();
      let round = 0;
      while (!stop) {
        const pipe = c.pipeline();
        const expected: unknown[] = [];
        for (let i = 0; i < 50; i++) {
          const key = `{${TAGS[id]}}:${i % 10}`;
          const value = `${id}:${round}:${i}`;
          pipe.set(key, value);
          expected.push('OK');
          pipe.get(key);
          expected.push(value);
          pipe.mget(key, `{${TAGS[id]}}:none`);
          expected.push([value, null]);
        }
        const res = await pipe.exec();
        res?.forEach(([err, v], i) => {
          checked++;
          if (err !== null) problems.push(`client ${id}: ${err.message}`);
          else if (JSON.stringify(v) !== JSON.stringify(expected[i]))
            problems.push(`client ${id}: ${JSON.stringify(v)} != ${JSON.stringify(expected[i])}`);
        });
        round++;
      }
      c.disconnect();
    };
    const workers = Array.from({ length: 20 }, (_, id) => worker(id));
    for (let step = 1; step <= 50; step++) {
      fs.writeFileSync(file, configText(step));
      const r = await proxy.reloadFromFile('test');
      expect(r.errors).toEqual([]);
      await new Promise((res) => setImmediate(res)); // let traffic run between reloads
    }
    stop = true;
    await Promise.all(workers);
    expect(proxy.topology.version).toBeGreaterThanOrEqual(51);
    expect(proxy.stats.reloadsOk).toBe(50);
    expect(problems.slice(0, 5)).toEqual([]);
    expect(checked).toBeGreaterThan(20 * 150);
    await proxy.close();
  });
});

describe('reload rules', () => {
  it('rejects a bad config with file:line errors and keeps serving with the old one', async () => {
    fs.writeFileSync(file, configText(0));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const c = new Redis({ port: proxy.port, lazyConnect: true });
    await c.connect();
    await c.set(`{${TAGS[0]}}:x`, '1');
    fs.writeFileSync(file, 'mode: slots\nshards:\n  - address: 127.0.0.1:1\n    slots: [0-10]\nbogus: 1\n');
    const r = await proxy.reloadFromFile('test');
    expect(r.ok).toBe(false);
    expect(r.errors.join('\n')).toMatch(new RegExp(`${file}:5: bogus: unknown key`));
    expect(proxy.stats.reloadsFailed).toBe(1);
    expect(proxy.topology.version).toBe(1);
    expect(await c.get(`{${TAGS[0]}}:x`)).toBe('1');
    c.disconnect();
    await proxy.close();
  });

  it('refuses a config its snapshot cannot be built from with nothing changed: token, log level, counters', async () => {
    // Two ring shards that hash as the same ketama key: validation refuses that, so the config is made by hand
    // (as a bug that let one through would hand it over); the ring cannot be built from it.
    const [a, b] = backends;
    const tokens = [0, 1].map((i) => {
      const f = path.join(dir, `token${i}`);
      fs.writeFileSync(f, `token-${i}-0123456789abcdef\n`);
      return f;
    });
    const ring = (token: string, level: string): ConfigObject =>
      ringConfig([a.port, b.port], {
        admin: { address: '127.0.0.1:0', token_file: token },
        log: { level },
        backend: { session_connections: { max: level === 'silent' ? 10 : 20 } },
      });
    const proxy = await startKeymux(ring(tokens[0], 'silent'));
    const valid = configFrom(ring(tokens[1], 'debug'));
    const clash = { ...valid.shards[1]!, name: ketamaKey(valid.shards[0]!), named: true };
    const dup: KeymuxConfig = { ...valid, shards: [valid.shards[0]!, clash] };
    const status = async (token: string): Promise<number> =>
      (await request(`http://127.0.0.1:${proxy.adminPort}/shards`, { headers: { authorization: `Bearer ${token}` } }))
        .statusCode;
    const { reloadsOk, reloadsFailed } = proxy.stats;
    let refusal: string | null;
    try {
      refusal = proxy.reload(dup);
    } catch (err) {
      refusal = `threw: ${(err as Error).message}`;
    }
    expect(await status('token-0-0123456789abcdef')).toBe(200);
    expect(await status('token-1-0123456789abcdef')).toBe(401);
    expect(rootLogger().level).toBe('silent');
    expect(proxy.sessions.settings.max).toBe(10);
    expect([proxy.stats.reloadsOk, proxy.stats.reloadsFailed]).toEqual([reloadsOk, reloadsFailed + 1]);
    expect(refusal).toBe(`<test>: ketama: two servers hash as the same name "127.0.0.1:${a.port}"`);
    expect(proxy.topology.version).toBe(1);
    expect(await redisCommand(proxy.port, 'SET', 'after-refusal', '1')).toBe('OK');
    await proxy.close();
  });

  it('picks up a changed file through the directory watch (rename into place, as editors and ConfigMaps do)', async () => {
    fs.writeFileSync(file, configText(0));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file });
    expect(proxy.topology.shards.length).toBe(2);
    const tmp = path.join(dir, '.keymux.yaml.tmp');
    fs.writeFileSync(tmp, configText(1));
    fs.renameSync(tmp, file);
    await waitFor(() => proxy.topology.shards.length === 3, 'the watched file to be reloaded', 10_000);
    expect(proxy.topology.shards.map((s) => s.name)).toEqual(['a', 'b', 'c']);
    // The added shard serves its slots.
    const c = new Redis({ port: proxy.port, lazyConnect: true });
    await c.connect();
    let key = '';
    for (let i = 0; ; i++)
      if (keySlot(Buffer.from(`w${i}`)) >= 12288) {
        key = `w${i}`;
        break;
      }
    await c.set(key, 'on-c');
    expect(await redisCommand(backends[2].port, 'GET', key)).toBe('on-c');
    c.disconnect();
    await proxy.close();
  });
});

describe('admin endpoints for configuration', () => {
  it('POST /reload applies the file or answers 400 with its errors; GET /config masks secrets', async () => {
    fs.writeFileSync(
      file,
      configText(0)
        .replace('log:', 'admin: 127.0.0.1:0\nclients: { password: topsecret }\nlog:')
        .replace(/clients:\n {2}max_inflight: \d+\n/, ''),
    );
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    const base = `http://127.0.0.1:${proxy.adminPort}`;
    const cfg = (await (await request(`${base}/config`)).body.json()) as {
      version: number;
      config: { clients: { password: string } };
    };
    expect(cfg.version).toBe(1);
    expect(cfg.config.clients.password).toBe('********');
    expect(JSON.stringify(cfg)).not.toContain('topsecret');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('timeout_ms: 1000', 'timeout_ms: 1234'));
    const ok = await request(`${base}/reload`, { method: 'POST' });
    expect(ok.statusCode).toBe(200);
    expect(await ok.body.json()).toEqual({ ok: true, unchanged: false, errors: [], version: 2 });
    expect(proxy.topology.config.backend.timeoutMs).toBe(1234);
    fs.writeFileSync(file, 'mode: slots\nshards: 5\n');
    const bad = await request(`${base}/reload`, { method: 'POST' });
    expect(bad.statusCode).toBe(400);
    const body = (await bad.body.json()) as { ok: boolean; errors: string[] };
    expect(body.ok).toBe(false);
    expect(body.errors[0]).toMatch(new RegExp(`^${file}:2: shards: expected a list`));
    expect(proxy.topology.version).toBe(2);
    await proxy.close();
  });
});

describe('a reload of an unchanged configuration', () => {
  /** configText(0) with a client password file and an admin port; `reformat` writes the same config differently. */
  function unchangedText(passwordFile: string, reformat = false): string {
    const text = configText(0).replace('log:', `admin: 127.0.0.1:0\nclients: { password_file: ${passwordFile} }\nlog:`);
    const doc = text.replace(/clients:\n {2}max_inflight: \d+\n/, '');
    // Same meaning, other text: a comment, the top-level keys in another order, another indentation (a ConfigMap
    // written by another tool).
    if (!reformat) return doc;
    const reordered = Object.fromEntries(Object.entries(parse(doc) as Record<string, unknown>).reverse());
    return `# synced by a cron\n${stringify(reordered, { indent: 4 })}`;
  }

  it('leaves the topology, its version and the pools as they are; POST /reload and the metric say unchanged', async () => {
    const secret = secretVolume(dir, { password: 'client-secret-1\n' });
    fs.writeFileSync(file, unchangedText(secret.path('password')));
    const proxy = await Proxy.start(loadConfigFile(file), {
      configPath: file,
      watchConfig: false,
      watchSecrets: false,
    });
    const c = new Redis({
      port: proxy.port,
      password: 'client-secret-1',
      lazyConnect: true,
      retryStrategy: () => null,
    });
    try {
      await c.connect();
      await c.set(`{${TAGS[0]}}:u`, '1');
      const topology = proxy.topology;
      const pools = topology.allPools();
      const base = `http://127.0.0.1:${proxy.adminPort}`;

      const answer = await request(`${base}/reload`, { method: 'POST' });
      expect(answer.statusCode).toBe(200);
      expect(await answer.body.json()).toEqual({ ok: true, unchanged: true, errors: [], version: 1 });
      // SIGHUP's path, on the same config written differently (its parsed form is what counts).
      fs.writeFileSync(file, unchangedText(secret.path('password'), true));
      expect(await proxy.reloadFromFile('SIGHUP')).toEqual({ ok: true, unchanged: true, errors: [], version: 1 });
      expect(proxy.topology).toBe(topology);
      expect(proxy.topology.allPools()).toEqual(pools);
      expect(proxy.topology.allPools().every((p, i) => p === pools[i])).toBe(true);
      const samples = await scrape(proxy.adminPort!);
      expect(valueOf(samples, 'keymux_config_version')).toBe(1);
      expect(valueOf(samples, 'keymux_config_reloads_total', { result: 'unchanged' })).toBe(2);
      expect(valueOf(samples, 'keymux_config_reloads_total', { result: 'ok' })).toBe(0);
      expect(valueOf(samples, 'keymux_config_reloads_total', { result: 'failed' })).toBe(0);
      expect(await c.get(`{${TAGS[0]}}:u`)).toBe('1');

      // A password file with new contents is a change: applied (the watch is off here: only the reload reads it).
      secret.update({ password: 'client-secret-2\n' });
      expect(await proxy.reloadFromFile('SIGHUP')).toEqual({ ok: true, unchanged: false, errors: [], version: 2 });
      expect(proxy.topology).not.toBe(topology);
      expect(await redisCommand(proxy.port, 'AUTH', 'client-secret-2')).toBe('OK');
      // And a changed config is applied exactly as before.
      fs.writeFileSync(file, unchangedText(secret.path('password')).replace('timeout_ms: 1000', 'timeout_ms: 1234'));
      expect(await proxy.reloadFromFile('SIGHUP')).toEqual({ ok: true, unchanged: false, errors: [], version: 3 });
      expect(proxy.topology.config.backend.timeoutMs).toBe(1234);
      expect([proxy.stats.reloadsOk, proxy.stats.reloadsUnchanged, proxy.stats.reloadsFailed]).toEqual([2, 2, 0]);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it('the directory watch: the same config written again (renamed into place, reformatted) is not applied', async () => {
    const secret = secretVolume(dir, { password: 'client-secret-1\n' });
    fs.writeFileSync(file, unchangedText(secret.path('password')));
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file });
    try {
      const topology = proxy.topology;
      const tmp = path.join(dir, '.keymux.yaml.tmp');
      fs.writeFileSync(tmp, unchangedText(secret.path('password'), true));
      fs.renameSync(tmp, file);
      await waitFor(() => proxy.stats.reloadsUnchanged === 1, 'the watched file to be reloaded', 10_000);
      expect(proxy.topology).toBe(topology);
      expect(proxy.topology.version).toBe(1);
      expect(proxy.stats.reloadsOk).toBe(0);
    } finally {
      await proxy.close();
    }
  });
});
