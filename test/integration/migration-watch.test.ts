/**
 * Transactions across a reload that moves keys (live key migration, slots mode): a transaction whose WATCH or
 * queued commands were taken under one topology must not run on a node that no longer owns its keys. With WATCH it
 * is aborted as a failed WATCH is (EXEC answers a null reply: the watch of a key that did not exist is not touched
 * by the move, so the old owner would run it and keymux would no longer read what it wrote); a retry runs on the
 * new owner. Without WATCH it goes to its keys' new owner. A reload that leaves its keys where they were (even one
 * that gives their shard another place in the list) changes nothing. A transaction already on its way to the old
 * owner when the reload comes runs there first: the migration's fence waits for it, then moves what it wrote; so
 * does an isolated script (commands.scripts: isolated) on its own session connection.
 * Real redis-server shards, ioredis and raw RESP clients, an in-process keymux.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, configFrom } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { keySlot } from '../../src/routing/crc16.js';
import { Proxy } from '../../src/proxy.js';
import { Gate } from '../support/gate.js';

let a: RedisProcess;
let b: RedisProcess;
let c: RedisProcess;
const open: Array<{ close(): unknown }> = [];

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
  await Promise.all([a, b, c].map((s) => redisCommand(s.port, 'FLUSHALL')));
});
afterAll(async () => {
  await Promise.all([a, b, c].map((s) => s.stop()));
});

/** Two shards, `low` owning slots 0-`split` and `high` the rest (listed first when `highFirst`). */
function layout(low: string, high: string, split = 8191, highFirst = false) {
  const shards = [
    { name: 'low', address: low, slots: [`0-${split}`] },
    { name: 'high', address: high, slots: [`${split + 1}-16383`] },
  ];
  return configFrom({
    mode: 'slots',
    log: { level: 'silent' },
    migration: { enabled: true },
    shards: highFirst ? shards.reverse() : shards,
  });
}

/** A key whose slot is in [from, to]. */
function keyIn(prefix: string, from: number, to: number): string {
  for (let i = 0; ; i++) {
    const slot = keySlot(Buffer.from(`${prefix}:${i}`));
    if (slot >= from && slot <= to) return `${prefix}:${i}`;
  }
}

async function start(config: ReturnType<typeof layout>): Promise<Proxy> {
  const proxy = await Proxy.start(config);
  open.push(proxy);
  return proxy;
}

