// A BullMQ queue through keymux (slots mode, three shards), as an application uses it: Queue.add, job counts,
// and jobs processed by a Worker (fetched, completed or failed, with their return values) - with BullMQ's
// `{bull}` prefix (one hash tag: every queue on one shard), and with its default prefix `bull:` plus the routing
// rule `^bull:([^:]+):` (each queue on the shard of its name, so its Lua scripts see all their keys). Without the
// rule, the default prefix is refused (CROSSSLOT), which is what the rule is for.
// roundTrip's worker fetches with getNextJob(token, { block: false }) (BullMQ's manual processing) so its counts
// are exact step by step; 'a running Worker' runs BullMQ's own loop, whose blocking fetch (BZPOPMIN on the queue's
// marker key) goes over keymux's session connections, while jobs are added after it started waiting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[];

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
});
afterAll(async () => {
  await Promise.all(backends.map((b) => b.stop()));
});

function connection(proxy: Proxy): ConnectionOptions {
  return { host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: null };
}

/** Processes every waiting job with a non-blocking fetch: even ids complete (2 x n), odd ones fail. */
async function drain(worker: Worker, expected: number): Promise<{ completed: number; failed: number }> {
  const token = 'keymux-test-worker';
  let completed = 0;
  let failed = 0;
  for (let i = 0; i < expected * 2 && completed + failed < expected; i++) {
    const job = await worker.getNextJob(token, { block: false });
    if (job === undefined) continue;
    const n = (job.data as { n: number }).n;
    if (n % 2 === 0) {
      await job.moveToCompleted({ doubled: n * 2 }, token, false);
      completed++;
    } else {
      await job.moveToFailed(new Error(`odd ${n}`), token, false);
      failed++;
    }
  }
  return { completed, failed };
}

async function roundTrip(proxy: Proxy, name: string, prefix: string | undefined): Promise<void> {
  const opts = { connection: connection(proxy), ...(prefix !== undefined ? { prefix } : {}) };
  const queue = new Queue(name, opts);
  const worker = new Worker(name, null, { ...opts, autorun: false });
  try {
    const jobs = await queue.addBulk(Array.from({ length: 20 }, (_, n) => ({ name: 'work', data: { n } })));
    expect(jobs.length).toBe(20);
    await queue.add('single', { n: 20 }, { jobId: 'custom-id' });
    expect(await queue.getJobCounts('waiting', 'active', 'completed', 'failed')).toEqual({
      waiting: 21,
      active: 0,
      completed: 0,
      failed: 0,
    });
    expect(await drain(worker, 21)).toEqual({ completed: 11, failed: 10 });
    expect(await queue.getJobCounts('waiting', 'active', 'completed', 'failed')).toEqual({
      waiting: 0,
      active: 0,
      completed: 11,
      failed: 10,
    });
    const done = await queue.getJob('custom-id');
    expect(done?.returnvalue).toEqual({ doubled: 40 });
    expect((await queue.getFailed()).map((j) => j.failedReason).sort()[0]).toMatch(/^odd \d+$/);
    await queue.obliterate({ force: true });
  } finally {
    await worker.close();
    await queue.close();
  }
}

describe('BullMQ through keymux (slots mode)', () => {
  it('with prefix {bull}: every queue on the shard of the tag', async () => {
    const proxy = await startKeymux(slotsConfig(backends.map((b) => b.port)));
    try {
      await roundTrip(proxy, 'emails', '{bull}');
      await roundTrip(proxy, 'videos', '{bull}');
    } finally {
      await proxy.close();
    }
  });

  it('with the default prefix and a routing rule: each queue on the shard of its name', async () => {
    for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
    const proxy = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { routing: [{ match: '^bull:([^:]+):', by: 1 }] },
      ),
    );
    try {
      const names = ['emails', 'videos', 'reports', 'thumbnails'];
      const homes = new Set(names.map((n) => proxy.topology.router.shardFor(Buffer.from(n))));
      expect(homes.size).toBeGreaterThan(1);
      for (const name of names) {
        const queue = new Queue(name, { connection: connection(proxy) });
        await queue.add('probe', { n: 0 });
        // Every key of the queue lives on the shard its name routes to, and nowhere else.
        const home = proxy.topology.shards[proxy.topology.router.shardFor(Buffer.from(name))].address;
        for (const b of backends) {
          const keys = (await redisCommands(b.port, [['KEYS', `bull:${name}:*`]]))[0] as string[];
          if (b.address === home) expect(keys.length, name).toBeGreaterThan(0);
          else expect(keys, `${name} on ${b.address}`).toEqual([]);
        }
        await queue.obliterate({ force: true });
        await queue.close();
      }
      for (const name of names) await roundTrip(proxy, name, undefined);
    } finally {
      await proxy.close();
    }
  });

  it('a running Worker (blocking fetch) processes jobs added while it waits, with the default prefix and the rule', async () => {
    for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
    const proxy = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { routing: [{ match: '^bull:([^:]+):', by: 1 }] },
      ),
    );
    const queue = new Queue('live', { connection: connection(proxy) });
    const seen: number[] = [];
    let finish: () => void = () => {};
    const allDone = new Promise<void>((resolve) => (finish = resolve));
    const worker = new Worker(
      'live',
      async (job) => {
        const n = (job.data as { n: number }).n;
        seen.push(n);
        return n * 3;
      },
      { connection: connection(proxy), drainDelay: 1 },
    );
    worker.on('completed', () => {
      if (seen.length === 30) finish();
    });
    try {
      await worker.waitUntilReady();
      // The worker is blocked on its marker key (BZPOPMIN) before the first job exists.
      await queue.add('first', { n: 0 });
      for (let n = 1; n < 30; n++) await queue.add('work', { n });
      await allDone;
      expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, n) => n));
      expect(await queue.getJobCounts('waiting', 'active', 'completed', 'failed')).toEqual({
        waiting: 0,
        active: 0,
        completed: 30,
        failed: 0,
      });
      const completed = await queue.getCompleted(0, 100);
      expect(completed.map((j) => j.returnvalue as number).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 30 }, (_, n) => n * 3),
      );
      await queue.obliterate({ force: true });
    } finally {
      await worker.close();
      await queue.close();
      await proxy.close();
    }
  });

  it('without the rule the default prefix is refused with CROSSSLOT', async () => {
    const proxy = await startKeymux(slotsConfig(backends.map((b) => b.port)));
    const queue = new Queue('emails', { connection: connection(proxy) });
    try {
      await expect(queue.addBulk(Array.from({ length: 5 }, (_, n) => ({ name: 'w', data: { n } })))).rejects.toThrow(
        /CROSSSLOT/,
      );
    } finally {
      await queue.close();
      await proxy.close();
    }
  });
});
