/**
 * The request parser's lazily made argument views: a command of more than LAZY_ARGS_ABOVE arguments is delivered
 * with its first EAGER_ARGS views made, the full argument count, and the offsets of every argument in its frame;
 * argAt() and materializeArgs() (core/request.ts) read the same bytes a view would, whatever the chunking. And
 * ownBytes() moves a request's frame and argument views out of the memory they were read into (a shared read pool),
 * holes and all, so later writes to that memory do not reach it.
 */
import { describe, expect, it } from 'vitest';
import {
  EAGER_ARGS,
  LAZY_ARGS_ABOVE,
  MAX_COMMAND_BYTES as MAX_FRAME,
  RequestParser,
  type RequestSink,
} from '../../src/resp/request-parser.js';
import { Request, argAt, materializeArgs, ownBytes } from '../../src/core/request.js';
import { idleOwner } from '../support/owner.js';

function frameOf(args: string[]): Buffer {
  return Buffer.from(`*${args.length}\r\n${args.map((a) => `$${a.length}\r\n${a}\r\n`).join('')}`, 'latin1');
}

interface Got {
  frame: Buffer;
  args: Buffer[];
  lazy: Uint32Array | null;
}

function parse(bytes: Buffer, chunk: number): Got[] {
  const got: Got[] = [];
  const sink: RequestSink = {
    onCommand: (frame, args, lazy) => got.push({ frame, args, lazy }),
    onProtocolError: (reply) => {
      throw new Error(reply.toString());
    },
  };
  const p = new RequestParser({ maxArgs: 1 << 20, maxBulkBytes: 1 << 20, maxInlineBytes: 1 << 16 }, sink);
  for (let i = 0; i < bytes.length; i += chunk) p.feed(bytes.subarray(i, i + chunk));
  return got;
}

const owner = idleOwner();

describe('lazily made argument views', () => {
  const small = ['GET', 'k'];
  const big = ['MGET', ...Array.from({ length: LAZY_ARGS_ABOVE + 10 }, (_, i) => `key:${i}:${'x'.repeat(i % 7)}`)];
  const bytes = Buffer.concat([frameOf(small), frameOf(big), frameOf(small)]);

  it.each([bytes.length, 65_536, 4096, 1000, 7])('chunks of %i bytes: same arguments as eager views', (chunk) => {
    const got = parse(bytes, chunk);
    expect(got.map((g) => g.args.length)).toEqual([2, big.length, 2]);
    expect(got[0].lazy).toBeNull();
    expect(got[2].lazy).toBeNull();
    const g = got[1];
    expect(g.lazy).not.toBeNull();
    expect(g.frame.equals(frameOf(big))).toBe(true);
    for (let i = 0; i < EAGER_ARGS; i++) expect(g.args[i].toString('latin1')).toBe(big[i]);
    expect(g.args[EAGER_ARGS]).toBeUndefined();
    const req = new Request(owner, g.frame, g.args, 0, 0);
    req.argOffsets = g.lazy;
    for (let i = 0; i < big.length; i += 97) expect(argAt(req, i).toString('latin1')).toBe(big[i]);
    materializeArgs(req);
    expect(req.argOffsets).toBeNull();
    expect(req.args.map((a) => a.toString('latin1'))).toEqual(big);
  });

  it('a command of exactly LAZY_ARGS_ABOVE arguments gets every view', () => {
    const args = ['DEL', ...Array.from({ length: LAZY_ARGS_ABOVE - 1 }, (_, i) => `k${i}`)];
    const [g] = parse(frameOf(args), 333);
    expect(g.lazy).toBeNull();
    expect(g.args.map((a) => a.toString())).toEqual(args);
  });

  it('ownBytes: frame and views (eager and lazy) move to memory of their own; the old memory no longer reaches them', () => {
    // Two commands read into one pool, as client reads land (server/client-reads.ts).
    const pool = Buffer.concat([frameOf(small), frameOf(big), Buffer.alloc(1000)]);
    const got = parse(pool.subarray(0, frameOf(small).length + frameOf(big).length), pool.length);
    const g = got[1];
    const req = new Request(owner, g.frame, g.args, 0, 0);
    req.argOffsets = g.lazy;
    const before = req.frame.buffer;
    ownBytes(req);
    expect(req.frame.buffer).not.toBe(before);
    expect(req.frame.buffer.byteLength).toBe(req.frame.length);
    expect(req.frame.equals(frameOf(big))).toBe(true);
    for (let i = 0; i < EAGER_ARGS; i++) expect(req.args[i].buffer).toBe(req.frame.buffer);
    expect(req.args[EAGER_ARGS]).toBeUndefined(); // holes stay holes; argAt reads the copy
    // Overwrite the memory the command was parsed from: the request still reads its own bytes.
    for (const g2 of got) g2.frame.fill(0x21);
    for (let i = 0; i < big.length; i += 53) expect(argAt(req, i).toString('latin1')).toBe(big[i]);
    materializeArgs(req);
    expect(req.args.map((a) => a.toString('latin1'))).toEqual(big);
    // Already alone in its memory: left as it is.
    const frame = req.frame;
    ownBytes(req);
    expect(req.frame).toBe(frame);
  });

  it('refuses a command whose frame would not fit the offsets (2^32 bytes or more), before reading its bulk', () => {
    // limits.max_bulk_bytes may be set up to 2^32: such a bulk is refused at its header, not after 4 GiB of input,
    // and never delivered with an end offset that wrapped to 0.
    expect(MAX_FRAME).toBeLessThanOrEqual(0xffffffff);
    const head = '*2\r\n$3\r\nSET\r\n';
    let n = 2 ** 32 - 2 - head.length;
    n -= `$${n}\r\n`.length; // the header's own bytes count: the whole frame is exactly 2^32 bytes
    const errors: string[] = [];
    const sink: RequestSink = {
      onCommand: () => errors.push('delivered'),
      onProtocolError: (reply) => errors.push(reply.toString('latin1')),
    };
    const p = new RequestParser({ maxArgs: 1 << 20, maxBulkBytes: 2 ** 32, maxInlineBytes: 1 << 16 }, sink);
    p.feed(Buffer.from(`${head}$${n}\r\n`, 'latin1'));
    expect(errors).toEqual([
      `-ERR Protocol error: invalid bulk length (${n} bytes: the command would exceed ${MAX_FRAME} bytes)\r\n`,
    ]);
  });
});
