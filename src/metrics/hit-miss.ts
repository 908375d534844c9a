/**
 * Cache hit/miss rules, as data: which read commands count as cache lookups and how their reply says "found" or
 * "not found". HIT_MISS_RULES is the one table (a command appears in at most one rule; the command table itself is
 * not touched); countHitMiss applies a rule to one raw reply frame from one shard and bumps that shard's plain
 * counters. It reads frame bytes in place (no decoding, no allocation). Error replies count as neither a hit nor
 * a miss. A fan-out command is counted per fragment, against the shard that answered it, so per-shard counts
 * are exact. Writes (SET, LPOP...), cardinality commands (LLEN, SCARD...) and scans are not cache lookups and
 * are not counted.
 */
import { elementEnd } from '../resp/reply-reader.js';
import type { ShardStats } from './stats.js';

/** No hit/miss accounting (most commands). */
export const RULE_NONE = 0;
/** One lookup: a nil reply is a miss, any other value a hit. */
export const RULE_NIL = 1;
/** One lookup: a nil reply or an empty array (the COUNT forms) is a miss, anything else a hit. */
export const RULE_NIL_OR_EMPTY = 2;
/** One lookup per element of the array reply: a nil element is a miss, any other a hit. */
export const RULE_ELEMENTS_NIL = 3;
/** One lookup per element of the array reply: 1 is a hit, 0 a miss. */
export const RULE_ELEMENTS_BOOL = 4;
/** One lookup per key: the integer reply n of k keys gives n hits and k - n misses. */
export const RULE_COUNT = 5;
/** One lookup: :1 is a hit, :0 a miss. */
export const RULE_BOOL = 6;
/** One lookup: an empty reply (empty array, empty string or nil) is a miss, anything else a hit. */
export const RULE_EMPTY = 7;

export interface HitMissRule {
  readonly rule: number;
  /** The rule's name in docs and in the /metrics help text. */
  readonly name: string;
  readonly commands: readonly string[];
  /** What a hit and a miss are, in words (docs/observability.md shows this table). */
  readonly doc: string;
}

export const HIT_MISS_RULES: readonly HitMissRule[] = Object.freeze(
  [
    {
      rule: RULE_NIL,
      name: 'nil',
      commands: ['get', 'getex', 'getdel', 'hget', 'lindex', 'zscore', 'zrank', 'zrevrank'],
      doc: 'nil reply = miss; any value = hit',
    },
    {
      rule: RULE_NIL_OR_EMPTY,
      name: 'nil-or-empty',
      commands: ['srandmember', 'hrandfield', 'lpos'],
      doc: 'nil or empty array (the COUNT forms) = miss; anything else = hit',
    },
    {
      rule: RULE_ELEMENTS_NIL,
      name: 'per-element nil',
      commands: ['mget', 'hmget', 'zmscore'],
      doc: 'one lookup per requested key / field / member: nil element = miss, value = hit; a split MGET is counted per fragment on the shard that answered it',
    },
    {
      rule: RULE_ELEMENTS_BOOL,
      name: 'per-element 0/1',
      commands: ['smismember'],
      doc: 'one lookup per member: 1 = hit, 0 = miss',
    },
    {
      rule: RULE_COUNT,
      name: 'count',
      commands: ['exists'],
      doc: 'one lookup per key: reply n for k keys = n hits and k - n misses (per fragment when split across shards)',
    },
    {
      rule: RULE_BOOL,
      name: '0/1',
      commands: ['sismember', 'hexists'],
      doc: ':1 = hit, :0 = miss',
    },
    {
      rule: RULE_EMPTY,
      name: 'empty',
      commands: [
        'hgetall',
        'hkeys',
        'hvals',
        'smembers',
        'lrange',
        'zrange',
        'zrangebyscore',
        'zrevrange',
        'zrevrangebyscore',
        'zrangebylex',
        'zrevrangebylex',
        'xrange',
        'xrevrange',
        'getrange',
        'substr',
      ],
      doc: 'empty reply (empty array or empty string: what a missing key reads as) = miss; anything else = hit',
    },
  ].map((r) => Object.freeze({ ...r, commands: Object.freeze(r.commands) })),
);

