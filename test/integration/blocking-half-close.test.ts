/**
 * A blocking command (or WAIT) that a client sends behind other commands and then ends its side of the connection
 * (`GET k; BLPOP q 0`, then exit: a worker's last words) must not run: Redis would block it and free the client
 * at the end of its input, so it pops nothing. Before, keymux parked the BLPOP behind the earlier command, ran it
 * after the client had gone, and the next item pushed to the queue was popped for nobody; the session connection
 * and the client stayed held until then (any client could exhaust backend.session_connections.max that way).
 * Now the earlier replies are written, the blocking command is answered with an error, and the connection ends.
 * Real redis-server; raw sockets with allowHalfOpen (the client writes, then FINs, and keeps reading).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { startRedis, redisCommand, encodeCommand, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let shard: RedisProcess;
let proxy: Proxy;

beforeAll(async () => {
  shard = await startRedis();
  proxy = await startKeymux(slotsConfig([shard.port]));
});
afterAll(async () => {
  await proxy?.close();
  await shard?.stop();
});

/** Sends `commands` in one write followed by a FIN; resolves with all bytes received once keymux closes. */
function sendThenEnd(commands: string[][]): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ port: proxy.port, host: '127.0.0.1', allowHalfOpen: true }, () =>
      s.end(Buffer.concat(commands.map((c) => encodeCommand(c)))),
    );
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    // Without the fix keymux never closes (the BLPOP blocks on the shard for good): the test times out here.
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

const ENDED = '-ERR keymux: not run: the client ended its input before this command could block';

describe('a blocking command behind others, then the client ends its side', () => {
  const cases: Array<[string, string[][], string]> = [
    ['GET', [['GET', 'hc:g']], '$-1\r\n'],
    ['SET', [['SET', 'hc:g', 'v']], '+OK\r\n'],
    ['MGET', [['MGET', 'hc:a', 'hc:b', 'hc:c']], '*3\r\n$-1\r\n$-1\r\n$-1\r\n'],
    ['WATCH', [['WATCH', 'hc:w']], '+OK\r\n'],
    ['MULTI/SET/EXEC', [['MULTI'], ['SET', 'hc:m', '1'], ['EXEC']], '+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n'],
  ];
  for (const [name, before, replies] of cases) {
    it(`${name}; BLPOP q 0; FIN: earlier replies, an error for BLPOP, the close; a later push stays in the queue`, async () => {
      const queue = `hc:q:${name}`;
      const got = await sendThenEnd([...before, ['BLPOP', queue, '0']]);
      expect(got.startsWith(replies)).toBe(true);
      expect(got.slice(replies.length)).toMatch(new RegExp(`^${ENDED}.*\\r\\n$`));
      expect(await redisCommand(shard.port, 'RPUSH', queue, 'item')).toBe(1);
      expect(await redisCommand(shard.port, 'LLEN', queue)).toBe(1); // nobody popped it
      expect(proxy.sessions.leasedTotal).toBe(0);
      expect(proxy.sessions.blockedCount()).toBe(0);
    });
  }

  it('WAIT behind a SET, then FIN: the SET is answered, WAIT is not run', async () => {
    const got = await sendThenEnd([
      ['SET', 'hc:wait', '1'],
      ['WAIT', '1', '0'],
    ]);
    expect(got.startsWith('+OK\r\n')).toBe(true);
    expect(got.slice(5)).toMatch(new RegExp(`^${ENDED}.*\\r\\n$`));
  });
});
