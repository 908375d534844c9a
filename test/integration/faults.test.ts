/**
 * Faults against real redis-server processes and scripted fake backends: a shard down at start, a shard that
 * dies and comes back, a backend that never answers (operation timeout), one that sends garbage, an unsolicited
 * reply or closes, and many clients interleaving commands while a shard restarts. What must hold throughout:
 * errors name the shard, other shards keep serving, keymux reconnects on its own, multi-key commands never return
 * partial answers, and no reply ever reaches a request it does not belong to.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig, RawClient } from '../support/keymux.js';
import { freePort } from '../support/ports.js';
import {
  FakeBackend,
  type FakeConnection,
  bulk,
  keyOn,
  parseReplies,
  replyCount,
  waitFor,
  type Script,
} from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

// Everything a test starts is registered here and stopped after it, whatever happened.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function redis(opts: Parameters<typeof startRedis>[0] = {}): Promise<RedisProcess> {
  const r = await startRedis(opts);
  cleanups.push(() => r.stop('SIGKILL'));
  return r;
}

async function keymux(config: Record<string, unknown>, builtin = false): Promise<Proxy> {
  const p = await startKeymux(config, { builtinCommandTable: builtin });
  cleanups.push(() => p.close());
  return p;
}

async function fake(script: Script): Promise<FakeBackend> {
  const f = await FakeBackend.start(script);
  cleanups.push(() => f.close());
  return f;
}

function ioredis(port: number): Redis {
  // No ready check: its INFO would go to every shard, fake backends included.
  const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableReadyCheck: false });
  cleanups.push(() => c.disconnect());
  return c;
}

async function raw(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

/** The error message of a rejected promise (or a description of the value it resolved with). */
async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    const v = await p;
    return `resolved with ${JSON.stringify(v)}`;
  } catch (e) {
    return (e as Error).message;
  }
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const shardErr = (name: string, addr: string, reason: string) =>
  new RegExp(`^ERR keymux: shard '${name}' \\(${esc(addr)}\\) ${reason}$`);

function cmd(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

describe('a shard that is down', () => {
  it('at start: its keys get an error naming it, other shards serve in the same pipeline, and it is served once it starts', async () => {
    const downPort = await freePort();
    const b = await redis();
    const proxy = await keymux(slotsConfig([downPort, b.port]));
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'down');
    const kB = keyOn(proxy, 1, 'down');

    const res = await client.pipeline().set(kA, 'va').set(kB, 'vb').get(kB).get(kA).mget(kA, kB).exec();
    const refused = shardErr('a', `127.0.0.1:${downPort}`, '(is unavailable: )?connection error ECONNREFUSED');
    expect(res?.[0][0]?.message).toMatch(refused);
    expect(res?.[1]).toEqual([null, 'OK']);
    expect(res?.[2]).toEqual([null, 'vb']);
    expect(res?.[3][0]?.message).toMatch(refused);
    expect(res?.[4][0]?.message).toMatch(refused); // never a partial MGET
    expect(await redisCommand(b.port, 'GET', kB)).toBe('vb');

    // The shard comes up on its port: keymux reconnects (with backoff) without a restart, on the same client.
    await redis({ port: downPort });
    await waitFor(
      async () => (await client.set(kA, 'va').catch(() => 'err')) === 'OK',
      'shard a to be served',
      8000,
      20,
    );
    expect(await redisCommand(downPort, 'GET', kA)).toBe('va');
    expect(await client.mget(kA, kB)).toEqual(['va', 'vb']);
    expect(proxy.topology.shards[0].pool.connections[0].reconnects).toBeGreaterThan(0);
  });

  it('later: in-flight and new commands get the shard error, others keep serving, multi-key commands fail whole, restart serves again', async () => {
    const [a, b] = await Promise.all([redis(), redis()]);
    const proxy = await keymux(slotsConfig([a.port, b.port]));
    const client = ioredis(proxy.port);
    const other = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'later');
    const kB = keyOn(proxy, 1, 'later');
    expect(await client.mset(kA, 'va', kB, 'vb')).toBe('OK');

    // Freeze shard a so a command is in flight on it, then kill it.
    process.kill(a.pid, 'SIGSTOP');
    const inflight = errorOf(client.get(kA));
    await waitFor(() => proxy.topology.shards[0].pool.inflight >= 1, 'GET to be in flight on shard a');
    expect(await other.get(kB)).toBe('vb'); // shard b serves while a is stuck
    await a.stop('SIGKILL');
    expect(await inflight).toMatch(shardErr('a', a.address, '(closed the connection|connection error ECONNRESET)'));

    // New commands: the dead shard's keys fail at once; others are served in the same pipeline.
    const res = await client.pipeline().get(kA).get(kB).mget(kA, kB).del(kA, kB).set(kA, 'x').exec();
    const down = shardErr('a', a.address, 'is unavailable: (closed the connection|connection error \\w+)');
    expect(res?.[0][0]?.message).toMatch(down);
    expect(res?.[1]).toEqual([null, 'vb']);
    expect(res?.[2][0]?.message).toMatch(down); // never a partial MGET
    expect(res?.[3][0]?.message).toMatch(down); // never a partial DEL count
    expect(res?.[4][0]?.message).toMatch(down);

    await a.restart();
    await waitFor(
      async () => (await client.set(kA, 'again').catch(() => 'err')) === 'OK',
      'shard a to be served again',
      8000,
      20,
    );
    expect(await redisCommand(a.port, 'GET', kA)).toBe('again');
    await client.set(kB, 'vb');
    expect(await client.mget(kA, kB)).toEqual(['again', 'vb']);
  });
});

