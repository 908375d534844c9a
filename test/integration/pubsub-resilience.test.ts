/**
 * Pub/sub when things move or fail (slots mode): the order of a SUBSCRIBE's confirmation behind a slow earlier
 * command and of a message behind its confirmation (a scripted backend holds the earlier reply), a backend
 * restart while subscribed (keymux subscribes again; the client keeps its connection; nothing published through
 * keymux after the shard is back is lost), a reload that moves a channel to another shard while it is published
 * to continuously (its subscribers move with it: every message published through keymux arrives, once, in
 * order), and a subscriber that stops reading (disconnected at clients.max_output_bytes, others unaffected).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { configFrom, slotsConfig, startKeymux } from '../support/keymux.js';
import { FakeBackend, bulk, keyOn, waitFor, type FakeConnection } from '../support/fake-backend.js';
import { PubSubSocket, backendChannels, backendNumsub, cmd } from '../support/pubsub.js';
import type { Proxy } from '../../src/proxy.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function socket(port: number): Promise<PubSubSocket> {
  const s = await PubSubSocket.connect(port);
  cleanup.push(() => s.close());
  return s;
}

async function redis(): Promise<RedisProcess> {
  const r = await startRedis();
  cleanup.push(() => r.stop());
  return r;
}

async function keymux(obj: Record<string, unknown>, builtin = false): Promise<Proxy> {
  const p = await startKeymux(obj, { builtinCommandTable: builtin });
  cleanup.push(() => p.close());
  return p;
}

describe('order of confirmations, replies and messages', () => {
  it('a SUBSCRIBE is confirmed after the earlier reply, and its message follows the confirmation', async () => {
    // Shard a is scripted: it holds the reply of GET until the test releases it. Shard b is a real redis.
    let heldGet: (() => void) | null = null;
    const fake = await FakeBackend.start((args, conn) => {
      if (args[0].toUpperCase() === 'GET') {
        heldGet = () => conn.write('$4\r\nslow\r\n');
        return null;
      }
      return '+OK\r\n';
    });
    cleanup.push(() => fake.close());
    const b = await redis();
    const proxy = await keymux(
      {
        mode: 'slots',
        shards: [
          { name: 'a', address: fake.address, slots: ['0-8191'] },
          { name: 'b', address: b.address, slots: ['8192-16383'] },
        ],
      },
      true,
    );
    const key = keyOn(proxy, 0, 'held');
    const channel = keyOn(proxy, 1, 'ordered');
    const c = await socket(proxy.port);
    c.send(cmd('GET', key), cmd('SUBSCRIBE', channel));
    // keymux's own subscription is made on b (the channel's shard) while the GET is still unanswered...
    await waitFor(async () => (await backendNumsub(b.port, channel)) === 1, 'keymux subscribed on b');
    // ...and a message published on b reaches keymux, which must not hand it over before the confirmation.
    expect(await redisCommand(b.port, 'PUBLISH', channel, 'early')).toBe(1);
    await waitFor(() => proxy.pubsub.stats.messages[0] === 1, 'the message to reach keymux');
    expect(c.frames).toEqual([]);
    (heldGet as unknown as () => void)();
    await c.untilCount(3);
    expect(c.frames).toEqual(['slow', ['subscribe', channel, 1], ['message', channel, 'early']]);
  });
});

describe('receiver counts', () => {
  it("a PUBLISH the node answered without counting keymux's subscription reached none of keymux's clients", async () => {
    // A scripted node: it confirms keymux's SUBSCRIBE, and answers PUBLISH with the count the test sets. A node
    // that dropped keymux's subscription (a cluster master losing its slot drops shard channels, and answered an
    // SPUBLISH with 0 just before telling keymux) counts 0: keymux's clients did not get the message either, so
    // the reply is 0, not the number of keymux's subscribers (it answered max(0, 0 - 1) + 2 = 2 before).
    let published = ':1\r\n';
    const fake = await FakeBackend.start((args) => {
      const name = args[0]!.toUpperCase();
      if (name === 'SUBSCRIBE')
        return args
          .slice(1)
          .map((ch, i) => `*3\r\n${bulk('subscribe')}${bulk(ch)}:${i + 1}\r\n`)
          .join('');
      if (name === 'PUBLISH') return published;
      return '+OK\r\n';
    });
    cleanup.push(() => fake.close());
    const proxy = await keymux(
      { mode: 'slots', shards: [{ name: 'a', address: fake.address, slots: ['0-16383'] }] },
      true,
    );
    const [s1, s2] = [await socket(proxy.port), await socket(proxy.port)];
    s1.send(cmd('SUBSCRIBE', 'counted'));
    s2.send(cmd('SUBSCRIBE', 'counted'));
    await Promise.all([s1.untilCount(1), s2.untilCount(1)]);
    // keymux's one subscription on the node stands for its two clients.
    expect(await redisCommand(proxy.port, 'PUBLISH', 'counted', 'x')).toBe(2);
    published = ':3\r\n'; // two direct subscribers on the node, and keymux
    expect(await redisCommand(proxy.port, 'PUBLISH', 'counted', 'y')).toBe(4);
    published = ':0\r\n';
    expect(await redisCommand(proxy.port, 'PUBLISH', 'counted', 'z')).toBe(0);
  });
});

describe('backend restart while subscribed', () => {
  it('keymux subscribes again; the client keeps its connection; publishes through keymux are not lost', async () => {
    const backends = [await redis(), await redis()];
    const proxy = await keymux(slotsConfig(backends.map((r) => r.port)));
    const channel = keyOn(proxy, 1, 'restart');
    const shard = backends[1];
    const s = await socket(proxy.port);
    s.send(cmd('SUBSCRIBE', channel), cmd('PSUBSCRIBE', 'restart*'));
    await s.untilCount(2);
    expect(await redisCommand(proxy.port, 'PUBLISH', channel, 'before')).toBe(2);
    await s.untilMessages(channel, 1);

    await shard.stop('SIGKILL');
    // While the shard is down, a PUBLISH to it fails (nothing is published, so nothing is lost).
    expect(String(await redisCommand(proxy.port, 'PUBLISH', channel, 'down').catch((e: Error) => e.message))).toMatch(
      /^ERR keymux: shard 'b'/,
    );
    await shard.restart();
    // The first PUBLISH through keymux that the restarted shard accepts is delivered: it waits for keymux's
    // subscriptions there to be made again (the publish gate).
    let published = 0;
    let n = 0;
    for (; published === 0 && n < 500; n++) {
      const r = await redisCommand(proxy.port, 'PUBLISH', channel, `after${n}`).catch(() => null);
      if (typeof r === 'number') published = r;
      else await new Promise((res) => setTimeout(res, 10)); // the data connection reconnects with backoff
    }
    expect(published).toBe(2); // the channel and the pattern, both subscribed again
    await s.untilMessages(channel, 2);
    await s.untilMessages(`restart*|${channel}`, 2);
    expect(s.frames.at(-2)).toEqual(['message', channel, `after${n - 1}`]);
    // Messages published on the shard directly reach the client again too.
    expect(await backendNumsub(shard.port, channel)).toBe(1);
    expect(await redisCommand(shard.port, 'PUBLISH', channel, 'direct')).toBe(2);
    await s.untilMessages(channel, 3);
    expect(s.closed).toBe(false);
    expect(proxy.pubsub.stats.resubscribes).toBe(2);
  });
});

describe('backend authentication', () => {
  it('subscriber connections authenticate as data connections do (backend.password)', async () => {
    const r = await startRedis({ password: 'sekret' });
    cleanup.push(() => r.stop());
    const proxy = await keymux(slotsConfig([r.port], { backend: { password: 'sekret' } }));
    const s = await socket(proxy.port);
    s.send(cmd('SUBSCRIBE', 'authed'));
    await s.untilCount(1);
    expect(await redisCommand(proxy.port, 'PUBLISH', 'authed', 'ok')).toBe(1);
    await s.untilMessages('authed', 1);
  });

  it("a node asking for a password keymux lacks: the client's SUBSCRIBE gets the node's NOAUTH", async () => {
    // The subscriber connection's handshake PING is answered with NOAUTH: the node is alive, so the connection is
    // ready and the SUBSCRIBE it sends is refused with the node's error, which goes to the client (rather than a
    // confirmation of a subscription that cannot be made).
    const r = await startRedis({ password: 'sekret' });
    cleanup.push(() => r.stop());
    const proxy = await keymux(slotsConfig([r.port]));
    const s = await socket(proxy.port);
    s.send(cmd('SUBSCRIBE', 'locked'));
    await s.untilCount(1);
    expect(String(s.frames[0])).toMatch(/NOAUTH/);
    expect(proxy.pubsub.stats.refused).toBe(1);
  });
});

describe('subscriber connection lost while the shard stays up', () => {
  it('a PUBLISH through keymux waits for the subscriptions to be made again instead of going unheard', async () => {
    const backends = [await redis()];
    const proxy = await keymux(slotsConfig([backends[0].port]));
    const s = await socket(proxy.port);
    s.send(cmd('SUBSCRIBE', 'kicked'));
    await s.untilCount(1);
    // The shard drops keymux's subscriber connection; keymux notices and waits (backoff) before reconnecting.
    expect(await redisCommand(backends[0].port, 'CLIENT', 'KILL', 'TYPE', 'pubsub')).toBe(1);
    await waitFor(() => proxy.pubsub.gauges().connectionsReady === 0, 'keymux to notice', 5000, 1);
    // Published at once, within the backoff: without the gate the shard would count 0 receivers.
    expect(await redisCommand(proxy.port, 'PUBLISH', 'kicked', 'heard')).toBe(1);
    await s.untilMessages('kicked', 1);
    expect(s.frames).toEqual([
      ['subscribe', 'kicked', 1],
      ['message', 'kicked', 'heard'],
    ]);
    expect(proxy.pubsub.stats.gated).toBe(1);
  });
});

describe('subscriber connection reconnecting on its own', () => {
  it('a PUBLISH through keymux while the reconnection is not answered yet waits for the subscriptions too', async () => {
    // A scripted node that delivers a PUBLISH to the connection subscribed to its channel, if there is one. The test
    // drops keymux's subscriber connection and holds the handshake PING of the reconnection keymux makes once its
    // backoff runs out: keymux is connecting, on its own (not because of a publish), when the PUBLISH comes.
    let subscriber: FakeConnection | null = null;
    let heldHandshake: FakeConnection | null = null;
    const published: string[] = [];
    const fake = await FakeBackend.start((args, conn) => {
      const verb = args[0].toUpperCase();
      if (verb === 'PING' && conn.commands.length === 1) {
        heldHandshake = conn;
        return null;
      }
      if (verb === 'SUBSCRIBE') {
        subscriber = conn;
        return args
          .slice(1)
          .map((name, i) => `*3\r\n$9\r\nsubscribe\r\n${bulk(name)}:${i + 1}\r\n`)
          .join('');
      }
      if (verb === 'PUBLISH') {
        published.push(args[2]);
        const reached =
          subscriber !== null && subscriber.write(`*3\r\n$7\r\nmessage\r\n${bulk(args[1])}${bulk(args[2])}`);
        return `:${reached ? 1 : 0}\r\n`;
      }
      return '+OK\r\n';
    });
    cleanup.push(() => fake.close());
    const proxy = await keymux(slotsConfig([fake.port]), true);
    const s = await socket(proxy.port);
    s.send(cmd('SUBSCRIBE', 'news'));
    await s.untilCount(1);

    fake.scriptHandshakePing = true;
    (subscriber as unknown as FakeConnection).socket.destroy();
    subscriber = null;
    await fake.until(() => heldHandshake !== null, 'keymux to reconnect (its handshake PING)');
    expect(proxy.pubsub.subscriberState(fake.address)?.state).toBe('connecting');

    const reply = redisCommand(proxy.port, 'PUBLISH', 'news', 'hello');
    await waitFor(() => proxy.pubsub.stats.gated === 1 || published.length > 0, 'the PUBLISH to be gated or sent');
    // Not sent to the node while keymux is not subscribed there (it would reach nobody).
    expect(published).toEqual([]);
    (heldHandshake as unknown as FakeConnection).write('+PONG\r\n');
    expect(await reply).toBe(1);
    await s.untilMessages('news', 1);
    expect(s.frames).toEqual([
      ['subscribe', 'news', 1],
      ['message', 'news', 'hello'],
    ]);
  });
});

describe('reload that moves a channel', () => {
  it('its subscribers move with it: every message published through keymux arrives once, in order', async () => {
    const backends = [await redis(), await redis()];
    const before = {
      mode: 'slots',
      shards: [
        { name: 'a', address: backends[0].address, slots: ['0-8191'] },
        { name: 'b', address: backends[1].address, slots: ['8192-16383'] },
      ],
    };
    const proxy = await keymux(before);
    // A channel in slots 4096-8191: on a now, on b once the reload gives b those slots.
    let channel = '';
    for (let i = 0; channel === ''; i++) {
      const slot = proxy.topology.router.slotFor(Buffer.from(`moving:${i}`));
      if (slot >= 4096 && slot < 8192) channel = `moving:${i}`;
    }
    const subs = [await socket(proxy.port), await socket(proxy.port)];
    for (const s of subs) {
      s.send(cmd('SUBSCRIBE', channel));
      await s.untilCount(1);
    }
    expect(await backendChannels(backends[0].port)).toEqual([channel]);
    const pub = await socket(proxy.port);
    let sent = 0;
    let stop = false;
    const publishing = (async () => {
      while (!stop) {
        pub.send(...Array.from({ length: 10 }, () => cmd('PUBLISH', channel, `m${sent++}`)));
        await pub.untilCount(sent);
      }
    })();
    await subs[0].untilMessages(channel, 100);
    const after = {
      mode: 'slots',
      shards: [
        { name: 'a', address: backends[0].address, slots: ['0-4095'] },
        { name: 'b', address: backends[1].address, slots: ['4096-16383'] },
      ],
    };
    expect(proxy.reload(configFrom({ ...after, migration: { enabled: false } }))).toBeNull();
    await waitFor(async () => (await backendChannels(backends[1].port)).includes(channel), 'subscribed on b');
    const moved = sent;
    await subs[0].untilMessages(channel, moved + 100);
    stop = true;
    await publishing;
    expect(pub.frames.every((f) => f === 2)).toBe(true); // every PUBLISH reached both subscribers
    for (const s of subs) {
      await s.untilMessages(channel, sent);
      const bodies = s.frames.slice(1).map((f) => (f as string[])[2]);
      expect(bodies).toEqual(Array.from({ length: sent }, (_, i) => `m${i}`));
    }
    await waitFor(async () => (await backendChannels(backends[0].port)).length === 0, 'unsubscribed on a');
    expect(proxy.pubsub.stats.moves).toBeGreaterThanOrEqual(1);
  });
});

describe('a subscriber that does not read', () => {
  it('is disconnected at clients.max_output_bytes; keymux keeps reading and others get every message', async () => {
    const backends = [await redis()];
    const proxy = await keymux(slotsConfig([backends[0].port], { clients: { max_output_bytes: 1 << 20 } }));
    const slow = await socket(proxy.port);
    const fast = await socket(proxy.port);
    for (const s of [slow, fast]) {
      s.send(cmd('SUBSCRIBE', 'flood'));
      await s.untilCount(1);
    }
    slow.socket.pause(); // stops reading: the kernel buffers fill, then keymux's
    const body = 'x'.repeat(16 * 1024);
    const total = 1000; // 16 MiB: past every socket buffer and the 1 MiB bound
    const pub = await socket(proxy.port);
    for (let i = 0; i < total; i += 50) {
      pub.send(...Array.from({ length: 50 }, () => cmd('PUBLISH', 'flood', body)));
      await pub.untilCount(i + 50);
    }
    await fast.untilMessages('flood', total);
    await waitFor(() => proxy.stats.outputLimitDisconnects === 1, 'the slow subscriber to be disconnected');
    slow.socket.resume(); // it reads what the kernel held, then the close
    await slow.untilClosed();
    expect(slow.counts.get('flood') ?? 0).toBeLessThan(total);
    expect(fast.closed).toBe(false);
    expect(await redisCommand(proxy.port, 'PUBSUB', 'NUMSUB', 'flood')).toEqual(['flood', 1]);
  });
});
