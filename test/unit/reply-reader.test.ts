/**
 * reply-reader: values read on demand out of complete frames. Array elements come out as raw frame views (nested
 * aggregates, attributes and nulls included), integers are exact or refused, bulk bodies and error text are read
 * from RESP2 and RESP3 forms, and anything that is not the expected shape yields null.
 */
import { describe, expect, it } from 'vitest';
import {
  afterAttributes,
  elementEnd,
  errorText,
  isErrorFrame,
  isOkFrame,
  isPushFrame,
  OK_FRAME,
  readArrayElements,
  readBulk,
  readInteger,
} from '../../src/resp/reply-reader.js';
import { deepReply, encodeReply, randomReply, Rng, seeds, type Reply } from '../support/resp-gen.js';

const b = (s: string) => Buffer.from(s, 'latin1');

/** Checks readArrayElements on an encoded array against its tree, recursing into nested arrays. */
function checkArray(reply: Reply & { t: 'array' }, frame: Buffer, label: string): void {
  const elements = readArrayElements(frame);
  if (reply.v === null) {
    expect(elements, label).toBeNull();
    return;
  }
  expect(elements, label).not.toBeNull();
  const els = elements as Buffer[];
  expect(els.length, label).toBe(reply.v.length);
  let offset = frame.indexOf('\r\n') + 2;
  for (let i = 0; i < els.length; i++) {
    const want = encodeReply(reply.v[i]);
    if (!els[i].equals(want)) expect.fail(`${label}[${i}]: ${JSON.stringify(els[i].toString('latin1').slice(0, 200))}`);
    // A view into the frame, at the right place, not a copy.
    if (els[i].buffer !== frame.buffer || els[i].byteOffset !== frame.byteOffset + offset) {
      expect.fail(`${label}[${i}]: not a view at offset ${offset} of the frame`);
    }
    if (elementEnd(frame, offset) !== offset + want.length) expect.fail(`${label}[${i}]: elementEnd`);
    offset += want.length;
    const child = reply.v[i];
    if (child.t === 'array') checkArray(child, els[i], `${label}[${i}]`);
  }
  expect(offset, `${label}: elements tile the frame`).toBe(frame.length);
}

describe('readArrayElements', () => {
  it.each(seeds(30, 400))('seed %i: elements of random nested arrays are raw frame views', (seed) => {
    const rng = new Rng(seed);
    for (let k = 0; k < 30; k++) {
      const children = Array.from({ length: rng.int(0, 12) }, () =>
        randomReply(rng, { resp3: seed % 2 === 0, maxDepth: 10 }),
      );
      const reply: Reply & { t: 'array' } = { t: 'array', v: children };
      checkArray(reply, encodeReply(reply), `seed ${seed} #${k}`);
    }
  });

  it('arrays nested 10 deep', () => {
    const rng = new Rng(77);
    for (let k = 0; k < 20; k++) {
      const reply: Reply & { t: 'array' } = { t: 'array', v: [deepReply(rng, 10, false), deepReply(rng, 10, true)] };
      checkArray(reply, encodeReply(reply), `deep #${k}`);
    }
  });

  it('works on a frame that is a view into a larger buffer', () => {
    const stream = b('+OK\r\n*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n:2\r\n:9\r\n');
    const frame = stream.subarray(5, stream.length - 4);
    const els = readArrayElements(frame) as Buffer[];
    expect(els.map(String)).toEqual(['$1\r\na\r\n', '$-1\r\n', '*2\r\n:1\r\n:2\r\n']);
    expect(readArrayElements(els[2])?.map(String)).toEqual([':1\r\n', ':2\r\n']);
  });

  it('MGET-like replies: bulks with CR LF inside, empty bulks, nulls', () => {
    const frame = b('*4\r\n$4\r\n\r\n\r\n\r\n$0\r\n\r\n$-1\r\n$3\r\n*1\r\r\n');
    expect(readArrayElements(frame)?.map(String)).toEqual([
      '$4\r\n\r\n\r\n\r\n',
      '$0\r\n\r\n',
      '$-1\r\n',
      '$3\r\n*1\r\r\n',
    ]);
  });

  it('RESP3 elements: maps, sets, attributes, nulls, doubles, verbatim', () => {
    const parts = [
      '%1\r\n+k\r\n:1\r\n',
      '~2\r\n#t\r\n#f\r\n',
      '|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n',
      '_\r\n',
      ',1.5\r\n',
      '=7\r\ntxt:abc\r\n',
      '(123456789012345678901234567890\r\n',
      '!3\r\nERR\r\n',
      '*-1\r\n',
      '*0\r\n',
    ];
    const frame = b(`*${parts.length}\r\n${parts.join('')}`);
    expect(readArrayElements(frame)?.map((e) => e.toString('latin1'))).toEqual(parts);
  });

  it('empty, nil and non-array frames', () => {
    expect(readArrayElements(b('*0\r\n'))).toEqual([]);
    expect(readArrayElements(b('*-1\r\n'))).toBeNull();
    expect(readArrayElements(b('+OK\r\n'))).toBeNull();
    expect(readArrayElements(b('-ERR x\r\n'))).toBeNull();
    expect(readArrayElements(b('$3\r\nfoo\r\n'))).toBeNull();
    expect(readArrayElements(b('~1\r\n+a\r\n'))).toBeNull(); // a set is not an array
    expect(readArrayElements(b('*x\r\n'))).toBeNull();
  });

  it('truncated frames yield null instead of short or overlong views', () => {
    const frame = b('*3\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$2\r\nab\r\n+OK\r\n');
    for (let cut = 0; cut < frame.length; cut++) {
      expect(readArrayElements(frame.subarray(0, cut)), `cut ${cut}`).toBeNull();
    }
  });
});

