/**
 * The keymux configuration: its types (camelCase, resolved, defaults applied), and the validator that turns a
 * parsed YAML document into a KeymuxConfig or a list of errors naming file, line and what is wrong.
 * A KeymuxConfig is immutable once built; a reload builds a new one.
 *
 * The validator is pure: it takes the plain JS value of the YAML document and a `locate` callback that maps a
 * path (['shards', 1, 'slots']) to a 1-based line (load.ts builds it from the YAML AST). It reports every error
 * it can find, never just the first, each as one line `file:line: path: what is wrong`, sorted by line, and
 * only returns a config when there are none; that config is deeply frozen. Mode-specific sections (`shards`
 * itself: slots and ring modes only) and shard keys are declared in MODE_RULES, so adding a mode means one row
 * there, its section parser and its field in KeymuxConfig, as `cluster` was added.
 */

import { isIP, isIPv6 } from 'node:net';

export type Mode = 'slots' | 'ring' | 'cluster';

export type HashName =
  | 'one_at_a_time'
  | 'md5'
  | 'crc16'
  | 'crc32'
  | 'crc32a'
  | 'fnv1_64'
  | 'fnv1a_64'
  | 'fnv1_32'
  | 'fnv1a_32'
  | 'hsieh'
  | 'murmur'
  | 'jenkins';

export interface HostPort {
  host: string;
  port: number;
}

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

export interface UserConfig {
  name: string;
  password: string;
}

/** Where cluster mode sends read-only commands: masters only, replicas only, or replicas with masters as fallback. */
export type ReadFrom = 'master' | 'replica' | 'prefer-replica';

/** cluster mode: how to find and follow a Redis Cluster. */
export interface ClusterConfig {
  /** Nodes asked for the layout (CLUSTER SHARDS / SLOTS), in order, until one answers. At least one, unique. */
  seeds: Array<{ address: string; host: string; port: number }>;
  readFrom: ReadFrom; // default 'master'
  /** Periodic layout refresh; MOVED and errors also trigger one. default 5000, >= 100 */
  refreshIntervalMs: number;
  /** MOVED/ASK followed per request before the client gets an error. default 5 */
  maxRedirections: number;
  /** TRYAGAIN / CLUSTERDOWN / LOADING: retries with exponential backoff base * 2^n, capped at maxDelayMs. */
  retry: {
    attempts: number; // default 5 (0 = the error goes to the client at once)
    baseDelayMs: number; // default 20
    maxDelayMs: number; // default 500, >= baseDelayMs
  };
}

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
  /** cluster mode: the cluster section; null in other modes (where `shards` is empty instead). */
  cluster: ClusterConfig | null;
  backend: {
    connections: number; // default 1, 1..64
    connectTimeoutMs: number; // default 1000
    timeoutMs: number; // default 2000 (0 = none)
    password: string | null;
    username: string | null;
    /** Operations one connection holds (waiting + unsent) before the clients sending to it are paused. default 8192 */
    maxPending: number;
  };
  clients: {
    max: number; // default 10000
    idleTimeoutS: number; // default 0 (never)
    password: string | null;
    users: UserConfig[];
    /** Requests in flight per client before keymux stops reading it (backpressure). default 1024 */
    maxInflight: number;
    /** Reply bytes buffered for a client (not yet taken by it) before it is disconnected; 0 = no limit. default 64 MiB */
    maxOutputBytes: number;
  };
  limits: {
    maxBulkBytes: number; // default 536870912
    maxArgs: number; // default 1048576
    maxInlineBytes: number; // default 65536
  };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent' };
  commands: { deny: string[] }; // lowercase command names
  metrics: MetricsConfig;
  /** Moving keys when a reload changes their owner (slots and ring modes). */
  migration: { enabled: boolean; stateFile: string | null };
  /** SIGTERM: how long in-flight requests may take to finish before keymux exits anyway. */
  drain: { graceS: number };
}

