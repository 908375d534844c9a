/**
 * Pub/sub through keymux with real client libraries and tools, in slots and ring modes: ioredis (subscribe,
 * psubscribe, ssubscribe with their message events), node-redis (subscribe / pSubscribe / sSubscribe listeners),
 * and redis-cli SUBSCRIBE reading messages from its output. In ring mode keymux places a channel where the
 * ketama ring places the key of the same name, and a pattern on every shard.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { backendChannels, backendNumpat } from '../support/pubsub.js';
import type { Proxy } from '../../src/proxy.js';

let backends: RedisProcess[];
let slots: Proxy;
let ring: Proxy;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  slots = await startKeymux(slotsConfig(backends.map((b) => b.port)));
  ring = await startKeymux(ringConfig(backends.map((b) => b.port)));
});

afterAll(async () => {
  await slots?.close();
  await ring?.close();
  await Promise.all((backends ?? []).map((b) => b.stop()));
});

/** Resolves with the first `n` values an event emitter gives through `on`. */
function collect<T>(n: number, on: (push: (v: T) => void) => void): Promise<T[]> {
  return new Promise((resolve) => {
    const got: T[] = [];
    on((v) => {
      got.push(v);
      if (got.length === n) resolve(got);
    });
  });
}

describe.each([
  ['slots', () => slots],
  ['ring', () => ring],
])('client libraries (%s mode)', (mode, proxyOf) => {
  it('ioredis: subscribe, psubscribe and ssubscribe deliver to their handlers, counts are the client own', async () => {
    const proxy = proxyOf();
    const sub = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 1 });
    const pub = new Redis({ port: proxy.port, lazyConnect: true });
    await sub.connect();
    await pub.connect();
    const channels = [`io:${mode}:a`, `io:${mode}:b`, `io:${mode}:c`];
    expect(await sub.subscribe(...channels)).toBe(3);
    expect(await sub.psubscribe(`io:${mode}:*`)).toBe(4);
    expect(await sub.ssubscribe(`io:${mode}:s`)).toBe(1);
    const messages = collect<string>(6, (push) => sub.on('message', (ch: string, m: string) => push(`${ch}=${m}`)));
    const pmessages = collect<string>(6, (push) =>
      sub.on('pmessage', (p: string, ch: string, m: string) => push(`${p}|${ch}=${m}`)),
    );
    const smessages = collect<string>(2, (push) => sub.on('smessage', (ch: string, m: string) => push(`${ch}=${m}`)));
    for (const ch of channels) {
      expect(await pub.publish(ch, '1')).toBe(2); // its channel and its pattern
      expect(await pub.publish(ch, '2')).toBe(2);
    }
    expect(await pub.spublish(`io:${mode}:s`, 'x')).toBe(1);
    expect(await pub.spublish(`io:${mode}:s`, 'y')).toBe(1);
    expect((await messages).sort()).toEqual(channels.flatMap((ch) => [`${ch}=1`, `${ch}=2`]).sort());
    expect((await pmessages).sort()).toEqual(
      channels.flatMap((ch) => [`io:${mode}:*|${ch}=1`, `io:${mode}:*|${ch}=2`]).sort(),
    );
    expect(await smessages).toEqual([`io:${mode}:s=x`, `io:${mode}:s=y`]);
    expect(await sub.unsubscribe(channels[0])).toBe(3);
    expect(await pub.publish(channels[0], '3')).toBe(1); // only the pattern now
    // Where keymux subscribed: each channel on the shard that owns the key of the same name.
    for (const ch of channels.slice(1)) {
      const shard = backends[proxy.topology.router.shardFor(Buffer.from(ch))];
      expect(await backendChannels(shard.port)).toContain(ch);
    }
    for (const b of backends) expect(await backendNumpat(b.port)).toBe(1);
    sub.disconnect();
    pub.disconnect();
    await waitFor(
      async () => (await Promise.all(backends.map((b) => backendNumpat(b.port)))).every((n) => n === 0),
      'unsubscribed',
    );
  });

  it('node-redis: subscribe, pSubscribe and sSubscribe listeners, and unsubscribe', async () => {
    const proxy = proxyOf();
    const pub = createClient({ socket: { port: proxy.port } });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on('error', () => undefined); // a failed assertion must not leave an unhandled error
    await pub.connect();
    await sub.connect();
    const got: string[] = [];
    let notify = (): void => undefined;
    const arrived = (n: number) =>
      new Promise<void>((resolve) => {
        notify = () => {
          if (got.length >= n) resolve();
        };
        notify();
      });
    await sub.subscribe(`nr:${mode}:news`, (m, ch) => {
      got.push(`message ${ch} ${m}`);
      notify();
    });
    await sub.pSubscribe(`nr:${mode}:*`, (m, ch) => {
      got.push(`pmessage ${ch} ${m}`);
      notify();
    });
    await sub.sSubscribe(`nr:${mode}:shard`, (m, ch) => {
      got.push(`smessage ${ch} ${m}`);
      notify();
    });
    expect(await pub.publish(`nr:${mode}:news`, 'hello')).toBe(2);
    expect(await pub.sPublish(`nr:${mode}:shard`, 'sharded')).toBe(1);
    await arrived(3);
    expect(got.sort()).toEqual(
      [`message nr:${mode}:news hello`, `pmessage nr:${mode}:news hello`, `smessage nr:${mode}:shard sharded`].sort(),
    );
    await sub.unsubscribe(`nr:${mode}:news`);
    await sub.pUnsubscribe();
    await sub.sUnsubscribe();
    expect(await pub.publish(`nr:${mode}:news`, 'again')).toBe(0);
    // Out of subscribed mode, the same connection runs ordinary commands again.
    expect(String(await sub.ping())).toBe('PONG'); // node-redis returns it as a Buffer, as against Redis itself
    await sub.quit();
    await pub.quit();
  });
});

describe('redis-cli', () => {
  it('SUBSCRIBE through keymux prints the messages published', async () => {
    const cli = spawn('redis-cli', ['-p', String(slots.port), 'SUBSCRIBE', 'cli:news'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let wake = (): void => undefined;
    cli.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      wake();
    });
    const exited = new Promise<never>((_, reject) =>
      cli.once('exit', () => reject(new Error(`redis-cli exited; output: ${out}`))),
    );
    exited.catch(() => undefined);
    const seen = async (text: string): Promise<void> => {
      while (!out.includes(text)) await Promise.race([new Promise<void>((resolve) => (wake = resolve)), exited]);
    };
    try {
      await seen('cli:news\n1\n'); // the confirmation: subscribe, channel, count
      for (const m of ['first', 'second', 'third'])
        expect(await redisCommand(slots.port, 'PUBLISH', 'cli:news', m)).toBe(1);
      await seen('third\n');
      expect(out).toBe(
        [
          'subscribe',
          'cli:news',
          '1',
          'message',
          'cli:news',
          'first',
          'message',
          'cli:news',
          'second',
          'message',
          'cli:news',
          'third',
          '',
        ].join('\n'),
      );
    } finally {
      cli.kill('SIGTERM');
    }
  });
});
