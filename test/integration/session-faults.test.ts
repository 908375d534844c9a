/**
 * Session connections under faults (issue 10), real redis-servers in slots mode: a shard that dies while a client
 * is blocked answers that client with an error naming the shard (the dead connection is never reused: a session
 * connection does not reconnect under the client, since its state died with it), and blocking works again once
 * the shard is back; a WATCH whose connection was lost makes EXEC fail clearly instead of running unwatched; a
 * backend with a password (AUTH on session connections as on the shared ones).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import { replyCount } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';
import { Lease, SideOp } from '../../src/session/session-pool.js';
import { commandFrame } from '../../src/resp/writer.js';

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20)); // no event for this; poll with a deadline
  }
}

describe('session connections and faults', () => {
  let shard: RedisProcess;
  let proxy: Proxy;
  beforeAll(async () => {
    shard = await startRedis({ password: 'pw' });
    proxy = await startKeymux(slotsConfig([shard.port], { backend: { password: 'pw' } }));
  });
  afterAll(async () => {
    await proxy?.close();
    await shard?.stop();
  });

  it('session connections authenticate like the shared ones', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    expect(await r.multi().set('f:a', '1').get('f:a').exec()).toEqual([
      [null, 'OK'],
      [null, '1'],
    ]);
    r.disconnect();
  });

  it('a lease for a RESP3 client speaks RESP3 on the shard (HELLO 3), and a RESP2 one RESP2 again', async () => {
    const pool = proxy.topology.shards[0].pool;
    const ask = (lease: Lease, args: string[]): Promise<string> =>
      new Promise((resolve) => lease.send(new SideOp(commandFrame(args), (f) => resolve(f.toString('latin1')))));
    const r3 = proxy.sessions.lease(pool, 3) as Lease;
    expect(r3).toBeInstanceOf(Lease);
    await ask(r3, ['HSET', 'f:h', 'k', 'v']);
    expect(await ask(r3, ['HGETALL', 'f:h'])).toBe('%1\r\n$1\r\nk\r\n$1\r\nv\r\n'); // a RESP3 map
    r3.release();
    const r2 = proxy.sessions.lease(pool, 2) as Lease;
    expect(r2).toBe(r3); // the idle connection is reused, switched back
    expect(await ask(r2, ['HGETALL', 'f:h'])).toBe('*2\r\n$1\r\nk\r\n$1\r\nv\r\n');
    r2.release();
  });

  it('a shard that dies under a blocked client: the client gets an error naming the shard; blocking works again after', async () => {
    const r = new Redis(proxy.port, '127.0.0.1', { maxRetriesPerRequest: 0 });
    // Settled into a value at once: the error may arrive before SIGKILL's exit is seen (no unhandled rejection).
    const popped = r.blpop('f:q', 0).then(
      (v) => v,
      (e: Error) => e,
    );
    const info = async (): Promise<number> => {
      const c = new Redis(shard.port, '127.0.0.1', { password: 'pw' });
      try {
        return Number(/blocked_clients:(\d+)/.exec(await c.info('clients'))?.[1] ?? -1);
      } finally {
        c.disconnect();
      }
    };
    await waitUntil(async () => (await info()) === 1);
    await shard.stop('SIGKILL');
    const outcome = await popped;
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/^ERR keymux: shard 'a' \(127\.0\.0\.1:\d+\) closed the connection/);
    expect(proxy.sessions.leasedTotal).toBe(0);
    await shard.restart();
    await waitUntil(() => proxy.topology.shards[0].pool.healthy);
    const again = r.blpop('f:q', 0);
    await waitUntil(async () => (await info()) === 1);
    const pusher = new Redis(proxy.port, '127.0.0.1');
    await pusher.rpush('f:q', 'after-restart');
    expect(await again).toEqual(['f:q', 'after-restart']);
    r.disconnect();
    pusher.disconnect();
  });

  it('a WATCH whose connection was lost: EXEC fails clearly and applies nothing', async () => {
    const r = new Redis(proxy.port, '127.0.0.1');
    await r.watch('f:w');
    await shard.stop('SIGKILL');
    await shard.restart();
    await waitUntil(() => proxy.topology.shards[0].pool.healthy);
    await expect(r.multi().set('f:w', 'unwatched').exec()).rejects.toThrow(
      /^ERR keymux: the connection holding this client's WATCH was lost/,
    );
    expect(await r.get('f:w')).toBeNull();
    expect(proxy.sessions.leasedTotal).toBe(0);
    // A new WATCH works.
    await r.watch('f:w');
    expect(await r.multi().set('f:w', 'ok').exec()).toEqual([[null, 'OK']]);
    r.disconnect();
  });

  it('idle session connections are closed after backend.session_connections.idle_timeout_s', async () => {
    const p = await startKeymux(
      slotsConfig([shard.port], { backend: { password: 'pw', session_connections: { idle_timeout_s: 1 } } }),
    );
    const r = new Redis(p.port, '127.0.0.1');
    expect(await r.multi().incr('f:idle').exec()).toEqual([[null, 1]]);
    expect(p.sessions.gauges()[0].idle).toBe(1);
    await waitUntil(() => p.sessions.gauges()[0].idle === 0);
    // A new transaction opens a new one.
    expect(await r.multi().incr('f:idle').exec()).toEqual([[null, 2]]);
    expect(p.sessions.created).toBe(2);
    r.disconnect();
    await p.close();
  });
});

describe('session connections and a shard that stops answering (SIGSTOP)', () => {
  const cmd = (...args: string[]): string =>
    `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  let shard: RedisProcess;
  let proxy: Proxy;
  let stopped = false;
  const resume = (): void => {
    if (stopped) process.kill(shard.pid, 'SIGCONT');
    stopped = false;
  };
  beforeAll(async () => {
    shard = await startRedis();
    proxy = await startKeymux(slotsConfig([shard.port], { backend: { timeout_ms: 300 } }));
  });
  afterAll(async () => {
    resume();
    await proxy?.close();
    await shard?.stop();
  });

  it('EXEC, WATCH + EXEC, WAIT and BLPOP k 1 get the timeout error; BLPOP k 0 keeps waiting; the clients go on', async () => {
    const clients = await Promise.all(Array.from({ length: 6 }, () => RawClient.connect(proxy.port)));
    const [exec, watched, blockOne, blockForever, waiter, other] = clients;
    try {
      await watched.exchange(cmd('WATCH', 'stop:w'), 1);
      await waiter.exchange(cmd('SET', 'stop:written', '1'), 1); // WAIT then marks the offset on a lease
      await other.exchange(cmd('SET', 'stop:k', 'v'), 1); // the shared connection is up
      // Four idle session connections, their CLIENT ID known (a new one would time out on it already).
      const leasing = [exec, blockOne, blockForever, waiter];
      for (const c of leasing) {
        c.data = Buffer.alloc(0);
        c.write(cmd('BLPOP', 'stop:pre', '0'));
      }
      await waitUntil(() => proxy.sessions.leasedTotal === 5);
      await waitUntil(async () =>
        String(await redisCommand(shard.port, 'INFO', 'clients')).includes('blocked_clients:4'),
      );
      await redisCommand(shard.port, 'RPUSH', 'stop:pre', '1', '2', '3', '4');
      for (const c of leasing) {
        await c.until((d) => replyCount(d) === 1);
        c.data = Buffer.alloc(0);
      }
      await waitUntil(() => proxy.sessions.gauges()[0].idle === 4);
      process.kill(shard.pid, 'SIGSTOP');
      stopped = true;
      const timedOut = (ms: number) =>
        new RegExp(
          `-ERR keymux: shard 'a' \\(127\\.0\\.0\\.1:${shard.port}\\) timed out: no reply within ${ms} ms\r\n$`,
        );
      exec.write(cmd('MULTI') + cmd('SET', 'stop:x', '1') + cmd('EXEC'));
      watched.write(cmd('MULTI') + cmd('SET', 'stop:w', '1') + cmd('EXEC'));
      blockOne.write(cmd('BLPOP', 'stop:q1', '1'));
      blockForever.write(cmd('BLPOP', 'stop:q0', '0'));
      waiter.write(cmd('WAIT', '0', '0'));
      other.write(cmd('GET', 'stop:k'));
      await other.until((d) => replyCount(d) === 2);
      expect(other.data.toString('latin1')).toMatch(timedOut(300)); // the shared path, as before
      await exec.until((d) => replyCount(d) === 3);
      expect(exec.data.toString('latin1')).toMatch(/^\+OK\r\n\+QUEUED\r\n/);
      expect(exec.data.toString('latin1')).toMatch(timedOut(300));
      await watched.until((d) => replyCount(d) === 4);
      expect(watched.data.toString('latin1')).toMatch(timedOut(300));
      await waiter.until((d) => replyCount(d) === 1);
      expect(waiter.data.toString('latin1')).toMatch(
        /-ERR keymux: WAIT could not mark .*timed out: no reply within 300 ms/,
      );
      // BLPOP k 1: its own 1 s, then backend.timeout_ms.
      await blockOne.until((d) => replyCount(d) === 1);
      expect(blockOne.data.toString('latin1')).toMatch(timedOut(1300));
      // BLPOP k 0 may wait for ever: not timed out, even after the one with a timeout was.
      expect(blockForever.data.length).toBe(0);
      // The timed-out leases were closed, not given back (their state is unknown); only BLPOP k 0 holds one.
      expect(proxy.sessions.leasedTotal).toBe(1);
      expect(proxy.sessions.gauges()[0].idle).toBe(0);
      resume();
      // The shared connection, reset by the timeouts, is ready again once the shard answers its handshake (a frozen
      // shard reads as down until then: backend-connection.ts); then each client's later commands run.
      await waitUntil(() => proxy.topology.shards[0].pool.healthy);
      exec.data = Buffer.alloc(0);
      expect(await exec.exchange(cmd('MULTI') + cmd('INCR', 'stop:n') + cmd('EXEC'), 3)).toEqual(['OK', 'QUEUED', [1]]);
      // (What timed out may still have run once the shard resumed, as on the shared path: its state is unknown.)
      expect(await watched.exchange(cmd('GET', 'stop:k'), 1)).toEqual(['v']);
      expect(await blockOne.exchange(cmd('RPUSH', 'stop:q0', 'item'), 1)).toEqual([1]);
      await blockForever.until((d) => replyCount(d) === 1);
      expect(blockForever.data.toString('latin1')).toBe('*2\r\n$7\r\nstop:q0\r\n$4\r\nitem\r\n');
    } finally {
      resume();
      for (const c of clients) c.close();
    }
  });
});
