/**
 * CommandSpec: everything keymux needs to know about one Redis command to route it, as plain data.
 * A spec comes from the live server's COMMAND reply (Redis 7 key specs) or from the built-in table, and carries
 * keymux's own decision about how the command is dispatched (answered locally, sent to the shard of its keys,
 * split per shard, sent to every shard, or refused) and how split replies are merged. Specs are immutable once
 * a CommandTable is built; the hot path only reads them.
 */
import type { KeyFinder } from './keys.js';

/** Where the search for a key spec's keys begins (Redis 7 "begin_search"). */
export type BeginSearch =
  { kind: 'index'; pos: number } | { kind: 'keyword'; keyword: string; startFrom: number } | { kind: 'unknown' };

/** How keys are found once the search has begun (Redis 7 "find_keys"). */
export type FindKeys =
  | { kind: 'range'; lastKey: number; step: number; limit: number }
  | { kind: 'keynum'; keyNumIdx: number; firstKey: number; step: number }
  | { kind: 'unknown' };

export interface KeySpec {
  begin: BeginSearch;
  find: FindKeys;
  /** Redis key-spec flags, lowercased: ro, rw, ow, rm, access, update, insert, delete, not_key, incomplete, variable_flags */
  flags: readonly string[];
}

/**
 * How keymux dispatches a command.
 * - local: answered by keymux itself (PING, ECHO, AUTH, HELLO, SELECT, CLIENT ..., COMMAND ...).
 * - keyed: every key must map to one shard; the client's bytes are forwarded there; else CROSSSLOT.
 * - fanout: multi-key command split into one sub-command per shard, reply merged by `merge`.
 * - all-shards: sent unchanged to every shard, replies merged by `merge` (FLUSHALL, DBSIZE, INFO...).
 * - refused: answered with `refuseReason` (an encoded error reply).
 * - pubsub: (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PUBLISH, SPUBLISH, PUBSUB ... (server/dispatch/pubsub.ts).
 * - session: needs a backend connection of its own for a while: MULTI/EXEC/DISCARD/WATCH/UNWATCH, blocking
 *   commands, CLIENT UNBLOCK (server/dispatch/session.ts, src/session/).
 * - one-shard: a keyless command answered by one shard, the same one every time (Router.keylessGroup: TIME,
 *   LASTSAVE, FUNCTION LIST, ... HELP).
 * - scan: SCAN, walking every shard with one cursor (server/dispatch/scan.ts, keyspace/scan-cursor.ts).
 * - kill: SCRIPT KILL / FUNCTION KILL, sent to every shard on a connection of its own (the shared one is busy
 *   with the script being killed).
 * - config: CONFIG GET/SET/RESETSTAT, to every shard when commands.config_broadcast is on, else refused.
 */
export type Dispatch =
  | 'local'
  | 'keyed'
  | 'fanout'
  | 'all-shards'
  | 'refused'
  | 'pubsub'
  | 'session'
  | 'one-shard'
  | 'scan'
  | 'kill'
  | 'config'
  | 'wait';

/**
 * How the replies of a split or broadcast command are combined.
 * - mget: array elements reassembled in the client's key order.
 * - all-ok: every part replied +OK -> +OK (MSET, FLUSHALL).
 * - sum: integer replies summed (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
 * - info: INFO text, keyspace aggregated.
 * - same, and, keys, random, script-load, script-flush, function-load, function-delete, function-flush,
 *   function-restore: see keyspace/merges.ts.
 */
export type MergeKind =
  | 'mget'
  | 'all-ok'
  | 'sum'
  | 'info'
  | 'same'
  | 'and'
  | 'keys'
  | 'random'
  | 'script-load'
  | 'script-flush'
  | 'function-load'
  | 'function-delete'
  | 'function-flush'
  | 'function-restore';

/** Shape of a fan-out command's arguments after the name: keys only, or key/value pairs. */
export type FanoutShape = 'keys' | 'key-value';

