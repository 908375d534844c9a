/**
 * The keymux configuration: its types (camelCase, resolved, defaults applied), and the validator that turns a
 * parsed YAML document into a KeymuxConfig or a list of errors naming file, line and what is wrong.
 * A KeymuxConfig is immutable once built; a reload builds a new one.
 *
 * The validator is pure: it takes the plain JS value of the YAML document and a `locate` callback that maps a
 * path (['shards', 1, 'slots']) to a 1-based line (load.ts builds it from the YAML AST). It reports every error
 * it can find, never just the first, each as one line `file:line: path: what is wrong`, sorted by line, and
 * only returns a config when there are none; that config is deeply frozen. Mode-specific sections and shard keys
 * are declared in MODE_RULES, so adding a mode (e.g. `cluster`) means one row there, its section parser and its
 * field in KeymuxConfig.
 */

import { isIP, isIPv6 } from 'node:net';

export type Mode = 'slots' | 'ring';

export type HashName =
  | 'one_at_a_time' | 'md5' | 'crc16' | 'crc32' | 'crc32a' | 'fnv1_64' | 'fnv1a_64'
  | 'fnv1_32' | 'fnv1a_32' | 'hsieh' | 'murmur' | 'jenkins';

export interface HostPort { host: string; port: number }

export interface ShardConfig {
  /** The shard's name: as given, or "host:port" when the YAML gives none. */
  name: string;
  /** True when the YAML gave a name (ketama then hashes the name, as twemproxy does). */
  named: boolean;
  /** "host:port" exactly as written (normalised: no spaces). */
  address: string;
  host: string;
  port: number;
  /** slots mode: inclusive [from, to] ranges, sorted; ring mode: null. */
  slots: Array<[number, number]> | null;
  /** ring mode: weight (default 1); slots mode: 1. */
  weight: number;
}

export interface UserConfig { name: string; password: string }

export interface KeymuxConfig {
  /** Path of the file it was loaded from (or '<inline>'). */
  source: string;
  listen: HostPort;
  admin: HostPort | null;
  mode: Mode;
  /** Two characters, e.g. "{}", or null for no hash tag. Default "{}". */
  hashTag: string | null;
  shards: ShardConfig[];
  ring: { hash: HashName; distribution: 'ketama' };
  backend: {
    connections: number;          // default 1, 1..64
    connectTimeoutMs: number;     // default 1000
    timeoutMs: number;            // default 2000 (0 = none)
    password: string | null;
    username: string | null;
  };
  clients: {
    max: number;                  // default 10000
    idleTimeoutS: number;         // default 0 (never)
    password: string | null;
    users: UserConfig[];
    /** Requests in flight per client before keymux stops reading it (backpressure). default 1024 */
    maxInflight: number;
  };
  limits: {
    maxBulkBytes: number;         // default 536870912
    maxArgs: number;              // default 1048576
    maxInlineBytes: number;       // default 65536
  };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent' };
  commands: { deny: string[] };   // lowercase command names
}

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary, limits and defaults

export type LogLevel = KeymuxConfig['log']['level'];

/** A path into the YAML document: mapping keys and sequence indexes, e.g. ['shards', 1, 'slots', 0]. */
export type ConfigPath = ReadonlyArray<string | number>;

/** Maps a path to the 1-based line where it is written, or null when the path is not in the document. */
export type Locate = (path: ConfigPath) => number | null;

/** Either a valid, frozen config or every error found (each one line). Test with `if (r.errors)`. */
export type ConfigResult =
  | { config: KeymuxConfig; errors?: undefined }
  | { errors: string[]; config?: undefined };

export const SLOT_COUNT = 16384;
export const MODES: readonly Mode[] = Object.freeze(['slots', 'ring'] as Mode[]);
export const HASH_NAMES: readonly HashName[] = Object.freeze([
  'one_at_a_time', 'md5', 'crc16', 'crc32', 'crc32a', 'fnv1_64', 'fnv1a_64',
  'fnv1_32', 'fnv1a_32', 'hsieh', 'murmur', 'jenkins',
] as HashName[]);
export const DISTRIBUTIONS: readonly ['ketama'] = Object.freeze(['ketama'] as const);
export const LOG_LEVELS: readonly LogLevel[] = Object.freeze(
  ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as LogLevel[]);

