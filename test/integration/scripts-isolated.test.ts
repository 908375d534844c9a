// commands.scripts: isolated and commands.ping: shards, on real redis-servers in slots mode: a script that runs
// for ever holds only its own client's connection, so while it runs
// - another client's PING is answered BUSY by the script's shard (as one Redis server answers), its commands to
//   that shard get the shard's own BUSY error, and its commands to other shards are served at once;
// - SCRIPT KILL stops it: the script's client gets "killed by user", and PING answers PONG again;
// - the script's client keeps its order: its later command waits for the script, and is answered after it;
// - a client that leaves mid-script leaves no lease behind: its connection is closed, not reused;
// and with the defaults (scripts: allow, ping: local) PING is answered by keymux whatever the shards do.
// Scripts pipelined with plain commands (ioredis, node-redis) keep the client's order on the isolated path too, and
// in ring mode a script runs on its key's member (numkeys 0: the first listed server). A SCRIPT KILL or FUNCTION KILL
// sent as the script starts waits for the shard to answer it (at its busy-reply-threshold), past keymux's timeouts,
// but not for ever: a shard stopped with SIGSTOP fails its part after busy_reply_threshold_ms + timeout_ms.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[];
let proxy: Proxy;
const clients: Redis[] = [];

function client(): Redis {
  const c = new Redis({ port: proxy.port, lazyConnect: false, maxRetriesPerRequest: 0, enableOfflineQueue: true });
  clients.push(c);
  return c;
}

/** The error a command through `c` gets, or null when it succeeds. */
async function errorOf(p: Promise<unknown>): Promise<string | null> {
  return p.then(
    () => null,
    (e: Error) => e.message,
  );
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  // A script is "busy" for other clients after 10 ms (lua-time-limit, Redis 7's busy-reply-threshold).
  for (const b of backends) await redisCommand(b.port, 'CONFIG', 'SET', 'lua-time-limit', '10');
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      { commands: { scripts: 'isolated', ping: 'shards' } },
    ),
  );
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  // SIGKILL: a shard whose script a failed test left running ignores SIGTERM until the script ends.
  await Promise.all(backends.map((b) => b.stop('SIGKILL')));
});

describe('commands.scripts: isolated with commands.ping: shards', () => {
  it('a runaway script: BUSY for others on its shard only, SCRIPT KILL ends it, its client keeps its order', async () => {
    const runner = client();
    const other = client();
    // numkeys 0: the keyless shard (owner of slot 0, shard a).
    const keyOnBusy = keyOn(proxy, 0, 'iso-a');
    const keyElsewhere = keyOn(proxy, 2, 'iso-c');
    await other.set(keyOnBusy, 'before');
    await other.set(keyElsewhere, 'v');

    const script = errorOf(runner.eval('while true do end', 0));
    const after = runner.get(keyOnBusy); // the runner's next command: after its script, in order
    await waitFor(async () => /^BUSY/.test((await errorOf(other.ping())) ?? ''), 'PING to answer BUSY', 10_000);

    expect(await errorOf(other.get(keyOnBusy))).toMatch(/^BUSY Redis is busy running a script/);
    expect(await other.get(keyElsewhere)).toBe('v'); // other shards are not held up
    expect(proxy.sessions.leasedTotal).toBe(1); // the script's lease, nothing else

    expect(await other.script('KILL')).toBe('OK');
    expect(await script).toMatch(/killed by user/);
    expect(await after).toBe('before');
    await waitFor(async () => (await errorOf(other.ping())) === null, 'PING to answer PONG', 10_000);
    expect(await other.ping()).toBe('PONG');
    expect(await other.ping('hello')).toBe('hello');
    expect(proxy.sessions.leasedTotal).toBe(0);
  }, 30_000);

  it('a client that leaves mid-script: its lease is closed, not given to the next script', async () => {
    const other = client();
    const leaver = new Redis({ port: proxy.port, maxRetriesPerRequest: 0 });
    void leaver.eval('while true do end', 0).catch(() => undefined);
    await waitFor(async () => /^BUSY/.test((await errorOf(other.ping())) ?? ''), 'the script to run', 10_000);
    leaver.disconnect();
    await waitFor(() => proxy.sessions.leasedTotal === 0, 'the lease to be dropped', 10_000);
    expect(await other.script('KILL')).toBe('OK');
    await waitFor(async () => (await errorOf(other.ping())) === null, 'PING to answer PONG', 10_000);
    // The next script gets a fresh connection and its own reply.
    expect(await other.eval('return ARGV[1]', 0, 'mine')).toBe('mine');
  }, 30_000);

  it('scripts pipelined with plain commands keep the order (ioredis pipeline, node-redis multi-less batch)', async () => {
    const c = client();
    const k = keyOn(proxy, 1, 'iso-b');
    const replies = await c
      .pipeline()
      .set(k, '1')
      .eval("return redis.call('INCR', KEYS[1])", 1, k)
      .get(k)
      .eval("return redis.call('GET', KEYS[1])", 1, k)
      .incr(k)
      .exec();
    expect(replies?.map(([e, v]) => e?.message ?? v)).toEqual(['OK', 2, '2', '2', 3]);

    const nr = createClient({ socket: { port: proxy.port } });
    await nr.connect();
    try {
      const sha = await nr.scriptLoad("return redis.call('INCRBY', KEYS[1], ARGV[1])");
      const [a, b, g] = await Promise.all([
        nr.evalSha(sha, { keys: [k], arguments: ['10'] }),
        nr.evalSha(sha, { keys: [k], arguments: ['100'] }),
        nr.get(k),
      ]);
      expect([a, b, g]).toEqual([13, 113, '113']);
    } finally {
      await nr.quit();
    }
  });
});

