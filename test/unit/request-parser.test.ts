/**
 * RequestParser: every input is fed whole, byte by byte and at random split points (rule 15), and every feeding
 * must yield the same (frame, args) sequence. Frames are the client's exact bytes (multibulk) or their multibulk
 * re-encoding (inline); args are views into the frame; views stay valid after later input. Limits and malformed
 * input produce exactly one Redis-worded protocol error, after the commands that preceded it, and nothing more.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeMultibulk, RequestParser, splitInline, type RequestLimits } from '../../src/resp/request-parser.js';
import {
  byteByByte,
  encodeCommand,
  fixedChunks,
  normalise,
  oracleDecode,
  randomCommand,
  randomInline,
  randomMultibulk,
  randomSplits,
  Rng,
  seeds,
  whole,
  type GenCommand,
} from '../support/resp-gen.js';

const LIMITS: RequestLimits = { maxBulkBytes: 512 * 1024 * 1024, maxArgs: 1024 * 1024, maxInlineBytes: 64 * 1024 };

interface Seen {
  frame: Buffer;
  args: Buffer[];
  /** Copies taken when the command was delivered: the views must still hold these bytes at the end. */
  frameCopy: Buffer;
  argsCopy: Buffer[];
}

function run(chunks: Buffer[], limits: RequestLimits = LIMITS, keepCopies = true) {
  const commands: Seen[] = [];
  const errors: string[] = [];
  const events: string[] = [];
  const parser = new RequestParser(limits, {
    onCommand(frame, args) {
      events.push('command');
      commands.push(
        keepCopies
          ? { frame, args, frameCopy: Buffer.from(frame), argsCopy: args.map((a) => Buffer.from(a)) }
          : { frame, args, frameCopy: frame, argsCopy: args },
      );
    },
    onProtocolError(reply) {
      events.push('error');
      errors.push(reply.toString('latin1'));
    },
  });
  for (const c of chunks) parser.feed(c);
  return { commands, errors, events, parser };
}

/** Checks the parser's output against what the generator says the commands are (plain loops: thousands of them). */
function expectCommands(seen: Seen[], expected: GenCommand[], label: string): void {
  expect(
    firstMismatch(
      seen,
      expected.filter((c) => c.frame !== null),
    ),
    label,
  ).toBeNull();
}

function firstMismatch(seen: Seen[], wanted: GenCommand[]): string | null {
  const show = (x: Buffer) => JSON.stringify(x.toString('latin1').slice(0, 200));
  if (seen.length !== wanted.length) return `${seen.length} commands, expected ${wanted.length}`;
  for (let i = 0; i < wanted.length; i++) {
    const s = seen[i];
    const w = wanted[i];
    if (!s.frame.equals(w.frame as Buffer))
      return `command ${i}: frame ${show(s.frame)}, expected ${show(w.frame as Buffer)}`;
    // Views must not have been overwritten by later input.
    if (!s.frame.equals(s.frameCopy)) return `command ${i}: frame view changed after delivery`;
    if (s.args.length !== w.args.length) return `command ${i}: ${s.args.length} args, expected ${w.args.length}`;
    for (let j = 0; j < w.args.length; j++) {
      const a = s.args[j];
      if (!a.equals(w.args[j])) return `command ${i} arg ${j}: ${show(a)}, expected ${show(w.args[j])}`;
      if (!a.equals(s.argsCopy[j])) return `command ${i} arg ${j}: view changed after delivery`;
      // A view into the frame's memory, not a copy.
      if (
        a.buffer !== s.frame.buffer ||
        a.byteOffset < s.frame.byteOffset ||
        a.byteOffset + a.length > s.frame.byteOffset + s.frame.length
      )
        return `command ${i} arg ${j}: not a view into the frame`;
    }
  }
  return null;
}

function feedings(rng: Rng, data: Buffer): Array<[string, Buffer[]]> {
  return [
    ['whole', whole(data)],
    ['byte by byte', byteByByte(data)],
    ['random splits 1', randomSplits(rng, data)],
    ['random splits 2', randomSplits(rng, data)],
    ['random splits 3', randomSplits(rng, data)],
  ];
}

const b = (s: string) => Buffer.from(s, 'latin1');
const strs = (args: Buffer[]) => args.map((a) => a.toString('latin1'));

