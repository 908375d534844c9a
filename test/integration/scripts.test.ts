// Scripts and functions through keymux, in slots, ring and cluster mode: EVAL/EVALSHA/FCALL run on the shard of
// their keys, numkeys 0 on the keyless shard (owner of slot 0 / first ring server), numkeys errors worded as Redis
// words them; SCRIPT LOAD/EXISTS/FLUSH and FUNCTION LOAD/DELETE/FLUSH/DUMP/RESTORE reach every shard (EXISTS is 1
// only where every shard has the script); a script first run with EVAL is loaded on every shard; SCRIPT KILL stops a script although its shard's shared connection is
// busy with it; and a shard added by a reload gets the scripts and functions loaded through keymux before it
// serves anything (EVALSHA and FCALL work there at once; ioredis's EVALSHA-then-EVAL also works). Under read_from:
// replica, EVALSHA_RO finds the scripts loaded through keymux although Redis does not propagate them to replicas,
// and no longer finds them after SCRIPT FLUSH through keymux (which Redis does not propagate either).
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

const SET_SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1])";
const LIB = [
  '#!lua name=kmlib',
  "redis.register_function('km_set', function(keys, args) return redis.call('SET', keys[1], args[1]) end)",
  "redis.register_function{function_name='km_get', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}",
].join('\n');

let backends: RedisProcess[];
const sha1 = (body: string): string => createHash('sha1').update(body).digest('hex');

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
});

async function flushBackends(): Promise<void> {
  for (const b of backends) {
    await redisCommand(b.port, 'FLUSHALL');
    await redisCommand(b.port, 'SCRIPT', 'FLUSH');
    await redisCommand(b.port, 'FUNCTION', 'FLUSH');
  }
}

/** The backend process behind shard `i` of the proxy's topology. */
function backendOf(proxy: Proxy, i: number): RedisProcess {
  const address = proxy.topology.shards[i].address;
  return backends.find((b) => b.address === address)!;
}

