/**
 * The vocabulary the configuration is declared in (schema.ts declares it): zod schemas for each kind of option
 * (an integer in a range, "host:port", one of a list, a section, a list...), each carrying keymux's own wording
 * for what is wrong and the metadata the JSON Schema shows editors; cross-field rules; and the formatter that
 * turns zod's issues into `file:line: path: what is wrong` lines. Nothing here knows a particular option.
 *
 * Why the wording lives in the builders: every schema built here passes zod an `error` function, so zod never
 * writes a message of its own; each issue arrives already phrased (zod's per-schema error maps take precedence
 * over its locale). What one issue cannot say alone (an unknown key with its "did you mean", a clash that names
 * the line of the first item, a rule reported on the key that was written) travels in the issue's `params.keymux`
 * and is completed by formatIssues, which also knows the document's lines.
 */

import { isIP, isIPv6 } from 'node:net';
import { z } from 'zod';

/** A path into the YAML document: mapping keys and sequence indexes, e.g. ['shards', 1, 'slots', 0]. */
export type ConfigPath = ReadonlyArray<string | number>;

/** Maps a path to the 1-based line where it is written, or null when the path is not in the document. */
export type Locate = (path: ConfigPath) => number | null;

export interface HostPort {
  host: string;
  port: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Words

type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/** How a value is named in messages: `an integer (5)`, `a string ("x")`, `a list`, `a mapping`, `null`. */
export function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') {
    const shown = v.length > 40 ? `${v.slice(0, 40)}...` : v;
    return `a string (${JSON.stringify(shown)})`;
  }
  if (typeof v === 'number') return Number.isInteger(v) ? `an integer (${v})` : `a number (${v})`;
  if (typeof v === 'boolean') return `a boolean (${v})`;
  // A value that is not plain data, replaced by plainData() with a symbol naming it (no schema accepts one).
  if (typeof v === 'symbol') return v.description ?? 'a symbol';
  if (Array.isArray(v)) return 'a list';
  if (isObj(v)) return 'a mapping';
  return `a ${(v as object).constructor?.name ?? typeof v} value`;
}

/** "; quote it to make it a string" when a YAML scalar was read as a number or boolean. */
function quoteHint(v: unknown): string {
  return typeof v === 'number' || typeof v === 'boolean' ? '; quote it to make it a string' : '';
}

/**
 * A `__proto__` key (YAML allows it) under another name while validating: zod skips a key of that name instead
 * of calling it unknown, and assigning it to a plain object would replace the object's prototype.
 */
const PROTO_KEY = '\u0000__proto__';

/**
 * A copy of a document in which every value that is not plain data (a Map, a Date, a class instance: only
 * possible when validateConfig is called with a hand-built value) is a symbol naming it, so that it fails the
 * type check of whatever schema meets it, as YAML never produces one; and a `__proto__` key is PROTO_KEY.
 * Shared (aliased) values stay shared.
 */
export function plainData(v: unknown, seen = new Map<object, unknown>()): unknown {
  if (v === null || typeof v !== 'object') return v;
  const known = seen.get(v);
  if (known !== undefined) return known;
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    seen.set(v, out);
    for (const item of v) out.push(plainData(item, seen));
    return out;
  }
  if (!isObj(v)) return Symbol(describeValue(v));
  const out: Obj = {};
  seen.set(v, out);
  for (const [k, item] of Object.entries(v)) out[k === '__proto__' ? PROTO_KEY : k] = plainData(item, seen);
  return out;
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
 * fnv1a64), else the nearest within edit distance 2 and shorter than the word (conections), else the closest one
 * it is a prefix of or that is a prefix of it (timeout -> timeout_ms, warning -> warn).
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

// ---------------------------------------------------------------------------------------------------------------
// Addresses

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

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Same host (case-insensitive) and port; port 0 ("any free port") is never the same as anything. */
export function sameAddress(a: HostPort, b: HostPort): boolean {
  return a.port === b.port && a.port !== 0 && a.host.toLowerCase() === b.host.toLowerCase();
}