describe('RequestParser: random command streams', () => {
  it.each(seeds(40))('seed %i: whole, byte by byte and random splits agree with the generator', (seed) => {
    const rng = new Rng(seed);
    const cmds = Array.from({ length: rng.int(1, 60) }, () => randomCommand(rng, { large: seed % 4 === 0 }));
    const data = Buffer.concat(cmds.map((c) => c.input));
    for (const [how, chunks] of feedings(rng, data)) {
      const r = run(chunks);
      expect(r.errors, `seed ${seed} ${how}`).toEqual([]);
      expectCommands(r.commands, cmds, `seed ${seed} ${how}`);
      expect(r.parser.buffered, `seed ${seed} ${how}: nothing left over`).toBe(0);
    }
  });

  it.each(seeds(3, 1000))('seed %i: a pipeline of 5000 commands in one chunk and at random splits', (seed) => {
    const rng = new Rng(seed);
    const cmds = Array.from({ length: 5000 }, () => randomCommand(rng));
    const data = Buffer.concat(cmds.map((c) => c.input));
    expectCommands(run(whole(data)).commands, cmds, `seed ${seed} whole`);
    expectCommands(run(randomSplits(rng, data)).commands, cmds, `seed ${seed} random`);
    expectCommands(run(fixedChunks(data, 65536)).commands, cmds, `seed ${seed} 64K chunks`);
    expectCommands(run(fixedChunks(data, 7)).commands, cmds, `seed ${seed} 7-byte chunks`);
  });

  it.each(seeds(5, 1500))('seed %i: multibulk arguments agree with redis-parser decoding the same stream', (seed) => {
    // A multibulk request is a RESP2 array of bulks, so the reference decoder can read it too.
    const rng = new Rng(seed);
    const cmds = Array.from({ length: 300 }, () => randomCommand(rng, { inline: false, large: seed % 2 === 0 }));
    const data = Buffer.concat(cmds.map((c) => c.input));
    const oracle = oracleDecode(data).filter((v) => Array.isArray(v) && v.length > 0); // "*0" and "*-1" are ignored
    const r = run(randomSplits(rng, data));
    expect(r.commands.map((c) => c.args.map((a) => normalise(a)))).toEqual(oracle);
  });

  it('every split point of a command gives the same result', () => {
    const rng = new Rng(7);
    for (let k = 0; k < 30; k++) {
      const cmd = randomCommand(rng);
      const data = Buffer.concat([cmd.input, b('*1\r\n$4\r\nPING\r\n')]);
      const expected = [cmd, { input: b(''), frame: b('*1\r\n$4\r\nPING\r\n'), args: [b('PING')] }];
      for (let cut = 0; cut <= data.length; cut++) {
        const r = run([Buffer.from(data.subarray(0, cut)), Buffer.from(data.subarray(cut))]);
        expect(r.errors).toEqual([]);
        expectCommands(r.commands, expected, `command ${k} cut ${cut}`);
      }
    }
  });

  it('empty chunks are ignored', () => {
    const r = run([b(''), b('*1\r\n$4\r'), b(''), b('\nPING\r\n'), b('')]);
    expect(r.commands.map((c) => strs(c.args))).toEqual([['PING']]);
  });

  it('reports how many bytes an unfinished command holds', () => {
    const r = run([b('*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET')]);
    expect(r.commands).toHaveLength(1);
    expect(r.parser.buffered).toBe('*2\r\n$3\r\nGET'.length);
    r.parser.feed(b('\r\n$1\r\nk\r\n'));
    expect(r.commands).toHaveLength(2);
    expect(r.parser.buffered).toBe(0);
  });
});

