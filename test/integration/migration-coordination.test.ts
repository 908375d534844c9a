/**
 * One worker's side of a coordinated key migration (workers > 1), in process with a stand-in for the primary
 * (the Proxy's migrationLink), on real redis-servers:
 * - leader: after the reload it fences and holds requests for keys in motion, but moves nothing until the
 *   primary's go (releaseMigration), even though its own fence is complete; then it moves and scans, and reports
 *   the scan's end (onScanned) with the migration's number;
 * - follower: opens no connection of its own and scans nothing; a request for a key in motion asks the leader
 *   (remoteMove) and waits for its answer; once the primary says the migration is done it routes by the new
 *   placement alone; told that worker 1 handed the migration over to a chained one it does not have yet, it asks
 *   again, and its request goes through the chained one once it has it;
 * - abort (a rollback before go): held requests are answered from where the keys still are; nothing moved.
 * keymux's warnings are kept (logLines): a follower that answers TRYAGAIN says so in its own log.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, RawClient, type ConfigObject } from '../support/keymux.js';
import { Proxy, type MigrationLink } from '../../src/proxy.js';
import type { MoveResult } from '../../src/migration/migration.js';
import { keySlot } from '../../src/routing/crc16.js';
import { setRootLogger } from '../../src/log.js';
import { pino } from 'pino';

const logLines: Array<Record<string, unknown>> = [];
setRootLogger(pino({ level: 'warn' }, { write: (line: string) => void logLines.push(JSON.parse(line)) }));

let a: RedisProcess, b: RedisProcess, c: RedisProcess, d: RedisProcess;

beforeAll(async () => {
  [a, b, c, d] = await Promise.all([startRedis(), startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop(), d?.stop()]);
});
beforeEach(async () => {
  await Promise.all([a, b, c, d].map((s) => redisCommands(s.port, [['FLUSHALL']])));
});

/** a owns 0-8191 (or `low` does), b the rest. */
function layout(low: RedisProcess): ConfigObject {
  return {
    mode: 'slots',
    workers: 1,
    log: { level: 'warn' }, // into logLines, not the test's output
    migration: { enabled: true },
    shards: [
      { name: 'low', address: low.address, slots: ['0-8191'] },
      { name: 'high', address: b.address, slots: ['8192-16383'] },
    ],
  };
}

/** `n` keys whose slots are in 0..8191 (they move when `low` changes), and one in b's half. */
function keys(n: number): { low: string[]; high: string } {
  const low: string[] = [];
  for (let i = 0; low.length < n; i++) if (keySlot(Buffer.from(`ck:${i}`)) < 8192) low.push(`ck:${i}`);
  let high = 'hk:0';
  for (let i = 0; keySlot(Buffer.from(high)) < 8192; i++) high = `hk:${i}`;
  return { low, high };
}

interface Link extends MigrationLink {
  scanned: number[];
  asked: Array<{ id: number; keys: string[]; done: (result: MoveResult) => void }>;
}

function link(leader: boolean): Link {
  const l: Link = {
    leader,
    scanned: [],
    asked: [],
    remoteMove(id, ks, done) {
      l.asked.push({ id, keys: ks.map((k) => k.toString()), done });
    },
    onScanned(id) {
      l.scanned.push(id);
    },
    remotePause(quiet) {
      quiet(() => undefined); // these tests send no command to every shard while keys move
    },
  };
  return l;
}

/** A worker in process (worker 1 or another) on layout(a), with `n` keys of a's half written through it as `v:<key>`. */
async function worker(leader: boolean, n: number) {
  const l = link(leader);
  const proxy = await Proxy.start(configFrom(layout(a)), { migrationLink: l, joinMigration: null });
  const { low, high } = keys(n);
  const client = new Redis({ port: proxy.port, lazyConnect: true });
  await client.connect();
  for (const k of low) await client.set(k, `v:${k}`);
  return { l, proxy, client, low, high };
}

async function dbsize(s: RedisProcess): Promise<number> {
  return (await redisCommand(s.port, 'DBSIZE')) as number;
}