/** What editors check an address against (keymux's own parser, above, is stricter and says what is wrong). */
const ADDRESS_PATTERN = '^\\s*(\\[[0-9A-Fa-f:.]+(%[^\\]]+)?\\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\\s*$';

// ---------------------------------------------------------------------------------------------------------------
// Option builders. Each returns a zod schema; the declaration chains .default(...) and .describe(...) onto it.

const rangeIssue = (code: string): boolean => code === 'too_small' || code === 'too_big';

/**
 * An integer; `error` words every issue. Not z.int(): its "not an integer" issue aborts explicitly, which would
 * also stop every rule above it (a duplicate shard name would go unreported because a timeout was 1.5).
 */
export function integer(error: (iss: { code: string; input?: unknown }) => string) {
  return z
    .number({ error })
    .check((payload) => {
      if (!Number.isInteger(payload.value)) {
        payload.issues.push({ code: 'invalid_type', expected: 'int', input: payload.value });
      }
    })
    .meta({ type: 'integer' });
}

/** An integer in [min, max]. */
export function int(min: number, max: number) {
  return integer((iss) =>
    rangeIssue(iss.code)
      ? `must be between ${min} and ${max}, got ${String(iss.input)}`
      : `expected an integer, got ${describeValue(iss.input)}`,
  )
    .min(min)
    .max(max);
}

/** A number (decimals allowed) in [min, max], or in (min, max] with `exclusiveMin`. */
export function num(min: number, max: number, { exclusiveMin = false } = {}) {
  const range = exclusiveMin ? `must be greater than ${min} and at most ${max}` : `must be between ${min} and ${max}`;
  const base = z.number({
    error: (iss) =>
      rangeIssue(iss.code)
        ? `${range}, got ${String(iss.input)}`
        : `expected a number, got ${describeValue(iss.input)}`,
  });
  return (exclusiveMin ? base.gt(min) : base.min(min)).max(max);
}

export function bool() {
  return z.boolean({ error: (iss) => `expected true or false, got ${describeValue(iss.input)}` });
}

/** One of a fixed list of words; a near miss gets a "did you mean". Without a .default() it is required. */
export function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  const list = values.join(', ');
  return z.enum(values, {
    error: (iss) => {
      const v = iss.input;
      if (v === undefined) return `required (one of: ${list})`;
      if (typeof v !== 'string') return `expected one of: ${list}; got ${describeValue(v)}`;
      const near = suggest(v, values);
      return `expected one of: ${list}; got ${JSON.stringify(v)}` + (near !== null ? ` (did you mean "${near}"?)` : '');
    },
  });
}

/** A non-empty string or null (absent = null): secrets, user names, file names. */
export function optionalText() {
  return (
    z
      .string({ error: (iss) => `expected a string or null, got ${describeValue(iss.input)}${quoteHint(iss.input)}` })
      // Not .min(1): zod runs length checks on anything with a length, even a list that already failed as a string.
      .refine((s) => s !== '', { error: 'must not be empty (use null, or leave it out, for none)' })
      .meta({ minLength: 1 })
      .nullable()
      .prefault(null)
  );
}

/** A required string with something other than spaces in it: names, passwords. */
export function text() {
  return z
    .string({
      error: (iss) =>
        iss.input === undefined
          ? 'required'
          : `expected a string, got ${describeValue(iss.input)}${quoteHint(iss.input)}`,
    })
    .regex(/\S/, { error: 'must not be empty' });
}

/**
 * "host:port" (IPv6 as "[::1]:port"), read into { host, port }. `minPort` 0 for addresses keymux listens on (0 =
 * any free port), 1 for those it connects to. `required` is the message when the key is missing.
 */