describe('RequestParser: multibulk details', () => {
  it('frame is the exact input bytes and args are views into it', () => {
    const input = b('*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n');
    for (const chunks of [whole(input), byteByByte(input)]) {
      const r = run(chunks);
      expect(r.commands).toHaveLength(1);
      expect(r.commands[0].frame.equals(input)).toBe(true);
      expect(strs(r.commands[0].args)).toEqual(['SET', 'k\r\n', '']);
    }
  });

  it('a command fed whole is delivered without copying: the frame is a view of the chunk', () => {
    const chunk = b('*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n');
    const r = run([chunk]);
    expect(r.commands).toHaveLength(2);
    expect(r.commands[0].frame.buffer).toBe(chunk.buffer);
    expect(r.commands[1].frame.byteOffset).toBe(chunk.byteOffset + 14);
  });

  it('"*0" and "*-1" are ignored, as Redis does', () => {
    const input = b('*0\r\n*1\r\n$4\r\nPING\r\n*-1\r\n*-7\r\n*1\r\n$4\r\nPONG\r\n*0\r\n');
    const rng = new Rng(3);
    for (const [how, chunks] of feedings(rng, input)) {
      const r = run(chunks);
      expect(r.errors, how).toEqual([]);
      expect(
        r.commands.map((c) => strs(c.args)),
        how,
      ).toEqual([['PING'], ['PONG']]);
      expect(r.commands[0].frame.toString(), how).toBe('*1\r\n$4\r\nPING\r\n');
    }
  });

  it('accepts exactly maxArgs arguments and a bulk of exactly maxBulkBytes', () => {
    const limits = { maxBulkBytes: 10, maxArgs: 3, maxInlineBytes: 100 };
    const input = encodeCommand([b('SET'), b('0123456789'), b('x')]);
    for (const chunks of [whole(input), byteByByte(input)]) {
      const r = run(chunks, limits);
      expect(r.errors).toEqual([]);
      expect(strs(r.commands[0].args)).toEqual(['SET', '0123456789', 'x']);
    }
  });

  it('binary arguments: every byte value, CR LF and RESP markers inside bulks', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const args = [b('SET'), all, b('\r\n*3\r\n$1\r\n'), b('\r\n')];
    const input = encodeCommand(args);
    for (const chunks of [whole(input), byteByByte(input)]) {
      const r = run(chunks);
      expect(r.commands[0].args.map((a) => a.toString('hex'))).toEqual(args.map((a) => a.toString('hex')));
    }
  });
});

describe('RequestParser: inline commands', () => {
  const cases: Array<[string, string[]]> = [
    ['PING\r\n', ['PING']],
    ['PING\n', ['PING']],
    ['SET key value\r\n', ['SET', 'key', 'value']],
    ['  SET   key \t value  \r\n', ['SET', 'key', 'value']],
    ['SET "a b" \'c d\'\r\n', ['SET', 'a b', 'c d']],
    ['ECHO "\\x41\\x4a\\x4b"\r\n', ['ECHO', 'AJK']],
    ['ECHO "\\x4A\\x6a"\n', ['ECHO', 'Jj']],
    ['ECHO "\\x4g" "\\xZZ"\r\n', ['ECHO', 'x4g', 'xZZ']], // not a hex pair: backslash escapes the x
    ['ECHO "\\n\\r\\t\\b\\a\\\\\\"\\q"\r\n', ['ECHO', '\n\r\t\b\x07\\"q']],
    ["ECHO 'it\\'s' 'a\\b'\r\n", ['ECHO', "it's", 'a\\b']],
    ['ECHO "" \'\'\r\n', ['ECHO', '', '']],
    ['ECHO a"b c" d\r\n', ['ECHO', 'ab c', 'd']], // an unquoted word can open quotes mid-word, like sdssplitargs
    ['ECHO a\\nb\r\n', ['ECHO', 'a\\nb']], // no escapes outside quotes
    ['ECHO "\xe9\xff" \xe9\r\n', ['ECHO', '\xe9\xff', '\xe9']], // raw high bytes (latin1 here)
    ['GET k\r\r\n', ['GET', 'k']], // a stray CR is whitespace
  ];

  it.each(cases)('%j', (line, words) => {
    const input = b(line);
    const frame = encodeCommand(words.map((w) => b(w)));
    const rng = new Rng(11);
    for (const [how, chunks] of feedings(rng, input)) {
      const r = run(chunks);
      expect(r.errors, how).toEqual([]);
      expect(r.commands, how).toHaveLength(1);
      expect(strs(r.commands[0].args), how).toEqual(words);
      expect(r.commands[0].frame.equals(frame), `${how}: re-encoded as multibulk`).toBe(true);
    }
  });

  it('empty and blank lines are ignored', () => {
    const input = b('\r\n\n   \r\n\t\nPING\r\n\r\n\nECHO x\n \n');
    for (const [how, chunks] of feedings(new Rng(5), input)) {
      const r = run(chunks);
      expect(r.errors, how).toEqual([]);
      expect(
        r.commands.map((c) => strs(c.args)),
        how,
      ).toEqual([['PING'], ['ECHO', 'x']]);
    }
  });

  it('inline and multibulk commands interleave', () => {
    const input = b('PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO "a b"\n*1\r\n$4\r\nQUIT\r\n');
    for (const [how, chunks] of feedings(new Rng(6), input)) {
      const r = run(chunks);
      expect(
        r.commands.map((c) => strs(c.args)),
        how,
      ).toEqual([['PING'], ['ECHO', 'hi'], ['ECHO', 'a b'], ['QUIT']]);
    }
  });

  it.each(seeds(10, 2000))('seed %i: random inline lines', (seed) => {
    const rng = new Rng(seed);
    const cmds = Array.from({ length: 80 }, () => randomInline(rng));
    const data = Buffer.concat(cmds.map((c) => c.input));
    for (const [how, chunks] of feedings(rng, data)) {
      const r = run(chunks);
      expect(r.errors, `seed ${seed} ${how}`).toEqual([]);
      expectCommands(r.commands, cmds, `seed ${seed} ${how}`);
    }
  });

  it('an inline line of exactly maxInlineBytes is accepted however it is split (CRLF and LF)', () => {
    const limits = { ...LIMITS, maxInlineBytes: 16 };
    for (const eol of ['\r\n', '\n']) {
      const input = b(`ECHO 01234567890${eol}PING${eol}`); // the line is 16 bytes
      for (const [how, chunks] of feedings(new Rng(8), input)) {
        const r = run(chunks, limits);
        expect(r.errors, `${JSON.stringify(eol)} ${how}`).toEqual([]);
        expect(
          r.commands.map((c) => strs(c.args)),
          how,
        ).toEqual([['ECHO', '01234567890'], ['PING']]);
      }
    }
  });

  it('views of inline arguments point into the re-encoded frame', () => {
    const r = run([b('SET "k 1" v\r\n')]);
    const { frame, args } = r.commands[0];
    expect(frame.toString()).toBe('*3\r\n$3\r\nSET\r\n$3\r\nk 1\r\n$1\r\nv\r\n');
    for (const a of args) expect(a.buffer).toBe(frame.buffer);
  });
});

