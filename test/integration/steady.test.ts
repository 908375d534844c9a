/**
 * Steady under load: a busy shard is not a dead shard (issue 9). Each case runs with a canary client beside it
 * (test/support/canary.ts) that pipelines SET/GET/INCR/MGET on keys of every shard for the whole case and checks
 * every reply byte for byte. What must hold:
 * - the backend timer counts from when a request was written and fires only when the shard stops making progress
 *   (reply bytes stop arriving): large replies streaming to a reading client never time out, a shard that really
 *   stops (SIGSTOP, a scripted backend going silent mid-reply) still does, with the clear error, and recovers;
 * - a client that does not read costs only itself: its replies are buffered up to clients.max_output_bytes, then
 *   it is disconnected (metric), while the shared backend connection keeps being read for everyone else;
 * - full backend queues (backend.max_pending) push back on the clients that send to them instead of growing;
 * - 200 clients each pipelining 2,000 commands at once get every reply right (KEYMUX_BURST_RUNS repeats it);
 * - every refused or closed client socket is destroyed (fds of a spawned keymux counted).
 */
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig, spawnKeymux, RawClient, type ConfigObject } from '../support/keymux.js';
import {
  FakeBackend,
  bulk,
  keyOn,
  parseReplies,
  replyCount,
  waitFor,
  type FakeConnection,
  type Script,
} from '../support/fake-backend.js';
import { startCanary, type Canary } from '../support/canary.js';
import { scrape, valueOf } from '../support/metrics.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';
import { setRootLogger } from '../../src/log.js';
import { pino } from 'pino';

// keymux's warnings in this file are kept, to check the output-limit log line and its rate limit.
const logLines: Array<Record<string, unknown>> = [];
setRootLogger(pino({ level: 'warn' }, { write: (line: string) => void logLines.push(JSON.parse(line)) }));
const outputLimitLines = () =>
  logLines.filter((l) => String(l.msg).startsWith('client disconnected: replies it has not read'));

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function redis(): Promise<RedisProcess> {
  const r = await startRedis();
  cleanups.push(() => r.stop('SIGKILL'));
  return r;
}

async function keymux(config: ConfigObject, builtin = false): Promise<Proxy> {
  const p = await startKeymux(config, { builtinCommandTable: builtin });
  cleanups.push(() => p.close());
  return p;
}

async function fake(script: Script): Promise<FakeBackend> {
  const f = await FakeBackend.start(script);
  cleanups.push(() => f.close());
  return f;
}

/** A canary with one key on each of the given shards (so every watched shard is exercised). */
async function canary(proxy: Proxy, shards: number[], tag = 'canary'): Promise<Canary> {
  const keys = shards.map((s) => keyOn(proxy, s, `${tag}:${s}`));
  const c = await startCanary({ port: proxy.port, keys });
  cleanups.push(() => c.stop());
  await c.batchesAfter(1);
  return c;
}

async function expectHealthy(c: Canary): Promise<void> {
  const report = await c.stop();
  expect(report.errors).toEqual([]);
  expect(report.batches).toBeGreaterThan(1);
}

function cmd(...args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

function bulkBytes(v: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`$${v.length}\r\n`), v, Buffer.from('\r\n')]);
}

/** A value of `n` bytes with a pattern that makes any shifted or mixed-up byte visible. */
function patterned(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >>> 12)) & 0xff;
  return b;
}

/**
 * A client that writes `request` at once and checks, as bytes arrive (without keeping them), that the stream is
 * exactly `unit` repeated `times` times. Resolves with null when all of it arrived exact, or with a description
 * of the first difference (e.g. an error reply where a value was due) or of the connection closing early.
 */
function exactStream(port: number, request: Buffer, unit: Buffer, times: number): Promise<string | null> {
  return new Promise((resolve) => {
    const total = unit.length * times;
    let pos = 0;
    let done = false;
    const s = net.connect(port, '127.0.0.1', () => s.write(request));
    const finish = (r: string | null) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(r);
    };
    s.on('data', (d: Buffer) => {
      let off = 0;
      while (off < d.length && !done) {
        const at = pos % unit.length;
        const n = Math.min(d.length - off, unit.length - at);
        if (pos + n > total) return finish(`more bytes than expected at ${pos}`);
        if (d.compare(unit, at, at + n, off, off + n) !== 0) {
          let i = 0;
          while (d[off + i] === unit[at + i]) i++;
          return finish(
            `reply ${Math.floor(pos / unit.length)} differs at byte ${at + i}: got ${JSON.stringify(d.toString('latin1', off + i, off + i + 100))}`,
          );
        }
        off += n;
        pos += n;
      }
      if (pos === total) finish(null);
    });
    s.on('error', (e) => finish(`error after ${pos} bytes: ${e.message}`));
    s.on('close', () => finish(`closed after ${pos} of ${total} bytes`));
  });
}

