/**
 * The keymux configuration, declared once (zod 4): configShape() below says every key, its type, range, default
 * and description. From that one declaration come the validator, the TypeScript types (KeymuxConfig: camelCase,
 * defaults applied), DEFAULTS, and the JSON Schema editors use (config/keymux.schema.json, written by
 * `npm run gen:schema`; a test fails when the committed file differs). A KeymuxConfig is deeply frozen once built;
 * a reload builds a new one.
 *
 * The validator is pure: it takes the plain JS value of the YAML document and a `locate` callback that maps a
 * path (['shards', 1, 'slots']) to a 1-based line (load.ts builds it from the YAML AST). It reports every error
 * it finds, never just the first, each as one line `file:line: path: what is wrong`, sorted by line, and only
 * returns a config when there are none. The wording comes from the builders in fields.ts (int, address, section,
 * list...), not from zod.
 *
 * How to add an option or a section: declare it once, in configShape() below, with the builders of fields.ts
 * (int, num, bool, oneOf, text, optionalText, address, section, mapping, list, orEmpty), e.g.
 *   drain: section({ grace_s: int(0, 3600).default(10).describe('Seconds in-flight requests may finish in.') }),
 * A section nests the same way (backend: section({ ..., tls: section({ ... }) })) and must be valid when absent:
 * every option has a .default(), or is optionalText() (null when absent), orEmpty(list(...)) ([] when absent).
 * That is all: KeymuxConfig gets the section with camelCased keys (grace_s -> drain.graceS), DEFAULTS its
 * defaults, the validator its checks and wording; then run `npm run gen:schema` and commit
 * config/keymux.schema.json (a test fails until you do). A check of several values together (uniqueness,
 * max >= base, "needs password") is a `rule` in the section's options, beside its keys (see `backend` and
 * `cluster.retry`), with, if JSON Schema can approximate it, `jsonSchema` keywords for editors. A new kind of
 * value gets a builder in fields.ts that words its own errors (a test feeds every option wrong values and fails
 * on zod's wording). A section or shard key that only some modes allow is also named in MODE_RULES. Keys become
 * camelCase everywhere in the result, so names chosen by users go in lists ([{ name: ... }]), never as keys.
 */

import { z } from 'zod';
import { parseAclRules } from '../security/acl.js';
import {
  address,
  bool,
  describeValue,
  formatHostPort,
  formatIssues,
  int,
  integer,
  isObj,
  list,
  mapping,
  notInMode,
  num,
  oneOf,
  orEmpty,
  optionalText,
  plainData,
  sameAddress,
  section,
  shortOrMapping,
  text,
  type HostPort,
  type Locate,
  type Rule,
  type RuleContext,
} from './fields.js';

import { captureGroups } from '../routing/rules.js';
import { ketamaKey } from '../routing/ketama.js';

export { editDistance, formatPath, parseHostPort, suggest } from './fields.js';
export type { ConfigPath, HostPort, Locate } from './fields.js';

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary and limits

export const SLOT_COUNT = 16384;
export const MODES = Object.freeze(['slots', 'ring', 'cluster'] as const);
export const READ_FROM = Object.freeze(['master', 'replica', 'prefer-replica'] as const);
export const HASH_NAMES = Object.freeze([
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
] as const);
export const DISTRIBUTIONS = Object.freeze(['ketama'] as const);
export const HOT_KEY_EXPORTS = Object.freeze(['key', 'hash'] as const);
export const LOG_LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const);
export const TLS_VERSIONS = Object.freeze(['TLSv1.2', 'TLSv1.3'] as const);
/** Reads the near cache may serve from memory (src/nearcache/); coalescing applies to the same set. */
export const NEAR_CACHE_COMMANDS = Object.freeze(['GET', 'MGET', 'HGET', 'HGETALL', 'EXISTS'] as const);
export const NEAR_CACHE_ADMIT = Object.freeze(['hot', 'all'] as const);

export type Mode = (typeof MODES)[number];
export type HashName = (typeof HASH_NAMES)[number];
/** Where cluster mode sends read-only commands: masters only, replicas only, or replicas with masters as fallback. */
export type ReadFrom = (typeof READ_FROM)[number];
export type HotKeyExport = (typeof HOT_KEY_EXPORTS)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/** Largest delay Node's setTimeout accepts (2^31 - 1 ms); larger values fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

// ---------------------------------------------------------------------------------------------------------------
// Modes

/**
 * What each mode allows beyond the common keys: top-level sections and shard keys, which of them it requires, and
 * a rule over all shards. A key named in no row is allowed in every mode. Adding a mode = adding a row here (and
 * its section in configShape).
 */
interface ModeRule {
  sections: readonly string[];
  requiredSections: readonly string[];
  shardKeys: readonly string[];
  requiredShardKeys: readonly string[];
  checkShards?: Rule<ShardDoc[]>;
}

const MODE_RULES: Readonly<Record<Mode, ModeRule>> = {
  slots: {
    sections: ['shards', 'sentinel', 'read_from', 'replica_checks', 'routing'],
    requiredSections: ['shards'],
    shardKeys: ['slots'],
    requiredShardKeys: ['slots'],
    checkShards: (shards, cx) => checkSlotCoverage(shards, cx),
  },
  ring: {
    sections: ['shards', 'ring', 'sentinel', 'read_from', 'replica_checks', 'routing'],
    requiredSections: ['shards'],
    shardKeys: ['weight'],
    requiredShardKeys: [],
    checkShards: (shards, cx) => checkRingKeys(shards, cx),
  },
  // The cluster says who owns what: no shards; the `cluster` section says where to ask.
  cluster: { sections: ['cluster'], requiredSections: ['cluster'], shardKeys: [], requiredShardKeys: [] },
};

type ModeKind = 'sections' | 'shardKeys';

function modesAllowing(kind: ModeKind, key: string): Mode[] {
  return MODES.filter((m) => MODE_RULES[m][kind].includes(key));
}

function modesRequiring(kind: ModeKind, key: string): Mode[] {
  const required = kind === 'sections' ? 'requiredSections' : 'requiredShardKeys';
  return MODES.filter((m) => MODE_RULES[m][required].includes(key));
}

/**
 * A key only some modes allow (named in MODE_RULES). Where the mode requires it: `schema`; where it allows it:
 * `optional`; where it does not: an error when written, read as `outside`. With an unknown mode (already an error)
 * it is checked when written and never required, so its errors come out with the mode's.
 */
function modal<T extends z.ZodType, O>(
  mode: Mode | null,
  kind: ModeKind,
  key: string,
  schema: T,
  outside: O,
  optional: z.ZodType,
): z.ZodType<z.output<T> | O> {
  const modes = modesAllowing(kind, key);
  if (mode === null) return optional as z.ZodType<z.output<T>>;
  if (!modes.includes(mode)) return notInMode(modes, mode, outside);
  return (modesRequiring(kind, key).includes(mode) ? schema : optional) as z.ZodType<z.output<T>>;
}

// ---------------------------------------------------------------------------------------------------------------
// The declaration

const SHARDS_REQUIRED = 'required: a list of shards, e.g. [{ address: "127.0.0.1:7001" }]';