export function address(minPort: 0 | 1, required = 'required (e.g. "127.0.0.1:7001")') {
  return z
    .string({
      error: (iss) =>
        iss.input === undefined
          ? required
          : `expected "host:port" (a string), got ${describeValue(iss.input)}` +
            (typeof iss.input === 'number' ? `; write e.g. "127.0.0.1:${iss.input}"` : ''),
    })
    .transform((s, ctx): HostPort => {
      const hp = parseHostPort(s, minPort);
      if (typeof hp === 'string') {
        ctx.issues.push({ code: 'custom', message: hp, input: s });
        return z.NEVER;
      }
      return hp;
    })
    .meta({ pattern: ADDRESS_PATTERN });
}

// ---------------------------------------------------------------------------------------------------------------
// Mappings, sections and lists

/**
 * A check of several values together (a duplicate name, max >= base, a slot gap), attached to the mapping or list
 * that holds them. It runs once the values are parsed, even when some of them failed, so its errors come with
 * everyone else's; `cx.ok(path)` says whether a value (path relative to the mapping or list) parsed, and a rule
 * reads only values that did. Values of failed keys are whatever was written; absent keys hold their defaults.
 */
export type Rule<T> = (value: T, cx: RuleContext) => void;

export interface RuleContext {
  /** True when nothing at, under or above `path` failed (rules' own errors aside). */
  ok(path?: ConfigPath): boolean;
  /**
   * Reports `message` at `path`. `orIfAbsent`: when `path`'s last key is not written in the document, report on
   * this sibling key instead (the one the reader wrote).
   */
  error(path: ConfigPath, message: string, options?: { orIfAbsent?: string }): void;
  /**
   * Reports a clash with an earlier item at `first`: `message` gets its name and line, e.g. "shards[0] at line 3";
   * the line is that of `first` + `firstKey` when written, else of `first`.
   */
  clash(path: ConfigPath, first: ConfigPath, message: (first: string) => string, firstKey?: string): void;
}

/** What formatIssues needs beyond an issue's message; carried in `params.keymux`. */
interface IssueParams {
  /** The issue is an unknown key of a mapping that knows these keys. */
  unknownKey?: readonly string[];
  /** Raised by a rule (not a failed value). */
  rule?: true;
  orIfAbsent?: string;
  /** A clash: `path` and `key` relative to the rule's schema, whose issue path had `depth` parts. */
  ref?: { path: ConfigPath; key: string | undefined; depth: number; message: (first: string) => string };
}

function paramsOf(issue: { code: string; params?: unknown }): IssueParams | undefined {
  return issue.code === 'custom' ? (issue.params as { keymux?: IssueParams } | undefined)?.keymux : undefined;
}

const startsWith = (path: ConfigPath, prefix: ConfigPath): boolean => prefix.every((p, i) => path[i] === p);

function rule<T>(fn: Rule<T>): z.core.$ZodCheck<T> {
  return z.superRefine<T>(
    (value, ctx) => {
      const failed = ctx.issues.filter((i) => !paramsOf(i)?.rule).map((i) => (i.path ?? []) as ConfigPath);
      const add = (path: ConfigPath, message: string, keymux: IssueParams): void =>
        ctx.addIssue({ code: 'custom', path: [...path], message, params: { keymux: { ...keymux, rule: true } } });
      fn(value, {
        // Not ok: something under `path` failed, or something above it (a list item that is not a mapping).
        ok: (path = []) => !failed.some((p) => startsWith(p, path) || (p.length > 0 && startsWith(path, p))),
        error: (path, message, options) => add(path, message, { orIfAbsent: options?.orIfAbsent }),
        clash: (path, first, message, firstKey) =>
          add(path, message(formatPath(first)), { ref: { path: first, key: firstKey, depth: path.length, message } }),
      });
    },
    // Runs unless the value itself has the wrong type (a string where the mapping should be).
    { when: (payload) => !payload.issues.some((i) => (i.path?.length ?? 0) === 0 && !paramsOf(i)?.rule) },
  );
}