/** What keymux tracks on the data path for /metrics, /hotkeys and /slowlog (src/metrics/). */
export interface MetricsConfig {
  /** false: no per-command, hit/miss, hot-key or slow-log tracking (shard and proxy counters stay). default true */
  enabled: boolean;
  hotKeys: {
    enabled: boolean; // default true
    k: number; // default 20: keys reported (and the most /metrics series)
    windowS: number; // default 60: sliding window in seconds
    sampleRate: number; // default 0.0625: fraction of key lookups counted, (0, 1]
    export: HotKeyExport; // default 'key'; 'hash': a hash of the key instead of the key
  };
  slowlog: {
    thresholdMs: number; // default 10 (decimals allowed; 0 = every command)
    maxEntries: number; // default 128 (0 = off)
    logKeys: boolean; // default false
  };
}

export type HotKeyExport = 'key' | 'hash';

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary, limits and defaults

export type LogLevel = KeymuxConfig['log']['level'];

/** A path into the YAML document: mapping keys and sequence indexes, e.g. ['shards', 1, 'slots', 0]. */
export type ConfigPath = ReadonlyArray<string | number>;

/** Maps a path to the 1-based line where it is written, or null when the path is not in the document. */
export type Locate = (path: ConfigPath) => number | null;

/** Either a valid, frozen config or every error found (each one line). Test with `if (r.errors)`. */
export type ConfigResult = { config: KeymuxConfig; errors?: undefined } | { errors: string[]; config?: undefined };

export const SLOT_COUNT = 16384;
export const MODES: readonly Mode[] = Object.freeze(['slots', 'ring', 'cluster'] as Mode[]);
export const READ_FROM: readonly ReadFrom[] = Object.freeze(['master', 'replica', 'prefer-replica'] as ReadFrom[]);
export const HASH_NAMES: readonly HashName[] = Object.freeze([
  'one_at_a_time',
  'md5',
  'crc16',
  'crc32',
  'crc32a',
  'fnv1_64',
  'fnv1a_64',
  'fnv1_32',
  'fnv1a_32',
  'hsieh',
  'murmur',
  'jenkins',
] as HashName[]);
export const DISTRIBUTIONS: readonly ['ketama'] = Object.freeze(['ketama'] as const);
export const HOT_KEY_EXPORTS: readonly HotKeyExport[] = Object.freeze(['key', 'hash'] as HotKeyExport[]);
export const LOG_LEVELS: readonly LogLevel[] = Object.freeze([
  'trace',
  'debug',
  'info',
  'warn',
  'error',
  'fatal',
  'silent',
] as LogLevel[]);

/** Largest delay Node's setTimeout accepts (2^31 - 1 ms); larger values fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Inclusive bounds of every integer option (also used by the JSON schema test). */
export const INT_RANGES = Object.freeze({
  'backend.connections': [1, 64],
  'backend.connect_timeout_ms': [0, MAX_TIMER_MS],
  'backend.timeout_ms': [0, MAX_TIMER_MS],
  'backend.max_pending': [1, 100_000_000],
  'clients.max': [1, 1_000_000],
  'clients.idle_timeout_s': [0, Math.floor(MAX_TIMER_MS / 1000)],
  'clients.max_inflight': [1, 1_000_000],
  'clients.max_output_bytes': [0, 2 ** 40],
  'limits.max_bulk_bytes': [1, 2 ** 32],
  'limits.max_args': [1, MAX_TIMER_MS],
  'limits.max_inline_bytes': [1, 2 ** 32],
  'shards[].weight': [1, 1_000_000],
  'cluster.refresh_interval_ms': [100, MAX_TIMER_MS],
  'cluster.max_redirections': [1, 100],
  'cluster.retry.attempts': [0, 100],
  'cluster.retry.base_delay_ms': [1, 60_000],
  'cluster.retry.max_delay_ms': [1, 60_000],
  'metrics.hot_keys.k': [1, 1000],
  'metrics.hot_keys.window_s': [6, 86_400],
  'metrics.slowlog.max_entries': [0, 100_000],
  'drain.grace_s': [0, 3600],
} as const satisfies Record<string, readonly [number, number]>);