/** Every top-level key, in the order editors and "expected one of" list them. */
function configShape(mode: Mode | null) {
  const ring = section({
    hash: oneOf(HASH_NAMES).default('fnv1a_64').describe('Key hash function (twemproxy names).'),
    distribution: oneOf(DISTRIBUTIONS).default('ketama').describe('Point placement on the ring.'),
  });
  const cluster = clusterMapping();
  const sentinel = sentinelMapping();
  const readFrom = oneOf(READ_FROM).default('master');
  const replicaChecks = replicaChecksSection();
  const shards = shardList(mode);
  const routing = routingRules();
  return {
    listen: address(0)
      .nullable()
      .prefault('127.0.0.1:6380')
      .describe(
        'Where clients connect in plain text, "host:port" ([v6]:port for IPv6; port 0 = any free port); null = no ' +
          'plain-text port (then tls.enabled must be true).',
      ),
    listen_unix: shortOrMapping(unixSocketPath(), unixListenMapping())
      .transform(unixListenSetting)
      .prefault(null)
      .describe(
        'A Unix domain socket clients connect to, beside listen and tls.listen (README "Unix socket"): an absolute ' +
          'path, or a mapping with path and mode (the octal file mode as a quoted string, e.g. "0660"); null = none. ' +
          'Changing it needs a restart.',
      ),
    admin: shortOrMapping(address(0), adminMapping())
      .transform(adminSetting)
      .prefault(null)
      .describe(
        'HTTP admin server (/metrics, /healthz, /readyz, /shards, /hotkeys, /slowlog, /config, /reload): ' +
          '"host:port", or a mapping with address, token_file, public_metrics and tls; null = none.',
      ),
    tls: section(
      {
        enabled: bool().default(false).describe('Accept TLS clients on tls.listen (keymux terminates TLS).'),
        listen: address(0)
          .nullable()
          .prefault(null)
          .describe('Where TLS clients connect, "host:port"; required when enabled.'),
        ...serverTlsFields('clients'),
      },
      {
        rule: (t, cx) => {
          requireWhenEnabled(t, cx);
          if (t.enabled && t.listen === null && cx.ok(['listen']))
            cx.error(['listen'], 'required when enabled is true (e.g. "127.0.0.1:6390")');
        },
      },
    ).describe('TLS for clients: keymux terminates TLS on its own port (beside or instead of listen).'),
    mode: oneOf(MODES).describe(
      'How keys map to shards: slots (Redis Cluster hash slots over the listed shards), ring (ketama), or cluster ' +
        '(a real Redis Cluster, discovered from its seeds; no shards).',
    ),
    hash_tag: hashTag().describe('Two characters delimiting the hashed part of a key; "" or null = no hash tag.'),
    shards: modal(mode, 'sections', 'shards', shards, [], shards.optional()).describe(
      'Slots and ring modes (required there; an error in cluster mode): the shards; names and addresses unique. ' +
        'In slots mode the slots of all shards cover 0..16383 exactly once.',
    ),
    ring: modal(mode, 'sections', 'ring', ring, ring.parse(undefined), ring).describe(
      'Ring mode only: the consistent-hash ring.',
    ),
    routing: modal(mode, 'sections', 'routing', routing, [], routing).describe(
      'Slots and ring modes: which part of a key routes it, per key pattern, for keys without {hash tags} ' +
        '(e.g. [{ match: "^bull:([^:]+):", by: 1 }]: keys matching the pattern route by capture group 1, all ' +
        'others as usual). Tried in order, first match wins. Not in cluster mode, where Redis Cluster decides ' +
        "each key's slot by its own hash tag rule.",
    ),
    cluster: modal(mode, 'sections', 'cluster', cluster, null, cluster.nullish()).describe(
      'Cluster mode only (required there): how to find and follow the Redis Cluster.',
    ),
    sentinel: modal(mode, 'sections', 'sentinel', sentinel, null, sentinel.nullish()).describe(
      'Slots and ring modes: the Redis Sentinels that name the primaries of shards written with sentinel_master ' +
        '(required when a shard has one).',
    ),
    read_from: modal(mode, 'sections', 'read_from', readFrom, 'master' as ReadFrom, readFrom).describe(
      'Slots and ring modes: where read-only commands go: master, replica (never the primary; a clear error ' +
        'when no replica is usable) or prefer-replica (the primary when none is). A shard may override it. ' +
        'Writes always go to the primary.',
    ),
    replica_checks: modal(
      mode,
      'sections',
      'replica_checks',
      replicaChecks,
      replicaChecks.parse(undefined),
      replicaChecks,
    ).describe(
      'Slots and ring modes: how keymux decides a replica may serve reads (INFO replication and persistence ' +
        'of each replica, and of its primary, polled).',
    ),
    backend: section(
      {
        connections: int(1, 64).default(1).describe('Sockets per shard.'),
        connect_timeout_ms: int(0, MAX_TIMER_MS).default(1000).describe('Connect timeout in milliseconds.'),
        timeout_ms: int(0, MAX_TIMER_MS).default(2000).describe('Per-request reply timeout in milliseconds; 0 = none.'),
        busy_reply_threshold_ms: int(0, MAX_TIMER_MS)
          .default(5000)
          .describe(
            "The shards' busy-reply-threshold (lua-time-limit; Redis's default 5000): a shard running a script " +
              'reads a SCRIPT KILL / FUNCTION KILL only once the script has run this long. keymux waits for each ' +
              "shard's answer to a KILL this long plus timeout_ms (after connecting), then answers an error naming " +
              "the shard; with timeout_ms 0 it waits without bound. Raise it with the shards' setting.",
          ),
        password: optionalText().describe('AUTH password for the shards; null = none.'),
        password_file: optionalText().describe(
          'File holding the AUTH password for the shards (e.g. a mounted Secret), instead of password; re-read on ' +
            'reload and when the file changes.',
        ),
        username: optionalText().describe('ACL user name for the shards; requires password or password_file.'),
        max_pending: int(1, 100_000_000)
          .default(8192)
          .describe('Operations one connection holds (waiting + unsent) before the clients sending to it are paused.'),
        session_connections: section({
          max: int(1, 1_000_000)
            .default(1024)
            .describe(
              'Connections per shard (cluster: per master) that clients lease for transactions, WATCH and blocking ' +
                'commands, leased and idle together; past it such a command gets an error.',
            ),
          max_idle: int(0, 1_000_000).default(64).describe('Idle session connections kept per shard for reuse.'),
          idle_timeout_s: int(0, 86_400)
            .default(60)
            .describe('An idle session connection is closed after this many seconds; 0 = kept (up to max_idle).'),
        }).describe('Dedicated connections leased by clients for MULTI/EXEC, WATCH and blocking commands.'),
        tls: section(
          {
            enabled: bool().default(false).describe('Connect to the shards over TLS (never falls back to plain text).'),
            ca_file: optionalText().describe(
              "PEM CA certificates the shards' certificates must chain to; null = the system's CAs.",
            ),
            cert_file: optionalText().describe(
              'PEM client certificate for shards that ask for one (tls-auth-clients); with key_file.',
            ),
            key_file: optionalText().describe('PEM private key of cert_file.'),
            servername: optionalText().describe(
              "Name sent as SNI and checked against the shards' certificates; null = each shard's host.",
            ),
            verify: bool()
              .default(true)
              .describe("Check the shards' certificates (chain and name); false encrypts without authenticating."),
            min_version: oneOf(TLS_VERSIONS).default('TLSv1.2').describe('Oldest TLS version used.'),
          },
          { rule: (t, cx) => bothOrNeither(t, cx) },
        ).describe('TLS to the shards (and, in cluster mode, to every node discovered).'),
      },
      {
        rule: (b, cx) => {
          if (cx.ok(['username']) && b.username !== null && b.password === null && b.password_file === null) {
            cx.error(['username'], 'requires backend.password or backend.password_file (Redis ACL AUTH needs both)');
          }
          onlyOne(b, cx, 'password', 'password_file');
        },
        jsonSchema: {
          dependentSchemas: { username: { anyOf: [{ required: ['password'] }, { required: ['password_file'] }] } },
        },
      },
    ).describe('Connections from keymux to each shard.'),
    clients: section(
      {
        max: int(1, 1_000_000).default(10_000).describe('Most clients connected at once.'),
        idle_timeout_s: int(0, Math.floor(MAX_TIMER_MS / 1000))
          .default(0)
          .describe('Close clients idle this many seconds; 0 = never.'),
        password: optionalText().describe('Password clients must AUTH with; null = none.'),
        password_file: optionalText().describe(
          'File holding the password clients must AUTH with (e.g. a mounted Secret), instead of password; re-read ' +
            'on reload and when the file changes.',
        ),
        users: userList().describe(
          'Users with their passwords and permissions (Redis ACL rules): AUTH name password. A user named ' +
            '"default" is the one of AUTH password (and, with nopass, of connections that never AUTH).',
        ),
        auth_failures: section({
          delay_after: int(0, 1_000_000)
            .default(3)
            .describe('Failed AUTHs from one client address before its AUTHs wait (see delay_ms).'),
          delay_ms: int(0, 60_000)
            .default(100)
            .describe(
              'Past delay_after failures, a failed AUTH from the address is answered this much later (with delay_correct, every AUTH waits this long before its password is checked), doubling with each further failure.',
            ),
          max_delay_ms: int(0, 600_000).default(5_000).describe('The longest an AUTH waits.'),
          delay_correct: bool()
            .default(false)
            .describe(
              'Also make a correct AUTH from a penalised address wait before its password is checked, so that a ' +
                'guess on a connection of its own learns nothing from how soon it is answered. Off by default: ' +
                'every client on the address waits too (a sidecar: every container on 127.0.0.1), so one client ' +
                'with a stale password would keep the healthy ones waiting up to max_delay_ms.',
            ),
          close_after: int(0, 1_000_000)
            .default(10)
            .describe('Close a connection after this many failed AUTHs on it; 0 = never.'),
        }).describe(
          'Slowing down password guessing: failures are counted per client address (forgotten after a quiet minute).',
        ),
        max_inflight: int(1, 1_000_000)
          .default(1024)
          .describe('Commands in flight per client before keymux stops reading it.'),
        max_output_bytes: int(0, 2 ** 40)
          .default(64 * 1024 * 1024)
          .describe(
            'Reply bytes buffered for a client that has not read them before it is disconnected; 0 = no limit.',
          ),
        partial_command_timeout_s: int(0, Math.floor(MAX_TIMER_MS / 1000))
          .default(30)
          .describe(
            'Close a client that has sent part of a command and not completed it within this many seconds ' +
              '(slowloris); 0 = never.',
          ),
        max_new_connections_per_s: int(0, 10_000_000)
          .default(0)
          .describe(
            'New client connections accepted per second (a token bucket holding one second of them); the ' +
              'others are refused and closed at once; 0 = no limit.',
          ),
      },
      {
        rule: (c, cx) => {
          onlyOne(c, cx, 'password', 'password_file');
          if (!cx.ok(['users']) || (c.password === null && c.password_file === null)) return;
          const i = c.users.findIndex((u) => u.name === 'default');
          if (i >= 0) {
            cx.error(
              ['users', i, 'name'],
              'the default user is already defined by clients.password(_file); give its password in one place',
            );
          }
        },
      },
    ).describe('Client connections to keymux.'),
    limits: section({
      max_bulk_bytes: int(1, 2 ** 32)
        .default(536_870_912)
        .describe('Largest argument in bytes.'),
      max_args: int(1, MAX_TIMER_MS).default(1_048_576).describe('Most arguments per command.'),
      max_inline_bytes: int(1, 2 ** 32)
        .default(65_536)
        .describe('Longest inline command in bytes.'),
      max_buffered_bytes: int(0, 2 ** 44)
        .default(1024 * 1024 * 1024)
        .describe(
          'Bytes held for all clients together: unfinished commands being received and replies not yet taken by ' +
            'their clients. Past it the clients holding the most are disconnected until the total is back under ' +
            'it (as Redis maxmemory-clients); 0 = no limit.',
        ),
    }).describe('Limits on client input.'),
    log: section({ level: oneOf(LOG_LEVELS).default('info').describe('Log level.') }).describe('Logging.'),
    commands: section({
      deny: denyList().describe('Commands refused by keymux (case-insensitive).'),
      scripts: oneOf(['allow', 'isolated', 'deny'] as const)
        .default('allow')
        .describe(
          'allow: scripts ride the shared pipelined connections. isolated: each EVAL, EVALSHA, FCALL (and _RO form) ' +
            "runs on a session connection of its own, alone in its client's order, so a long-running script holds " +
            "only its client's connection: other clients reach the shard and get its own BUSY reply (and SCRIPT " +
            'KILL / FUNCTION KILL), as on Redis; costs a round trip per script (no pipelining of scripts). ' +
            'deny: refuse EVAL, EVALSHA, FCALL (and their _RO forms), SCRIPT and FUNCTION. A script can touch any ' +
            'key of its shard, so only trusted users should run them (per user: -@scripting).',
        ),
      ping: oneOf(['local', 'shards'] as const)
        .default('local')
        .describe(
          'local: keymux answers PING itself (a health check that one busy or dead shard cannot fail). shards: PING ' +
            'goes to every shard (every master in cluster mode) and answers as they do when they agree, else the ' +
            'first error (BUSY, LOADING, an unreachable shard), as one Redis server would. In MULTI and in ' +
            'subscribed mode PING is always answered by keymux.',
        ),
      config_broadcast: bool()
        .default(false)
        .describe(
          'Operator switch: CONFIG GET/SET/RESETSTAT from clients go to every shard (SET answers OK only if every ' +
            'shard did; GET is answered by one shard). Off: CONFIG is refused. Any client can then change every ' +
            "shard's settings: turn it on only where every client is trusted (e.g. to run Redis's own test suite).",
        ),
    }).describe('Command policy.'),
    metrics: section({
      enabled: bool()
        .default(true)
        .describe('false = no per-command, hit/miss, hot-key or slow-log tracking (shard and proxy counters stay).'),
      hot_keys: section({
        enabled: bool().default(true).describe('Track hot keys.'),
        k: int(1, 1000).default(20).describe('Keys reported in /hotkeys and at most this many /metrics series.'),
        window_s: int(6, 86_400).default(60).describe('Sliding window in seconds (moves in sixths).'),
        sample_rate: num(0, 1, { exclusiveMin: true })
          .default(0.0625)
          .describe('Fraction of key lookups counted (0 < rate <= 1); counts are scaled back up.'),
        export: oneOf(HOT_KEY_EXPORTS)
          .default('key')
          .describe('Show the key itself, or the first 16 hex digits of its SHA-256.'),
        read_from_replicas: bool()
          .default(false)
          .describe(
            "Slots and ring modes: reads of keys in the current top-K go to their shard's replicas even under " +
              'read_from: master (the primary when no replica is usable).',
          ),
      }).describe('Streaming top-K of the most requested keys over a sliding window.'),
      slowlog: section({
        threshold_ms: num(0, 3_600_000)
          .default(10)
          .describe('Client-observed latency threshold in milliseconds (decimals allowed; 0 = every command).'),
        max_entries: int(0, 100_000).default(128).describe('Entries kept (newest); 0 = off.'),
        log_keys: bool().default(false).describe('Record the keys of slow commands (never values).'),
      }).describe('Recent commands at or above a latency threshold (GET /slowlog).'),
    }).describe('What keymux tracks for /metrics, /hotkeys and /slowlog (docs/observability.md).'),
    near_cache: section({
      enabled: bool()
        .default(false)
        .describe('Serve hot reads from keymux memory, invalidated by the shards (CLIENT TRACKING BCAST).'),
      max_bytes: int(1024, 2 ** 40)
        .default(67_108_864)
        .describe('Memory bound for cached keys, values and request bytes (per-entry overhead counted); LRU eviction.'),
      max_entry_bytes: int(1, 2 ** 30)
        .default(65_536)
        .describe('Replies larger than this many bytes are never cached.'),
      admit: oneOf(NEAR_CACHE_ADMIT)
        .default('hot')
        .describe('hot: cache only keys in the hot-key top-K (metrics.hot_keys) | all: every key read.'),
      ttl_ms: int(0, MAX_TIMER_MS)
        .default(0)
        .describe("Upper bound on an entry's age in milliseconds; 0 = until invalidated or the key's own TTL."),
      commands: list(oneOf(NEAR_CACHE_COMMANDS), {
        expected: (v) => `expected a list of command names, got ${describeValue(v)}`,
      })
        .default([...NEAR_CACHE_COMMANDS])
        .describe('Reads served from the cache and coalesced (a subset of GET, MGET, HGET, HGETALL, EXISTS).'),
      coalesce: bool()
        .default(true)
        .describe(
          'Identical reads of one key in flight at once from different clients share one shard request ' +
            '(works with or without the cache).',
        ),
    }).describe('Near cache of hot keys and request coalescing (README "Near cache and request coalescing").'),
    migration: section({
      enabled: bool().default(true).describe('Migrate keys to their new owner after a reload (default true).'),
      state_file: optionalText().describe(
        'File recording an unfinished migration so a restarted keymux resumes it (null: no resume across restarts).',
      ),
    }).describe('Moving keys when a reload changes which shard owns them (slots and ring modes).'),
    drain: section({
      grace_s: int(0, 3600)
        .default(10)
        .describe('Seconds in-flight requests may take to finish before keymux exits anyway.'),
    }).describe('Graceful shutdown on SIGTERM.'),
    workers: workerCount()
      .default(1)
      .describe(
        'Processes serving clients behind the one client port (README "Workers"): an integer >= 1, or "auto" = ' +
          'one per CPU (os.availableParallelism()). 1 (default) = one process, as always. Changing it needs a restart.',
      ),
    workers_heartbeat_timeout_ms: int(0, 600_000)
      .default(5000)
      .describe(
        'workers > 1 (README "Workers"): a worker whose event loop has answered none of the primary\'s heartbeats ' +
          '(sent every second, or every quarter of this bound when shorter) for this many milliseconds is declared hung, killed (SIGKILL) and replaced; 0 = never.',
      ),
  };
}