interface MappingOptions<T> {
  /** Says what the mapping is in "expected X, got Y" (default "a mapping"). */
  what?: string;
  /** Message when the mapping is missing or null (mappings that are required). */
  required?: string;
  rule?: Rule<T>;
  /** Extra JSON Schema keywords for editors (e.g. dependentRequired), next to the rule they approximate. */
  jsonSchema?: Record<string, unknown>;
}

/**
 * A mapping with exactly these keys: any other key is an error naming the nearest known one. Missing keys take
 * their .default(); keys without one are required.
 */
export function mapping<S extends z.ZodRawShape>(shape: S, options: MappingOptions<z.output<z.ZodObject<S>>> = {}) {
  const known = Object.keys(shape);
  const unknownKey = z.unknown().superRefine((_, ctx) => {
    ctx.addIssue({ code: 'custom', message: 'unknown key', params: { keymux: { unknownKey: known } } });
  });
  const what = options.what ?? 'a mapping';
  let schema = z
    .object(shape, {
      error: (iss) =>
        (iss.input === undefined || iss.input === null) && options.required !== undefined
          ? options.required
          : `expected ${what}, got ${describeValue(iss.input)}`,
    })
    // Unknown keys go through a catchall (not a strict object) so each gets its own issue at its own path.
    .catchall(unknownKey) as unknown as z.ZodObject<S, z.core.$strict>;
  if (options.rule) schema = schema.check(rule(options.rule));
  return schema.meta({ additionalProperties: false, ...options.jsonSchema });
}

/** A mapping of options that all have defaults: absent or null (`backend:` with nothing under it) = all defaults. */
export function section<S extends z.ZodRawShape>(shape: S, options: MappingOptions<z.output<z.ZodObject<S>>> = {}) {
  const inner = mapping(shape, options);
  return inner.nullish().transform((v) => v ?? inner.parse({}));
}

interface ListOptions<T> {
  /** The message for a value that is not a list (undefined when the key is missing, unless `orEmpty`). */
  expected: (v: unknown) => string;
  /** The message for an empty list; without it an empty list is fine. */
  nonEmpty?: string;
  /** Absent or null = an empty list. */
  orEmpty?: boolean;
  rule?: Rule<T[]>;
}

export function list<I extends z.ZodType>(item: I, options: ListOptions<z.output<I>>) {
  const base = z.array(item, {
    error: (iss) => options.expected(iss.input),
  });
  // A refinement, not .min(1), which zod would also run on a string that failed as a list ("" has a length).
  let schema =
    options.nonEmpty !== undefined
      ? base.refine((v) => v.length > 0, { error: options.nonEmpty }).meta({ minItems: 1 })
      : base;
  if (options.rule) schema = schema.check(rule(options.rule));
  return schema;
}

/** A list that may be absent or null, which reads as []. */
export function orEmpty<T>(schema: z.ZodType<T[]>) {
  return schema
    .nullish()
    .transform((v): T[] => v ?? [])
    .prefault([]);
}

/**
 * A value written either as a mapping (`mapped`) or in a short form (`short`, anything that is not a mapping,
 * usually a "host:port" string), e.g. `admin: 127.0.0.1:9121` or `admin: { address: ..., token_file: ... }`; null
 * reads as null. Validation picks the form by what was written and reports that form's own issues at their own
 * paths, worded by its own builders (a z.union would fold them into one "invalid union" issue); editors see an
 * anyOf of both forms and null.
 */
