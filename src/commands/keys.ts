/**
 * Key finding: which arguments of one command invocation are keys, from the command's Redis 7 key specs
 * (begin_search index/keyword, find_keys range/keynum) plus keymux's option scans (SORT ... STORE dst, and the
 * options keymux refuses at run time such as XREAD BLOCK). It follows Redis's own getKeysUsingKeySpecs (db.c)
 * so that its answer equals the server's COMMAND GETKEYS; the live test proves it on a corpus of invocations.
 * Invariants: no strings and no allocation per call (key indexes go into a caller-owned array); malformed input
 * gives a negative KEYS_ERROR_* code, never a guess; a key spec keymux cannot follow (type unknown, flag
 * incomplete) makes every invocation fail with KEYS_ERROR_UNKNOWN_SPEC unless an option scan covers it.
 */
import type { CommandSpec, KeySpec, OptionScan } from './spec.js';

/** Wrong number of arguments for the command's arity. */
export const KEYS_ERROR_ARITY = -1;
/** Arguments do not fit the key spec (a keyword with nothing after it, an option missing its argument). */
export const KEYS_ERROR_SYNTAX = -2;
/** numkeys is not an integer. */
export const KEYS_ERROR_NUMKEYS_NOT_INTEGER = -3;
/** numkeys is negative. */
export const KEYS_ERROR_NUMKEYS_NEGATIVE = -4;
/** numkeys is larger than the arguments that follow it. */
export const KEYS_ERROR_NUMKEYS_TOO_LARGE = -5;
/** This invocation names no key (EVAL script 0), so there is no shard to route it to. */
export const KEYS_ERROR_NO_KEYS = -6;
/** The command has a key spec keymux cannot follow (unknown or incomplete): refuse rather than guess. */
export const KEYS_ERROR_UNKNOWN_SPEC = -7;
/** The invocation uses an option keymux refuses (XREAD BLOCK, SORT BY/GET, COPY DB): see spec.options. */
export const KEYS_ERROR_OPTION_REFUSED = -8;

const BEGIN_INDEX = 0;
const BEGIN_KEYWORD = 1;
const FIND_RANGE = 0;
const FIND_KEYNUM = 1;
const ACTION_SKIP = 0;
const ACTION_KEY = 1;
const ACTION_REFUSE = 2;
const ACTION_PATTERN = 3;
const ACTION_DB = 4;
const ACTION_LAST_KEY = 5;

/** One usable key spec, flattened into a fixed-shape object. */
export class KeyStep {
  constructor(
    readonly begin: number,
    /** BEGIN_INDEX: position (negative = from the end). */
    readonly pos: number,
    /** BEGIN_KEYWORD: lowercase keyword bytes. */
    readonly keyword: Buffer | null,
    readonly startFrom: number,
    readonly find: number,
    readonly lastKey: number,
    readonly step: number,
    readonly limit: number,
    readonly keyNumIdx: number,
    readonly firstKey: number,
  ) {}
}

/** An option scan with its keywords as lowercase bytes. */
export class CompiledOptions {
  constructor(
    readonly start: number,
    readonly stopAt: Buffer | null,
    readonly keywords: readonly Buffer[],
    readonly args: Int32Array,
    readonly actions: Uint8Array,
  ) {}
}

/** What findKeyIndexes runs for one spec; built once per spec by the command table. */
export class KeyFinder {
  constructor(
    /** 0, or the KEYS_ERROR_* every invocation gets (a key spec keymux cannot follow). */
    readonly error: number,
    readonly steps: readonly KeyStep[],
    readonly options: CompiledOptions | null,
    /** True when the command has at least one key spec (that is not not_key) or an option that names a key. */
    readonly mayHaveKeys: boolean,
  ) {}
}