/** Largest delay Node's setTimeout accepts (2^31 - 1 ms); larger values fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Inclusive bounds of every integer option (also used by the JSON schema test). */
export const INT_RANGES = Object.freeze({
  'backend.connections': [1, 64],
  'backend.connect_timeout_ms': [0, MAX_TIMER_MS],
  'backend.timeout_ms': [0, MAX_TIMER_MS],
  'clients.max': [1, 1_000_000],
  'clients.idle_timeout_s': [0, Math.floor(MAX_TIMER_MS / 1000)],
  'clients.max_inflight': [1, 1_000_000],
  'limits.max_bulk_bytes': [1, 2 ** 32],
  'limits.max_args': [1, MAX_TIMER_MS],
  'limits.max_inline_bytes': [1, 2 ** 32],
  'shards[].weight': [1, 1_000_000],
} as const satisfies Record<string, readonly [number, number]>);

/** Defaults for everything optional, as the resolved (camelCase) values. Frozen. */
export const DEFAULTS = deepFreeze({
  listen: { host: '127.0.0.1', port: 6380 } as HostPort,
  admin: null as HostPort | null,
  hashTag: '{}' as string | null,
  weight: 1,
  ring: { hash: 'fnv1a_64' as HashName, distribution: 'ketama' as const },
  backend: { connections: 1, connectTimeoutMs: 1000, timeoutMs: 2000, password: null, username: null },
  clients: { max: 10_000, idleTimeoutS: 0, password: null, users: [] as UserConfig[], maxInflight: 1024 },
  limits: { maxBulkBytes: 536_870_912, maxArgs: 1_048_576, maxInlineBytes: 65_536 },
  log: { level: 'info' as LogLevel },
  commands: { deny: [] as string[] },
});

/**
 * What each mode allows beyond the common keys: top-level sections, shard keys, which shard keys are required,
 * and a whole-config check run once every shard parsed cleanly. Adding a mode = adding a row here.
 */
interface ModeRule {
  sections: readonly string[];
  shardKeys: readonly string[];
  requiredShardKeys: readonly string[];
  check?: (cx: Checker, shards: readonly ParsedShard[], shardsPath: ConfigPath) => void;
}

const MODE_RULES: Readonly<Record<Mode, ModeRule>> = {
  slots: { sections: [], shardKeys: ['slots'], requiredShardKeys: ['slots'], check: checkSlotCoverage },
  ring: { sections: ['ring'], shardKeys: ['weight'], requiredShardKeys: [] },
};

/** Every key the YAML may use, per mapping (snake_case). `root` is the top level. */
export const KNOWN_KEYS = deepFreeze({
  root: ['listen', 'admin', 'mode', 'hash_tag', 'shards', 'ring', 'backend', 'clients', 'limits', 'log', 'commands'],
  shard: ['name', 'address', 'slots', 'weight'],
  ring: ['hash', 'distribution'],
  backend: ['connections', 'connect_timeout_ms', 'timeout_ms', 'password', 'username'],
  clients: ['max', 'idle_timeout_s', 'password', 'users', 'max_inflight'],
  user: ['name', 'password'],
  limits: ['max_bulk_bytes', 'max_args', 'max_inline_bytes'],
  log: ['level'],
  commands: ['deny'],
});

