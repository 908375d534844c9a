/**
 * Pub/sub against a frozen shard: a real redis-server stopped with SIGSTOP (as `docker pause` does) still completes
 * TCP connects from its listen backlog but answers nothing. keymux's shared subscriber connection to it must read as
 * down, not ready, for as long as it is frozen (a connection ready on TCP connect alone subscribed everything again,
 * timed out and started over at every backoff, counting a resubscription each time), clients' SUBSCRIBEs to its
 * channels are answered within the connect timeout (the subscription is made when the shard is back), a PUBLISH
 * through keymux to it gets an error rather than a hang, clients and channels on the other shards are served
 * throughout, and after SIGCONT (or a restart of the frozen process) keymux subscribes again once, without a second
 * confirmation to the client. keymux's log is captured: one warning per outage.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { setRootLogger } from '../../src/log.js';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import { httpGet, scrape, valueOf } from '../support/metrics.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import { PubSubSocket, backendNumpat, backendNumsub, cmd } from '../support/pubsub.js';
import { KEEPALIVE_MS } from '../../src/pubsub/subscriber-connection.js';
import type { Proxy } from '../../src/proxy.js';

const CONNECT_TIMEOUT_MS = 300;
let backends: RedisProcess[] = [];
let proxy: Proxy;
let admin: number;
const sockets: PubSubSocket[] = [];
/** keymux's log lines (JSON), captured from start-up on. */
const logLines: Array<{ level: number; msg: string; address?: string }> = [];
const clients: Redis[] = [];

async function socket(): Promise<PubSubSocket> {
  const s = await PubSubSocket.connect(proxy.port);
  sockets.push(s);
  return s;
}

function subscriberOf(shard: number): { state: string; lastError: string } {
  const state = proxy.pubsub.subscriberState(backends[shard].address);
  if (state === null) throw new Error(`no subscriber connection to shard ${shard}`);
  return state;
}

/** Warnings that keymux's subscriber connection to `shard` failed (an operator's alert: one per outage). */
const subscriberWarnings = (shard: number): number =>
  logLines.filter(
    (l) => l.level === 40 && l.msg === 'subscriber connection failed' && l.address === backends[shard].address,
  ).length;

const notReadyConnections = async (): Promise<number> =>
  valueOf(await scrape(admin), 'keymux_pubsub_connections', { state: 'not_ready' });
const shardUp = async (shard: string): Promise<number> => valueOf(await scrape(admin), 'keymux_shard_up', { shard });

/** Freezes shard c for the duration of `during`, resuming it whatever happens. */
async function frozen(during: () => Promise<void>): Promise<void> {
  process.kill(backends[2].pid, 'SIGSTOP');
  try {
    await during();
  } finally {
    process.kill(backends[2].pid, 'SIGCONT');
  }
}

/** Shard c answers again: its data connection and keymux's subscriber connection to it are both ready. */
async function resumed(): Promise<void> {
  await waitFor(async () => (await shardUp('c')) === 1, 'shard c up again after SIGCONT');
  await waitFor(() => subscriberOf(2).state === 'ready', 'the subscriber connection to shard c ready again');
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  setRootLogger(pino({ level: 'debug' }, { write: (line: string) => logLines.push(JSON.parse(line)) }));
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      {
        admin: { address: '127.0.0.1:0' },
        backend: { connect_timeout_ms: CONNECT_TIMEOUT_MS, timeout_ms: CONNECT_TIMEOUT_MS },
      },
    ),
  );
  admin = proxy.adminPort!;
  await waitFor(
    async () => (await httpGet(admin, '/readyz')).body === 'ready: 3/3 shards reachable\n',
    'every shard connected',
  );
});