export function shortOrMapping<S extends z.ZodType, M extends z.ZodType>(short: S, mapped: M) {
  const schema = z.unknown().transform((v, ctx): z.output<S> | z.output<M> | null => {
    if (v === null) return null;
    const r = (isObj(v) ? mapped : short).safeParse(v, { reportInput: true });
    if (r.success) return r.data as z.output<S> | z.output<M>;
    for (const issue of r.error.issues) ctx.issues.push(issue as unknown as (typeof ctx.issues)[number]);
    return z.NEVER;
  });
  // Read only when the JSON Schema is generated (config/keymux.schema.json), never when validating.
  const json = (s: z.ZodType): Record<string, unknown> => {
    const { $schema: _, ...rest } = z.toJSONSchema(s, { io: 'input', target: 'draft-2020-12' });
    return rest;
  };
  schema._zod.toJSONSchema = () => ({ anyOf: [json(short), json(mapped), { type: 'null' }] });
  return schema;
}

/** A key the current mode does not allow: an error when written; reads as `outside` (e.g. [] or null). */
export function notInMode<T>(modes: readonly string[], mode: string, outside: T): z.ZodType<T> {
  return z
    .unknown()
    .optional()
    .transform((v, ctx): T => {
      if (v !== undefined) {
        ctx.issues.push({
          code: 'custom',
          message: `only allowed when mode is ${modes.join(' or ')} (mode is ${mode})`,
          input: v,
        });
      }
      return outside;
    });
}

// ---------------------------------------------------------------------------------------------------------------
// From issues to messages

interface Located {
  path: ConfigPath;
  message: string;
  /** Set for unknown keys: the path of their mapping. */
  unknownIn: ConfigPath | null;
  line: number | null;
}

/**
 * Turns zod issues into `file:line: path: message` lines, sorted by line. Within a line, issues keep zod's
 * order (document order, declaration order within a mapping), except that a mapping's unknown keys come before
 * its other problems. `doc` is the document as given (for `orIfAbsent`), `locate` gives lines.
 */
export function formatIssues(issues: readonly z.core.$ZodIssue[], doc: unknown, locate: Locate, source: string) {
  const line = (path: ConfigPath): number | null => {
    for (let n = path.length; n >= 0; n--) {
      const found = locate(path.slice(0, n));
      if (found !== null && found > 0) return found;
    }
    return null;
  };
  const ordered: Located[] = [];
  for (const issue of issues) {
    let path: ConfigPath = (issue.path as ConfigPath).map((p) => (p === PROTO_KEY ? '__proto__' : p));
    let message = issue.message;
    const params = paramsOf(issue);
    let unknownIn: ConfigPath | null = null;
    if (params?.unknownKey) {
      const key = String(path[path.length - 1]);
      const near = suggest(key, params.unknownKey);
      message =
        near !== null
          ? `unknown key (did you mean "${near}"?)`
          : `unknown key; expected one of: ${params.unknownKey.join(', ')}`;
      unknownIn = path.slice(0, -1);
    }
    if (params?.orIfAbsent !== undefined && valueAt(doc, path) === undefined) {
      path = [...path.slice(0, -1), params.orIfAbsent];
    }
    if (params?.ref) {
      const first = [...path.slice(0, path.length - params.ref.depth), ...params.ref.path];
      const firstLine = line(params.ref.key === undefined ? first : [...first, params.ref.key]);
      message = params.ref.message(formatPath(first) + (firstLine === null ? '' : ` at line ${firstLine}`));
    }
    const located: Located = { path, message, unknownIn, line: line(path) };
    // A mapping's unknown keys go before the first other issue inside that mapping.
    const at = unknownIn ? ordered.findIndex((o) => o.unknownIn === null && startsWith(o.path, unknownIn)) : -1;
    if (at === -1) ordered.push(located);
    else ordered.splice(at, 0, located);
  }
  return ordered
    .map((o, seq) => ({ ...o, seq }))
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.seq - b.seq)
    .map((o) => {
      const where = o.line === null ? source : `${source}:${o.line}`;
      return o.path.length > 0 ? `${where}: ${formatPath(o.path)}: ${o.message}` : `${where}: ${o.message}`;
    });
}

function valueAt(doc: unknown, path: ConfigPath): unknown {
  let node = doc;
  for (const part of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, part)) return undefined;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node;
}
