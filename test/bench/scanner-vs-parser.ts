/**
 * Micro-benchmark behind a design choice: on the hot path keymux finds where each backend reply ends with its own
 * ReplyScanner (raw frames, no values) instead of decoding replies with redis-parser. This measures both on the
 * same byte streams (GET-like bulk replies, +OK, integers, 10-element MGET arrays), fed in 64 KB chunks as a
 * socket delivers them, and prints replies per second and the ratio. Run: npx tsx test/bench/scanner-vs-parser.ts
 */
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { ReplyScanner } from '../../src/resp/reply-scanner.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

function stream(kind: string, count: number): Buffer {
  const one = (i: number): string => {
    switch (kind) {
      case 'bulk 16B':
        return `$16\r\n${String(i).padStart(16, '0')}\r\n`;
      case 'bulk 1KB':
        return `$1024\r\n${'x'.repeat(1024)}\r\n`;
      case '+OK':
        return '+OK\r\n';
      case 'integer':
        return `:${i}\r\n`;
      default: {
        // MGET of 10
        let s = '*10\r\n';
        for (let j = 0; j < 10; j++)
          s += j % 3 === 0 ? '$-1\r\n' : `$16\r\n${String(i * 10 + j).padStart(16, '0')}\r\n`;
        return s;
      }
    }
  };
  const parts: string[] = [];
  for (let i = 0; i < count; i++) parts.push(one(i));
  return Buffer.from(parts.join(''), 'latin1');
}

function chunks(buf: Buffer, size = 65536): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

function time(fn: () => number): { seconds: number; replies: number } {
  fn(); // warm up
  const start = performance.now();
  let replies = 0;
  for (let r = 0; r < 5; r++) replies += fn();
  return { seconds: (performance.now() - start) / 1000, replies };
}

const kinds = ['bulk 16B', 'bulk 1KB', '+OK', 'integer', 'MGET 10'];
console.log('| replies | keymux ReplyScanner (replies/s) | redis-parser, returnBuffers (replies/s) | scanner/parser |');
console.log('| --- | ---: | ---: | ---: |');
for (const kind of kinds) {
  const count = kind === 'bulk 1KB' ? 50_000 : 200_000;
  const data = chunks(stream(kind, count));
  const scan = time(() => {
    let n = 0;
    const s = new ReplyScanner({
      onReply: () => {
        n++;
      },
      onReplyProtocolError: (d) => {
        throw new Error(d);
      },
    });
    for (const c of data) s.feed(c);
    return n;
  });
  const parse = time(() => {
    let n = 0;
    const p = new RedisParser({
      returnBuffers: true,
      returnReply: () => {
        n++;
      },
      returnError: () => {
        n++;
      },
    });
    for (const c of data) p.execute(c);
    return n;
  });
  const a = scan.replies / scan.seconds;
  const b = parse.replies / parse.seconds;
  console.log(
    `| ${kind} | ${Math.round(a).toLocaleString('en')} | ${Math.round(b).toLocaleString('en')} | ${(a / b).toFixed(2)}× |`,
  );
}
