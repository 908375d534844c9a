/**
 * The admin port's protections (src/metrics/admin-server.ts), each endpoint with and without the token:
 * - with `admin.token_file`: /healthz, /readyz and (public_metrics) /metrics answer anyone; every other endpoint,
 *   POST /reload and DELETE /slowlog included, answers 401 without the token or with a wrong one, and works with
 *   it; a rotated token file takes effect without a restart; `public_metrics: false` puts /metrics behind it too;
 * - with or without a token, a state-changing request that a web page could send (an Origin header, a text/plain
 *   or form body) is refused and changes nothing;
 * - without a token: /config hides file paths and shard addresses, /hotkeys shows hashed keys, /slowlog no keys,
 *   and a request addressed to a DNS name (DNS rebinding) is refused;
 * - HTTPS on the admin port (admin.tls), and the CLI tools passing the token: `keymux top --token-file` and
 *   `keymux plan --against` with KEYMUX_ADMIN_TOKEN, both over HTTPS with a private CA (NODE_EXTRA_CA_CERTS).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { Agent, request } from 'undici';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { makePki, secretVolume, type TestPki } from '../support/tls.js';
import { waitFor } from '../support/fake-backend.js';
import { loadConfigFile } from '../../src/config/load.js';
import { keyHash } from '../../src/metrics/hotkeys.js';
import { HIDDEN } from '../../src/config/endpoints.js';
import { Proxy } from '../../src/proxy.js';
import '../support/keymux.js'; // silences keymux's logs in this process

const exec = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
const TOKEN = 'a'.repeat(8) + '-test-token-' + 'b'.repeat(8);

let pki: TestPki;
let shard: RedisProcess;

beforeAll(async () => {
  pki = makePki();
  shard = await startRedis();
});

afterAll(async () => {
  await shard.stop();
  pki.cleanup();
});

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

async function call(
  base: string,
  method: string,
  p: string,
  headers: Record<string, string> = {},
  body?: string,
  dispatcher?: Agent,
): Promise<Reply> {
  const res = await request(`${base}${p}`, {
    method: method as 'GET',
    headers,
    ...(body !== undefined ? { body } : {}),
    ...(dispatcher !== undefined ? { dispatcher } : {}),
  });
  return { status: res.statusCode, body: await res.body.text(), headers: res.headers };
}

const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

/** Writes a config file for the shard and starts keymux from it (reloads re-read it). */
async function startFrom(file: string, extra: Record<string, unknown>): Promise<Proxy> {
  fs.writeFileSync(
    file,
    stringify({
      listen: '127.0.0.1:0',
      mode: 'slots',
      shards: [{ name: 'only', address: shard.address, slots: ['0-16383'] }],
      metrics: { hot_keys: { sample_rate: 1 }, slowlog: { threshold_ms: 0, log_keys: true } },
      ...extra,
    }),
  );
  return Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false, watchSecrets: true });
}

/** Traffic that leaves a hot key and slow-log entries with keys. */
async function traffic(proxy: Proxy, key: string): Promise<void> {
  const c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
  for (let i = 0; i < 20; i++) await c.get(key);
  c.disconnect();
}

