/**
 * A refused command has no effect, and neither has what depends on it (issue 9): when keymux refuses MULTI (here:
 * denied by configuration), everything the client queued after it up to EXEC or DISCARD is refused too, and EXEC
 * answers -EXECABORT, as Redis does after a queuing error; nothing of the would-be transaction runs on its own.
 * Each form a client may use: one batch (what every client library sends), one command per round trip, inline
 * commands, and redis-cli. DISCARD ends the state; QUIT still works inside it. Real redis-server shards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      shards.map((s) => s.port),
      { commands: { deny: ['multi'] } },
    ),
  );
});
afterAll(async () => {
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

const cmd = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** The value of `key` on whichever shard has it (null when none does). */
async function onShards(key: string): Promise<unknown> {
  for (const s of shards) {
    const v = await redisCommand(s.port, 'GET', key);
    if (v !== null) return v;
  }
  return null;
}

function expectRefusedTransaction(replies: unknown[], queued: number): void {
  expect((replies[0] as Error).message).toMatch(/^ERR keymux: command 'multi' is disabled by configuration/);
  for (let i = 1; i <= queued; i++) {
    expect((replies[i] as Error).message).toMatch(/^ERR keymux: not run: it follows a MULTI that keymux refused/);
  }
  expect((replies[queued + 1] as Error).message).toBe('EXECABORT Transaction discarded because of previous errors.');
}

describe('a refused MULTI', () => {
  it('one batch: MULTI; INCR x; SET y 1; EXEC: every queued command refused, EXECABORT, nothing applied', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('MULTI') + cmd('INCR', 'b:x') + cmd('SET', 'b:y', '1') + cmd('EXEC') + cmd('GET', 'b:x'),
      5,
    );
    expectRefusedTransaction(replies, 2);
    expect(replies[4]).toBeNull(); // after EXEC, commands run again: x was never incremented
    expect(await onShards('b:x')).toBeNull();
    expect(await onShards('b:y')).toBeNull();
    c.close();
  });

  it('one command per round trip', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies: unknown[] = [];
    for (const bytes of [cmd('MULTI'), cmd('INCR', 'r:x'), cmd('SET', 'r:y', '1'), cmd('EXEC')]) {
      replies.push(...(await c.exchange(bytes, 1)));
    }
    expectRefusedTransaction(replies, 2);
    expect(await onShards('r:x')).toBeNull();
    expect(await onShards('r:y')).toBeNull();
    c.close();
  });

  it('inline commands', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange('MULTI\r\nINCR i:x\r\nSET i:y 1\r\nEXEC\r\n', 4);
    expectRefusedTransaction(replies, 2);
    expect(await onShards('i:x')).toBeNull();
    c.close();
  });

  it('redis-cli, one line at a time', async () => {
    // keymux runs in this process: redis-cli must run asynchronously (a sync call would block keymux too).
    const child = promisify(execFile)('redis-cli', ['-p', String(proxy.port)]);
    child.child.stdin!.end('MULTI\nINCR c:x\nEXEC\nGET c:x\n');
    const { stdout } = await child;
    expect(stdout.split('\n').filter((l) => l !== '')).toEqual([
      expect.stringMatching(/^ERR keymux: command 'multi' is disabled by configuration/),
      expect.stringMatching(/^ERR keymux: not run: it follows a MULTI that keymux refused/),
      'EXECABORT Transaction discarded because of previous errors.',
    ]);
    expect(await onShards('c:x')).toBeNull();
  });

  it('DISCARD ends it; a nested MULTI is refused; QUIT still closes the connection', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('MULTI') +
        cmd('SET', 'd:x', '1') +
        cmd('MULTI') +
        cmd('DISCARD') +
        cmd('SET', 'd:x', '2') +
        cmd('GET', 'd:x'),
      6,
    );
    expect((replies[1] as Error).message).toMatch(/^ERR keymux: not run/);
    expect((replies[2] as Error).message).toBe('ERR MULTI calls can not be nested');
    expect(replies.slice(3)).toEqual(['OK', 'OK', '2']);
    const again = await c.exchange(cmd('MULTI') + cmd('QUIT'), 2);
    expect(again[1]).toBe('OK');
    await c.untilClosed();
  });
});