describe('a backend that never answers (operation timeout)', () => {
  it('waiting requests get a timeout error, the connection is reset, and a late reply never reaches a later request', async () => {
    const stalled: Array<{ conn: FakeConnection; key: string }> = [];
    const f = await fake((c, conn) => {
      if (c[0].toUpperCase() !== 'GET') return '-ERR fake backend: unexpected command\r\n';
      const key = c[1];
      if (key.startsWith('stall')) {
        stalled.push({ conn, key });
        return null;
      }
      // Answer the stalled requests late, on their own (old) connection, before answering this one. Were the old
      // connection still in use, the late reply would be read as the reply to this command.
      for (const s of stalled.splice(0)) s.conn.write(bulk(`value-of-${s.key}`));
      return bulk(`value-of-${key}`);
    });
    const b = await redis();
    const proxy = await keymux(slotsConfig([f.port, b.port], { backend: { timeout_ms: 200 } }), true);
    const s1 = keyOn(proxy, 0, 'stall1');
    const s2 = keyOn(proxy, 0, 'stall2');
    const kB = keyOn(proxy, 1, 'served');
    await redisCommand(b.port, 'SET', kB, 'vb');

    const c1 = await raw(proxy.port);
    const c2 = await raw(proxy.port);
    const t0 = performance.now();
    c1.write(cmd('GET', s1) + cmd('GET', s2));
    await f.until(() => f.commands.length === 2, 'both GETs at the fake backend');
    // Another client, another shard: served while shard a's requests wait.
    c2.write(cmd('GET', kB));
    await c2.untilText('$2\r\nvb\r\n');
    expect(c1.data.length).toBe(0);

    await c1.until((d) => replyCount(d) === 2);
    const elapsed = performance.now() - t0;
    const timedOut = `-ERR keymux: shard 'a' (${f.address}) timed out: no reply within 200 ms\r\n`;
    expect(c1.data.toString('latin1')).toBe(timedOut + timedOut);
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(1500);
    expect(proxy.topology.shards[0].pool.connections[0].timeouts).toBe(1);

    // The connection is reset: keymux closes it and opens a new one.
    await f.until(() => f.connections[0].closed && f.connections.length >= 2, 'old connection closed, new one opened');
    await waitFor(() => proxy.topology.shards[0].pool.healthy, 'shard a connection ready again');

    c1.data = Buffer.alloc(0);
    const fresh = keyOn(proxy, 0, 'fresh');
    c1.write(cmd('GET', fresh) + cmd('GET', kB) + cmd('GET', fresh));
    await c1.until((d) => replyCount(d) === 3);
    expect(parseReplies(c1.data)).toEqual([`value-of-${fresh}`, 'vb', `value-of-${fresh}`]);
    expect(f.connections[1].commands).toEqual([
      ['GET', fresh],
      ['GET', fresh],
    ]);
    expect(f.connections[0].commands).toEqual([
      ['GET', s1],
      ['GET', s2],
    ]);
  });
});

describe('a backend that misbehaves', () => {
  it('garbage (not RESP): requests get an error, other shards keep serving, a new connection serves again', async () => {
    const f = await fake((c, conn) => (conn.index === 0 ? 'this is not RESP\r\n' : bulk(`value-of-${c[1]}`)));
    const b = await redis();
    const proxy = await keymux(slotsConfig([f.port, b.port]), true);
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'garbage');
    const kB = keyOn(proxy, 1, 'garbage');

    const res = await client.pipeline().get(kA).set(kB, 'vb').get(kB).exec();
    expect(res?.[0][0]?.message).toBe(
      `ERR keymux: shard 'a' (${f.address}) sent bytes that are not RESP (unexpected byte 0x74 at the start of a reply)`,
    );
    expect(res?.[1]).toEqual([null, 'OK']);
    expect(res?.[2]).toEqual([null, 'vb']);

    await f.until(() => f.connections[0].closed, 'keymux to drop the connection that sent garbage');
    await waitFor(() => proxy.topology.shards[0].pool.healthy, 'shard a reconnected');
    expect(await client.get(kA)).toBe(`value-of-${kA}`);
    expect(f.connections.length).toBe(2);
  });

  it('a reply nobody asked for: the connection is reset and later requests get their own replies', async () => {
    const f = await fake((c) => bulk(`value-of-${c[1]}`));
    const b = await redis();
    const proxy = await keymux(slotsConfig([f.port, b.port]), true);
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'unsolicited');
    const kA2 = keyOn(proxy, 0, 'unsolicited2');
    expect(await client.get(kA)).toBe(`value-of-${kA}`);

    // Out of the blue, on the idle connection: a reply with no request waiting.
    f.connections[0].write(bulk('UNSOLICITED'));
    await f.until(() => f.connections[0].closed, 'keymux to drop the out-of-step connection');
    await waitFor(() => proxy.topology.shards[0].pool.healthy, 'shard a reconnected');
    expect(await client.get(kA2)).toBe(`value-of-${kA2}`);
    expect(f.connections[1].commands).toEqual([['get', kA2]]);
  });

  it('a backend that closes on a command: that request gets the shard error, keymux reconnects', async () => {
    const f = await fake((c, conn) => (conn.index === 0 ? 'destroy' : bulk(`value-of-${c[1]}`)));
    const b = await redis();
    const proxy = await keymux(slotsConfig([f.port, b.port]), true);
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'closer');
    const kB = keyOn(proxy, 1, 'closer');
    const res = await client.pipeline().get(kA).set(kB, '1').exec();
    expect(res?.[0][0]?.message).toMatch(
      shardErr('a', f.address, '(closed the connection|connection error ECONNRESET)'),
    );
    expect(res?.[1]).toEqual([null, 'OK']);
    await waitFor(async () => (await client.get(kA).catch(() => null)) === `value-of-${kA}`, 'shard a served again');
  });
});