/** Compiles key specs (and an option scan) into a KeyFinder. Key specs flagged not_key are skipped. */
export function compileKeyFinder(keySpecs: readonly KeySpec[], options: OptionScan | null | undefined): KeyFinder {
  const steps: KeyStep[] = [];
  let error = 0;
  let mayHaveKeys = false;
  for (const ks of keySpecs) {
    if (ks.flags.includes('not_key')) continue;
    mayHaveKeys = true;
    const b = ks.begin;
    const f = ks.find;
    if (b.kind === 'unknown' || f.kind === 'unknown' || ks.flags.includes('incomplete')) {
      // An option scan describes what these specs cannot (SORT's STORE); without one, refuse.
      if (!options) error = KEYS_ERROR_UNKNOWN_SPEC;
      continue;
    }
    steps.push(
      new KeyStep(
        b.kind === 'index' ? BEGIN_INDEX : BEGIN_KEYWORD,
        b.kind === 'index' ? b.pos : 0,
        b.kind === 'keyword' ? Buffer.from(b.keyword.toLowerCase(), 'latin1') : null,
        b.kind === 'keyword' ? b.startFrom : 0,
        f.kind === 'range' ? FIND_RANGE : FIND_KEYNUM,
        f.kind === 'range' ? f.lastKey : 0,
        Math.max(1, f.step),
        f.kind === 'range' ? f.limit : 0,
        f.kind === 'keynum' ? f.keyNumIdx : 0,
        f.kind === 'keynum' ? f.firstKey : 0,
      ),
    );
  }
  let compiled: CompiledOptions | null = null;
  if (options) {
    const n = options.rules.length;
    const args = new Int32Array(n);
    const actions = new Uint8Array(n);
    options.rules.forEach((r, i) => {
      args[i] = r.args;
      actions[i] =
        r.action === 'key'
          ? ACTION_KEY
          : r.action === 'refuse'
            ? ACTION_REFUSE
            : r.action === 'pattern'
              ? ACTION_PATTERN
              : r.action === 'db'
                ? ACTION_DB
                : r.action === 'last-key'
                  ? ACTION_LAST_KEY
                  : ACTION_SKIP;
      if (r.action === 'key' || r.action === 'last-key') mayHaveKeys = true;
    });
    compiled = new CompiledOptions(
      options.start,
      options.stopAt === null ? null : Buffer.from(options.stopAt.toLowerCase(), 'latin1'),
      options.rules.map((r) => Buffer.from(r.keyword.toLowerCase(), 'latin1')),
      args,
      actions,
    );
  }
  return new KeyFinder(error, steps, compiled, mayHaveKeys);
}

const compiledFor = new WeakMap<CommandSpec, KeyFinder>();

function finderOf(spec: CommandSpec): KeyFinder {
  if (spec.keyFinder !== undefined) return spec.keyFinder;
  let f = compiledFor.get(spec);
  if (f === undefined) {
    f = compileKeyFinder(spec.keySpecs, spec.options);
    compiledFor.set(spec, f);
  }
  return f;
}

/**
 * Writes the indexes (into args; args[0] is the command name) of the key arguments of one invocation into `out`,
 * starting at out[0], in key-spec order, and returns how many; or a negative KEYS_ERROR_* code (see
 * keysErrorReply). Zero keys is reported as KEYS_ERROR_NO_KEYS: there is nothing to route by.
 * The arity is checked first. For a container command pass the subcommand's spec (resolveSubcommand).
 */
export function findKeyIndexes(spec: CommandSpec, args: Buffer[], out: number[]): number {
  const argc = args.length;
  const arity = spec.arity;
  if (arity >= 0 ? argc !== arity : argc < -arity) return KEYS_ERROR_ARITY;
  const finder = finderOf(spec);
  if (finder.error !== 0) return finder.error;
  const opts = finder.options;
  // Options that end at a keyword (XREAD/XREADGROUP ... STREAMS): the keys start after the keyword where the option
  // scan stops, not after the first argument spelling it. A group or consumer named "streams" comes before it;
  // Redis's xreadGetKeys walks the options the same way (its key spec's keyword search would take the name).
  let endsAt = -1;
  if (opts !== null && opts.stopAt !== null) {
    const scanned = scanOptions(opts, args, out, 0);
    if (scanned < 0) return scanned;
    endsAt = optionsEnd;
  }
  let n = 0;
  const steps = finder.steps;
  for (let s = 0; s < steps.length; s++) {
    const st = steps[s];
    let first = 0;
    if (st.begin === BEGIN_INDEX) {
      first = st.pos >= 0 ? st.pos : argc + st.pos;
    } else if (endsAt >= 0 && opts !== null && equalsLower(opts.stopAt as Buffer, st.keyword as Buffer)) {
      if (endsAt >= argc) continue; // the keyword is absent: this spec names no key
      first = endsAt + 1;
    } else {
      // As Redis: forward from startfrom up to (not including) the last argument, or backward from
      // argc+startfrom down to (not including) argument 0; the keys start after the keyword.
      const kw = st.keyword as Buffer;
      const from = st.startFrom > 0 ? st.startFrom : argc + st.startFrom;
      const to = st.startFrom > 0 ? argc - 1 : 0;
      const forward = from <= to;
      for (let i = from; i !== to; i = forward ? i + 1 : i - 1) {
        if (i >= argc || i < 1) break;
        if (equalsLower(args[i], kw)) {
          first = i + 1;
          break;
        }
      }
      if (first === 0) continue; // keyword absent: this spec names no key
    }
    let last: number;
    if (st.find === FIND_RANGE) {
      if (st.lastKey >= 0) last = first + st.lastKey;
      else if (st.limit === 0) last = argc + st.lastKey;
      else last = first + Math.trunc((argc - first) / st.limit) + st.lastKey;
      // An open-ended range starting past the end is empty (PFMERGE dst): no keys from this spec. Redis's
      // GETKEYS calls the whole invocation invalid here, but the server runs it, so keymux routes by the others.
      if (st.lastKey < 0 && first >= argc) continue;
    } else {
      const at = first + st.keyNumIdx;
      if (at >= argc || at < 1) return KEYS_ERROR_SYNTAX;
      const numkeys = parseInteger(args[at]);
      if (Number.isNaN(numkeys)) return KEYS_ERROR_NUMKEYS_NOT_INTEGER;
      if (numkeys < 0) return KEYS_ERROR_NUMKEYS_NEGATIVE;
      first += st.firstKey;
      if (numkeys === 0) continue; // no keys from this spec (the server judges whether 0 is allowed)
      last = first + numkeys - 1;
      if (last >= argc) return KEYS_ERROR_NUMKEYS_TOO_LARGE;
    }
    if (first < 1 || first >= argc || last >= argc || last < first) return KEYS_ERROR_SYNTAX;
    // A key/value range (MSET) must end on a whole group, or the split would pair a key with no value.
    if (st.step > 1 && st.lastKey < 0 && st.limit === 0 && (last - first + 1) % st.step !== 0) return KEYS_ERROR_ARITY;
    for (let i = first; i <= last; i += st.step) out[n++] = i;
  }
  if (opts !== null) {
    n = scanOptions(opts, args, out, n);
    if (n < 0) return n;
  }
  return n === 0 ? KEYS_ERROR_NO_KEYS : n;
}

