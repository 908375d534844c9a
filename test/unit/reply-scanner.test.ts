/**
 * ReplyScanner: on random RESP2 and RESP3 reply streams fed whole, byte by byte and at random splits, the frames
 * are exactly the encoded replies, in order (rule 15). On RESP2 it agrees with redis-parser, the oracle: each of
 * our frames decodes (alone) to exactly one reply, and those replies equal redis-parser's decoding of the whole
 * stream. Malformed input is reported once and nothing follows; reset() forgets a partial frame.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseLength, ReplyScanner } from '../../src/resp/reply-scanner.js';
import {
  byteByByte,
  deepReply,
  encodeReply,
  fixedChunks,
  normalise,
  oracleDecode,
  plainOf,
  randomReply,
  randomSplits,
  RedisParser,
  Rng,
  seeds,
  whole,
  type Plain,
  type Reply,
} from '../support/resp-gen.js';

function run(chunks: Buffer[], keepCopies = true) {
  const frames: Buffer[] = [];
  const copies: Buffer[] = [];
  const errors: string[] = [];
  const events: string[] = [];
  const scanner = new ReplyScanner({
    onReply(frame) {
      events.push('reply');
      frames.push(frame);
      if (keepCopies) copies.push(Buffer.from(frame));
    },
    onReplyProtocolError(detail) {
      events.push('error');
      errors.push(detail);
    },
  });
  for (const c of chunks) scanner.feed(c);
  return { frames, copies, errors, events, scanner };
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

function expectFrames(r: ReturnType<typeof run>, encoded: Buffer[], label: string): void {
  expect(r.errors, label).toEqual([]);
  expect(r.frames.length, `${label}: number of frames`).toBe(encoded.length);
  const show = (x: Buffer) => JSON.stringify(x.toString('latin1').slice(0, 300));
  for (let i = 0; i < encoded.length; i++) {
    if (!r.frames[i].equals(encoded[i]))
      expect.fail(`${label}: frame ${i} is ${show(r.frames[i])}, expected ${show(encoded[i])}`);
    // Frames already delivered must not be overwritten by later input.
    if (!r.frames[i].equals(r.copies[i])) expect.fail(`${label}: frame ${i} changed after delivery`);
  }
}

/** Decodes one frame alone with redis-parser: it must hold exactly one complete reply. */
function oracleDecodeOne(frame: Buffer): Plain {
  const out = oracleDecode(frame);
  expect(out, `frame ${JSON.stringify(frame.toString('latin1').slice(0, 200))} must decode to one reply`).toHaveLength(
    1,
  );
  return out[0];
}

const b = (s: string) => Buffer.from(s, 'latin1');

