/**
 * Passwords kept in files (`clients.password_file`, `backend.password_file`), as a Kubernetes Secret volume
 * provides them: read at start, and re-read when the file changes. A rotated client password is required from
 * the next AUTH on (a connection that authenticated before keeps going, as with Redis's requirepass); a rotated
 * shard password is used by every connection keymux opens from then on; an empty file is refused like a bad
 * config and the running passwords stay. The real binary, with `workers: 1` and `workers: 2`, counts a rotation
 * the same way: once in keymux_config_reloads_total (ok, and the config version +1; failed for an empty file),
 * and with workers only once every worker takes the new password.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { runBinary, slotsConfig, startKeymux, type RunningBinary } from '../support/keymux.js';
import { scrape, valueOf } from '../support/metrics.js';
import { freePort } from '../support/ports.js';
import { secretVolume } from '../support/tls.js';
import { waitFor } from '../support/fake-backend.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import type { Proxy } from '../../src/proxy.js';

let dir: string;
let shard: RedisProcess;
let proxy: Proxy;
let clientSecret: ReturnType<typeof secretVolume>;
let shardSecret: ReturnType<typeof secretVolume>;

beforeAll(async () => {
  dir = makeTempDir('keymux-secrets-');
  shard = await startRedis({ password: 'shard-secret-1' });
  clientSecret = secretVolume(dir, { password: 'client-secret-1\n' });
  shardSecret = secretVolume(dir, { password: 'shard-secret-1\n' });
  proxy = await startKeymux(
    slotsConfig([shard.port], {
      clients: { password_file: clientSecret.path('password') },
      backend: { password_file: shardSecret.path('password') },
    }),
  );
});

afterAll(async () => {
  await proxy?.close();
  await shard.stop();
  removeTempDir(dir);
});

const connect = (password?: string): Redis =>
  new Redis({ port: proxy.port, maxRetriesPerRequest: 0, retryStrategy: () => null, password });

describe('password files', () => {
  it('takes the client and shard passwords from their files (without the line break)', async () => {
    const c = connect('client-secret-1');
    expect(await c.set('pf:k', '1')).toBe('OK');
    c.disconnect();
    const anonymous = connect();
    anonymous.on('error', () => undefined); // its ready check is refused too
    await expect(anonymous.get('pf:k')).rejects.toThrow(/NOAUTH/);
    anonymous.disconnect();
  });

  it('requires the rotated client password from the next AUTH on; a connected client keeps going', async () => {
    const before = connect('client-secret-1');
    const id = await before.client('ID');
    clientSecret.update({ password: 'client-secret-2\n' });
    await waitFor(
      async () => {
        const c = connect('client-secret-2');
        c.on('error', () => undefined);
        const ok = await c.ping().then(
          () => true,
          () => false,
        );
        c.disconnect();
        return ok;
      },
      'the new client password to be accepted',
      10_000,
      50,
    );
    const old = connect('client-secret-1');
    old.on('error', () => undefined);
    await expect(old.ping()).rejects.toThrow(/WRONGPASS|invalid/);
    old.disconnect();
    expect(await before.client('ID')).toBe(id);
    expect(await before.get('pf:k')).toBe('1');
    before.disconnect();
  });

  it('uses the rotated shard password for every connection it opens from then on', async () => {
    const okBefore = proxy.stats.reloadsOk;
    await redisCommands(shard.port, [
      ['AUTH', 'shard-secret-1'],
      ['CONFIG', 'SET', 'requirepass', 'shard-secret-2'],
    ]);
    shardSecret.update({ password: 'shard-secret-2' });
    await waitFor(() => proxy.stats.reloadsOk > okBefore, 'the new shard password to be read', 10_000, 20);
    // Drop every connection the shard has: keymux must come back with the new password.
    await redisCommands(shard.port, [
      ['AUTH', 'shard-secret-2'],
      ['CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes'],
    ]);
    const c = connect('client-secret-2');
    await waitFor(async () => (await c.get('pf:k').catch(() => null)) === '1', 'a command to succeed', 10_000, 50);
    c.disconnect();
  });

  it('refuses an empty password file and keeps the running passwords', async () => {
    const failedBefore = proxy.stats.reloadsFailed;
    clientSecret.update({ password: '' });
    await waitFor(() => proxy.stats.reloadsFailed > failedBefore, 'the empty file to be refused', 10_000, 20);
    const c = connect('client-secret-2');
    expect(await c.get('pf:k')).toBe('1');
    c.disconnect();
  });
});

describe.each([1, 2])('the binary with workers: %i, watching its password file', (workers) => {
  let binDir: string;
  let binShard: RedisProcess;
  let secret: ReturnType<typeof secretVolume>;
  let binary: RunningBinary;
  let port: number;
  let adminPort: number;

  beforeAll(async () => {
    binDir = makeTempDir('keymux-secrets-bin-');
    binShard = await startRedis();
    secret = secretVolume(binDir, { password: 'bin-secret-1\n' });
    [port, adminPort] = [await freePort(), await freePort()];
    const file = path.join(binDir, 'keymux.yaml');
    fs.writeFileSync(
      file,
      stringify({
        listen: `127.0.0.1:${port}`,
        admin: `127.0.0.1:${adminPort}`,
        mode: 'ring',
        workers,
        log: { level: 'info' },
        drain: { grace_s: 1 },
        clients: { password_file: secret.path('password') },
        shards: [{ address: binShard.address }],
      }),
    );
    binary = await runBinary(file, workers > 1 ? 'keymux workers serving' : 'keymux listening', { watch: true });
  });

  afterAll(async () => {
    await binary?.kill();
    await binShard?.stop();
    if (binDir !== undefined) removeTempDir(binDir);
  });

  const counts = async (): Promise<{ ok: number; failed: number; version: number }> => {
    const samples = await scrape(adminPort);
    return {
      ok: valueOf(samples, 'keymux_config_reloads_total', { result: 'ok' }),
      failed: valueOf(samples, 'keymux_config_reloads_total', { result: 'failed' }),
      version: valueOf(samples, 'keymux_config_version'),
    };
  };
  /** PING on a new connection with `password` (with workers, connections land on every worker in turn). */
  const pingWith = async (password: string): Promise<boolean> => {
    const c = new Redis({ port, maxRetriesPerRequest: 0, retryStrategy: () => null, password, lazyConnect: true });
    c.on('error', () => undefined);
    const ok = await c.connect().then(
      async () => (await c.ping()) === 'PONG',
      () => false,
    );
    c.disconnect();
    return ok;
  };

  it('counts a rotation once (ok, version +1) after every process took it, and an empty file once as failed', async () => {
    const before = await counts();
    expect(await pingWith('bin-secret-1')).toBe(true);
    secret.update({ password: 'bin-secret-2\n' });
    await waitFor(async () => (await counts()).ok > before.ok, 'the rotation counted', 10_000, 20).catch((err) => {
      throw new Error(`${(err as Error).message}\n${binary.output().slice(-3000)}`);
    });
    expect(await counts()).toEqual({ ok: before.ok + 1, failed: before.failed, version: before.version + 1 });
    // Counted only once every worker has it: each new connection, whichever worker serves it, takes the new one.
    for (let i = 0; i < 2 * workers; i++) {
      expect(await pingWith('bin-secret-2')).toBe(true);
      expect(await pingWith('bin-secret-1')).toBe(false);
    }

    secret.update({ password: '' });
    await waitFor(async () => (await counts()).failed > before.failed, 'the empty file counted', 10_000, 20);
    expect(await counts()).toEqual({ ok: before.ok + 1, failed: before.failed + 1, version: before.version + 1 });
    expect(await pingWith('bin-secret-2')).toBe(true);
  });
});
