/**
 * RESP fuzzer (issue 11, standing suite): a fixed budget of mutated and random client frames (fast-check, seeded)
 * against a live keymux on 3 real redis-servers, while a canary client checks every reply byte for byte. Frames:
 * valid commands and their byte-level mutations (flip, insert, delete, truncate, duplicate), huge and negative
 * multibulk and bulk lengths, nested arrays (which a request may not contain), bad type bytes, inline edge cases
 * (unbalanced quotes, escapes, empty and over-long lines, lone CR), arguments over limits.max_bulk_bytes and
 * counts over limits.max_args, and random bytes. Each frame goes on its own connection, whole, split at every byte,
 * or at random points, followed by an ECHO sentinel and a half-close; keymux must answer with well-formed RESP
 * and end the connection. What must hold for the whole run: keymux never crashes (a fresh client gets PONG after
 * every frame batch), the canary's replies are all exact, keymux's held bytes stay under limits.max_buffered_bytes
 * and the process RSS under a generous cap. Reports frames tried; on failure prints the seed
 * (KEYMUX_FUZZ_SEED=<n> replays it; KEYMUX_FUZZ_FRAMES=<n> changes the budget).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import fc from 'fast-check';
import { createRequire } from 'node:module';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { keyOn } from '../support/fake-backend.js';
import { startCanary, type Canary } from '../support/canary.js';
import type { Proxy } from '../../src/proxy.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

const SEED = Number(process.env.KEYMUX_FUZZ_SEED ?? 20261205);
const FRAMES = Number(process.env.KEYMUX_FUZZ_FRAMES ?? 3000);
const MAX_BUFFERED = 64 * 1024 * 1024;
const SENTINEL = '*2\r\n$4\r\nECHO\r\n$8\r\nfuzz-end\r\n';

let shards: RedisProcess[] = [];
let proxy: Proxy;
let canary: Canary;

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      shards.map((s) => s.port),
      {
        limits: { max_buffered_bytes: MAX_BUFFERED, max_args: 4096, max_bulk_bytes: 1024 * 1024 },
        clients: { partial_command_timeout_s: 2 },
      },
    ),
    { builtinCommandTable: true },
  );
  canary = await startCanary({ port: proxy.port, keys: [0, 1, 2].map((s) => keyOn(proxy, s, `canary:${s}`)) });
  await canary.batchesAfter(1);
}, 60_000);

afterAll(async () => {
  await canary?.stop();
  await proxy?.close();
  for (const s of shards) await s.stop('SIGKILL');
});

// ---- frame generators ---------------------------------------------------------------------------------------

const enc = (args: Array<string | Buffer>): Buffer => {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a, 'latin1');
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
};

const word = fc.string({ minLength: 0, maxLength: 12 });
const bytesArb = fc.uint8Array({ minLength: 0, maxLength: 64 }).map((u) => Buffer.from(u));
const name = fc.constantFrom(
  'PING',
  'GET',
  'SET',
  'MGET',
  'DEL',
  'EXISTS',
  'ECHO',
  'INCR',
  'MSET',
  'COMMAND',
  'CLIENT',
  'HELLO',
  'QUIT',
  'SUBSCRIBE',
  'MULTI',
  'EXEC',
  'NOSUCH',
  'get',
  'sEt',
);
const validFrame = fc
  .tuple(name, fc.array(fc.oneof(word, bytesArb), { maxLength: 6 }))
  .map(([n, args]) => enc([n, ...args.map((a) => (typeof a === 'string' ? `fz:${a}` : a))]));

const mutate = fc
  .tuple(
    validFrame,
    fc.nat(),
    fc.integer({ min: 0, max: 255 }),
    fc.constantFrom('flip', 'insert', 'delete', 'cut', 'dup'),
  )
  .map(([f, at, byte, how]) => {
    const i = f.length === 0 ? 0 : at % f.length;
    if (how === 'flip') return Buffer.concat([f.subarray(0, i), Buffer.from([byte]), f.subarray(i + 1)]);
    if (how === 'insert') return Buffer.concat([f.subarray(0, i), Buffer.from([byte]), f.subarray(i)]);
    if (how === 'delete') return Buffer.concat([f.subarray(0, i), f.subarray(i + 1)]);
    if (how === 'cut') return f.subarray(0, i);
    return Buffer.concat([f, f.subarray(0, i)]);
  });

const hugeLengths = fc
  .tuple(
    fc.constantFrom('*', '$'),
    fc.oneof(
      fc.constantFrom(
        '-1',
        '-0',
        '-2',
        '0',
        '00',
        '01',
        '+1',
        ' 1',
        '1 ',
        '9'.repeat(20),
        '9007199254740993',
        '4096',
        '4097',
      ),
      fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
    ),
    fc.constantFrom('', 'PING\r\n', 'x', '\r\n$4\r\nPING\r\n'),
  )
  .map(([t, n, rest]) =>
    Buffer.from(t === '*' ? `*${n}\r\n${rest}` : `*2\r\n$4\r\nECHO\r\n$${n}\r\n${rest}`, 'latin1'),
  );

const deepNesting = fc
  .integer({ min: 1, max: 2000 })
  .map((d) => Buffer.from('*1\r\n'.repeat(d) + '$4\r\nPING\r\n', 'latin1'));

const badType = fc
  .tuple(fc.constantFrom('+', '-', ':', '%', '~', '>', '|', '_', ',', '#', '!', '=', '(', '\x00', '\xff'), bytesArb)
  .map(([t, rest]) => Buffer.concat([Buffer.from(t, 'latin1'), rest, Buffer.from('\r\n')]));

const inline = fc
  .oneof(
    fc.constantFrom(
      'PING\r\n',
      '\r\n',
      '\n\n\n',
      '   \r\n',
      'ECHO "unbalanced\r\n',
      "ECHO 'x\r\n",
      'ECHO "a"b\r\n',
      'ECHO "\\x4g\\x41"\r\n',
      'ECHO "\\n\\r\\t\\b\\a\\\\"\r\n',
      'SET k \x00\xff\r\n',
      'PING\rPING\r\n',
      'GET\t k\r\n',
    ),
    fc.string({ maxLength: 40 }).map((s) => `${s}\r\n`),
    fc.integer({ min: 60_000, max: 70_000 }).map((n) => `ECHO ${'a'.repeat(n)}`),
  )
  .map((s) => Buffer.from(s, 'latin1'));

const oversized = fc.oneof(
  fc.constant(enc(['SET', 'fz:big', Buffer.alloc(1024 * 1024 + 1, 97)])),
  fc.constant(Buffer.from(`*5000\r\n${'$1\r\nx\r\n'.repeat(5000)}`, 'latin1')),
  fc.integer({ min: 1025, max: 4096 }).map((n) => enc(['MGET', ...Array.from({ length: n - 1 }, (_, i) => `fz:${i}`)])),
);

const randomBytes = fc.uint8Array({ minLength: 1, maxLength: 256 }).map((u) => Buffer.from(u));

const frameArb = fc.oneof(
  { weight: 3, arbitrary: validFrame },
  { weight: 4, arbitrary: mutate },
  { weight: 2, arbitrary: hugeLengths },
  { weight: 1, arbitrary: deepNesting },
  { weight: 1, arbitrary: badType },
  { weight: 2, arbitrary: inline },
  { weight: 1, arbitrary: oversized },
  { weight: 2, arbitrary: randomBytes },
);
const splitArb = fc.oneof(
  fc.constant<'whole' | 'bytes' | number[]>('whole'),
  fc.constant<'whole' | 'bytes' | number[]>('bytes'),
  fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
);

// ---- one frame on one connection ------------------------------------------------------------------------------

interface Outcome {
  replies: number;
  wellFormed: boolean;
  bytes: number;
}

function sendFrame(frame: Buffer, split: 'whole' | 'bytes' | number[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = net.connect(proxy.port, '127.0.0.1');
    s.setNoDelay(true);
    let replies = 0;
    let wellFormed = true;
    let bytes = 0;
    const parser = new RedisParser({
      returnReply: () => replies++,
      returnError: () => replies++,
      returnFatalError: () => (wellFormed = false),
      returnBuffers: true,
    });
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      try {
        parser.execute(d);
      } catch {
        wellFormed = false;
      }
    });
    const done = () => resolve({ replies, wellFormed, bytes });
    s.on('close', done);
    s.on('error', () => undefined);
    s.setTimeout(20_000, () => {
      wellFormed = false; // keymux neither answered nor ended the connection
      s.destroy();
    });
    s.on('connect', async () => {
      const whole = Buffer.concat([frame, Buffer.from(SENTINEL)]);
      if (split === 'whole' || whole.length > 4096) s.write(whole);
      else if (split === 'bytes' && whole.length <= 512) {
        for (let i = 0; i < whole.length && !s.destroyed; i++) {
          s.write(whole.subarray(i, i + 1));
          if (i % 8 === 7) await new Promise((r) => setImmediate(r));
        }
      } else {
        const points = (split === 'bytes' ? [1, 2, 3] : split).map((p) => p % whole.length).sort((a, b) => a - b);
        let at = 0;
        for (const p of [...points, whole.length]) {
          if (p <= at) continue;
          s.write(whole.subarray(at, p));
          at = p;
          await new Promise((r) => setImmediate(r));
        }
      }
      if (!s.destroyed) s.end();
    });
  });
}

function pingOnce(): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(proxy.port, '127.0.0.1', () => s.write('*1\r\n$4\r\nPING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString('latin1'));
    });
    s.once('error', (e) => resolve(`error: ${e.message}`));
  });
}

describe('RESP fuzzer', () => {
  it(`${FRAMES} mutated and random frames: no crash, no stall, well-formed replies, memory bounded`, async () => {
    let tried = 0;
    let maxHeld = 0;
    let maxRssMB = 0;
    let closedByKeymux = 0;
    let repliesSeen = 0;
    // keymux's held bytes, sampled while frames are in flight (not only between them).
    const sampler = setInterval(() => {
      maxHeld = Math.max(maxHeld, proxy.clientBufferedBytes());
    }, 2);
    try {
      await fc.assert(
        fc.asyncProperty(frameArb, splitArb, async (frame, split) => {
          tried++;
          const out = await sendFrame(frame, split);
          repliesSeen += out.replies;
          if (out.bytes > 0) closedByKeymux++;
          maxHeld = Math.max(maxHeld, proxy.clientBufferedBytes());
          maxRssMB = Math.max(maxRssMB, Math.round(process.memoryUsage().rss / 1024 / 1024));
          if (!out.wellFormed) return false;
          if (tried % 250 === 0) {
            if ((await pingOnce()) !== '+PONG\r\n') return false;
            await canary.batchesAfter(1);
          }
          return maxHeld <= MAX_BUFFERED;
        }),
        { seed: SEED, numRuns: FRAMES, endOnFailure: true },
      );
    } catch (e) {
      console.log(`[fuzz] FAILED with seed ${SEED} after ${tried} frames (replay: KEYMUX_FUZZ_SEED=${SEED})`);
      throw e;
    } finally {
      clearInterval(sampler);
    }
    expect(await pingOnce()).toBe('+PONG\r\n');
    const report = await canary.stop();
    console.log(
      `[fuzz] ${JSON.stringify({
        seed: SEED,
        framesTried: tried,
        repliesSeen,
        connectionsAnswered: closedByKeymux,
        protocolErrors: proxy.stats.protocolErrors,
        maxHeldBytes: maxHeld,
        maxRssMB,
        canary: { batches: report.batches, errors: report.errors.length, latencyMs: report.latencyMs },
      })}`,
    );
    expect(tried).toBe(FRAMES);
    expect(report.errors).toEqual([]);
    expect(report.batches).toBeGreaterThan(1);
    expect(maxHeld).toBeLessThanOrEqual(MAX_BUFFERED);
    expect(maxRssMB).toBeLessThan(2048);
  }, 120_000);
});
