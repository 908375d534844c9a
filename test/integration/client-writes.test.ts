/**
 * Client writes straight to the socket's handle (src/server/client-writes.ts). Ordinary replies are taken by the
 * kernel at once and reuse one request object; replies to a client that stops reading wait in libuv's queue, are
 * counted as unsent, hold the client's reading back, and reach it whole and in order once it reads again, after
 * which the session reads its next commands. A client that goes away with replies still queued harms nobody else.
 * Real redis-servers behind keymux; raw sockets (to stop reading at will) and ioredis.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { commandFrame } from '../../src/resp/writer.js';
import { directWriteStats } from '../../src/server/client-writes.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;
let ioredis: Redis;

const BIG = 256 * 1024;
const bigValue = Buffer.alloc(BIG);
for (let i = 0; i < BIG; i++) bigValue[i] = (i * 31 + (i >> 10)) & 0xff;
const bigReply = Buffer.concat([Buffer.from(`$${BIG}\r\n`), bigValue, Buffer.from('\r\n')]);

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(shards.map((s) => s.port)));
  ioredis = new Redis({ port: proxy.port });
  await ioredis.set('cw:big', bigValue);
}, 60_000);

afterAll(async () => {
  ioredis?.disconnect();
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

/** A raw client that keeps what it receives as a list of chunks (replies of megabytes: no copy per read). */
function rawClient(): Promise<{ socket: net.Socket; received: () => Buffer; bytes: () => number }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxy.port, '127.0.0.1', () => {
      const parts: Buffer[] = [];
      let bytes = 0;
      socket.on('data', (d: Buffer) => {
        parts.push(d);
        bytes += d.length;
      });
      resolve({ socket, received: () => Buffer.concat(parts), bytes: () => bytes });
    });
    socket.once('error', reject);
  });
}

describe('direct client writes', () => {
  it('ordinary replies are written at once through the reused request object', async () => {
    const before = directWriteStats.immediate;
    for (let i = 0; i < 50; i++) expect(await ioredis.set(`cw:small:${i}`, String(i))).toBe('OK');
    expect(directWriteStats.immediate - before).toBeGreaterThanOrEqual(50);
  });

  it("replies keymux gives itself to one read's commands leave in one write, not one each", async () => {
    // A reply completing with nothing else in flight is written at once (a client without pipelining does not wait
    // for the end of the turn), except while the client's own read is being parsed: 100 PINGs in one read, answered
    // by keymux as they are parsed, still leave together.
    const c = await rawClient();
    const before = directWriteStats.immediate + directWriteStats.queued;
    c.socket.write(Buffer.concat(Array.from({ length: 100 }, () => commandFrame(['PING']))));
    await waitFor(() => c.bytes() >= 100 * 7, 'the 100 PONGs', 10_000);
    expect(c.received().toString()).toBe('+PONG\r\n'.repeat(100));
    expect(directWriteStats.immediate + directWriteStats.queued - before).toBeLessThanOrEqual(2);
    c.socket.destroy();
  });

  it('a client that stops reading: replies wait in libuv in order, reading waits, and all resume when it reads', async () => {
    const c = await rawClient();
    c.socket.pause();
    const queuedBefore = directWriteStats.queued;
    const count = 64; // 16 MiB of replies: far more than the socket buffers hold
    c.socket.write(Buffer.concat(Array.from({ length: count }, () => commandFrame(['GET', 'cw:big']))));
    await waitFor(() => directWriteStats.queued > queuedBefore, 'a write the kernel did not take at once', 20_000);
    // Another client is served meanwhile.
    expect(await ioredis.get('cw:small:7')).toBe('7');
    c.socket.resume();
    await waitFor(() => c.bytes() >= count * bigReply.length, 'every reply', 30_000);
    const all = c.received();
    expect(all.length).toBe(count * bigReply.length);
    for (let i = 0; i < count; i++) {
      if (!all.subarray(i * bigReply.length, (i + 1) * bigReply.length).equals(bigReply))
        throw new Error(`reply ${i} differs`);
    }
    // Once the queued replies were written, the session reads (and answers) this client's next command.
    c.socket.write(commandFrame(['PING']));
    await waitFor(() => c.bytes() >= count * bigReply.length + 7, 'the PING after the big replies', 10_000);
    expect(
      c
        .received()
        .subarray(count * bigReply.length)
        .toString(),
    ).toBe('+PONG\r\n');
    c.socket.destroy();
  }, 60_000);

  it('a client that goes away with replies still queued: nothing is left behind, others are served', async () => {
    const c = await rawClient();
    c.socket.pause();
    const queuedBefore = directWriteStats.queued;
    c.socket.write(Buffer.concat(Array.from({ length: 32 }, () => commandFrame(['GET', 'cw:big']))));
    await waitFor(() => directWriteStats.queued > queuedBefore, 'a queued write', 20_000);
    const clientsBefore = proxy.clientCount();
    c.socket.destroy();
    await waitFor(() => proxy.clientCount() < clientsBefore, 'the session closed', 10_000);
    expect(await ioredis.get('cw:small:3')).toBe('3');
    const bigs = await Promise.all(Array.from({ length: 4 }, () => ioredis.getBuffer('cw:big')));
    for (const b of bigs) expect(b?.equals(bigValue)).toBe(true);
  }, 60_000);
});
