/**
 * WAIT latency: `SET k v` then `WAIT 1 1000`, one after the other on one client, straight to a redis-server master
 * with one replica, and through keymux (slots mode) in front of two such masters (the client writing to one shard,
 * then to both). Prints the median and 99th percentile of the SET+WAIT round trip, in microseconds; and the rate of
 * another client's GETs on the same shard while the first loops SET+WAIT (vs while it loops SET).
 * Run: `npx tsx test/bench/wait-latency.ts [iterations]` (default 2000). Owns and stops every process it starts.
 */
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';

const N = Number(process.argv[2] ?? 2000);

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(c: Redis, keys: string[]): Promise<string> {
  const times: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    for (const k of keys) await c.set(k, String(i));
    const acked = (await c.call('WAIT', 1, 1000)) as number;
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (acked !== 1) throw new Error(`WAIT answered ${acked}`);
  }
  times.sort((a, b) => a - b);
  return `median ${pct(times, 50).toFixed(0)} us, p99 ${pct(times, 99).toFixed(0)} us`;
}

async function main(): Promise<void> {
  const procs: RedisProcess[] = [];
  try {
    const [ma, mb] = await Promise.all([startRedis(), startRedis()]);
    procs.push(ma, mb);
    const replicas = await Promise.all([
      startRedis({ args: ['--replicaof', '127.0.0.1', String(ma.port)] }),
      startRedis({ args: ['--replicaof', '127.0.0.1', String(mb.port)] }),
    ]);
    procs.push(...replicas);
    const direct = new Redis({ port: ma.port, host: '127.0.0.1' });
    while (((await direct.call('WAIT', 1, 100)) as number) < 1) await new Promise((r) => setTimeout(r, 100));
    const proxy = await startKeymux(slotsConfig([ma.port, mb.port]));
    const router = proxy.topology.router;
    const keyOn = (shard: number): string => {
      for (let i = 0; ; i++) {
        const k = `bench{${i}}`;
        if (router.shardOfGroup(router.groupFor(Buffer.from(k))) === shard) return k;
      }
    };
    const via = new Redis({ port: proxy.port, host: '127.0.0.1' });
    console.log(`SET+WAIT 1 1000, ${N} times, sequential:`);
    console.log(`  direct to a master:           ${await measure(direct, ['bench'])}`);
    console.log(`  keymux, writes to one shard:  ${await measure(via, [keyOn(0)])}`);
    console.log(`  keymux, writes to two shards: ${await measure(via, [keyOn(0), keyOn(1)])}`);
    // Another client's GETs on the same shard while one client loops SET+WAIT, versus while it loops plain SETs
    // (everything runs in this one process: the GET rate also shows the CPU the other loop takes).
    const other = new Redis({ port: proxy.port, host: '127.0.0.1' });
    const getsDuring = async (work: () => Promise<unknown>): Promise<number> => {
      let gets = 0;
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          await other.get(keyOn(0));
          gets++;
        }
      })();
      const t0 = Date.now();
      await work();
      stop = true;
      await loop;
      return gets / ((Date.now() - t0) / 1000);
    };
    const withWait = await getsDuring(() => measure(via, [keyOn(0)]));
    const withSet = await getsDuring(async () => {
      for (let i = 0; i < N; i++) await via.set(keyOn(0), String(i));
    });
    console.log(
      `  another client's sequential GETs on that shard: ${withWait.toFixed(0)}/s while one client loops SET+WAIT, ` +
        `${withSet.toFixed(0)}/s while it loops SET`,
    );
    direct.disconnect();
    via.disconnect();
    other.disconnect();
    await proxy.close();
  } finally {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