describe('ReplyScanner: random RESP3 streams', () => {
  it.each(seeds(40, 100))('seed %i: frames are exactly the encoded replies, however the stream is cut', (seed) => {
    const rng = new Rng(seed);
    const replies = Array.from({ length: rng.int(1, 40) }, () =>
      randomReply(rng, { resp3: true, large: seed % 5 === 0 }),
    );
    const encoded = replies.map(encodeReply);
    const data = Buffer.concat(encoded);
    for (const [how, chunks] of feedings(rng, data)) expectFrames(run(chunks), encoded, `seed ${seed} ${how}`);
  });

  it.each(seeds(5, 200))('seed %i: replies nested 10 deep in every aggregate type', (seed) => {
    const rng = new Rng(seed);
    const encoded = Array.from({ length: 20 }, () => encodeReply(deepReply(rng, 10, true)));
    const data = Buffer.concat(encoded);
    for (const [how, chunks] of feedings(rng, data)) expectFrames(run(chunks), encoded, `seed ${seed} ${how}`);
  });

  it('nesting 10 000 deep needs no recursion', () => {
    const depth = 10_000;
    const data = Buffer.concat([b('*1\r\n'.repeat(depth)), b(':1\r\n'), b('+OK\r\n')]);
    const r = run(fixedChunks(data, 1000));
    expect(r.errors).toEqual([]);
    expect(r.frames.map((f) => f.length)).toEqual([depth * 4 + 4, 5]);
  });

  it('every RESP3 type, one by one', () => {
    const samples = [
      '+OK\r\n',
      '-ERR bad\r\n',
      ':-12\r\n',
      '$3\r\nfoo\r\n',
      '$0\r\n\r\n',
      '$-1\r\n',
      '*-1\r\n',
      '*0\r\n',
      '_\r\n',
      ',3.14\r\n',
      ',-inf\r\n',
      ',nan\r\n',
      '#t\r\n',
      '#f\r\n',
      '(3492890328409238509324850943850943825024385\r\n',
      '=15\r\ntxt:Some string\r\n',
      '!21\r\nSYNTAX invalid syntax\r\n',
      '%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n',
      '%0\r\n',
      '~3\r\n+a\r\n+b\r\n+c\r\n',
      '~0\r\n',
      '>3\r\n+message\r\n+chan\r\n$3\r\nmsg\r\n',
      '|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n',
      '|0\r\n+OK\r\n',
      '*2\r\n|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n_\r\n',
      '*3\r\n$-1\r\n*-1\r\n_\r\n',
    ];
    const data = b(samples.join(''));
    for (const [how, chunks] of feedings(new Rng(1), data)) {
      const r = run(chunks);
      expect(r.errors, how).toEqual([]);
      expect(
        r.frames.map((f) => f.toString('latin1')),
        how,
      ).toEqual(samples);
    }
  });

  it('every RESP3 type, cut in two at every byte', () => {
    const samples = [
      '_\r\n',
      ',-1.5e-3\r\n',
      '#f\r\n',
      '(-3492890328409238509324850943850943825024385\r\n',
      '=10\r\nmkd:**hi**\r\n',
      '!9\r\nERR \r\nbad\r\n',
      '%2\r\n$1\r\nk\r\n_\r\n,1\r\n#t\r\n',
      '~2\r\n(1\r\n=5\r\ntxt:x\r\n',
      '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\n\r\n\r\n',
      '|2\r\n+a\r\n:1\r\n+b\r\n|1\r\n+c\r\n_\r\n#t\r\n%1\r\n+k\r\n~1\r\n>1\r\n_\r\n',
      '|1\r\n+a\r\n:1\r\n>2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n',
      '*3\r\n%0\r\n~0\r\n>0\r\n',
    ];
    for (const sample of samples) {
      const data = b(sample + '+next\r\n');
      for (let cut = 1; cut < data.length; cut++) {
        const r = run([data.subarray(0, cut), data.subarray(cut)]);
        expect(r.errors, `${JSON.stringify(sample)} cut at ${cut}`).toEqual([]);
        expect(
          r.frames.map((f) => f.toString('latin1')),
          `${JSON.stringify(sample)} cut at ${cut}`,
        ).toEqual([sample, '+next\r\n']);
      }
    }
  });

  it('bulks holding CR LF and RESP-looking bytes', () => {
    const samples = [
      '$6\r\n\r\n\r\n\r\n\r\n',
      '$5\r\n+OK\r\n\r\n',
      '*2\r\n$4\r\n*1\r\n\r\n$2\r\n\r\r\r\n',
      '=8\r\ntxt:\r\n\r\n\r\n',
    ];
    const data = b(samples.join(''));
    for (const [how, chunks] of feedings(new Rng(2), data)) {
      expect(
        run(chunks).frames.map((f) => f.toString('latin1')),
        how,
      ).toEqual(samples);
    }
  });

  it('a frame delivered from a whole chunk is a view of that chunk (no copy)', () => {
    const chunk = b('+OK\r\n:1\r\n');
    const r = run([chunk]);
    expect(r.frames[0].buffer).toBe(chunk.buffer);
    expect(r.frames[1].byteOffset).toBe(chunk.byteOffset + 5);
  });

  it('empty chunks are ignored', () => {
    const r = run([b(''), b('+O'), b(''), b('K\r\n'), b('')]);
    expect(r.frames.map(String)).toEqual(['+OK\r\n']);
  });
});