/** Which modes allow a key, for keys that only some modes allow. */
function modesAllowing(kind: 'sections' | 'shardKeys', key: string): Mode[] | null {
  const modes = MODES.filter((m) => MODE_RULES[m][kind].includes(key));
  return modes.length > 0 ? modes : null;
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point

/**
 * Validates the plain JS value of a YAML document. `locate` gives lines for error messages (pass `() => null`
 * for a document without a source text); `source` names the file in messages and becomes `config.source`.
 */
export function validateConfig(doc: unknown, locate: Locate, source: string): ConfigResult {
  const cx = new Checker(locate, source);
  const config = buildConfig(cx, doc, source);
  if (config === null || cx.failed) return { errors: cx.messages() };
  return { config: deepFreeze(config) };
}

/** Formats a path the way error messages show it: shards[1].slots[0], backend["odd key"]. */
export function formatPath(path: ConfigPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}

/**
 * Parses "host:port" ("[v6]:port" for IPv6). Returns the parts, or a message saying what is wrong.
 * `minPort` is 0 for listening addresses (0 = any free port) and 1 for addresses keymux connects to.
 */
export function parseHostPort(text: string, minPort = 1): HostPort | string {
  const s = text.trim();
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(s);
  const plain = /^([^:[\]]*):([^:]*)$/.exec(s);
  let host: string;
  let portText: string;
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
    if (!isIPv6(host)) return `"${host}" in brackets is not an IPv6 address`;
  } else if (plain) {
    host = plain[1]!;
    portText = plain[2]!;
    if (host === '') return `missing host in ${JSON.stringify(text)} (e.g. "127.0.0.1:6380")`;
    if (isIP(host) === 0 && !/^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$/.test(host)) {
      return `"${host}" is not a valid host name or IP address`;
    }
  } else if (!s.includes(':') || /^\[[^\]]*\]$/.test(s)) {
    return `expected "host:port", got ${JSON.stringify(text)} (missing ":port")`;
  } else if (!s.startsWith('[') && isIPv6(s.slice(0, s.lastIndexOf(':')))) {
    return `IPv6 addresses must be in brackets, e.g. "[::1]:6380", got ${JSON.stringify(text)}`;
  } else {
    return `expected "host:port", got ${JSON.stringify(text)}`;
  }
  if (!/^\d{1,5}$/.test(portText)) return `port ${JSON.stringify(portText)} is not a number`;
  const port = Number(portText);
  if (port < minPort || port > 65535) return `port ${port} is out of range (${minPort}..65535)`;
  return { host, port };
}

/** Freezes a value and everything reachable from it. Returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------------------
// Error collection

interface Issue { line: number | null; seq: number; text: string }

class Checker {
  private readonly issues: Issue[] = [];
  constructor(private readonly locate: Locate, private readonly source: string) {}

  get failed(): boolean { return this.issues.length > 0; }

  /** Line of the path, or of its nearest ancestor that is written in the document. */
  line(path: ConfigPath): number | null {
    for (let n = path.length; n >= 0; n--) {
      const line = this.locate(path.slice(0, n));
      if (line !== null && line > 0) return line;
    }
    return null;
  }

  error(path: ConfigPath, message: string): void {
    const line = this.line(path);
    const where = line === null ? this.source : `${this.source}:${line}`;
    const at = path.length > 0 ? `${formatPath(path)}: ` : '';
    this.issues.push({ line, seq: this.issues.length, text: `${where}: ${at}${message}` });
  }

  /** " at line N" for a cross-reference, or '' when the line is unknown. */
  atLine(path: ConfigPath): string {
    const line = this.line(path);
    return line === null ? '' : ` at line ${line}`;
  }

  messages(): string[] {
    return [...this.issues]
      .sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.seq - b.seq)
      .map((i) => i.text);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Generic readers: each reports what is wrong and returns a usable fallback so checking can go on.

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') {
    const shown = v.length > 40 ? `${v.slice(0, 40)}...` : v;
    return `a string (${JSON.stringify(shown)})`;
  }
  if (typeof v === 'number') return Number.isInteger(v) ? `an integer (${v})` : `a number (${v})`;
  if (typeof v === 'boolean') return `a boolean (${v})`;
  if (Array.isArray(v)) return 'a list';
  if (isObj(v)) return 'a mapping';
  return `a ${(v as object).constructor?.name ?? typeof v} value`;
}

/** "; quote it to make it a string" when a YAML scalar was read as a number or boolean. */
function quoteHint(v: unknown): string {
  return typeof v === 'number' || typeof v === 'boolean' ? '; quote it to make it a string' : '';
}

export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * The candidate a misspelt word most likely meant, or null: the same word up to case, `_` and `-` (hashTag,
 * fnv1a64), else the nearest within edit distance 2 and shorter than the word (conections), else the closest one it is a prefix of or
 * that is a prefix of it (timeout -> timeout_ms, warning -> warn).
 */
