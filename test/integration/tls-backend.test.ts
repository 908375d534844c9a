/**
 * TLS to the shards (`backend.tls`), against redis-server's own TLS: shards listening for TLS only (`--port 0
 * --tls-port`), asking for client certificates (`tls-auth-clients yes`), with certificates made by the test.
 * Shown: slots and ring mode serve every kind of command through them, and keymux reads its command table from
 * them (control connections use TLS too); a wrong CA, a missing client certificate, a certificate for another
 * name, or a shard that does not speak TLS each give the client a clear error naming the shard, and nothing goes
 * out in plain text; `servername` and `verify: false` do what they say; a CA file rotated in place is used by
 * the next connection without a restart; a reload that moves slots migrates the keys between TLS shards (which
 * MIGRATE over TLS with `tls-cluster yes`); and `keymux plan` samples TLS shards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { Redis } from 'ioredis';
import { makePki, secretVolume, type CertFiles, type TestPki } from '../support/tls.js';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, ringConfig, slotsConfig, startKeymux, type ConfigObject } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';
import { planReport } from '../../src/migration/estimate.js';

let pki: TestPki;
/** Three TLS-only shards that require a client certificate and MIGRATE over TLS. */
let shards: RedisProcess[];

function tlsShard(server: CertFiles = pki.server): Promise<RedisProcess> {
  return startRedis({
    tls: { cert: server.cert, key: server.key, ca: pki.ca.cert, client: pki.client },
    args: ['--tls-cluster', 'yes'],
  });
}

beforeAll(async () => {
  pki = makePki();
  shards = await Promise.all([tlsShard(), tlsShard(), tlsShard()]);
});

afterAll(async () => {
  await Promise.all(shards.map((s) => s.stop()));
  pki.cleanup();
});

/** backend.tls with the test's CA and client certificate (mutual TLS), plus `extra`. */
function backendTls(extra: ConfigObject = {}): ConfigObject {
  return {
    tls: {
      enabled: true,
      ca_file: pki.ca.cert,
      cert_file: pki.client.cert,
      key_file: pki.client.key,
      ...extra,
    },
  };
}

function client(proxy: Proxy): Redis {
  return new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: 0 });
}

async function dbsizes(ports: number[]): Promise<number[]> {
  return Promise.all(ports.map(async (p) => Number(await redisCommand(p, 'DBSIZE'))));
}

describe('keymux to TLS-only shards', () => {
  it('slots mode: single-key, split and broadcast commands all reach the shards; COMMAND is read over TLS', async () => {
    await Promise.all(shards.map((s) => redisCommands(s.port, [['FLUSHALL']])));
    const proxy = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        { backend: backendTls() },
      ),
    );
    try {
      expect(proxy.commandTableSource).toBe('live');
      const c = client(proxy);
      const keys = Array.from({ length: 60 }, (_, i) => `bt:slots:${i}`);
      await c.mset(Object.fromEntries(keys.map((k) => [k, k.toUpperCase()])));
      expect(await c.mget(...keys)).toEqual(keys.map((k) => k.toUpperCase()));
      expect(await c.incr('bt:slots:counter')).toBe(1);
      expect(await c.dbsize()).toBe(61);
      expect((await dbsizes(shards.map((s) => s.port))).every((n) => n > 0)).toBe(true);
      expect(await c.del(...keys)).toBe(60);
      c.disconnect();
    } finally {
      await proxy.close();
    }
  });

  it('ring mode: keys spread over the TLS shards and read back', async () => {
    await Promise.all(shards.map((s) => redisCommands(s.port, [['FLUSHALL']])));
    const proxy = await startKeymux(
      ringConfig(
        shards.map((s) => s.port),
        { backend: backendTls() },
      ),
    );
    try {
      const c = client(proxy);
      // Keys that differ in their first bytes: twemproxy's fnv1a_64 puts bt:ring:0..59 on one shard in ~30% of
      // port sets, which would leave "spread over the TLS shards" untested.
      const key = (i: number): string => `${i}:bt:ring`;
      for (let i = 0; i < 60; i++) await c.set(key(i), String(i));
      for (let i = 0; i < 60; i += 7) expect(await c.get(key(i))).toBe(String(i));
      // Each key is on the shard the ring puts it on, read there directly (over TLS).
      for (let i = 0; i < 60; i++) {
        const owner = shards[proxy.topology.router.shardFor(Buffer.from(key(i)))]!;
        expect(await redisCommand(owner.port, 'GET', key(i))).toBe(String(i));
      }
      expect((await dbsizes(shards.map((s) => s.port))).every((n) => n > 0)).toBe(true);
      expect((await dbsizes(shards.map((s) => s.port))).reduce((a, b) => a + b, 0)).toBe(60);
      c.disconnect();
    } finally {
      await proxy.close();
    }
  });

  it('pub/sub: the shared subscriber connections reach TLS shards too (messages on every shard)', async () => {
    const proxy = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        { backend: backendTls() },
      ),
    );
    const sub = client(proxy);
    const pub = client(proxy);
    try {
      const channels = Array.from({ length: 12 }, (_, i) => `bt:chan:${i}`);
      const got: string[] = [];
      sub.on('message', (channel: string, message: string) => got.push(`${channel}=${message}`));
      expect(await sub.subscribe(...channels)).toBe(channels.length);
      // Every shard holds some of the channels' subscriptions, each over a TLS subscriber connection.
      const counts = await Promise.all(shards.map((s) => redisCommand(s.port, 'PUBSUB', 'NUMSUB', ...channels)));
      expect(counts.every((c) => Array.isArray(c) && c.some((v, i) => i % 2 === 1 && Number(v) > 0))).toBe(true);
      for (const ch of channels) expect(await pub.publish(ch, `m-${ch}`)).toBe(1);
      await waitFor(() => got.length === channels.length, 'every message delivered');
      expect(got.sort()).toEqual(channels.map((ch) => `${ch}=m-${ch}`).sort());
    } finally {
      sub.disconnect();
      pub.disconnect();
      await proxy.close();
    }
  });
});

