/**
 * What a request held for long keeps alive. Client reads land in a shared 64 KiB pool (src/server/client-reads.ts)
 * and any view of it keeps the whole pool alive: fine for a request answered in a millisecond, 64 KiB per request
 * for one that waits for hours. A blocked BLPOP, and a command its client pipelined behind it (held in the session
 * until the BLPOP is answered), must keep only their own bytes (ownBytes, core/request.ts). 300 clients each block
 * after their commands were read into a different pool (another client's small reads fill the rest of each pool);
 * the ArrayBuffer memory the process holds then is compared with before (20 MB if each kept its pool). A real
 * redis-server shard; raw clients; the items pushed afterwards reach their clients. Alone in its file so that no
 * earlier test's buffers are still being released while it measures.
 */
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { commandFrame } from '../../src/resp/writer.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;

beforeAll(async () => {
  shards = [await startRedis()];
  proxy = await startKeymux(slotsConfig(shards.map((s) => s.port)));
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

/** ArrayBuffer bytes after a full collection, once what closing sockets release has been released. */
async function settledArrayBuffers(gc: () => void): Promise<number> {
  gc();
  await new Promise((r) => setImmediate(r));
  gc();
  return process.memoryUsage().arrayBuffers;
}

describe('requests held for long keep only their own bytes', () => {
  it('300 blocked BLPOPs (each with a GET pipelined behind it), read into different pools, hold only their own bytes', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const connect = (): Promise<net.Socket> =>
      new Promise((resolve, reject) => {
        const s = net.connect(proxy.port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      });
    // Fills the rest of the shared pool with small reads: 16 round trips of 4 KiB of pipelined SETs.
    const filler = await connect();
    const fill = async (): Promise<void> => {
      const piece = commandFrame(['SET', 'crm:filler', 'x'.repeat(4000)]);
      for (let i = 0; i < 16; i++) {
        await new Promise<void>((resolve) => {
          filler.once('data', () => resolve());
          filler.write(piece);
        });
      }
    };
    const before = await settledArrayBuffers(gc);
    const blocked: Array<{ sock: net.Socket; got: Promise<string> }> = [];
    for (let i = 0; i < 300; i++) {
      const sock = await connect();
      let text = '';
      const got = new Promise<string>((resolve) => {
        sock.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.endsWith('$-1\r\n')) resolve(text); // the BLPOP's reply, then the GET's (nil)
        });
      });
      // A GET pipelined behind the BLPOP waits for it, held in the session: it must not keep the pool either.
      sock.write(Buffer.concat([commandFrame(['BLPOP', `crm:q${i}`, '0']), commandFrame(['GET', `crm:none${i}`])]));
      blocked.push({ sock, got });
      await fill();
    }
    const held = (await settledArrayBuffers(gc)) - before;
    // 300 pools of 64 KiB would be 20 MB; their own bytes are a few KB (about 2.5 MB is held in all: sockets,
    // leased backend connections, parsers).
    expect(held).toBeLessThan(10 * 1024 * 1024);
    const pusher = new Redis({ port: proxy.port });
    try {
      for (let i = 0; i < 300; i++) await pusher.lpush(`crm:q${i}`, `item${i}`);
      const replies = await Promise.all(blocked.map((b) => b.got));
      replies.forEach((r, i) =>
        expect(r).toBe(`*2\r\n$${`crm:q${i}`.length}\r\ncrm:q${i}\r\n$${`item${i}`.length}\r\nitem${i}\r\n$-1\r\n`),
      );
    } finally {
      pusher.disconnect();
      filler.destroy();
      blocked.forEach((b) => b.sock.destroy());
    }
  }, 120_000);
});