for (const mode of ['slots', 'ring'] as const) {
  describe(`${mode} mode`, () => {
    let proxy: Proxy;
    let c: Redis;

    beforeAll(async () => {
      await flushBackends();
      const ports = backends.map((b) => b.port);
      // A generous timeout: the SCRIPT KILL case keeps a shard busy until the kill lands (on a loaded machine too).
      const extra = { backend: { timeout_ms: 10_000 } };
      proxy = await startKeymux(mode === 'slots' ? slotsConfig(ports, extra) : ringConfig(ports, extra));
      c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await c.connect();
    });
    afterAll(async () => {
      c.disconnect();
      await proxy.close();
    });

    it('runs EVAL on the shard of its keys, and numkeys 0 on the keyless shard', async () => {
      for (let s = 0; s < 3; s++) {
        const key = keyOn(proxy, s, `ev-${mode}`);
        expect(await c.eval(SET_SCRIPT, 1, key, `v${s}`)).toBe('OK');
        expect(await redisCommand(backendOf(proxy, s).port, 'GET', key)).toBe(`v${s}`);
      }
      // Keyless: slots mode -> owner of slot 0 (shard a); ring mode -> the first listed server.
      expect(await c.eval("redis.call('SET', 'keyless-marker', 'here') return redis.call('PING')", 0)).toBe('PONG');
      const keyless = proxy.topology.router.shardOfGroup(proxy.topology.router.keylessGroup());
      expect(proxy.topology.shards[keyless].address).toBe(backends[0].address);
      const where = await Promise.all(backends.map((b) => redisCommand(b.port, 'GET', 'keyless-marker')));
      expect(where).toEqual(['here', null, null]);
      // Keys on two shards: refused as Redis Cluster refuses them.
      await expect(c.eval(SET_SCRIPT, 2, keyOn(proxy, 0, 'x2'), keyOn(proxy, 1, 'x2'), 'v')).rejects.toThrow(
        /CROSSSLOT/,
      );
    });

    it('words numkeys and arity errors as Redis does (compared with a redis-server)', async () => {
      const sha40 = 'f'.repeat(40);
      const cases: string[][] = [
        ['EVAL', 'return 1', '-1'],
        ['EVAL', 'return 1', '3', 'a'],
        ['EVAL', 'return 1', 'x'],
        ['EVAL', 'return 1', '1.5', 'k'],
        ['EVALSHA', 'abc', '2', 'a'],
        ['EVALSHA', sha40, '2', 'a'],
        ['EVALSHA', sha40, '0'],
        ['EVAL_RO', 'return 1', '-2'],
        ['FCALL', 'f', '-5'],
        ['FCALL_RO', 'f', '9', 'k'],
        ['FCALL', 'nosuchfunction', '0'],
        ['EVAL', 'return 1'],
        ['SCRIPT', 'LOAD'],
        ['SCRIPT'],
        ['SINTERCARD', '0', 'a'],
        ['SINTERCARD', '-1', 'a'],
        ['ZMPOP', '0', 'MIN'],
        ['LMPOP', 'x', 'k', 'LEFT'],
      ];
      const direct = await redisCommands(backends[0].port, cases);
      for (let i = 0; i < cases.length; i++) {
        const want = direct[i];
        expect(want, cases[i].join(' ')).toBeInstanceOf(Error);
        const got = await c.call(cases[i][0], ...cases[i].slice(1)).then(
          () => 'no error',
          (e: Error) => e.message,
        );
        expect(got, cases[i].join(' ')).toBe((want as Error).message);
      }
      // The numkeys wording these clients match on, spelled out.
      expect(direct.slice(0, 3).map((e) => (e as Error).message)).toEqual([
        "ERR Number of keys can't be negative",
        "ERR Number of keys can't be greater than number of args",
        'ERR value is not an integer or out of range',
      ]);
    });

    it('loads scripts on every shard; SCRIPT EXISTS is 1 only where every shard has it; FLUSH reaches all', async () => {
      const sha = (await c.script('LOAD', SET_SCRIPT)) as string;
      expect(sha).toMatch(/^[0-9a-f]{40}$/);
      for (const b of backends) expect(await redisCommand(b.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);
      for (let s = 0; s < 3; s++) {
        const key = keyOn(proxy, s, `sha-${mode}`);
        expect(await c.evalsha(sha, 1, key, 'x')).toBe('OK');
      }
      // Loaded on one shard only (directly): not "existing" for a client of keymux.
      const partial = (await redisCommand(backends[1].port, 'SCRIPT', 'LOAD', 'return 42')) as string;
      expect(await c.script('EXISTS', sha, partial, 'nope')).toEqual([1, 0, 0]);
      expect(await c.script('FLUSH')).toBe('OK');
      for (const b of backends) expect(await redisCommand(b.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
      await expect(c.evalsha(sha, 1, 'k', 'v')).rejects.toThrow(/NOSCRIPT/);
      // ioredis's defineCommand sends EVALSHA and falls back to EVAL on NOSCRIPT.
      c.defineCommand('kmset', { numberOfKeys: 1, lua: SET_SCRIPT });
      const kmset = (c as unknown as { kmset(k: string, v: string): Promise<string> }).kmset.bind(c);
      for (let s = 0; s < 3; s++) expect(await kmset(keyOn(proxy, s, `def-${mode}`), 'y')).toBe('OK');
    });

    it('a script first run with EVAL is loaded on every shard: EVALSHA and SCRIPT EXISTS find it anywhere', async () => {
      const body = `return 'shared-${mode}-' .. (KEYS[1] or 'none')`;
      const key = keyOn(proxy, 2, `shared-${mode}`);
      // Pipelined: SCRIPT EXISTS and EVALSHA on other shards, sent right behind the EVAL, already find it.
      const [ran, exists, ...onOthers] = (await c
        .pipeline()
        .eval(body, 1, key)
        .script('EXISTS', sha1(body))
        .evalsha(sha1(body), 1, keyOn(proxy, 0, `shared-${mode}`))
        .evalsha(sha1(body), 0)
        .exec())!.map(([err, v]) => err?.message ?? v);
      expect(ran).toBe(`shared-${mode}-${key}`);
      expect(exists).toEqual([1]);
      expect(onOthers).toEqual([`shared-${mode}-${keyOn(proxy, 0, `shared-${mode}`)}`, `shared-${mode}-none`]);
      for (const b of backends) expect(await redisCommand(b.port, 'SCRIPT', 'EXISTS', sha1(body))).toEqual([1]);
      // Also with numkeys 0 (the keyless shard), and a body that does not compile is loaded nowhere else.
      expect(await c.eval("return 'keyless-shared'", 0)).toBe('keyless-shared');
      expect(await c.script('EXISTS', sha1("return 'keyless-shared'"))).toEqual([1]);
      await expect(c.eval('return (', 0)).rejects.toThrow(/Error compiling script/);
      for (const b of backends) expect(await redisCommand(b.port, 'SCRIPT', 'EXISTS', sha1('return ('))).toEqual([0]);
      // SCRIPT FLUSH forgets it; the next EVAL shares it again.
      expect(await c.script('FLUSH')).toBe('OK');
      expect(await c.script('EXISTS', sha1(body))).toEqual([0]);
      expect(await c.eval(body, 1, key)).toBe(`shared-${mode}-${key}`);
      expect(await c.script('EXISTS', sha1(body))).toEqual([1]);
    });

    it('loads, lists, dumps, restores and deletes functions on every shard; FCALL runs where its key lives', async () => {
      expect(await c.call('FUNCTION', 'LOAD', LIB)).toBe('kmlib');
      await expect(c.call('FUNCTION', 'LOAD', LIB)).rejects.toThrow(/already exists/);
      for (let s = 0; s < 3; s++) {
        const key = keyOn(proxy, s, `fn-${mode}`);
        expect(await c.fcall('km_set', 1, key, `f${s}`)).toBe('OK');
        expect(await redisCommand(backendOf(proxy, s).port, 'GET', key)).toBe(`f${s}`);
        expect(await c.call('FCALL_RO', 'km_get', '1', key)).toBe(`f${s}`);
      }
      const list = (await c.call('FUNCTION', 'LIST')) as unknown[];
      expect(JSON.stringify(list)).toContain('kmlib');
      const dump = (await c.callBuffer('FUNCTION', 'DUMP')) as Buffer;
      expect(await c.call('FUNCTION', 'DELETE', 'kmlib')).toBe('OK');
      for (const b of backends) expect(await redisCommand(b.port, 'FUNCTION', 'LIST')).toEqual([]);
      expect(await c.call('FUNCTION', 'RESTORE', dump)).toBe('OK');
      for (const b of backends)
        expect(JSON.stringify(await redisCommand(b.port, 'FUNCTION', 'LIST'))).toContain('kmlib');
      expect(await c.call('FUNCTION', 'FLUSH')).toBe('OK');
      for (const b of backends) expect(await redisCommand(b.port, 'FUNCTION', 'LIST')).toEqual([]);
      await expect(c.call('FUNCTION', 'DELETE', 'kmlib')).rejects.toThrow(/Library not found/);
    });

    it('SCRIPT KILL stops a running script although its shard connection is busy with it', async () => {
      const shard0 = backendOf(proxy, 0);
      await redisCommand(shard0.port, 'CONFIG', 'SET', 'busy-reply-threshold', '50');
      const runner = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await runner.connect();
      try {
        expect(await c.call('SCRIPT', 'KILL').catch((e: Error) => e.message)).toMatch(/^NOTBUSY/);
        const running = runner.eval('while true do end', 1, keyOn(proxy, 0, 'busy')).catch((e: Error) => e.message);
        // Retry until the script is seen running (NOTBUSY before it starts), bounded.
        let killed: unknown = null;
        for (let i = 0; i < 200 && killed !== 'OK'; i++) {
          killed = await c.call('SCRIPT', 'KILL').catch((e: Error) => e.message);
          if (killed !== 'OK') await new Promise((r) => setTimeout(r, 20)); // the script starts asynchronously
        }
        expect(killed).toBe('OK');
        expect(await running).toMatch(/killed by user/i);
        // The shared connection is usable again, for everyone.
        expect(await runner.set(keyOn(proxy, 0, 'after-kill'), '1')).toBe('OK');
      } finally {
        runner.disconnect();
        await redisCommand(shard0.port, 'CONFIG', 'SET', 'busy-reply-threshold', '5000');
      }
    });

    it('serves node-redis scripts (EVALSHA with fallback) and keyless reads from one shard', async () => {
      const nr = createClient({ socket: { port: proxy.port } });
      await nr.connect();
      try {
        expect(await nr.eval(SET_SCRIPT, { keys: [keyOn(proxy, 2, 'nr')], arguments: ['z'] })).toBe('OK');
        const t = (await nr.time()) as unknown as string[];
        expect(t.length).toBe(2);
        expect(Number(t[0])).toBeGreaterThan(1_600_000_000);
        expect(typeof (await nr.lastSave())).toBe('number');
        expect(String(await nr.sendCommand(['LOLWUT', 'VERSION', '5']))).toContain('Redis');
      } finally {
        await nr.quit();
      }
    });
  });
}

describe('slots mode: a shard added by a reload', () => {
  it('gets the scripts and functions loaded through keymux before it serves EVALSHA and FCALL', async () => {
    await flushBackends();
    const two = slotsConfig([backends[0].port, backends[1].port]);
    const proxy = await startKeymux(two);
    const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.connect();
    try {
      const sha = (await c.script('LOAD', SET_SCRIPT)) as string;
      expect(await c.call('FUNCTION', 'LOAD', LIB)).toBe('kmlib');
      expect(await redisCommand(backends[2].port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
      // A third shard takes the top third of the slots.
      const three = slotsConfig(backends.map((b) => b.port));
      expect(proxy.reload(configFrom(three))).toBeNull();
      const key = keyOn(proxy, 2, 'new-shard');
      // The very first commands on the new shard already find the script and the function.
      const [evalsha, fcall] = await Promise.all([
        c.evalsha(sha, 1, key, 'from-evalsha'),
        c.fcall('km_set', 1, `${key}:f`, 'from-fcall'),
      ]);
      expect([evalsha, fcall]).toEqual(['OK', 'OK']);
      expect(await redisCommand(backends[2].port, 'GET', key)).toBe('from-evalsha');
      expect(await redisCommand(backends[2].port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);
      expect(await c.script('EXISTS', sha)).toEqual([1]);
      // After SCRIPT FLUSH nothing is replayed: a later shard answers NOSCRIPT, and clients fall back to EVAL.
      expect(await c.script('FLUSH')).toBe('OK');
      expect(proxy.scripts.scriptCount).toBe(0);
      expect(proxy.scripts.functionCount).toBe(1);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });
});

describe('slots mode: read_from: replica', () => {
  it('EVALSHA_RO runs scripts loaded through keymux on a replica that lacks them (also after it restarts)', async () => {
    await flushBackends();
    // The replica syncs at once (no diskless-sync delay), as after its restart below.
    const primary = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] });
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(primary.port)] });
    const proxy = await startKeymux({
      mode: 'slots',
      replica_checks: { interval_ms: 100 },
      shards: [
        { name: 'a', address: primary.address, replicas: [replica.address], read_from: 'replica', slots: ['0-8191'] },
        { name: 'b', address: backends[1].address, slots: ['8192-16383'] },
      ],
    });
    const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    const replicaReadable = () =>
      waitFor(
        () => proxy.topology.shards[0].replicas[0].readable && proxy.topology.shards[0].replicas[0].usable,
        'the replica to serve reads',
        15_000,
        20,
      );
    const evalshaCallsOnPrimary = async () =>
      Number(
        /^cmdstat_evalsha_ro:calls=(\d+)/m.exec(
          String(await redisCommand(primary.port, 'INFO', 'commandstats')),
        )?.[1] ?? 0,
      );
    try {
      await c.connect();
      await replicaReadable();
      const body = "return 'hi'";
      const sha = (await c.script('LOAD', body)) as string;
      expect(await c.script('EXISTS', sha)).toEqual([1]);
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]); // Redis does not propagate it
      expect(await c.evalsha(sha, 0)).toBe('hi');
      // The replica answers NOSCRIPT: the primary runs it, and the replica gets the script for the next call.
      expect(await c.call('EVALSHA_RO', sha, '0')).toBe('hi');
      expect(await evalshaCallsOnPrimary()).toBe(1);
      expect(await c.call('EVALSHA_RO', sha.toUpperCase(), '1', keyOn(proxy, 0, 'ro'))).toBe('hi');
      expect(await evalshaCallsOnPrimary()).toBe(1); // served by the replica
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);

      // EVAL_RO runs on the replica: the primaries load it too (shard a's as well), so EVALSHA finds it everywhere.
      const roBody = "return 'eval-ro'";
      expect(await c.call('EVAL_RO', roBody, '1', keyOn(proxy, 0, 'ro'))).toBe('eval-ro');
      expect(await c.evalsha(sha1(roBody), 1, keyOn(proxy, 0, 'ro'))).toBe('eval-ro');
      expect(await c.evalsha(sha1(roBody), 1, keyOn(proxy, 1, 'ro'))).toBe('eval-ro');

      // A script keymux never saw (loaded on the primary directly): the primary runs it, as it runs EVALSHA.
      const direct = (await redisCommand(primary.port, 'SCRIPT', 'LOAD', "return 'direct'")) as string;
      expect(await c.call('EVALSHA_RO', direct, '0')).toBe('direct');
      await expect(c.call('EVALSHA_RO', sha1('never loaded'), '0')).rejects.toThrow(/^NOSCRIPT/);

      // A restarted replica has lost its scripts: served again the same way.
      await replica.stop();
      await replica.restart();
      await replicaReadable();
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
      expect(await c.call('EVALSHA_RO', sha, '0')).toBe('hi');
      expect(await c.call('EVALSHA_RO', sha, '0')).toBe('hi');
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);
    } finally {
      c.disconnect();
      await proxy.close();
      await replica.stop();
      await primary.stop();
    }
  }, 60_000);
});