describe('refusals: a clear error naming the shard, never plain text', () => {
  /** The error keymux answers GET with, for a one-shard slots config with `backend` settings. */
  async function errorFor(port: number, backend: ConfigObject): Promise<string> {
    const proxy = await startKeymux(slotsConfig([port], { backend: { connect_timeout_ms: 500, ...backend } }), {
      builtinCommandTable: true,
    });
    try {
      const c = client(proxy);
      // The first connection attempt may still be under way: wait until the shard is known to be down.
      await waitFor(() => proxy.topology.shards[0]!.pool.connections[0]!.state === 'down', 'the handshake to fail');
      const err = await c.get('k').then(
        (v) => `no error: ${String(v)}`,
        (e: Error) => e.message,
      );
      c.disconnect();
      return err;
    } finally {
      await proxy.close();
    }
  }

  it('a shard certificate from another CA', async () => {
    const err = await errorFor(shards[0]!.port, backendTls({ ca_file: pki.otherCa.cert }));
    expect(err).toMatch(
      new RegExp(
        `^ERR keymux: shard 'a' \\(127\\.0\\.0\\.1:${shards[0]!.port}\\) is unavailable: TLS handshake failed: ` +
          'self[- ]signed certificate in certificate chain \\(SELF_SIGNED_CERT_IN_CHAIN\\)$',
      ),
    );
  });

  it('no client certificate for a shard that requires one', async () => {
    const err = await errorFor(shards[0]!.port, { tls: { enabled: true, ca_file: pki.ca.cert } });
    expect(err).toMatch(new RegExp(`^ERR keymux: shard 'a' \\(127\\.0\\.0\\.1:${shards[0]!.port}\\) is unavailable: `));
    // TLS 1.3: the shard refuses after keymux's side of the handshake is done; keymux reads its alert, or (on a
    // busy machine, when the shard's close overtakes it) only the reset, which it then explains.
    expect(err).toMatch(
      /(TLS handshake failed: tlsv13 alert certificate required \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\)|TLS connection reset by the shard \(ECONNRESET\); a shard that requires client certificates \(tls-auth-clients\) does this when backend\.tls has no cert_file\/key_file)$/,
    );
  });

  it('a shard that does not speak TLS: the handshake times out, and the shard never sees a command', async () => {
    const plain = await startRedis();
    try {
      const err = await errorFor(plain.port, backendTls());
      expect(err).toBe(
        `ERR keymux: shard 'a' (127.0.0.1:${plain.port}) is unavailable: did not complete the TLS handshake ` +
          'within 500 ms (is it a TLS port?)',
      );
      // Only this harness's own commands were ever processed there (INFO itself counts once).
      const info = String(await redisCommand(plain.port, 'INFO', 'stats'));
      expect(Number(/total_commands_processed:(\d+)/.exec(info)![1])).toBeLessThanOrEqual(2);
      expect(await redisCommand(plain.port, 'DBSIZE')).toBe(0);
    } finally {
      await plain.stop();
    }
  });

  it('a certificate for another name, unless servername names it; verify: false skips the check', async () => {
    const named = pki.ca.issue('named-shard', { san: ['DNS:redis.internal'] });
    const shard = await tlsShard(named);
    try {
      const err = await errorFor(shard.port, backendTls());
      expect(err).toMatch(/TLS handshake failed: Hostname\/IP does not match certificate's altnames/);
      expect(err).toContain('(ERR_TLS_CERT_ALTNAME_INVALID)');

      const proxy = await startKeymux(
        slotsConfig([shard.port], { backend: backendTls({ servername: 'redis.internal' }) }),
      );
      const c = client(proxy);
      expect(await c.set('bt:named', '1')).toBe('OK');
      c.disconnect();
      await proxy.close();

      // verify: false: encrypted, the shard not authenticated (here even a CA that did not sign it passes).
      const loose = await startKeymux(
        slotsConfig([shard.port], { backend: backendTls({ ca_file: pki.otherCa.cert, verify: false }) }),
      );
      const l = client(loose);
      expect(await l.get('bt:named')).toBe('1');
      l.disconnect();
      await loose.close();
    } finally {
      await shard.stop();
    }
  });
});