describe('SCRIPT KILL / FUNCTION KILL sent before the shard answers them', () => {
  it("waits for the shard's busy-reply-threshold, however much longer than keymux's timeouts", async () => {
    // The shard answers a KILL only once the script has run for its busy-reply-threshold: longer here than
    // backend.connect_timeout_ms + timeout_ms, which bounded the KILL before (an error, the script killed later).
    const shard = backends[0]!;
    await redisCommand(shard.port, 'CONFIG', 'SET', 'busy-reply-threshold', '1500');
    await redisCommand(
      shard.port,
      'FUNCTION',
      'LOAD',
      'REPLACE',
      [
        '#!lua name=runaway',
        "redis.register_function{function_name='runaway', flags={'no-writes'}, callback=function()",
        "  redis.log(redis.LOG_WARNING, 'runaway function started') while true do end end}",
      ].join('\n'),
    );
    const p = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { commands: { scripts: 'isolated' }, backend: { connect_timeout_ms: 200, timeout_ms: 200 } },
      ),
    );
    const runner = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
    const killer = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
    const log = path.join(shard.dir, 'redis.log');
    /** Resolves once the shard logged `marker` (the script's first line): it runs, and has not been killed yet. */
    const started = (marker: string) =>
      waitFor(() => fs.readFileSync(log, 'latin1').split(marker).length === 2, `${marker} in the shard's log`, 10_000);
    try {
      const script = errorOf(
        runner.eval("redis.log(redis.LOG_WARNING, 'runaway script started') while true do end", 0),
      );
      await started('runaway script started');
      expect(await errorOf(killer.script('KILL'))).toBeNull();
      expect(await script).toMatch(/^ERR Script killed by user with SCRIPT KILL/);

      const fn = errorOf(runner.fcall('runaway', 0));
      await started('runaway function started');
      expect(await errorOf(killer.call('FUNCTION', 'KILL'))).toBeNull();
      expect(await fn).toMatch(/^ERR Script killed by user/);
      expect(await runner.eval('return ARGV[1]', 0, 'next')).toBe('next');
    } finally {
      runner.disconnect();
      killer.disconnect();
      await p.close();
      // A KILL that failed in keymux still reaches the shard: wait for it to have ended the script.
      await waitFor(async () => !((await redisCommands(shard.port, [['PING']]))[0] instanceof Error), 'PONG', 10_000);
      await redisCommand(shard.port, 'FUNCTION', 'DELETE', 'runaway');
      await redisCommand(shard.port, 'CONFIG', 'SET', 'busy-reply-threshold', '10');
    }
  }, 30_000);
});