describe('RequestParser: protocol errors', () => {
  const limits: RequestLimits = { maxBulkBytes: 100, maxArgs: 4, maxInlineBytes: 40 };
  const err = (detail: string) => `-ERR Protocol error: ${detail}\r\n`;
  const cases: Array<[string, string, string]> = [
    ['argc > maxArgs', '*5\r\n', err('invalid multibulk length (5 arguments exceed limits.max_args 4)')],
    ['bulk > maxBulkBytes', '*1\r\n$101\r\n', err('invalid bulk length (101 bytes exceed limits.max_bulk_bytes 100)')],
    ['negative bulk length', '*1\r\n$-1\r\n', err('invalid bulk length')],
    ['negative bulk length -5', '*2\r\n$3\r\nGET\r\n$-5\r\n', err('invalid bulk length')],
    ['non-numeric multibulk length', '*x\r\n', err('invalid multibulk length')],
    ['multibulk length with trailing junk', '*1a\r\n', err('invalid multibulk length')],
    ['empty multibulk length', '*\r\n', err('invalid multibulk length')],
    ['lone minus multibulk length', '*-\r\n', err('invalid multibulk length')],
    ['multibulk length with a leading zero', '*01\r\n$4\r\nPING\r\n', err('invalid multibulk length')],
    ['multibulk length "-0"', '*-0\r\n', err('invalid multibulk length')],
    ['multibulk header CR not followed by LF', '*1\rX\n', err('invalid multibulk length')],
    ['non-numeric bulk length', '*1\r\n$abc\r\n', err('invalid bulk length')],
    ['empty bulk length', '*1\r\n$\r\n', err('invalid bulk length')],
    ['bulk length with a leading zero', '*1\r\n$04\r\nPING\r\n', err('invalid bulk length')],
    ['bulk length "-0"', '*1\r\n$-0\r\n\r\n', err('invalid bulk length')],
    ['bulk length "+4"', '*1\r\n$+4\r\nPING\r\n', err('invalid bulk length')],
    ['missing $', '*1\r\n:4\r\n', err("expected '$', got ':'")],
    ['missing $ (inline text)', '*2\r\n$3\r\nGET\r\nfoo\r\n', err("expected '$', got 'f'")],
    ['missing $ (non-printable byte)', '*1\r\n\x01\r\n', err("expected '$', got '?'")],
    ['bulk not ended by CRLF', '*1\r\n$4\r\nPINGXY', err('bulk data does not end with CRLF')],
    ['bulk ended by LF only', '*1\r\n$4\r\nPING\n*1\r\n', err('bulk data does not end with CRLF')],
    ['multibulk header line too long', `*${'1'.repeat(70)}\r\n`, err('too big mbulk count string')],
    ['bulk header line too long', `*1\r\n$${'9'.repeat(70)}\r\n`, err('too big bulk count string')],
    ['multibulk length beyond a 64-bit integer', `*${'9'.repeat(30)}\r\n`, err('invalid multibulk length')],
    ['bulk length beyond a 64-bit integer', `*1\r\n$${'9'.repeat(30)}\r\n`, err('invalid bulk length')],
    ['inline too long (with newline)', `ECHO ${'x'.repeat(40)}\r\n`, err('too big inline request')],
    ['inline too long (no newline yet)', `ECHO ${'x'.repeat(60)}`, err('too big inline request')],
    ['inline with too many arguments', 'a b c d e\r\n', err('invalid multibulk length')],
    ['unbalanced double quote', 'SET "a b\r\n', err('unbalanced quotes in request')],
    ['unbalanced single quote', "SET 'a b\r\n", err('unbalanced quotes in request')],
    ['closing quote followed by a non-space', 'SET "a"b\r\n', err('unbalanced quotes in request')],
    ['closing single quote followed by a non-space', "SET 'a'b c\r\n", err('unbalanced quotes in request')],
    ['backslash at the end of a quoted word', 'SET "a\\\r\n', err('unbalanced quotes in request')],
  ];

  const before = b('*1\r\n$4\r\nPING\r\nECHO hi\r\n');
  const after = b('*1\r\n$4\r\nPING\r\nPING\r\n');

  it.each(cases)('%s', (_name, bad, message) => {
    const input = Buffer.concat([before, b(bad)]);
    for (const [how, chunks] of feedings(new Rng(13), input)) {
      const r = run(chunks, limits);
      expect(r.errors, how).toEqual([message]);
      expect(
        r.commands.map((c) => strs(c.args)),
        how,
      ).toEqual([['PING'], ['ECHO', 'hi']]);
      expect(r.parser.broken, how).toBe(true);
      // Nothing is delivered after the error, however much more arrives.
      r.parser.feed(after);
      r.parser.feed(Buffer.from(after));
      expect(r.events, how).toEqual(['command', 'command', 'error']);
      expect(r.parser.buffered).toBe(0);
    }
  });

  it.each(cases)('%s, followed by more commands in the same chunk', (_name, bad, message) => {
    const input = Buffer.concat([before, b(bad), after, after]);
    const r = run(whole(input), limits);
    expect(r.errors).toEqual([message]);
    expect(r.events).toEqual(['command', 'command', 'error']);
  });

  it('commands completed in the same chunk before the error are delivered', () => {
    const good = Array.from({ length: 100 }, (_, i) => encodeCommand([b('INCR'), b(`k${i}`)]));
    const r = run([Buffer.concat([...good, b('*1\r\n$x\r\n'), ...good])]);
    expect(r.commands).toHaveLength(100);
    expect(r.errors).toEqual([err('invalid bulk length')]);
  });
});

