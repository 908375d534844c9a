/**
 * `sentinel.password_file`: the sentinels' own password (their `requirepass`) kept in a file, as a Kubernetes
 * Secret volume provides it, on real processes (3 redis-sentinel with requirepass monitoring master "mp": a
 * primary and a replica). keymux starts with the password from the file (its subscriber connections are up on
 * every sentinel); a missing file is a config error at start and a refused reload later (the running password
 * stays). The password is rotated the way the README says: the sentinels accept both, the file changes (a
 * symlink swap), the sentinels drop the old one and their subscriber connections are cut; keymux subscribes again
 * with the new password (keymux_sentinel_up back to 1 on each, seen from the sentinels' CLIENT LIST too) and
 * follows a failover (SENTINEL FAILOVER) afterwards, which it learns from the sentinels only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { startSentinels, type SentinelSetup } from '../support/sentinel.js';
import { redisCommand } from '../support/redis.js';
import '../support/keymux.js'; // silences the proxy's logger
import { secretVolume } from '../support/tls.js';
import { waitFor } from '../support/fake-backend.js';
import { scrape, valueOf } from '../support/metrics.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { ConfigError, loadConfigFile } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';

const OLD = 'sentinel-secret-1';
const NEW = 'sentinel-secret-2';

let ha: SentinelSetup;
let dir: string;
let secret: ReturnType<typeof secretVolume>;
let file: string;
let proxy: Proxy;
const clients: Redis[] = [];

function writeConfig(passwordFile: string): void {
  fs.writeFileSync(
    file,
    stringify({
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      mode: 'slots',
      sentinel: { sentinels: ha.addresses(), password_file: passwordFile, refresh_interval_ms: 200 },
      shards: [{ name: 's', sentinel_master: 'mp', slots: ['0-16383'] }],
      log: { level: 'silent' },
    }),
  );
}

beforeAll(async () => {
  ha = await startSentinels({ masters: [{ name: 'mp', replicas: 1 }], sentinels: 3, password: OLD });
  await ha.ready('mp', 1);
  dir = makeTempDir('keymux-sentinel-password-');
  secret = secretVolume(dir, { password: `${OLD}\n` });
  file = path.join(dir, 'keymux.yaml');
  writeConfig(secret.path('password'));
  proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false, watchSecrets: true });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  await ha?.stop();
  if (dir !== undefined) removeTempDir(dir);
});

/** keymux_sentinel_up of each sentinel, in the order of ha.sentinels. */
async function sentinelsUp(): Promise<number[]> {
  const samples = await scrape(proxy.adminPort!);
  return ha.sentinels.map((s) => valueOf(samples, 'keymux_sentinel_up', { sentinel: s.address }));
}

/** Ids of the subscriber (pub/sub) connections a sentinel has now: keymux's is the only one. */
async function subscriberIds(port: number): Promise<string[]> {
  const list = String(await ha.command(port, 'CLIENT', 'LIST', 'TYPE', 'pubsub'));
  return [...list.matchAll(/^id=(\d+) /gm)].map((m) => m[1]!);
}