describe('ReplyScanner: agrees with redis-parser on RESP2', () => {
  it.each(seeds(40, 300))('seed %i', (seed) => {
    const rng = new Rng(seed);
    const replies: Reply[] = Array.from({ length: rng.int(1, 50) }, () =>
      randomReply(rng, { resp3: false, large: seed % 5 === 0 }),
    );
    const data = Buffer.concat(replies.map(encodeReply));
    const oracle = oracleDecode(data);
    // The generator and the oracle agree on what the stream means.
    expect(oracle).toEqual(replies.map(plainOf));
    for (const [how, chunks] of feedings(rng, data)) {
      const r = run(chunks);
      expect(r.errors, `seed ${seed} ${how}`).toEqual([]);
      expect(r.frames.map(oracleDecodeOne), `seed ${seed} ${how}`).toEqual(oracle);
      expect(Buffer.concat(r.frames).equals(data), `seed ${seed} ${how}: frames tile the stream`).toBe(true);
    }
  });

  it('redis-parser fed the same random splits gives the same replies as our frames', () => {
    const rng = new Rng(4242);
    const replies = Array.from({ length: 300 }, () => randomReply(rng, { resp3: false }));
    const data = Buffer.concat(replies.map(encodeReply));
    const chunks = randomSplits(rng, data);
    const fromOracle: Plain[] = [];
    const p = new RedisParser({
      returnReply: (v) => fromOracle.push(normalise(v)),
      returnError: (e) => fromOracle.push(normalise(e)),
      returnBuffers: true,
      stringNumbers: true,
    });
    for (const c of chunks) p.execute(c);
    const r = run(chunks);
    expect(r.frames.map(oracleDecodeOne)).toEqual(fromOracle);
  });
});

describe('ReplyScanner: large replies', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  function measure(chunks: Buffer[]) {
    const alloc = vi.spyOn(Buffer, 'allocUnsafe');
    const copy = vi.spyOn(Buffer.prototype, 'copy');
    const r = run(chunks, false);
    const allocs = alloc.mock.calls.length;
    const copied = copy.mock.results.reduce((sum, res) => sum + (res.value as number), 0);
    vi.restoreAllMocks();
    return { ...r, allocs, copied };
  }

  it('a 20 MB bulk in 64 KB chunks: O(log n) allocations, linear copying', () => {
    const payload = new Rng(5).bytes(20 * 1024 * 1024);
    const data = Buffer.concat([b(`$${payload.length}\r\n`), payload, b('\r\n+OK\r\n')]);
    const m = measure(fixedChunks(data, 64 * 1024));
    expect(m.errors).toEqual([]);
    expect(m.frames).toHaveLength(2);
    expect(m.frames[0].subarray(m.frames[0].length - payload.length - 2, -2).equals(payload)).toBe(true);
    expect(m.allocs).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(data.length)));
    expect(m.copied).toBeLessThanOrEqual(3 * data.length);
  });

  it('a 16 MB array of a million small elements in 64 KB chunks: O(log n) allocations, linear copying', () => {
    const n = 1_000_000;
    const parts: string[] = [`*${n}\r\n`];
    for (let i = 0; i < n; i++)
      parts.push(i % 3 === 0 ? `:${i}\r\n` : i % 3 === 1 ? `$3\r\nv${i % 10}x\r\n` : `+s${i}\r\n`);
    const data = b(parts.join(''));
    const m = measure(fixedChunks(data, 64 * 1024));
    expect(m.errors).toEqual([]);
    expect(m.frames).toHaveLength(1);
    expect(m.frames[0].equals(data)).toBe(true);
    expect(m.allocs).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(data.length)));
    expect(m.copied).toBeLessThanOrEqual(3 * data.length);
  });

  it('many small replies straddling 64 KB chunks are copied a bounded number of times', () => {
    const rng = new Rng(6);
    const encoded = Array.from({ length: 20_000 }, () => encodeReply(randomReply(rng, { resp3: true, maxDepth: 2 })));
    const data = Buffer.concat(encoded);
    const m = measure(fixedChunks(data, 64 * 1024));
    expect(m.frames).toHaveLength(encoded.length);
    expect(m.copied).toBeLessThanOrEqual(3 * data.length);
  });

  it('a bulk length beyond what a Buffer can hold is a protocol error, not an exception', () => {
    const r = run([b('$99999999999999999\r\n'), b('abc')]);
    expect(r.errors).toEqual(['invalid bulk length']);
    const r2 = run([b('*1\r\n$5000000000\r\nabc')]);
    expect(r2.errors).toEqual(['invalid bulk length']);
  });
});