describe('slots mode: read_from: replica, SCRIPT FLUSH', () => {
  it('SCRIPT FLUSH through keymux flushes the replicas too: EVALSHA_RO of a flushed script answers NOSCRIPT', async () => {
    await flushBackends();
    const primary = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] });
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(primary.port)] });
    const proxy = await startKeymux({
      mode: 'slots',
      replica_checks: { interval_ms: 100 },
      shards: [
        { name: 'a', address: primary.address, replicas: [replica.address], read_from: 'replica', slots: ['0-8191'] },
        { name: 'b', address: backends[1].address, slots: ['8192-16383'] },
      ],
    });
    const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    const replicaPool = () => proxy.topology.shards[0].replicas[0];
    try {
      await c.connect();
      await waitFor(() => replicaPool().readable && replicaPool().usable, 'the replica to serve reads', 15_000, 20);

      // Redis itself: SCRIPT FLUSH on a primary leaves its replica's scripts (Redis 7 does not propagate it).
      const own = "return 'replica keeps it'";
      const ownSha = (await redisCommand(primary.port, 'SCRIPT', 'LOAD', own)) as string;
      await redisCommand(replica.port, 'SCRIPT', 'LOAD', own);
      expect(await redisCommand(primary.port, 'SCRIPT', 'FLUSH')).toBe('OK');
      await redisCommand(primary.port, 'SET', 'flush-marker', '1');
      expect(await redisCommand(primary.port, 'WAIT', '1', '0')).toBe(1); // the replica has read past the FLUSH
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', ownSha)).toEqual([1]);
      expect(await redisCommand(replica.port, 'EVALSHA_RO', ownSha, '0')).toBe('replica keeps it');

      // Through keymux: the replica gets the script at its first NOSCRIPT, and serves it from then on.
      const sha = (await c.script('LOAD', "return 'flushed'")) as string;
      expect(await c.call('EVALSHA_RO', sha, '0')).toBe('flushed');
      expect(await redisCommand(replica.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);

      expect(await c.script('FLUSH')).toBe('OK');
      for (const port of [primary.port, backends[1].port, replica.port]) {
        expect(await redisCommand(port, 'SCRIPT', 'EXISTS', sha, ownSha)).toEqual([0, 0]);
      }
      // As one Redis answers after SCRIPT FLUSH (before the fix the replica still ran both).
      await expect(c.call('EVALSHA_RO', sha, '0')).rejects.toThrow(/^NOSCRIPT/);
      await expect(c.call('EVALSHA_RO', ownSha, '1', keyOn(proxy, 0, 'ro'))).rejects.toThrow(/^NOSCRIPT/);
      expect(await c.script('EXISTS', sha)).toEqual([0]);

      // A replica that is down is not asked (keymux reads nothing from it; restarted, it has no scripts): still OK.
      await replica.stop();
      await waitFor(() => !replicaPool().usable, 'the replica to be down', 15_000, 20);
      expect(await c.script('FLUSH')).toBe('OK');
    } finally {
      c.disconnect();
      await proxy.close();
      await replica.stop();
      await primary.stop();
    }
  }, 60_000);
});