/** Where the last scanOptions stopped: the index of its stop keyword, or the argument count when none came. */
let optionsEnd = 0;

function scanOptions(o: CompiledOptions, args: Buffer[], out: number[], n: number): number {
  const argc = args.length;
  const keywords = o.keywords;
  let lastKeyAt = -1;
  let i = o.start;
  optionsEnd = argc;
  while (i < argc) {
    const a = args[i];
    if (o.stopAt !== null && equalsLower(a, o.stopAt)) {
      optionsEnd = i;
      return n;
    }
    let r = -1;
    for (let k = 0; k < keywords.length; k++) {
      if (equalsLower(a, keywords[k])) {
        r = k;
        break;
      }
    }
    if (r < 0) return KEYS_ERROR_SYNTAX;
    const nargs = o.args[r];
    if (i + nargs >= argc) return KEYS_ERROR_SYNTAX;
    const action = o.actions[r];
    if (action === ACTION_REFUSE) return KEYS_ERROR_OPTION_REFUSED;
    if (action === ACTION_KEY) out[n++] = i + 1;
    else if (action === ACTION_LAST_KEY) {
      if (lastKeyAt < 0) lastKeyAt = n++;
      out[lastKeyAt] = i + 1;
    }
    // A pattern without `*` names no key (sort.c lookupKeyByPattern): BY nosort, GET #.
    else if (action === ACTION_PATTERN && args[i + 1].includes(42 /* * */)) return KEYS_ERROR_OPTION_REFUSED;
    else if (action === ACTION_DB) {
      const db = parseInteger(args[i + 1]);
      if (Number.isNaN(db)) return KEYS_ERROR_NUMKEYS_NOT_INTEGER; // "value is not an integer or out of range"
      if (db !== 0) return KEYS_ERROR_OPTION_REFUSED;
    }
    i += 1 + nargs;
  }
  return n;
}

/**
 * A key-finding result the server answers in its own words without running anything: no key at all (EVAL script
 * 0, SINTERCARD 0...) or a numkeys it rejects (not an integer, negative, more than the arguments). Dispatch sends
 * such an invocation to the keyless shard rather than wording the error itself (each command words it its way).
 */
export function isKeylessOrBadNumkeys(n: number): boolean {
  return (
    n === KEYS_ERROR_NO_KEYS ||
    n === KEYS_ERROR_NUMKEYS_NOT_INTEGER ||
    n === KEYS_ERROR_NUMKEYS_NEGATIVE ||
    n === KEYS_ERROR_NUMKEYS_TOO_LARGE
  );
}

/** Case-insensitive (ASCII) compare of an argument with lowercase bytes. */
export function equalsLower(arg: Buffer, lower: Buffer): boolean {
  const len = lower.length;
  if (arg.length !== len) return false;
  for (let i = 0; i < len; i++) {
    let c = arg[i];
    if (c >= 65 && c <= 90) c |= 32;
    if (c !== lower[i]) return false;
  }
  return true;
}

