/**
 * Blocking commands through keymux (issue 10), slots mode on real redis-servers: each blocking command blocks on a
 * session connection of its own (the shared pipelined connections keep serving everyone else), timeout 0 waits
 * for ever, keys on two shards get CROSSSLOT, a client killed mid-block loses nothing (its connection is closed,
 * so a later push stays in the list), a full session pool answers a clear error, CLIENT UNBLOCK works with
 * keymux's client ids, and drain (SIGTERM) answers a blocked client with nil before closing it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import { parseReplies, replyCount } from '../support/fake-backend.js';
import { Gate } from '../support/gate.js';
import { scrape, valueOf } from '../support/metrics.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;
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

/** The shard holding keys of `tag`. */
function shardOfTag(tag: string): RedisProcess {
  return shards[proxy.topology.router.shardOfGroup(proxy.topology.router.groupFor(Buffer.from(`{${tag}}`)))];
}

async function blockedOn(shard: RedisProcess): Promise<number> {
  const info = String(await redisCommand(shard.port, 'INFO', 'clients'));
  return Number(/blocked_clients:(\d+)/.exec(info)?.[1] ?? -1);
}

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10)); // no event for this; poll with a deadline
  }
}

describe('blocking commands', () => {
  it('BLPOP with timeout 0 waits until another client pushes; other clients are served meanwhile', async () => {
    const blocker = new Redis(proxy.port, '127.0.0.1');
    const other = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagA}}:q1`;
    const popped = blocker.blpop(k, 0);
    await waitUntil(async () => (await blockedOn(shardOfTag(tagA))) === 1);
    // INFO through keymux counts its blocked clients, as one Redis server does (Redis's own tests wait on it).
    await waitUntil(async () => /blocked_clients:1\r\n/.test(await other.info('clients')));
    // The shared connections are not stalled by the blocked one.
    expect(await other.set(`{${tagA}}:free`, '1')).toBe('OK');
    expect(await other.get(`{${tagA}}:free`)).toBe('1');
    await other.lpush(k, 'job-1');
    expect(await popped).toEqual([k, 'job-1']);
    expect(await other.info('clients')).toMatch(/blocked_clients:0\r\n/);
    // The lease came back: reused by the next blocking call.
    expect(proxy.sessions.leasedTotal).toBe(0);
    blocker.disconnect();
    other.disconnect();
  });

  it('every blocking command works (data already there, or a timeout answering nil)', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    const t = `{${tagB}}`;
    await r.rpush(`${t}:l`, 'a', 'b', 'c', 'd', 'e');
    expect(await r.brpop(`${t}:l`, 0)).toEqual([`${t}:l`, 'e']);
    expect(await r.brpoplpush(`${t}:l`, `${t}:l2`, 0)).toBe('d');
    expect(await r.blmove(`${t}:l`, `${t}:l2`, 'LEFT', 'RIGHT', 0)).toBe('a');
    expect(await r.call('BLMPOP', '0', '1', `${t}:l`, 'LEFT')).toEqual([`${t}:l`, ['b']]);
    await r.zadd(`${t}:z`, 1, 'one', 2, 'two', 3, 'three');
    expect(await r.bzpopmin(`${t}:z`, 0)).toEqual([`${t}:z`, 'one', '1']);
    expect(await r.bzpopmax(`${t}:z`, 0)).toEqual([`${t}:z`, 'three', '3']);
    expect(await r.call('BZMPOP', '0', '1', `${t}:z`, 'MIN')).toEqual([`${t}:z`, [['two', '2']]]);
    await r.xadd(`${t}:s`, '1-1', 'f', 'v');
    expect(await r.xread('BLOCK', 0, 'STREAMS', `${t}:s`, '0')).toEqual([[`${t}:s`, [['1-1', ['f', 'v']]]]]);
    await r.xgroup('CREATE', `${t}:s`, 'g', '0');
    expect(await r.xreadgroup('GROUP', 'g', 'c', 'BLOCK', 0, 'STREAMS', `${t}:s`, '>')).toEqual([
      [`${t}:s`, [['1-1', ['f', 'v']]]],
    ]);
    // Timeouts answer nil, as Redis does.
    expect(await r.blpop(`${t}:empty`, 0.05)).toBeNull();
    expect(await r.xread('BLOCK', 50, 'STREAMS', `${t}:s`, '$')).toBeNull();
    r.disconnect();
  });

  it('node-redis: an isolated blocking client (BLPOP with timeout 0) is unblocked by a push', async () => {
    const c = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    const other = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    await Promise.all([c.connect(), other.connect()]);
    const k = `{${tagB}}:nq`;
    const popped = c.blPop(k, 0);
    await waitUntil(async () => (await blockedOn(shardOfTag(tagB))) === 1);
    await other.rPush(k, 'x');
    expect(await popped).toEqual({ key: k, element: 'x' });
    await Promise.all([c.quit(), other.quit()]);
  });

  it('keys on two shards: CROSSSLOT, nothing blocks', async () => {
    const c = await RawClient.connect(proxy.port);
    c.write(
      cmd('BLPOP', `{${tagA}}:x`, `{${tagB}}:y`, '0') +
        cmd('BLMOVE', `{${tagA}}:x`, `{${tagB}}:y`, 'LEFT', 'LEFT', '0'),
    );
    await c.until((d) => replyCount(d) === 2);
    for (const r of parseReplies(c.data))
      expect((r as Error).message).toBe("CROSSSLOT Keys in request don't hash to the same slot");
    c.close();
  });

  it("a numkeys the server rejects (BLMPOP/BZMPOP 0, -1, a) gets the server's own words, nothing blocks", async () => {
    const c = await RawClient.connect(proxy.port);
    c.write(
      cmd('BZMPOP', '1', '0', 'z', 'MIN') +
        cmd('BZMPOP', '1', 'a', 'z', 'MIN') +
        cmd('BLMPOP', '0', '-1', 'l', 'LEFT') +
        cmd('PING'),
    );
    await c.until((d) => replyCount(d) === 4);
    const replies = parseReplies(c.data);
    for (const r of replies.slice(0, 3)) expect((r as Error).message).toBe('ERR numkeys should be greater than 0');
    expect(replies[3]).toBe('PONG');
    c.close();
  });

  it("a blocked client's later commands wait for it (as on Redis); its earlier ones run first", async () => {
    const c = await RawClient.connect(proxy.port);
    const other = new Redis(proxy.port, '127.0.0.1');
    const k = `{${tagA}}:order`;
    // RPUSH then BLPOP in one batch: the push is applied first, so the BLPOP does not block.
    c.write(cmd('RPUSH', k, 'first') + cmd('BLPOP', k, '0') + cmd('BLPOP', k, '0') + cmd('GET', `{${tagA}}:after`));
    await waitUntil(async () => (await blockedOn(shardOfTag(tagA))) === 1);
    await other.set(`{${tagA}}:after`, 'set-while-blocked');
    await other.rpush(k, 'second');
    await c.until((d) => replyCount(d) === 4);
    expect(parseReplies(c.data)).toEqual([1, [k, 'first'], [k, 'second'], 'set-while-blocked']);
    c.close();
    other.disconnect();
  });

  it('a client killed mid-block loses nothing: its connection is closed, and a later push stays in the list', async () => {
    const c = await RawClient.connect(proxy.port);
    const k = `{${tagA}}:lost`;
    const shard = shardOfTag(tagA);
    const before = proxy.sessions.created;
    c.write(cmd('BLPOP', k, '0'));
    await waitUntil(async () => (await blockedOn(shard)) === 1);
    c.close(); // socket destroyed mid-block
    await waitUntil(async () => (await blockedOn(shard)) === 0); // keymux closed the session connection
    expect(await redisCommand(shard.port, 'LPUSH', k, 'precious')).toBe(1);
    expect(await redisCommand(shard.port, 'LRANGE', k, '0', '-1')).toEqual(['precious']);
    // That connection was not reused: the next blocking call opens a new one.
    expect(proxy.sessions.leasedTotal).toBe(0);
    const r = new Redis(proxy.port, '127.0.0.1');
    expect(await r.blpop(k, 0)).toEqual([k, 'precious']);
    expect(proxy.sessions.created).toBeGreaterThan(before);
    r.disconnect();
  });

  it('a client killed with a second blocking command waiting behind the first: neither runs after it left', async () => {
    const c = await RawClient.connect(proxy.port);
    const shard = shardOfTag(tagA);
    c.write(cmd('BLPOP', `{${tagA}}:w1`, '0') + cmd('BLPOP', `{${tagA}}:w2`, '0'));
    await waitUntil(async () => (await blockedOn(shard)) === 1);
    c.close();
    await waitUntil(async () => (await blockedOn(shard)) === 0 && proxy.sessions.leasedTotal === 0);
    expect(await redisCommand(shard.port, 'RPUSH', `{${tagA}}:w2`, 'kept')).toBe(1);
    expect(await redisCommand(shard.port, 'LRANGE', `{${tagA}}:w2`, '0', '-1')).toEqual(['kept']);
    expect(await blockedOn(shard)).toBe(0);
  });

  it('CLIENT UNBLOCK with the keymux CLIENT ID of a blocked client answers it as on Redis', async () => {
    const blocked = new Redis(proxy.port, '127.0.0.1');
    const admin = new Redis(proxy.port, '127.0.0.1');
    const id = Number(await blocked.client('ID'));
    const popped = blocked.blpop(`{${tagB}}:ub`, 0);
    await waitUntil(async () => (await blockedOn(shardOfTag(tagB))) === 1);
    expect(await admin.call('CLIENT', 'UNBLOCK', String(id))).toBe(1);
    expect(await popped).toBeNull(); // TIMEOUT (the default): nil
    expect(await admin.call('CLIENT', 'UNBLOCK', String(id))).toBe(0); // no longer blocked
    // Settled into a value at once: its error may arrive before the UNBLOCK's own reply (no unhandled rejection).
    const again = blocked.blpop(`{${tagB}}:ub`, 0).then(
      (v) => v,
      (e: Error) => e,
    );
    await waitUntil(async () => (await blockedOn(shardOfTag(tagB))) === 1);
    expect(await admin.call('CLIENT', 'UNBLOCK', String(id), 'ERROR')).toBe(1);
    const outcome = await again;
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/UNBLOCKED/);
    blocked.disconnect();
    admin.disconnect();
  });

  it("a CLIENT UNBLOCK late on the shared connection never reaches the next client of the blocked one's connection", async () => {
    // The review's race: X blocks; C's CLIENT UNBLOCK of X is held behind the shared connection's other commands
    // (here: held by a gate in front of the shard); X's BLPOP is served by a push meanwhile. X's session connection
    // must not go to Y before the CLIENT UNBLOCK is answered: it names the connection, and would unblock Y.
    const shard = shardOfTag(tagA);
    const gate = await Gate.start(shard.port);
    const p = await startKeymux(slotsConfig([gate.port]));
    const x = await RawClient.connect(p.port);
    const y = await RawClient.connect(p.port);
    const c = await RawClient.connect(p.port);
    try {
      const [xid] = (await x.exchange(cmd('CLIENT', 'ID'), 1)) as number[];
      const k = `{${tagA}}:race`;
      x.write(cmd('BLPOP', k, '0'));
      await waitUntil(async () => (await blockedOn(shard)) === 1);
      const held = gate.holdFrom('UNBLOCK');
      c.write(cmd('CLIENT', 'UNBLOCK', String(xid), 'ERROR'));
      await held;
      // X's call completes before the unblock reaches the shard.
      await redisCommand(shard.port, 'LPUSH', k, 'item');
      await x.untilText('item');
      y.write(cmd('BLPOP', `${k}2`, '0'));
      await waitUntil(async () => (await blockedOn(shard)) === 1);
      gate.release();
      // Nothing was blocked on X's connection any more: 0, as Redis answers for a client no longer blocked.
      expect(await c.untilText('\r\n')).toBe(':0\r\n');
      // Y is still blocked, and gets the next push.
      expect(await blockedOn(shard)).toBe(1);
      await redisCommand(shard.port, 'LPUSH', `${k}2`, 'for-y');
      expect(await y.untilText('for-y')).toContain('for-y');
    } finally {
      for (const r of [x, y, c]) r.socket.destroy();
      await p.close();
      await gate.close();
    }
  });

  it('redis-cli BLPOP k 1', async () => {
    await redisCommand(shardOfTag(tagA).port, 'RPUSH', 'cli-list{a}', 'v');
    const { stdout } = await promisify(execFile)('redis-cli', ['-p', String(proxy.port), 'BLPOP', 'cli-list{a}', '1']);
    expect(stdout.trim().split('\n')).toEqual(['cli-list{a}', 'v']);
  });
});

describe('session pool limits and drain', () => {
  let small: Proxy;
  beforeAll(async () => {
    small = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        { backend: { session_connections: { max: 2, max_idle: 1 } }, admin: '127.0.0.1:0' },
      ),
    );
  });
  afterAll(async () => {
    await small?.close();
  });

  it('past backend.session_connections.max a blocking command or transaction gets a clear error', async () => {
    const k = `{${tagA}}:full`;
    const a = new Redis(small.port, '127.0.0.1');
    const b = new Redis(small.port, '127.0.0.1');
    const c = new Redis(small.port, '127.0.0.1');
    const pa = a.blpop(k, 0);
    const pb = b.blpop(k, 0);
    await waitUntil(() => small.sessions.leasedTotal === 2);
    const shard = small.sessions.gauges()[0].shard;
    let samples = await scrape(small.adminPort!);
    expect(valueOf(samples, 'keymux_session_connections', { shard, state: 'leased' })).toBe(2);
    await expect(c.blpop(k, 0)).rejects.toThrow(
      /^ERR keymux: no session connection free for shard '[ab]' .*all 2 \(backend.session_connections.max\)/,
    );
    await expect(
      c
        .multi()
        .set(k + 'x', '1')
        .exec(),
    ).rejects.toThrow(/no session connection free/);
    // Plain commands are not affected.
    expect(await c.rpush(k, '1', '2')).toBe(2);
    expect((await Promise.all([pa, pb])).map((r) => r?.[1]).sort()).toEqual(['1', '2']);
    expect(small.sessions.leasedTotal).toBe(0);
    // Given back once answered; idle connections above max_idle are closed.
    samples = await scrape(small.adminPort!);
    expect(valueOf(samples, 'keymux_session_connections', { shard, state: 'leased' })).toBe(0);
    expect(valueOf(samples, 'keymux_session_connections', { shard, state: 'idle' })).toBe(1);
    expect(valueOf(samples, 'keymux_session_connections_exhausted_total', {})).toBe(2);
    for (const r of [a, b, c]) r.disconnect();
  });

  it('drain answers a blocked client with nil (its timeout reply, from the shard), then closes it', async () => {
    const d = await startKeymux(slotsConfig(shards.map((s) => s.port)));
    const c = await RawClient.connect(d.port);
    const k = `{${tagB}}:drain`;
    c.write(cmd('BLPOP', k, '0'));
    await waitUntil(async () => (await blockedOn(shardOfTag(tagB))) === 1);
    const drained = d.drain(5000);
    const text = await c.untilClosed();
    expect(text).toBe('*-1\r\n');
    await drained;
    // Nothing was popped or lost.
    await redisCommand(shardOfTag(tagB).port, 'RPUSH', k, 'kept');
    expect(await redisCommand(shardOfTag(tagB).port, 'LLEN', k)).toBe(1);
  });
});