/** Linux's sun_path holds 108 bytes, the last a NUL: a longer path cannot be bound. */
const UNIX_PATH_MAX_BYTES = 107;

/** `listen_unix` (or its `path`): an absolute path short enough to bind. */
function unixSocketPath() {
  return text()
    .check((payload) => {
      const p = payload.value;
      if (!p.startsWith('/')) {
        payload.issues.push({
          code: 'custom',
          message: `must be an absolute path, got ${JSON.stringify(p)}`,
          input: p,
        });
      } else if (Buffer.byteLength(p) > UNIX_PATH_MAX_BYTES) {
        payload.issues.push({
          code: 'custom',
          message: `too long for a Unix socket (${Buffer.byteLength(p)} bytes; at most ${UNIX_PATH_MAX_BYTES})`,
          input: p,
        });
      }
    })
    .meta({ pattern: '^/' });
}

/**
 * A file mode as an octal string ("0660", "660", "0o660") up to 0777. A YAML number is refused: YAML 1.2 reads
 * 0660 as the decimal 660, so a number cannot say which the operator meant.
 */
function fileMode() {
  const octal = /^(0o?)?[0-7]{1,4}$/;
  return z
    .string({
      error: (iss) =>
        `expected an octal mode as a quoted string (e.g. "0660"), got ${describeValue(iss.input)}` +
        (typeof iss.input === 'number' ? '; quote it (YAML reads an unquoted 0660 as the decimal number 660)' : ''),
    })
    .transform((s, ctx): number => {
      const mode = octal.test(s) ? parseInt(s.replace(/^0o/, ''), 8) : NaN;
      if (!(mode >= 0 && mode <= 0o777)) {
        ctx.issues.push({
          code: 'custom',
          message: `expected an octal mode 0..0777 (e.g. "0660"), got "${s}"`,
          input: s,
        });
        return z.NEVER;
      }
      return mode;
    })
    .meta({ pattern: '^(0o?)?[0-7]{1,4}$' });
}