async function client(proxy: Proxy): Promise<Redis> {
  const r = new Redis(proxy.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
  open.push({ close: () => r.disconnect() });
  return r;
}

const migrated = (proxy: Proxy): Promise<void> =>
  waitFor(() => proxy.migrationProgress().every((m) => m.state === 'done'), 'the migration to finish');

const cmd = (...args: string[]): string =>
  `*${args.length}\r\n${args.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')}`;

describe('WATCH across a reload that moves the watched key', () => {
  it('a key that did not exist: EXEC is aborted (null), nothing lands on the old owner; a retry lands on the new one', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('w', 0, 8191);
    const r = await client(proxy);
    expect(await r.watch(k)).toBe('OK');
    expect(await r.get(k)).toBeNull();
    expect(proxy.reload(layout(c.address, b.address))).toBeNull(); // low's slots, k's among them: a -> c
    expect(await r.multi().set(k, 'v').exec()).toBeNull();
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
    expect(await redisCommand(c.port, 'GET', k)).toBeNull();
    expect(await r.get(k)).toBeNull();

    // The retry is WATCHed under the new topology: it runs on the new owner.
    expect(await r.watch(k)).toBe('OK');
    expect(await r.get(k)).toBeNull();
    expect(await r.multi().set(k, 'v').exec()).toEqual([[null, 'OK']]);
    expect(await r.get(k)).toBe('v');
    expect(await redisCommand(c.port, 'GET', k)).toBe('v');
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
    expect(proxy.sessions.leasedTotal).toBe(0); // both transactions gave their lease back
  });

  it('RESP3: the aborted EXEC is a RESP3 null; the reload came between MULTI and EXEC', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('w3', 0, 8191);
    const raw = await RawClient.connect(proxy.port);
    open.push(raw);
    raw.write(cmd('HELLO', '3') + cmd('WATCH', k) + cmd('GET', k) + cmd('MULTI') + cmd('SET', k, 'v'));
    expect(await raw.untilText('+QUEUED\r\n')).toMatch(/\+OK\r\n_\r\n\+OK\r\n\+QUEUED\r\n$/); // WATCH GET MULTI SET
    expect(proxy.reload(layout(c.address, b.address))).toBeNull();
    const before = raw.data.length;
    raw.write(cmd('EXEC'));
    await raw.until((d) => d.subarray(before).includes('\r\n'));
    expect(raw.data.subarray(before).toString('latin1')).toBe('_\r\n');
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
    expect(await redisCommand(c.port, 'GET', k)).toBeNull();
  });

  it('a reload that leaves the watched key on its node (another shard changes, the list is reordered): EXEC runs', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('s', 0, 8191);
    const r = await client(proxy);
    expect(await r.watch(k)).toBe('OK');
    expect(await r.get(k)).toBeNull();
    // high moves to c, and is listed first: k's shard keeps its node but not its place in the list.
    expect(proxy.reload(layout(a.address, c.address, 8191, true))).toBeNull();
    expect(await r.multi().set(k, 'v').exec()).toEqual([[null, 'OK']]);
    expect(await redisCommand(a.port, 'GET', k)).toBe('v');
    expect(await r.get(k)).toBe('v');
  });

  it('a watched key that another client changes meanwhile still aborts EXEC (the shard says so)', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('t', 0, 8191);
    const r = await client(proxy);
    const other = await client(proxy);
    expect(await r.watch(k)).toBe('OK');
    expect(proxy.reload(layout(a.address, c.address))).toBeNull();
    expect(await other.set(k, 'x')).toBe('OK');
    expect(await r.multi().set(k, 'v').exec()).toBeNull();
    expect(await r.get(k)).toBe('x');
  });
});

describe('MULTI without WATCH across a reload', () => {
  it('commands queued before a reload that moves their slot run on the new owner', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('q', 4096, 8191);
    const r = await client(proxy);
    const raw = await RawClient.connect(proxy.port);
    open.push(raw);
    expect(await raw.exchange(cmd('MULTI') + cmd('SET', k, 'v') + cmd('APPEND', k, 'w'), 3)).toEqual([
      'OK',
      'QUEUED',
      'QUEUED',
    ]);
    // k's slot goes from low (a) to high (b).
    expect(proxy.reload(layout(a.address, b.address, 4095))).toBeNull();
    expect(await raw.exchange(cmd('EXEC'), 1)).toEqual([['OK', 2]]);
    expect(await redisCommand(b.port, 'GET', k)).toBe('vw');
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
    expect(await r.get(k)).toBe('vw');
  });

  it('commands a reload puts on different shards: EXECABORT, nothing applied', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k1 = keyIn('p', 0, 4095);
    const k2 = keyIn('p', 4096, 8191);
    const raw = await RawClient.connect(proxy.port);
    open.push(raw);
    expect(await raw.exchange(cmd('MULTI') + cmd('SET', k1, '1') + cmd('SET', k2, '2'), 3)).toEqual([
      'OK',
      'QUEUED',
      'QUEUED',
    ]);
    expect(proxy.reload(layout(a.address, b.address, 4095))).toBeNull();
    const [reply] = await raw.exchange(cmd('EXEC'), 1);
    expect(String((reply as Error).message ?? reply)).toMatch(/^EXECABORT .*different shards/);
    for (const s of [a, b]) for (const key of [k1, k2]) expect(await redisCommand(s.port, 'GET', key)).toBeNull();
  });
});