describe('RequestParser: huge commands cost linear copying', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** Feeds `chunks` while counting Buffer.allocUnsafe calls and bytes moved by Buffer#copy. */
  function measure(chunks: Buffer[], limits: RequestLimits = LIMITS) {
    const alloc = vi.spyOn(Buffer, 'allocUnsafe');
    const copy = vi.spyOn(Buffer.prototype, 'copy');
    const r = run(chunks, limits, false);
    const allocs = alloc.mock.calls.length;
    const copied = copy.mock.results.reduce((sum, res) => sum + (res.value as number), 0);
    const biggestAlloc = alloc.mock.calls.reduce((m, c) => Math.max(m, c[0] as number), 0);
    vi.restoreAllMocks();
    return { ...r, allocs, copied, biggestAlloc };
  }

  it('a 20 MB bulk arriving in 64 KB chunks', () => {
    const payload = new Rng(99).bytes(20 * 1024 * 1024);
    const input = encodeCommand([b('SET'), b('big'), payload]);
    const chunks = fixedChunks(input, 64 * 1024);
    const m = measure(chunks);
    expect(m.errors).toEqual([]);
    expect(m.commands).toHaveLength(1);
    expect(m.commands[0].args[2].equals(payload)).toBe(true);
    expect(m.commands[0].frame.equals(input)).toBe(true);
    // O(log n) accumulator allocations, and every byte copied a bounded number of times.
    expect(m.allocs).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(input.length)));
    expect(m.copied).toBeLessThanOrEqual(3 * input.length);
  });

  it('a 20 MB command of many 10 KB arguments (total size unknown in advance) in 64 KB chunks', () => {
    const rng = new Rng(98);
    const args = [b('RPUSH'), b('list'), ...Array.from({ length: 2048 }, () => rng.bytes(10 * 1024))];
    const input = encodeCommand(args);
    const m = measure(fixedChunks(input, 64 * 1024));
    expect(m.commands).toHaveLength(1);
    expect(m.commands[0].frame.equals(input)).toBe(true);
    expect(m.allocs).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(input.length)));
    expect(m.copied).toBeLessThanOrEqual(3 * input.length);
  });

  it('a 20 MB bulk fed in 1 KB chunks after a pipeline of small commands', () => {
    const rng = new Rng(97);
    const small = Array.from({ length: 500 }, () => randomMultibulk(rng));
    const payload = rng.bytes(20 * 1024 * 1024);
    const input = Buffer.concat([...small.map((c) => c.input), encodeCommand([b('SET'), b('k'), payload])]);
    const m = measure(fixedChunks(input, 1024));
    expect(m.commands).toHaveLength(501);
    expect(m.commands[500].args[2].equals(payload)).toBe(true);
    // One small accumulator per chunk while small commands straddle chunks, then O(log n) for the big one.
    expect(m.copied).toBeLessThanOrEqual(3 * input.length);
  });

  it('a lying bulk length does not reserve the whole announced size before the bytes arrive', () => {
    const m = measure([b('*1\r\n$500000000\r\nabc')]);
    expect(m.errors).toEqual([]);
    expect(m.biggestAlloc).toBeLessThan(8 * 1024 * 1024);
  });

  it('a bulk length beyond what a Buffer can hold is a protocol error, not an exception', () => {
    const limits = { ...LIMITS, maxBulkBytes: 2 ** 40 };
    const r = run([b('*1\r\n$5000000000\r\n'), b('abc')], limits);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatch(/^-ERR Protocol error: invalid bulk length/);
  });
});

