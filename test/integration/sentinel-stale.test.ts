/**
 * Sentinels that disagree, for a moment, about a master's primary (issue 13): after a failover each sentinel learns
 * the new configuration from the leader a little later (hello messages every 2 s), and a sentinel that has not yet
 * heard still names the old primary, which may be back up as a primary and not yet converted to a replica. keymux
 * must follow the highest config-epoch and never go back to an older one: writes sent to the old primary would be
 * lost when the sentinels convert it.
 *
 * Scripted sentinels (fake backends: the disagreement is the fault under test, and real sentinels converge too
 * fast to hold it) in front of two real redis-servers; ioredis writes through keymux.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { FakeBackend, bulk, waitFor, type FakeConnection } from '../support/fake-backend.js';
import { commandCalls } from '../support/sentinel.js';
import { redisCommand, startRedis, type RedisProcess } from '../support/redis.js';
import { startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

interface Says {
  port: number;
  epoch: number;
}

/** A sentinel that names `says.port` as master "m"'s primary at config-epoch `says.epoch`, and publishes events. */
class FakeSentinel {
  says: Says;
  private subscribers: FakeConnection[] = [];
  constructor(
    readonly backend: FakeBackend,
    says: Says,
  ) {
    this.says = says;
  }

  static async start(says: Says): Promise<FakeSentinel> {
    const s: FakeSentinel = new FakeSentinel(await FakeBackend.start((cmd, conn) => s.answer(cmd, conn)), says);
    return s;
  }

  /** SENTINEL MASTER questions answered so far. */
  get questions(): number {
    return this.backend.commands.filter((c) => c[0] === 'SENTINEL' && c[1] === 'MASTER').length;
  }

  publish(channel: string, text: string): void {
    for (const c of this.subscribers) c.write(`*3\r\n${bulk('message')}${bulk(channel)}${bulk(text)}`);
  }

  private answer(cmd: string[], conn: FakeConnection): string {
    const [name, sub] = [cmd[0]!.toUpperCase(), (cmd[1] ?? '').toUpperCase()];
    if (name === 'SUBSCRIBE') {
      this.subscribers.push(conn);
      return cmd
        .slice(1)
        .map((ch, i) => `*3\r\n${bulk('subscribe')}${bulk(ch)}:${i + 1}\r\n`)
        .join('');
    }
    if (name === 'PING') return '+PONG\r\n';
    if (name !== 'SENTINEL' || cmd[2] !== 'm') return '-ERR unknown\r\n';
    const { port, epoch } = this.says;
    if (sub === 'MASTER') {
      const fields = [
        'name',
        'm',
        'ip',
        '127.0.0.1',
        'port',
        String(port),
        'flags',
        'master',
        'config-epoch',
        String(epoch),
      ];
      return `*${fields.length}\r\n${fields.map(bulk).join('')}`;
    }
    if (sub === 'GET-MASTER-ADDR-BY-NAME') return `*2\r\n${bulk('127.0.0.1')}${bulk(String(port))}`;
    if (sub === 'REPLICAS' || sub === 'SLAVES') return '*0\r\n';
    return '-ERR unknown\r\n';
  }
}

let a: RedisProcess;
let b: RedisProcess;
let c: RedisProcess;
const sentinels: FakeSentinel[] = [];
let proxy: Proxy;
let client: Redis;

beforeAll(async () => {
  [a, b, c] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  for (let i = 0; i < 3; i++) sentinels.push(await FakeSentinel.start({ port: a.port, epoch: 4 }));
  proxy = await startKeymux({
    mode: 'slots',
    sentinel: {
      sentinels: sentinels.map((s) => s.backend.address),
      refresh_interval_ms: 100,
      failover_wait_ms: 2000,
    },
    shards: [{ name: 's', sentinel_master: 'm', slots: ['0-16383'] }],
    // Its invalidation channel must follow the failover (below).
    near_cache: { enabled: true },
  });
  client = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await client.connect();
}, 30_000);

