/**
 * TLS on the client side: keymux terminates TLS on `tls.listen` (certificates made by the test with openssl).
 * Real clients (ioredis, node-redis, redis-cli --tls) run commands across shards over it; the plain port still
 * serves beside it; a plain-text client and a client that does not trust the CA get nothing. With `tls.ca_file`
 * (mutual TLS) a client needs a certificate from that CA: none, or one from another CA, is refused and counted;
 * `min_version: TLSv1.3` refuses a TLS 1.2 client. Rotation: a certificate replaced the way a Kubernetes Secret
 * volume replaces it (a `..data` symlink swap) is served to new clients while a connected client keeps its
 * connection; bad new files (a key that does not match) are refused and the running certificate stays; a reload
 * naming a missing file is refused with the file named.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { stringify } from 'yaml';
import { makePki, redisCliTlsArgs, secretVolume, tlsClientOptions, type TestPki } from '../support/tls.js';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import { loadConfigFile } from '../../src/config/load.js';
import { waitFor } from '../support/fake-backend.js';
import { Proxy } from '../../src/proxy.js';
import type { Listener } from '../../src/server/listener.js';

const run = promisify(execFile);

let pki: TestPki;
let shards: RedisProcess[];

beforeAll(async () => {
  pki = makePki();
  shards = await Promise.all([startRedis(), startRedis()]);
});

afterAll(async () => {
  await Promise.all(shards.map((s) => s.stop()));
  pki.cleanup();
});

/** A TLS listener section for the test's CA-signed server certificate. */
function tlsSection(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { enabled: true, listen: '127.0.0.1:0', cert_file: pki.server.cert, key_file: pki.server.key, ...extra };
}

/** An ioredis client that gives up at once (no retries), so a refused connection shows as a rejected command. */
function ioredis(port: number, options: tls.ConnectionOptions | null): Redis {
  return new Redis({
    host: '127.0.0.1',
    port,
    ...(options !== null ? { tls: options } : {}),
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: true,
    lazyConnect: false,
  });
}

function redisCli(port: number, tlsArgs: string[], ...command: string[]): Promise<{ out: string; code: number }> {
  return run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...tlsArgs, ...command]).then(
    (r) => ({ out: `${r.stdout}${r.stderr}`.trim(), code: 0 }),
    (e: { stdout?: string; stderr?: string; code?: number }) => ({
      out: `${e.stdout ?? ''}${e.stderr ?? ''}`.trim(),
      code: e.code ?? 1,
    }),
  );
}

/** The SHA-256 fingerprint of the certificate keymux serves on `port` now (trusting every CA of the test). */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      ca: [fs.readFileSync(pki.ca.cert), fs.readFileSync(pki.otherCa.cert)],
    });
    s.once('secureConnect', () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

const fingerprintOf = (certFile: string): string =>
  new crypto.X509Certificate(fs.readFileSync(certFile)).fingerprint256;

/**
 * What a TLS client gets from `port`: null when the handshake succeeds and PING is answered PONG, else the error
 * (with TLS 1.3 a refused client certificate shows up as an alert after the client's side of the handshake).
 */
function tlsRefusal(port: number, options: tls.ConnectionOptions): Promise<string | null> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...options });
    let got = '';
    const done = (v: string | null): void => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(5000, () => done('timed out'));
    s.once('secureConnect', () => s.write('PING\r\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('+PONG\r\n')) done(null);
    });
    let error: string | null = null;
    s.once('error', (e) => (error = e.message));
    s.once('close', () => done(error ?? `closed after ${JSON.stringify(got)}`));
  });
}

