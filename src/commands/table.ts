/**
 * The command table: one row per Redis command and subcommand (arity, flags, legacy key positions, Redis 7 key
 * specs), read from a live server's COMMAND reply or from the generated built-in table (builtin-table.ts), with
 * keymux's policy merged over it from one data object, COMMAND_OVERRIDES: what keymux answers itself, what it
 * splits or broadcasts and how replies merge, and what it refuses and why. Rules, in order: the configured deny
 * list; an override for the exact name, then "container|*", then a refusing override of the container; then
 * generic rules (blocking -> session, pub/sub -> refused, keys that cannot be determined -> refused, no keys ->
 * refused); else keyed. Adding a command means adding a row; changing policy means editing COMMAND_OVERRIDES.
 * Invariants: a built table is immutable; lookup() matches the raw name bytes case-insensitively without
 * creating a string; unknown commands are not in the table (the caller writes the unknown-command error).
 */
import type {
  BeginSearch,
  CommandSpec,
  Dispatch,
  FanoutShape,
  FindKeys,
  KeySpec,
  MergeKind,
  OptionRule,
  OptionScan,
} from './spec.js';
import { compileKeyFinder, type KeyFinder } from './keys.js';
import { BUILTIN_COMMANDS, type BuiltinRow } from './builtin-table.js';

// ---------------------------------------------------------------------------------------------------------------
// Raw rows: what the server says about a command, before keymux's policy.

export interface RawKeySpec {
  /** The server's note, or null. */
  readonly notes: string | null;
  /** Key-spec flags exactly as the server spells them (RW, RO, OW, RM, access, update, insert, delete, ...). */
  readonly flags: readonly string[];
  readonly begin: BeginSearch;
  readonly find: FindKeys;
}

/** One command or subcommand as COMMAND describes it. Subcommands are separate rows named "container|sub". */
export interface RawCommandRow {
  /** Lowercase; "container|sub" for subcommands. */
  readonly name: string;
  readonly arity: number;
  /** Command flags, lowercase (write, readonly, denyoom, blocking, movablekeys, ...). */
  readonly flags: readonly string[];
  readonly firstKey: number;
  readonly lastKey: number;
  readonly step: number;
  /** ACL categories as the server spells them ("@read"). */
  readonly aclCategories: readonly string[];
  /** Command tips ("nondeterministic_output", "request_policy:all_shards"). */
  readonly tips: readonly string[];
  readonly keySpecs: readonly RawKeySpec[];
}

function str(v: unknown, what: string): string {
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  throw new Error(`COMMAND reply: ${what} is not a string (${typeof v})`);
}

function int(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string' || Buffer.isBuffer(v)) {
    const n = Number(String(v));
    if (Number.isInteger(n)) return n;
  }
  throw new Error(`COMMAND reply: ${what} is not an integer (${String(v)})`);
}

function list(v: unknown, what: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  throw new Error(`COMMAND reply: ${what} is not an array`);
}

/** A RESP2 flat key/value array, a RESP3 Map, or a plain object -> Map with lowercase string keys. */
function pairs(v: unknown, what: string): Map<string, unknown> {
  const m = new Map<string, unknown>();
  if (Array.isArray(v)) {
    if (v.length % 2 !== 0) throw new Error(`COMMAND reply: ${what} has an odd number of fields`);
    for (let i = 0; i < v.length; i += 2) m.set(str(v[i], what).toLowerCase(), v[i + 1]);
  } else if (v instanceof Map) {
    for (const [k, val] of v) m.set(str(k, what).toLowerCase(), val);
  } else if (v !== null && typeof v === 'object') {
    for (const [k, val] of Object.entries(v)) m.set(k.toLowerCase(), val);
  } else {
    throw new Error(`COMMAND reply: ${what} is not a map`);
  }
  return m;
}

function parseBegin(v: unknown, what: string): BeginSearch {
  const m = pairs(v, what);
  const type = str(m.get('type'), `${what} type`);
  const spec = m.has('spec') ? pairs(m.get('spec'), `${what} spec`) : new Map<string, unknown>();
  if (type === 'index') return { kind: 'index', pos: int(spec.get('index'), `${what} index`) };
  if (type === 'keyword') {
    return {
      kind: 'keyword',
      keyword: str(spec.get('keyword'), `${what} keyword`),
      startFrom: int(spec.get('startfrom'), `${what} startfrom`),
    };
  }
  return { kind: 'unknown' };
}

function parseFind(v: unknown, what: string): FindKeys {
  const m = pairs(v, what);
  const type = str(m.get('type'), `${what} type`);
  const spec = m.has('spec') ? pairs(m.get('spec'), `${what} spec`) : new Map<string, unknown>();
  if (type === 'range') {
    return {
      kind: 'range',
      lastKey: int(spec.get('lastkey'), `${what} lastkey`),
      step: int(spec.get('keystep'), `${what} keystep`),
      limit: int(spec.get('limit'), `${what} limit`),
    };
  }
  if (type === 'keynum') {
    return {
      kind: 'keynum',
      keyNumIdx: int(spec.get('keynumidx'), `${what} keynumidx`),
      firstKey: int(spec.get('firstkey'), `${what} firstkey`),
      step: int(spec.get('keystep'), `${what} keystep`),
    };
  }
  return { kind: 'unknown' };
}

