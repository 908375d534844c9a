// Routing rules (`routing: [{ match, by }]`): validated at load with file:line errors (the pattern must compile and
// have the group; refused in cluster mode), shown in /config, and applied wherever keymux routes a key: keys a rule
// matches live where their captured part routes them (BullMQ's `bull:<queue>:...` keys of one queue share a shard,
// so its scripts run without CROSSSLOT), every other key as before; multi-key commands group by it; a reload that
// adds a rule moves the keys it re-homes (migration) and reads them back unchanged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { parseConfigText } from '../../src/config/load.js';
import { literalPrefix, RoutingRules } from '../../src/routing/rules.js';
import { freePort } from '../support/ports.js';

const BULL = [{ match: '^bull:([^:]+):', by: 1 }];

function errorsOf(text: string): string[] {
  const r = parseConfigText(text, 'k.yaml');
  return 'errors' in r && r.errors !== undefined ? r.errors : [];
}

describe('routing rules: validation', () => {
  const base = [
    'listen: 127.0.0.1:0',
    'mode: slots',
    'shards:',
    '  - { address: "127.0.0.1:7001", slots: ["0-16383"] }',
  ];

  it('accepts rules, and reads them in order', () => {
    const r = parseConfigText(
      [
        ...base,
        'routing:',
        '  - { match: "^bull:([^:]+):", by: 1 }',
        '  - match: "^s:(\\\\d+)-(\\\\w+)$"',
        '    by: 2',
      ].join('\n'),
      'k.yaml',
    );
    expect('errors' in r && r.errors).toBeFalsy();
    expect((r as { config: { routing: unknown } }).config.routing).toEqual([
      { match: '^bull:([^:]+):', by: 1 },
      { match: '^s:(\\d+)-(\\w+)$', by: 2 },
    ]);
  });

  it('refuses a pattern that does not compile, a group it does not have, and bad shapes, at their lines', () => {
    expect(
      errorsOf(
        [
          ...base,
          'routing:',
          '  - { match: "^bull:([^:]+", by: 1 }',
          '  - { match: "^bull:[^:]+:", by: 1 }',
          '  - { match: "^(a)(b):", by: 3 }',
          '  - { match: "^(a)", by: 0 }',
          '  - { match: "", by: 1 }',
          '  - { by: 1 }',
          '  - "^bull:"',
        ].join('\n'),
      ),
    ).toEqual([
      expect.stringMatching(/^k\.yaml:6: routing\[0\]\.match: not a valid regular expression: .*/),
      'k.yaml:7: routing[1].by: the pattern has no capture group; write one in parentheses, e.g. "^bull:([^:]+):"',
      'k.yaml:8: routing[2].by: the pattern has 2 capture groups, not 3',
      'k.yaml:9: routing[3].by: must be between 1 and 99, got 0',
      'k.yaml:10: routing[4].match: must not be empty',
      'k.yaml:11: routing[5].match: required',
      expect.stringMatching(/^k\.yaml:12: routing\[6\]: expected a mapping with "match".*got a string/),
    ]);
    expect(errorsOf([...base, 'routing: "^bull:"'].join('\n'))).toEqual([
      'k.yaml:5: routing: expected a list of { match, by } mappings, got a string ("^bull:")',
    ]);
  });

  it('refuses routing rules in cluster mode, where Redis Cluster decides the slot of every key', () => {
    expect(
      errorsOf(
        [
          'mode: cluster',
          'cluster: { seeds: ["127.0.0.1:7000"] }',
          'routing: [{ match: "^bull:([^:]+):", by: 1 }]',
        ].join('\n'),
      ),
    ).toEqual(['k.yaml:3: routing: only allowed when mode is slots or ring (mode is cluster)']);
  });

  it('prefilters on the literal head of an anchored pattern, and only there', () => {
    expect(literalPrefix('^bull:([^:]+):')).toBe('bull:');
    expect(literalPrefix('^ab?c(x)')).toBe('a');
    expect(literalPrefix('bull:(x)')).toBeNull();
    expect(literalPrefix('^a(x)|^b(y)')).toBeNull();
    expect(literalPrefix('^(x)')).toBeNull();
    const rules = new RoutingRules([
      { match: '^bull:([^:]+):', by: 1 },
      { match: '^q\\.(\\w*)$', by: 1 },
    ]);
    const range = { start: 0, end: 0 };
    expect(rules.apply(Buffer.from('bull:emails:wait'), range)).toBe(true);
    expect(range).toEqual({ start: 5, end: 11 });
    expect(rules.apply(Buffer.from('bul:emails:wait'), range)).toBe(false);
    expect(rules.apply(Buffer.from('xbull:emails:wait'), range)).toBe(false);
    expect(rules.apply(Buffer.from('q.'), range)).toBe(false); // empty group: routed as usual
    expect(rules.apply(Buffer.from([0x62, 0x75, 0x6c, 0x6c, 0x3a, 0xff, 0xfe, 0x3a]), range)).toBe(true); // binary
    expect(range).toEqual({ start: 5, end: 7 });
  });
});