export interface CommandSpec {
  /** Lowercase name; subcommands are "container|sub" (e.g. "object|encoding"). */
  readonly name: string;
  /** Redis arity: positive = exact argc, negative = at least -arity. argc counts the command name. */
  readonly arity: number;
  /** Redis command flags, lowercased (write, readonly, denyoom, admin, pubsub, noscript, blocking, loading, stale, fast, movablekeys ...). */
  readonly flags: readonly string[];
  /** Legacy key positions from COMMAND (first, last, step); last < 0 counts from the end. */
  readonly firstKey: number;
  readonly lastKey: number;
  readonly step: number;
  readonly keySpecs: readonly KeySpec[];
  /** Subcommands by lowercase subcommand name (without the container prefix), or null. */
  readonly subcommands: ReadonlyMap<string, CommandSpec> | null;
  /** keymux's decision. */
  readonly dispatch: Dispatch;
  readonly merge: MergeKind | null;
  readonly fanoutShape: FanoutShape | null;
  /** Encoded RESP error reply for dispatch 'refused' (e.g. "-ERR keymux: ... \r\n"), else null. */
  readonly refuseReason: Buffer | null;
  /** True for commands that only read (flag readonly): may go to replicas. */
  readonly readonly: boolean;
  /** True for commands with the write flag. */
  readonly write: boolean;
  /**
   * keymux extension (optional so hand-built specs stay valid): options keymux reads at run time to find keys
   * the key specs cannot describe (SORT ... STORE dst) or to refuse one form of a command (XREAD BLOCK, COPY DB).
   * Set by the command table; see OptionScan.
   */
  readonly options?: OptionScan | null;
  /**
   * keymux extension: the key finder compiled from keySpecs and options by the command table (src/commands/keys.ts).
   * Absent on hand-built specs; findKeyIndexes compiles and caches one on first use.
   */
  readonly keyFinder?: KeyFinder;
  /**
   * keymux extension: the ACL categories the server reports for the command ("@read", "@dangerous"...), for
   * permission rules (src/security/acl.ts). Absent on hand-built specs (no category then).
   */
  readonly aclCategories?: readonly string[];
  /**
   * keymux extension: the command runs a script or function (EVAL, EVALSHA, FCALL and their _RO forms), which may
   * write its declared keys although Redis flags it neither read nor write. Set by the command table (one field read
   * on the data path instead of a category search); absent on hand-built specs.
   */
  readonly runsScript?: boolean;
  /**
   * keymux extension, all-shards only: the command goes to every replica keymux knows as well as to every primary,
   * and the merge takes their replies too (SCRIPT FLUSH: replicas run EVALSHA_RO and keymux loads scripts on them,
   * while Redis does not propagate SCRIPT FLUSH to them). Set by the command table; absent on hand-built specs.
   */
  readonly toReplicas?: boolean;
}

/** keymux extension: one option of a command's syntax (keyword lowercase, number of arguments after it). */
export interface OptionRule {
  readonly keyword: string;
  readonly args: number;
  /**
   * 'skip': not a key; 'key': its one argument is a key; 'refuse': the invocation is refused with refuseReply;
   * 'pattern': its one argument is a key pattern (SORT BY/GET): refused when it contains `*` (it would name keys
   * on any shard), accepted without (Redis reads no key then: BY nosort, GET #); 'db': its one argument is a
   * database number: 0 (the only one keymux serves) is accepted, another integer refused, a non-integer answered
   * as Redis does (value is not an integer); 'last-key': a key of which only the last occurrence counts (SORT
   * ... STORE a STORE b stores into b only).
   */
  readonly action: 'skip' | 'key' | 'refuse' | 'pattern' | 'db' | 'last-key';
}

/**
 * keymux extension: the option grammar of a command, scanned left to right from argument `start` until `stopAt`
 * (a keyword, e.g. "streams") or the end. A token that is no rule's keyword is a syntax error (as in Redis).
 */
export interface OptionScan {
  readonly start: number;
  readonly stopAt: string | null;
  readonly rules: readonly OptionRule[];
  /** Encoded error reply for an invocation using a 'refuse' option ("-ERR keymux: command 'xread' with BLOCK ..."). */
  readonly refuseReply: Buffer;
}
