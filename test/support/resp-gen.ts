/**
 * Reproducible random RESP for parser and scanner tests. Everything is driven by a seeded PRNG (sfc32), so a
 * failing case is replayed by its seed: test names carry the seed, and KEYMUX_SEED=<n> moves the base seed.
 * The encoders here are written independently of src/resp (a test must not use the code it checks as its oracle).
 * - randomCommand / randomInline: client commands (binary arguments with CR LF inside, empty and large ones) with
 *   the exact bytes a client sends and the arguments the parser must report.
 * - randomReply: RESP2 or RESP3 replies as a value tree (nested to a chosen depth: arrays, maps, sets,
 *   attributes, pushes, verbatim, big numbers, doubles, booleans, nulls), encoded with encodeReply.
 * - chunkings: the same bytes fed whole, byte by byte, and at random split points.
 * - redis-parser wrapper and a normaliser, for using redis-parser as the oracle on RESP2.
 */
import { createRequire } from 'node:module';

// ---- PRNG ---------------------------------------------------------------------------------------------------

/** sfc32: small, fast, good enough statistical quality, and identical on every platform. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  readonly seed: number;

  constructor(seed: number) {
    this.seed = seed;
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** The base seed: fixed (so runs are reproducible) unless KEYMUX_SEED overrides it. */
export const BASE_SEED = process.env.KEYMUX_SEED !== undefined ? Number(process.env.KEYMUX_SEED) : 20240611;

/** `count` consecutive seeds from the base seed. */
export function seeds(count: number, offset = 0): number[] {
  return Array.from({ length: count }, (_, i) => BASE_SEED + offset + i);
}

// ---- byte helpers -------------------------------------------------------------------------------------------

const CRLF = Buffer.from('\r\n');

function line(prefix: string, text: string | number | bigint): Buffer {
  return Buffer.from(`${prefix}${text}\r\n`, 'latin1');
}

/** Random argument or bulk payload: empty, a short word, binary bytes salted with CR LF and RESP markers, large. */
export function randomPayload(rng: Rng, opts: { large?: boolean } = {}): Buffer {
  const r = rng.float();
  if (r < 0.08) return Buffer.alloc(0);
  if (r < 0.4) return Buffer.from(rng.pick(WORDS), 'latin1');
  if (opts.large === true && r > 0.985) return salted(rng, rng.int(20_000, 300_000));
  return salted(rng, rng.int(1, 64));
}

const WORDS = [
  'GET',
  'SET',
  'mget',
  'key',
  'k:{user1}:a',
  'value',
  'OK',
  '0',
  '-1',
  '12345',
  'hello world',
  '*3',
  '$5',
];
const SALT = [
  Buffer.from('\r\n'),
  Buffer.from('\r'),
  Buffer.from('\n'),
  Buffer.from('*2\r\n'),
  Buffer.from('$-1\r\n'),
  Buffer.from('+OK\r\n'),
  Buffer.from([0]),
  Buffer.from([0xff, 0xfe]),
];

function salted(rng: Rng, n: number): Buffer {
  const out = rng.bytes(n);
  const marks = Math.min(8, n >> 2);
  for (let i = 0; i < marks; i++) {
    const s = rng.pick(SALT);
    const at = rng.int(0, n - 1);
    s.copy(out, at, 0, Math.min(s.length, n - at));
  }
  return out;
}

// ---- client commands ----------------------------------------------------------------------------------------

export interface GenCommand {
  /** Bytes the client sends. */
  input: Buffer;
  /** The frame the parser must report (input for multibulk; the multibulk re-encoding for inline); null = ignored. */
  frame: Buffer | null;
  /** The arguments the parser must report (empty when ignored). */
  args: Buffer[];
}

/** Multibulk encoding, written independently of encodeMultibulk. */
export function encodeCommand(args: Buffer[]): Buffer {
  const parts: Buffer[] = [line('*', args.length)];
  for (const a of args) parts.push(line('$', a.length), a, CRLF);
  return Buffer.concat(parts);
}