export function suggest(word: string, candidates: readonly string[]): string | null {
  const squash = (s: string): string => s.replace(/[_-]/g, '').toLowerCase();
  const same = candidates.find((c) => squash(c) === squash(word));
  if (same !== undefined) return same;
  const lower = word.toLowerCase();
  let best: string | null = null;
  let bestDistance = 3;
  for (const c of candidates) {
    const d = editDistance(lower, c);
    if (d < bestDistance && d < lower.length) { best = c; bestDistance = d; }
  }
  if (best !== null || lower.length < 3) return best;
  let bestGap = Infinity;
  for (const c of candidates) {
    if (c.startsWith(lower) || lower.startsWith(c)) {
      const gap = Math.abs(c.length - lower.length);
      if (gap < bestGap) { best = c; bestGap = gap; }
    }
  }
  return best;
}

/** Reports keys of `obj` that are unknown, or known but not allowed in the current mode. */
function checkKeys(cx: Checker, obj: Obj, path: ConfigPath, known: readonly string[],
  modeOnly?: { kind: 'sections' | 'shardKeys'; mode: Mode | null }): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) {
      if (!modeOnly) continue;
      const modes = modesAllowing(modeOnly.kind, key);
      if (modes !== null && modeOnly.mode !== null && !modes.includes(modeOnly.mode)) {
        cx.error([...path, key], `only allowed when mode is ${modes.join(' or ')} (mode is ${modeOnly.mode})`);
      }
      continue;
    }
    const near = suggest(key, known);
    cx.error([...path, key], near !== null
      ? `unknown key (did you mean "${near}"?)`
      : `unknown key; expected one of: ${known.join(', ')}`);
  }
}

/** A mapping section: absent or null means "all defaults" ({}); anything else not a mapping is an error. */
function section(cx: Checker, parent: Obj, key: string, path: ConfigPath, known: readonly string[]): Obj {
  const v = parent[key];
  if (v === undefined || v === null) return {};
  if (!isObj(v)) {
    cx.error([...path, key], `expected a mapping, got ${describe(v)}`);
    return {};
  }
  checkKeys(cx, v, [...path, key], known);
  return v;
}

function int(cx: Checker, obj: Obj, key: string, path: ConfigPath, def: number, range: readonly [number, number]): number {
  const v = obj[key];
  if (v === undefined) return def;
  const [min, max] = range;
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    cx.error([...path, key], `expected an integer, got ${describe(v)}`);
    return def;
  }
  if (v < min || v > max) {
    cx.error([...path, key], `must be between ${min} and ${max}, got ${v}`);
    return def;
  }
  return v;
}

/** A non-empty string, or null when the YAML gives null (or nothing). Used for secrets and user names. */
function optionalString(cx: Checker, obj: Obj, key: string, path: ConfigPath): string | null {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') {
    cx.error([...path, key], `expected a string or null, got ${describe(v)}${quoteHint(v)}`);
    return null;
  }
  if (v === '') {
    cx.error([...path, key], 'must not be empty (use null, or leave it out, for none)');
    return null;
  }
  return v;
}

/** A required non-empty string. */
function requiredString(cx: Checker, obj: Obj, key: string, path: ConfigPath): string | null {
  const v = obj[key];
  if (v === undefined) {
    cx.error([...path, key], 'required');
    return null;
  }
  if (typeof v !== 'string') {
    cx.error([...path, key], `expected a string, got ${describe(v)}${quoteHint(v)}`);
    return null;
  }
  if (v.trim() === '') {
    cx.error([...path, key], 'must not be empty');
    return null;
  }
  return v;
}

function oneOf<T extends string>(cx: Checker, obj: Obj, key: string, path: ConfigPath,
  values: readonly T[], def: T | null): T | null {
  const v = obj[key];
  if (v === undefined) {
    if (def === null) cx.error([...path, key], `required (one of: ${values.join(', ')})`);
    return def;
  }
  if (typeof v !== 'string') {
    cx.error([...path, key], `expected one of: ${values.join(', ')}; got ${describe(v)}`);
    return def;
  }
  if ((values as readonly string[]).includes(v)) return v as T;
  const near = suggest(v, values);
  cx.error([...path, key], `expected one of: ${values.join(', ')}; got ${JSON.stringify(v)}` +
    (near !== null ? ` (did you mean "${near}"?)` : ''));
  return def;
}

