/**
 * TLS for keymux, both sides, with Node's own `tls`: the certificates, keys and CAs named in the config, read and
 * checked into contexts (a server side for the client port and the admin port, a client side for the shards),
 * and the watch on their files. Owns:
 * - reading PEM files with errors that name the config key and the file (`tls.cert_file: cannot read /x: ENOENT`),
 *   and refusing a certificate that does not match its key, has expired or is not valid yet: a bad certificate is
 *   a bad config, rejected before anything changes;
 * - BackendTls: the one live client context for a `backend.tls` setting, in a process-wide registry keyed by the
 *   setting. Backend connections are made from options derived from the frozen config in three places (the
 *   topology's pools, cluster discovery and node pools, the migration's connections); each looks up the live
 *   context here when it opens a socket, so a rotated certificate reaches every new connection of every pool
 *   without rebuilding a pool, and connections already open keep theirs (no drop);
 * - FileSetWatcher: watches the DIRECTORIES of a set of files (a Kubernetes Secret volume is updated by swapping a
 *   `..data` symlink, an editor renames into place: a watch on the file itself would miss both), debounced, and
 *   calls back only when the content of some file changed.
 * Nothing here is on the data path: contexts are built on start, reload and rotation.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { TlsVersion } from '../config/schema.js';

/** A problem with TLS material: one line per problem, each naming the config key and the file. */
export class TlsMaterialError extends Error {
  readonly lines: readonly string[];
  constructor(lines: readonly string[]) {
    super(lines.join('\n'));
    this.name = 'TlsMaterialError';
    this.lines = lines;
  }
}

/** What a TLS server of keymux's is configured with (the client port's `tls`, `admin.tls`). */
export interface ServerTlsSettings {
  certFile: string | null;
  keyFile: string | null;
  caFile: string | null;
  minVersion: TlsVersion;
}

/** `backend.tls` as the config resolves it. */
export interface BackendTlsSettings {
  enabled: boolean;
  caFile: string | null;
  certFile: string | null;
  keyFile: string | null;
  servername: string | null;
  verify: boolean;
  minVersion: TlsVersion;
}

/** Options for tls.createServer / https.createServer and, without the last two, for server.setSecureContext. */
export interface ServerTlsOptions extends tls.SecureContextOptions {
  requestCert: boolean;
  rejectUnauthorized: boolean;
}

/** Reads a file keymux was told to read; `key` is its config key (e.g. "tls.cert_file") for the error. */
export function readConfiguredFile(file: string, key: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new TlsMaterialError([`${key}: cannot read ${file}: ${(err as Error).message}`]);
  }
}

/**
 * Checks a certificate chain (the first certificate is the leaf) and, when given, its private key: PEM that
 * parses, the key matching the leaf, and the leaf valid now. Returns the leaf's expiry (ms since the epoch).
 */
function checkCertificate(cert: Buffer, key: Buffer | null, certKey: string, file: string): number {
  let leaf: crypto.X509Certificate;
  try {
    leaf = new crypto.X509Certificate(cert);
  } catch (err) {
    throw new TlsMaterialError([`${certKey}: ${file} is not a PEM certificate (${(err as Error).message})`]);
  }
  const now = Date.now();
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  if (now < from) throw new TlsMaterialError([`${certKey}: ${file} is not valid before ${leaf.validFrom}`]);
  if (now > to) throw new TlsMaterialError([`${certKey}: ${file} expired on ${leaf.validTo}`]);
  if (key !== null) {
    let privateKey: crypto.KeyObject;
    try {
      privateKey = crypto.createPrivateKey(key);
    } catch (err) {
      throw new TlsMaterialError([
        `${certKey.replace(/cert_file$/, 'key_file')}: not a PEM private key (${(err as Error).message})`,
      ]);
    }
    if (!leaf.checkPrivateKey(privateKey)) {
      throw new TlsMaterialError([
        `${certKey}: ${file} does not match the private key in ${certKey.replace(/cert_file$/, 'key_file')}`,
      ]);
    }
  }
  return to;
}