export function randomMultibulk(rng: Rng, opts: { large?: boolean; maxArgs?: number } = {}): GenCommand {
  const argc = rng.chance(0.05) ? rng.int(20, opts.maxArgs ?? 200) : rng.int(1, 6);
  const args: Buffer[] = [];
  for (let i = 0; i < argc; i++) args.push(randomPayload(rng, opts));
  const input = encodeCommand(args);
  return { input, frame: input, args };
}

/** Bytes allowed raw inside a quoted inline word (no quotes, backslash, CR, LF or NUL). */
function rawQuotedByte(rng: Rng, quote: number): number {
  while (true) {
    const c = rng.chance(0.8) ? rng.int(32, 126) : rng.int(128, 255);
    if (c !== quote && c !== 92) return c;
  }
}

const BARE = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:{}_-.,!@#$%^&()[]=+/?<>|~';

/** One inline word: its rendering on the line and the argument it stands for. */
function randomInlineWord(rng: Rng): { text: Buffer; value: Buffer } {
  const style = rng.int(0, 9);
  if (style < 4) {
    // bare
    const n = rng.int(1, 12);
    let s = '';
    for (let i = 0; i < n; i++) s += BARE[rng.int(0, BARE.length - 1)];
    return { text: Buffer.from(s, 'latin1'), value: Buffer.from(s, 'latin1') };
  }
  if (style < 8) {
    // "double quoted" with every escape
    const text: number[] = [34];
    const value: number[] = [];
    const n = rng.int(0, 16);
    for (let i = 0; i < n; i++) {
      const k = rng.int(0, 9);
      if (k === 0) {
        // \xHH, mixed case
        const b = rng.int(0, 255);
        const hex = b.toString(16).padStart(2, '0');
        text.push(92, 120, ...Buffer.from(rng.chance(0.5) ? hex : hex.toUpperCase(), 'latin1'));
        value.push(b);
      } else if (k === 1) {
        const [e, v] = rng.pick([
          [110, 10],
          [114, 13],
          [116, 9],
          [98, 8],
          [97, 7],
          [92, 92],
          [34, 34],
          [39, 39],
          [122, 122],
        ]);
        text.push(92, e);
        value.push(v);
      } else if (k === 2) {
        // space inside quotes
        text.push(32);
        value.push(32);
      } else {
        const c = rawQuotedByte(rng, 34);
        text.push(c);
        value.push(c);
      }
    }
    text.push(34);
    return { text: Buffer.from(text), value: Buffer.from(value) };
  }
  // 'single quoted': only \' is an escape
  const text: number[] = [39];
  const value: number[] = [];
  const n = rng.int(0, 12);
  for (let i = 0; i < n; i++) {
    if (rng.chance(0.15)) {
      text.push(92, 39);
      value.push(39);
      continue;
    }
    if (rng.chance(0.1)) {
      text.push(32, 34);
      value.push(32, 34);
      continue;
    }
    const c = rawQuotedByte(rng, 39);
    text.push(c);
    value.push(c);
  }
  text.push(39);
  return { text: Buffer.from(text), value: Buffer.from(value) };
}

/** An inline command line (CRLF or LF ended, odd spacing), or an empty line that must be ignored. */
export function randomInline(rng: Rng): GenCommand {
  const eol = rng.chance(0.5) ? '\r\n' : '\n';
  if (rng.chance(0.1)) {
    return { input: Buffer.from(rng.pick(['', ' ', '  \t ']) + eol, 'latin1'), frame: null, args: [] };
  }
  const n = rng.int(1, 6);
  const parts: Buffer[] = [];
  const args: Buffer[] = [];
  if (rng.chance(0.2)) parts.push(Buffer.from(rng.pick([' ', '\t', '  '])));
  for (let i = 0; i < n; i++) {
    if (i > 0) parts.push(Buffer.from(rng.pick([' ', ' ', '\t', '   ', ' \t '])));
    const w = randomInlineWord(rng);
    parts.push(w.text);
    args.push(w.value);
  }
  if (rng.chance(0.2)) parts.push(Buffer.from(rng.pick([' ', '\t'])));
  parts.push(Buffer.from(eol));
  return { input: Buffer.concat(parts), frame: encodeCommand(args), args };
}