/** Key specs for a server without them (before Redis 7): the legacy triple as one range; movablekeys -> incomplete. */
function legacyKeySpecs(first: number, last: number, step: number, flags: readonly string[]): RawKeySpec[] {
  if (first <= 0) {
    return flags.includes('movablekeys')
      ? [
          {
            notes: 'keymux: no key specs from the server',
            flags: ['incomplete'],
            begin: { kind: 'unknown' },
            find: { kind: 'unknown' },
          },
        ]
      : [];
  }
  return [
    {
      notes: 'keymux: derived from first/last/step',
      flags: flags.includes('movablekeys') ? ['incomplete'] : [],
      begin: { kind: 'index', pos: first },
      find: { kind: 'range', lastKey: last >= 0 ? last - first : last, step: Math.max(1, step), limit: 0 },
    },
  ];
}

function parseRow(v: unknown, out: RawCommandRow[], container: string | null): void {
  const r = list(v, 'command row');
  const name = str(r[0], 'command name').toLowerCase();
  const what = `command '${name}'`;
  const flags = list(r[2], `${what} flags`).map((f) => str(f, `${what} flag`).toLowerCase());
  const firstKey = int(r[3], `${what} first key`);
  const lastKey = int(r[4], `${what} last key`);
  const step = int(r[5], `${what} step`);
  const keySpecs =
    r.length > 8
      ? list(r[8], `${what} key specs`).map((ks, i): RawKeySpec => {
          const m = pairs(ks, `${what} key spec ${i}`);
          const notes = m.get('notes');
          return {
            notes: notes === undefined || notes === null ? null : str(notes, `${what} notes`),
            flags: list(m.get('flags'), `${what} key spec flags`).map((f) => str(f, `${what} key spec flag`)),
            begin: parseBegin(m.get('begin_search'), `${what} begin_search`),
            find: parseFind(m.get('find_keys'), `${what} find_keys`),
          };
        })
      : legacyKeySpecs(firstKey, lastKey, step, flags);
  if (container !== null && !name.startsWith(`${container}|`)) {
    throw new Error(`COMMAND reply: subcommand '${name}' is not named after its container '${container}'`);
  }
  out.push({
    name,
    arity: int(r[1], `${what} arity`),
    flags,
    firstKey,
    lastKey,
    step,
    aclCategories: list(r[6], `${what} acl categories`).map((c) => str(c, `${what} acl category`)),
    tips: list(r[7], `${what} tips`).map((t) => str(t, `${what} tip`)),
    keySpecs,
  });
  if (container === null) for (const sub of list(r[9], `${what} subcommands`)) parseRow(sub, out, name);
}

/** Canonical order: commands by name, each container followed by its subcommands by name. */
export function sortRows(rows: readonly RawCommandRow[]): RawCommandRow[] {
  const key = (n: string): string => (n.includes('|') ? n.replace('|', '\u0000') : n);
  return [...rows].sort((a, b) => (key(a.name) < key(b.name) ? -1 : key(a.name) > key(b.name) ? 1 : 0));
}

/**
 * Parses the decoded reply of COMMAND (Redis 7 RESP2 flat arrays; RESP3 maps and Buffers also accepted) into
 * rows, one per command and subcommand, in canonical order. Throws on a malformed reply (start-up/refresh path).
 */
export function specsFromCommandReply(reply: unknown[]): RawCommandRow[] {
  const out: RawCommandRow[] = [];
  for (const row of reply) parseRow(row, out, null);
  return sortRows(out);
}

// ---------------------------------------------------------------------------------------------------------------
// The compact text form of key specs used by builtin-table.ts: "FLAGS; BEGIN; FIND[; notes TEXT]" where
// FLAGS is space-separated or "-", BEGIN is "index POS" | "keyword KW STARTFROM" | "unknown", and FIND is
// "range LASTKEY STEP LIMIT" | "keynum KEYNUMIDX FIRSTKEY STEP" | "unknown".

export function formatKeySpec(ks: RawKeySpec): string {
  const b = ks.begin;
  const f = ks.find;
  const begin =
    b.kind === 'index' ? `index ${b.pos}` : b.kind === 'keyword' ? `keyword ${b.keyword} ${b.startFrom}` : 'unknown';
  const find =
    f.kind === 'range'
      ? `range ${f.lastKey} ${f.step} ${f.limit}`
      : f.kind === 'keynum'
        ? `keynum ${f.keyNumIdx} ${f.firstKey} ${f.step}`
        : 'unknown';
  return `${ks.flags.length ? ks.flags.join(' ') : '-'}; ${begin}; ${find}${ks.notes !== null ? `; notes ${ks.notes}` : ''}`;
}