describe('no reply reaches the wrong client', () => {
  it('several clients interleave commands while a shard is stopped and restarted', async () => {
    const [a, b] = await Promise.all([redis(), redis()]);
    const proxy = await keymux(slotsConfig([a.port, b.port]));
    const keys = Array.from({ length: 200 }, (_, i) => `wrong-client:${i}`);
    const onA = new Set(keys.filter((k) => proxy.topology.router.shardFor(Buffer.from(k)) === 0));
    expect(onA.size).toBeGreaterThan(50);
    const setup = ioredis(proxy.port);
    expect(await setup.mset(...keys.flatMap((k) => [k, `value:${k}`]))).toBe('OK');
    // Shard a's keys are saved to disk, so they survive its death: every successful GET has one right answer.
    expect(await redisCommand(a.port, 'SAVE')).toBe('OK');

    const stats = { ok: 0, okA: 0, errors: 0, okAAfterRestart: 0, mismatches: [] as string[] };
    let restarted = false;
    let running = true;
    const clients = [0, 1, 2, 3, 4, 5].map(() => ioredis(proxy.port));
    const worker = async (w: number) => {
      const c = clients[w];
      let i = w;
      while (running) {
        const picks = [0, 1, 2, 3, 4].map((j) => keys[(i * 7 + j * 31 + w) % keys.length]);
        i++;
        const res =
          (await c.pipeline().get(picks[0]).get(picks[1]).mget(picks[2], picks[3], picks[4]).get(picks[4]).exec()) ??
          [];
        const expected: Array<string | string[]> = [
          `value:${picks[0]}`,
          `value:${picks[1]}`,
          [`value:${picks[2]}`, `value:${picks[3]}`, `value:${picks[4]}`],
          `value:${picks[4]}`,
        ];
        const involved = [[picks[0]], [picks[1]], [picks[2], picks[3], picks[4]], [picks[4]]];
        res.forEach(([err, value], n) => {
          const onShardA = involved[n].some((k) => onA.has(k));
          if (err) {
            // Only shard a fails, and the error names it.
            if (!onShardA || !/^ERR keymux: shard 'a' /.test(err.message))
              stats.mismatches.push(`error ${err.message} for ${involved[n]}`);
            stats.errors++;
          } else if (JSON.stringify(value) !== JSON.stringify(expected[n])) {
            stats.mismatches.push(`${JSON.stringify(value)} for ${JSON.stringify(expected[n])}`);
          } else {
            stats.ok++;
            if (onShardA) {
              stats.okA++;
              if (restarted) stats.okAAfterRestart++;
            }
          }
        });
      }
    };
    const workers = [0, 1, 2, 3, 4, 5].map((w) => worker(w));
    try {
      await waitFor(() => stats.okA >= 100, 'traffic on shard a before the stop');
      await a.stop('SIGKILL'); // abrupt: commands in flight on it are lost
      const errorsBefore = stats.errors;
      await waitFor(() => stats.errors >= errorsBefore + 20, 'errors while shard a is down');
      await a.restart();
      restarted = true;
      await waitFor(() => stats.okAAfterRestart >= 100, 'shard a served again after restart', 10_000);
    } finally {
      running = false;
      // A worker stuck on a reply that never comes is itself a failure: disconnecting rejects what it waits for.
      const settled = await Promise.race([
        Promise.all(workers).then(() => true),
        new Promise((r) => setTimeout(r, 3000, false)),
      ]);
      if (!settled) {
        for (const c of clients) c.disconnect();
        await Promise.allSettled(workers);
      }
      expect(settled, 'every worker finished its last pipeline').toBe(true);
    }
    expect(stats.mismatches).toEqual([]);
    expect(stats.ok).toBeGreaterThan(300);
  });
});