describe('cluster mode', () => {
  let cluster: RedisCluster;
  let proxy: Proxy;
  let c: Redis;

  beforeAll(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 0 });
    proxy = await startKeymux({ mode: 'cluster', cluster: { seeds: cluster.seeds() } });
    c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.connect();
  }, 120_000);
  afterAll(async () => {
    c?.disconnect();
    await proxy?.close();
    await cluster?.stop();
  });

  it('routes scripts by key slot, loads scripts and functions on every master, numkeys 0 on the owner of slot 0', async () => {
    const masters = cluster.masters();
    const sha = (await c.script('LOAD', SET_SCRIPT)) as string;
    for (const m of masters) expect(await redisCommand(m.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);
    expect(await c.call('FUNCTION', 'LOAD', LIB)).toBe('kmlib');
    for (let s = 0; s < proxy.topology.shards.length; s++) {
      const key = keyOn(proxy, s, 'cl');
      expect(await c.evalsha(sha, 1, key, `e${s}`)).toBe('OK');
      expect(await c.fcall('km_get', 1, key)).toBe(`e${s}`);
    }
    expect(await c.script('EXISTS', sha, 'nope')).toEqual([1, 0]);
    // A script first run with EVAL on one master is loaded on the others too.
    const evalBody = "return 'cluster-shared'";
    expect(await c.eval(evalBody, 1, keyOn(proxy, 1, 'cl-ev'))).toBe('cluster-shared');
    expect(await c.script('EXISTS', sha1(evalBody))).toEqual([1]);
    for (const m of masters) expect(await redisCommand(m.port, 'SCRIPT', 'EXISTS', sha1(evalBody))).toEqual([1]);
    // A keyless script runs on the master of slot 0 (it says which port it runs on).
    const info = (await c.eval("return redis.call('INFO', 'server')", 0)) as string;
    const owner0 = proxy.topology.shards[proxy.topology.router.shardOfGroup(0)];
    expect(/tcp_port:(\d+)/.exec(info)?.[1]).toBe(String(owner0.config.port));
    expect(await c.call('FUNCTION', 'FLUSH')).toBe('OK');
    expect(await c.script('FLUSH')).toBe('OK');
    for (const m of masters) expect(await redisCommand(m.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
    await expect(c.call('EVAL', 'return 1', '-1')).rejects.toThrow("ERR Number of keys can't be negative");
  });

  it('a master added later gets the scripts and functions before it serves EVALSHA and FCALL', async () => {
    const sha = (await c.script('LOAD', SET_SCRIPT)) as string;
    expect(await c.call('FUNCTION', 'LOAD', LIB)).toBe('kmlib');
    const added = await cluster.addMaster();
    expect(await redisCommand(added.port, 'SCRIPT', 'EXISTS', sha)).toEqual([0]);
    const from = cluster.masters().find((m) => m.id !== added.id)!;
    await cluster.reshard(from.id, added.id, 200);
    const ranges = (await cluster.slotRanges()).get(added.id)!;
    const key = Array.from({ length: 100_000 }, (_, i) => `grown:${i}`).find((k) => {
      const slot = proxy.topology.router.slotFor(Buffer.from(k));
      return ranges.some(([a, b]) => slot >= a && slot <= b);
    })!;
    // keymux learns the move from the MOVED this very command gets, and re-sends it to the new master.
    expect(await c.evalsha(sha, 1, key, 'on-new-master')).toBe('OK');
    expect(await c.fcall('km_get', 1, key)).toBe('on-new-master');
    expect(await redisCommand(added.port, 'SCRIPT', 'EXISTS', sha)).toEqual([1]);
    expect(JSON.stringify(await redisCommand(added.port, 'FUNCTION', 'LIST'))).toContain('kmlib');
  }, 120_000);
});