describe('with admin.token_file', () => {
  let proxy: Proxy;
  let base: string;
  let volume: ReturnType<typeof secretVolume>;
  let file: string;

  beforeAll(async () => {
    volume = secretVolume(pki.dir, { token: `${TOKEN}\n` });
    file = path.join(pki.dir, 'token.yaml');
    proxy = await startFrom(file, { admin: { address: '127.0.0.1:0', token_file: volume.path('token') } });
    base = `http://127.0.0.1:${proxy.adminPort}`;
    await traffic(proxy, 'user:alice@example.com');
  });
  afterAll(async () => {
    await proxy.close();
  });

  const ENDPOINTS: Array<[method: string, path: string, open: boolean]> = [
    ['GET', '/healthz', true],
    ['GET', '/readyz', true],
    ['GET', '/metrics', true],
    ['GET', '/shards', false],
    ['GET', '/hotkeys', false],
    ['GET', '/slowlog', false],
    ['GET', '/config', false],
    ['DELETE', '/slowlog', false],
    ['POST', '/reload', false],
    ['POST', '/reload?dry_run=1&sample=0', false],
  ];

  it('answers the probes and /metrics to anyone, and everything else only with the token', async () => {
    const refusedBefore = proxy.stats.adminRefused;
    let refusals = 0;
    for (const [method, p, open] of ENDPOINTS) {
      const without = await call(base, method, p);
      const wrong = await call(base, method, p, bearer(`${TOKEN}x`));
      const withToken = await call(base, method, p, bearer(TOKEN));
      expect(withToken.status, `${method} ${p} with the token: ${withToken.body}`).toBe(200);
      if (open) {
        expect(without.status, `${method} ${p} without a token`).toBe(200);
        continue;
      }
      refusals += 2;
      expect(without.status, `${method} ${p} without a token`).toBe(401);
      expect(without.headers['www-authenticate']).toBe('Bearer realm="keymux admin"');
      expect(without.body).toContain('needs the admin token');
      expect(wrong.status, `${method} ${p} with a wrong token`).toBe(401);
      expect(wrong.body).toContain('the admin token is wrong');
    }
    expect(proxy.stats.adminRefused - refusedBefore).toBe(refusals);
    const metrics = (await call(base, 'GET', '/metrics')).body;
    expect(metrics).toMatch(new RegExp(`^keymux_admin_refused_total ${proxy.stats.adminRefused}$`, 'm'));
  });

  it('shows key names, paths and addresses to the token holder', async () => {
    await traffic(proxy, 'user:bob@example.com');
    const hot = JSON.parse((await call(base, 'GET', '/hotkeys', bearer(TOKEN))).body) as {
      keys: Array<{ key: string }>;
    };
    expect(hot.keys.map((k) => k.key)).toContain('user:bob@example.com');
    const slow = JSON.parse((await call(base, 'GET', '/slowlog', bearer(TOKEN))).body) as {
      entries: Array<{ keys?: string[] }>;
    };
    expect(slow.entries.some((e) => e.keys?.includes('user:bob@example.com'))).toBe(true);
    const cfg = JSON.parse((await call(base, 'GET', '/config', bearer(TOKEN))).body) as {
      source: string;
      config: { shards: Array<{ address: string }>; admin: { tokenFile: string } };
    };
    expect(cfg.source).toBe(file);
    expect(cfg.config.shards[0]!.address).toBe(shard.address);
    expect(cfg.config.admin.tokenFile).toBe(volume.path('token'));
  });

  it('refuses what a web page could send, even with the token, and changes nothing', async () => {
    const version = proxy.topology.version;
    const before = JSON.parse((await call(base, 'GET', '/slowlog', bearer(TOKEN))).body) as { entries: unknown[] };
    expect(before.entries.length).toBeGreaterThan(0);
    const fromPage = await call(base, 'POST', '/reload', { ...bearer(TOKEN), origin: 'https://evil.example' });
    expect(fromPage.status).toBe(403);
    const form = await call(base, 'DELETE', '/slowlog', { ...bearer(TOKEN), 'content-type': 'text/plain' }, 'x');
    expect(form.status).toBe(415);
    expect(proxy.topology.version).toBe(version);
    const after = JSON.parse((await call(base, 'GET', '/slowlog', bearer(TOKEN))).body) as { entries: unknown[] };
    expect(after.entries.length).toBeGreaterThanOrEqual(before.entries.length);
  });

  it('takes a rotated token file at once, and public_metrics: false puts /metrics behind it', async () => {
    const next = 'rotated-token-0123456789abcdef';
    volume.update({ token: next });
    await waitFor(async () => (await call(base, 'GET', '/shards', bearer(next))).status === 200, 'the new token');
    expect((await call(base, 'GET', '/shards', bearer(TOKEN))).status).toBe(401);

    const text = fs.readFileSync(file, 'utf8').replace('token_file:', 'public_metrics: false\n  token_file:');
    fs.writeFileSync(file, text);
    const reload = await call(base, 'POST', '/reload', bearer(next));
    expect(reload.status, reload.body).toBe(200);
    expect((await call(base, 'GET', '/metrics')).status).toBe(401);
    expect((await call(base, 'GET', '/metrics', bearer(next))).status).toBe(200);
    expect((await call(base, 'GET', '/healthz')).status).toBe(200);
  });

  it('refuses to start with a token file that is missing or too short, saying which', async () => {
    const short = path.join(pki.dir, 'short-token');
    fs.writeFileSync(short, 'tooshort\n');
    const f = path.join(pki.dir, 'short.yaml');
    await expect(startFrom(f, { admin: { address: '127.0.0.1:0', token_file: short } })).rejects.toThrow(
      `${f}: admin.token_file: the token in ${short} has 8 characters; use at least 16`,
    );
  });
});