export function parseKeySpec(s: string): RawKeySpec {
  const bad = (): never => {
    throw new Error(`builtin command table: malformed key spec "${s}"`);
  };
  const parts = s.split('; ');
  if (parts.length < 3) bad();
  const notesText = parts.length > 3 ? parts.slice(3).join('; ') : null;
  if (notesText !== null && !notesText.startsWith('notes ')) bad();
  const num = (t: string | undefined): number => {
    const n = Number(t);
    return t !== undefined && t !== '' && Number.isInteger(n) ? n : bad();
  };
  const b = parts[1].split(' ');
  const f = parts[2].split(' ');
  const begin: BeginSearch =
    b[0] === 'index' && b.length === 2
      ? { kind: 'index', pos: num(b[1]) }
      : b[0] === 'keyword' && b.length === 3
        ? { kind: 'keyword', keyword: b[1], startFrom: num(b[2]) }
        : b[0] === 'unknown' && b.length === 1
          ? { kind: 'unknown' }
          : bad();
  const find: FindKeys =
    f[0] === 'range' && f.length === 4
      ? { kind: 'range', lastKey: num(f[1]), step: num(f[2]), limit: num(f[3]) }
      : f[0] === 'keynum' && f.length === 4
        ? { kind: 'keynum', keyNumIdx: num(f[1]), firstKey: num(f[2]), step: num(f[3]) }
        : f[0] === 'unknown' && f.length === 1
          ? { kind: 'unknown' }
          : bad();
  return {
    notes: notesText === null ? null : notesText.slice('notes '.length),
    flags: parts[0] === '-' ? [] : parts[0].split(' '),
    begin,
    find,
  };
}

const words = (s: string): string[] => (s === '' ? [] : s.split(' '));

/** One compact built-in row -> RawCommandRow. */
export function rowFromBuiltin(r: BuiltinRow): RawCommandRow {
  const [name, arity, flags, firstKey, lastKey, step, acl, tips, keySpecs] = r;
  return {
    name,
    arity,
    flags: words(flags),
    firstKey,
    lastKey,
    step,
    aclCategories: words(acl),
    tips: words(tips),
    keySpecs: keySpecs.map(parseKeySpec),
  };
}

/** One RawCommandRow -> compact built-in row (the generator writes these). */
export function builtinFromRow(r: RawCommandRow): BuiltinRow {
  return [
    r.name,
    r.arity,
    r.flags.join(' '),
    r.firstKey,
    r.lastKey,
    r.step,
    r.aclCategories.join(' '),
    r.tips.join(' '),
    r.keySpecs.map(formatKeySpec),
  ];
}

/** The rows of the generated built-in table (builtin-table.ts), in canonical order. */
export function builtinRows(): RawCommandRow[] {
  return sortRows(BUILTIN_COMMANDS.map(rowFromBuiltin));
}

// ---------------------------------------------------------------------------------------------------------------
// keymux policy: data, merged over the rows.

/** One override. For 'refused', `why` completes "-ERR keymux: command 'name' <why>". */
export interface CommandOverride {
  readonly dispatch: Dispatch;
  readonly merge?: MergeKind;
  readonly shape?: FanoutShape;
  readonly why?: string;
  /** all-shards: also sent to every replica keymux knows (CommandSpec.toReplicas). */
  readonly replicas?: boolean;
  /** Keyed commands: options read at run time (see OptionScan). rules: keyword -> [args, action]. */
  readonly options?: {
    readonly start: number;
    readonly stopAt?: string;
    readonly rules: Readonly<Record<string, readonly [number, OptionRule['action']?]>>;
    /** Completes "-ERR keymux: command 'name' <refuse>" for an invocation using a 'refuse' option. */
    readonly refuse: string;
  };
}

const LOCAL: CommandOverride = { dispatch: 'local' };
const refuse = (why: string): CommandOverride => ({ dispatch: 'refused', why });
const allShards = (merge: MergeKind): CommandOverride => ({ dispatch: 'all-shards', merge });
const fanout = (merge: MergeKind, shape: FanoutShape): CommandOverride => ({ dispatch: 'fanout', merge, shape });

const PER_SHARD = 'is not supported: run it on each shard directly';
const TRACKING =
  'is not supported: client-side caching needs invalidations from shared backend connections routed to each ' +
  'client, which keymux does not do yet; read without tracking (RESP3 and its other features work)';