describe('TLS on the client port', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    proxy = await startKeymux(slotsConfig([shards[0]!.port, shards[1]!.port], { tls: tlsSection() }));
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('serves ioredis, node-redis and redis-cli --tls across shards, and keeps the plain port', async () => {
    expect(proxy.tlsPort).not.toBeNull();
    expect(proxy.tlsPort).not.toBe(proxy.port);

    const io = ioredis(proxy.tlsPort!, tlsClientOptions(pki.ca));
    const keys = Array.from({ length: 40 }, (_, i) => `tls:io:${i}`);
    await io.mset(Object.fromEntries(keys.map((k) => [k, `v-${k}`])));
    expect(await io.mget(...keys)).toEqual(keys.map((k) => `v-${k}`));
    // Both shards hold some of them: the commands were split and routed as over plain text.
    const onShard = await Promise.all(shards.map((s) => redisCommand(s.port, 'DBSIZE')));
    expect(onShard.every((n) => Number(n) > 0)).toBe(true);
    io.disconnect();

    const nr = createClient({
      socket: { host: '127.0.0.1', port: proxy.tlsPort!, tls: true, ca: fs.readFileSync(pki.ca.cert) },
    });
    nr.on('error', () => undefined);
    await nr.connect();
    await nr.set('tls:node-redis', 'hello');
    expect(await nr.get('tls:node-redis')).toBe('hello');
    await nr.quit();

    expect((await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca), 'PING')).out).toBe('PONG');
    expect((await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca), 'SET', 'tls:cli', 'x')).out).toBe('OK');
    expect((await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca), 'GET', 'tls:cli')).out).toBe('x');

    const plain = ioredis(proxy.port, null);
    expect(await plain.get('tls:node-redis')).toBe('hello');
    plain.disconnect();
  });

  it('answers nothing to a plain-text client on the TLS port, and is refused by a client that does not trust it', async () => {
    const before = proxy.stats.tlsHandshakeFailures;
    const raw = await RawClient.connect(proxy.tlsPort!);
    raw.write('PING\r\n');
    const received = await raw.untilClosed();
    expect(received).not.toContain('PONG');
    await waitFor(() => proxy.stats.tlsHandshakeFailures > before, 'the refused handshake to be counted');

    // A client without the test CA: Node's default trust store does not know it.
    const refused = await tlsRefusal(proxy.tlsPort!, {});
    expect(refused).toMatch(/self[- ]signed certificate|unable to (get|verify)/i);
  });
});

describe('connections that never finish their handshake', () => {
  /** Connections open on keymux's TLS port (sessions and handshakes), as its listener counts them. */
  const tlsOpen = (p: Proxy): number => (p as unknown as { listener: Listener }).listener.tlsConnections;

  it('a client that sends half a ClientHello and half-closes is closed at the handshake timeout, not left open', async () => {
    const p = await startKeymux(slotsConfig([shards[0]!.port], { tls: tlsSection() }));
    const sock = net.connect(p.tlsPort!, '127.0.0.1');
    sock.on('error', () => undefined);
    try {
      await new Promise((resolve) => sock.once('connect', resolve));
      sock.write(Buffer.from('16030100c8010000c40303', 'hex')); // a ClientHello's first 11 bytes
      sock.end();
      expect(tlsOpen(p)).toBe(1);
      // Node refuses the handshake at its timeout (10 s) and ends its side; the client ended its own, so only
      // keymux destroying the socket frees it (it stayed open for good).
      await waitFor(() => tlsOpen(p) === 0, 'keymux to close the refused connection', 20_000);
    } finally {
      sock.destroy();
      await p.close();
    }
  }, 30_000);

  it('connections still in their handshake count against clients.max', async () => {
    const p = await startKeymux(slotsConfig([shards[0]!.port], { tls: tlsSection(), clients: { max: 5 } }));
    const socks: net.Socket[] = [];
    try {
      let closed = 0;
      for (let i = 0; i < 12; i++) {
        const sock = net.connect(p.tlsPort!, '127.0.0.1');
        sock.on('error', () => undefined);
        sock.once('close', () => closed++);
        socks.push(sock);
        await new Promise((resolve) => sock.once('connect', resolve));
      }
      // Silent TCP connections, no byte of a handshake: five wait for it, the other seven are refused at once.
      await waitFor(() => closed === 7, 'the connections over clients.max to be closed', 5000);
      expect(tlsOpen(p)).toBe(5);
    } finally {
      for (const s of socks) s.destroy();
      await p.close();
    }
  });
});