describe('encodeMultibulk and splitInline', () => {
  it('encodeMultibulk matches the reference encoding', () => {
    const rng = new Rng(21);
    for (let i = 0; i < 200; i++) {
      const args = Array.from({ length: rng.int(0, 120) }, () => rng.bytes(rng.int(0, rng.chance(0.1) ? 2000 : 20)));
      expect(encodeMultibulk(args).equals(encodeCommand(args))).toBe(true);
    }
  });

  it('splitInline follows sdssplitargs', () => {
    const split = (s: string) => {
      const w = splitInline(b(s));
      return w === null ? null : strs(w);
    };
    expect(split('')).toEqual([]);
    expect(split('   ')).toEqual([]);
    expect(split('a  b\tc')).toEqual(['a', 'b', 'c']);
    expect(split('"a\\x41b"')).toEqual(['aAb']);
    expect(split('"\\x"')).toEqual(['x']);
    expect(split('"a" b')).toEqual(['a', 'b']);
    expect(split('"a"b')).toBeNull();
    expect(split('"abc')).toBeNull();
    expect(split("'abc")).toBeNull();
    expect(split("'a\\'b'")).toEqual(["a'b"]);
    expect(split("'a\\nb'")).toEqual(['a\\nb']);
    expect(split('"a\\"')).toBeNull();
    // Unquoted words end only at space, tab, CR, LF (sdssplitargs): vertical tab and form feed are word bytes.
    expect(split('a\x0bb c\x0c')).toEqual(['a\x0bb', 'c\x0c']);
    // ... but they are skipped between words and count as a space after a closing quote (isspace).
    expect(split('\x0b a "b"\x0b c')).toEqual(['a', 'b', 'c']);
  });
});