/** A command of any kind: mostly multibulk, some inline, a few ignored "*0" / "*-1" headers. */
export function randomCommand(rng: Rng, opts: { large?: boolean; inline?: boolean } = {}): GenCommand {
  const r = rng.float();
  if (r < 0.03) return { input: Buffer.from(rng.pick(['*0\r\n', '*-1\r\n'])), frame: null, args: [] };
  if (opts.inline !== false && r < 0.25) return randomInline(rng);
  return randomMultibulk(rng, opts);
}

// ---- replies ------------------------------------------------------------------------------------------------

export type Reply =
  | { t: 'simple'; v: string }
  | { t: 'error'; v: string }
  | { t: 'int'; v: bigint }
  | { t: 'bulk'; v: Buffer | null }
  | { t: 'array'; v: Reply[] | null }
  // RESP3 only
  | { t: 'null' }
  | { t: 'double'; v: string }
  | { t: 'bool'; v: boolean }
  | { t: 'bignum'; v: string }
  | { t: 'verbatim'; format: string; v: Buffer }
  | { t: 'bloberror'; v: Buffer }
  | { t: 'map'; v: Array<[Reply, Reply]> }
  | { t: 'set'; v: Reply[] }
  | { t: 'attr'; attrs: Array<[Reply, Reply]>; value: Reply }
  | { t: 'push'; v: Reply[] };

export function encodeReply(r: Reply): Buffer {
  const parts: Buffer[] = [];
  encodeInto(r, parts);
  return Buffer.concat(parts);
}

function encodeInto(r: Reply, out: Buffer[]): void {
  switch (r.t) {
    case 'simple':
      out.push(line('+', r.v));
      return;
    case 'error':
      out.push(line('-', r.v));
      return;
    case 'int':
      out.push(line(':', r.v));
      return;
    case 'bulk':
      if (r.v === null) out.push(line('$', -1));
      else out.push(line('$', r.v.length), r.v, CRLF);
      return;
    case 'array':
      if (r.v === null) {
        out.push(line('*', -1));
        return;
      }
      out.push(line('*', r.v.length));
      for (const e of r.v) encodeInto(e, out);
      return;
    case 'null':
      out.push(line('_', ''));
      return;
    case 'double':
      out.push(line(',', r.v));
      return;
    case 'bool':
      out.push(line('#', r.v ? 't' : 'f'));
      return;
    case 'bignum':
      out.push(line('(', r.v));
      return;
    case 'verbatim':
      out.push(line('=', r.v.length + 4), Buffer.from(`${r.format}:`), r.v, CRLF);
      return;
    case 'bloberror':
      out.push(line('!', r.v.length), r.v, CRLF);
      return;
    case 'map':
      out.push(line('%', r.v.length));
      for (const [k, v] of r.v) {
        encodeInto(k, out);
        encodeInto(v, out);
      }
      return;
    case 'set':
      out.push(line('~', r.v.length));
      for (const e of r.v) encodeInto(e, out);
      return;
    case 'attr':
      out.push(line('|', r.attrs.length));
      for (const [k, v] of r.attrs) {
        encodeInto(k, out);
        encodeInto(v, out);
      }
      encodeInto(r.value, out);
      return;
    case 'push':
      out.push(line('>', r.v.length));
      for (const e of r.v) encodeInto(e, out);
      return;
  }
}

export interface ReplyOptions {
  resp3?: boolean;
  /** Deepest aggregate nesting (default 10). */
  maxDepth?: number;
  /** Allow bulks of tens to hundreds of kilobytes. */
  large?: boolean;
}