afterAll(async () => {
  client?.disconnect();
  await proxy?.close();
  for (const s of sentinels) await s.backend.close();
  await Promise.all([a, b, c].map((n) => n?.stop('SIGKILL')));
});

/** Resolves once every sentinel has been asked `n` more times (keymux's periodic check asks each one). */
async function checksPass(n: number): Promise<void> {
  const at = sentinels.map((s) => s.questions);
  await Promise.all(sentinels.map((s, i) => s.backend.until(() => s.questions >= at[i]! + n, `${n} checks`, 10_000)));
}

describe('sentinels that disagree about a primary', () => {
  it('follows +switch-master and the higher config-epoch; a sentinel still naming the old primary is ignored', async () => {
    await client.set('k0', 'on-a');
    expect(String(await redisCommand(a.port, 'GET', 'k0'))).toBe('on-a');

    // Failover to b at epoch 5: the leader (third sentinel) and the second know; the first has not heard yet.
    sentinels[1]!.says = sentinels[2]!.says = { port: b.port, epoch: 5 };
    sentinels[2]!.publish('+switch-master', `m 127.0.0.1 ${a.port} 127.0.0.1 ${b.port}`);
    await checksPass(1);
    // Many checks later keymux is still on b, although the first sentinel (asked first) names a at epoch 4.
    await checksPass(20);
    expect(proxy.topology.shards[0]!.address).toBe(b.address);
    expect(proxy.sentinel?.failovers.get('s')).toBe(1);
    // The near cache listens to the new primary (before the fix its channel stayed on a, which takes no writes
    // now: a value written on b was never invalidated in keymux).
    await waitFor(() => proxy.nearCache!.channels().every((ch) => ch.address === b.address), 'the channel on b');
    const setsOnA = (await commandCalls(a.port)).set ?? 0;
    for (let i = 1; i <= 50; i++) expect(await client.set(`k${i}`, 'after')).toBe('OK');
    expect(String(await redisCommand(b.port, 'MGET', 'k1', 'k50'))).toBe('after,after');
    expect((await commandCalls(a.port)).set ?? 0).toBe(setsOnA);

    // A sentinel late to announce the same failover (its +switch-master from a) moves nothing either.
    sentinels[0]!.says = { port: b.port, epoch: 5 };
    sentinels[0]!.publish('+switch-master', `m 127.0.0.1 ${a.port} 127.0.0.1 ${b.port}`);
    await checksPass(2);
    expect(proxy.sentinel?.failovers.get('s')).toBe(1);
  });

  it('an answer at a higher epoch wins even from a minority; an older one is taken only when every sentinel gives it', async () => {
    // Only the first sentinel has heard of a failover to c (epoch 6), and no event reached keymux: the periodic
    // check asks all three and takes the highest epoch.
    sentinels[0]!.says = { port: c.port, epoch: 6 };
    await checksPass(2);
    expect(proxy.topology.shards[0]!.address).toBe(c.address);
    expect(proxy.sentinel?.failovers.get('s')).toBe(2);

    // Two sentinels fall back to epoch 5 (a minority view is not needed to be stale: the other still says 6).
    sentinels[1]!.says = sentinels[2]!.says = { port: b.port, epoch: 5 };
    await checksPass(5);
    expect(proxy.topology.shards[0]!.address).toBe(c.address);

    // The sentinels were reset (re-created by an operator): every one names a at epoch 0. keymux follows.
    for (const s of sentinels) s.says = { port: a.port, epoch: 0 };
    await checksPass(2);
    expect(proxy.topology.shards[0]!.address).toBe(a.address);
    expect(proxy.sentinel?.failovers.get('s')).toBe(3);
    expect(await client.set('after-reset', 'x')).toBe('OK');
    expect(String(await redisCommand(a.port, 'GET', 'after-reset'))).toBe('x');
  });
});