const PUBSUB = 'is not supported by keymux yet (pub/sub)';
const PUBSUB_KIND: CommandOverride = { dispatch: 'pubsub' };
const SESSION: CommandOverride = { dispatch: 'session' };
const ONE_SHARD: CommandOverride = { dispatch: 'one-shard' };
const KILL: CommandOverride = { dispatch: 'kill' };
const DB0 = 'is not supported: keymux serves database 0 only';
const CLUSTER_CLIENT = 'is not supported: keymux is not a cluster node';
const REPLICATION = 'is not supported: replication is set up on each shard directly';
const PERSISTENCE = 'is not supported: persistence is managed on each shard directly';

/**
 * keymux's policy, merged over the rows. Keys are command names, "container|sub" for one subcommand, and
 * "container|*" for the subcommands of a container not listed by name. A refusing override of a container also
 * refuses its subcommands unless they are listed.
 */
/**
 * SORT with a `*` pattern: keymux runs it itself in slots and ring mode (keyspace/sort.ts); what is left refused is
 * cluster mode (as Redis Cluster refuses it) and inside a transaction (a transaction runs on one shard).
 */
const SORT_PATTERN_REFUSED =
  "with a BY or GET pattern containing '*' is not supported in cluster mode or inside MULTI: it names keys on any " +
  'shard (keymux runs it itself in slots and ring mode)';