describe('a coordinated migration, one worker', () => {
  it('leader: holds keys in motion after its fence and moves nothing until the go; then moves and reports', async () => {
    const { l, proxy, client, low, high } = await worker(true, 50);
    await client.set(high, 'high');
    expect(await proxy.reloadAsync(configFrom(layout(c)), { migrationId: 41 })).toBe(null);
    await proxy.migrationFenced(41);
    // One read from a raw client: a key that does not move (answered) and one that does (held).
    const raw = await RawClient.connect(proxy.port);
    const first = await raw.exchange(`GET ${high}\r\nGET ${low[0]}\r\n`, 1);
    expect(first).toEqual(['high']);
    expect(await dbsize(c)).toBe(0);
    expect(await dbsize(a)).toBe(50);
    expect(proxy.migrationProgress().at(-1)).toMatchObject({ id: 41, state: 'fencing' });
    proxy.releaseMigration(41);
    await raw.untilText(`v:${low[0]}`);
    expect(await client.get(low[1]!)).toBe(`v:${low[1]}`);
    await until(() => l.scanned.length > 0);
    expect(l.scanned).toEqual([41]);
    expect(await dbsize(c)).toBe(50);
    expect(await dbsize(a)).toBe(0);
    // Another worker's keys (through the primary): already moved, so true at once; an unknown migration: false.
    expect(await proxy.moveForWorker(41, [Buffer.from(low[2]!)])).toBe(true);
    expect(await proxy.moveForWorker(40, [Buffer.from(low[2]!)])).toBe(false);
    expect(l.asked).toEqual([]);
    raw.close();
    client.disconnect();
    await proxy.close();
  });

  it('follower: asks the leader for keys in motion, scans nothing, and trusts the done', async () => {
    const { l, proxy, client, low } = await worker(false, 20);
    expect(await proxy.reloadAsync(configFrom(layout(c)), { migrationId: 7 })).toBe(null);
    await proxy.migrationFenced(7);
    proxy.releaseMigration(7);
    const pending = client.mget(low[0]!, low[1]!);
    await until(() => l.asked.length > 0);
    expect(l.asked.map((x) => [x.id, x.keys.sort()])).toEqual([[7, [low[0], low[1]].sort()]]);
    // The follower itself moved nothing: what the leader would do, done here by hand.
    expect(await dbsize(c)).toBe(0);
    expect(
      await redisCommand(a.port, 'MIGRATE', '127.0.0.1', String(c.port), '', '0', '5000', 'KEYS', low[0]!, low[1]!),
    ).toBe('OK');
    l.asked[0]!.done(true);
    expect(await pending).toEqual([`v:${low[0]}`, `v:${low[1]}`]);
    // Moved keys are not asked for again.
    expect(await client.get(low[0]!)).toBe(`v:${low[0]}`);
    expect(l.asked).toHaveLength(1);
    // The leader could not move a key: the client gets an error, not a read of the wrong shard.
    const failed = client.get(low[2]!);
    await until(() => l.asked.length > 1);
    logLines.length = 0;
    l.asked[1]!.done(false);
    await expect(failed).rejects.toThrow(/^TRYAGAIN keymux: the key is being mov/);
    // ... and says so in its own log (worker 1's log has the MIGRATE error): before, this worker logged nothing.
    expect(logLines.map((x) => [x.msg, x.migration, x.keys, x.role])).toEqual([
      [
        'keys this worker asked worker 1 to move were not moved; the requests waiting for them get TRYAGAIN',
        7,
        1,
        'follower',
      ],
    ]);
    // The primary says done: routed by the new placement alone, no more asking (a key left on a is not looked for).
    proxy.endMigration(7);
    expect(proxy.migrationProgress().at(-1)).toMatchObject({ id: 7, state: 'done' });
    expect(await client.get(low[3]!)).toBe(null);
    expect(l.asked).toHaveLength(2);
    expect(l.scanned).toEqual([]);
    client.disconnect();
    await proxy.close();
  });

  it('follower: a move answered "superseded" waits for the chained migration, never reads the old placement', async () => {
    const { l, proxy, client, low } = await worker(false, 5);
    expect(await proxy.reloadAsync(configFrom(layout(c)), { migrationId: 21 })).toBe(null);
    await proxy.migrationFenced(21);
    proxy.releaseMigration(21);
    const pending = client.get(low[0]!);
    await until(() => l.asked.length > 0);
    // Worker 1 already runs migration 22, chained to 21; this worker does not have it yet: it asks again.
    l.asked[0]!.done('superseded');
    await until(() => l.asked.length > 1);
    expect(l.asked[1]!.id).toBe(21);
    expect(await dbsize(c)).toBe(0); // the key is still on a: routed to c now, the GET would read nothing
    expect(await proxy.reloadAsync(configFrom(layout(d)), { migrationId: 22 })).toBe(null);
    l.asked[1]!.done('superseded'); // now this worker has 22 too: the GET goes through it
    await proxy.migrationFenced(22);
    proxy.releaseMigration(22);
    await until(() => l.asked.some((x) => x.id === 22));
    // What worker 1 would do for migration 22: the key from where it is (a) to its owner in 22 (d).
    expect(await redisCommand(a.port, 'MIGRATE', '127.0.0.1', String(d.port), low[0]!, '0', '5000')).toBe('OK');
    l.asked.find((x) => x.id === 22)!.done(true);
    expect(await pending).toBe(`v:${low[0]}`);
    client.disconnect();
    await proxy.close();
  });

  it('abort before the go: held requests are answered from where the keys are; nothing moved', async () => {
    const { l, proxy, client, low, high } = await worker(true, 10);
    expect(await proxy.reloadAsync(configFrom(layout(c)), { migrationId: 3 })).toBe(null);
    await proxy.migrationFenced(3);
    const raw = await RawClient.connect(proxy.port);
    expect(await raw.exchange(`GET ${high}\r\nGET ${low[0]}\r\n`, 1)).toEqual([null]);
    expect(await proxy.reloadAsync(configFrom(layout(a)), { abortMigration: 3 })).toBe(null);
    await raw.untilText(`v:${low[0]}`);
    expect(proxy.migrationProgress().at(-1)).toMatchObject({ id: 3, state: 'aborted' });
    expect(await client.get(low[1]!)).toBe(`v:${low[1]}`);
    expect(await dbsize(c)).toBe(0);
    expect(await dbsize(a)).toBe(10);
    expect(l.scanned).toEqual([]);
    raw.close();
    client.disconnect();
    await proxy.close();
  });

  it('abort of a migration chained to a running one: the running one goes on and finishes', async () => {
    const { l, proxy, client, low } = await worker(true, 30);
    // c takes writes again in 1.5 s: the first migration's MIGRATEs into c wait, so it is still running below.
    expect(await redisCommand(c.port, 'CLIENT', 'PAUSE', '1500', 'WRITE')).toBe('OK');
    expect(await proxy.reloadAsync(configFrom(layout(c)), { migrationId: 11 })).toBe(null);
    await proxy.migrationFenced(11);
    proxy.releaseMigration(11);
    expect(await proxy.reloadAsync(configFrom(layout(d)), { migrationId: 12 })).toBe(null);
    expect(proxy.migrationProgress().map((m) => [m.id, m.state])).toEqual([
      [11, 'superseded'],
      [12, 'fencing'],
    ]);
    expect(await proxy.reloadAsync(configFrom(layout(c)), { abortMigration: 12 })).toBe(null);
    await until(() => l.scanned.includes(11), 20_000);
    expect(l.scanned).toEqual([11]);
    expect(await dbsize(c)).toBe(30);
    expect(await dbsize(a)).toBe(0);
    expect(await dbsize(d)).toBe(0);
    for (const k of low) expect(await client.get(k)).toBe(`v:${k}`);
    client.disconnect();
    await proxy.close();
  });
});

/** Resolves once `cond()` holds (checked on each turn of the event loop; bounded). */
async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setImmediate(r));
  }
}
