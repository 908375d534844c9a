// Every dispatch kind end to end through keymux with ioredis against real redis-servers: keyed commands of every
// data type, multi-key fan-out compared with reading the backends directly, broadcast commands, local commands,
// and CROSSSLOT refusals for multi-key commands that cannot be split.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig, RawClient } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';
import { keySlot } from '../../src/routing/crc16.js';

let backends: RedisProcess[];
let proxy: Proxy;
let r: Redis;

/** Index of the backend owning `key` under slotsConfig's even split of 3 shards. */
function ownerOf(key: string): number {
  const per = Math.floor(16384 / 3);
  return Math.min(2, Math.floor(keySlot(Buffer.from(key)) / per));
}

/** Keys that land on three different shards. */
function keysOnDistinctShards(prefix: string): string[] {
  const found: string[] = [];
  const seen = new Set<number>();
  for (let i = 0; found.length < 3; i++) {
    const k = `${prefix}${i}`;
    const o = ownerOf(k);
    if (!seen.has(o)) {
      seen.add(o);
      found.push(k);
    }
  }
  return found;
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(slotsConfig(backends.map((b) => b.port)));
  r = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
});

afterAll(async () => {
  r?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('keyed commands reach the owner of their key', () => {
  it('strings, counters, expiry', async () => {
    expect(await r.set('d:str', 'v', 'EX', 100)).toBe('OK');
    expect(await r.get('d:str')).toBe('v');
    expect(await r.ttl('d:str')).toBeGreaterThan(90);
    expect(await r.incrby('d:cnt', 5)).toBe(5);
    expect(await r.append('d:str', 'w')).toBe(2);
    expect(await r.getrange('d:str', 0, 0)).toBe('v');
    expect(await redisCommand(backends[ownerOf('d:cnt')].port, 'GET', 'd:cnt')).toBe('5');
  });

  it('hashes, lists, sets, sorted sets, streams', async () => {
    await r.hset('d:h', 'f1', '1', 'f2', '2');
    expect(await r.hgetall('d:h')).toEqual({ f1: '1', f2: '2' });
    await r.rpush('d:l', 'a', 'b', 'c');
    expect(await r.lrange('d:l', 0, -1)).toEqual(['a', 'b', 'c']);
    await r.sadd('d:s', 'x', 'y');
    expect((await r.smembers('d:s')).sort()).toEqual(['x', 'y']);
    await r.zadd('d:z', 1, 'one', 2, 'two');
    expect(await r.zrange('d:z', 0, -1, 'WITHSCORES')).toEqual(['one', '1', 'two', '2']);
    const id = await r.xadd('d:x', '*', 'f', 'v');
    expect(await r.xlen('d:x')).toBe(1);
    expect(id).toMatch(/^\d+-\d+$/);
    for (const k of ['d:h', 'd:l', 'd:s', 'd:z', 'd:x']) {
      expect(await redisCommand(backends[ownerOf(k)].port, 'EXISTS', k)).toBe(1);
    }
  });

  it('multi-key commands on one shard (hash tags) work; across shards get CROSSSLOT', async () => {
    await r.set('{t}a', '1');
    expect(await r.rename('{t}a', '{t}b')).toBe('OK');
    expect(await r.get('{t}b')).toBe('1');
    await r.sadd('{t}s1', 'a', 'b');
    await r.sadd('{t}s2', 'b', 'c');
    expect(await r.sunionstore('{t}s3', '{t}s1', '{t}s2')).toBe(3);
    expect(await r.eval("return redis.call('GET', KEYS[1])", 1, '{t}b')).toBe('1');
    const [a, b] = keysOnDistinctShards('xs:');
    await r.set(a, '1');
    await expect(r.rename(a, b)).rejects.toThrow(/^CROSSSLOT Keys in request don't hash to the same slot/);
    await expect(r.sunionstore(a, a, b)).rejects.toThrow(/CROSSSLOT/);
    await expect(r.msetnx(a, '1', b, '2')).rejects.toThrow(/CROSSSLOT/);
    await expect(r.eval('return 1', 2, a, b)).rejects.toThrow(/CROSSSLOT/);
    expect(await r.eval('return 1', 0)).toBe(1); // no key: the keyless shard runs it (scripts.test.ts)
  });

  it('passes backend errors through unchanged', async () => {
    await r.set('d:notalist', 'x');
    await expect(r.lpush('d:notalist', 'y')).rejects.toThrow(
      /^WRONGTYPE Operation against a key holding the wrong kind of value/,
    );
  });
});

describe('fan-out commands are split per shard and reassembled in key order', () => {
  it('MGET in client order with duplicates and missing keys, as the backends hold them', async () => {
    const keys = Array.from({ length: 60 }, (_, i) => `mg:${i}`);
    for (let i = 0; i < keys.length; i += 2)
      await redisCommand(backends[ownerOf(keys[i])].port, 'SET', keys[i], `v${i}`);
    const ask = [...keys, keys[4], keys[1], keys[4]];
    const expected = ask.map((k) => (Number(k.split(':')[1]) % 2 === 0 ? `v${k.split(':')[1]}` : null));
    expect(await r.mget(...ask)).toEqual(expected);
  });

  it('MSET writes every pair to its owner', async () => {
    const args: string[] = [];
    for (let i = 0; i < 30; i++) args.push(`ms:${i}`, `val${i}`);
    expect(await r.mset(...args)).toBe('OK');
    for (let i = 0; i < 30; i++)
      expect(await redisCommand(backends[ownerOf(`ms:${i}`)].port, 'GET', `ms:${i}`)).toBe(`val${i}`);
  });

  it('DEL, UNLINK, EXISTS, TOUCH sum per-shard counts (duplicates counted as Redis does)', async () => {
    const ks = keysOnDistinctShards('cnt:');
    await r.mset(ks[0], '1', ks[1], '2', ks[2], '3');
    expect(await r.exists(ks[0], ks[1], ks[2], 'cnt:none', ks[0])).toBe(4);
    expect(await r.touch(ks[0], ks[1], ks[2], 'cnt:none')).toBe(3);
    expect(await r.unlink(ks[0], 'cnt:none')).toBe(1);
    expect(await r.del(ks[0], ks[1], ks[2])).toBe(2);
    for (const k of ks) for (const b of backends) expect(await redisCommand(b.port, 'EXISTS', k)).toBe(0);
  });

  it('MSET with an odd number of arguments is an arity error', async () => {
    const c = await RawClient.connect(proxy.port);
    c.write('*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n');
    expect(await c.untilText('\r\n')).toBe("-ERR wrong number of arguments for 'mset' command\r\n");
    c.close();
  });
});

describe('broadcast commands', () => {
  it('DBSIZE sums the shards, INFO aggregates the keyspace, FLUSHDB ASYNC empties every shard', async () => {
    const sizes = await Promise.all(backends.map((b) => redisCommand(b.port, 'DBSIZE') as Promise<number>));
    const total = sizes.reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThan(0);
    expect(await r.dbsize()).toBe(total);
    const info = await r.info('keyspace');
    expect(info).toContain(`db0:keys=${total},`);
    const all = await r.info();
    expect(all).toMatch(/# Keymux\r\nmode:slots/);
    expect(all).toContain('shards_up:3');
    expect(await r.call('FLUSHDB', 'ASYNC')).toBe('OK');
    // FLUSHDB ASYNC returns at once; the keyspace is emptied immediately for new reads.
    for (const b of backends) expect(await redisCommand(b.port, 'DBSIZE')).toBe(0);
    expect(await r.dbsize()).toBe(0);
  });
});

describe('INFO stats, errorstats and commandstats', () => {
  it("sum the shards' own counters", async () => {
    await r.call('CONFIG', 'RESETSTAT').catch(() => undefined); // refused without the operator switch: fine
    const keys = ['is:a', 'is:b', 'is:c', 'is:d', 'is:e', 'is:f'];
    for (const k of keys) {
      await r.set(k, 'x');
      await r.incr(k).catch(() => undefined); // ERR value is not an integer, on the key's shard
    }
    const field = (text: string, re: RegExp): number => Number(re.exec(text)?.[1] ?? 0);
    const direct = await Promise.all(
      backends.map(async (b) => ({
        errors: String(await redisCommand(b.port, 'INFO', 'errorstats')),
        commands: String(await redisCommand(b.port, 'INFO', 'commandstats')),
        stats: String(await redisCommand(b.port, 'INFO', 'stats')),
      })),
    );
    const errors = await r.info('errorstats');
    const sum = (pick: (d: (typeof direct)[number]) => number): number => direct.reduce((a, d) => a + pick(d), 0);
    expect(field(errors, /errorstat_ERR:count=(\d+)/)).toBe(sum((d) => field(d.errors, /errorstat_ERR:count=(\d+)/)));
    expect(field(errors, /errorstat_ERR:count=(\d+)/)).toBeGreaterThanOrEqual(keys.length);
    const commands = await r.info('commandstats');
    const incr = /cmdstat_incr:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+),rejected_calls=(\d+),failed_calls=(\d+)/;
    const m = incr.exec(commands);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBe(sum((d) => field(d.commands, /cmdstat_incr:calls=(\d+)/)));
    expect(Number(m![5])).toBe(sum((d) => field(d.commands, /cmdstat_incr:calls=\d+,.*failed_calls=(\d+)/)));
    expect(Number(m![3])).toBeCloseTo(Number(m![2]) / Number(m![1]), 1);
    const stats = await r.info('stats');
    // Counters that INFO itself does not move: summed exactly.
    expect(field(stats, /total_error_replies:(\d+)/)).toBe(sum((d) => field(d.stats, /total_error_replies:(\d+)/)));
    expect(stats).not.toMatch(/_perc:/);
    // The default INFO has stats and errorstats, not commandstats (as Redis); INFO all has it.
    const dflt = await r.info();
    expect(dflt).toContain('# Errorstats');
    expect(dflt).not.toContain('# Commandstats');
    expect(await r.info('all')).toContain('# Commandstats');
  });

  it('INFO memory: byte counts summed, cached scripts as every shard has them, ratios left out', async () => {
    await r.script('FLUSH');
    for (let i = 0; i < 5; i++) await r.script('LOAD', `return ${i}`);
    await redisCommand(backends[1].port, 'SCRIPT', 'LOAD', 'return "only on one shard"');
    const field = (text: string, name: string): string | undefined =>
      new RegExp(`^${name}:(.*)$`, 'm').exec(text)?.[1]?.trim();
    const memory = await r.info('memory');
    expect(memory).toMatch(/^# Memory\r\n/);
    expect(field(memory, 'number_of_cached_scripts')).toBe('5');
    expect(field(memory, 'maxmemory_policy')).toBe('noeviction');
    expect(memory).not.toMatch(/_ratio:/);
    // used_memory moves with every command; maxmemory does not: summed exactly, with its _human form.
    const direct = await Promise.all(backends.map(async (b) => String(await redisCommand(b.port, 'INFO', 'memory'))));
    const max = direct.reduce((a, d) => a + Number(field(d, 'maxmemory')), 0);
    expect(field(memory, 'maxmemory')).toBe(String(max));
    const used = Number(field(memory, 'used_memory'));
    const usedDirect = direct.reduce((a, d) => a + Number(field(d, 'used_memory')), 0);
    expect(used).toBeGreaterThan(usedDirect * 0.5);
    expect(used).toBeLessThan(usedDirect * 1.5);
    expect(field(memory, 'used_memory_human')).toMatch(/^\d+\.\d\d[KMG]$/);
    expect(await r.info()).toContain('# Memory');
    await r.script('FLUSH');
  });
});

describe('XREADGROUP with a group or consumer named "streams"', () => {
  it('is routed by its stream, not by the name (Redis 7.0 key spec would take the name)', async () => {
    let q = 'xq0';
    for (let i = 1; ownerOf(q) === ownerOf('STREAMS') || ownerOf(q) === ownerOf('c'); i++) q = `xq${i}`;
    await r.xadd(q, '1-1', 'f', 'v');
    await r.xgroup('CREATE', q, 'g', '0');
    await r.xgroup('CREATE', q, 'streams', '0');
    const entry = [[q, [['1-1', ['f', 'v']]]]];
    expect(await r.call('XREADGROUP', 'NOACK', 'GROUP', 'g', 'streams', 'STREAMS', q, '>')).toEqual(entry);
    expect(await r.call('XREADGROUP', 'COUNT', '1', 'GROUP', 'streams', 'c', 'STREAMS', q, '>')).toEqual(entry);
    // With BLOCK it takes the blocking path (a leased connection to the stream's shard): the entry is there.
    await r.xgroup('CREATE', q, 'g2', '0');
    expect(await r.call('XREADGROUP', 'BLOCK', '0', 'GROUP', 'g2', 'streams', 'STREAMS', q, '>')).toEqual(entry);
  });
});

describe('local commands', () => {
  it('PING, ECHO, SELECT, CLIENT, COMMAND, HELLO', async () => {
    expect(await r.ping()).toBe('PONG');
    expect(await r.ping('hi')).toBe('hi');
    expect(await r.echo('e')).toBe('e');
    expect(await r.select(0)).toBe('OK');
    await expect(r.select(1)).rejects.toThrow(/only database 0/);
    expect(await r.client('SETNAME', 'tester')).toBe('OK');
    expect(await r.client('GETNAME')).toBe('tester');
    expect(typeof (await r.client('ID'))).toBe('number');
    expect(await r.call('CLIENT', 'SETINFO', 'LIB-NAME', 'x')).toBe('OK');
    const count = (await r.call('COMMAND', 'COUNT')) as number;
    expect(count).toBeGreaterThan(100);
    const [get] = (await r.command('INFO', 'get')) as Array<[string, number, string[], number, number, number]>;
    expect(get.slice(0, 6)).toEqual(['get', 2, expect.arrayContaining(['readonly']), 1, 1, 1]);
    expect(await r.call('COMMAND', 'GETKEYS', 'MSET', 'a', '1', 'b', '2')).toEqual(['a', 'b']);
    // As the server states them (a shard answers): flags per key, and an empty list for a script of no keys.
    expect(await r.call('COMMAND', 'GETKEYSANDFLAGS', 'LMOVE', 'a', 'b', 'LEFT', 'LEFT')).toEqual([
      ['a', ['RW', 'access', 'delete']],
      ['b', ['RW', 'insert']],
    ]);
    expect(await r.call('COMMAND', 'GETKEYS', 'EVAL', 'return 1', '0')).toEqual([]);
    const list = (await r.call('COMMAND', 'LIST')) as string[];
    expect(list).toEqual(expect.arrayContaining(['get', 'client|list', 'config|get']));
    expect(await r.call('COMMAND', 'LIST', 'FILTERBY', 'PATTERN', 'XINFO*')).toEqual([
      'xinfo',
      'xinfo|consumers',
      'xinfo|groups',
      'xinfo|help',
      'xinfo|stream',
    ]);
    const scripting = (await r.call('COMMAND', 'LIST', 'FILTERBY', 'ACLCAT', 'scripting')) as string[];
    expect(scripting).toEqual(expect.arrayContaining(['eval', 'script|kill']));
    expect(scripting).not.toContain('set');
    expect(await r.call('COMMAND', 'LIST', 'FILTERBY', 'MODULE', 'x')).toEqual([]);
    await expect(r.call('COMMAND', 'LIST', 'bad')).rejects.toThrow(/^ERR syntax error/);
    // HELP texts are the server's (as for OBJECT HELP): one shard answers.
    expect(((await r.call('COMMAND', 'HELP')) as string[])[0]).toMatch(/^COMMAND <subcommand>/);
    expect(((await r.call('CLIENT', 'HELP')) as string[])[0]).toMatch(/^CLIENT <subcommand>/);
    await expect(r.select(1000)).rejects.toThrow(/DB index is out of range/);
    // keymux's own CPU, and the shards' persistence and replication offset combined.
    const info = (await r.call('INFO', 'cpu', 'persistence', 'replication')) as string;
    expect(info).toMatch(/^# Persistence\r\nloading:0\r\n/);
    expect(info).toMatch(/\r\nrdb_changes_since_last_save:\d+\r\n/);
    expect(info).toMatch(/\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:\d+/);
    expect(info).toMatch(/\r\n# CPU\r\nused_cpu_sys:\d+\.\d{6}\r\nused_cpu_user:\d+\.\d{6}\r\n/);
    const before = Number(/rdb_changes_since_last_save:(\d+)/.exec(info)?.[1]);
    await r.mset('{a}1', 'x', '{b}1', 'y', '{c}1', 'z');
    const after = (await r.call('INFO', 'persistence')) as string;
    expect(Number(/rdb_changes_since_last_save:(\d+)/.exec(after)?.[1])).toBe(before + 3);
    const hello = (await r.call('HELLO', '2')) as unknown[];
    expect(hello.slice(0, 2)).toEqual(['server', 'redis']);
    await expect(r.call('HELLO', '4')).rejects.toThrow(/^NOPROTO/);
  });

  it('QUIT answers +OK and closes', async () => {
    const c = await RawClient.connect(proxy.port);
    c.write('PING\r\nQUIT\r\nPING\r\n');
    expect(await c.untilClosed()).toBe('+PONG\r\n+OK\r\n');
  });
});