describe('routing rules: effect', () => {
  let backends: RedisProcess[];
  beforeAll(async () => {
    backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all(backends.map((b) => b.stop()));
  });

  for (const mode of ['slots', 'ring'] as const) {
    it(`${mode} mode: keys of one queue share a shard, scripts over them run, other keys route as before`, async () => {
      for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
      const ports = backends.map((b) => b.port);
      const make = mode === 'slots' ? slotsConfig : ringConfig;
      const plain = await startKeymux(make(ports));
      const ruled = await startKeymux(make(ports, { routing: BULL }));
      const c = new Redis({ port: ruled.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await c.connect();
      try {
        const shardOf = (p: typeof plain, key: string) => p.topology.router.shardFor(Buffer.from(key));
        // Varied names: a ring's short-string hashes cluster (twemproxy's fnv1a_64), so a dozen "q<n>" may share a shard.
        const queues = Array.from(
          { length: 40 },
          (_, i) => `${['emails', 'video', 'pdf', 'thumbs', 'billing'][i % 5]}-${i * 7919}`,
        );
        const homes = new Set<number>();
        for (const q of queues) {
          const keys = ['wait', 'active', 'id', '1', '42', 'events'].map((s) => `bull:${q}:${s}`);
          const shard = shardOf(ruled, keys[0]);
          homes.add(shard);
          expect(keys.map((k) => shardOf(ruled, k))).toEqual(keys.map(() => shard));
          // The rule routes by the queue name alone: the same shard as the bare name.
          expect(shard).toBe(shardOf(plain, q));
          // A script over several keys of one queue: no CROSSSLOT.
          expect(
            await c.eval(
              "redis.call('RPUSH', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])",
              2,
              keys[0],
              keys[2],
              'job',
            ),
          ).toBe(1);
          expect(await c.mget(keys[0].replace('wait', 'x'), keys[2])).toEqual([null, '1']);
        }
        expect(homes.size).toBeGreaterThan(1); // queues spread over the shards
        // Keys no rule matches: exactly as without rules (hash tags included).
        for (const key of ['user:1', '{bull}:q:wait', 'bullish:a:b', 'x:bull:q:1']) {
          expect(shardOf(ruled, key), key).toBe(shardOf(plain, key));
        }
        // Without the rule the same script is refused (the keys are spread), which is what the rule is for.
        const p = new Redis({ port: plain.port, lazyConnect: true, maxRetriesPerRequest: 0 });
        await p.connect();
        const spread = queues
          .map((q) => [`bull:${q}:wait`, `bull:${q}:id`])
          .find(([a, b]) => shardOf(plain, a) !== shardOf(plain, b))!;
        await expect(p.eval('return 1', 2, spread[0], spread[1])).rejects.toThrow(/CROSSSLOT/);
        p.disconnect();
      } finally {
        c.disconnect();
        await plain.close();
        await ruled.close();
      }
    });
  }

  it('is shown in /config, and a reload that adds a rule moves the keys it re-homes', async () => {
    for (const b of backends) await redisCommands(b.port, [['FLUSHALL']]);
    const ports = backends.map((b) => b.port);
    const admin = await freePort();
    const proxy = await startKeymux(slotsConfig(ports, { admin: `127.0.0.1:${admin}` }));
    const c = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
    await c.connect();
    try {
      const keys = Array.from({ length: 300 }, (_, i) => `bull:q${i % 30}:${i}`);
      for (const k of keys) await c.set(k, `v-${k}`);
      const before = new Map(keys.map((k) => [k, proxy.topology.router.shardFor(Buffer.from(k))]));
      expect(proxy.reload(configFrom(slotsConfig(ports, { admin: `127.0.0.1:${admin}`, routing: BULL })))).toBeNull();
      const moved = keys.filter((k) => proxy.topology.router.shardFor(Buffer.from(k)) !== before.get(k));
      expect(moved.length).toBeGreaterThan(50);
      // Every value reads back through keymux, during and after the migration.
      expect(await c.mget(...keys)).toEqual(keys.map((k) => `v-${k}`));
      await waitFor(() => proxy.topology.migration?.active !== true, 'the migration to finish', 30_000, 20);
      for (const k of moved) {
        const owner = backends.find(
          (b) => b.address === proxy.topology.shards[proxy.topology.router.shardFor(Buffer.from(k))].address,
        )!;
        expect((await redisCommands(owner.port, [['GET', k]]))[0], k).toBe(`v-${k}`);
      }
      // Channels route like keys: a queue's event channel is subscribed on its queue's shard.
      const sub = new Redis({ port: proxy.port, lazyConnect: true, maxRetriesPerRequest: 0 });
      await sub.connect();
      await sub.subscribe('bull:q7:events');
      const home = proxy.topology.shards[proxy.topology.router.shardFor(Buffer.from('q7'))].address;
      for (const b of backends) {
        const channels = (await redisCommands(b.port, [['PUBSUB', 'CHANNELS', 'bull:*']]))[0];
        expect(channels, b.address).toEqual(b.address === home ? ['bull:q7:events'] : []);
      }
      const got = new Promise<string>((resolve) => sub.on('message', (_ch, m: string) => resolve(m)));
      expect(await c.publish('bull:q7:events', 'done')).toBe(1);
      expect(await got).toBe('done');
      sub.disconnect();
      const res = await request(`http://127.0.0.1:${admin}/config`);
      const body = (await res.body.json()) as { config: { routing: unknown } };
      expect(body.config.routing).toEqual(BULL);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });
});