/** The digits of 2^63 - 1 and 2^63 (the largest magnitudes of a signed 64-bit integer, positive and negative). */
const INT64_MAX_DIGITS = Buffer.from('9223372036854775807');
const INT64_MIN_DIGITS = Buffer.from('9223372036854775808');

/**
 * Parses a decimal integer argument with Redis's string2ll rules (optional '-', no '+', no leading zeros, no
 * spaces, fits in 64 bits); NaN when it is not one. Values beyond 2^53 lose precision but stay huge. The 64-bit
 * bound is checked on the digits: as doubles, values from 2^63 - 1024 up round to 2^63 and cannot be told apart.
 */
export function parseInteger(b: Buffer): number {
  const len = b.length;
  if (len === 0 || len > 20) return NaN;
  let i = 0;
  let neg = false;
  if (b[0] === 45) {
    // '-'
    if (len === 1) return NaN;
    neg = true;
    i = 1;
  }
  if (b[i] === 48) return len === i + 1 && !neg ? 0 : NaN; // "0" only; no "-0", no leading zeros
  const digits = len - i;
  if (digits > 19) return NaN;
  let v = 0;
  for (let at = i; at < len; at++) {
    const c = b[at] - 48;
    if (c < 0 || c > 9) return NaN;
    v = v * 10 + c;
  }
  if (digits > 15) {
    // 19 digits: at most 2^63 - 1 (or 2^63 negated); same length, so comparing the digits compares the values.
    if (digits === 19 && b.compare(neg ? INT64_MIN_DIGITS : INT64_MAX_DIGITS, 0, 19, i, len) > 0) return NaN;
    v = Number(b.toString('latin1', i, len)); // rounded once (the loop's sum rounds at each step past 2^53)
  }
  return neg ? -v : v;
}

const GENERIC_REPLIES = new Map<number, Buffer>([
  [KEYS_ERROR_ARITY, Buffer.from('-ERR wrong number of arguments\r\n')],
  [KEYS_ERROR_SYNTAX, Buffer.from('-ERR syntax error\r\n')],
  [KEYS_ERROR_NUMKEYS_NOT_INTEGER, Buffer.from('-ERR value is not an integer or out of range\r\n')],
  [KEYS_ERROR_NUMKEYS_NEGATIVE, Buffer.from("-ERR Number of keys can't be negative\r\n")],
  [KEYS_ERROR_NUMKEYS_TOO_LARGE, Buffer.from("-ERR Number of keys can't be greater than number of args\r\n")],
  [KEYS_ERROR_NO_KEYS, Buffer.from('-ERR keymux: the command has no key to route by\r\n')],
  [KEYS_ERROR_UNKNOWN_SPEC, Buffer.from('-ERR keymux: the key positions of the command cannot be determined\r\n')],
  [KEYS_ERROR_OPTION_REFUSED, Buffer.from('-ERR keymux: an option of the command is not supported\r\n')],
]);
const UNKNOWN_CODE = Buffer.from('-ERR keymux: cannot find the keys of the command\r\n');

const namedReplies = new WeakMap<CommandSpec, Map<number, Buffer>>();

/**
 * The encoded RESP error reply for a KEYS_ERROR_* code; with the spec, the message names the command the way
 * Redis does ("-ERR wrong number of arguments for 'get' command"). Replies are built once per spec and code
 * (the error path), then reused.
 */
export function keysErrorReply(code: number, spec?: CommandSpec): Buffer {
  if (spec === undefined) return GENERIC_REPLIES.get(code) ?? UNKNOWN_CODE;
  let m = namedReplies.get(spec);
  if (m === undefined) {
    m = new Map();
    namedReplies.set(spec, m);
  }
  let r = m.get(code);
  if (r === undefined) {
    r = namedReply(code, spec);
    m.set(code, r);
  }
  return r;
}

function namedReply(code: number, spec: CommandSpec): Buffer {
  const name = spec.name;
  switch (code) {
    case KEYS_ERROR_ARITY:
      return Buffer.from(`-ERR wrong number of arguments for '${name}' command\r\n`);
    case KEYS_ERROR_NO_KEYS:
      return Buffer.from(`-ERR keymux: command '${name}' has no key to route by\r\n`);
    case KEYS_ERROR_UNKNOWN_SPEC:
      return Buffer.from(`-ERR keymux: command '${name}' has key positions keymux cannot determine\r\n`);
    case KEYS_ERROR_OPTION_REFUSED:
      return (
        spec.options?.refuseReply ?? Buffer.from(`-ERR keymux: an option of command '${name}' is not supported\r\n`)
      );
    default:
      return GENERIC_REPLIES.get(code) ?? UNKNOWN_CODE;
  }
}