describe('mutual TLS (tls.ca_file) and min_version', () => {
  let proxy: Proxy;
  beforeAll(async () => {
    // TLS only: no plain-text port at all.
    proxy = await startKeymux(
      slotsConfig([shards[0]!.port, shards[1]!.port], {
        listen: null,
        tls: tlsSection({ ca_file: pki.ca.cert, min_version: 'TLSv1.3' }),
      }),
    );
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('admits clients with a certificate from the CA (ioredis, node-redis, redis-cli)', async () => {
    expect(proxy.tlsPort).toBe(proxy.port); // the only port
    const io = ioredis(proxy.tlsPort!, tlsClientOptions(pki.ca, pki.client));
    await io.set('mtls:a', '1');
    expect(await io.get('mtls:a')).toBe('1');
    io.disconnect();

    const nr = createClient({
      socket: {
        host: '127.0.0.1',
        port: proxy.tlsPort!,
        tls: true,
        ca: fs.readFileSync(pki.ca.cert),
        cert: fs.readFileSync(pki.client.cert),
        key: fs.readFileSync(pki.client.key),
      },
    });
    nr.on('error', () => undefined);
    await nr.connect();
    expect(await nr.get('mtls:a')).toBe('1');
    await nr.quit();

    expect((await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca, pki.client), 'GET', 'mtls:a')).out).toBe('1');
  });

  it('refuses a client without a certificate and one with a certificate from another CA, and counts them', async () => {
    const before = proxy.stats.tlsHandshakeFailures;
    expect(await tlsRefusal(proxy.tlsPort!, tlsClientOptions(pki.ca))).toMatch(/certificate required/i);
    expect(await tlsRefusal(proxy.tlsPort!, tlsClientOptions(pki.ca, pki.otherClient))).toMatch(
      // Node checks the client certificate after the handshake and closes the connection without an alert.
      /^closed after ""$|unknown ca|certificate/i,
    );
    const cli = await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca), 'PING');
    expect(cli.out).not.toContain('PONG');
    const otherCli = await redisCli(proxy.tlsPort!, redisCliTlsArgs(pki.ca, pki.otherClient), 'PING');
    expect(otherCli.out).not.toContain('PONG');
    await waitFor(() => proxy.stats.tlsHandshakeFailures >= before + 4, 'four refused handshakes to be counted');
  });

  it('refuses a TLS 1.2 client when min_version is TLSv1.3', async () => {
    const refused = await tlsRefusal(proxy.tlsPort!, {
      ...tlsClientOptions(pki.ca, pki.client),
      maxVersion: 'TLSv1.2',
    });
    expect(refused).toMatch(/version/i);
  });
});