describe('SCRIPT KILL / FUNCTION KILL with a shard that never answers (stopped with SIGSTOP)', () => {
  it("answers once busy_reply_threshold_ms + timeout_ms have passed: the others' kill, else the silent shard named", async () => {
    // A stopped redis-server still accepts TCP connections (the kernel does), but never reads or answers: before
    // the bound, the KILL (and the client's commands behind it) waited for it for ever.
    const stopped = await startRedis();
    const shardA = backends[0]!;
    const p = await startKeymux(
      slotsConfig([shardA.port, backends[1]!.port, stopped.port], {
        commands: { scripts: 'isolated' },
        backend: { timeout_ms: 200, busy_reply_threshold_ms: 300 },
      }),
    );
    const runner = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
    const killer = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
    const log = path.join(shardA.dir, 'redis.log');
    const marker = 'script beside a stopped shard started';
    process.kill(stopped.pid, 'SIGSTOP');
    try {
      const keyOnB = keyOn(p, 1, 'hung-b');
      await killer.set(keyOnB, 'served');
      // A script running on shard a (numkeys 0: the keyless shard), which answers KILL at its threshold (10 ms).
      const script = errorOf(runner.eval(`redis.log(redis.LOG_WARNING, '${marker}') while true do end`, 0));
      await waitFor(
        () => fs.readFileSync(log, 'latin1').split(marker).length === 2,
        `${marker} in the shard's log`,
        10_000,
      );
      const killed = await killer.pipeline().script('KILL').get(keyOnB).exec();
      expect(killed?.map(([e, v]) => e?.message ?? v)).toEqual(['OK', 'served']); // shard c's silence is not waited on
      expect(await script).toMatch(/^ERR Script killed by user with SCRIPT KILL/);

      // No script runs on the shards that answer (NOTBUSY), and shard c says nothing: keymux cannot tell NOTBUSY.
      const silent = `ERR keymux: shard c (${stopped.address}) did not answer`;
      const notBusy = await killer.pipeline().script('KILL').call('FUNCTION', 'KILL').get(keyOnB).exec();
      expect(notBusy?.map(([e, v]) => e?.message ?? v)).toEqual([
        `${silent} SCRIPT KILL within 500 ms`,
        `${silent} FUNCTION KILL within 500 ms`,
        'served',
      ]);
      expect(await runner.eval('return ARGV[1]', 0, 'next')).toBe('next');
    } finally {
      process.kill(stopped.pid, 'SIGCONT');
      runner.disconnect();
      killer.disconnect();
      await p.close();
      await stopped.stop('SIGKILL');
    }
  }, 30_000);
});

describe('commands.scripts: isolated in ring mode', () => {
  it("a script runs on its key's ring member, and a keyless one on the first listed server", async () => {
    const p = await startKeymux(
      ringConfig(
        backends.map((b) => b.port),
        { commands: { scripts: 'isolated' } },
      ),
    );
    const c = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
    try {
      for (let member = 0; member < backends.length; member++) {
        const k = keyOn(p, member, 'iso-ring');
        expect(await c.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, k, `m${member}`)).toBe('OK');
        expect(await redisCommand(backends[member]!.port, 'GET', k)).toBe(`m${member}`);
      }
      expect(await c.eval("redis.call('SET', 'iso-ring-keyless', 'here') return 1", 0)).toBe(1);
      expect(await redisCommand(backends[0]!.port, 'GET', 'iso-ring-keyless')).toBe('here');
      expect(p.sessions.leasedTotal).toBe(0);
    } finally {
      c.disconnect();
      await p.close();
    }
  });
});

describe('the defaults: commands.ping: local', () => {
  it('PING is answered by keymux even when a shard is down', async () => {
    const down = await startRedis();
    const p = await startKeymux(slotsConfig([down.port, backends[1]!.port]));
    try {
      await down.stop();
      const c = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
      try {
        expect(await c.ping()).toBe('PONG');
      } finally {
        c.disconnect();
      }
    } finally {
      await p.close();
    }
  });

  it('with commands.ping: shards, a shard that is down fails PING with the reason', async () => {
    const down = await startRedis();
    const p = await startKeymux(slotsConfig([down.port, backends[1]!.port], { commands: { ping: 'shards' } }));
    try {
      const c = new Redis({ port: p.port, maxRetriesPerRequest: 0 });
      try {
        expect(await c.ping()).toBe('PONG');
        await down.stop();
        await waitFor(async () => (await errorOf(c.ping())) !== null, 'PING to fail', 10_000);
        expect(await errorOf(c.ping())).toMatch(/^ERR keymux: shard 'a' /);
      } finally {
        c.disconnect();
      }
    } finally {
      await p.close();
    }
  });
});