export const COMMAND_OVERRIDES: Readonly<Record<string, CommandOverride>> = {
  // Answered by keymux itself (src/commands/local.ts).
  ping: LOCAL,
  echo: LOCAL,
  quit: LOCAL,
  select: LOCAL,
  auth: LOCAL,
  hello: LOCAL,
  reset: LOCAL,
  'client|setname': LOCAL,
  'client|getname': LOCAL,
  'client|setinfo': LOCAL,
  'client|id': LOCAL,
  'client|reply': LOCAL,
  // keymux's own client connections (commands/client-list.ts), not the shards'.
  'client|list': LOCAL,
  'client|info': LOCAL,
  'client|kill': LOCAL,
  // Client-side caching: invalidations arrive on the connection that read the key, a backend connection keymux
  // shares between clients, and would have to be routed back to each reader: that is the near cache's design.
  'client|tracking': refuse(TRACKING),
  'client|trackinginfo': refuse(TRACKING),
  'client|caching': refuse(TRACKING),
  'client|getredir': refuse(TRACKING),
  'client|unblock': SESSION,
  'client|help': ONE_SHARD,
  'client|*': refuse(
    'is not supported (of CLIENT, keymux supports SETNAME, GETNAME, SETINFO, ID, INFO, LIST, KILL, REPLY, UNBLOCK and HELP)',
  ),
  command: LOCAL,
  'command|count': LOCAL,
  'command|info': LOCAL,
  'command|docs': LOCAL,
  'command|list': LOCAL,
  // Key positions and their flags as the server states them (keymux routes by the same specs: the live test).
  'command|getkeys': ONE_SHARD,
  'command|getkeysandflags': ONE_SHARD,
  'command|help': ONE_SHARD,
  'acl|whoami': LOCAL,
  'acl|cat': LOCAL,
  'command|*': refuse(
    'is not supported (of COMMAND, keymux supports COUNT, INFO, DOCS, LIST, GETKEYS, GETKEYSANDFLAGS and HELP)',
  ),

  // On a connection of their own (server/dispatch/session.ts); so is every command flagged 'blocking'.
  multi: SESSION,
  exec: SESSION,
  discard: SESSION,
  watch: SESSION,
  unwatch: SESSION,

  // Sent unchanged to every shard; replies merged.
  info: allShards('info'),
  dbsize: allShards('sum'),
  flushall: allShards('all-ok'),
  flushdb: allShards('all-ok'),
  keys: allShards('keys'),
  randomkey: allShards('random'),

  // Scripts and functions: changes go to every shard (cluster mode: every master), reads to one; see
  // keyspace/merges.ts and keyspace/script-memory.ts. EVAL/EVALSHA/FCALL route by their keys (keyed; with
  // numkeys 0, to the keyless shard: dispatch/keyed.ts).
  'script|load': allShards('script-load'),
  'script|exists': allShards('and'),
  // Also to the replicas: EVALSHA_RO runs there, keymux loads scripts there, and Redis does not propagate the FLUSH.
  'script|flush': { ...allShards('script-flush'), replicas: true },
  'script|kill': KILL,
  'script|help': ONE_SHARD,
  'script|debug': refuse('is not supported: debug scripts on a shard directly (the debugger holds its connection)'),
  'function|load': allShards('function-load'),
  'function|delete': allShards('function-delete'),
  'function|flush': allShards('function-flush'),
  'function|restore': allShards('function-restore'),
  'function|kill': KILL,
  'function|list': ONE_SHARD,
  'function|dump': ONE_SHARD,
  'function|stats': ONE_SHARD,
  'function|help': ONE_SHARD,

  // The keyspace walked shard by shard with one cursor (dispatch/scan.ts).
  scan: { dispatch: 'scan' },

  // Keyless commands answered by one shard, always the same (Router.keylessGroup).
  time: ONE_SHARD,
  lastsave: ONE_SHARD,
  lolwut: ONE_SHARD,
  'object|help': ONE_SHARD,
  'xinfo|help': ONE_SHARD,
  'xgroup|help': ONE_SHARD,
  'memory|help': ONE_SHARD,

  // CONFIG: refused unless commands.config_broadcast is on (dispatch/config.ts).
  'config|get': { dispatch: 'config' },
  'config|set': { dispatch: 'config', merge: 'all-ok' },
  'config|resetstat': { dispatch: 'config', merge: 'all-ok' },
  'config|help': ONE_SHARD,
  'config|rewrite': refuse('is not supported: rewrite the configuration file of each shard directly'),

  // Split into one sub-command per shard; replies merged.
  mget: fanout('mget', 'keys'),
  mset: fanout('all-ok', 'key-value'),
  del: fanout('sum', 'keys'),
  unlink: fanout('sum', 'keys'),
  exists: fanout('sum', 'keys'),
  touch: fanout('sum', 'keys'),

  // Keyed, with options read at run time.
  sort: {
    dispatch: 'keyed',
    options: {
      start: 2,
      rules: {
        by: [1, 'pattern'],
        get: [1, 'pattern'],
        limit: [2],
        asc: [0],
        desc: [0],
        alpha: [0],
        store: [1, 'last-key'],
      },
      refuse: SORT_PATTERN_REFUSED,
    },
  },
  sort_ro: {
    dispatch: 'keyed',
    options: {
      start: 2,
      rules: { by: [1, 'pattern'], get: [1, 'pattern'], limit: [2], asc: [0], desc: [0], alpha: [0] },
      refuse: SORT_PATTERN_REFUSED,
    },
  },
  // Waits on a leased connection per shard the client wrote to (server/dispatch/wait.ts).
  wait: { dispatch: 'wait' },
  // With BLOCK on a leased connection (server/dispatch/session.ts); without, keyed.
  xread: {
    dispatch: 'session',
    options: {
      start: 1,
      stopAt: 'streams',
      rules: { count: [1], block: [1] },
      refuse: 'has an option keymux does not support',
    },
  },
  xreadgroup: {
    dispatch: 'session',
    options: {
      start: 1,
      stopAt: 'streams',
      rules: { group: [2], count: [1], block: [1], noack: [0] },
      refuse: 'has an option keymux does not support',
    },
  },
  copy: {
    dispatch: 'keyed',
    options: {
      start: 3,
      rules: { db: [1, 'db'], replace: [0] },
      refuse: 'with a DB other than 0 is not supported: keymux serves database 0 only',
    },
  },
  'memory|usage': { dispatch: 'keyed' },

  // Pub/sub (server/dispatch/pubsub.ts).
  subscribe: PUBSUB_KIND,
  psubscribe: PUBSUB_KIND,
  ssubscribe: PUBSUB_KIND,
  unsubscribe: PUBSUB_KIND,
  punsubscribe: PUBSUB_KIND,
  sunsubscribe: PUBSUB_KIND,
  publish: PUBSUB_KIND,
  spublish: PUBSUB_KIND,
  'pubsub|*': PUBSUB_KIND,

  // Refused.
  config: refuse(
    'is not supported: configure each shard directly (or turn on commands.config_broadcast to send CONFIG GET, SET and RESETSTAT to every shard)',
  ),
  shutdown: refuse(PER_SHARD),
  debug: refuse(PER_SHARD),
  monitor: refuse(PER_SHARD),
  failover: refuse(PER_SHARD),
  replicaof: refuse(REPLICATION),
  slaveof: refuse(REPLICATION),
  sync: refuse(REPLICATION),
  psync: refuse(REPLICATION),
  replconf: refuse(REPLICATION),
  cluster: refuse(CLUSTER_CLIENT),
  readonly: refuse(CLUSTER_CLIENT),
  readwrite: refuse(CLUSTER_CLIENT),
  asking: refuse(CLUSTER_CLIENT),
  'restore-asking': refuse(CLUSTER_CLIENT),
  migrate: refuse('is not supported: keymux does not move keys between shards'),
  move: refuse(DB0),
  swapdb: refuse(DB0),
  save: refuse(PERSISTENCE),
  bgsave: refuse(PERSISTENCE),
  bgrewriteaof: refuse(PERSISTENCE),
  acl: refuse(
    "is not supported: keymux's users and their rules are in its config (clients.users); of ACL it answers WHOAMI and CAT",
  ),
  latency: refuse(PER_SHARD),
  slowlog: refuse(PER_SHARD),
  memory: refuse(PER_SHARD),
  module: refuse(PER_SHARD),
  role: refuse(PER_SHARD),
  pfdebug: refuse(PER_SHARD),
  pfselftest: refuse(PER_SHARD),
};