/** Every certificate in a CA file must parse; an empty file is refused (it would trust nothing, silently). */
function checkCa(ca: Buffer, key: string, file: string): void {
  const blocks = ca.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new TlsMaterialError([`${key}: ${file} holds no PEM certificate`]);
  for (const b of blocks) {
    try {
      new crypto.X509Certificate(b);
    } catch (err) {
      throw new TlsMaterialError([`${key}: ${file} has a certificate that does not parse (${(err as Error).message})`]);
    }
  }
}

/** Builds a context from the options to be sure OpenSSL takes them (it says what it dislikes). */
function tryContext(options: tls.SecureContextOptions, where: string): tls.SecureContext {
  try {
    return tls.createSecureContext(options);
  } catch (err) {
    throw new TlsMaterialError([`${where}: ${(err as Error).message}`]);
  }
}

/** A server side's certificate, key and client CA: read, checked, and with the leaf's expiry. */
export interface ServerTlsMaterial {
  options: ServerTlsOptions;
  expiresAt: number;
}

/**
 * Reads and checks a TLS server's files (`prefix` is its config key: "tls" or "admin.tls"). With a ca_file,
 * clients must present a certificate signed by it (mutual TLS). Throws TlsMaterialError.
 */
export function loadServerTls(s: ServerTlsSettings, prefix: string): ServerTlsMaterial {
  if (s.certFile === null || s.keyFile === null) {
    throw new TlsMaterialError([`${prefix}: cert_file and key_file are required when TLS is enabled`]);
  }
  const cert = readConfiguredFile(s.certFile, `${prefix}.cert_file`);
  const key = readConfiguredFile(s.keyFile, `${prefix}.key_file`);
  const expiresAt = checkCertificate(cert, key, `${prefix}.cert_file`, s.certFile);
  let ca: Buffer | undefined;
  if (s.caFile !== null) {
    ca = readConfiguredFile(s.caFile, `${prefix}.ca_file`);
    checkCa(ca, `${prefix}.ca_file`, s.caFile);
  }
  const options: ServerTlsOptions = {
    cert,
    key,
    ...(ca !== undefined ? { ca } : {}),
    minVersion: s.minVersion,
    requestCert: ca !== undefined,
    rejectUnauthorized: ca !== undefined,
  };
  tryContext(options, prefix);
  return { options, expiresAt };
}

/** The options server.setSecureContext takes (the context part: no requestCert / rejectUnauthorized). */
export function contextPart(o: ServerTlsOptions): tls.SecureContextOptions {
  const { requestCert: _r, rejectUnauthorized: _u, ...context } = o;
  return context;
}

// ---------------------------------------------------------------------------------------------------------------
// The shard side

/** A fresh client context for `backend.tls` (files read and checked). Throws TlsMaterialError. */
export function loadBackendContext(s: BackendTlsSettings): { context: tls.SecureContext; expiresAt: number | null } {
  const options: tls.SecureContextOptions = { minVersion: s.minVersion };
  let expiresAt: number | null = null;
  if (s.caFile !== null) {
    options.ca = readConfiguredFile(s.caFile, 'backend.tls.ca_file');
    checkCa(options.ca, 'backend.tls.ca_file', s.caFile);
  }
  if (s.certFile !== null && s.keyFile !== null) {
    options.cert = readConfiguredFile(s.certFile, 'backend.tls.cert_file');
    options.key = readConfiguredFile(s.keyFile, 'backend.tls.key_file');
    expiresAt = checkCertificate(options.cert, options.key, 'backend.tls.cert_file', s.certFile);
  }
  return { context: tryContext(options, 'backend.tls'), expiresAt };
}

/** The live client context of one `backend.tls` setting; `context` is swapped when its files change. */
export class BackendTls {
  readonly settings: BackendTlsSettings;
  context: tls.SecureContext;
  expiresAt: number | null;

