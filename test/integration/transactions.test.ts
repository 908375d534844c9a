/**
 * Transactions through keymux (issue 10): MULTI / EXEC / DISCARD / WATCH / UNWATCH on real redis-server shards,
 * slots mode (ring mode and a real cluster: session-modes.test.ts). What a client sees is Redis's own replies:
 * +OK, +QUEUED, the EXEC array (with the replies of commands keymux answers itself in their places), nil when a
 * WATCHed key changed, EXECABORT after a queuing error, and a transaction whose keys span shards is aborted with
 * nothing applied. ioredis, node-redis, raw RESP and redis-cli.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import { replyCount } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;
/** Two hash tags whose keys live on different shards. */
let tagA: string;
let tagB: string;

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(shards.map((s) => s.port)));
  const shardOf = (tag: string): number => proxy.topology.router.groupFor(Buffer.from(`{${tag}}`));
  tagA = 'a';
  tagB = ['b', 'c', 'd', 'e', 'f', 'g', 'h'].find((t) => shardOf(t) !== shardOf(tagA)) as string;
});
afterAll(async () => {
  await proxy?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

const cmd = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

async function onShards(key: string): Promise<unknown> {
  for (const s of shards) {
    const v = await redisCommand(s.port, 'GET', key);
    if (v !== null) return v;
  }
  return null;
}

describe('MULTI / EXEC', () => {
  it('ioredis multi().exec() applies every command and returns their replies', async () => {
    const r = new Redis(proxy.port, '127.0.0.1', { lazyConnect: true });
    await r.connect();
    const res = await r
      .multi()
      .set(`{${tagA}}:x`, '1')
      .incr(`{${tagA}}:x`)
      .lpush(`{${tagA}}:l`, 'a', 'b')
      .get(`{${tagA}}:x`)
      .exec();
    expect(res).toEqual([
      [null, 'OK'],
      [null, 2],
      [null, 2],
      [null, '2'],
    ]);
    expect(await onShards(`{${tagA}}:x`)).toBe('2');
    r.disconnect();
  });

  it('node-redis multi().exec(), and a runtime error stays in its place in the array (as in Redis)', async () => {
    const c = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    await c.connect();
    const ok = await c.multi().set(`{${tagA}}:n0`, 'v').incr(`{${tagA}}:n1`).exec();
    expect(ok).toEqual(['OK', 1]);
    // node-redis rejects a transaction with a failed command, carrying every reply.
    const err = (await c
      .multi()
      .set(`{${tagA}}:n`, 'v')
      .lPush(`{${tagA}}:n`, 'x') // WRONGTYPE at run time: the others still apply
      .append(`{${tagA}}:n`, 'w')
      .exec()
      .catch((e: unknown) => e)) as { replies: unknown[]; errorIndexes: number[] };
    expect(err.errorIndexes).toEqual([1]);
    expect(err.replies[0]).toBe('OK');
    expect(String(err.replies[1])).toMatch(/WRONGTYPE/);
    expect(err.replies[2]).toBe(2);
    expect(await onShards(`{${tagA}}:n`)).toBe('vw');
    await c.quit();
  });

  it('raw RESP: +OK, +QUEUED, the EXEC array; commands keymux answers itself are queued and answered in EXEC', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('MULTI') +
        cmd('PING') +
        cmd('SET', `{${tagA}}:r`, '7') +
        cmd('ECHO', 'hi') +
        cmd('GET', `{${tagA}}:r`) +
        cmd('EXEC'),
      6,
    );
    expect(replies.slice(0, 5)).toEqual(['OK', 'QUEUED', 'QUEUED', 'QUEUED', 'QUEUED']);
    expect(replies[5]).toEqual(['PONG', 'OK', 'hi', '7']);
    // Only local commands: no shard is needed.
    const local = await c.exchange(cmd('MULTI') + cmd('PING', 'x') + cmd('EXEC') + cmd('MULTI') + cmd('EXEC'), 5);
    expect(local).toEqual(['OK', 'QUEUED', ['x'], 'OK', []]);
    c.close();
  });

  it('a pipeline mixing transactions and plain commands gets every reply in order', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagB}}:p`;
    const p = r.pipeline();
    // ioredis sends MULTI/EXEC in a pipeline as plain commands (its types do not list them).
    const tx = p as unknown as { multi(): void; exec(): void };
    p.set(k, '0');
    tx.multi();
    p.incr(k);
    p.incr(k);
    tx.exec();
    p.get(k);
    p.set(`{${tagA}}:other`, 'o');
    tx.multi();
    p.incrby(k, 10);
    tx.exec();
    p.get(k);
    const res = (await p.exec())!.map(([err, v]) => (err ? `ERR:${err.message}` : v));
    expect(res).toEqual(['OK', 'OK', 'QUEUED', 'QUEUED', [1, 2], '2', 'OK', 'OK', 'QUEUED', [12], '12']);
    r.disconnect();
  });

  it('keys on two shards: the command is refused with CROSSSLOT, EXEC aborts, nothing applied', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('MULTI') +
        cmd('SET', `{${tagA}}:cs1`, '1') +
        cmd('SET', `{${tagB}}:cs2`, '2') +
        cmd('MSET', `{${tagA}}:cs3`, '3', `{${tagB}}:cs4`, '4') +
        cmd('FLUSHALL') +
        cmd('EXEC') +
        cmd('GET', `{${tagA}}:cs1`),
      7,
    );
    expect(replies[0]).toBe('OK');
    expect(replies[1]).toBe('QUEUED');
    expect((replies[2] as Error).message).toMatch(/^CROSSSLOT .*one shard/);
    expect((replies[3] as Error).message).toMatch(/^CROSSSLOT/);
    expect((replies[4] as Error).message).toMatch(/^ERR keymux: command 'flushall' cannot be queued in a transaction/);
    expect((replies[5] as Error).message).toBe('EXECABORT Transaction discarded because of previous errors.');
    expect(replies[6]).toBeNull();
    for (const k of ['cs1', 'cs2', 'cs3', 'cs4']) expect(await onShards(`{${tagA}}:${k}`)).toBeNull();
    c.close();
  });

  it('queuing errors as in Redis: unknown command and wrong arity abort; nested MULTI and WATCH inside MULTI do not', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('EXEC') +
        cmd('DISCARD') +
        cmd('MULTI') +
        cmd('MULTI') +
        cmd('WATCH', `{${tagA}}:q`) +
        cmd('SET', `{${tagA}}:q`, '1') +
        cmd('EXEC') +
        cmd('MULTI') +
        cmd('NOSUCHCOMMAND') +
        cmd('GET') +
        cmd('SET', `{${tagA}}:q2`, '1') +
        cmd('EXEC'),
      12,
    );
    const text = replies.map((r) => (r instanceof Error ? `-${r.message}` : r));
    expect(text[0]).toBe('-ERR EXEC without MULTI');
    expect(text[1]).toBe('-ERR DISCARD without MULTI');
    expect(text[2]).toBe('OK');
    expect(text[3]).toBe('-ERR MULTI calls can not be nested');
    expect(text[4]).toBe('-ERR WATCH inside MULTI is not allowed');
    expect(text[5]).toBe('QUEUED');
    expect(text[6]).toEqual(['OK']);
    expect(text[7]).toBe('OK');
    expect(text[8]).toMatch(/^-ERR unknown command 'NOSUCHCOMMAND'/);
    expect(text[9]).toBe("-ERR wrong number of arguments for 'get' command");
    expect(text[10]).toBe('QUEUED');
    expect(text[11]).toBe('-EXECABORT Transaction discarded because of previous errors.');
    expect(await onShards(`{${tagA}}:q2`)).toBeNull();
    // Commands Redis never allows in a transaction get Redis's refusal, before keymux's own.
    const save = await c.exchange(cmd('MULTI') + cmd('SAVE') + cmd('EXEC'), 3);
    expect((save[1] as Error).message).toBe('ERR Command not allowed inside a transaction');
    expect((save[2] as Error).message).toMatch(/^EXECABORT/);
    c.close();
  });

  it('DISCARD drops what was queued; QUIT inside MULTI closes the connection', async () => {
    const c = await RawClient.connect(proxy.port);
    const replies = await c.exchange(
      cmd('MULTI') +
        cmd('SET', `{${tagA}}:d`, '1') +
        cmd('DISCARD') +
        cmd('GET', `{${tagA}}:d`) +
        cmd('MULTI') +
        cmd('QUIT'),
      6,
    );
    expect(replies).toEqual(['OK', 'QUEUED', 'OK', null, 'OK', 'OK']);
    await c.untilClosed();
    expect(await onShards(`{${tagA}}:d`)).toBeNull();
  });

  it('TIME, LASTSAVE and EVAL script 0 are queued as Redis queues them, and run on the transaction shard', async () => {
    const c = await RawClient.connect(proxy.port);
    const k = `{${tagB}}:one-shard`;
    const r = await c.exchange(
      cmd('MULTI') +
        cmd('TIME') +
        cmd('LASTSAVE') +
        cmd('EVAL', 'return 1', '0') +
        cmd('SET', k, 'v') +
        cmd('EVAL', "return redis.call('get', KEYS[1])", '-1') +
        cmd('EXEC'),
      7,
    );
    expect(r.slice(0, 6)).toEqual(['OK', 'QUEUED', 'QUEUED', 'QUEUED', 'QUEUED', 'QUEUED']);
    const [time, lastsave, one, ok, badNumkeys] = r[6] as unknown[];
    expect(time).toEqual([expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/)]);
    expect(typeof lastsave).toBe('number');
    expect([one, ok]).toEqual([1, 'OK']);
    expect(String(badNumkeys)).toMatch(/Number of keys can't be negative/); // the shard's words, in its place
    expect(await onShards(k)).toBe('v');
    // No keyed command: the keyless shard runs them.
    expect(await c.exchange(cmd('MULTI') + cmd('TIME') + cmd('EVAL', 'return 2', '0') + cmd('EXEC'), 4)).toEqual([
      'OK',
      'QUEUED',
      'QUEUED',
      [[expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/)], 2],
    ]);
    c.close();
  });

  it('XREAD / XREADGROUP with a stream and no ID, and WAIT with a 2^63-1 timeout: the bytes of redis-server', async () => {
    const bytes = async (port: number, text: string, n: number): Promise<string> => {
      const c = await RawClient.connect(port);
      c.write(text);
      await c.until((d) => replyCount(d) === n);
      c.close();
      return c.data.toString('latin1');
    };
    for (const [text, n] of [
      [cmd('XREADGROUP', 'GROUP', 'g', 'c', 'BLOCK', '10', 'STREAMS', 'xs'), 1],
      [cmd('XREAD', 'BLOCK', '10', 'STREAMS', 'xs'), 1],
      [cmd('XREAD', 'COUNT', '1', 'STREAMS', 'xs'), 1],
      [cmd('MULTI') + cmd('XREAD', 'COUNT', '1', 'STREAMS', 'xs') + cmd('EXEC'), 3],
      [cmd('WAIT', '0', '9223372036854775807'), 1],
      [cmd('WAIT', '0', '9223372036854775808'), 1],
    ] as const) {
      const direct = await bytes(shards[0].port, text, n);
      expect(direct).not.toMatch(/^-ERR syntax error/);
      expect(await bytes(proxy.port, text, n), text).toBe(direct);
    }
  });

  it('redis-cli: MULTI, commands, EXEC', async () => {
    const child = promisify(execFile)('redis-cli', ['-p', String(proxy.port)]);
    child.child.stdin!.end(`MULTI\nSET {${tagA}}:cli 5\nINCR {${tagA}}:cli\nEXEC\n`);
    const { stdout } = await child;
    expect(stdout.split('\n').filter((l) => l !== '')).toEqual(['OK', 'QUEUED', 'QUEUED', 'OK', '6']);
  });
});

describe('WATCH', () => {
  it('ioredis: WATCH, read, MULTI, EXEC succeeds when nobody touched the key', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagA}}:w1`;
    await r.set(k, '10');
    await r.watch(k);
    const v = Number(await r.get(k));
    const res = await r
      .multi()
      .set(k, String(v + 1))
      .exec();
    expect(res).toEqual([[null, 'OK']]);
    expect(await r.get(k)).toBe('11');
    r.disconnect();
  });

  it('another client changing a WATCHed key makes EXEC answer nil, and nothing is applied', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagA}}:w2`;
    await r.set(k, '1');
    await r.watch(k);
    await other.set(k, 'changed');
    const res = await r.multi().set(k, 'mine').set(`{${tagA}}:w2b`, 'x').exec();
    expect(res).toBeNull();
    expect(await r.get(k)).toBe('changed');
    expect(await r.get(`{${tagA}}:w2b`)).toBeNull();
    // The lease was given back with the WATCH gone: a new transaction on it works.
    expect(await r.multi().set(k, 'again').exec()).toEqual([[null, 'OK']]);
    r.disconnect();
    other.disconnect();
  });

  it('node-redis: a WATCH failure is reported as Redis reports it', async () => {
    const c = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    const other = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    await Promise.all([c.connect(), other.connect()]);
    const k = `{${tagB}}:nw`;
    await c.watch(k);
    await other.set(k, 'x');
    await expect(c.multi().set(k, 'y').exec()).rejects.toThrow(/watch/i);
    expect(await c.get(k)).toBe('x');
    await Promise.all([c.quit(), other.quit()]);
  });

  it('UNWATCH and DISCARD end the watch; WATCH of keys on another shard than the watched ones is refused', async () => {
    const c = await RawClient.connect(proxy.port);
    const other = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagA}}:w3`;
    let replies = await c.exchange(cmd('WATCH', k) + cmd('WATCH', `{${tagB}}:w3`) + cmd('UNWATCH'), 3);
    expect(replies[0]).toBe('OK');
    expect((replies[1] as Error).message).toMatch(/^CROSSSLOT/);
    expect(replies[2]).toBe('OK');
    await other.set(k, 'touched'); // after UNWATCH: no effect on the transaction
    replies = await c.exchange(cmd('MULTI') + cmd('SET', k, 'tx') + cmd('EXEC'), 3);
    expect(replies).toEqual(['OK', 'QUEUED', ['OK']]);
    // A WATCH binds the transaction to its shard.
    replies = await c.exchange(cmd('WATCH', k) + cmd('MULTI') + cmd('SET', `{${tagB}}:w3`, '1') + cmd('EXEC'), 4);
    expect((replies[2] as Error).message).toMatch(/^CROSSSLOT .*one shard/);
    expect((replies[3] as Error).message).toMatch(/^EXECABORT/);
    c.close();
    other.disconnect();
  });

  it('a session connection is leased for WATCH and for EXEC, and given back after EXEC, DISCARD and disconnect', async () => {
    const leased = (): number => proxy.sessions.leasedTotal;
    const base = leased();
    const c = await RawClient.connect(proxy.port);
    await c.exchange(cmd('WATCH', `{${tagA}}:l1`), 1);
    expect(leased()).toBe(base + 1);
    await c.exchange(cmd('MULTI') + cmd('SET', `{${tagA}}:l1`, '1') + cmd('EXEC'), 3);
    expect(leased()).toBe(base);
    await c.exchange(cmd('WATCH', `{${tagA}}:l1`) + cmd('MULTI') + cmd('DISCARD'), 3);
    expect(leased()).toBe(base);
    await c.exchange(cmd('WATCH', `{${tagA}}:l1`), 1);
    expect(leased()).toBe(base + 1);
    c.close();
    await waitUntil(() => leased() === base);
    // The idle connection is reused, not a new one opened for every transaction.
    const created = proxy.sessions.created;
    const r = new Redis(proxy.port, '127.0.0.1');
    for (let i = 0; i < 5; i++) await r.multi().incr(`{${tagA}}:l2`).exec();
    expect(proxy.sessions.created).toBe(created);
    r.disconnect();
  });
});

async function waitUntil(pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10)); // no event for this; poll with a deadline
  }
}