/**
 * Rows keymux needs that the server generating the built-in table may lack (newer commands it answers
 * itself). Added only when the source rows lack them (and have their container). Same form as builtin-table.ts.
 */
export const EXTRA_ROWS: readonly BuiltinRow[] = [
  // Redis 7.2; clients (node-redis, redis-py) send it on connect.
  [
    'client|setinfo',
    -4,
    'noscript loading stale',
    0,
    0,
    0,
    '@slow @connection',
    'request_policy:all_nodes response_policy:all_succeeded',
    [],
  ],
];

/** Generic rules for commands without an override, in order. */
const NO_KEY = 'has no key to route by';
const UNKNOWN_KEYS = 'has key positions keymux cannot determine (refusing rather than guessing)';
const DENIED = 'is disabled by configuration';
const SCRIPTS_DENIED = 'is disabled by configuration (commands.scripts: deny): a script can touch any key of its shard';
/** What commands.scripts: isolated runs on a session connection: the commands that run a script. */
const SCRIPT_CALLS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);
/** What commands.scripts: deny refuses: the @scripting category, and the SCRIPT and FUNCTION containers. */
const SCRIPT_CONTAINERS = new Set(['script', 'function']);

function isScripting(row: RawCommandRow, container: string | null): boolean {
  return (
    row.aclCategories.includes('@scripting') ||
    SCRIPT_CONTAINERS.has(row.name) ||
    (container !== null && SCRIPT_CONTAINERS.has(container))
  );
}

function errorReply(name: string, why: string): Buffer {
  const text = `-ERR keymux: command '${name}' ${why}\r\n`;
  if (/[\r\n]/.test(text.slice(0, -2))) throw new Error(`command table: reply text for '${name}' has a line break`);
  return Buffer.from(text);
}

// ---------------------------------------------------------------------------------------------------------------
// Byte-keyed lookup.

const MAX_NAME = 64;

/** Open-addressing hash of lowercase names; find() hashes and compares the raw bytes, lowercasing ASCII. */
class ByteNameIndex<T> {
  private readonly mask: number;
  private readonly slots: Int32Array;
  private readonly hashes: Uint32Array;
  private readonly keys: Buffer[];
  private readonly values: T[];
  private readonly maxLen: number;

  constructor(entries: ReadonlyArray<readonly [string, T]>) {
    let cap = 8;
    while (cap < entries.length * 3) cap <<= 1;
    this.mask = cap - 1;
    this.slots = new Int32Array(cap).fill(-1);
    this.hashes = new Uint32Array(entries.length);
    this.keys = [];
    this.values = [];
    let maxLen = 0;
    entries.forEach(([name, value], i) => {
      const key = Buffer.from(name.toLowerCase(), 'latin1');
      const h = hashLower(key, 0, key.length);
      this.keys.push(key);
      this.values.push(value);
      this.hashes[i] = h;
      if (key.length > maxLen) maxLen = key.length;
      let s = h & this.mask;
      while (this.slots[s] !== -1) s = (s + 1) & this.mask;
      this.slots[s] = i;
    });
    this.maxLen = Math.min(maxLen, MAX_NAME);
  }

  find(buf: Buffer, start: number, end: number): T | undefined {
    const len = end - start;
    if (len <= 0 || len > this.maxLen) return undefined;
    const h = hashLower(buf, start, end);
    const slots = this.slots;
    const mask = this.mask;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const e = slots[s];
      if (e === -1) return undefined;
      if (this.hashes[e] !== h) continue;
      const key = this.keys[e];
      if (key.length !== len) continue;
      let i = 0;
      for (; i < len; i++) {
        let c = buf[start + i];
        if (c >= 65 && c <= 90) c |= 32;
        if (c !== key[i]) break;
      }
      if (i === len) return this.values[e];
    }
  }
}

