/**
 * Password guessing with `workers: 2` (the real binary: a primary and two worker processes, on a real
 * redis-server): failed AUTHs are counted per client address for the whole process, not per worker, so a guesser
 * whose connections land on both workers is delayed as by one keymux (README "Password guessing"):
 * - failures on worker A count on worker B and the other way round: past delay_after, the next failure on either
 *   waits the delay one process would give it; close_after stays per connection, as in one process;
 * - a worker started later (one replaced after a kill) is told the counts so far;
 * - AUTH does not wait for the primary: with the primary stopped (SIGSTOP), correct AUTHs and a failure are
 *   answered at once by both workers.
 * Each test has a loopback source address of its own (127.0.0.x), so its counts start from zero.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { RawClient, runBinary, type RunningBinary } from '../support/keymux.js';
import { cmd } from '../support/pubsub.js';
import { waitFor } from '../support/fake-backend.js';

const WRONGPASS = 'WRONGPASS invalid username-password pair or user is disabled.';
/** The delay of the first failure past delay_after, doubling up to MAX_DELAY_MS. */
const DELAY_MS = 200;
const MAX_DELAY_MS = 400;

let shard: RedisProcess;
let dir: string;
let port: number;
let adminPort: number;
let binary: RunningBinary;
const clients: RawClient[] = [];

async function admin(pathname: string): Promise<string> {
  return (await fetch(`http://127.0.0.1:${adminPort}${pathname}`)).text();
}

async function metric(name: string): Promise<number> {
  const line = (await admin('/metrics')).split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ').pop() ?? NaN);
}

/**
 * Waits until every worker holds the counts of the failures the test saw answered so far (`failures` in all,
 * summed over the workers). A worker reports a failure to the primary before it answers the client, and answers a
 * scrape after the reports it sent before (one IPC channel, in order), so once a scrape sums `failures` the primary
 * has counted them all and sent every worker the new counts; a worker answers the next scrape only after it took
 * them in (the primary sent them first, on the same channel).
 */
async function countsShared(failures: number): Promise<void> {
  await waitFor(async () => (await metric('keymux_auth_failures_total')) === failures, `${failures} failures summed`);
  await admin('/metrics');
}

/** A signed-in connection from `source` and the PID of the worker serving it (INFO server's process_id). */
async function connectFrom(source: string): Promise<{ client: RawClient; pid: number }> {
  const client = await RawClient.connect(port, source);
  clients.push(client);
  const [ok, info] = await client.exchange(Buffer.concat([cmd('AUTH', 'right'), cmd('INFO', 'server')]), 2);
  expect(ok).toBe('OK');
  return { client, pid: Number(/process_id:(\d+)/.exec(info as string)![1]) };
}

/** One connection from `source` on each worker (connections are handed out round-robin, not strictly in turn). */
async function onEachWorker(source: string): Promise<Array<{ client: RawClient; pid: number }>> {
  const found = new Map<number, { client: RawClient; pid: number }>();
  for (let i = 0; i < 20 && found.size < 2; i++) {
    const c = await connectFrom(source);
    if (!found.has(c.pid)) found.set(c.pid, c);
  }
  expect(found.size).toBe(2);
  return [...found.values()];
}

/** Sends one AUTH with a wrong password; resolves with its reply and how long it took. */
async function guess(client: RawClient, password: string): Promise<{ reply: unknown; ms: number }> {
  const start = performance.now();
  const [reply] = await client.exchange(cmd('AUTH', password), 1);
  return { reply: (reply as Error).message, ms: performance.now() - start };
}