function hostPort(cx: Checker, obj: Obj, key: string, path: ConfigPath, minPort: number): HostPort | null {
  const v = obj[key];
  if (v === undefined) {
    cx.error([...path, key], 'required (e.g. "127.0.0.1:7001")');
    return null;
  }
  if (typeof v !== 'string') {
    cx.error([...path, key], `expected "host:port" (a string), got ${describe(v)}` +
      (typeof v === 'number' ? `; write e.g. "127.0.0.1:${v}"` : ''));
    return null;
  }
  const parsed = parseHostPort(v, minPort);
  if (typeof parsed === 'string') {
    cx.error([...path, key], parsed);
    return null;
  }
  return parsed;
}

function sameAddress(a: HostPort, b: HostPort): boolean {
  return a.port === b.port && a.port !== 0 && a.host.toLowerCase() === b.host.toLowerCase();
}

function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

// ---------------------------------------------------------------------------------------------------------------
// The document

function buildConfig(cx: Checker, doc: unknown, source: string): KeymuxConfig | null {
  if (doc === null || doc === undefined) {
    cx.error([], 'the configuration is empty; expected a mapping with at least "mode" and "shards"');
    return null;
  }
  if (!isObj(doc)) {
    cx.error([], `expected a mapping at the top level, got ${describe(doc)}`);
    return null;
  }
  const mode = oneOf(cx, doc, 'mode', [], MODES, null);
  checkKeys(cx, doc, [], KNOWN_KEYS.root, { kind: 'sections', mode });

  const listen = doc.listen === undefined ? { ...DEFAULTS.listen } : hostPort(cx, doc, 'listen', [], 0);
  let admin: HostPort | null = null;
  if (doc.admin !== undefined && doc.admin !== null) {
    admin = hostPort(cx, doc, 'admin', [], 0);
    if (admin && listen && sameAddress(admin, listen)) {
      cx.error(['admin'], `same address as listen (${formatHostPort(listen)})`);
    }
  }
  const hashTag = parseHashTag(cx, doc);
  const shards = parseShards(cx, doc, mode, listen);

  // A section the mode does not allow was reported by checkKeys; its content is not checked further.
  const ringAllowed = mode === null || MODE_RULES[mode].sections.includes('ring');
  const ringObj = ringAllowed ? section(cx, doc, 'ring', [], KNOWN_KEYS.ring) : {};
  const ring = {
    hash: oneOf(cx, ringObj, 'hash', ['ring'], HASH_NAMES, DEFAULTS.ring.hash)!,
    distribution: oneOf(cx, ringObj, 'distribution', ['ring'], DISTRIBUTIONS, DEFAULTS.ring.distribution)!,
  };

  const b = section(cx, doc, 'backend', [], KNOWN_KEYS.backend);
  const bp = ['backend'];
  const backend = {
    connections: int(cx, b, 'connections', bp, DEFAULTS.backend.connections, INT_RANGES['backend.connections']),
    connectTimeoutMs: int(cx, b, 'connect_timeout_ms', bp, DEFAULTS.backend.connectTimeoutMs,
      INT_RANGES['backend.connect_timeout_ms']),
    timeoutMs: int(cx, b, 'timeout_ms', bp, DEFAULTS.backend.timeoutMs, INT_RANGES['backend.timeout_ms']),
    password: optionalString(cx, b, 'password', bp),
    username: optionalString(cx, b, 'username', bp),
  };
  if (backend.username !== null && (b.password === undefined || b.password === null)) {
    cx.error(['backend', 'username'], 'requires backend.password (Redis ACL AUTH needs both)');
  }

  const c = section(cx, doc, 'clients', [], KNOWN_KEYS.clients);
  const cp = ['clients'];
  const clients = {
    max: int(cx, c, 'max', cp, DEFAULTS.clients.max, INT_RANGES['clients.max']),
    idleTimeoutS: int(cx, c, 'idle_timeout_s', cp, DEFAULTS.clients.idleTimeoutS, INT_RANGES['clients.idle_timeout_s']),
    password: optionalString(cx, c, 'password', cp),
    users: parseUsers(cx, c),
    maxInflight: int(cx, c, 'max_inflight', cp, DEFAULTS.clients.maxInflight, INT_RANGES['clients.max_inflight']),
  };

  const l = section(cx, doc, 'limits', [], KNOWN_KEYS.limits);
  const lp = ['limits'];
  const limits = {
    maxBulkBytes: int(cx, l, 'max_bulk_bytes', lp, DEFAULTS.limits.maxBulkBytes, INT_RANGES['limits.max_bulk_bytes']),
    maxArgs: int(cx, l, 'max_args', lp, DEFAULTS.limits.maxArgs, INT_RANGES['limits.max_args']),
    maxInlineBytes: int(cx, l, 'max_inline_bytes', lp, DEFAULTS.limits.maxInlineBytes,
      INT_RANGES['limits.max_inline_bytes']),
  };

  const lg = section(cx, doc, 'log', [], KNOWN_KEYS.log);
  const log = { level: oneOf(cx, lg, 'level', ['log'], LOG_LEVELS, DEFAULTS.log.level)! };

  const commands = { deny: parseDeny(cx, section(cx, doc, 'commands', [], KNOWN_KEYS.commands)) };

  if (mode === null || listen === null || shards === null || cx.failed) return null;
  return {
    source, listen, admin, mode, hashTag, shards: shards.map((s) => s.config),
    ring, backend, clients, limits, log, commands,
  };
}