describe('elementEnd', () => {
  it.each(seeds(10, 500))('seed %i: finds the end of each element, -1 for every proper prefix', (seed) => {
    const rng = new Rng(seed);
    for (let k = 0; k < 20; k++) {
      const frame = encodeReply(randomReply(rng, { resp3: true, maxDepth: 4 }));
      const padded = Buffer.concat([b('+x\r\n'), frame, b(':1\r\n')]);
      expect(elementEnd(padded, 4)).toBe(4 + frame.length);
      expect(elementEnd(frame, 0)).toBe(frame.length);
      // Every cut point of small frames; a sample of them for big ones.
      const cuts =
        frame.length <= 2000
          ? Array.from({ length: frame.length }, (_, i) => i)
          : Array.from({ length: 2000 }, () => rng.int(0, frame.length - 1));
      const wrong = cuts.filter((cut) => elementEnd(frame.subarray(0, cut), 0) !== -1);
      expect(wrong, `seed ${seed} #${k}: cuts where a truncated frame looked complete`).toEqual([]);
    }
  });

  it('rejects bad lengths', () => {
    expect(elementEnd(b('$x\r\nab\r\n'), 0)).toBe(-1);
    expect(elementEnd(b('*-2\r\n'), 0)).toBe(-1);
    expect(elementEnd(b('%z\r\n'), 0)).toBe(-1);
    expect(elementEnd(b('|-1\r\n+OK\r\n'), 0)).toBe(-1);
  });
});

describe('readInteger', () => {
  const int = (s: string) => readInteger(b(s));

  it('reads integers, negative and large (up to the safe-integer range)', () => {
    expect(int(':0\r\n')).toBe(0);
    expect(int(':1\r\n')).toBe(1);
    expect(int(':-1\r\n')).toBe(-1);
    expect(int(':42\r\n')).toBe(42);
    expect(int(':-1234567890\r\n')).toBe(-1234567890);
    expect(int(':9007199254740991\r\n')).toBe(Number.MAX_SAFE_INTEGER);
    expect(int(':-9007199254740991\r\n')).toBe(-Number.MAX_SAFE_INTEGER);
  });

  it('refuses integers it cannot represent exactly', () => {
    expect(int(':9007199254740992\r\n')).toBeNull();
    expect(int(':9223372036854775807\r\n')).toBeNull();
    expect(int(':-9223372036854775808\r\n')).toBeNull();
    expect(int(`:${'9'.repeat(400)}\r\n`)).toBeNull();
  });

  it('refuses non-integer frames and malformed integer lines', () => {
    for (const s of [
      '+1\r\n',
      '$1\r\n1\r\n',
      '-ERR\r\n',
      ',1.5\r\n',
      '(12\r\n',
      '*1\r\n:1\r\n',
      ':\r\n',
      ':-\r\n',
      ': 1\r\n',
      ':1 \r\n',
      ':+5\r\n',
      ':1e3\r\n',
      ':0x10\r\n',
      ':1.0\r\n',
      ':Infinity\r\n',
      ':12',
      '',
    ]) {
      expect(int(s), JSON.stringify(s)).toBeNull();
    }
  });

  it('reads from a frame that is a view into a larger buffer', () => {
    const stream = b('+OK\r\n:-77\r\n:5\r\n');
    expect(readInteger(stream.subarray(5, 11))).toBe(-77);
  });
});

describe('readBulk', () => {
  it('reads bulk bodies as views, including binary bodies with CR LF', () => {
    const frame = b('$8\r\na\r\nb\r\n\r\n\r\n');
    const body = readBulk(frame) as Buffer;
    expect(body.toString('latin1')).toBe('a\r\nb\r\n\r\n');
    expect(body.buffer).toBe(frame.buffer);
    expect(readBulk(b('$0\r\n\r\n'))?.length).toBe(0);
    expect(readBulk(b('=15\r\ntxt:Some string\r\n'))?.toString()).toBe('txt:Some string');
  });

  it('a large bulk', () => {
    const payload = new Rng(1).bytes(1_000_000);
    const frame = Buffer.concat([b(`$${payload.length}\r\n`), payload, b('\r\n')]);
    expect(readBulk(frame)?.equals(payload)).toBe(true);
  });

  it('null for the nil bulk and for non-bulk frames', () => {
    expect(readBulk(b('$-1\r\n'))).toBeNull();
    expect(readBulk(b('+OK\r\n'))).toBeNull();
    expect(readBulk(b(':1\r\n'))).toBeNull();
    expect(readBulk(b('*1\r\n$1\r\na\r\n'))).toBeNull();
    expect(readBulk(b('$x\r\n'))).toBeNull();
    expect(readBulk(b('$3'))).toBeNull();
  });
});