afterAll(async () => {
  for (const s of sockets) s.close();
  for (const c of clients) c.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('pub/sub and a frozen shard', () => {
  it('a SUBSCRIBE to its channel is answered; its subscriber connection reads down until SIGCONT, then subscribes', async () => {
    const channelA = keyOn(proxy, 0, 'healthy');
    const channelB = keyOn(proxy, 1, 'later');
    const channelC = keyOn(proxy, 2, 'frozen');
    const healthy = await socket();
    healthy.send(cmd('SUBSCRIBE', channelA));
    await healthy.untilCount(1);

    const waiting = await socket();
    const others = await socket();
    const shardChannelC = keyOn(proxy, 2, 'sharded');
    await frozen(async () => {
      // keymux has no subscriber connection to c yet: it connects, TCP connects, the handshake goes unanswered.
      waiting.send(cmd('SUBSCRIBE', channelC));
      await waiting.untilCount(1);
      expect(waiting.frames).toEqual([['subscribe', channelC, 1]]);
      // A shard channel placed on c, and a pattern placed on every shard (c too): answered the same way.
      others.send(cmd('SSUBSCRIBE', shardChannelC), cmd('PSUBSCRIBE', 'healthy*'));
      await others.untilCount(2);
      expect(others.frames).toEqual([
        ['ssubscribe', shardChannelC, 1],
        ['psubscribe', 'healthy*', 1],
      ]);
      await waitFor(
        () => subscriberOf(2).lastError.includes('did not answer the connection'),
        'the subscriber connection to shard c reported as not answering',
      );
      // Never ready while frozen: nothing was subscribed on c, so nothing was subscribed again either.
      expect(subscriberOf(2).state).not.toBe('ready');
      expect(proxy.pubsub.stats.resubscribes).toBe(0);
      expect(await notReadyConnections()).toBe(1);
      // Logged once, as a warning, though the connection was never ready (its retries log at debug).
      expect(subscriberWarnings(2)).toBe(1);
      // A PUBLISH / SPUBLISH to c through keymux waits once at the publish gate (keymux's subscriptions there are
      // down: it tries to connect at once), then is answered with the shard's error.
      const gatedBefore = proxy.pubsub.stats.gated;
      await expect(redisCommand(proxy.port, 'PUBLISH', channelC, 'lost')).rejects.toThrow(/shard 'c'/);
      await expect(redisCommand(proxy.port, 'SPUBLISH', shardChannelC, 'lost')).rejects.toThrow(/shard 'c'/);
      expect(proxy.pubsub.stats.gated).toBe(gatedBefore + 2);
      // The other shards serve their subscribers and new subscriptions meanwhile; the pattern hears shard a.
      expect(await redisCommand(proxy.port, 'PUBLISH', channelA, 'during')).toBe(2);
      await healthy.untilMessages(channelA, 1);
      await others.untilMessages(`healthy*|${channelA}`, 1);
      healthy.send(cmd('SUBSCRIBE', channelB));
      await healthy.untilCount(3);
      expect(healthy.frames.at(-1)).toEqual(['subscribe', channelB, 2]);
      expect(await redisCommand(proxy.port, 'PUBLISH', channelB, 'during')).toBe(1);
      await healthy.untilMessages(channelB, 1);
    });

    await resumed();
    await waitFor(async () => (await backendNumsub(backends[2].port, channelC)) === 1, 'subscribed on shard c');
    expect(await redisCommand(proxy.port, 'PUBLISH', channelC, 'after')).toBe(1);
    await waiting.untilMessages(channelC, 1);
    // One confirmation, then the message: nothing else reached the client.
    expect(waiting.frames).toEqual([
      ['subscribe', channelC, 1],
      ['message', channelC, 'after'],
    ]);
    await waitFor(
      async () => (await backendNumsub(backends[2].port, shardChannelC, true)) === 1,
      'shard channel subscribed on shard c',
    );
    expect(await backendNumpat(backends[2].port)).toBe(1);
    expect(await redisCommand(proxy.port, 'SPUBLISH', shardChannelC, 'after')).toBe(1);
    await others.untilMessages(shardChannelC, 1);
    expect(others.frames.slice(2)).toEqual([
      ['pmessage', 'healthy*', channelA, 'during'],
      ['smessage', shardChannelC, 'after'],
    ]);
    expect(await notReadyConnections()).toBe(0);
    expect(subscriberWarnings(2)).toBe(1);
  });

  it('a frozen shard restarted instead of resumed: the subscription made while it was frozen is made on the new process', async () => {
    const channelC = keyOn(proxy, 2, 'reborn');
    const s = await socket();
    const shard = backends[2];
    process.kill(shard.pid, 'SIGSTOP');
    try {
      s.send(cmd('SUBSCRIBE', channelC));
      await s.untilCount(1);
      await waitFor(
        () => subscriberOf(2).lastError.includes('did not answer the connection'),
        'the subscriber connection to shard c reported as not answering',
      );
      await shard.stop('SIGKILL'); // a stopped process dies of SIGKILL too
    } finally {
      if (shard.process.exitCode === null && shard.process.signalCode === null) process.kill(shard.pid, 'SIGCONT');
    }
    await shard.restart();
    await resumed();
    await waitFor(async () => (await backendNumsub(shard.port, channelC)) === 1, 'subscribed on the new process');
    expect(await redisCommand(proxy.port, 'PUBLISH', channelC, 'reborn')).toBe(1);
    await s.untilMessages(channelC, 1);
    expect(s.frames).toEqual([
      ['subscribe', channelC, 1],
      ['message', channelC, 'reborn'],
    ]);
  });

  it('a subscription confirmed before the shard froze is noticed lost, stays down until SIGCONT, then is made again once', async () => {
    const channelA = keyOn(proxy, 0, 'elsewhere');
    const channelC = keyOn(proxy, 2, 'confirmed');
    const raw = await socket();
    raw.send(cmd('SUBSCRIBE', channelC), cmd('PSUBSCRIBE', 'elsewhere*'));
    await raw.untilCount(2);
    // A library's view: ioredis subscribed through keymux too, listening for messages.
    const sub = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
    clients.push(sub);
    const heard: string[] = [];
    sub.on('message', (_channel: string, message: string) => heard.push(message));
    await sub.connect();
    await sub.subscribe(channelC);
    await waitFor(() => subscriberOf(2).state === 'ready', 'the subscriber connection to shard c ready');
    const resubscribesBefore = proxy.pubsub.stats.resubscribes;
    const warningsBefore = subscriberWarnings(2);

    await frozen(async () => {
      // Nothing flows on an idle subscriber connection: its keepalive PING goes unanswered, the operation timeout
      // resets it, and the reconnection's handshake is not answered either.
      await waitFor(
        () => subscriberOf(2).lastError.includes('did not answer the connection'),
        'the subscriber connection to shard c reported as not answering',
        KEEPALIVE_MS + 10_000,
      );
      expect(subscriberOf(2).state).not.toBe('ready');
      expect(await notReadyConnections()).toBe(1);
      // Not subscribed again (and again) while frozen, and one warning for the outage.
      expect(proxy.pubsub.stats.resubscribes).toBe(resubscribesBefore);
      expect(subscriberWarnings(2)).toBe(warningsBefore + 1);
      // The pattern is placed on every shard: a message published on a healthy one still arrives.
      expect(await redisCommand(proxy.port, 'PUBLISH', channelA, 'during')).toBe(1);
      await raw.untilMessages(`elsewhere*|${channelA}`, 1);
    });

    await resumed();
    // What is placed on c, subscribed again once each: this channel and pattern, and the earlier tests' channels,
    // shard channel and pattern.
    expect(proxy.pubsub.stats.resubscribes).toBe(resubscribesBefore + 6);
    await waitFor(async () => (await backendNumsub(backends[2].port, channelC)) === 1, 'subscribed on shard c');
    // keymux's two clients of the channel are reached through its one subscription on c.
    expect(await redisCommand(proxy.port, 'PUBLISH', channelC, 'after')).toBe(2);
    await raw.untilMessages(channelC, 1);
    await waitFor(() => heard.length === 1, 'ioredis to hear the message');
    expect(heard).toEqual(['after']);
    expect(raw.frames).toEqual([
      ['subscribe', channelC, 1],
      ['psubscribe', 'elsewhere*', 2],
      ['pmessage', 'elsewhere*', channelA, 'during'],
      ['message', channelC, 'after'],
    ]);
    expect(sub.status).toBe('ready');
  });
});
