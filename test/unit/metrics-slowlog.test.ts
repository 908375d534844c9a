/**
 * The slow log (src/metrics/slowlog.ts) and its threshold check in the Observer, without a server and without
 * the wall clock (requests get a made-up start time): what an entry holds (command, shards, latency, time, argument
 * count; keys only with log_keys, never values), the ring's size and order, reconfiguring, and turning it off.
 */
import { describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import { SlowLog } from '../../src/metrics/slowlog.js';
import { Observer } from '../../src/metrics/observer.js';
import { ShardStats, StatsRegistry } from '../../src/metrics/stats.js';
import { Request } from '../../src/core/request.js';
import { Fragment } from '../../src/core/fragment.js';
import { CommandTable } from '../../src/commands/table.js';
import { DEFAULTS, type MetricsConfig } from '../../src/config/schema.js';
import { idleOwner } from '../support/owner.js';

const table = CommandTable.builtin();
const owner = idleOwner();

/** A request for `args` that started `ageMs` ago, answered with `reply`, sent to `shard`. */
function request(
  args: string[],
  ageMs: number,
  reply = '+OK\r\n',
  shard: ShardStats | null = new ShardStats('a', 'h:1'),
): Request {
  const bufs = args.map((a) => Buffer.from(a));
  const req = new Request(owner, Buffer.alloc(0), bufs, performance.now() - ageMs, 0);
  req.spec = table.get(args[0].toLowerCase()) ?? null;
  req.shardStats = shard;
  req.reply = Buffer.from(reply);
  return req;
}

const config = (slowlog: Partial<MetricsConfig['slowlog']>): MetricsConfig => ({
  ...DEFAULTS.metrics,
  hotKeys: { ...DEFAULTS.metrics.hotKeys, enabled: false },
  slowlog: { ...DEFAULTS.metrics.slowlog, ...slowlog },
});

describe('SlowLog', () => {
  it('records name, shards, latency, time and argument count; no keys unless asked; never values', () => {
    const log = new SlowLog({ thresholdMs: 0, maxEntries: 4, logKeys: false });
    const before = Date.now();
    log.record(request(['SET', 'user:1', 'secret-value'], 0), 'set', 0.0123);
    const [e] = log.entries();
    expect(e).toMatchObject({ id: 1, command: 'set', shards: ['a'], latencyMs: 12.3, args: 2, keys: null });
    expect(e.time).toBeGreaterThanOrEqual(before);
    expect(JSON.stringify(e)).not.toContain('secret-value');
    expect(JSON.stringify(e)).not.toContain('user:1');
  });

  it('with log_keys, records the keys (not the values), cut to a bounded size', () => {
    const log = new SlowLog({ thresholdMs: 0, maxEntries: 4, logKeys: true });
    log.record(request(['MSET', 'k1', 'v1', 'k2', 'v2'], 0), 'mset', 0.02);
    log.record(request(['GET', 'x'.repeat(1000)], 0), 'get', 0.02);
    const [long, mset] = log.entries();
    expect(mset.keys).toEqual(['k1', 'k2']);
    expect(long.keys![0].length).toBeLessThan(300);
  });

  it('names every shard of a split command once', () => {
    const log = new SlowLog({ thresholdMs: 0, maxEntries: 4, logKeys: false });
    const req = request(['MGET', 'a', 'b', 'c'], 0, '*0\r\n', null);
    const sa = new ShardStats('a', 'h:1');
    const sb = new ShardStats('b', 'h:2');
    req.fragments = [sa, sb, sa].map((st, i) => {
      const f = new Fragment(req, i, [i], Buffer.alloc(0), () => Buffer.alloc(0), i);
      f.shardStats = st;
      return f;
    });
    log.record(req, 'mget', 0.5);
    expect(log.entries()[0].shards).toEqual(['a', 'b']);
  });

  it('keeps the newest max_entries, newest first; limit cuts the list', () => {
    const log = new SlowLog({ thresholdMs: 0, maxEntries: 3, logKeys: false });
    for (let i = 0; i < 5; i++) log.record(request(['GET', `k${i}`], 0), 'get', i / 1000);
    expect(log.entries().map((e) => e.id)).toEqual([5, 4, 3]);
    expect(log.entries(2).map((e) => e.id)).toEqual([5, 4]);
    log.configure({ thresholdMs: 0, maxEntries: 2, logKeys: false });
    expect(log.entries().map((e) => e.id)).toEqual([5, 4]);
    log.configure({ thresholdMs: 0, maxEntries: 10, logKeys: false });
    log.record(request(['GET', 'k'], 0), 'get', 0.001);
    expect(log.entries().map((e) => e.id)).toEqual([6, 5, 4]);
    log.reset();
    expect(log.entries()).toEqual([]);
  });

  it('max_entries 0 turns it off', () => {
    const log = new SlowLog({ thresholdMs: 0, maxEntries: 0, logKeys: false });
    expect(log.thresholdSeconds).toBe(Infinity);
    log.record(request(['GET', 'k'], 0), 'get', 1);
    expect(log.entries()).toEqual([]);
  });
});

describe('the Observer and the threshold', () => {
  it('logs replies at or above the threshold and counts them per command, with one clock read per turn', () => {
    const stats = new StatsRegistry();
    const obs = new Observer(stats, config({ thresholdMs: 10_000 }));
    obs.onReplied(request(['GET', 'fast'], 0, '$-1\r\n'));
    obs.onReplied(request(['GET', 'slow'], 60_000, '$-1\r\n')); // started a minute "ago"
    expect(stats.command('get').count).toBe(2); // recorded at once (the clock is read once for the turn)
    obs.flush();
    expect(obs.slowlog.entries().map((e) => e.command)).toEqual(['get']);
    // The clock was read at the turn's first reply, a moment before the second request object was made.
    expect(obs.slowlog.entries()[0].latencyMs).toBeGreaterThan(59_000);
    expect(obs.slowlog.entries()[0].latencyMs).toBeLessThanOrEqual(60_000);
    expect(stats.command('get')).toMatchObject({ count: 2, slow: 1, errors: 0 });
  });

  it('threshold 0 logs every command; metrics off logs and counts nothing', () => {
    const stats = new StatsRegistry();
    const obs = new Observer(stats, config({ thresholdMs: 0 }));
    obs.onReplied(request(['PING'], 0, '+PONG\r\n', null));
    obs.flush();
    expect(obs.slowlog.entries()[0]).toMatchObject({ command: 'ping', shards: ['a'].slice(1) });
    obs.configure({ ...config({ thresholdMs: 0 }), enabled: false });
    obs.onReplied(request(['GET', 'k'], 0));
    obs.flush();
    expect(obs.slowlog.entries().length).toBe(1);
    expect(stats.commands.has('get')).toBe(false);
  });

  it('counts unknown commands under one name, and error replies as errors', () => {
    const stats = new StatsRegistry();
    const obs = new Observer(stats, config({ thresholdMs: 1000 }));
    obs.onReplied(request(['NOSUCHCMD'], 0, '-ERR unknown command\r\n', null));
    obs.onReplied(request(['ANOTHER'], 0, '-ERR unknown command\r\n', null));
    obs.flush();
    expect(stats.command('unknown')).toMatchObject({ count: 2, errors: 2 });
    expect([...stats.commands.keys()]).toEqual(['unknown']);
  });
});