describe('rotation, migration and planning over TLS', () => {
  it('a CA file replaced in place is used by the next connection, without a restart', async () => {
    const volume = secretVolume(pki.dir, { 'ca.crt': fs.readFileSync(pki.otherCa.cert) });
    const proxy = await startKeymux(
      slotsConfig([shards[0]!.port], {
        backend: { connect_timeout_ms: 500, ...backendTls({ ca_file: volume.path('ca.crt') }) },
      }),
      { builtinCommandTable: true },
    );
    try {
      const c = client(proxy);
      await expect(c.set('bt:rot', '1')).rejects.toThrow(/SELF_SIGNED_CERT_IN_CHAIN/);
      const okBefore = proxy.stats.reloadsOk;
      volume.update({ 'ca.crt': fs.readFileSync(pki.ca.cert) });
      await waitFor(() => proxy.stats.reloadsOk > okBefore, 'the rotated CA to be read', 10_000, 20);
      // keymux reconnects with backoff (at most 2 s between attempts); the next connection trusts the new CA.
      await waitFor(
        async () => (await c.set('bt:rot', '2').catch(() => null)) === 'OK',
        'a command to succeed',
        10_000,
        50,
      );
      expect(await redisCommand(shards[0]!.port, 'GET', 'bt:rot')).toBe('2');
      c.disconnect();
    } finally {
      await proxy.close();
    }
  });

  it('a reload that moves slots migrates the keys between TLS shards (MIGRATE over TLS)', async () => {
    await Promise.all(shards.map((s) => redisCommands(s.port, [['FLUSHALL']])));
    const [a, b] = shards as [RedisProcess, RedisProcess];
    const layout = (aSlots: string, bSlots: string): ConfigObject => ({
      mode: 'slots',
      shards: [
        { name: 'a', address: a.address, slots: [aSlots] },
        { name: 'b', address: b.address, slots: [bSlots] },
      ],
      backend: backendTls(),
    });
    const proxy = await startKeymux(layout('0-8191', '8192-16383'));
    try {
      const c = client(proxy);
      const keys = Array.from({ length: 300 }, (_, i) => `bt:mig:${i}`);
      await c.mset(Object.fromEntries(keys.map((k) => [k, `v:${k}`])));
      const [onA] = await dbsizes([a.port]);
      expect(proxy.reload(configFrom(layout('0-4095', '4096-16383')))).toBeNull();
      await waitFor(
        () => proxy.migrationProgress().length > 0 && proxy.migrationProgress().every((m) => m.state === 'done'),
        'the migration to finish',
        20_000,
        20,
      );
      const [m] = proxy.migrationProgress();
      expect(m!.errors).toBe(0);
      expect(m!.keysMoved).toBeGreaterThan(0);
      const [afterA, afterB] = await dbsizes([a.port, b.port]);
      expect(afterA).toBe(onA! - m!.keysMoved);
      expect(afterA! + afterB!).toBe(300);
      expect(await c.mget(...keys)).toEqual(keys.map((k) => `v:${k}`));
      c.disconnect();
    } finally {
      await proxy.close();
    }
  });

  it('keymux plan samples TLS shards (the estimate has no shard errors)', async () => {
    const current = configFrom(slotsConfig([shards[0]!.port, shards[1]!.port], { backend: backendTls() }));
    const next = configFrom(
      slotsConfig([shards[0]!.port, shards[1]!.port, shards[2]!.port], { backend: backendTls() }),
    );
    const c = new Redis({ port: shards[0]!.port, tls: { ...tlsOf() }, maxRetriesPerRequest: 0 });
    await c.mset(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`bt:plan:${i}`, 'x'])));
    c.disconnect();
    const report = await planReport(current, next, { keysPerShard: 100, timeMs: 5000 }, []);
    expect(report.estimate).not.toBeNull();
    for (const s of report.estimate!.shards) expect(s.error, s.address).toBeNull();
    expect(report.estimate!.shards.reduce((n, s) => n + s.sampled, 0)).toBeGreaterThan(0);
  });
});

function tlsOf(): { ca: Buffer; cert: Buffer; key: Buffer; host: string } {
  return {
    host: '127.0.0.1',
    ca: fs.readFileSync(pki.ca.cert),
    cert: fs.readFileSync(pki.client.cert),
    key: fs.readFileSync(pki.client.key),
  };
}