function unixListenMapping() {
  return mapping(
    {
      path: unixSocketPath().describe('The socket file: an absolute path (its directory must exist).'),
      mode: fileMode()
        .nullable()
        .prefault(null)
        .describe(
          'The socket file\'s mode, an octal string ("0660": owner and group may connect); null = as created ' +
            '(0777 less the umask).',
        ),
    },
    { what: 'a mapping with "path"' },
  );
}

type UnixListenDoc = z.output<ReturnType<typeof unixListenMapping>>;

/** `listen_unix:` as keymux uses it: { path, mode } (mode null for the short form). */
function unixListenSetting(v: string | UnixListenDoc | null): { path: string; mode: number | null } | null {
  if (v === null) return null;
  return typeof v === 'string' ? { path: v, mode: null } : v;
}

/** `workers`: an integer 1..1024 or "auto". */
function workerCount() {
  const error = (iss: { input?: unknown }) => `expected an integer >= 1 or "auto", got ${describeValue(iss.input)}`;
  return z.union([int(1, 1024), z.literal('auto', { error })], { error });
}

/** The whole document for one mode (null: the mode itself is wrong), with the rules that span sections. */
function configMapping(mode: Mode | null) {
  return mapping(configShape(mode), {
    rule: (doc, cx) => {
      // Addresses that are keymux's own.
      const listen = cx.ok(['listen']) ? doc.listen : null;
      if (listen && doc.admin && cx.ok(['admin']) && sameAddress(doc.admin, listen)) {
        cx.error(['admin'], `same address as listen (${formatHostPort(listen)})`);
      }
      const tlsListen = cx.ok(['tls']) && doc.tls.enabled ? doc.tls.listen : null;
      if (tlsListen && listen && sameAddress(tlsListen, listen)) {
        cx.error(['tls', 'listen'], `same address as listen (${formatHostPort(listen)})`);
      }
      if (tlsListen && doc.admin && cx.ok(['admin']) && sameAddress(doc.admin, tlsListen)) {
        cx.error(['admin'], `same address as tls.listen (${formatHostPort(tlsListen)})`);
      }
      if (
        cx.ok(['listen']) &&
        doc.listen === null &&
        cx.ok(['tls']) &&
        !doc.tls.enabled &&
        cx.ok(['listen_unix']) &&
        doc.listen_unix === null
      ) {
        cx.error(
          ['listen'],
          'null (no plain-text port) needs tls.enabled: true or listen_unix, or clients could not connect at all',
        );
      }
      if (listen && Array.isArray(doc.shards)) {
        doc.shards.forEach((shard, i) => {
          const path = ['shards', i, 'address'];
          if (cx.ok(path) && shard.address !== undefined && sameAddress(shard.address, listen)) {
            cx.error(path, `same as listen (${formatHostPort(listen)}); keymux would forward to itself`);
          }
        });
      }
      if (listen && isObj(doc.cluster) && Array.isArray(doc.cluster.seeds)) {
        doc.cluster.seeds.forEach((seed, i) => {
          const path = ['cluster', 'seeds', i];
          if (cx.ok(path) && sameAddress(seed, listen)) {
            cx.error(path, `same as listen (${formatHostPort(listen)}); keymux would discover itself`);
          }
        });
      }
      // sentinel_master shards need sentinels to ask.
      if (Array.isArray(doc.shards) && (doc.sentinel === null || doc.sentinel === undefined) && cx.ok(['sentinel'])) {
        doc.shards.forEach((shard, i) => {
          if (shard.sentinel_master !== undefined && cx.ok(['shards', i, 'sentinel_master'])) {
            cx.error(
              ['shards', i, 'sentinel_master'],
              'needs a top-level sentinel section (sentinel: { sentinels: [host:port, ...] })',
            );
          }
        });
      }
      // admit: hot reads the hot-key tracker; without it nothing would ever be cached.
      if (
        cx.ok(['near_cache']) &&
        cx.ok(['metrics']) &&
        doc.near_cache.enabled &&
        doc.near_cache.admit === 'hot' &&
        (!doc.metrics.enabled || !doc.metrics.hot_keys.enabled)
      ) {
        cx.error(
          ['near_cache', 'admit'],
          'hot needs hot-key tracking (metrics.enabled and metrics.hot_keys.enabled true); or use admit: all',
        );
      }
      // With an unknown mode, a document with a cluster section and no shards is not also told shards are required.
      if (mode === null && doc.shards === undefined && doc.cluster === undefined) cx.error(['shards'], SHARDS_REQUIRED);
    },
  }).meta({
    title: 'keymux configuration',
    description:
      "YAML configuration of keymux, a Redis sharding proxy. For editors; keymux's own validator " +
      '(src/config/schema.ts, from which this file is generated) is the authority and also checks slot coverage, ' +
      'uniqueness and cross-field rules.',
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Pieces of the declaration

function hashTag() {
  const error = (iss: { input?: unknown }): string => {
    const v = iss.input;
    if (isObj(v) && Object.keys(v).length === 0) return 'an unquoted {} is an empty YAML mapping; write "{}" in quotes';
    if (typeof v !== 'string') return `expected a two-character string like "{}", got ${describeValue(v)}`;
    return `expected two printable ASCII characters like "{}", got ${JSON.stringify(v)}`;
  };
  return z
    .union([z.string({ error }).regex(/^[\x21-\x7e]{2}$/, { error }), z.literal('', { error }), z.null({ error })], {
      error,
    })
    .transform((v): string | null => v || null)
    .prefault('{}');
}

/** A slot or range as written: `text` is normalised ("0 - 98" -> "0-98"). */
interface SlotRange {
  from: number;
  to: number;
  text: string;
}

const SLOT_TEXT = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/;

function slotItem() {
  const max = SLOT_COUNT - 1;
  const error = (iss: { input?: unknown }): string =>
    Number.isInteger(iss.input)
      ? `slot ${String(iss.input)} is out of range (0..${max})`
      : `expected a slot number or a range "A-B" (0..${max}), got ${describeValue(iss.input)}`;
  return z
    .union([integer(error).min(0).max(max), z.string({ error }).regex(SLOT_TEXT, { error })], { error })
    .transform((v, ctx): SlotRange => {
      if (typeof v === 'number') return { from: v, to: v, text: `${v}` };
      const m = SLOT_TEXT.exec(v)!;
      const from = Number(m[1]);
      const to = m[2] === undefined ? from : Number(m[2]);
      const single = m[2] === undefined;
      const text = single ? `${from}` : `${from}-${to}`;
      const bad = [from, to].find((n) => n > max);
      let message: string | null = null;
      if (bad !== undefined) {
        message = single
          ? `slot ${bad} is out of range (0..${max})`
          : `range ${text}: slot ${bad} is out of range (0..${max})`;
      } else if (from > to) {
        message = `range ${text} is reversed; write ${to}-${from}`;
      }
      if (message !== null) {
        ctx.issues.push({ code: 'custom', message, input: v });
        return z.NEVER;
      }
      return { from, to, text };
    });
}

function slotList() {
  const required = `required when mode is ${modesRequiring('shardKeys', 'slots').join(' or ')}`;
  return list(slotItem(), {
    expected: (v) =>
      v === undefined ? required : `expected a list of slots and ranges like [0-5460], got ${describeValue(v)}`,
    nonEmpty: 'must list at least one slot or range',
  });
}

function shardMapping(mode: Mode | null) {
  const weight = int(1, 1_000_000).default(1).describe('Ring mode: share of the ring.');
  return mapping(
    {
      name: text()
        .optional()
        .describe('Unique name; defaults to the address (or to sentinel_master). Ring mode hashes it when given.'),
      address: address(1)
        .optional()
        .describe('host:port of the redis-server (port 1..65535); or sentinel_master instead.'),
      sentinel_master: text()
        .optional()
        .describe(
          'Slots and ring modes: the master name the sentinels (top-level sentinel section) know this shard by, ' +
            'instead of address: keymux follows its failovers.',
        ),
      replicas: orEmpty(
        list(address(1), {
          expected: (v) => `expected a list of "host:port" addresses, got ${describeValue(v)}`,
        }),
      ).describe('Static replicas of an address shard (read_from may send reads there); sentinel shards learn theirs.'),
      read_from: oneOf(READ_FROM)
        .optional()
        .describe("This shard's read_from (master, replica, prefer-replica); default: the top-level read_from."),
      slots: modal(mode, 'shardKeys', 'slots', slotList(), null, slotList().optional()).describe(
        'Slots mode: "A-B" ranges (inclusive) and single slots, 0..16383.',
      ),
      weight: modal(mode, 'shardKeys', 'weight', weight, 1, weight),
    },
    {
      what: 'a mapping with "address"',
      rule: (shard, cx) => {
        if (!cx.ok(['address']) || !cx.ok(['sentinel_master'])) return;
        if (shard.address === undefined && shard.sentinel_master === undefined) {
          cx.error(['address'], 'required (e.g. "127.0.0.1:7001"), or sentinel_master with a sentinel section');
        } else if (shard.address !== undefined && shard.sentinel_master !== undefined) {
          cx.error(['sentinel_master'], 'give address or sentinel_master, not both');
        } else if (shard.sentinel_master !== undefined && shard.replicas.length > 0 && cx.ok(['replicas'])) {
          cx.error(['replicas'], 'a sentinel_master shard learns its replicas from the sentinels; leave replicas out');
        }
      },
      jsonSchema: { oneOf: [{ required: ['address'] }, { required: ['sentinel_master'] }] },
    },
  );
}

/** The Redis Sentinels asked for the primaries of sentinel_master shards. */
function sentinelMapping() {
  return mapping(
    {
      sentinels: list(address(1), {
        expected: (v) =>
          v === undefined || v === null
            ? 'required: the sentinels to ask, e.g. [127.0.0.1:26379, 127.0.0.1:26380, 127.0.0.1:26381]'
            : `expected a list of "host:port" addresses, got ${describeValue(v)}` +
              (typeof v === 'string' ? `; write [${v}]` : ''),
        nonEmpty: 'must list at least one sentinel',
        rule: (list, cx) => {
          const seen = new Map<string, number>();
          list.forEach((hp, i) => {
            if (!cx.ok([i])) return;
            const key = `${hp.host.toLowerCase()}:${hp.port}`;
            const first = seen.get(key);
            if (first === undefined) seen.set(key, i);
            else cx.clash([i], [first], (f) => `duplicate sentinel ${formatHostPort(hp)}, already listed as ${f}`);
          });
        },
      })
        .transform((list) => list.map((hp) => ({ address: formatHostPort(hp), host: hp.host, port: hp.port })))
        .meta({ uniqueItems: true })
        .describe('Sentinels, asked in order until one answers; keymux also listens to the events of each. Unique.'),
      password: optionalText().describe('AUTH password for the sentinels themselves (requirepass); null = none.'),
      password_file: optionalText().describe(
        'File holding the AUTH password for the sentinels (e.g. a mounted Secret), instead of password; re-read on ' +
          'reload and when the file changes.',
      ),
      username: optionalText().describe('ACL user name for the sentinels; requires password or password_file.'),
      refresh_interval_ms: int(100, MAX_TIMER_MS)
        .default(5000)
        .describe(
          'Safety-net check of every primary and replica list in milliseconds (events are the fast path; while ' +
            'a shard is unreachable keymux asks every 250 ms).',
        ),
      failover_wait_ms: int(0, 600_000)
        .default(5000)
        .describe(
          'How long a request to a shard whose primary is unreachable waits for the sentinels to name a primary ' +
            'before it gets an error; 0 = errors at once. Requests already written to the old primary are never ' +
            're-sent.',
        ),
      timeout_ms: int(1, MAX_TIMER_MS).default(1000).describe('Reply timeout of one sentinel query in milliseconds.'),
    },
    {
      what: 'a mapping with "sentinels"',
      rule: (s, cx) => {
        if (cx.ok(['username']) && s.username !== null && s.password === null && s.password_file === null) {
          cx.error(['username'], 'requires sentinel.password or sentinel.password_file (Redis ACL AUTH needs both)');
        }
        onlyOne(s, cx, 'password', 'password_file');
      },
      jsonSchema: {
        dependentSchemas: { username: { anyOf: [{ required: ['password'] }, { required: ['password_file'] }] } },
      },
    },
  );
}

/** How replicas are judged fit to serve reads. */
function replicaChecksSection() {
  return section({
    interval_ms: int(100, MAX_TIMER_MS)
      .default(1000)
      .describe('How often each replica (and its primary) is asked INFO replication / persistence, in milliseconds.'),
    max_lag_bytes: int(0, 2 ** 50)
      .nullable()
      .prefault(1_048_576)
      .describe(
        "Largest replication lag (the primary's master_repl_offset minus the replica's offset) a replica may " +
          'have and still serve reads; null = no bound. Replicas that are loading, syncing or whose link to ' +
          'the primary is down never serve reads.',
      ),
  });
}

/** A shard as validated (snake_case, `slots` as written); resolve() makes it a ShardConfig. */
type ShardDoc = z.output<ReturnType<typeof shardMapping>>;

function shardList(mode: Mode | null) {
  const checkShards = mode === null ? undefined : MODE_RULES[mode].checkShards;
  return list(shardMapping(mode), {
    expected: (v) => (v === undefined ? SHARDS_REQUIRED : `expected a list of shards, got ${describeValue(v)}`),
    nonEmpty: 'must list at least one shard',
    rule: (shards, cx) => {
      checkUniqueShards(shards, cx);
      checkShards?.(shards, cx);
    },
  });
}

/** Names and addresses are unique; a shard without a name is named by its address. */
function checkUniqueShards(shards: ShardDoc[], cx: RuleContext): void {
  const byName = new Map<string, number>();
  const byAddress = new Map<string, [number, string | number]>();
  const byMaster = new Map<string, number>();
  const claim = (i: number, at: string | number, hp: HostPort): void => {
    const path = typeof at === 'string' ? [i, at] : [i, 'replicas', at];
    const key = `${hp.host.toLowerCase()}:${hp.port}`;
    const first = byAddress.get(key);
    if (first === undefined) {
      byAddress.set(key, [i, at]);
      return;
    }
    const firstPath = typeof first[1] === 'string' ? [first[0]] : [first[0], 'replicas', first[1]];
    cx.clash(
      path,
      firstPath,
      (f) => `duplicate address ${formatHostPort(hp)}, already used by ${f}`,
      typeof first[1] === 'string' ? 'address' : undefined,
    );
  };
  shards.forEach((shard, i) => {
    if (!cx.ok([i, 'address']) || !cx.ok([i, 'name']) || !cx.ok([i, 'sentinel_master'])) return;
    if (shard.address !== undefined) claim(i, 'address', shard.address);
    if (cx.ok([i, 'replicas'])) shard.replicas.forEach((hp, r) => claim(i, r, hp));
    const master = shard.sentinel_master;
    if (master !== undefined) {
      const first = byMaster.get(master);
      if (first === undefined) byMaster.set(master, i);
      else
        cx.clash(
          [i, 'sentinel_master'],
          [first],
          (f) => `duplicate sentinel_master ${JSON.stringify(master)}, already used by ${f}`,
          'sentinel_master',
        );
    }
    const named = shard.name !== undefined;
    const name = shardName(shard);
    const firstName = byName.get(name);
    if (firstName !== undefined) {
      cx.clash(
        [i, named ? 'name' : shard.address !== undefined ? 'address' : 'sentinel_master'],
        [firstName],
        (first) =>
          `duplicate shard name ${JSON.stringify(name)}` +
          (named ? '' : ' (a shard without a name is named by its address or sentinel_master)') +
          `, already used by ${first}`,
        'name',
      );
    } else {
      byName.set(name, i);
    }
  });
}

/**
 * ring mode: no two shards hash as the same ketama key (what the continuum places on the ring: ketamaKey, as
 * twemproxy's conf_validate_server checks). Names are unique already, but an unnamed shard on port 11211 hashes as
 * its host alone, so `127.0.0.1:11211` and a shard named `127.0.0.1` would share their points (twemproxy refuses
 * that; the continuum cannot be built). Pairs whose names clash were reported as duplicate names.
 */
function checkRingKeys(shards: ShardDoc[], cx: RuleContext): void {
  const byKey = new Map<string, number>();
  shards.forEach((shard, i) => {
    if (!cx.ok([i, 'address']) || !cx.ok([i, 'name']) || !cx.ok([i, 'sentinel_master'])) return;
    const key = ketamaKey(shardIdentity(shard));
    const first = byKey.get(key);
    if (first === undefined) {
      byKey.set(key, i);
      return;
    }
    const firstShard = shards[first]!;
    if (shardName(firstShard) === shardName(shard)) return;
    const keyOf = (s: ShardDoc): string =>
      s.name !== undefined ? 'name' : s.address !== undefined ? 'address' : 'sentinel_master';
    cx.clash(
      [i, keyOf(shard)],
      [first],
      (f) =>
        `shard ${JSON.stringify(shardName(shard))} hashes on the ring as ${JSON.stringify(key)}, as does shard ` +
        `${JSON.stringify(shardName(firstShard))} (${f}); give one of them another name (an unnamed shard hashes ` +
        'as its host:port, on port 11211 as its host alone, as in twemproxy)',
      keyOf(firstShard),
    );
  });
}

/** What a ShardConfig says of a shard's identity (resolve() builds it the same way): its name, and whether given. */
function shardIdentity(s: ShardDoc): Pick<ShardConfig, 'name' | 'named' | 'host' | 'port'> {
  const master = s.sentinel_master ?? null;
  return {
    name: s.name ?? (s.address !== undefined ? formatHostPort(s.address) : master!),
    // A sentinel shard is always known by its name (the ring hashes it, not the primary of the moment).
    named: s.name !== undefined || master !== null,
    host: s.address?.host ?? '',
    port: s.address?.port ?? 0,
  };
}

/** A shard's name: as given, else its address, else its sentinel master name. */
function shardName(s: ShardDoc): string {
  return s.name ?? (s.address !== undefined ? formatHostPort(s.address) : (s.sentinel_master ?? ''));
}

/** Most gaps listed one per line before the rest are summarised. */
const MAX_GAP_ERRORS = 10;

/**
 * slots mode: every slot 0..16383 is owned by exactly one shard. An overlap is reported on the later range
 * (document order) against the range that first claimed the slots; gaps are reported on `shards`. A shard whose
 * address, name or slots are wrong was reported already; coverage would only add noise, so it is not checked.
 */
function checkSlotCoverage(shards: ShardDoc[], cx: RuleContext): void {
  const fine = (s: ShardDoc, i: number): boolean =>
    cx.ok([i, 'address']) && cx.ok([i, 'name']) && cx.ok([i, 'sentinel_master']) && cx.ok([i, 'slots']) && !!s.slots;
  if (!shards.every(fine)) return;
  const nameOf = shardName;
  const describeRange = (r: SlotRange): string => (r.text.includes('-') ? `range ${r.text}` : `slot ${r.text}`);
  const owner = new Int32Array(SLOT_COUNT).fill(-1);
  const all: Array<{ shard: number; item: number; range: SlotRange }> = [];
  shards.forEach((s, shard) => s.slots!.forEach((range, item) => all.push({ shard, item, range })));
  all.forEach(({ shard, item, range }, ri) => {
    const hit = new Set<number>();
    for (let slot = range.from; slot <= range.to; slot++) {
      const o = owner[slot]!;
      if (o === -1) owner[slot] = ri;
      else hit.add(o);
    }
    for (const o of [...hit].sort((a, b) => a - b)) {
      const other = all[o]!;
      cx.error(
        [shard, 'slots', item],
        other.shard === shard
          ? `${describeRange(range)} overlaps ${describeRange(other.range)} of the same shard`
          : `${describeRange(range)} overlaps shard ${JSON.stringify(nameOf(shards[other.shard]!))} (${other.range.text})`,
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
      [],
      from === to ? `slot ${from} is not assigned to any shard` : `slots ${from}-${to} are not assigned to any shard`,
    );
  }
  if (gaps.length > MAX_GAP_ERRORS) {
    const rest = gaps.slice(MAX_GAP_ERRORS);
    const count = rest.reduce((n, [a, b]) => n + b - a + 1, 0);
    cx.error([], `and ${rest.length} more unassigned ranges (${count} slots)`);
  }
}

/** cluster mode: how to find and follow a Redis Cluster. */
function clusterMapping() {
  return mapping(
    {
      seeds: list(address(1), {
        expected: (v) =>
          v === undefined || v === null
            ? 'required: a list of cluster nodes to discover the cluster from, e.g. [127.0.0.1:7000]'
            : `expected a list of "host:port" addresses, got ${describeValue(v)}` +
              (typeof v === 'string' ? `; write [${v}]` : ''),
        nonEmpty: 'must list at least one seed node',
        rule: (seeds, cx) => {
          const seen = new Map<string, number>();
          seeds.forEach((seed, i) => {
            if (!cx.ok([i])) return;
            const key = `${seed.host.toLowerCase()}:${seed.port}`;
            const first = seen.get(key);
            if (first === undefined) seen.set(key, i);
            else cx.clash([i], [first], (f) => `duplicate seed ${formatHostPort(seed)}, already listed as ${f}`);
          });
        },
      })
        .transform((seeds) => seeds.map((hp) => ({ address: formatHostPort(hp), host: hp.host, port: hp.port })))
        .meta({ uniqueItems: true })
        .describe('Cluster nodes asked for the layout (CLUSTER SHARDS / SLOTS), in order, until one answers. Unique.'),
      read_from: oneOf(READ_FROM)
        .default('master')
        .describe('Where read-only commands go; writes always go to masters.'),
      refresh_interval_ms: int(100, MAX_TIMER_MS)
        .default(5000)
        .describe('Periodic layout refresh in milliseconds; MOVED and cluster errors also trigger one.'),
      max_redirections: int(1, 100)
        .default(5)
        .describe('MOVED/ASK redirections followed per command before the client gets an error.'),
      retry: section(
        {
          attempts: int(0, 100).default(8).describe('Retries before the client gets the error; 0 = none.'),
          base_delay_ms: int(1, 60_000).default(20).describe('First delay in milliseconds.'),
          max_delay_ms: int(1, 60_000)
            .default(500)
            .describe('Largest delay in milliseconds; not less than base_delay_ms.'),
        },
        {
          rule: (r, cx) => {
            if (!cx.ok(['base_delay_ms']) || !cx.ok(['max_delay_ms']) || r.max_delay_ms >= r.base_delay_ms) return;
            cx.error(
              ['max_delay_ms'],
              `max_delay_ms (${r.max_delay_ms}) must not be less than base_delay_ms (${r.base_delay_ms})`,
              { orIfAbsent: 'base_delay_ms' },
            );
          },
        },
      ).describe(
        'Retries of TRYAGAIN, CLUSTERDOWN and LOADING with exponential backoff (base_delay_ms * 2^n, at most ' +
          'max_delay_ms).',
      ),
    },
    {
      what: 'a mapping with "seeds"',
      required: 'required when mode is cluster: a mapping with "seeds", e.g. { seeds: [127.0.0.1:7000] }',
    },
  );
}

/** What a TLS server of keymux's presents and asks for (the client port and the admin port). */
function serverTlsFields(who: string) {
  return {
    cert_file: optionalText().describe(
      'PEM certificate (chain) keymux presents; required when enabled. Re-read on reload and when the file changes.',
    ),
    key_file: optionalText().describe('PEM private key of cert_file; required when enabled.'),
    ca_file: optionalText().describe(
      `PEM CA certificates: set = ${who} must present a certificate signed by one of them (mutual TLS); null = ` +
        'no client certificate asked for.',
    ),
    min_version: oneOf(TLS_VERSIONS).default('TLSv1.2').describe('Oldest TLS version accepted.'),
  };
}

/** A TLS server section that is enabled needs its certificate and key. */
function requireWhenEnabled(
  t: { enabled: boolean; cert_file: string | null; key_file: string | null },
  cx: RuleContext,
) {
  if (!t.enabled) return;
  for (const key of ['cert_file', 'key_file'] as const) {
    if (t[key] === null && cx.ok([key])) {
      cx.error([key], 'required when enabled is true (a PEM file)');
    }
  }
}

/** A client certificate comes with its key. */
function bothOrNeither(t: { cert_file: string | null; key_file: string | null }, cx: RuleContext): void {
  if (!cx.ok(['cert_file']) || !cx.ok(['key_file']) || (t.cert_file === null) === (t.key_file === null)) return;
  const [missing, given] = t.cert_file === null ? ['cert_file', 'key_file'] : ['key_file', 'cert_file'];
  cx.error([missing], `required with ${given} (a client certificate needs its key, and the other way round)`);
}

/** Two ways of giving one value (a secret inline or in a file): at most one of them. */
function onlyOne<K extends string>(v: Record<K, unknown>, cx: RuleContext, a: K, b: K): void {
  if (cx.ok([a]) && cx.ok([b]) && v[a] !== null && v[b] !== null) cx.error([b], `give ${a} or ${b}, not both`);
}

/** The admin server written as a mapping (the short form is just its address). */
function adminMapping() {
  return mapping(
    {
      address: address(0)
        .prefault('127.0.0.1:9121')
        .describe('Where the admin server listens, "host:port" (port 0 = any free port). Default 127.0.0.1:9121.'),
      token_file: optionalText().describe(
        'File holding a bearer token (16 characters or more): every endpoint but /healthz, /readyz and (see ' +
          'public_metrics) /metrics then needs "Authorization: Bearer TOKEN". Re-read on reload and when it changes.',
      ),
      public_metrics: bool()
        .default(true)
        .describe('With a token_file: /metrics answers without the token (for Prometheus); false = it needs it.'),
      tls: section(
        {
          enabled: bool().default(false).describe('Serve the admin endpoints over HTTPS.'),
          ...serverTlsFields('callers'),
        },
        { rule: requireWhenEnabled },
      ).describe('HTTPS for the admin server.'),
    },
    { what: 'a mapping with "address"' },
  );
}

type AdminDoc = z.output<ReturnType<typeof adminMapping>>;

/** `admin:` as keymux uses it: the address's host and port with the rest of the mapping (defaults for the short form). */
function adminSetting(v: HostPort | AdminDoc | null): (HostPort & Omit<AdminDoc, 'address'>) | null {
  if (v === null) return null;
  if (!('address' in v)) return { ...adminSetting(adminMapping().parse({}))!, host: v.host, port: v.port };
  const { address: at, ...rest } = v;
  return { host: at.host, port: at.port, ...rest };
}

function userList() {
  const user = mapping(
    {
      name: text().describe('The user name clients AUTH with (AUTH name password, HELLO 2 AUTH name password).'),
      password: optionalText().describe("The user's password."),
      passwords: orEmpty(
        list(text(), { expected: (v) => `expected a list of passwords, got ${describeValue(v)}` }),
      ).describe('Several passwords, each accepted (rotation: add the new one, move the clients, drop the old one).'),
      nopass: bool().default(false).describe('Any password is accepted (as Redis nopass).'),
      rules: optionalText().describe(
        'Redis ACL rules, e.g. "+@all -@dangerous ~app:* &news:*" (the subset keymux enforces: README, Users and ' +
          'permissions); null = every command, key and channel.',
      ),
      operator: bool()
        .default(false)
        .describe('May use the operator forms keymux offers (commands.config_broadcast) when users are configured.'),
    },
    {
      what: 'a mapping with "name" and "password"',
      jsonSchema: {
        anyOf: [
          { required: ['password'] },
          { required: ['passwords'] },
          { required: ['nopass'] },
          { required: ['rules'] },
        ],
      },
      rule: (u, cx) => {
        const parsed = u.rules !== null && cx.ok(['rules']) ? parseAclRules(u.rules) : null;
        for (const e of parsed?.errors ?? []) cx.error(['rules'], e);
        if (!cx.ok(['password']) || !cx.ok(['passwords']) || !cx.ok(['nopass'])) return;
        const inRules = parsed?.ops.some((o) => o.op === 'nopass' || (o.op === 'password' && o.add)) ?? false;
        const given = u.password !== null || u.passwords.length > 0;
        if (u.nopass && given) cx.error(['nopass'], 'nopass: true takes no password; remove password(s)');
        else if (!u.nopass && !given && !inRules) {
          cx.error(['password'], 'required (or passwords: [...], or nopass: true)');
        }
      },
    },
  );
  return orEmpty(
    list(user, {
      expected: (v) => `expected a list of { name, password }, got ${describeValue(v)}`,
      rule: (users, cx) => {
        const seen = new Map<string, number>();
        users.forEach((u, i) => {
          if (!cx.ok([i, 'name'])) return;
          const first = seen.get(u.name);
          if (first === undefined) seen.set(u.name, i);
          else {
            const message = (f: string): string => `duplicate user ${JSON.stringify(u.name)}, already defined by ${f}`;
            cx.clash([i, 'name'], [first], message, 'name');
          }
        });
      },
    }),
  );
}

/** routing: [{ match, by }]; each pattern must compile and have capture group `by`. */
function routingRules() {
  const rule = mapping(
    {
      match: text().describe('A regular expression (JavaScript syntax) matched against the key bytes (latin1).'),
      by: int(1, 99).describe('The capture group of `match` whose bytes route a matching key.'),
    },
    {
      what: 'a mapping with "match" (a regular expression) and "by" (a capture group number)',
      rule: (r, cx) => {
        if (!cx.ok(['match'])) return;
        let groups: number;
        try {
          groups = captureGroups(r.match);
        } catch (err) {
          cx.error(['match'], `not a valid regular expression: ${(err as Error).message}`);
          return;
        }
        if (cx.ok(['by']) && r.by > groups) {
          cx.error(
            ['by'],
            groups === 0
              ? `the pattern has no capture group; write one in parentheses, e.g. "^bull:([^:]+):"`
              : `the pattern has ${groups} capture group${groups === 1 ? '' : 's'}, not ${r.by}`,
          );
        }
      },
    },
  );
  return orEmpty(list(rule, { expected: (v) => `expected a list of { match, by } mappings, got ${describeValue(v)}` }));
}

/** commands.deny: command names, read trimmed, lowercased and without repeats. */
function denyList() {
  const error = (iss: { input?: unknown }): string => {
    const v = iss.input;
    if (typeof v !== 'string') return `expected a command name, got ${describeValue(v)}`;
    return v.trim() === ''
      ? 'command name must not be empty'
      : `command name ${JSON.stringify(v)} must not contain spaces`;
  };
  const name = z
    .string({ error })
    .regex(/^\s*\S+\s*$/, { error })
    .transform((s) => s.trim().toLowerCase());
  const names = list(name, { expected: (v) => `expected a list of command names, got ${describeValue(v)}` });
  return orEmpty(names.transform((v) => [...new Set(v)]));
}

// ---------------------------------------------------------------------------------------------------------------
// Types: what the declaration produces, camelCased

type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
/** A type with every mapping key in camelCase (as camelize() does to the value). */
type Camelized<T> = T extends readonly unknown[]
  ? { [K in keyof T]: Camelized<T[K]> }
  : T extends object
    ? { [K in keyof T as K extends string ? Camel<K> : K]: Camelized<T[K]> }
    : T;
type Flat<T> = { [K in keyof T]: T[K] };

/** The document as validated: snake_case keys, defaults applied, addresses and slots read. */
type ConfigDoc = z.output<ReturnType<typeof configMapping>>;

export interface ShardConfig {
  /** The shard's name: as given, or "host:port" when the YAML gives none. */
  name: string;
  /** True when the YAML gave a name (ketama then hashes the name, as twemproxy does). */
  named: boolean;
  /**
   * "host:port" exactly as written (normalised: no spaces). A sentinel_master shard has no fixed address: here
   * "sentinel:<master name>" with host "" and port 0; the running topology puts its current primary in its place.
   */
  address: string;
  host: string;
  port: number;
  /** slots mode: inclusive [from, to] ranges, sorted and merged; ring mode: null. */
  slots: Array<[number, number]> | null;
  /** ring mode: weight (default 1); slots mode: 1. */
  weight: number;
  /** The master name the sentinels know this shard by; null for a shard with a fixed address. */
  // The three below are absent in configs built by hand (tests, tools): absent = null / none.
  sentinelMaster?: string | null;
  /** Static replicas (address shards); a sentinel shard's replicas are discovered. */
  replicas?: Endpoint[];
  /** This shard's read_from; null = the top-level read_from. */
  readFrom?: ReadFrom | null;
}

/** A node keymux connects to, as "host:port" and its parts. */
export interface Endpoint {
  address: string;
  host: string;
  port: number;
}

/** The address a sentinel_master shard has in its config (never connected to): "sentinel:<name>". */
export function sentinelPlaceholder(master: string): string {
  return `sentinel:${master}`;
}

/** cluster mode: how to find and follow a Redis Cluster (seeds, read_from, refresh, redirections, retry). */
export type ClusterConfig = Camelized<NonNullable<ConfigDoc['cluster']>>;

/** The sentinels that name sentinel_master shards' primaries, and how keymux follows them. */
export type SentinelConfig = Camelized<NonNullable<ConfigDoc['sentinel']>>;

export type KeymuxConfig = Flat<
  {
    /** Path of the file it was loaded from (or '<inline>'). */
    source: string;
    /** slots and ring modes; [] in cluster mode. */
    shards: ShardConfig[];
    /** cluster mode: the cluster section; null in other modes. */
    cluster: ClusterConfig | null;
    /** The sentinels of sentinel_master shards; null when the config has none. */
    sentinel: SentinelConfig | null;
  } & Camelized<Omit<ConfigDoc, 'shards' | 'cluster' | 'sentinel'>>
>;

/** What keymux tracks on the data path for /metrics, /hotkeys and /slowlog (src/metrics/). */
export type MetricsConfig = KeymuxConfig['metrics'];
export type UserConfig = KeymuxConfig['clients']['users'][number];

/** Either a valid, frozen config or every error found (each one line). Test with `if (r.errors)`. */
export type ConfigResult = { config: KeymuxConfig; errors?: undefined } | { errors: string[]; config?: undefined };

// ---------------------------------------------------------------------------------------------------------------
// Entry point

const MODE = oneOf(MODES);
const mappings = new Map<Mode | null, ReturnType<typeof configMapping>>();

function mappingFor(mode: Mode | null): ReturnType<typeof configMapping> {
  let m = mappings.get(mode);
  if (m === undefined) mappings.set(mode, (m = configMapping(mode)));
  return m;
}

/**
 * Validates the plain JS value of a YAML document. `locate` gives lines for error messages (pass `() => null`
 * for a document without a source text); `source` names the file in messages and becomes `config.source`.
 */
export function validateConfig(doc: unknown, locate: Locate, source: string): ConfigResult {
  const rootError = (message: string): ConfigResult => {
    const line = locate([]);
    return { errors: [`${line === null ? source : `${source}:${line}`}: ${message}`] };
  };
  if (doc === null || doc === undefined) {
    return rootError('the configuration is empty; expected a mapping with at least "mode" and "shards"');
  }
  const data = plainData(doc);
  if (!isObj(data)) return rootError(`expected a mapping at the top level, got ${describeValue(data)}`);
  const mode = MODE.safeParse(data.mode);
  const result = mappingFor(mode.success ? mode.data : null).safeParse(data, { reportInput: true });
  if (!result.success) return { errors: formatIssues(result.error.issues, doc, locate, source) };
  return { config: deepFreeze(resolve(result.data, source)) };
}

/** The validated document as a KeymuxConfig: camelCase keys, shards with their names, addresses and merged slots. */
function resolve(doc: ConfigDoc, source: string): KeymuxConfig {
  const { shards, cluster, sentinel, ...rest } = doc;
  return {
    source,
    ...(camelize(rest) as Camelized<typeof rest>),
    sentinel: sentinel ? (camelize(sentinel) as SentinelConfig) : null,
    shards: shards.map((s): ShardConfig => {
      const master = s.sentinel_master ?? null;
      const address = s.address !== undefined ? formatHostPort(s.address) : sentinelPlaceholder(master!);
      const { name, named, host, port } = shardIdentity(s);
      return {
        name,
        named,
        address,
        host,
        port,
        slots: s.slots ? mergeRanges(s.slots) : null,
        weight: s.weight,
        sentinelMaster: master,
        replicas: s.replicas.map((hp) => ({ address: formatHostPort(hp), host: hp.host, port: hp.port })),
        readFrom: s.read_from ?? null,
      };
    }),
    cluster: cluster ? (camelize(cluster) as ClusterConfig) : null,
  };
}

function camelize(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(camelize);
  if (!isObj(v)) return v;
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()), camelize(x)]),
  );
}

function mergeRanges(ranges: readonly SlotRange[]): Array<[number, number]> {
  const sorted = ranges.map((r) => [r.from, r.to] as [number, number]).sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
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
// Derived from the declaration: the JSON Schema for editors, defaults, ranges and keys

type Json = Record<string, unknown>;

/**
 * The JSON Schema of the configuration (draft 2020-12), as `npm run gen:schema` writes it to
 * config/keymux.schema.json: the declaration with an unknown mode (every key allowed, none mode-required), plus one
 * if/then per mode from MODE_RULES. It cannot say what rules check (coverage, uniqueness, addresses in detail).
 */
export function configJsonSchema(): Json {
  const schema = z.toJSONSchema(configMapping(null), { io: 'input', target: 'draft-2020-12' }) as Json;
  const modeSpecific = (kind: ModeKind): string[] => [...new Set(MODES.flatMap((m) => MODE_RULES[m][kind]))];
  const notAnyOf = (keys: string[]): Json =>
    keys.length === 1 ? { not: { required: keys } } : { not: { anyOf: keys.map((k) => ({ required: [k] })) } };
  const allOf = MODES.map((mode) => {
    const rule = MODE_RULES[mode];
    const then: Json = {
      required: [...rule.requiredSections],
      ...notAnyOf(modeSpecific('sections').filter((k) => !rule.sections.includes(k))),
    };
    const properties: Json = {};
    for (const key of rule.requiredSections) if (key !== 'shards') properties[key] = { type: 'object' };
    if (rule.sections.includes('shards')) {
      const forbidden = modeSpecific('shardKeys').filter((k) => !rule.shardKeys.includes(k));
      properties.shards = {
        items: {
          ...(rule.requiredShardKeys.length > 0 ? { required: [...rule.requiredShardKeys] } : {}),
          ...(forbidden.length > 0 ? notAnyOf(forbidden) : {}),
        },
      };
    }
    if (Object.keys(properties).length > 0) then.properties = properties;
    return { if: { properties: { mode: { const: mode } }, required: ['mode'] }, then };
  });
  const { $schema, title, description, ...rest } = schema;
  return { $schema, title, description, ...rest, allOf };
}

/** Calls visit(path, node) for every property of every object in a JSON Schema; path like "shards[].weight". */
function walkJsonSchema(node: Json, visit: (path: string, node: Json) => void, path = ''): void {
  const props = node.properties as Record<string, Json> | undefined;
  if (props) {
    visit(path, node);
    for (const [key, child] of Object.entries(props))
      walkJsonSchema(child, visit, path === '' ? key : `${path}.${key}`);
  }
  if (node.items) walkJsonSchema(node.items as Json, visit, `${path}[]`);
  for (const branch of (node.anyOf as Json[] | undefined) ?? []) walkJsonSchema(branch, visit, path);
}

/**
 * An object computed on first use. The derived constants below are for tests and tools; building them costs as
 * much as loading the module (the JSON Schema, two whole validations), so a keymux that never reads them never
 * pays for it.
 */
function lazy<T extends object>(compute: () => T): T {
  let value: T | undefined;
  const get = (): T => (value ??= compute());
  return new Proxy({} as T, {
    get: (_, key) => Reflect.get(get(), key) as unknown,
    has: (_, key) => Reflect.has(get(), key),
    // Read-only, as the frozen value it stands for.
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
    ownKeys: () => Reflect.ownKeys(get()),
    getOwnPropertyDescriptor: (_, key) => {
      const d = Reflect.getOwnPropertyDescriptor(get(), key);
      return d && { ...d, configurable: true };
    },
  });
}

const jsonSchema = lazy(configJsonSchema);

/** The keys of every mapping, by path: '' is the top level, 'shards[]' a shard, 'cluster.retry'... */
export const KEYS_BY_PATH: Readonly<Record<string, readonly string[]>> = lazy(() => {
  const out: Record<string, string[]> = {};
  walkJsonSchema(jsonSchema, (path, node) => (out[path] = Object.keys(node.properties as Json)));
  return deepFreeze(out);
});

const KNOWN_KEY_NAMES = {
  root: '',
  shard: 'shards[]',
  sentinel: 'sentinel',
  replica_checks: 'replica_checks',
  ring: 'ring',
  cluster: 'cluster',
  cluster_retry: 'cluster.retry',
  backend: 'backend',
  backend_tls: 'backend.tls',
  backend_session_connections: 'backend.session_connections',
  tls: 'tls',
  admin: 'admin',
  admin_tls: 'admin.tls',
  clients: 'clients',
  user: 'clients.users[]',
  limits: 'limits',
  log: 'log',
  commands: 'commands',
  metrics: 'metrics',
  hot_keys: 'metrics.hot_keys',
  slowlog: 'metrics.slowlog',
  near_cache: 'near_cache',
  migration: 'migration',
  drain: 'drain',
} as const;

/** Every key the YAML may use, per mapping (snake_case), under the names the tests have always used. */
export const KNOWN_KEYS: Readonly<Record<keyof typeof KNOWN_KEY_NAMES, readonly string[]>> = lazy(() =>
  deepFreeze(
    Object.fromEntries(Object.entries(KNOWN_KEY_NAMES).map(([name, path]) => [name, KEYS_BY_PATH[path]!])) as Record<
      keyof typeof KNOWN_KEY_NAMES,
      readonly string[]
    >,
  ),
);

/** Inclusive bounds of every integer option, by path ("backend.connections", "shards[].weight"). */
export const INT_RANGES: Readonly<Record<string, readonly [number, number]>> = lazy(() => {
  const out: Record<string, readonly [number, number]> = {};
  walkJsonSchema(jsonSchema, (path, node) => {
    for (const [key, p] of Object.entries(node.properties as Record<string, Json>)) {
      if (p.type === 'integer') out[path === '' ? key : `${path}.${key}`] = [p.minimum as number, p.maximum as number];
    }
  });
  return deepFreeze(out);
});

/** Bounds of every non-integer number option; [min, max, 'exclusive-min'] excludes min. */
export const NUMBER_RANGES: Readonly<
  Record<string, readonly [number, number] | readonly [number, number, 'exclusive-min']>
> = lazy(() => {
  const out: Record<string, readonly [number, number] | readonly [number, number, 'exclusive-min']> = {};
  walkJsonSchema(jsonSchema, (path, node) => {
    for (const [key, p] of Object.entries(node.properties as Record<string, Json>)) {
      if (p.type !== 'number') continue;
      const name = path === '' ? key : `${path}.${key}`;
      out[name] =
        p.exclusiveMinimum !== undefined
          ? [p.exclusiveMinimum as number, p.maximum as number, 'exclusive-min']
          : [p.minimum as number, p.maximum as number];
    }
  });
  return deepFreeze(out);
});

/**
 * Defaults for everything optional, as the resolved (camelCase) values: what the declaration makes of a minimal
 * document, plus `weight` (a shard's) and `cluster` (without seeds). Frozen.
 */
export const DEFAULTS = lazy(() => {
  const inline = (doc: unknown): KeymuxConfig => {
    const r = validateConfig(doc, () => null, '<defaults>');
    if (r.errors) throw new Error(`keymux: the config schema's defaults are invalid:\n${r.errors.join('\n')}`);
    return r.config;
  };
  const {
    source: _source,
    mode: _mode,
    shards,
    cluster: _cluster,
    ...sections
  } = inline({ mode: 'ring', shards: [{ address: 'defaults:1' }] });
  const { seeds: _seeds, ...cluster } = inline({ mode: 'cluster', cluster: { seeds: ['defaults:1'] } }).cluster!;
  return deepFreeze({ ...sections, weight: shards[0]!.weight, cluster });
});
