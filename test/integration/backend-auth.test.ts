/**
 * keymux authenticating to its backends: a redis-server with requirepass, and one with an ACL user (and the
 * default user disabled, so only the configured user can work). Commands work through keymux, the handshake is
 * redone after a backend restart, and a wrong password gives a clear error naming the shard (handshake refused)
 * without crashing keymux or disturbing shards whose handshake succeeds.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig, RawClient } from '../support/keymux.js';
import { FakeBackend, bulk, keyOn, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function redis(opts: Parameters<typeof startRedis>[0] = {}): Promise<RedisProcess> {
  const r = await startRedis(opts);
  cleanups.push(() => r.stop('SIGKILL'));
  return r;
}

async function keymux(config: Record<string, unknown>): Promise<Proxy> {
  const p = await startKeymux(config);
  cleanups.push(() => p.close());
  return p;
}

function ioredis(port: number): Redis {
  const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableReadyCheck: false });
  cleanups.push(() => c.disconnect());
  return c;
}

describe('backend authentication', () => {
  it('requirepass: commands work through keymux, and again after the backend restarts (handshake redone)', async () => {
    const [a, b] = await Promise.all([redis({ password: 's3cret' }), redis({ password: 's3cret' })]);
    const proxy = await keymux(slotsConfig([a.port, b.port], { backend: { password: 's3cret' } }));
    expect(proxy.commandTableSource).toBe('live'); // the control-plane connection authenticated too
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'pw');
    const kB = keyOn(proxy, 1, 'pw');
    expect(await client.mset(kA, 'va', kB, 'vb')).toBe('OK');
    expect(await client.mget(kA, kB)).toEqual(['va', 'vb']);
    const [, onA] = await redisCommands(a.port, [
      ['AUTH', 's3cret'],
      ['GET', kA],
    ]);
    expect(onA).toBe('va');

    await a.stop();
    await a.restart();
    await waitFor(
      async () => (await client.set(kA, 'again').catch(() => 'err')) === 'OK',
      'shard a served after restart',
      8000,
      20,
    );
    expect(await client.get(kA)).toBe('again');
  });

  it('ACL user (backend.username/password): commands work, as that user', async () => {
    const a = await redis();
    await redisCommand(a.port, 'ACL', 'SETUSER', 'u', 'on', '>p', '~*', '+@all');
    // With the default user off, only a connection that authenticated as u can run anything.
    await redisCommand(a.port, 'ACL', 'SETUSER', 'default', 'off');
    const proxy = await keymux(slotsConfig([a.port], { backend: { username: 'u', password: 'p' } }));
    const client = ioredis(proxy.port);
    expect(await client.set('acl:k', 'v')).toBe('OK');
    expect(await client.get('acl:k')).toBe('v');
    const [, list] = await redisCommands(a.port, [
      ['AUTH', 'u', 'p'],
      ['CLIENT', 'LIST'],
    ]);
    const others = String(list)
      .trim()
      .split('\n')
      .filter((l) => !/ cmd=client\|list /.test(l));
    expect(others.length).toBeGreaterThan(0);
    for (const line of others) expect(line).toMatch(/ user=u /);
  });

  it('a wrong password: a clear error naming the shard (handshake refused), no crash, other shards serve', async () => {
    // Shard a expects "right"; shard b expects what keymux is configured with.
    const [a, b] = await Promise.all([redis({ password: 'right' }), redis({ password: 'wrong' })]);
    const proxy = await keymux(slotsConfig([a.port, b.port], { backend: { password: 'wrong' } }));
    const client = ioredis(proxy.port);
    const kA = keyOn(proxy, 0, 'wrongpw');
    const kB = keyOn(proxy, 1, 'wrongpw');
    const res = await client.pipeline().set(kA, '1').set(kB, '2').get(kB).exec();
    expect(res?.[0][0]?.message).toMatch(
      new RegExp(
        `^ERR keymux: shard 'a' \\(127\\.0\\.0\\.1:${a.port}\\) (is unavailable: )?` +
          'refused the handshake: WRONGPASS invalid username-password pair or user is disabled\\.$',
      ),
    );
    expect(res?.[1]).toEqual([null, 'OK']);
    expect(res?.[2]).toEqual([null, '2']);
    expect(proxy.topology.shards[0].pool.healthy).toBe(false);

    // Still alive and serving: a new client, the same errors for a, answers for b.
    const raw = await RawClient.connect(proxy.port);
    cleanups.push(() => raw.close());
    raw.write(`*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$${kB.length}\r\n${kB}\r\n`);
    await raw.untilText('+PONG\r\n$1\r\n2\r\n');
    const [, unchanged] = await redisCommands(a.port, [
      ['AUTH', 'right'],
      ['EXISTS', kA],
    ]);
    expect(unchanged).toBe(0);
  });

  it('an ACL user with a wrong password, or no password for a server that needs one', async () => {
    const a = await redis();
    await redisCommand(a.port, 'ACL', 'SETUSER', 'u', 'on', '>p', '~*', '+@all');
    await redisCommand(a.port, 'ACL', 'SETUSER', 'default', 'off');
    const wrongUser = await keymux(slotsConfig([a.port], { backend: { username: 'u', password: 'nope' } }));
    const err = await ioredis(wrongUser.port)
      .get('acl:k')
      .catch((e: Error) => e.message);
    expect(err).toMatch(
      new RegExp(
        `^ERR keymux: shard 'a' \\(127\\.0\\.0\\.1:${a.port}\\) (is unavailable: )?refused the handshake: WRONGPASS`,
      ),
    );

    // No backend password at all: the server's own NOAUTH error passes through unchanged.
    const none = await keymux(slotsConfig([a.port]));
    const noauth = await ioredis(none.port)
      .get('acl:k')
      .catch((e: Error) => e.message);
    expect(noauth).toMatch(/^NOAUTH Authentication required\.?$/);
  });

  it('a backend that never answers the handshake: queued commands fail after connect_timeout_ms, then it is retried', async () => {
    let answerAuth = false;
    const f = await FakeBackend.start((c) => {
      if (c[0] === 'AUTH') return answerAuth ? '+OK\r\n' : null;
      return bulk(`value-of-${c[1]}`);
    });
    cleanups.push(() => f.close());
    const b = await redis({ password: 'pw' });
    const proxy = await startKeymux(
      slotsConfig([f.port, b.port], { backend: { password: 'pw', connect_timeout_ms: 300 } }),
      { builtinCommandTable: true },
    );
    cleanups.push(() => proxy.close());
    const kA = keyOn(proxy, 0, 'hs');
    const kB = keyOn(proxy, 1, 'hs');
    await f.until(() => f.commands.length >= 1, 'the AUTH from keymux');
    expect(f.commands[0]).toEqual(['AUTH', 'pw']);

    const client = ioredis(proxy.port);
    const t0 = performance.now();
    const res = await client.pipeline().get(kA).set(kB, 'vb').exec();
    expect(res?.[0][0]?.message).toMatch(
      new RegExp(
        `^ERR keymux: shard 'a' \\(${f.address.replace(/\./g, '\\.')}\\) ` +
          '(is unavailable: )?did not answer the connection within 300 ms$',
      ),
    );
    expect(res?.[1]).toEqual([null, 'OK']);
    expect(performance.now() - t0).toBeLessThan(2000);
    // Nothing but the handshake was ever sent on a connection whose handshake did not complete.
    expect(f.commands.every((c) => c[0] === 'AUTH')).toBe(true);

    answerAuth = true;
    await waitFor(
      async () => (await client.get(kA).catch(() => null)) === `value-of-${kA}`,
      'shard a served once it answers',
      8000,
      20,
    );
  });
});
