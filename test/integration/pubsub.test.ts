/**
 * Pub/sub in slots mode against three real redis-servers: reply shapes byte for byte against a direct
 * redis-server, where keymux places channels (the shard the name routes to, hash tags included) and patterns
 * (every shard), exactly-once delivery of message and pmessage (published through keymux and directly on a
 * shard), counts that are the clients' own, PUBSUB answered for the whole keyspace, the order of confirmations,
 * replies and messages, and one backend subscription per channel however many clients subscribe.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { globMatch } from '../../src/pubsub/glob.js';
import {
  PubSubSocket,
  backendChannels,
  backendNumpat,
  backendNumsub,
  cmd,
  isMessage,
  type Frame,
} from '../support/pubsub.js';
import type { Proxy } from '../../src/proxy.js';
import net from 'node:net';
import { scrape, valueOf } from '../support/metrics.js';

let backends: RedisProcess[];
let proxy: Proxy;
const open: PubSubSocket[] = [];

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      { admin: '127.0.0.1:0' },
    ),
  );
});

afterAll(async () => {
  for (const s of open) s.close();
  await proxy?.close();
  await Promise.all((backends ?? []).map((b) => b.stop()));
});

async function client(port = proxy.port): Promise<PubSubSocket> {
  const s = await PubSubSocket.connect(port);
  open.push(s);
  return s;
}

/** The backend a name routes to (the rule keymux uses for keys). */
function owner(name: string): RedisProcess {
  return backends[proxy.topology.router.shardFor(Buffer.from(name))];
}

/** Two names that route to different shards, with a given prefix. */
function namesOnShards(prefix: string, count: number): string[] {
  const out: string[] = [];
  const used = new Set<number>();
  for (let i = 0; out.length < count && i < 10_000; i++) {
    const n = `${prefix}${i}`;
    const s = proxy.topology.router.shardFor(Buffer.from(n));
    if (used.has(s) && used.size < backends.length) continue;
    used.add(s);
    out.push(n);
  }
  return out;
}

/** Every byte a connection receives until the server closes it (the script ends with QUIT). */
function exchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', reject);
    setTimeout(() => {
      s.destroy();
      reject(new Error(`no close; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`));
    }, 10_000);
  });
}