function parseHashTag(cx: Checker, doc: Obj): string | null {
  const v = doc.hash_tag;
  if (v === undefined) return DEFAULTS.hashTag;
  if (v === null || v === '') return null;
  if (isObj(v) && Object.keys(v).length === 0) {
    cx.error(['hash_tag'], 'an unquoted {} is an empty YAML mapping; write "{}" in quotes');
    return null;
  }
  if (typeof v !== 'string') {
    cx.error(['hash_tag'], `expected a two-character string like "{}", got ${describe(v)}`);
    return null;
  }
  if (v.length !== 2 || !/^[\x21-\x7e]{2}$/.test(v)) {
    cx.error(['hash_tag'], `expected two printable ASCII characters like "{}", got ${JSON.stringify(v)}`);
    return null;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Shards

interface ParsedRange { from: number; to: number; text: string; path: ConfigPath }

interface ParsedShard {
  config: ShardConfig;
  path: ConfigPath;
  /** slots mode: the ranges as written (document order), or null when `slots` was absent or had errors. */
  ranges: ParsedRange[] | null;
}

function parseShards(cx: Checker, doc: Obj, mode: Mode | null, listen: HostPort | null): ParsedShard[] | null {
  const v = doc.shards;
  if (v === undefined) {
    cx.error(['shards'], 'required: a list of shards, e.g. [{ address: "127.0.0.1:7001" }]');
    return null;
  }
  if (!Array.isArray(v)) {
    cx.error(['shards'], `expected a list of shards, got ${describe(v)}`);
    return null;
  }
  if (v.length === 0) {
    cx.error(['shards'], 'must list at least one shard');
    return null;
  }
  const rule = mode === null ? null : MODE_RULES[mode];
  const out: ParsedShard[] = [];
  const byName = new Map<string, ConfigPath>();
  const byAddress = new Map<string, ConfigPath>();
  let complete = true;
  v.forEach((item: unknown, i) => {
    const path = ['shards', i];
    if (!isObj(item)) {
      cx.error(path, `expected a mapping with "address", got ${describe(item)}`);
      complete = false;
      return;
    }
    checkKeys(cx, item, path, KNOWN_KEYS.shard, { kind: 'shardKeys', mode });
    if (rule) {
      for (const key of rule.requiredShardKeys) {
        if (item[key] === undefined) cx.error([...path, key], `required when mode is ${mode}`);
      }
    }
    const hp = hostPort(cx, item, 'address', path, 1);
    let name: string | null = null;
    const named = item.name !== undefined;
    if (named) name = requiredString(cx, item, 'name', path);
    // A key the mode does not allow was reported by checkKeys; its value is not checked further.
    const allowed = (key: string): boolean => item[key] !== undefined && (rule === null || rule.shardKeys.includes(key));
    const ranges = allowed('slots') ? parseSlotList(cx, item.slots, [...path, 'slots']) : null;
    const weight = allowed('weight')
      ? int(cx, item, 'weight', path, DEFAULTS.weight, INT_RANGES['shards[].weight'])
      : DEFAULTS.weight;
    if (hp === null || (named && name === null)) { complete = false; return; }

    const address = formatHostPort(hp);
    if (listen && sameAddress(hp, listen)) {
      cx.error([...path, 'address'], `same as listen (${formatHostPort(listen)}); keymux would forward to itself`);
    }
    const addressKey = `${hp.host.toLowerCase()}:${hp.port}`;
    const firstAddr = byAddress.get(addressKey);
    if (firstAddr) {
      cx.error([...path, 'address'],
        `duplicate address ${address}, already used by ${formatPath(firstAddr)}${cx.atLine([...firstAddr, 'address'])}`);
    } else {
      byAddress.set(addressKey, path);
    }
    const effectiveName = name ?? address;
    const firstName = byName.get(effectiveName);
    if (firstName) {
      cx.error([...path, named ? 'name' : 'address'],
        `duplicate shard name ${JSON.stringify(effectiveName)}` +
        (named ? '' : ' (a shard without a name is named by its address)') +
        `, already used by ${formatPath(firstName)}${cx.atLine([...firstName, 'name'])}`);
    } else {
      byName.set(effectiveName, path);
    }
    out.push({
      path,
      ranges,
      config: {
        name: effectiveName,
        named,
        address,
        host: hp.host,
        port: hp.port,
        slots: ranges && rule?.shardKeys.includes('slots') ? mergeRanges(ranges) : null,
        weight,
      },
    });
  });
  if (rule?.check && complete) rule.check(cx, out, ['shards']);
  return complete ? out : null;
}

const RANGE_RE = /^\s*(\d+)\s*-\s*(\d+)\s*$/;
const SLOT_RE = /^\s*(\d+)\s*$/;

/** Parses a `slots` list. Returns null if it is not a list or any item is wrong (each is reported). */
function parseSlotList(cx: Checker, v: unknown, path: ConfigPath): ParsedRange[] | null {
  if (!Array.isArray(v)) {
    cx.error(path, `expected a list of slots and ranges like [0-5460], got ${describe(v)}`);
    return null;
  }
  if (v.length === 0) {
    cx.error(path, 'must list at least one slot or range');
    return null;
  }
  const out: ParsedRange[] = [];
  let ok = true;
  v.forEach((item: unknown, j) => {
    const p = [...path, j];
    let from: number;
    let to: number;
    let single = true;
    let m: RegExpExecArray | null;
    if (typeof item === 'number' && Number.isInteger(item)) {
      from = to = item;
    } else if (typeof item === 'string' && (m = RANGE_RE.exec(item))) {
      from = Number(m[1]);
      to = Number(m[2]);
      single = false;
    } else if (typeof item === 'string' && (m = SLOT_RE.exec(item))) {
      from = to = Number(m[1]);
    } else {
      cx.error(p, `expected a slot number or a range "A-B" (0..${SLOT_COUNT - 1}), got ${describe(item)}`);
      ok = false;
      return;
    }
    const text = single ? `${from}` : `${from}-${to}`;
    const what = single ? `slot ${text}` : `range ${text}`;
    const bad = [from, to].find((n) => n < 0 || n >= SLOT_COUNT);
    if (bad !== undefined) {
      cx.error(p, single
        ? `slot ${bad} is out of range (0..${SLOT_COUNT - 1})`
        : `${what}: slot ${bad} is out of range (0..${SLOT_COUNT - 1})`);
      ok = false;
      return;
    }
    if (from > to) {
      cx.error(p, `${what} is reversed; write ${to}-${from}`);
      ok = false;
      return;
    }
    out.push({ from, to, text, path: p });
  });
  return ok ? out : null;
}

function mergeRanges(ranges: readonly ParsedRange[]): Array<[number, number]> {
  const sorted = ranges.map((r) => [r.from, r.to] as [number, number]).sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

function describeRange(r: ParsedRange): string {
  return r.text.includes('-') ? `range ${r.text}` : `slot ${r.text}`;
}

/** Most gaps listed one per line before the rest are summarised. */
const MAX_GAP_ERRORS = 10;

/**
 * slots mode: every slot 0..16383 is owned by exactly one shard. An overlap is reported on the later range
 * (document order) against the range that first claimed the slots; gaps are reported on `shards`.
 */
function checkSlotCoverage(cx: Checker, shards: readonly ParsedShard[], shardsPath: ConfigPath): void {
  // A shard whose slots are missing or wrong was reported already; coverage would only add noise.
  if (shards.some((s) => s.ranges === null)) return;
  const owner = new Int32Array(SLOT_COUNT).fill(-1);
  const all: Array<{ shard: number; range: ParsedRange }> = [];
  shards.forEach((s, si) => { for (const range of s.ranges ?? []) all.push({ shard: si, range }); });
  all.forEach(({ shard, range }, ri) => {
    const hit = new Set<number>();
    for (let slot = range.from; slot <= range.to; slot++) {
      const o = owner[slot]!;
      if (o === -1) owner[slot] = ri;
      else hit.add(o);
    }
    const what = describeRange(range);
    for (const o of [...hit].sort((a, b) => a - b)) {
      const other = all[o]!;
      cx.error(range.path, other.shard === shard
        ? `${what} overlaps ${describeRange(other.range)} of the same shard`
        : `${what} overlaps shard ${JSON.stringify(shards[other.shard]!.config.name)} (${other.range.text})`);
    }
  });
  const gaps: Array<[number, number]> = [];
  for (let slot = 0; slot < SLOT_COUNT; slot++) {
    if (owner[slot] !== -1) continue;
    const from = slot;
    while (slot + 1 < SLOT_COUNT && owner[slot + 1] === -1) slot++;
    gaps.push([from, slot]);
  }
  for (const [from, to] of gaps.slice(0, MAX_GAP_ERRORS)) {
    cx.error(shardsPath, from === to
      ? `slot ${from} is not assigned to any shard`
      : `slots ${from}-${to} are not assigned to any shard`);
  }
  if (gaps.length > MAX_GAP_ERRORS) {
    const rest = gaps.slice(MAX_GAP_ERRORS);
    const count = rest.reduce((n, [a, b]) => n + b - a + 1, 0);
    cx.error(shardsPath, `and ${rest.length} more unassigned ranges (${count} slots)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients and commands

function parseUsers(cx: Checker, clients: Obj): UserConfig[] {
  const v = clients.users;
  const path = ['clients', 'users'];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    cx.error(path, `expected a list of { name, password }, got ${describe(v)}`);
    return [];
  }
  const out: UserConfig[] = [];
  const seen = new Map<string, ConfigPath>();
  v.forEach((item: unknown, i) => {
    const p = [...path, i];
    if (!isObj(item)) {
      cx.error(p, `expected a mapping with "name" and "password", got ${describe(item)}`);
      return;
    }
    checkKeys(cx, item, p, KNOWN_KEYS.user);
    const name = requiredString(cx, item, 'name', p);
    const password = requiredString(cx, item, 'password', p);
    if (name === null) return;
    const first = seen.get(name);
    if (first) {
      cx.error([...p, 'name'], `duplicate user ${JSON.stringify(name)}, already defined by ${formatPath(first)}` +
        cx.atLine([...first, 'name']));
      return;
    }
    seen.set(name, p);
    if (password !== null) out.push({ name, password });
  });
  return out;
}

function parseDeny(cx: Checker, commands: Obj): string[] {
  const v = commands.deny;
  const path = ['commands', 'deny'];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    cx.error(path, `expected a list of command names, got ${describe(v)}`);
    return [];
  }
  const out = new Set<string>();
  v.forEach((item: unknown, i) => {
    if (typeof item !== 'string') {
      cx.error([...path, i], `expected a command name, got ${describe(item)}`);
    } else if (item.trim() === '') {
      cx.error([...path, i], 'command name must not be empty');
    } else if (/\s/.test(item.trim())) {
      cx.error([...path, i], `command name ${JSON.stringify(item)} must not contain spaces`);
    } else {
      out.add(item.trim().toLowerCase());
    }
  });
  return [...out];
}