describe('ReplyScanner: malformed input', () => {
  const cases: Array<[string, string, string]> = [
    ['bad type byte', '?foo\r\n', 'unexpected byte 0x3f at the start of a reply'],
    ['bad type byte inside an array', '*2\r\n+a\r\nhello\r\n', 'unexpected byte 0x68 at the start of a reply'],
    ['bad type byte with no line end yet', 'GARBAGE', 'unexpected byte 0x47 at the start of a reply'],
    ['NUL type byte', '\x00\r\n', 'unexpected byte 0x0 at the start of a reply'],
    ['bad bulk length', '$abc\r\n', 'invalid bulk length'],
    ['empty bulk length', '$\r\n', 'invalid bulk length'],
    ['negative bulk length other than -1', '$-2\r\nab\r\n', 'invalid bulk length'],
    ['bulk length too long to be a number', `$${'1'.repeat(40)}\r\n`, 'invalid bulk length'],
    ['bulk length line that never ends', `$${'1'.repeat(40)}`, 'invalid bulk length'],
    ['bad array length', '*x\r\n', 'invalid multibulk length'],
    ['negative array length other than -1', '*-3\r\n', 'invalid multibulk length'],
    ['bad set length', '~1a\r\n', 'invalid multibulk length'],
    ['bad push length', '>\r\n', 'invalid multibulk length'],
    ['bad map length', '%-2\r\n', 'invalid map length'],
    ['negative attribute length', '|-1\r\n+OK\r\n', 'invalid attribute length'],
    ['line ending in CR only', '+OK\rX\r\n', 'line does not end with CRLF'],
    ['bulk not ended by CRLF', '$3\r\nfooXY', 'bulk data does not end with CRLF'],
    ['bulk ended by LF only', '$3\r\nfoo\n+OK\r\n', 'bulk data does not end with CRLF'],
    ['verbatim not ended by CRLF', '=5\r\ntxt:aXY', 'bulk data does not end with CRLF'],
  ];

  const before = b('+OK\r\n*2\r\n:1\r\n$1\r\nx\r\n');
  const after = b('+OK\r\n:5\r\n');

  it.each(cases)('%s', (_name, bad, detail) => {
    const input = Buffer.concat([before, b(bad)]);
    for (const [how, chunks] of feedings(new Rng(17), input)) {
      const r = run(chunks);
      expect(r.errors, how).toEqual([detail]);
      expect(
        r.frames.map((f) => f.toString('latin1')),
        how,
      ).toEqual(['+OK\r\n', '*2\r\n:1\r\n$1\r\nx\r\n']);
      expect(r.scanner.broken, how).toBe(true);
      r.scanner.feed(after);
      r.scanner.feed(Buffer.from(after));
      expect(r.events, how).toEqual(['reply', 'reply', 'error']);
    }
  });

  it.each(cases)('%s, followed by valid replies in the same chunk', (_name, bad, detail) => {
    const r = run([Buffer.concat([before, b(bad), after, after])]);
    expect(r.errors).toEqual([detail]);
    expect(r.events).toEqual(['reply', 'reply', 'error']);
  });
});

