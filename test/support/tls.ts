/**
 * Certificates for TLS tests, made with the real `openssl` command in a throwaway directory: a CA, server
 * certificates (for 127.0.0.1 and localhost, or other names) and client certificates signed by it, and a second,
 * unrelated CA to show that its certificates are refused. EC P-256 keys (fast to make). Nothing is fixed: every
 * run makes fresh ones. Also the client options (ioredis, node-redis, redis-cli, Node's tls) that go with them.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import { makeTempDir, removeTempDir } from './tmpdirs.js';

export interface CertFiles {
  /** PEM certificate file. */
  cert: string;
  /** PEM private key file. */
  key: string;
}

export interface CertOptions {
  /** Subject alternative names, e.g. ['IP:127.0.0.1', 'DNS:localhost'] (the default). */
  san?: string[];
  /** Days from now the certificate is valid (negative: already expired). Default 2. */
  days?: number;
}

export class TestCa {
  readonly dir: string;
  readonly name: string;
  readonly cert: string;
  readonly key: string;
  private serial = 1;

  private constructor(dir: string, name: string) {
    this.dir = dir;
    this.name = name;
    this.cert = path.join(dir, `${name}.crt`);
    this.key = path.join(dir, `${name}.key`);
  }

  /** A new self-signed CA in `dir`. */
  static create(dir: string, name = 'ca'): TestCa {
    const ca = new TestCa(dir, name);
    openssl([
      'req',
      '-x509',
      '-new',
      '-nodes',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-keyout',
      ca.key,
      '-out',
      ca.cert,
      '-days',
      '2',
      '-subj',
      `/CN=keymux test ${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    return ca;
  }

  /** A certificate signed by this CA, usable as a server and as a client certificate. */
  issue(name: string, opts: CertOptions = {}): CertFiles {
    const out: CertFiles = { cert: path.join(this.dir, `${name}.crt`), key: path.join(this.dir, `${name}.key`) };
    const csr = path.join(this.dir, `${name}.csr`);
    const ext = path.join(this.dir, `${name}.ext`);
    fs.writeFileSync(
      ext,
      [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=${(opts.san ?? ['IP:127.0.0.1', 'DNS:localhost']).join(',')}`,
        '',
      ].join('\n'),
    );
    openssl([
      'req',
      '-new',
      '-nodes',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-keyout',
      out.key,
      '-out',
      csr,
      '-subj',
      `/CN=${name}`,
    ]);
    // Negative days: openssl makes a certificate that ended before it began, i.e. one that has expired.
    const validity = ['-days', String(opts.days ?? 2)];
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      this.cert,
      '-CAkey',
      this.key,
      '-set_serial',
      String(this.serial++ + Math.floor(Math.random() * 1e9)),
      '-out',
      out.cert,
      ...validity,
      '-extfile',
      ext,
    ]);
    return out;
  }
}

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(
      `openssl ${args.slice(0, 2).join(' ')} failed: ${(err as { stderr?: Buffer }).stderr?.toString()}`,
      {
        cause: err,
      },
    );
  }
}

/** A CA with a server certificate and a client certificate, and an unrelated CA with its own client certificate. */
export interface TestPki {
  dir: string;
  ca: TestCa;
  server: CertFiles;
  client: CertFiles;
  otherCa: TestCa;
  /** Signed by otherCa: refused wherever `ca` is required. */
  otherClient: CertFiles;
  cleanup(): void;
}

export function makePki(): TestPki {
  const dir = makeTempDir('keymux-tls-');
  const ca = TestCa.create(dir, 'ca');
  const otherCa = TestCa.create(dir, 'other-ca');
  return {
    dir,
    ca,
    server: ca.issue('server'),
    client: ca.issue('client'),
    otherCa,
    otherClient: otherCa.issue('other-client'),
    cleanup: () => removeTempDir(dir),
  };
}

/** Node tls.connect options trusting `ca`, with a client certificate when given. */
export function tlsClientOptions(ca: TestCa | string, client?: CertFiles): tls.ConnectionOptions {
  return {
    ca: fs.readFileSync(typeof ca === 'string' ? ca : ca.cert),
    ...(client !== undefined ? { cert: fs.readFileSync(client.cert), key: fs.readFileSync(client.key) } : {}),
  };
}

/** redis-cli arguments for TLS with `ca` (and a client certificate when given). */
export function redisCliTlsArgs(ca: TestCa, client?: CertFiles): string[] {
  return ['--tls', '--cacert', ca.cert, ...(client !== undefined ? ['--cert', client.cert, '--key', client.key] : [])];
}

/**
 * Replaces a certificate and key in place the way a Kubernetes Secret volume does: the new files are written
 * into a fresh directory and the `..data` symlink the names point through is swapped atomically. `files` must
 * come from secretVolume().
 */
export interface SecretVolume {
  dir: string;
  /** Paths keymux is configured with (dir/NAME -> ..data/NAME). */
  path(name: string): string;
  /** Writes the given contents (name -> bytes) as the new version, with one atomic symlink swap. */
  update(contents: Record<string, Buffer | string>): void;
}

export function secretVolume(parent: string, contents: Record<string, Buffer | string>): SecretVolume {
  const dir = fs.mkdtempSync(path.join(parent, 'secret-'));
  let version = 0;
  const write = (c: Record<string, Buffer | string>): void => {
    const ts = path.join(dir, `..v${++version}`);
    fs.mkdirSync(ts);
    for (const [name, data] of Object.entries(c)) fs.writeFileSync(path.join(ts, name), data);
    const tmp = path.join(dir, '..data_tmp');
    fs.symlinkSync(path.basename(ts), tmp);
    fs.renameSync(tmp, path.join(dir, '..data'));
    for (const name of Object.keys(c)) {
      const link = path.join(dir, name);
      if (!fs.existsSync(link)) fs.symlinkSync(path.join('..data', name), link);
    }
  };
  write(contents);
  return { dir, path: (name) => path.join(dir, name), update: write };
}
