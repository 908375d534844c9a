/**
 * Client reads through the shared buffer (src/server/client-reads.ts): every plain-TCP client socket reads into one
 * scratch buffer and the bytes are copied into a shared pool whose views the parser keeps until the commands are
 * forwarded. A command parsed from one client's read must never see its bytes replaced by another client's later
 * read, across pool changes, with reads large enough to get a buffer of their own, and with commands split across
 * reads at arbitrary places. Values of random sizes from 1 byte to 100 KB are written through keymux by ioredis
 * clients pipelining at once and by raw sockets that send their commands in odd-sized pieces; every value is then
 * read straight from the real redis-servers and compared byte for byte. (What a request held for long keeps alive:
 * client-reads-memory.test.ts.)
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import { commandFrame } from '../../src/resp/writer.js';
import { sharedReadStats } from '../../src/server/client-reads.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;

/** A deterministic pseudo-random generator (a failing run can be replayed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function valueFor(tag: number, size: number): Buffer {
  const v = Buffer.alloc(size);
  for (let j = 0; j < size; j++) v[j] = (tag * 131 + j * 7 + (j >> 8)) & 0xff;
  return v;
}

function randomSize(rand: () => number): number {
  const r = rand();
  // Mostly small (pool space), some around the 16 KiB own-buffer bound and the 64 KiB scratch, a few of 100 KB.
  return r < 0.7 ? 1 + Math.floor(rand() * 200) : r < 0.95 ? 8000 + Math.floor(rand() * 60_000) : 100_000;
}

/** Keys whose value on its shard (read there directly) differs from what was written through keymux. */
async function differing(written: Map<string, Buffer>): Promise<number> {
  const direct = shards.map((s) => new Redis({ port: s.port }));
  try {
    let bad = 0;
    for (const [key, value] of written) {
      const got = await direct[keySlot(Buffer.from(key)) < 8192 ? 0 : 1]!.getBuffer(key);
      if (got === null || !got.equals(value)) bad++;
    }
    return bad;
  } finally {
    direct.forEach((c) => c.disconnect());
  }
}

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(shards.map((s) => s.port)));
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

describe('client reads through the shared buffer', () => {
  it('pipelined SETs of 1 byte to 100 KB from 8 ioredis clients at once land on the shards byte for byte', async () => {
    const before = sharedReadStats.sockets;
    const clients = Array.from({ length: 8 }, () => new Redis({ port: proxy.port, lazyConnect: true }));
    await Promise.all(clients.map((c) => c.connect()));
    // The path under test is the one taken (this Node has the fields it needs).
    expect(sharedReadStats.sockets - before).toBe(8);
    const written = new Map<string, Buffer>();
    try {
      await Promise.all(
        clients.map(async (c, ci) => {
          const rand = rng(ci + 7);
          const pipe = c.pipeline();
          for (let i = 0; i < 250; i++) {
            const key = `cr:${ci}:${i}`;
            const value = valueFor(ci * 1000 + i, randomSize(rand));
            written.set(key, value);
            pipe.set(key, value);
          }
          const replies = (await pipe.exec()) ?? [];
          expect(replies.every(([err, r]) => err === null && r === 'OK')).toBe(true);
        }),
      );
    } finally {
      clients.forEach((c) => c.disconnect());
    }
    expect(await differing(written)).toBe(0);
  }, 60_000);

  it('commands sent in odd-sized pieces by 6 raw clients at once are parsed whole and exact', async () => {
    const written = new Map<string, Buffer>();
    await Promise.all(
      Array.from(
        { length: 6 },
        (_, ci) =>
          new Promise<void>((resolve, reject) => {
            const rand = rng(100 + ci);
            const cmds: Buffer[] = [];
            for (let i = 0; i < 120; i++) {
              const key = `crs:${ci}:${i}`;
              const value = valueFor(ci * 7000 + i, randomSize(rand));
              written.set(key, value);
              cmds.push(commandFrame(['SET', key, value]));
            }
            const stream = Buffer.concat(cmds);
            const sock = net.connect(proxy.port, '127.0.0.1');
            let replies = '';
            sock.on('data', (d: Buffer) => {
              replies += d.toString('latin1');
              if (replies.length >= 5 * cmds.length) {
                sock.end();
                if (replies === '+OK\r\n'.repeat(cmds.length)) resolve();
                else reject(new Error(`client ${ci}: unexpected replies ${replies.slice(0, 200)}`));
              }
            });
            sock.on('error', reject);
            sock.on('connect', () => {
              // Pieces of 1 byte to 20 KB, each its own write (and mostly its own read at keymux).
              let at = 0;
              const next = (): void => {
                if (at >= stream.length) return;
                const n = Math.min(
                  stream.length - at,
                  rand() < 0.3 ? 1 + Math.floor(rand() * 7) : Math.floor(rand() * 20_000) + 1,
                );
                const piece = stream.subarray(at, at + n);
                at += n;
                if (sock.write(piece)) setImmediate(next);
                else sock.once('drain', next);
              };
              next();
            });
          }),
      ),
    );
    expect(await differing(written)).toBe(0);
  }, 60_000);
});