/** FNV-1a (32-bit) of the ASCII-lowercased bytes. */
function hashLower(buf: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    let c = buf[i];
    if (c >= 65 && c <= 90) c |= 32;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

/** Subcommand indexes of the containers built here (or built lazily for hand-built specs). */
const subIndexes = new WeakMap<CommandSpec, ByteNameIndex<CommandSpec>>();

/**
 * The spec to dispatch by: for a container command with a subcommand argument, the subcommand's spec (matched
 * case-insensitively on bytes); for a container without one (args.length < 2) or a plain command, `spec` itself;
 * undefined for an unknown subcommand (see subcommandErrorReply).
 */
export function resolveSubcommand(spec: CommandSpec, args: Buffer[]): CommandSpec | undefined {
  if (spec.subcommands === null || args.length < 2) return spec;
  let idx = subIndexes.get(spec);
  if (idx === undefined) {
    idx = new ByteNameIndex([...spec.subcommands]);
    subIndexes.set(spec, idx);
  }
  const a = args[1];
  return idx.find(a, 0, a.length);
}

/** Redis's reply to an unknown subcommand: "-ERR unknown subcommand 'x'. Try OBJECT HELP." (error path). */
export function subcommandErrorReply(container: CommandSpec, args: Buffer[]): Buffer {
  const sub = (args[1] ?? Buffer.alloc(0))
    .subarray(0, 128)
    .toString('latin1')
    .replace(/[^\x20-\x7e]/g, ' ');
  return Buffer.from(`-ERR unknown subcommand '${sub}'. Try ${container.name.toUpperCase()} HELP.\r\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// Building specs.

interface Decision {
  dispatch: Dispatch;
  merge: MergeKind | null;
  shape: FanoutShape | null;
  refuseReason: Buffer | null;
  options: OptionScan | null;
  finder: KeyFinder;
}

function compileOptions(name: string, o: NonNullable<CommandOverride['options']>): OptionScan {
  return {
    start: o.start,
    stopAt: o.stopAt ?? null,
    rules: Object.entries(o.rules).map(([keyword, [args, action]]): OptionRule => ({
      keyword,
      args,
      action: action ?? 'skip',
    })),
    refuseReply: errorReply(name, o.refuse),
  };
}

function overrideFor(name: string, container: string | null): CommandOverride | undefined {
  const own = COMMAND_OVERRIDES[name];
  if (own !== undefined || container === null) return own;
  const wildcard = COMMAND_OVERRIDES[`${container}|*`];
  if (wildcard !== undefined) return wildcard;
  const parent = COMMAND_OVERRIDES[container];
  return parent?.dispatch === 'refused' ? parent : undefined;
}

function decide(
  row: RawCommandRow,
  keySpecs: readonly KeySpec[],
  container: string | null,
  isContainer: boolean,
  deny: ReadonlySet<string>,
  denyScripts: boolean,
): Decision {
  const name = row.name;
  const plain = (): KeyFinder => compileKeyFinder(keySpecs, null);
  const refused = (why: string): Decision => ({
    dispatch: 'refused',
    merge: null,
    shape: null,
    refuseReason: errorReply(name, why),
    options: null,
    finder: plain(),
  });
  const session = (finder: KeyFinder, options: OptionScan | null): Decision => ({
    dispatch: 'session',
    merge: null,
    shape: null,
    refuseReason: null,
    options,
    finder,
  });
  if (deny.has(name) || (container !== null && deny.has(container))) return refused(DENIED);
  if (denyScripts && isScripting(row, container)) return refused(SCRIPTS_DENIED);
  const o = overrideFor(name, container);
  let options: OptionScan | null = null;
  if (o !== undefined) {
    if (o.dispatch === 'refused') return refused(o.why ?? 'is not supported');
    if (o.dispatch !== 'keyed' && o.dispatch !== 'fanout' && o.dispatch !== 'session') {
      return {
        dispatch: o.dispatch,
        merge: o.merge ?? null,
        shape: null,
        refuseReason: null,
        options: null,
        finder: plain(),
      };
    }
    if (o.options) options = compileOptions(name, o.options);
    if (o.dispatch === 'session') return session(compileKeyFinder(keySpecs, options), options);
  } else if (isContainer) {
    // Reached only when no subcommand is given: Redis's arity error.
    return {
      dispatch: 'refused',
      merge: null,
      shape: null,
      options: null,
      finder: plain(),
      refuseReason: Buffer.from(`-ERR wrong number of arguments for '${name}' command\r\n`),
    };
  } else {
    if (row.flags.includes('blocking')) {
      const finder = compileKeyFinder(keySpecs, null);
      if (!finder.mayHaveKeys) return refused(NO_KEY);
      if (finder.error !== 0) return refused(UNKNOWN_KEYS);
      return session(finder, null);
    }
    if (row.flags.includes('pubsub')) return refused(PUBSUB);
  }
  // keyed or fanout: the keys must be findable.
  const finder = compileKeyFinder(keySpecs, options);
  if (!finder.mayHaveKeys) return refused(NO_KEY);
  if (finder.error !== 0) return refused(UNKNOWN_KEYS);
  if (o !== undefined && o.dispatch === 'fanout') {
    return {
      dispatch: 'fanout',
      merge: o.merge ?? null,
      shape: o.shape ?? 'keys',
      refuseReason: null,
      options,
      finder,
    };
  }
  return { dispatch: 'keyed', merge: null, shape: null, refuseReason: null, options, finder };
}

function toKeySpec(k: RawKeySpec): KeySpec {
  return { begin: k.begin, find: k.find, flags: k.flags.map((f) => f.toLowerCase()) };
}

function buildSpec(
  row: RawCommandRow,
  container: string | null,
  subs: RawCommandRow[] | null,
  deny: ReadonlySet<string>,
  denyScripts: boolean,
): CommandSpec {
  const keySpecs = row.keySpecs.map(toKeySpec);
  const subcommands =
    subs === null
      ? null
      : new Map(
          subs.map(
            (s) => [s.name.slice(row.name.length + 1), buildSpec(s, row.name, null, deny, denyScripts)] as const,
          ),
        );
  const d = decide(row, keySpecs, container, subs !== null, deny, denyScripts);
  const spec: CommandSpec = {
    name: row.name,
    arity: row.arity,
    flags: row.flags,
    firstKey: row.firstKey,
    lastKey: row.lastKey,
    step: row.step,
    keySpecs,
    subcommands,
    dispatch: d.dispatch,
    merge: d.merge,
    fanoutShape: d.shape,
    refuseReason: d.refuseReason,
    readonly: row.flags.includes('readonly'),
    write: row.flags.includes('write'),
    options: d.options,
    keyFinder: d.finder,
    aclCategories: row.aclCategories,
    runsScript: SCRIPT_CALLS.has(row.name),
    toReplicas: d.dispatch === 'all-shards' && overrideFor(row.name, container)?.replicas === true,
  };
  if (subcommands !== null) subIndexes.set(spec, new ByteNameIndex([...subcommands]));
  return spec;
}

export interface CommandTableOptions {
  /** Lowercase command names ("config") or subcommands ("client|kill") to refuse as disabled by configuration. */
  deny: string[];
  /**
   * commands.scripts: 'deny' refuses EVAL, EVALSHA, FCALL (and _RO), SCRIPT and FUNCTION; 'isolated' runs each
   * script call on a session connection of its own (dispatch 'session'); default 'allow'.
   */
  scripts?: 'allow' | 'isolated' | 'deny';
}

export class CommandTable {
  /** Number of top-level commands. */
  readonly size: number;
  /** Deny-list entries that name no command in the table (for a config warning). */
  readonly unknownDenied: readonly string[];
  private readonly index: ByteNameIndex<CommandSpec>;
  private readonly byName: ReadonlyMap<string, CommandSpec>;

  private constructor(specs: CommandSpec[], unknownDenied: string[]) {
    this.size = specs.length;
    this.unknownDenied = unknownDenied;
    this.index = new ByteNameIndex(specs.map((s) => [s.name, s] as const));
    this.byName = new Map(specs.map((s) => [s.name, s]));
  }

  /**
   * Builds the table from rows (live COMMAND or builtinRows()), adding EXTRA_ROWS the rows lack, and merging
   * COMMAND_OVERRIDES and the deny list over them. Throws if a subcommand row has no container row.
   */
  static fromRows(rows: readonly RawCommandRow[], opts: CommandTableOptions): CommandTable {
    const all = new Map<string, RawCommandRow>();
    for (const r of rows) all.set(r.name, r);
    for (const x of EXTRA_ROWS) {
      const bar = x[0].indexOf('|');
      if (!all.has(x[0]) && (bar < 0 || all.has(x[0].slice(0, bar)))) all.set(x[0], rowFromBuiltin(x));
    }
    const top: RawCommandRow[] = [];
    const subsOf = new Map<string, RawCommandRow[]>();
    for (const r of sortRows([...all.values()])) {
      const bar = r.name.indexOf('|');
      if (bar < 0) {
        top.push(r);
        continue;
      }
      const c = r.name.slice(0, bar);
      if (!all.has(c)) throw new Error(`command table: subcommand '${r.name}' has no container row '${c}'`);
      let list = subsOf.get(c);
      if (!list) {
        list = [];
        subsOf.set(c, list);
      }
      list.push(r);
    }
    const deny = new Set(opts.deny.map((d) => d.toLowerCase()));
    const denyScripts = opts.scripts === 'deny';
    let specs = top.map((r) => buildSpec(r, null, subsOf.get(r.name) ?? null, deny, denyScripts));
    if (opts.scripts === 'isolated')
      specs = specs.map((s) =>
        SCRIPT_CALLS.has(s.name) && s.dispatch === 'keyed' ? { ...s, dispatch: 'session' } : s,
      );
    return new CommandTable(specs, [...deny].filter((d) => !all.has(d)).sort());
  }

  /** The table from the built-in rows (no server needed). */
  static builtin(opts: CommandTableOptions = { deny: [] }): CommandTable {
    return CommandTable.fromRows(builtinRows(), opts);
  }

  /** The spec of the command named by buf[start, end), matched case-insensitively without making a string. */
  lookup(buf: Buffer, start: number, end: number): CommandSpec | undefined {
    return this.index.find(buf, start, end);
  }

  /** By name, case-insensitive; "container|sub" names a subcommand. */
  get(name: string): CommandSpec | undefined {
    const n = name.toLowerCase();
    const bar = n.indexOf('|');
    if (bar < 0) return this.byName.get(n);
    return this.byName.get(n.slice(0, bar))?.subcommands?.get(n.slice(bar + 1));
  }

  /** Top-level command names, sorted. */
  names(): string[] {
    return [...this.byName.keys()].sort();
  }
}