describe('sentinel.password_file', () => {
  it('starts with the password from the file: subscribed to every sentinel, serving', async () => {
    await waitFor(async () => (await sentinelsUp()).every((v) => v === 1), 'keymux subscribed to 3 sentinels', 10_000);
    expect(proxy.topology.shards[0]!.address).toBe(await ha.primaryAddress('mp'));
    const c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
    clients.push(c);
    expect(await c.set('sp:k', '1')).toBe('OK');
  });

  it('refuses a missing password file: at start a config error, on reload a refusal that changes nothing', async () => {
    const missing = path.join(dir, 'no-such-secret');
    const other = path.join(dir, 'other.yaml');
    fs.copyFileSync(file, other);
    fs.writeFileSync(other, fs.readFileSync(other, 'utf8').replace(secret.path('password'), missing));
    const start = Proxy.start(loadConfigFile(other), { watchConfig: false });
    await expect(start).rejects.toBeInstanceOf(ConfigError);
    await expect(start).rejects.toThrow(`sentinel.password_file: cannot read ${missing}`);

    const version = proxy.topology.version;
    writeConfig(missing);
    const r = await proxy.reloadFromFile('test');
    expect(r.ok).toBe(false);
    expect(r.errors.join('\n')).toContain(`sentinel.password_file: cannot read ${missing}`);
    expect(proxy.topology.version).toBe(version);
    expect(proxy.topology.config.sentinel!.password).toBe(OLD);
    writeConfig(secret.path('password'));
  });

  it('rotates: the new password from the file is used for subscriptions and queries; a failover is followed', async () => {
    const ports = ha.sentinels.map((s) => s.port);
    // 1. Every sentinel accepts both passwords, and uses the new one with the other sentinels.
    for (const port of ports) {
      expect(await ha.command(port, 'ACL', 'SETUSER', 'default', `>${NEW}`)).toBe('OK');
      expect(await ha.command(port, 'SENTINEL', 'CONFIG', 'SET', 'sentinel-pass', NEW)).toBe('OK');
    }
    ha.password = NEW;
    // 2. The Secret changes (symlink swap): keymux re-reads it.
    secret.update({ password: `${NEW}\n` });
    await waitFor(() => proxy.topology.config.sentinel!.password === NEW, 'keymux to read the new password', 10_000);
    // 3. The old password goes; the sentinels cut every subscriber connection: keymux must AUTH again, with NEW.
    const before = new Map<number, string[]>();
    for (const port of ports) {
      expect(await ha.command(port, 'ACL', 'SETUSER', 'default', `<${OLD}`)).toBe('OK');
      before.set(port, await subscriberIds(port));
      await ha.command(port, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
    }
    await waitFor(
      async () => {
        for (const port of ports) {
          const now = await subscriberIds(port);
          if (!now.some((id) => !before.get(port)!.includes(id))) return false;
        }
        return (await sentinelsUp()).every((v) => v === 1);
      },
      'keymux subscribed again to every sentinel with the new password',
      15_000,
      50,
    );

    // 4. A failover: keymux hears it from the sentinels (events and queries, both with the new password).
    const old = await ha.primaryAddress('mp');
    expect(proxy.topology.shards[0]!.address).toBe(old);
    expect(await ha.command(ports[0]!, 'SENTINEL', 'FAILOVER', 'mp')).toBe('OK');
    const { address: next } = await ha.waitForPrimary('mp', old, 30_000);
    await waitFor(() => proxy.topology.shards[0]!.address === next, `keymux on the new primary ${next}`, 20_000, 20);
    const c = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
    clients.push(c);
    expect(await c.set('sp:after', 'rotated')).toBe('OK');
    expect(String(await redisCommand(Number(next.split(':')[1]), 'GET', 'sp:after'))).toBe('rotated');
  });

  it('asks the sentinels with the password from the file when a reload adds a sentinel_master', async () => {
    const primary = await ha.primaryAddress('mp');
    const added = path.join(dir, 'added.yaml');
    const write = (shard: Record<string, unknown>): void =>
      fs.writeFileSync(
        added,
        stringify({
          listen: '127.0.0.1:0',
          mode: 'slots',
          sentinel: { sentinels: ha.addresses(), password_file: secret.path('password') },
          shards: [{ name: 's', slots: ['0-16383'], ...shard }],
          log: { level: 'silent' },
        }),
      );
    write({ address: primary });
    const second = await Proxy.start(loadConfigFile(added), { configPath: added, watchConfig: false });
    try {
      write({ sentinel_master: 'mp' });
      expect(await second.reloadFromFile('test')).toMatchObject({ ok: true, errors: [] });
      expect(second.topology.shards[0]).toMatchObject({ sentinelMaster: 'mp', address: primary });
    } finally {
      await second.close();
    }
  });
});