describe('certificate rotation', () => {
  let proxy: Proxy;
  let volume: ReturnType<typeof secretVolume>;
  let rotated: { cert: string; key: string };
  beforeAll(async () => {
    volume = secretVolume(pki.dir, {
      'tls.crt': fs.readFileSync(pki.server.cert),
      'tls.key': fs.readFileSync(pki.server.key),
    });
    rotated = pki.otherCa.issue('rotated-server');
    proxy = await startKeymux(
      slotsConfig([shards[0]!.port, shards[1]!.port], {
        tls: {
          enabled: true,
          listen: '127.0.0.1:0',
          cert_file: volume.path('tls.crt'),
          key_file: volume.path('tls.key'),
        },
      }),
    );
  });
  afterAll(async () => {
    await proxy.close();
  });

  it('serves the rotated certificate to new clients, without dropping a connected client', async () => {
    expect(await servedFingerprint(proxy.tlsPort!)).toBe(fingerprintOf(pki.server.cert));
    const connected = ioredis(proxy.tlsPort!, {
      ca: [fs.readFileSync(pki.ca.cert), fs.readFileSync(pki.otherCa.cert)],
    });
    let closed = 0;
    connected.on('close', () => closed++);
    const id = await connected.client('ID');
    await connected.set('rot:k', 'before');
    const okBefore = proxy.stats.reloadsOk;

    volume.update({ 'tls.crt': fs.readFileSync(rotated.cert), 'tls.key': fs.readFileSync(rotated.key) });
    await waitFor(
      async () => (await servedFingerprint(proxy.tlsPort!)) === fingerprintOf(rotated.cert),
      'the rotated certificate to be served',
      10_000,
      50,
    );
    expect(proxy.stats.reloadsOk).toBe(okBefore + 1);

    // The connected client kept its connection (same session id, no close) and keeps working.
    expect(await connected.client('ID')).toBe(id);
    expect(await connected.get('rot:k')).toBe('before');
    expect(closed).toBe(0);
    connected.disconnect();

    // New clients: trusting only the new CA works, trusting only the old one no longer does.
    expect(await tlsRefusal(proxy.tlsPort!, tlsClientOptions(pki.otherCa))).toBeNull();
    expect(await tlsRefusal(proxy.tlsPort!, tlsClientOptions(pki.ca))).not.toBeNull();
  });

  it('keeps the running certificate when the new files are bad (a key that does not match it)', async () => {
    const failedBefore = proxy.stats.reloadsFailed;
    const mismatched = pki.ca.issue('mismatched');
    volume.update({ 'tls.crt': fs.readFileSync(mismatched.cert), 'tls.key': fs.readFileSync(pki.server.key) });
    await waitFor(() => proxy.stats.reloadsFailed > failedBefore, 'the bad files to be refused', 10_000, 20);
    expect(await servedFingerprint(proxy.tlsPort!)).toBe(fingerprintOf(rotated.cert));
    expect(await tlsRefusal(proxy.tlsPort!, tlsClientOptions(pki.otherCa))).toBeNull();
  });
});

describe('a reload that changes the certificate files', () => {
  it('serves the new certificate, and refuses a reload naming a missing or expired file, keeping the old one', async () => {
    const file = path.join(pki.dir, 'reload.yaml');
    const write = (tlsExtra: Record<string, unknown>): void => {
      const doc = slotsConfig([shards[0]!.port, shards[1]!.port], {
        listen: '127.0.0.1:0',
        tls: tlsSection(tlsExtra),
      });
      fs.writeFileSync(file, stringify(doc));
    };
    write({});
    const proxy = await Proxy.start(loadConfigFile(file), { configPath: file, watchConfig: false });
    try {
      const next = pki.otherCa.issue('reloaded-server');
      // listen: port 0 on both sides; the listeners themselves do not change.
      write({ cert_file: next.cert, key_file: next.key });
      const ok = await proxy.reloadFromFile('test');
      expect(ok.errors).toEqual([]);
      expect(await servedFingerprint(proxy.tlsPort!)).toBe(fingerprintOf(next.cert));

      write({ cert_file: path.join(pki.dir, 'missing.crt'), key_file: next.key });
      const missing = await proxy.reloadFromFile('test');
      expect(missing.ok).toBe(false);
      expect(missing.errors).toEqual([
        `${file}: tls.cert_file: cannot read ${path.join(pki.dir, 'missing.crt')}: ENOENT: no such file or directory, ` +
          `open '${path.join(pki.dir, 'missing.crt')}'`,
      ]);
      const expired = pki.ca.issue('expired', { days: -1 });
      write({ cert_file: expired.cert, key_file: expired.key });
      const old = await proxy.reloadFromFile('test');
      expect(old.ok).toBe(false);
      expect(old.errors[0]).toMatch(new RegExp(`tls\\.cert_file: ${expired.cert} expired on `));
      expect(await servedFingerprint(proxy.tlsPort!)).toBe(fingerprintOf(next.cert));
    } finally {
      await proxy.close();
    }
  });
});