const SIMPLE = ['OK', 'PONG', 'QUEUED', '', 'hello world', 'string with: colon'];
const ERRORS = [
  'ERR unknown command',
  'WRONGTYPE Operation against a key holding the wrong kind of value',
  'MOVED 3999 127.0.0.1:6381',
  'ASK 3999 127.0.0.1:6381',
  'ERR',
  'NOAUTH Authentication required.',
];
const INTS = [
  0n,
  1n,
  -1n,
  42n,
  -42n,
  9007199254740991n,
  -9007199254740991n,
  9223372036854775807n,
  -9223372036854775808n,
  1000000n,
];
const DOUBLES = ['3.14', '-0.5', '0', 'inf', '-inf', 'nan', '1.5e300', '-2e-10', '10'];
const BIGNUMS = ['3492890328409238509324850943850943825024385', '-12345678901234567890123', '0'];

/** A random reply tree. `depth` is how deep we already are. */
export function randomReply(rng: Rng, opts: ReplyOptions = {}, depth = 0): Reply {
  const maxDepth = opts.maxDepth ?? 10;
  const resp3 = opts.resp3 === true;
  // Aggregates get rarer as we go down, so trees stay small but still reach the maximum depth now and then.
  const aggregateChance = depth >= maxDepth ? 0 : depth === 0 ? 0.45 : 0.6 / (1 + depth * 0.3);
  if (rng.chance(aggregateChance)) {
    const kinds = resp3
      ? ['array', 'array', 'map', 'set', 'attr', depth === 0 ? 'push' : 'array', 'nilarray']
      : ['array', 'array', 'array', 'nilarray'];
    const kind = rng.pick(kinds);
    const n = rng.chance(0.1) ? 0 : rng.chance(0.05) ? rng.int(20, 60) : rng.int(1, 4);
    const children = (): Reply[] => Array.from({ length: n }, () => randomReply(rng, opts, depth + 1));
    const pairs = (): Array<[Reply, Reply]> =>
      Array.from({ length: n }, () => [randomReply(rng, opts, depth + 1), randomReply(rng, opts, depth + 1)]);
    switch (kind) {
      case 'nilarray':
        return { t: 'array', v: null };
      case 'map':
        return { t: 'map', v: pairs() };
      case 'set':
        return { t: 'set', v: children() };
      case 'push':
        return { t: 'push', v: children() };
      case 'attr':
        return { t: 'attr', attrs: pairs().slice(0, 2), value: randomReply(rng, opts, depth + 1) };
      default:
        return { t: 'array', v: children() };
    }
  }
  const kinds = resp3
    ? ['simple', 'error', 'int', 'bulk', 'bulk', 'nilbulk', 'null', 'double', 'bool', 'bignum', 'verbatim', 'bloberror']
    : ['simple', 'error', 'int', 'bulk', 'bulk', 'nilbulk'];
  switch (rng.pick(kinds)) {
    case 'simple':
      return { t: 'simple', v: rng.pick(SIMPLE) };
    case 'error':
      return { t: 'error', v: rng.pick(ERRORS) };
    case 'int':
      return { t: 'int', v: rng.chance(0.5) ? rng.pick(INTS) : BigInt(rng.int(-1e9, 1e9)) };
    case 'nilbulk':
      return { t: 'bulk', v: null };
    case 'null':
      return { t: 'null' };
    case 'double':
      return { t: 'double', v: rng.pick(DOUBLES) };
    case 'bool':
      return { t: 'bool', v: rng.chance(0.5) };
    case 'bignum':
      return { t: 'bignum', v: rng.pick(BIGNUMS) };
    case 'verbatim':
      return { t: 'verbatim', format: rng.pick(['txt', 'mkd']), v: randomPayload(rng, opts) };
    case 'bloberror':
      return { t: 'bloberror', v: Buffer.concat([Buffer.from('SYNTAX '), randomPayload(rng)]) };
    default:
      return { t: 'bulk', v: randomPayload(rng, opts) };
  }
}

