/**
 * CONFIG inside MULTI (commands.config_broadcast on): CONFIG SET, GET and RESETSTAT are queued with the transaction
 * and run in it on its shard, in their place in the EXEC reply (as on one Redis); SET and RESETSTAT then reach every
 * other shard before EXEC is answered, and one that fails on the transaction's shard (Redis's own "CONFIG SET
 * failed" element) goes nowhere else. Without the switch they are refused while queuing and EXEC answers
 * EXECABORT, nothing applied. The shards' credentials stay out of reach with the switch on: CONFIG GET leaves out
 * requirepass, masterauth, masteruser and the TLS key passphrases (RESP2 and RESP3, in a transaction too) and
 * CONFIG SET of any of them is refused. Three real redis-server shards; ioredis and raw RESP clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let shards: RedisProcess[];
let proxy: Proxy;
let plain: Proxy;

beforeAll(async () => {
  shards = await Promise.all([startRedis(), startRedis(), startRedis()]);
  const ports = shards.map((s) => s.port);
  proxy = await startKeymux(slotsConfig(ports, { commands: { config_broadcast: true } }));
  plain = await startKeymux(slotsConfig(ports));
});
afterAll(async () => {
  await proxy?.close();
  await plain?.close();
  await Promise.all(shards.map((s) => s.stop()));
});

const cmd = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

async function configOnEachShard(name: string): Promise<string[]> {
  return Promise.all(
    shards.map(async (s) => ((await redisCommand(s.port, 'CONFIG', 'GET', name)) as string[])[1] ?? ''),
  );
}

describe('CONFIG inside MULTI with commands.config_broadcast', () => {
  it('CONFIG SET runs in the transaction and on every shard before EXEC is answered (ioredis)', async () => {
    await Promise.all(shards.map((s) => redisCommand(s.port, 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction')));
    const c = new Redis({ port: proxy.port });
    try {
      const res = await c
        .multi()
        .set('cfg:k', 'v')
        .config('SET', 'maxmemory-policy', 'allkeys-lru')
        .config('GET', 'maxmemory-policy')
        .get('cfg:k')
        .exec();
      expect(res).toEqual([
        [null, 'OK'],
        [null, 'OK'],
        [null, ['maxmemory-policy', 'allkeys-lru']],
        [null, 'v'],
      ]);
      // Every shard has the new setting by the time EXEC was answered.
      expect(await configOnEachShard('maxmemory-policy')).toEqual(['allkeys-lru', 'allkeys-lru', 'allkeys-lru']);
    } finally {
      c.disconnect();
      await Promise.all(shards.map((s) => redisCommand(s.port, 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction')));
    }
  });

  it("a CONFIG SET the server refuses is Redis's error in its place, applied nowhere, the rest applied", async () => {
    const before = await configOnEachShard('maxmemory');
    const c = await RawClient.connect(proxy.port);
    try {
      const replies = await c.exchange(
        cmd('MULTI') + cmd('SET', 'cfg:foo', 'bar') + cmd('CONFIG', 'SET', 'maxmemory', 'bla') + cmd('EXEC'),
        4,
      );
      expect(replies.slice(0, 3)).toEqual(['OK', 'QUEUED', 'QUEUED']);
      const exec = replies[3] as unknown[];
      expect(exec[0]).toBe('OK');
      expect((exec[1] as Error).message).toMatch(/CONFIG SET failed/);
      expect(await configOnEachShard('maxmemory')).toEqual(before);
      // The transaction is over: the next command is not queued.
      expect(await c.exchange(cmd('GET', 'cfg:foo'), 1)).toEqual(['bar']);
    } finally {
      c.socket.destroy();
    }
  });

  it('CONFIG RESETSTAT inside MULTI resets every shard', async () => {
    const c = new Redis({ port: proxy.port });
    try {
      for (let i = 0; i < 20; i++) await c.set(`cfg:n${i}`, 'x'); // commands on every shard
      const res = await c.multi().config('RESETSTAT').exec();
      expect(res).toEqual([[null, 'OK']]);
      for (const s of shards) {
        const stats = String(await redisCommand(s.port, 'INFO', 'commandstats'));
        expect(stats).not.toMatch(/cmdstat_set:/);
      }
    } finally {
      c.disconnect();
    }
  });

  it('without commands.config_broadcast CONFIG SET is refused while queuing and EXEC aborts', async () => {
    const c = await RawClient.connect(plain.port);
    try {
      const replies = await c.exchange(
        cmd('MULTI') +
          cmd('SET', 'cfg:never', '1') +
          cmd('CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru') +
          cmd('EXEC'),
        4,
      );
      expect(replies.slice(0, 2)).toEqual(['OK', 'QUEUED']);
      expect((replies[2] as Error).message).toMatch(/^ERR keymux: command 'config\|set' is not supported/);
      expect((replies[3] as Error).message).toMatch(/^EXECABORT/);
      expect(await configOnEachShard('maxmemory-policy')).toEqual(['noeviction', 'noeviction', 'noeviction']);
      for (const s of shards) expect(await redisCommand(s.port, 'GET', 'cfg:never')).toBeNull();
    } finally {
      c.socket.destroy();
    }
  });
});

describe("the shards' credentials with commands.config_broadcast", () => {
  it('CONFIG GET never returns requirepass, masterauth, masteruser...; CONFIG SET of them is refused', async () => {
    // Set on the shards directly (harmless to keymux's connections, unlike requirepass).
    await Promise.all(
      shards.map((s) => redisCommand(s.port, 'CONFIG', 'SET', 'masterauth', 'SECRET-ma', 'masteruser', 'SECRET-mu')),
    );
    const c = await RawClient.connect(proxy.port);
    try {
      const [one, many, all] = await c.exchange(
        cmd('CONFIG', 'GET', 'masterauth') +
          cmd('CONFIG', 'GET', 'master*', 'maxmemory-policy', 'REQUIREPASS') +
          cmd('CONFIG', 'GET', '*'),
        3,
      );
      expect(one).toEqual([]); // as for a parameter the server does not have
      expect(many).toEqual(['maxmemory-policy', 'noeviction']);
      const names = (all as string[]).filter((_, i) => i % 2 === 0);
      expect(names.length).toBeGreaterThan(100);
      expect(names).toContain('maxmemory');
      for (const secret of ['requirepass', 'masterauth', 'masteruser', 'tls-key-file-pass', 'tls-client-key-file-pass'])
        expect(names).not.toContain(secret);
      expect(JSON.stringify(all)).not.toContain('SECRET');
      // In a transaction too.
      const [, , , exec] = await c.exchange(
        cmd('MULTI') + cmd('CONFIG', 'GET', 'masteruser') + cmd('CONFIG', 'GET', 'maxmemory-policy') + cmd('EXEC'),
        4,
      );
      expect(exec).toEqual([[], ['maxmemory-policy', 'noeviction']]);
      // CONFIG SET of a credential: refused, alone or with others, and nothing of it applied.
      const refused = await c.exchange(
        cmd('CONFIG', 'SET', 'requirepass', 'x') +
          cmd('CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru', 'MasterAuth', 'x') +
          cmd('MULTI') +
          cmd('CONFIG', 'SET', 'tls-key-file-pass', 'x') +
          cmd('EXEC'),
        5,
      );
      expect((refused[0] as Error).message).toMatch(
        /^ERR keymux: CONFIG SET requirepass is refused: the shards' credentials/,
      );
      expect((refused[1] as Error).message).toMatch(/^ERR keymux: CONFIG SET masterauth is refused/);
      expect((refused[3] as Error).message).toMatch(/^ERR keymux: CONFIG SET tls-key-file-pass is refused/);
      expect((refused[4] as Error).message).toMatch(/^EXECABORT/);
      expect(await configOnEachShard('maxmemory-policy')).toEqual(['noeviction', 'noeviction', 'noeviction']);
      expect(await configOnEachShard('requirepass')).toEqual(['', '', '']);
      expect(await configOnEachShard('masterauth')).toEqual(['SECRET-ma', 'SECRET-ma', 'SECRET-ma']);
      // RESP3: a map, the secrets left out likewise.
      const c3 = await RawClient.connect(proxy.port);
      c3.write(cmd('HELLO', '3') + cmd('CONFIG', 'GET', 'master*', 'maxmemory-policy') + cmd('PING'));
      const text = await c3.untilText('+PONG\r\n');
      c3.close();
      expect(text).toMatch(/\r\n%1\r\n\$16\r\nmaxmemory-policy\r\n\$10\r\nnoeviction\r\n\+PONG\r\n$/);
    } finally {
      c.close();
      await Promise.all(shards.map((s) => redisCommand(s.port, 'CONFIG', 'SET', 'masterauth', '', 'masteruser', '')));
    }
  });
});