beforeAll(async () => {
  shard = await startRedis();
  [port, adminPort] = [await freePort(), await freePort()];
  dir = makeTempDir('keymux-workers-auth-');
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${port}`,
      admin: `127.0.0.1:${adminPort}`,
      mode: 'slots',
      workers: 2,
      log: { level: 'info' },
      drain: { grace_s: 1 },
      clients: {
        password: 'right',
        auth_failures: { delay_after: 2, delay_ms: DELAY_MS, max_delay_ms: MAX_DELAY_MS, close_after: 3 },
      },
      shards: [{ name: 'a', address: shard.address, slots: ['0-16383'] }],
    }),
  );
  binary = await runBinary(file, 'keymux workers serving');
});

afterAll(async () => {
  for (const c of clients) c.close();
  if (binary !== undefined) {
    binary.child.kill('SIGCONT'); // in case a test stopped it and failed before resuming it
    binary.child.kill('SIGTERM'); // drains every worker, then exits
    await binary.exited;
  }
  await shard?.stop();
  if (dir !== undefined) removeTempDir(dir);
});

describe('workers: 2, password guessing', () => {
  it('AUTH does not wait for the primary: with it stopped, both workers answer correct AUTHs and a failure at once', async () => {
    const [a, b] = await onEachWorker('127.0.0.2');
    const primary = binary.child.pid!;
    process.kill(primary, 'SIGSTOP');
    try {
      for (const { client } of [a!, b!]) {
        const [ok, pong] = await client.exchange(Buffer.concat([cmd('AUTH', 'right'), cmd('PING')]), 2);
        expect([ok, pong]).toEqual(['OK', 'PONG']);
      }
      // A failure is reported to the primary (the message waits in the channel) and answered without waiting.
      expect((await guess(a!.client, 'wrong')).reply).toBe(WRONGPASS);
    } finally {
      process.kill(primary, 'SIGCONT');
    }
    await countsShared(1);
  });

  it('counts failures spread over both workers together: delay_after and the delays as in one process; close_after per connection', async () => {
    const [a, b] = await onEachWorker('127.0.0.3');
    const before = await metric('keymux_auth_failures_total');
    // Failures 1 and 2 of the address (one on each worker): under delay_after (2), answered at once.
    expect((await guess(a!.client, 'w1')).reply).toBe(WRONGPASS);
    expect((await guess(b!.client, 'w2')).reply).toBe(WRONGPASS);
    await countsShared(before + 2);
    // Failure 3, on worker A, which saw only one of them itself: it waits DELAY_MS, as the third failure from an
    // address does in one keymux (a timer never fires early; 2 ms of rounding aside). Counted per worker, it was
    // A's second and answered at once.
    const third = await guess(a!.client, 'w3');
    expect(third.reply).toBe(WRONGPASS);
    expect(third.ms).toBeGreaterThanOrEqual(DELAY_MS - 2);
    await countsShared(before + 3);
    // Failure 4, on worker B: twice the delay.
    const fourth = await guess(b!.client, 'w4');
    expect(fourth.reply).toBe(WRONGPASS);
    expect(fourth.ms).toBeGreaterThanOrEqual(2 * DELAY_MS - 2);
    // close_after (3) counts the failures on one connection, as in one keymux: the address has 4, each connection
    // 2, and both are still open and signed in.
    for (const { client } of [a!, b!]) expect(await client.exchange(cmd('PING'), 1)).toEqual(['PONG']);
    await countsShared(before + 4);
    // A's third failure on its connection: answered after the delay (MAX_DELAY_MS by now), then the connection closes.
    a!.client.write(cmd('AUTH', 'w5'));
    expect(await a!.client.untilClosed()).toContain(`-${WRONGPASS}\r\n`);
    expect(await metric('keymux_auth_failure_disconnects_total')).toBe(1);
  });

  it('tells a worker started later the counts so far', async () => {
    const source = '127.0.0.4';
    const [a, b] = await onEachWorker(source);
    const before = await metric('keymux_auth_failures_total');
    for (const password of ['w1', 'w2']) expect((await guess(a!.client, password)).reply).toBe(WRONGPASS);
    expect((await guess(b!.client, 'w3')).reply).toBe(WRONGPASS);
    await countsShared(before + 3);
    // Worker B is killed (by its PID) and replaced; its replacement never saw a failure from the address.
    process.kill(b!.pid, 'SIGKILL');
    await waitFor(async () => {
      const report = JSON.parse(await admin('/workers')) as { workers: Array<{ pid: number | null; state: string }> };
      return report.workers.every((w) => w.state === 'serving' && w.pid !== b!.pid);
    }, 'the killed worker to be replaced');
    // The primary sent it the counts when it started serving, before any connection it hands it (same channel).
    let replacement: { client: RawClient; pid: number } | undefined;
    for (let i = 0; i < 20 && replacement === undefined; i++) {
      const c = await connectFrom(source);
      if (c.pid !== a!.pid) replacement = c;
    }
    // The address's fourth failure: twice the delay there too.
    const fourth = await guess(replacement!.client, 'w4');
    expect(fourth.reply).toBe(WRONGPASS);
    expect(fourth.ms).toBeGreaterThanOrEqual(2 * DELAY_MS - 2);
  });
});