describe('pub/sub replies (slots mode)', () => {
  it('are the bytes a redis-server writes: confirmations with the client own counts, subscribed mode, RESET', async () => {
    const script = Buffer.concat([
      cmd('SUBSCRIBE', 'oracle:a', 'oracle:a', 'oracle:b'),
      cmd('GET', 'oracle:x'), // refused in subscribed mode
      cmd('NOSUCH'), // unknown commands are reported first
      cmd('GET'), // then arity
      cmd('CLIENT', 'ID'), // subcommands by their full name
      cmd('PING'),
      cmd('PING', 'hi'),
      cmd('PING', 'a', 'b'),
      cmd('PSUBSCRIBE', 'oracle:p*'),
      cmd('SSUBSCRIBE', 'oracle:s'),
      cmd('UNSUBSCRIBE', 'oracle:a', 'oracle:none'),
      cmd('SUNSUBSCRIBE'),
      cmd('PUNSUBSCRIBE'),
      cmd('PUNSUBSCRIBE'),
      cmd('UNSUBSCRIBE'),
      cmd('UNSUBSCRIBE'),
      cmd('GET', 'oracle:x'), // no longer subscribed
      cmd('SUBSCRIBE', 'oracle:z'),
      cmd('RESET'),
      cmd('GET', 'oracle:x'),
      cmd('SUNSUBSCRIBE', 'oracle:q'),
      cmd('PUBSUB', 'NUMSUB', 'oracle:nobody'),
      cmd('PUBSUB', 'CHANNELS', 'oracle:*', 'extra'),
      cmd('PUBSUB', 'NUMPAT', 'extra'),
      cmd('PUBSUB', 'HELP'),
      cmd('QUIT'),
    ]);
    const direct = await exchange(backends[0].port, script);
    const viaKeymux = await exchange(proxy.port, script);
    expect(viaKeymux).toBe(direct);
    expect(direct).toContain('*3\r\n$9\r\nsubscribe\r\n$8\r\noracle:b\r\n:2\r\n');
    expect(direct).toContain(
      "-ERR Can't execute 'client|id': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
  });

  it('CLIENT REPLY OFF / SKIP / ON silence replies as Redis does; subscription confirmations are still pushed', async () => {
    const script = Buffer.concat([
      cmd('CLIENT', 'REPLY', 'OFF'),
      cmd('PING', 'silenced'),
      cmd('CLIENT', 'REPLY', 'FOO'), // its error is silenced too
      cmd('CLIENT', 'REPLY', 'SKIP'), // ignored while OFF
      cmd('SUBSCRIBE', 'reply:a'), // pushed
      cmd('PING', 'silenced'),
      cmd('UNSUBSCRIBE', 'reply:a'), // pushed
      cmd('CLIENT', 'REPLY', 'ON'),
      cmd('PING', 'heard'),
      cmd('CLIENT', 'REPLY', 'SKIP'),
      cmd('PING', 'skipped'),
      cmd('PING', 'heard again'),
      cmd('CLIENT', 'REPLY', 'OFF'),
      cmd('RESET'), // answers, and turns replies back on
      cmd('PING', 'after reset'),
      cmd('QUIT'),
    ]);
    const direct = await exchange(backends[0].port, script);
    expect(await exchange(proxy.port, script)).toBe(direct);
    expect(direct).toContain('$5\r\nheard\r\n');
    expect(direct).not.toContain('silenced');
  });

  it('UNSUBSCRIBE without arguments drops every channel, counting down', async () => {
    const c = await client();
    c.send(cmd('SUBSCRIBE', 'all:1', 'all:2', 'all:3'), cmd('PSUBSCRIBE', 'all:*'), cmd('UNSUBSCRIBE'));
    await c.untilCount(7);
    const drops = c.frames.slice(4) as Array<[string, string, number]>;
    expect(drops.map((f) => f[0])).toEqual(['unsubscribe', 'unsubscribe', 'unsubscribe']);
    expect(drops.map((f) => f[1]).sort()).toEqual(['all:1', 'all:2', 'all:3']);
    expect(drops.map((f) => f[2])).toEqual([3, 2, 1]); // the pattern still counts
    c.close();
  });
});

describe('placement and delivery (slots mode)', () => {
  it('a channel lives on the shard its name routes to (hash tags too); a pattern on every shard', async () => {
    const c = await client();
    const names = ['place:{user1}:inbox', 'place:{user1}:alerts', ...namesOnShards('place:', 3)];
    c.send(cmd('SUBSCRIBE', ...names), cmd('PSUBSCRIBE', 'place:*'));
    await c.untilCount(names.length + 1);
    for (const b of backends) {
      const expected = names.filter((n) => owner(n) === b).sort();
      expect(await backendChannels(b.port), b.address).toEqual(expected.filter((v, i, a) => a.indexOf(v) === i));
      expect(await backendNumpat(b.port), b.address).toBe(1);
    }
    // {user1} routes both tagged channels where the key user1 lives.
    expect(owner('place:{user1}:inbox')).toBe(owner('user1'));
    expect(owner('place:{user1}:alerts')).toBe(owner('user1'));
    c.close();
    await waitFor(
      async () => (await Promise.all(backends.map((b) => backendNumpat(b.port)))).every((n) => n === 0),
      'unsubscribed',
    );
  });

  it('each message reaches each subscriber exactly once: message and pmessage, published through keymux or on a shard', async () => {
    const channels = namesOnShards('once:', 3);
    const subs = [await client(), await client()];
    for (const s of subs) {
      s.send(cmd('SUBSCRIBE', ...channels), cmd('PSUBSCRIBE', 'once:*'));
      await s.untilCount(channels.length + 1);
    }
    const pub = await client();
    const viaKeymux = 10;
    for (const ch of channels) for (let i = 0; i < viaKeymux; i++) pub.send(cmd('PUBLISH', ch, `k${i}`));
    await pub.untilCount(channels.length * viaKeymux);
    // Each PUBLISH reached two clients through their channel and two through their pattern: 4, as Redis counts.
    expect(pub.frames.every((f) => f === 4)).toBe(true);
    // Directly on the owning shard, and on a shard that does not own the channel (only patterns hear that).
    const direct = 5;
    const stray = 3;
    for (const ch of channels) {
      const own = owner(ch);
      const other = backends.find((b) => b !== own) as RedisProcess;
      await redisCommands(
        own.port,
        Array.from({ length: direct }, (_, i) => ['PUBLISH', ch, `d${i}`]),
      );
      await redisCommands(
        other.port,
        Array.from({ length: stray }, (_, i) => ['PUBLISH', ch, `s${i}`]),
      );
    }
    for (const s of subs) {
      for (const ch of channels) {
        await s.untilMessages(ch, viaKeymux + direct);
        await s.untilMessages(`once:*|${ch}`, viaKeymux + direct + stray);
      }
    }
    // A round trip later, nothing more came (no duplicates).
    for (const s of subs) {
      s.send(cmd('PING', 'end'));
      await s.until((f) => JSON.stringify(f.at(-1)) === JSON.stringify(['pong', 'end']));
      for (const ch of channels) {
        expect(s.counts.get(ch)).toBe(viaKeymux + direct);
        expect(s.counts.get(`once:*|${ch}`)).toBe(viaKeymux + direct + stray);
      }
      // In order per channel.
      for (const ch of channels) {
        const bodies = s.frames
          .filter((f) => Array.isArray(f) && f[0] === 'message' && f[1] === ch)
          .map((f) => (f as string[])[2]);
        expect(bodies).toEqual([
          ...Array.from({ length: viaKeymux }, (_, i) => `k${i}`),
          ...Array.from({ length: direct }, (_, i) => `d${i}`),
        ]);
      }
      s.close();
    }
    pub.close();
  });

  it('500 clients on a handful of channels: every message once per subscriber, one backend subscription per channel', async () => {
    const channels = namesOnShards('crowd:', 5);
    const clients = 500;
    const subs: PubSubSocket[] = [];
    for (let i = 0; i < clients; i++) subs.push(await client());
    // Client i listens on channels i % 5 and (i + 1) % 5.
    const mine = (i: number): string[] => [channels[i % 5], channels[(i + 1) % 5]];
    subs.forEach((s, i) => s.send(cmd('SUBSCRIBE', ...mine(i))));
    await Promise.all(subs.map((s) => s.untilCount(2)));
    for (const ch of channels) expect(await backendNumsub(owner(ch).port, ch)).toBe(1);
    const [numsub] = await redisCommands(proxy.port, [['PUBSUB', 'NUMSUB', ...channels]]);
    expect(numsub).toEqual(channels.flatMap((ch) => [ch, 200]));
    const perChannel = 20;
    const pub = await client();
    for (let m = 0; m < perChannel; m++) for (const ch of channels) pub.send(cmd('PUBLISH', ch, `m${m}`));
    await pub.untilCount(perChannel * channels.length);
    expect(pub.frames.every((f) => f === 200)).toBe(true);
    await Promise.all(subs.map((s, i) => Promise.all(mine(i).map((ch) => s.untilMessages(ch, perChannel)))));
    await Promise.all(
      subs.map(async (s) => {
        s.send(cmd('PING'));
        await s.until((f) => Array.isArray(f.at(-1)) && (f.at(-1) as string[])[0] === 'pong');
      }),
    );
    let total = 0;
    subs.forEach((s, i) => {
      for (const ch of channels) {
        const n = s.counts.get(ch) ?? 0;
        expect(n, `client ${i} on ${ch}`).toBe(mine(i).includes(ch) ? perChannel : 0);
        total += n;
      }
    });
    expect(total).toBe(clients * 2 * perChannel);
    // Metrics: what clients asked for, what keymux subscribes to, what it delivered.
    const samples = await scrape(proxy.adminPort!);
    expect(valueOf(samples, 'keymux_pubsub_subscriptions', { kind: 'channel' })).toBe(clients * 2);
    expect(valueOf(samples, 'keymux_pubsub_backend_subscriptions', { kind: 'channel' })).toBe(channels.length);
    expect(valueOf(samples, 'keymux_pubsub_messages_delivered_total')).toBeGreaterThanOrEqual(total);
    expect(valueOf(samples, 'keymux_pubsub_connections', { state: 'ready' })).toBe(backends.length);
    for (const s of subs) s.close();
    pub.close();
    await waitFor(
      async () => (await backendNumsub(owner(channels[0]).port, channels[0])) === 0,
      'last subscriber gone',
    );
  });
});

describe('subscription churn (slots mode)', () => {
  it('clients subscribing, unsubscribing and leaving at once: every confirmation right, nothing left behind', async () => {
    const channels = namesOnShards('churn:', 3);
    const clients = await Promise.all(Array.from({ length: 30 }, () => client()));
    const rounds = 40;
    // Each client pipelines rounds of SUBSCRIBE / PSUBSCRIBE / UNSUBSCRIBE / PUNSUBSCRIBE on shared names, so
    // keymux's subscriptions are made and dropped while others are still waiting for theirs.
    clients.forEach((c, i) => {
      const batch: Buffer[] = [];
      for (let r = 0; r < rounds; r++) {
        batch.push(cmd('SUBSCRIBE', channels[(i + r) % 3], channels[(i + r + 1) % 3]));
        batch.push(cmd('PSUBSCRIBE', `churn:${r % 2}*`));
        batch.push(cmd('UNSUBSCRIBE'));
        batch.push(cmd('PUNSUBSCRIBE'));
      }
      c.send(...batch);
    });
    // Half the clients leave half way through their batch.
    await Promise.all(clients.map((c) => c.untilCount(rounds * 3)));
    clients.slice(0, 15).forEach((c) => c.close());
    await Promise.all(clients.slice(15).map((c) => c.untilCount(rounds * 6)));
    for (const c of clients.slice(15)) {
      const f = c.frames as Array<[string, string | null, number]>;
      for (let r = 0; r < rounds; r++) {
        const [s1, s2, p, u1, u2, pu] = f.slice(r * 6, r * 6 + 6);
        expect([s1[0], s1[2], s2[0], s2[2], p[0], p[2]]).toEqual(['subscribe', 1, 'subscribe', 2, 'psubscribe', 3]);
        expect([u1[0], u1[2], u2[0], u2[2], pu[0], pu[2]]).toEqual([
          'unsubscribe',
          2,
          'unsubscribe',
          1,
          'punsubscribe',
          0,
        ]);
      }
    }
    await waitFor(async () => {
      const counts = await Promise.all(
        backends.map(
          async (b) =>
            (await backendChannels(b.port)).filter((c) => c.startsWith('churn:')).length +
            (await backendNumpat(b.port)),
        ),
      );
      return counts.every((n) => n === 0);
    }, 'every backend subscription dropped');
    expect(proxy.pubsub.gauges().entries).toEqual([0, 0, 0]);
    expect(proxy.pubsub.stats.clientSubscriptions).toEqual([0, 0, 0]);
  });
});

describe('PUBSUB introspection (slots mode)', () => {
  it('NUMSUB, CHANNELS, NUMPAT, SHARDNUMSUB, SHARDCHANNELS count keymux clients and direct subscribers on any shard', async () => {
    const a = await client();
    const b = await client();
    const room = 'intro:room';
    a.send(cmd('SUBSCRIBE', room), cmd('PSUBSCRIBE', 'intro:r*'), cmd('SSUBSCRIBE', 'intro:sc'));
    b.send(cmd('SUBSCRIBE', room, 'intro:other'));
    await a.untilCount(3);
    await b.untilCount(2);
    // A client connected to a shard directly, subscribed to the room and to another pattern.
    const direct = await PubSubSocket.connect(owner(room).port);
    open.push(direct);
    direct.send(cmd('SUBSCRIBE', room), cmd('PSUBSCRIBE', 'intro:q*'));
    await direct.untilCount(2);
    const [numsub, channels, filtered, numpat, shardnumsub, shardchannels] = await redisCommands(proxy.port, [
      ['PUBSUB', 'NUMSUB', room, 'intro:other', 'intro:none'],
      ['PUBSUB', 'CHANNELS'],
      ['PUBSUB', 'CHANNELS', 'intro:r*'],
      ['PUBSUB', 'NUMPAT'],
      ['PUBSUB', 'SHARDNUMSUB', 'intro:sc', room],
      ['PUBSUB', 'SHARDCHANNELS', 'intro:*'],
    ]);
    expect(numsub).toEqual([room, 3, 'intro:other', 1, 'intro:none', 0]);
    expect((channels as string[]).filter((c) => c.startsWith('intro:')).sort()).toEqual(['intro:other', room]);
    expect(filtered).toEqual([room]);
    expect(numpat).toBe(2); // intro:r* (keymux, on every shard) and intro:q* (direct, one shard)
    expect(shardnumsub).toEqual(['intro:sc', 1, room, 0]);
    expect(shardchannels).toEqual(['intro:sc']);
    // PUBLISH counts every receiver: two keymux clients and the direct one on the channel, a's pattern, the
    // direct client's pattern does not match.
    expect(await redisCommand(proxy.port, 'PUBLISH', room, 'x')).toBe(4);
    a.close();
    b.close();
    direct.close();
    await waitFor(async () => (await redisCommand(proxy.port, 'PUBSUB', 'NUMPAT')) === 0, 'patterns gone');
    expect(await redisCommand(proxy.port, 'PUBSUB', 'NUMSUB', room)).toEqual([room, 0]);
  });
});

describe('ordering (slots mode)', () => {
  it('after UNSUBSCRIBE is confirmed, no message of that channel follows; others keep flowing', async () => {
    const [c1, c2] = namesOnShards('order:', 2);
    const s = await client();
    s.send(cmd('SUBSCRIBE', c1, c2));
    await s.untilCount(2);
    const pub = await client();
    let stop = false;
    let sent = 0;
    const publishing = (async () => {
      while (!stop) {
        const batch: Buffer[] = [];
        for (let i = 0; i < 20; i++) batch.push(cmd('PUBLISH', c1, `a${sent}`), cmd('PUBLISH', c2, `b${sent++}`));
        pub.send(...batch);
        await pub.untilCount(sent * 2);
      }
    })();
    await s.untilMessages(c1, 50);
    s.send(cmd('UNSUBSCRIBE', c1));
    await s.until((f) => f.some((x) => Array.isArray(x) && x[0] === 'unsubscribe'));
    const at = s.frames.findIndex((x) => Array.isArray(x) && x[0] === 'unsubscribe');
    await s.untilMessages(c2, (s.counts.get(c2) ?? 0) + 200);
    stop = true;
    await publishing;
    const after = s.frames.slice(at + 1) as Frame[];
    expect(after.filter((f) => isMessage(f) && (f as string[])[1] === c1)).toEqual([]);
    expect(after.filter((f) => isMessage(f) && (f as string[])[1] === c2).length).toBeGreaterThanOrEqual(200);
    s.close();
    pub.close();
  });
});

describe('glob matching', () => {
  it('matches what a redis-server matches (KEYS over the same names)', async () => {
    const names = [
      'a',
      'ab',
      'abc',
      'b',
      'a*c',
      'a?c',
      'a[b]c',
      'x\\y',
      '',
      'h\xe9llo',
      'foo.bar',
      'foo.1',
      'foo1',
      '[',
      ']',
      '-',
      '^a',
    ];
    const patterns = [
      '*',
      'a*',
      'a?',
      'a?c',
      '[ab]*',
      '[^a]*',
      '[a-b]*',
      '[b-a]*',
      'a\\*c',
      'a[*]c',
      '*c',
      'foo.*',
      'foo?*',
      '[',
      '[a',
      'x\\\\y',
      'h[\xe0-\xff]llo',
      '[\\]]',
      '\\',
      '**a',
      'a[',
      '[^]',
      '*.*',
    ];
    const r = backends[0];
    await redisCommands(r.port, [['FLUSHALL'], ...names.map((n) => ['SET', Buffer.from(`g:${n}`, 'latin1'), '1'])]);
    for (const p of patterns) {
      const keys = (
        await redisCommands(r.port, [['KEYS', Buffer.from(`g:${p}`, 'latin1')]], { buffers: true })
      )[0] as Buffer[];
      const server = keys.map((k) => k.toString('latin1').slice(2)).sort();
      const ours = names
        .filter((n) => globMatch(Buffer.from(`g:${p}`, 'latin1'), Buffer.from(`g:${n}`, 'latin1')))
        .sort();
      expect(ours, `pattern ${JSON.stringify(p)}`).toEqual(server);
    }
    await redisCommand(r.port, 'FLUSHALL');
  });
});