describe('errors and OK', () => {
  it('errorText of simple and blob errors', () => {
    expect(errorText(b('-ERR unknown command\r\n'))).toBe('ERR unknown command');
    expect(errorText(b('-MOVED 3999 127.0.0.1:6381\r\n'))).toBe('MOVED 3999 127.0.0.1:6381');
    expect(errorText(b('-ASK 3999 [::1]:6381\r\n'))).toBe('ASK 3999 [::1]:6381');
    expect(errorText(b('-\r\n'))).toBe('');
    expect(errorText(b('!21\r\nSYNTAX invalid syntax\r\n'))).toBe('SYNTAX invalid syntax');
    expect(errorText(b('!4\r\nA\r\nB\r\n'))).toBe('A\r\nB');
    expect(errorText(Buffer.from('-ERR héllo\r\n'))).toBe('ERR héllo');
  });

  it('isErrorFrame: top-level simple and blob errors only', () => {
    expect(isErrorFrame(b('-ERR x\r\n'))).toBe(true);
    expect(isErrorFrame(b('!3\r\nERR\r\n'))).toBe(true);
    expect(isErrorFrame(b('+OK\r\n'))).toBe(false);
    expect(isErrorFrame(b('*1\r\n-ERR x\r\n'))).toBe(false);
    expect(isErrorFrame(b('$4\r\n-ERR\r\n'))).toBe(false);
  });

  it('isOkFrame: exactly +OK', () => {
    expect(isOkFrame(OK_FRAME)).toBe(true);
    expect(isOkFrame(b('+OK\r\n'))).toBe(true);
    expect(isOkFrame(b('+OKAY\r\n'))).toBe(false);
    expect(isOkFrame(b('-OK\r\n'))).toBe(false);
    expect(isOkFrame(b('$2\r\nOK\r\n'))).toBe(false);
    expect(isOkFrame(b('+ok\r\n'))).toBe(false);
    expect(isOkFrame(b('+QUEUED\r\n'))).toBe(false);
  });
});

describe('attributes and pushes (RESP3)', () => {
  it('afterAttributes: the value behind one or more attributes; the frame itself without; null when malformed', () => {
    const plain = b(':5\r\n');
    expect(afterAttributes(plain)).toBe(plain);
    expect(afterAttributes(b('|1\r\n+ttl\r\n:3\r\n:5\r\n'))?.toString()).toBe(':5\r\n');
    expect(afterAttributes(b('|1\r\n+a\r\n%1\r\n+b\r\n*1\r\n:1\r\n|1\r\n+c\r\n#t\r\n$1\r\nv\r\n'))?.toString()).toBe(
      '$1\r\nv\r\n',
    );
    expect(afterAttributes(b('|0\r\n+OK\r\n'))?.toString()).toBe('+OK\r\n');
    expect(afterAttributes(b('|x\r\n+OK\r\n'))).toBeNull();
    expect(afterAttributes(b('|-1\r\n+OK\r\n'))).toBeNull();
    expect(afterAttributes(b('|2\r\n+a\r\n:1\r\n'))).toBeNull(); // truncated
  });

  it('readers see through attributes: integer, bulk, array elements, +OK', () => {
    expect(readInteger(b('|1\r\n+note\r\n:1\r\n:42\r\n'))).toBe(42);
    expect(readBulk(b('|1\r\n+note\r\n:1\r\n=8\r\ntxt:abcd\r\n'))?.toString()).toBe('txt:abcd');
    expect(readArrayElements(b('|1\r\n+n\r\n:1\r\n*2\r\n_\r\n,1.5\r\n'))?.map(String)).toEqual(['_\r\n', ',1.5\r\n']);
    expect(isOkFrame(b('|1\r\n+n\r\n:1\r\n+OK\r\n'))).toBe(true);
    expect(isOkFrame(b('|1\r\n+n\r\n:1\r\n+NO\r\n'))).toBe(false);
    expect(readInteger(b('|1\r\n+n\r\n:1\r\n$1\r\n1\r\n'))).toBeNull();
    expect(readInteger(b('|1\r\n+n\r\n'))).toBeNull(); // malformed: no value
  });

  it('isPushFrame: a push, alone or behind attributes; nothing else', () => {
    expect(isPushFrame(b('>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nx\r\n'))).toBe(true);
    expect(isPushFrame(b('|1\r\n+a\r\n:1\r\n>1\r\n+x\r\n'))).toBe(true);
    expect(isPushFrame(b('|1\r\n+a\r\n:1\r\n*1\r\n+x\r\n'))).toBe(false);
    expect(isPushFrame(b('|1\r\n+a\r\n>1\r\n+x\r\n'))).toBe(false); // the push is the attribute's value, not the frame
    expect(isPushFrame(b('|z\r\n'))).toBe(false);
  });
});
