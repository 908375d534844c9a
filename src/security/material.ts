/**
 * Security material: everything a config names in files rather than inline, read and checked together before the
 * config is applied (on start, on reload, and when one of the files changes): the TLS certificates, keys and CAs
 * of the client port, the admin port and the shards (tls.ts), the admin bearer token (`admin.token_file`) and the
 * passwords kept in files (`clients.password_file`, `backend.password_file`, `sentinel.password_file`, e.g. from a
 * Kubernetes Secret). Either every file is good and the caller gets the material (with the config's passwords
 * filled in from their files), or it gets one line per problem and nothing changes: a bad file is a bad config.
 * Two materials are the same (sameMaterial) when their configs are equal and their files held the same bytes: a
 * reload of such a config changes nothing and is not applied.
 */
import path from 'node:path';
import type tls from 'node:tls';
import { deepFreeze, type KeymuxConfig } from '../config/schema.js';
import {
  hashFiles,
  loadBackendContext,
  loadServerTls,
  readConfiguredFile,
  TlsMaterialError,
  type ServerTlsMaterial,
} from './tls.js';

/** Shortest admin token accepted (a guessable token would be worse than none: it looks like protection). */
export const MIN_TOKEN_LENGTH = 16;

export interface SecurityMaterial {
  /**
   * The config with `clients.password`, `backend.password` and `sentinel.password` read from their files when given
   * as files.
   */
  config: KeymuxConfig;
  clientTls: ServerTlsMaterial | null;
  adminTls: ServerTlsMaterial | null;
  backendTls: { context: tls.SecureContext; expiresAt: number | null } | null;
  /** The admin bearer token, or null (no token_file). */
  adminToken: Buffer | null;
  /** Every file read (absolute), to watch for rotation. */
  files: string[];
  /**
   * SHA-256 over every file's name and content, taken before the files were read for this material: a file
   * changed while it was being read makes the digest differ from the next one (a reload then applies again)
   * rather than match content the material does not hold.
   */
  filesDigest: string;
}

export type SecurityResult = { material: SecurityMaterial; errors?: undefined } | { errors: string[] };

/** Reads and checks every file `config` names. Errors are prefixed with the config's source, like config errors. */
export function loadSecurity(config: KeymuxConfig): SecurityResult {
  const errors: string[] = [];
  const files: string[] = [];
  const attempt = <T>(load: () => T): T | null => {
    try {
      return load();
    } catch (err) {
      if (!(err instanceof TlsMaterialError)) throw err;
      for (const line of err.lines) errors.push(`${config.source}: ${line}`);
      return null;
    }
  };
  const note = (...names: Array<string | null>): void => {
    for (const n of names) if (n !== null) files.push(path.resolve(n));
  };

  const filesDigest = hashFiles(configuredFiles(config));

  const t = config.tls;
  const clientTls = t.enabled ? attempt(() => loadServerTls(t, 'tls')) : null;
  if (t.enabled) note(t.certFile, t.keyFile, t.caFile);

  const admin = config.admin;
  const adminTls = admin?.tls.enabled === true ? attempt(() => loadServerTls(admin.tls, 'admin.tls')) : null;
  if (admin?.tls.enabled === true) note(admin.tls.certFile, admin.tls.keyFile, admin.tls.caFile);
  let adminToken: Buffer | null = null;
  if (admin !== null && admin.tokenFile !== null) {
    const file = admin.tokenFile;
    note(file);
    adminToken = attempt(() => readToken(file));
  }

  const b = config.backend.tls;
  const backendTls = b.enabled ? attempt(() => loadBackendContext(b)) : null;
  if (b.enabled) note(b.caFile, b.certFile, b.keyFile);

  let clientPassword = config.clients.password;
  const clientFile = config.clients.passwordFile;
  if (clientFile !== null) {
    note(clientFile);
    clientPassword = attempt(() => readPassword(clientFile, 'clients.password_file'));
  }
  let backendPassword = config.backend.password;
  const backendFile = config.backend.passwordFile;
  if (backendFile !== null) {
    note(backendFile);
    backendPassword = attempt(() => readPassword(backendFile, 'backend.password_file'));
  }

  const sentinel = config.sentinel;
  let sentinelPassword = sentinel?.password ?? null;
  if (sentinel !== null && sentinel.passwordFile !== null) {
    const sentinelFile = sentinel.passwordFile;
    note(sentinelFile);
    sentinelPassword = attempt(() => readPassword(sentinelFile, 'sentinel.password_file'));
  }

  if (errors.length > 0) return { errors };
  const resolved =
    clientPassword === config.clients.password &&
    backendPassword === config.backend.password &&
    sentinelPassword === (sentinel?.password ?? null)
      ? config
      : deepFreeze({
          ...config,
          clients: { ...config.clients, password: clientPassword },
          backend: { ...config.backend, password: backendPassword },
          sentinel: sentinel === null ? null : { ...sentinel, password: sentinelPassword },
        });
  return { material: { config: resolved, clientTls, adminTls, backendTls, adminToken, files, filesDigest } };
}

/**
 * The files `config` names, in a fixed order (the ones loadSecurity reads; `null`s of unset keys left out). Kept
 * next to loadSecurity: a file read there and missing here would make two different contents look the same.
 */
function configuredFiles(config: KeymuxConfig): string[] {
  const out: Array<string | null> = [];
  const t = config.tls;
  if (t.enabled) out.push(t.certFile, t.keyFile, t.caFile);
  const admin = config.admin;
  if (admin?.tls.enabled === true) out.push(admin.tls.certFile, admin.tls.keyFile, admin.tls.caFile);
  if (admin !== null) out.push(admin.tokenFile);
  const b = config.backend.tls;
  if (b.enabled) out.push(b.caFile, b.certFile, b.keyFile);
  out.push(config.clients.passwordFile, config.backend.passwordFile, config.sentinel?.passwordFile ?? null);
  return out.filter((f): f is string => f !== null).map((f) => path.resolve(f));
}

/**
 * The same config read from the same file contents: a reload from `a` to `b` would change nothing (README "Live
 * reloads": an unchanged configuration is not applied).
 */
export function sameMaterial(a: SecurityMaterial, b: SecurityMaterial): boolean {
  return a.filesDigest === b.filesDigest && samePlainData(a.config, b.config);
}

/**
 * Deep equality of plain data (what a validated config is: objects, arrays, strings, numbers, booleans, null).
 * Anything else (a Map, a RegExp, a function) is never equal: a config holding one would be treated as changed and
 * applied, as every reload was before, rather than guessed the same.
 */
export function samePlainData(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => samePlainData(v, b[i]));
  }
  const plain = (o: object): boolean => Object.getPrototypeOf(o) === Object.prototype;
  if (!plain(a) || !plain(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const rb = b as Record<string, unknown>;
  const ra = a as Record<string, unknown>;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && samePlainData(ra[k], rb[k]));
}

/** The token: the file's content without surrounding white space; at least MIN_TOKEN_LENGTH characters. */
function readToken(file: string): Buffer {
  const token = readConfiguredFile(file, 'admin.token_file').toString('utf8').trim();
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new TlsMaterialError([
      `admin.token_file: the token in ${file} has ${token.length} characters; use at least ${MIN_TOKEN_LENGTH} ` +
        '(e.g. the output of `openssl rand -hex 32`)',
    ]);
  }
  return Buffer.from(token, 'utf8');
}

/** A password kept in a file: its content without one trailing line break (files written by editors end with one). */
function readPassword(file: string, key: string): string {
  const text = readConfiguredFile(file, key)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (text === '') throw new TlsMaterialError([`${key}: ${file} is empty`]);
  return text;
}