/** A reply nested exactly `depth` aggregates deep (a chain, with siblings at each level). */
export function deepReply(rng: Rng, depth: number, resp3: boolean): Reply {
  let r: Reply = randomReply(rng, { resp3, maxDepth: 0 });
  for (let d = 0; d < depth; d++) {
    const sibling = randomReply(rng, { resp3, maxDepth: 0 });
    const kind = resp3 ? rng.pick(['array', 'map', 'set', 'attr']) : 'array';
    if (kind === 'map') r = { t: 'map', v: [[sibling, r]] };
    else if (kind === 'set') r = { t: 'set', v: [r, sibling] };
    else if (kind === 'attr') r = { t: 'attr', attrs: [[sibling, sibling]], value: r };
    else r = { t: 'array', v: [sibling, r] };
  }
  return r;
}

// ---- chunkings ----------------------------------------------------------------------------------------------

/**
 * Ways of cutting `data` into socket chunks. Each chunk is a fresh copy (like separate socket reads), so a parser
 * that keeps a view into memory it was not given, or overwrites memory it handed out, is caught.
 */
export function whole(data: Buffer): Buffer[] {
  return [Buffer.from(data)];
}

export function byteByByte(data: Buffer): Buffer[] {
  const out = new Array<Buffer>(data.length);
  for (let i = 0; i < data.length; i++) out[i] = Buffer.from([data[i]]);
  return out;
}

/** Random cut points: mostly small pieces, sometimes large ones, now and then an empty chunk. */
export function randomSplits(rng: Rng, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let p = 0;
  while (p < data.length) {
    const r = rng.float();
    const n = r < 0.02 ? 0 : r < 0.5 ? rng.int(1, 8) : r < 0.9 ? rng.int(1, 200) : rng.int(1, 70_000);
    const end = Math.min(data.length, p + n);
    out.push(Buffer.from(data.subarray(p, end)));
    p = end;
  }
  return out;
}

/** Fixed-size chunks (like 64 KB socket reads). */
export function fixedChunks(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < data.length; p += size) out.push(Buffer.from(data.subarray(p, p + size)));
  return out;
}

// ---- redis-parser, the oracle -------------------------------------------------------------------------------

interface RedisParserInstance {
  execute(data: Buffer): void;
  reset(): void;
}
interface RedisParserOptions {
  returnReply(reply: unknown): void;
  returnError(err: Error): void;
  returnFatalError?(err: Error): void;
  returnBuffers?: boolean;
  stringNumbers?: boolean;
}
const requireCjs = createRequire(import.meta.url);
export const RedisParser = requireCjs('redis-parser') as new (opts: RedisParserOptions) => RedisParserInstance;

/** A comparable plain value: buffers as hex, errors tagged, numbers as strings. */
export type Plain = null | string | { hex: string } | { error: string } | Plain[];

export function normalise(v: unknown): Plain {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return { hex: v.toString('hex') };
  if (v instanceof Error) return { error: v.message };
  if (Array.isArray(v)) return v.map(normalise);
  return String(v);
}

/** Decodes a whole RESP2 stream with redis-parser (buffers, exact integers); throws on a fatal parser error. */
export function oracleDecode(data: Buffer): Plain[] {
  const out: Plain[] = [];
  let fatal: Error | null = null;
  const p = new RedisParser({
    returnReply: (r) => out.push(normalise(r)),
    returnError: (e) => out.push(normalise(e)),
    returnFatalError: (e) => {
      fatal = e;
    },
    returnBuffers: true,
    stringNumbers: true,
  });
  p.execute(data);
  if (fatal !== null) throw fatal;
  return out;
}

/** What redis-parser should produce for a RESP2 reply tree (a check on the generator itself). */
export function plainOf(r: Reply): Plain {
  switch (r.t) {
    case 'simple':
      return { hex: Buffer.from(r.v, 'latin1').toString('hex') };
    case 'error':
      return { error: r.v };
    case 'int':
      return String(r.v);
    case 'bulk':
      return r.v === null ? null : { hex: r.v.toString('hex') };
    case 'array':
      return r.v === null ? null : r.v.map(plainOf);
    default:
      throw new Error(`${r.t} is not RESP2`);
  }
}