/**
 * Inclusive bounds of every non-integer number option (also used by the JSON schema test). A bound of the form
 * [min, max, 'exclusive-min'] excludes min.
 */
export const NUMBER_RANGES = Object.freeze({
  'metrics.hot_keys.sample_rate': [0, 1, 'exclusive-min'],
  'metrics.slowlog.threshold_ms': [0, 3_600_000],
} as const satisfies Record<string, readonly [number, number] | readonly [number, number, 'exclusive-min']>);

/** Defaults for everything optional, as the resolved (camelCase) values. Frozen. */
export const DEFAULTS = deepFreeze({
  listen: { host: '127.0.0.1', port: 6380 } as HostPort,
  admin: null as HostPort | null,
  hashTag: '{}' as string | null,
  weight: 1,
  ring: { hash: 'fnv1a_64' as HashName, distribution: 'ketama' as const },
  cluster: {
    readFrom: 'master' as ReadFrom,
    refreshIntervalMs: 5000,
    maxRedirections: 5,
    retry: { attempts: 8, baseDelayMs: 20, maxDelayMs: 500 },
  },
  backend: {
    connections: 1,
    connectTimeoutMs: 1000,
    timeoutMs: 2000,
    password: null,
    username: null,
    maxPending: 8192,
  },
  clients: {
    max: 10_000,
    idleTimeoutS: 0,
    password: null,
    users: [] as UserConfig[],
    maxInflight: 1024,
    maxOutputBytes: 64 * 1024 * 1024,
  },
  limits: { maxBulkBytes: 536_870_912, maxArgs: 1_048_576, maxInlineBytes: 65_536 },
  log: { level: 'info' as LogLevel },
  commands: { deny: [] as string[] },
  migration: { enabled: true, stateFile: null as string | null },
  drain: { graceS: 10 },
  metrics: {
    enabled: true,
    hotKeys: { enabled: true, k: 20, windowS: 60, sampleRate: 0.0625, export: 'key' as HotKeyExport },
    slowlog: { thresholdMs: 10, maxEntries: 128, logKeys: false },
  },
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
  slots: { sections: ['shards'], shardKeys: ['slots'], requiredShardKeys: ['slots'], check: checkSlotCoverage },
  ring: { sections: ['shards', 'ring'], shardKeys: ['weight'], requiredShardKeys: [] },
  // The cluster says who owns what: no shards; the `cluster` section says where to ask.
  cluster: { sections: ['cluster'], shardKeys: [], requiredShardKeys: [] },
};

/** Every key the YAML may use, per mapping (snake_case). `root` is the top level. */
export const KNOWN_KEYS = deepFreeze({
  root: [
    'listen',
    'admin',
    'mode',
    'hash_tag',
    'shards',
    'ring',
    'cluster',
    'backend',
    'clients',
    'limits',
    'log',
    'commands',
    'metrics',
    'migration',
    'drain',
  ],
  shard: ['name', 'address', 'slots', 'weight'],
  ring: ['hash', 'distribution'],
  cluster: ['seeds', 'read_from', 'refresh_interval_ms', 'max_redirections', 'retry'],
  cluster_retry: ['attempts', 'base_delay_ms', 'max_delay_ms'],
  backend: ['connections', 'connect_timeout_ms', 'timeout_ms', 'password', 'username', 'max_pending'],
  clients: ['max', 'idle_timeout_s', 'password', 'users', 'max_inflight', 'max_output_bytes'],
  user: ['name', 'password'],
  limits: ['max_bulk_bytes', 'max_args', 'max_inline_bytes'],
  log: ['level'],
  commands: ['deny'],
  metrics: ['enabled', 'hot_keys', 'slowlog'],
  hot_keys: ['enabled', 'k', 'window_s', 'sample_rate', 'export'],
  slowlog: ['threshold_ms', 'max_entries', 'log_keys'],
  migration: ['enabled', 'state_file'],
  drain: ['grace_s'],
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

interface Issue {
  line: number | null;
  seq: number;
  text: string;
}

class Checker {
  private readonly issues: Issue[] = [];
  constructor(
    private readonly locate: Locate,
    private readonly source: string,
  ) {}

  get failed(): boolean {
    return this.issues.length > 0;
  }

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
    return [...this.issues].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.seq - b.seq).map((i) => i.text);
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
    if (d < bestDistance && d < lower.length) {
      best = c;
      bestDistance = d;
    }
  }
  if (best !== null || lower.length < 3) return best;
  let bestGap = Infinity;
  for (const c of candidates) {
    if (c.startsWith(lower) || lower.startsWith(c)) {
      const gap = Math.abs(c.length - lower.length);
      if (gap < bestGap) {
        best = c;
        bestGap = gap;
      }
    }
  }
  return best;
}

/** Reports keys of `obj` that are unknown, or known but not allowed in the current mode. */
function checkKeys(
  cx: Checker,
  obj: Obj,
  path: ConfigPath,
  known: readonly string[],
  modeOnly?: { kind: 'sections' | 'shardKeys'; mode: Mode | null },
): void {
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
    cx.error(
      [...path, key],
      near !== null ? `unknown key (did you mean "${near}"?)` : `unknown key; expected one of: ${known.join(', ')}`,
    );
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

function int(
  cx: Checker,
  obj: Obj,
  key: string,
  path: ConfigPath,
  def: number,
  range: readonly [number, number],
): number {
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

/** A number (decimals allowed) within `range`; the third element 'exclusive-min' excludes the minimum. */
function num(
  cx: Checker,
  obj: Obj,
  key: string,
  path: ConfigPath,
  def: number,
  range: readonly [number, number] | readonly [number, number, 'exclusive-min'],
): number {
  const v = obj[key];
  if (v === undefined) return def;
  const [min, max] = range;
  const exclusive = range.length === 3;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    cx.error([...path, key], `expected a number, got ${describe(v)}`);
    return def;
  }
  if (exclusive ? v <= min || v > max : v < min || v > max) {
    cx.error(
      [...path, key],
      exclusive
        ? `must be greater than ${min} and at most ${max}, got ${v}`
        : `must be between ${min} and ${max}, got ${v}`,
    );
    return def;
  }
  return v;
}

function bool(cx: Checker, obj: Obj, key: string, path: ConfigPath, def: boolean): boolean {
  const v = obj[key];
  if (v === undefined) return def;
  if (typeof v !== 'boolean') {
    cx.error([...path, key], `expected true or false, got ${describe(v)}`);
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

function oneOf<T extends string>(
  cx: Checker,
  obj: Obj,
  key: string,
  path: ConfigPath,
  values: readonly T[],
  def: T | null,
): T | null {
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
  cx.error(
    [...path, key],
    `expected one of: ${values.join(', ')}; got ${JSON.stringify(v)}` +
      (near !== null ? ` (did you mean "${near}"?)` : ''),
  );
  return def;
}

function hostPort(cx: Checker, obj: Obj, key: string, path: ConfigPath, minPort: number): HostPort | null {
  const v = obj[key];
  if (v === undefined) {
    cx.error([...path, key], 'required (e.g. "127.0.0.1:7001")');
    return null;
  }
  if (typeof v !== 'string') {
    cx.error(
      [...path, key],
      `expected "host:port" (a string), got ${describe(v)}` +
        (typeof v === 'number' ? `; write e.g. "127.0.0.1:${v}"` : ''),
    );
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
  // cluster mode has no shards (a `shards` key there was reported by checkKeys); with an unknown mode, a document
  // that has a cluster section and no shards is not also told that shards are required.
  const shards =
    mode === 'cluster' || (mode === null && doc.shards === undefined && doc.cluster !== undefined)
      ? []
      : parseShards(cx, doc, mode, listen);
  const cluster = parseCluster(cx, doc, mode, listen);

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
    connectTimeoutMs: int(
      cx,
      b,
      'connect_timeout_ms',
      bp,
      DEFAULTS.backend.connectTimeoutMs,
      INT_RANGES['backend.connect_timeout_ms'],
    ),
    timeoutMs: int(cx, b, 'timeout_ms', bp, DEFAULTS.backend.timeoutMs, INT_RANGES['backend.timeout_ms']),
    password: optionalString(cx, b, 'password', bp),
    username: optionalString(cx, b, 'username', bp),
    maxPending: int(cx, b, 'max_pending', bp, DEFAULTS.backend.maxPending, INT_RANGES['backend.max_pending']),
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
    maxOutputBytes: int(
      cx,
      c,
      'max_output_bytes',
      cp,
      DEFAULTS.clients.maxOutputBytes,
      INT_RANGES['clients.max_output_bytes'],
    ),
  };

  const l = section(cx, doc, 'limits', [], KNOWN_KEYS.limits);
  const lp = ['limits'];
  const limits = {
    maxBulkBytes: int(cx, l, 'max_bulk_bytes', lp, DEFAULTS.limits.maxBulkBytes, INT_RANGES['limits.max_bulk_bytes']),
    maxArgs: int(cx, l, 'max_args', lp, DEFAULTS.limits.maxArgs, INT_RANGES['limits.max_args']),
    maxInlineBytes: int(
      cx,
      l,
      'max_inline_bytes',
      lp,
      DEFAULTS.limits.maxInlineBytes,
      INT_RANGES['limits.max_inline_bytes'],
    ),
  };

  const lg = section(cx, doc, 'log', [], KNOWN_KEYS.log);
  const log = { level: oneOf(cx, lg, 'level', ['log'], LOG_LEVELS, DEFAULTS.log.level)! };

  const commands = { deny: parseDeny(cx, section(cx, doc, 'commands', [], KNOWN_KEYS.commands)) };
  const metrics = parseMetrics(cx, doc);
  const mg = section(cx, doc, 'migration', [], KNOWN_KEYS.migration);
  const migration = {
    enabled: bool(cx, mg, 'enabled', ['migration'], DEFAULTS.migration.enabled),
    stateFile: optionalString(cx, mg, 'state_file', ['migration']),
  };
  const dr = section(cx, doc, 'drain', [], KNOWN_KEYS.drain);
  const drain = { graceS: int(cx, dr, 'grace_s', ['drain'], DEFAULTS.drain.graceS, INT_RANGES['drain.grace_s']) };

  if (mode === null || listen === null || shards === null || cx.failed) return null;
  return {
    source,
    listen,
    admin,
    mode,
    hashTag,
    shards: shards.map((s) => s.config),
    ring,
    cluster,
    backend,
    clients,
    limits,
    log,
    commands,
    metrics,
    migration,
    drain,
  };
}

function parseMetrics(cx: Checker, doc: Obj): MetricsConfig {
  const D = DEFAULTS.metrics;
  const m = section(cx, doc, 'metrics', [], KNOWN_KEYS.metrics);
  const mp = ['metrics'];
  const h = section(cx, m, 'hot_keys', mp, KNOWN_KEYS.hot_keys);
  const hp = ['metrics', 'hot_keys'];
  const s = section(cx, m, 'slowlog', mp, KNOWN_KEYS.slowlog);
  const sp = ['metrics', 'slowlog'];
  return {
    enabled: bool(cx, m, 'enabled', mp, D.enabled),
    hotKeys: {
      enabled: bool(cx, h, 'enabled', hp, D.hotKeys.enabled),
      k: int(cx, h, 'k', hp, D.hotKeys.k, INT_RANGES['metrics.hot_keys.k']),
      windowS: int(cx, h, 'window_s', hp, D.hotKeys.windowS, INT_RANGES['metrics.hot_keys.window_s']),
      sampleRate: num(cx, h, 'sample_rate', hp, D.hotKeys.sampleRate, NUMBER_RANGES['metrics.hot_keys.sample_rate']),
      export: oneOf(cx, h, 'export', hp, HOT_KEY_EXPORTS, D.hotKeys.export)!,
    },
    slowlog: {
      thresholdMs: num(cx, s, 'threshold_ms', sp, D.slowlog.thresholdMs, NUMBER_RANGES['metrics.slowlog.threshold_ms']),
      maxEntries: int(cx, s, 'max_entries', sp, D.slowlog.maxEntries, INT_RANGES['metrics.slowlog.max_entries']),
      logKeys: bool(cx, s, 'log_keys', sp, D.slowlog.logKeys),
    },
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

interface ParsedRange {
  from: number;
  to: number;
  text: string;
  path: ConfigPath;
}

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
    const allowed = (key: string): boolean =>
      item[key] !== undefined && (rule === null || rule.shardKeys.includes(key));
    const ranges = allowed('slots') ? parseSlotList(cx, item.slots, [...path, 'slots']) : null;
    const weight = allowed('weight')
      ? int(cx, item, 'weight', path, DEFAULTS.weight, INT_RANGES['shards[].weight'])
      : DEFAULTS.weight;
    if (hp === null || (named && name === null)) {
      complete = false;
      return;
    }

    const address = formatHostPort(hp);
    if (listen && sameAddress(hp, listen)) {
      cx.error([...path, 'address'], `same as listen (${formatHostPort(listen)}); keymux would forward to itself`);
    }
    const addressKey = `${hp.host.toLowerCase()}:${hp.port}`;
    const firstAddr = byAddress.get(addressKey);
    if (firstAddr) {
      cx.error(
        [...path, 'address'],
        `duplicate address ${address}, already used by ${formatPath(firstAddr)}${cx.atLine([...firstAddr, 'address'])}`,
      );
    } else {
      byAddress.set(addressKey, path);
    }
    const effectiveName = name ?? address;
    const firstName = byName.get(effectiveName);
    if (firstName) {
      cx.error(
        [...path, named ? 'name' : 'address'],
        `duplicate shard name ${JSON.stringify(effectiveName)}` +
          (named ? '' : ' (a shard without a name is named by its address)') +
          `, already used by ${formatPath(firstName)}${cx.atLine([...firstName, 'name'])}`,
      );
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
      cx.error(
        p,
        single
          ? `slot ${bad} is out of range (0..${SLOT_COUNT - 1})`
          : `${what}: slot ${bad} is out of range (0..${SLOT_COUNT - 1})`,
      );
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
  shards.forEach((s, si) => {
    for (const range of s.ranges ?? []) all.push({ shard: si, range });
  });
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
      cx.error(
        range.path,
        other.shard === shard
          ? `${what} overlaps ${describeRange(other.range)} of the same shard`
          : `${what} overlaps shard ${JSON.stringify(shards[other.shard]!.config.name)} (${other.range.text})`,
      );
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
    cx.error(
      shardsPath,
      from === to ? `slot ${from} is not assigned to any shard` : `slots ${from}-${to} are not assigned to any shard`,
    );
  }
  if (gaps.length > MAX_GAP_ERRORS) {
    const rest = gaps.slice(MAX_GAP_ERRORS);
    const count = rest.reduce((n, [a, b]) => n + b - a + 1, 0);
    cx.error(shardsPath, `and ${rest.length} more unassigned ranges (${count} slots)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cluster

/**
 * cluster mode: the `cluster` section (required there; in other modes checkKeys reports it and it is not read).
 * With an unknown mode a present section is still checked, so its errors come out together with the mode's.
 */
function parseCluster(cx: Checker, doc: Obj, mode: Mode | null, listen: HostPort | null): ClusterConfig | null {
  if (mode !== null && !MODE_RULES[mode].sections.includes('cluster')) return null;
  const D = DEFAULTS.cluster;
  const p = ['cluster'];
  if (doc.cluster === undefined || doc.cluster === null) {
    if (mode === 'cluster') {
      cx.error(p, 'required when mode is cluster: a mapping with "seeds", e.g. { seeds: [127.0.0.1:7000] }');
    }
    return null;
  }
  if (!isObj(doc.cluster)) {
    cx.error(p, `expected a mapping with "seeds", got ${describe(doc.cluster)}`);
    return null;
  }
  const c = section(cx, doc, 'cluster', [], KNOWN_KEYS.cluster);
  const seeds = parseSeeds(cx, c, listen);
  const readFrom = oneOf(cx, c, 'read_from', p, READ_FROM, D.readFrom)!;
  const refreshIntervalMs = int(
    cx,
    c,
    'refresh_interval_ms',
    p,
    D.refreshIntervalMs,
    INT_RANGES['cluster.refresh_interval_ms'],
  );
  const maxRedirections = int(cx, c, 'max_redirections', p, D.maxRedirections, INT_RANGES['cluster.max_redirections']);
  const r = section(cx, c, 'retry', p, KNOWN_KEYS.cluster_retry);
  const rp = ['cluster', 'retry'];
  const retry = {
    attempts: int(cx, r, 'attempts', rp, D.retry.attempts, INT_RANGES['cluster.retry.attempts']),
    baseDelayMs: int(cx, r, 'base_delay_ms', rp, D.retry.baseDelayMs, INT_RANGES['cluster.retry.base_delay_ms']),
    maxDelayMs: int(cx, r, 'max_delay_ms', rp, D.retry.maxDelayMs, INT_RANGES['cluster.retry.max_delay_ms']),
  };
  if (retry.maxDelayMs < retry.baseDelayMs) {
    cx.error(
      [...rp, r.max_delay_ms !== undefined ? 'max_delay_ms' : 'base_delay_ms'],
      `max_delay_ms (${retry.maxDelayMs}) must not be less than base_delay_ms (${retry.baseDelayMs})`,
    );
  }
  if (seeds === null) return null;
  return { seeds, readFrom, refreshIntervalMs, maxRedirections, retry };
}

/** cluster.seeds: a non-empty list of unique "host:port" strings. Null when missing or any item is wrong. */
function parseSeeds(cx: Checker, c: Obj, listen: HostPort | null): ClusterConfig['seeds'] | null {
  const v = c.seeds;
  const path = ['cluster', 'seeds'];
  if (v === undefined || v === null) {
    cx.error(path, 'required: a list of cluster nodes to discover the cluster from, e.g. [127.0.0.1:7000]');
    return null;
  }
  if (!Array.isArray(v)) {
    cx.error(
      path,
      `expected a list of "host:port" addresses, got ${describe(v)}` + (typeof v === 'string' ? `; write [${v}]` : ''),
    );
    return null;
  }
  if (v.length === 0) {
    cx.error(path, 'must list at least one seed node');
    return null;
  }
  const out: ClusterConfig['seeds'] = [];
  const seen = new Map<string, ConfigPath>();
  let ok = true;
  v.forEach((item: unknown, i) => {
    const p = [...path, i];
    if (typeof item !== 'string') {
      cx.error(
        p,
        `expected "host:port" (a string), got ${describe(item)}` +
          (typeof item === 'number' ? `; write e.g. "127.0.0.1:${item}"` : ''),
      );
      ok = false;
      return;
    }
    const hp = parseHostPort(item);
    if (typeof hp === 'string') {
      cx.error(p, hp);
      ok = false;
      return;
    }
    const address = formatHostPort(hp);
    if (listen && sameAddress(hp, listen)) {
      cx.error(p, `same as listen (${formatHostPort(listen)}); keymux would discover itself`);
      ok = false;
      return;
    }
    const key = `${hp.host.toLowerCase()}:${hp.port}`;
    const first = seen.get(key);
    if (first) {
      cx.error(p, `duplicate seed ${address}, already listed as ${formatPath(first)}${cx.atLine(first)}`);
      ok = false;
      return;
    }
    seen.set(key, p);
    out.push({ address, host: hp.host, port: hp.port });
  });
  return ok ? out : null;
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
      cx.error(
        [...p, 'name'],
        `duplicate user ${JSON.stringify(name)}, already defined by ${formatPath(first)}` +
          cx.atLine([...first, 'name']),
      );
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