/** Keeps this process (and so an in-process keymux) busy for `ms`: a loaded proxy, not a wait. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

/** Opens a client that sends `request` and never reads a byte of what comes back. */
function nonReader(port: number, request: Buffer): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.pause(); // never read: the kernel buffers fill and keymux's writes to it back up
    s.on('error', () => undefined);
    s.once('connect', () => {
      s.write(request);
      resolve(s);
    });
    s.once('error', reject);
    cleanups.push(() => s.destroy());
  });
}

const MiB = 1024 * 1024;
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('a busy shard is not a dead shard', () => {
  it('pipelined GETs of a 4 MiB value while keymux is busy: every value exact, no timeout, the canary unaffected', async () => {
    const shards = await Promise.all([redis(), redis(), redis()]);
    // The shard sends nothing until it has built the replies of the whole batch it read (64 MiB here: up to a
    // second on a loaded machine), so the timeout must exceed that; 3 s does.
    const proxy = await keymux(
      slotsConfig(
        shards.map((s) => s.port),
        { backend: { timeout_ms: 3000 } },
      ),
    );
    const big = keyOn(proxy, 1, 'big');
    const value = patterned(4 * MiB, 1);
    expect(await redisCommand(shards[1].port, 'SET', big, value)).toBe('OK');
    const c = await canary(proxy, [0, 1, 2]);

    // keymux (in this process) is kept busy on the path that reads shard b: 3 ms of CPU per 32 KiB read. So the
    // 64 MiB take about 6 s to cross, twice the timeout, with bytes arriving all along; the client reads at full
    // speed. Under the old rule (the age of the oldest request queued) this timed out.
    const conn = proxy.topology.shards[1].pool.connections[0] as unknown as { socket: net.Socket };
    conn.socket.prependListener('data', (d: Buffer) => busy((3 * d.length) / 32768));
    const get = cmd('GET', big);
    const result = await exactStream(proxy.port, Buffer.concat(Array(16).fill(get)), bulkBytes(value), 16);
    expect(result).toBeNull();
    await c.batchesAfter(2);
    await expectHealthy(c);
    for (const s of proxy.topology.shards) expect(s.pool.connections[0].timeouts).toBe(0);
  });

  it('a reply that keeps streaming is not late; one that stops mid-way times out after the timeout and the shard recovers', async () => {
    const piece = 64 * 1024;
    const pieces = 24;
    const slowValue = patterned(piece * pieces, 2);
    const timers = new Set<NodeJS.Timeout>();
    cleanups.push(() => timers.forEach((t) => clearTimeout(t)));
    // Replies leave each connection in order; a slow one goes out in pieces 40 ms apart: about a second in all,
    // far over the 300 ms timeout, but never 300 ms without a byte. Replies behind it wait their turn.
    const outgoing = new Map<FakeConnection, { queue: Array<{ bytes: Buffer; paced: boolean }>; busy: boolean }>();
    const pump = (conn: FakeConnection): void => {
      const o = outgoing.get(conn)!;
      if (o.busy) return;
      const next = o.queue.shift();
      if (next === undefined) return;
      if (!next.paced) {
        conn.write(next.bytes);
        return pump(conn);
      }
      o.busy = true;
      let sent = 0;
      const step = (): void => {
        const end = Math.min(next.bytes.length, sent + piece);
        conn.write(next.bytes.subarray(sent, end));
        sent = end;
        if (sent < next.bytes.length) {
          const t = setTimeout(step, 40);
          timers.add(t);
          return;
        }
        o.busy = false;
        pump(conn);
      };
      step();
    };
    const f = await fake((c, conn) => {
      if (!outgoing.has(conn)) outgoing.set(conn, { queue: [], busy: false });
      const q = outgoing.get(conn)!.queue;
      const whole = bulkBytes(slowValue);
      if (c[0].toUpperCase() !== 'GET')
        q.push({ bytes: Buffer.from('-ERR fake backend: unexpected command\r\n'), paced: false });
      else if (c[1].startsWith('slow')) q.push({ bytes: whole, paced: true });
      else if (c[1].startsWith('stall'))
        q.push({ bytes: whole.subarray(0, whole.length >> 1), paced: false }); // then silence
      else q.push({ bytes: Buffer.from(bulk(`value-of-${c[1]}`)), paced: false });
      pump(conn);
      return null;
    });
    const b = await redis();
    const proxy = await keymux(slotsConfig([f.port, b.port], { backend: { timeout_ms: 300 } }), true);
    const c = await canary(proxy, [1]);
    const slow = keyOn(proxy, 0, 'slow');
    const after = keyOn(proxy, 0, 'after');

    // A slow reply with another request queued behind it: both answered, exact, nothing timed out.
    const client = await RawClient.connect(proxy.port);
    cleanups.push(() => client.close());
    client.write(Buffer.concat([cmd('GET', slow), cmd('GET', after)]));
    await client.until((d) => replyCount(d) === 2);
    const expected = Buffer.concat([bulkBytes(slowValue), Buffer.from(bulk(`value-of-${after}`))]);
    if (!client.data.equals(expected))
      expect(client.data.toString('latin1', 0, 200)).toBe(expected.toString('latin1', 0, 200));
    expect(proxy.topology.shards[0].pool.connections[0].timeouts).toBe(0);

    // A reply that stops half-way: the shard is late once no byte came for the timeout; the error is clear.
    client.data = Buffer.alloc(0);
    const stall = keyOn(proxy, 0, 'stall');
    const t0 = performance.now();
    client.write(Buffer.concat([cmd('GET', stall), cmd('GET', after)]));
    await client.until((d) => replyCount(d) === 2);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(295); // a timer never fires early
    const late = `-ERR keymux: shard 'a' (${f.address}) timed out: no reply within 300 ms\r\n`;
    expect(client.data.toString('latin1')).toBe(late + late);
    expect(proxy.topology.shards[0].pool.connections[0].timeouts).toBe(1);

    // The connection was reset; a new one serves (the half reply never reaches anyone).
    await waitFor(() => proxy.topology.shards[0].pool.healthy && f.connections.length >= 2, 'shard a again');
    client.data = Buffer.alloc(0);
    client.write(cmd('GET', after));
    await client.until((d) => replyCount(d) === 1);
    expect(parseReplies(client.data)).toEqual([`value-of-${after}`]);
    await expectHealthy(c);
  });

  it('a shard that really stops (SIGSTOP) times out with the clear error after the timeout, others serve, SIGCONT recovers', async () => {
    const shards = await Promise.all([redis(), redis(), redis()]);
    const proxy = await keymux(
      slotsConfig(
        shards.map((s) => s.port),
        { backend: { timeout_ms: 400 } },
      ),
    );
    const kB = keyOn(proxy, 1, 'stopped');
    await redisCommand(shards[1].port, 'SET', kB, 'vb');
    const c = await canary(proxy, [0, 2]);

    process.kill(shards[1].pid, 'SIGSTOP');
    cleanups.push(() => {
      try {
        process.kill(shards[1].pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    });
    const client = await RawClient.connect(proxy.port);
    cleanups.push(() => client.close());
    const t0 = performance.now();
    client.write(cmd('GET', kB));
    await client.until((d) => replyCount(d) === 1);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(395);
    expect(client.data.toString('latin1')).toMatch(
      new RegExp(`^-ERR keymux: shard 'b' \\(${esc(shards[1].address)}\\) timed out: no reply within 400 ms\\r\\n$`),
    );
    await c.batchesAfter(3); // the other shards kept serving while b was stopped

    process.kill(shards[1].pid, 'SIGCONT');
    await waitFor(
      async () => {
        client.data = Buffer.alloc(0);
        client.write(cmd('GET', kB));
        await client.until((d) => replyCount(d) === 1);
        return client.data.toString('latin1') === '$2\r\nvb\r\n';
      },
      'shard b to serve again',
      10_000,
      50,
    );
    await expectHealthy(c);
  });
});

describe('a client that does not read costs only itself', () => {
  it('one non-reading client with a 4 MiB value is disconnected at clients.max_output_bytes; the canary is unaffected', async () => {
    const shards = await Promise.all([redis(), redis(), redis()]);
    const proxy = await keymux(
      slotsConfig(
        shards.map((s) => s.port),
        { admin: '127.0.0.1:0' },
      ),
    ); // defaults: 64 MiB
    const big = keyOn(proxy, 1, 'big');
    const value = patterned(4 * MiB, 3);
    await redisCommand(shards[1].port, 'SET', big, value);
    const c = await canary(proxy, [0, 1, 2]);

    // 96 MiB of replies: more than the 64 MiB bound plus what the kernel buffers for one socket (a few MiB).
    await nonReader(proxy.port, Buffer.concat(Array(24).fill(cmd('GET', big))));
    await waitFor(() => proxy.stats.outputLimitDisconnects === 1, 'the non-reader to be disconnected', 30_000);
    expect(proxy.clientCount()).toBe(1); // the canary
    // Its requests already sent still complete against the shard (consumed in order and dropped).
    await waitFor(() => proxy.topology.shards[1].pool.inflight <= 1, 'its requests to finish', 30_000);
    await c.batchesAfter(3);
    await expectHealthy(c);
    const s = await scrape(proxy.adminPort as number);
    expect(valueOf(s, 'keymux_client_output_limit_disconnects_total')).toBe(1);
    expect(valueOf(s, 'keymux_shard_timeouts_total', { shard: 'b' })).toBe(0);
    const [line, ...more] = outputLimitLines();
    expect(more).toEqual([]);
    expect(line).toMatchObject({ component: 'clients', limit: 64 * MiB, notLoggedSinceLast: 0 });
    expect(line.pendingBytes).toBeGreaterThan(64 * MiB);
  });

  it('100 non-reading clients: each is disconnected at its own bound, the canary is unaffected', async () => {
    const shards = await Promise.all([redis(), redis(), redis()]);
    // No backend pushback here (max_pending out of reach): each client's 800 commands are all sent at once, so
    // its replies certainly pass its bound (a client paused earlier would just wait, holding less than it).
    const proxy = await keymux(
      slotsConfig(
        shards.map((s) => s.port),
        { clients: { max_output_bytes: MiB }, backend: { max_pending: 1_000_000 } },
      ),
    );
    const keys = [0, 1, 2].map((s) => keyOn(proxy, s, 'mid'));
    const value = patterned(10 * 1024, 4);
    for (let s = 0; s < 3; s++) await redisCommand(shards[s].port, 'SET', keys[s], value);
    const c = await canary(proxy, [0, 1, 2]);

    // 800 replies of 10 KiB each (8 MiB): more than the 1 MiB bound plus what the kernel buffers for a socket.
    const request = (i: number) => Buffer.concat(Array.from({ length: 800 }, (_, j) => cmd('GET', keys[(i + j) % 3])));
    const linesBefore = outputLimitLines().length;
    await Promise.all(Array.from({ length: 100 }, (_, i) => nonReader(proxy.port, request(i))));
    await waitFor(() => proxy.stats.outputLimitDisconnects === 100, 'every non-reader to be disconnected', 60_000);
    // Logged at most once per 10 s: within the 60 s allowed above, at most 7 lines for the 100 disconnects.
    expect(outputLimitLines().length - linesBefore).toBeLessThanOrEqual(7);
    await waitFor(
      () => proxy.topology.shards.every((s) => s.pool.inflight <= 1),
      'the dropped clients’ requests to finish',
      60_000,
    );
    expect(proxy.clientCount()).toBe(1);
    await c.batchesAfter(3);
    await expectHealthy(c);
    for (const s of proxy.topology.shards) expect(s.pool.connections[0].timeouts).toBe(0);
  });
});

describe('bounded queues push back', () => {
  it('a backend connection holding backend.max_pending operations pauses the clients sending to it until it drains', async () => {
    let holding = true;
    const held: Array<{ write: (b: string) => boolean; key: string }> = [];
    const f = await fake((c, conn) => {
      if (c[0].toUpperCase() !== 'GET') return '+OK\r\n';
      if (holding) {
        held.push({ write: (b) => conn.write(b), key: c[1] });
        return null;
      }
      return bulk(`value-of-${c[1]}`);
    });
    const proxy = await keymux(
      {
        mode: 'slots',
        shards: [{ name: 'a', address: f.address, slots: ['0-16383'] }],
        backend: { max_pending: 64, timeout_ms: 0 },
      },
      true,
    );
    const conn = proxy.topology.shards[0].pool.connections[0];
    const clients = await Promise.all(Array.from({ length: 4 }, () => RawClient.connect(proxy.port)));
    cleanups.push(() => clients.forEach((cl) => cl.close()));
    const keysOf = (i: number) => Array.from({ length: 500 }, (_, j) => `p:${i}:${j}`);
    clients.forEach((cl, i) => cl.write(Buffer.concat(keysOf(i).map((k) => cmd('GET', k)))));

    // Every client hits the full connection and is paused; the connection holds at most the bound plus one
    // request per client (the one that found it full).
    await waitFor(() => conn.stats.pushbacks >= 4, 'all four clients to be pushed back');
    expect(conn.inflight).toBeGreaterThanOrEqual(64);
    expect(conn.inflight).toBeLessThanOrEqual(64 + 4);
    await f.until(() => f.commands.length === conn.inflight, 'the held commands to reach the backend');
    expect(f.commands.length).toBeLessThanOrEqual(64 + 4);

    // The backend answers: the connection drains, the clients resume, and every reply is exact and in order.
    holding = false;
    for (const h of held.splice(0)) h.write(bulk(`value-of-${h.key}`));
    await Promise.all(clients.map((cl) => cl.until((d) => replyCount(d) === 500, 30_000)));
    clients.forEach((cl, i) => expect(parseReplies(cl.data)).toEqual(keysOf(i).map((k) => `value-of-${k}`)));
    expect(f.commands.length).toBe(2000);
    expect(conn.stats.pushbacks).toBeGreaterThan(4);
  });
});

/** How many times the burst runs: 2 in CI (bounded time); KEYMUX_BURST_RUNS=20 for the full check. */
const BURST_RUNS = Math.max(1, Number(process.env.KEYMUX_BURST_RUNS ?? 2));

describe('the 200 x 2,000 burst', () => {
  it(
    `200 clients each pipelining 2,000 commands at once: every reply exact, no timeout (${BURST_RUNS} runs)`,
    async () => {
      // keymux runs as its own process (the binary, defaults), as in production: the load arrives from outside.
      const shards = await Promise.all([redis(), redis(), redis()]);
      const config = slotsConfig(shards.map((s) => s.port));
      const km = await spawnKeymux(config);
      cleanups.push(() => km.stop());
      // slotsConfig splits the slots evenly: the canary's keys, one per shard, by the same CRC16 rule.
      const router = { shardFor: (k: Buffer) => Math.min(2, Math.floor(keySlot(k) / Math.floor(16384 / 3))) };
      const keys = [0, 1, 2].map((s) => keyOn({ topology: { router } }, s, 'canary'));
      const c = await startCanary({ port: km.port, keys });
      cleanups.push(() => c.stop());
      await c.batchesAfter(1);
      const failures: string[] = [];
      const times: number[] = [];
      for (let run = 0; run < BURST_RUNS; run++) {
        const t0 = performance.now();
        const results = await Promise.all(Array.from({ length: 200 }, (_, id) => burstClient(km.port, run, id)));
        times.push(performance.now() - t0);
        const bad = results.filter((r) => r !== null);
        if (bad.length > 0) failures.push(`run ${run}: ${bad.length} clients wrong; first: ${bad[0]}`);
      }
      expect(failures).toEqual([]);
      const s = await scrape(km.adminPort);
      for (const shard of ['a', 'b', 'c']) expect(valueOf(s, 'keymux_shard_timeouts_total', { shard })).toBe(0);
      const report = await c.stop();
      if (process.env.KEYMUX_BURST_REPORT === '1')
        console.log(
          `burst: ${BURST_RUNS} runs, ${failures.length} failed; ms per run: ${times.map(Math.round).join(' ')}; ` +
            `canary: ${report.batches} batches, ${report.commands} commands, round trip ms p50 ` +
            `${report.latencyMs.p50.toFixed(1)} p99 ${report.latencyMs.p99.toFixed(1)} max ${report.latencyMs.max.toFixed(1)}`,
        );
      expect(report.errors).toEqual([]);
      expect(report.batches).toBeGreaterThan(1);
    },
    60_000 + BURST_RUNS * 60_000,
  );
});

/**
 * One burst client: 2,000 commands in one write, in groups of five on one of 40 keys (SET, GET, INCR of its
 * counter, MGET of the key, the counter and a missing key, DEL), so every reply is known in advance; the
 * received stream must equal the expected one byte for byte.
 */
function burstClient(port: number, run: number, id: number): Promise<string | null> {
  const cmds: Buffer[] = [];
  const exp: Buffer[] = [];
  const counter = `burst:${run}:${id}:n`;
  const missing = `burst:${run}:${id}:missing`;
  for (let g = 0; g < 400; g++) {
    const key = `burst:${run}:${id}:${g % 40}`;
    const v = Buffer.from(`v:${run}:${id}:${g}`);
    cmds.push(
      cmd('SET', key, v),
      cmd('GET', key),
      cmd('INCR', counter),
      cmd('MGET', key, counter, missing),
      cmd('DEL', key),
    );
    const n = String(g + 1);
    exp.push(
      Buffer.from('+OK\r\n'),
      bulkBytes(v),
      Buffer.from(`:${n}\r\n`),
      Buffer.concat([Buffer.from('*3\r\n'), bulkBytes(v), bulkBytes(Buffer.from(n)), Buffer.from('$-1\r\n')]),
      Buffer.from(':1\r\n'),
    );
  }
  return exactStream(port, Buffer.concat(cmds), Buffer.concat(exp), 1);
}

describe('every refused or closed socket is destroyed', () => {
  it('1,000 clients refused at clients.max that sent bytes and never read or close leave no fd behind', async () => {
    const b = await redis();
    const km = await spawnKeymux({ mode: 'ring', shards: [{ address: b.address }], clients: { max: 1 } });
    cleanups.push(() => km.stop());
    // The start-up PING's connection must be gone before the canary takes the one client slot.
    await waitFor(
      async () => valueOf(await scrape(km.adminPort), 'keymux_client_connections') === 0,
      'no client',
      10_000,
      20,
    );
    const c = await startCanary({ port: km.port, keys: ['fd:a', 'fd:b', 'fd:c'] });
    cleanups.push(() => c.stop());
    await c.batchesAfter(1);
    const baseline = km.fdCount();

    // A refused client that reads gets Redis's error.
    const reader = await RawClient.connect(km.port);
    cleanups.push(() => reader.close());
    reader.write(cmd('PING'));
    expect(await reader.untilClosed()).toBe('-ERR max number of clients reached\r\n');

    const refused = await Promise.all(Array.from({ length: 1000 }, () => nonReader(km.port, cmd('SET', 'x', 'y'))));
    await waitFor(
      async () => valueOf(await scrape(km.adminPort), 'keymux_client_connections_rejected_total') === 1001,
      'all 1,001 refusals',
      30_000,
      50,
    );
    await waitFor(() => km.fdCount() <= baseline, `keymux's fds back to ${baseline}`, 10_000, 50);
    expect(refused.every((s) => !s.destroyed)).toBe(true); // the clients did not close: keymux did
    await c.batchesAfter(2);
    await expectHealthy(c);
  });

  it('clients that QUIT or send bad bytes and then neither read nor close leave no fd behind', async () => {
    const b = await redis();
    const km = await spawnKeymux({ mode: 'ring', shards: [{ address: b.address }] });
    cleanups.push(() => km.stop());
    const c = await startCanary({ port: km.port, keys: ['fd:a', 'fd:b', 'fd:c'] });
    cleanups.push(() => c.stop());
    await c.batchesAfter(1);
    const baseline = km.fdCount();

    await Promise.all([
      ...Array.from({ length: 200 }, () => nonReader(km.port, cmd('QUIT'))),
      ...Array.from({ length: 200 }, () => nonReader(km.port, Buffer.from('*1\r\n$x\r\n'))), // protocol error
    ]);
    await waitFor(
      async () => valueOf(await scrape(km.adminPort), 'keymux_client_connections_total') >= 401,
      'all 400 clients accepted',
      30_000,
      50,
    );
    await waitFor(() => km.fdCount() <= baseline, `keymux's fds back to ${baseline}`, 10_000, 50);
    await c.batchesAfter(2);
    await expectHealthy(c);
  });
});