describe('an EXEC held for keys in motion whose move fails', () => {
  it('is answered -TRYAGAIN and ends the transaction: the next commands run, not +QUEUED', async () => {
    const proxy = await start(layout(a.address, b.address));
    const k = keyIn('f', 4096, 8191);
    const raw = await RawClient.connect(proxy.port);
    open.push(raw);
    expect(await raw.exchange(cmd('SET', k, '1'), 1)).toEqual(['OK']);
    // b refuses RESTORE: every MIGRATE of a's keys to b fails (the target answers NOPERM).
    await redisCommand(b.port, 'ACL', 'SETUSER', 'default', '-restore');
    try {
      expect(await raw.exchange(cmd('MULTI') + cmd('SET', k, '2'), 2)).toEqual(['OK', 'QUEUED']);
      expect(proxy.reload(layout(a.address, b.address, 4095))).toBeNull(); // k's slot: a -> b, a move that fails
      // EXEC and the client's next commands, pipelined behind it (held while EXEC waits for k's move).
      const replies = await raw.exchange(cmd('EXEC') + cmd('PING') + cmd('MULTI') + cmd('DISCARD'), 4);
      expect((replies[0] as Error).message).toMatch(/^TRYAGAIN keymux: the key is being moved/);
      // Without the fix: 'QUEUED', 'ERR MULTI calls can not be nested', 'OK' (the client stayed in MULTI).
      expect(replies.slice(1)).toEqual(['PONG', 'OK', 'OK']);
      expect(await redisCommand(a.port, 'GET', k)).toBe('1'); // the transaction was not applied
    } finally {
      await redisCommand(b.port, 'ACL', 'SETUSER', 'default', '+@all');
    }
  });
});

describe('a transaction in flight when the reload comes', () => {
  it('runs on the old owner before the migration moves anything, and what it wrote moves to the new owner', async () => {
    const gate = await Gate.start(a.port);
    open.push(gate);
    const proxy = await start(layout(gate.address, b.address));
    const k = keyIn('f', 0, 8191);
    const r = await client(proxy);
    expect(await r.ping()).toBe('PONG');
    // The transaction's session connection (the first one to low) is held at the gate with MULTI ... EXEC on it.
    const seen = gate.holdUntilSeen('EXEC');
    const exec = r.multi().set(k, 'v').exec();
    await seen;
    expect(proxy.reload(layout(c.address, b.address))).toBeNull();
    // Released once the migration has scanned low (without the fence on transactions it does so at once, and
    // then finds nothing to move), or, as it must, holds off: proving that it waits needs a bound.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 300);
      gate.onScanReply = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    gate.onScanReply = () => undefined;
    gate.release();
    expect(await exec).toEqual([[null, 'OK']]);
    // Once the migration is over (before, a GET of k would have it moved on demand, and hide a missed key).
    await migrated(proxy);
    expect(await r.get(k)).toBe('v');
    expect(await redisCommand(c.port, 'GET', k)).toBe('v');
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
  });
});

describe('an isolated script in flight when the reload comes (commands.scripts: isolated)', () => {
  it('runs on the old owner before the migration moves anything, and what it wrote moves to the new owner', async () => {
    const gate = await Gate.start(a.port);
    open.push(gate);
    const isolated = (low: string) =>
      configFrom({
        mode: 'slots',
        log: { level: 'silent' },
        migration: { enabled: true },
        commands: { scripts: 'isolated' },
        shards: [
          { name: 'low', address: low, slots: ['0-8191'] },
          { name: 'high', address: b.address, slots: ['8192-16383'] },
        ],
      });
    const proxy = await start(isolated(gate.address));
    const k = keyIn('s', 0, 8191);
    const r = await client(proxy);
    expect(await r.ping()).toBe('PONG');
    // The script's session connection (the first one to low) is held at the gate with the EVAL on it. k does not
    // exist yet: a scan that does not wait for the script finds nothing to move, and what the script writes stays
    // on low, where keymux no longer reads it.
    const seen = gate.holdUntilSeen('by-script');
    const script = r.eval("redis.call('SET', KEYS[1], ARGV[1]) return 1", 1, k, 'by-script');
    await seen;
    expect(proxy.reload(isolated(c.address))).toBeNull();
    // Released once the migration has scanned low (without the fence on scripts it does so at once), or, as it
    // must, holds off: proving that it waits needs a bound.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 300);
      gate.onScanReply = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    gate.onScanReply = () => undefined;
    gate.release();
    expect(await script).toBe(1);
    await migrated(proxy);
    expect(await r.get(k)).toBe('by-script');
    expect(await redisCommand(c.port, 'GET', k)).toBe('by-script');
    expect(await redisCommand(a.port, 'GET', k)).toBeNull();
  });
});