describe('ReplyScanner: reset', () => {
  it('reset() mid-frame forgets the partial frame', () => {
    const r = run([b('*3\r\n$5\r\nhel')]);
    expect(r.frames).toHaveLength(0);
    r.scanner.reset();
    r.scanner.feed(b('+OK\r\n:7\r\n'));
    expect(r.frames.map(String)).toEqual(['+OK\r\n', ':7\r\n']);
    expect(r.errors).toEqual([]);
  });

  it('reset() while waiting for a large bulk body', () => {
    const r = run([b('$100000\r\n'), Buffer.alloc(5000, 97)]);
    r.scanner.reset();
    r.scanner.feed(b('$2\r\nab\r\n'));
    expect(r.frames.map(String)).toEqual(['$2\r\nab\r\n']);
  });

  it('reset() mid-frame, at every cut point of a random stream', () => {
    const rng = new Rng(31);
    const data = Buffer.concat(
      Array.from({ length: 5 }, () => encodeReply(randomReply(rng, { resp3: true, maxDepth: 3 }))),
    );
    const fresh = Buffer.concat([b('+fresh\r\n'), b('*2\r\n:1\r\n:2\r\n')]);
    for (let cut = 0; cut <= data.length; cut++) {
      const r = run([Buffer.from(data.subarray(0, cut))]);
      const before = r.frames.length;
      r.scanner.reset();
      for (const c of randomSplits(rng, fresh)) r.scanner.feed(c);
      expect(r.errors).toEqual([]);
      expect(r.frames.slice(before).map(String)).toEqual(['+fresh\r\n', '*2\r\n:1\r\n:2\r\n']);
    }
  });

  it('reset() clears the failed state', () => {
    const r = run([b('?bad\r\n')]);
    expect(r.scanner.broken).toBe(true);
    r.scanner.reset();
    expect(r.scanner.broken).toBe(false);
    r.scanner.feed(b('+OK\r\n'));
    expect(r.frames.map(String)).toEqual(['+OK\r\n']);
  });

  it('a sink that resets the scanner from onReply stops the rest of the chunk', () => {
    const seen: string[] = [];
    const scanner: ReplyScanner = new ReplyScanner({
      onReply(frame) {
        seen.push(frame.toString());
        if (seen.length === 2) scanner.reset();
      },
      onReplyProtocolError() {
        seen.push('error');
      },
    });
    scanner.feed(b('+a\r\n+b\r\n+c\r\n+d'));
    expect(seen).toEqual(['+a\r\n', '+b\r\n']);
    scanner.feed(b('+e\r\n'));
    expect(seen).toEqual(['+a\r\n', '+b\r\n', '+e\r\n']);
  });

  it('a sink that resets and feeds again from onReply (reconnect in the callback)', () => {
    const seen: string[] = [];
    const scanner: ReplyScanner = new ReplyScanner({
      onReply(frame) {
        seen.push(frame.toString());
        if (seen.length === 1) {
          scanner.reset();
          scanner.feed(b('+new\r\n+part'));
        }
      },
      onReplyProtocolError() {
        seen.push('error');
      },
    });
    scanner.feed(b('+old\r\n+stale\r\n'));
    scanner.feed(b('ial\r\n'));
    expect(seen).toEqual(['+old\r\n', '+new\r\n', '+partial\r\n']);
  });
});

describe('parseLength', () => {
  const len = (s: string) => parseLength(b(`x${s}\r\n`), 1, 1 + s.length);
  it('parses lengths, the -1 null, and rejects everything else', () => {
    expect(len('0')).toBe(0);
    expect(len('7')).toBe(7);
    expect(len('1234567890')).toBe(1234567890);
    expect(len('-1')).toBe(-1);
    for (const bad of ['', '-', '-2', '-10', '1a', ' 1', '+1', 'x', '1'.repeat(21)]) expect(len(bad), bad).toBe(-2);
  });
});