describe('without a token', () => {
  let proxy: Proxy;
  let base: string;
  let file: string;
  beforeAll(async () => {
    file = path.join(pki.dir, 'open.yaml');
    proxy = await startFrom(file, {
      admin: '127.0.0.1:0',
      migration: { state_file: path.join(pki.dir, 'migration-state.json') },
    });
    base = `http://127.0.0.1:${proxy.adminPort}`;
    await traffic(proxy, 'session:3f9a');
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('hides file paths and shard addresses in /config', async () => {
    const cfg = JSON.parse((await call(base, 'GET', '/config')).body) as {
      source: string;
      config: Record<string, unknown> & { shards: Array<Record<string, unknown>>; migration: { stateFile: string } };
    };
    expect(cfg.source).toBe(HIDDEN);
    expect(cfg.config.source).toBe(HIDDEN);
    expect(cfg.config.shards[0]).toMatchObject({ name: 'only', address: HIDDEN, host: HIDDEN, port: HIDDEN });
    expect(cfg.config.migration.stateFile).toBe(HIDDEN);
    const text = JSON.stringify(cfg);
    expect(text).not.toContain(pki.dir);
    expect(text).not.toContain(String(shard.port));
  });

  it('shows hot keys hashed and the slow log without keys', async () => {
    const hot = JSON.parse((await call(base, 'GET', '/hotkeys')).body) as {
      export: string;
      keys: Array<{ key: string }>;
    };
    expect(hot.export).toBe('hash');
    expect(hot.keys.map((k) => k.key)).toContain(keyHash(Buffer.from('session:3f9a')));
    const body = (await call(base, 'GET', '/slowlog')).body;
    expect(body).not.toContain('session:3f9a');
    expect(JSON.parse(body)).toMatchObject({ log_keys: true, keys_hidden: expect.any(String) });
  });

  it('refuses a cross-origin POST /reload with text/plain and a DELETE /slowlog from a page; accepts curl', async () => {
    const version = proxy.topology.version;
    const ok = proxy.stats.reloadsOk;
    const unchanged = proxy.stats.reloadsUnchanged;
    const entries = (JSON.parse((await call(base, 'GET', '/slowlog')).body) as { entries: unknown[] }).entries.length;
    expect(entries).toBeGreaterThan(0);
    // What <form method=post> or fetch(..., { mode: 'no-cors', body: '...' }) on any web page sends.
    const page = { origin: 'https://evil.example', 'content-type': 'text/plain;charset=UTF-8' };
    expect((await call(base, 'POST', '/reload', page, 'x')).status).toBe(403);
    expect((await call(base, 'POST', '/reload', { 'content-type': 'text/plain' }, 'x')).status).toBe(415);
    expect(
      (await call(base, 'POST', '/reload', { 'content-type': 'application/x-www-form-urlencoded' }, 'a=b')).status,
    ).toBe(415);
    expect((await call(base, 'DELETE', '/slowlog', { origin: 'null' })).status).toBe(403);
    expect(proxy.topology.version).toBe(version);
    expect(proxy.stats.reloadsOk).toBe(ok);
    expect(proxy.stats.reloadsUnchanged).toBe(unchanged);
    const still = (JSON.parse((await call(base, 'GET', '/slowlog')).body) as { entries: unknown[] }).entries.length;
    expect(still).toBeGreaterThanOrEqual(entries);
    // A tool on the machine (curl -X POST, keymux plan) is not a web page.
    // The file is the running config: the reload is answered, and counted as unchanged (nothing to apply).
    expect((await call(base, 'POST', '/reload')).status).toBe(200);
    expect(proxy.stats.reloadsUnchanged).toBe(unchanged + 1);
    expect((await call(base, 'DELETE', '/slowlog')).status).toBe(200);
  });

  it('refuses requests addressed to a DNS name (DNS rebinding), except the probes', async () => {
    const port = proxy.adminPort!;
    const rebound = await call(base, 'GET', '/config', { host: `evil.example:${port}` });
    expect(rebound.status).toBe(403);
    expect(rebound.body).toContain('DNS rebinding');
    expect((await call(base, 'GET', '/hotkeys', { host: `localhost:${port}` })).status).toBe(200);
    expect((await call(base, 'GET', '/healthz', { host: `evil.example:${port}` })).status).toBe(200);
  });
});

describe('HTTPS on the admin port, and the CLI tools with the token', () => {
  let proxy: Proxy;
  let base: string;
  let tokenFile: string;
  let agent: Agent;
  beforeAll(async () => {
    tokenFile = path.join(pki.dir, 'cli-token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`);
    proxy = await startFrom(path.join(pki.dir, 'https.yaml'), {
      admin: {
        address: '127.0.0.1:0',
        token_file: tokenFile,
        tls: { enabled: true, cert_file: pki.server.cert, key_file: pki.server.key },
      },
    });
    base = `https://127.0.0.1:${proxy.adminPort}`;
    agent = new Agent({ connect: { ca: fs.readFileSync(pki.ca.cert) } });
    await traffic(proxy, 'cli:hot-key');
  });
  afterAll(async () => {
    await agent.close();
    await proxy.close();
  });

  it('serves HTTPS only, with the token rules', async () => {
    expect((await call(base, 'GET', '/healthz', {}, undefined, agent)).status).toBe(200);
    expect((await call(base, 'GET', '/shards', {}, undefined, agent)).status).toBe(401);
    expect((await call(base, 'GET', '/shards', bearer(TOKEN), undefined, agent)).status).toBe(200);
    await expect(call(`http://127.0.0.1:${proxy.adminPort}`, 'GET', '/healthz')).rejects.toThrow();
  });

  it('keymux top --token-file and keymux plan with KEYMUX_ADMIN_TOKEN; without it, both say what is missing', async () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: pki.ca.cert, KEYMUX_ADMIN_TOKEN: '' };
    const top = await exec(
      process.execPath,
      [BIN, 'top', '--once', '--interval', '100', '--admin', base, '--token-file', tokenFile],
      { env },
    );
    expect(top.stdout).toContain('cli:hot-key');

    const topWithout = await exec(process.execPath, [BIN, 'top', '--once', '--interval', '100', '--admin', base], {
      env,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((topWithout as { code: number }).code).toBe(2);
    expect((topWithout as { stderr: string }).stderr).toContain('answered 401: the admin server needs its token');

    const next = path.join(pki.dir, 'plan-next.yaml');
    fs.writeFileSync(next, fs.readFileSync(path.join(pki.dir, 'https.yaml'), 'utf8'));
    const plan = await exec(process.execPath, [BIN, 'plan', '--config', next, '--against', base, '--no-sample'], {
      env: { ...env, KEYMUX_ADMIN_TOKEN: TOKEN },
    });
    expect(plan.stdout).toMatch(/no key changes owner|unchanged|nothing/i);
    const planWithout = await exec(process.execPath, [BIN, 'plan', '--config', next, '--against', base], {
      env,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((planWithout as { code: number }).code).toBe(2);
    expect((planWithout as { stderr: string }).stderr).toContain('--token-file');
  });
});