  constructor(settings: BackendTlsSettings, loaded: { context: tls.SecureContext; expiresAt: number | null }) {
    this.settings = settings;
    this.context = loaded.context;
    this.expiresAt = loaded.expiresAt;
  }

  /** Options for tls.connect to a shard at host:port, with the current context. */
  connectOptions(host: string, port: number): tls.ConnectionOptions {
    const s = this.settings;
    // SNI carries a name, never an address (RFC 6066); the certificate is then checked against the address.
    const servername = s.servername ?? (isIP(host) === 0 ? host : undefined);
    return {
      host,
      port,
      secureContext: this.context,
      ...(servername !== undefined ? { servername } : {}),
      rejectUnauthorized: s.verify,
      ...(s.verify ? {} : { checkServerIdentity: () => undefined }),
    };
  }
}

const backendRegistry = new Map<string, BackendTls>();

const settingsKey = (s: BackendTlsSettings): string =>
  JSON.stringify([s.caFile, s.certFile, s.keyFile, s.servername, s.verify, s.minVersion]);

/**
 * The live context for a `backend.tls` setting, or null when TLS to the shards is off. Created on first use
 * (reading the files: throws TlsMaterialError when they are bad; the proxy loads and installs the context before
 * it builds anything that connects, so only tools started without a proxy, such as `keymux plan`, load here).
 */
export function backendTlsFor(s: BackendTlsSettings): BackendTls | null {
  if (!s.enabled) return null;
  const key = settingsKey(s);
  let entry = backendRegistry.get(key);
  if (entry === undefined) {
    entry = new BackendTls(s, loadBackendContext(s));
    backendRegistry.set(key, entry);
  }
  return entry;
}

/** Makes `loaded` the live context of its setting: connections opened from now on use it. */
export function installBackendTls(
  s: BackendTlsSettings,
  loaded: { context: tls.SecureContext; expiresAt: number | null },
): void {
  if (!s.enabled) return;
  const key = settingsKey(s);
  const entry = backendRegistry.get(key);
  if (entry === undefined) backendRegistry.set(key, new BackendTls(s, loaded));
  else {
    entry.context = loaded.context;
    entry.expiresAt = loaded.expiresAt;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Watching files

const DEBOUNCE_MS = 150;

/**
 * Calls `onChange` when the content of any of `files` changed (compared by hash after a debounce, so a Secret's
 * symlink swap, which touches several names, or an editor's save gives one call). Watches their directories.
 */
export class FileSetWatcher {
  readonly files: readonly string[];
  private readonly onChange: () => void;
  private readonly watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lastHash: string;

  constructor(files: readonly string[], onChange: () => void) {
    this.files = [...new Set(files.map((f) => path.resolve(f)))].sort();
    this.onChange = onChange;
    this.lastHash = hashFiles(this.files);
  }

  start(): void {
    for (const dir of new Set(this.files.map((f) => path.dirname(f)))) {
      try {
        const w = fs.watch(dir, { persistent: false }, () => this.schedule());
        w.on('error', () => undefined);
        this.watchers.push(w);
      } catch {
        // A directory that does not exist (yet) cannot be watched; a reload re-creates the watcher.
      }
    }
  }

  /** Records the contents now in use (after they were read elsewhere, e.g. by a reload). */
  markCurrent(): void {
    this.lastHash = hashFiles(this.files);
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const hash = hashFiles(this.files);
      if (hash === this.lastHash) return;
      this.lastHash = hash;
      this.onChange();
    }, DEBOUNCE_MS);
  }
}

/** One hash of several files' names and contents (an unreadable file hashes as such): what a watch or a reload compares. */
export function hashFiles(files: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(f).update('\0');
    try {
      h.update(fs.readFileSync(f));
    } catch {
      h.update('\0missing');
    }
    h.update('\0');
  }
  return h.digest('hex');
}