const BY_COMMAND: ReadonlyMap<string, number> = (() => {
  const m = new Map<string, number>();
  for (const r of HIT_MISS_RULES) {
    for (const c of r.commands) {
      if (m.has(c)) throw new Error(`hit-miss rules: command '${c}' appears in two rules`);
      m.set(c, r.rule);
    }
  }
  return m;
})();

/** The rule for a command name (lowercase, as in the command table), RULE_NONE if it is not a cache lookup. */
export function hitMissRule(command: string): number {
  return BY_COMMAND.get(command) ?? RULE_NONE;
}

const DOLLAR = 36;
const STAR = 42;
const MINUS = 45;
const BANG = 33;
const COLON = 58;
const UNDERSCORE = 95;
const PERCENT = 37;
const TILDE = 126;
const ZERO = 48;
const ONE = 49;
const CR = 13;

/** $-1, *-1 (RESP2 nil) or _ (RESP3 null). */
function isNil(f: Buffer): boolean {
  const t = f[0];
  return t === UNDERSCORE || ((t === DOLLAR || t === STAR) && f[1] === MINUS);
}

/** *0, $0, %0, ~0: an aggregate or string of length zero. */
function isEmpty(f: Buffer): boolean {
  const t = f[0];
  return (t === STAR || t === DOLLAR || t === PERCENT || t === TILDE) && f[1] === ZERO && f[2] === CR;
}

/**
 * Applies `rule` to one complete reply frame that shard `stats` sent. `keys` is how many keys the frame answers
 * for (RULE_COUNT only: the keys of the command, or of the fragment).
 */
export function countHitMiss(rule: number, frame: Buffer, keys: number, stats: ShardStats): void {
  const t = frame[0];
  if (t === MINUS || t === BANG) return; // errors are neither
  switch (rule) {
    case RULE_NIL:
      if (isNil(frame)) stats.misses++;
      else stats.hits++;
      return;
    case RULE_NIL_OR_EMPTY:
    case RULE_EMPTY:
      if (isNil(frame) || isEmpty(frame)) stats.misses++;
      else stats.hits++;
      return;
    case RULE_BOOL:
      if (t !== COLON) return;
      if (frame[1] === ONE && frame[2] === CR) stats.hits++;
      else if (frame[1] === ZERO && frame[2] === CR) stats.misses++;
      return;
    case RULE_COUNT: {
      if (t !== COLON) return;
      let n = 0;
      for (let i = 1; i < frame.length && frame[i] !== CR; i++) n = n * 10 + (frame[i] - ZERO);
      if (n > keys) n = keys;
      stats.hits += n;
      stats.misses += keys - n;
      return;
    }
    case RULE_ELEMENTS_NIL:
    case RULE_ELEMENTS_BOOL:
      countElements(rule, frame, stats);
      return;
    default:
  }
}

function countElements(rule: number, frame: Buffer, stats: ShardStats): void {
  if (frame[0] !== STAR && frame[0] !== TILDE) return;
  if (frame[1] === MINUS) return; // nil array
  let n = 0;
  let pos = 1;
  while (pos < frame.length && frame[pos] !== CR) n = n * 10 + (frame[pos++] - ZERO);
  pos += 2;
  let hits = 0;
  let misses = 0;
  for (let i = 0; i < n; i++) {
    const t = frame[pos];
    if (rule === RULE_ELEMENTS_NIL) {
      if (t === DOLLAR && frame[pos + 1] === MINUS) {
        misses++;
        pos += 5;
        continue;
      } // $-1\r\n
      if (t === UNDERSCORE) {
        misses++;
        pos += 3;
        continue;
      } // _\r\n
      if (t === MINUS || t === BANG) {
        /* an error element: neither */
      } else hits++;
    } else if (t === COLON) {
      if (frame[pos + 1] === ONE) hits++;
      else if (frame[pos + 1] === ZERO) misses++;
    }
    const end = elementEnd(frame, pos);
    if (end < 0) break;
    pos = end;
  }
  stats.hits += hits;
  stats.misses += misses;
}
