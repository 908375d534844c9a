/**
 * Which node's pub/sub subscriber connection is down, since when and why, as an operator reads it: per node in
 * /metrics (`keymux_pubsub_node_up{shard,address}`, `keymux_pubsub_node_subscriptions{shard,address}`), per shard
 * in GET /shards (`pubsub_connections`: state, subscriptions, last error, down since) and in `keymux top`. Real
 * redis-servers: one frozen with SIGSTOP (a SUBSCRIBE placed on it times out, its reconnection's handshake goes
 * unanswered) reads 0 with its last error while the others read 1, /readyz stays 200 (data traffic does not depend on
 * pub/sub), and it reads 1 again after SIGCONT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import { getJson, httpGet, samplesOf, scrape, valueOf } from '../support/metrics.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import { PubSubSocket, cmd } from '../support/pubsub.js';
import type { Proxy } from '../../src/proxy.js';

const exec = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
const CONNECT_TIMEOUT_MS = 300;

interface PubSubConnection {
  worker?: number;
  address: string;
  state: string;
  subscriptions: number;
  confirmed: number;
  reconnects: number;
  last_error: string | null;
  down_since: string | null;
}
interface ShardsReport {
  shards: Array<{ name: string; address: string; pubsub_connections: PubSubConnection[] }>;
  other_pubsub_connections: PubSubConnection[];
}

describe('pub/sub per node: a frozen shard in /metrics, /shards and keymux top', () => {
  let backends: RedisProcess[] = [];
  let proxy: Proxy;
  let admin: number;
  const sockets: PubSubSocket[] = [];

  const nodeUp = async (): Promise<Record<string, number>> =>
    Object.fromEntries(
      samplesOf(await scrape(admin), 'keymux_pubsub_node_up').map((s) => [
        `${s.labels.shard}@${s.labels.address}`,
        s.value,
      ]),
    );
  const upOf = (shard: number): string => `${String.fromCharCode(97 + shard)}@${backends[shard].address}`;
  const pubsubOf = async (shard: string): Promise<PubSubConnection[]> =>
    (await getJson<ShardsReport>(admin, '/shards')).shards.find((s) => s.name === shard)!.pubsub_connections;

  beforeAll(async () => {
    backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
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
    await proxy?.close();
    await Promise.all(backends.map((b) => b.stop()));
  });

  it('a node with no subscription has no series; each node keymux subscribes on reads 1 with its subscriptions', async () => {
    expect(await nodeUp()).toEqual({});
    expect((await pubsubOf('a')).length).toBe(0);
    const s = await PubSubSocket.connect(proxy.port);
    sockets.push(s);
    // A channel on a, two on c, and a pattern (placed on every shard).
    s.send(
      cmd('SUBSCRIBE', keyOn(proxy, 0, 'on-a'), keyOn(proxy, 2, 'on-c'), keyOn(proxy, 2, 'also-c')),
      cmd('PSUBSCRIBE', 'news.*'),
    );
    await s.untilCount(4);
    expect(await nodeUp()).toEqual({ [upOf(0)]: 1, [upOf(1)]: 1, [upOf(2)]: 1 });
    const metrics = await scrape(admin);
    const subs = (shard: string): number => valueOf(metrics, 'keymux_pubsub_node_subscriptions', { shard });
    expect([subs('a'), subs('b'), subs('c')]).toEqual([2, 1, 3]);
    const c = await pubsubOf('c');
    expect(c).toEqual([
      {
        address: backends[2].address,
        state: 'ready',
        subscriptions: 3,
        confirmed: 3,
        reconnects: 0,
        last_error: null,
        down_since: null,
      },
    ]);
  });

  it('a frozen node reads 0 with its last error and since when, the others 1; /readyz stays 200; back to 1 after SIGCONT', async () => {
    const s = await PubSubSocket.connect(proxy.port);
    sockets.push(s);
    const frozenAt = Date.now();
    process.kill(backends[2].pid, 'SIGSTOP');
    try {
      // A subscription placed on c now: its SUBSCRIBE goes unanswered (the operation timeout drops the connection),
      // and the reconnection's handshake too. The client is answered within the bound all the same.
      s.send(cmd('SUBSCRIBE', keyOn(proxy, 2, 'while-frozen')));
      await s.untilCount(1);
      await waitFor(
        async () => (await pubsubOf('c'))[0]?.last_error?.includes('did not answer the connection') === true,
        'the subscriber connection to c reported as not answering',
      );
      expect(await nodeUp()).toEqual({ [upOf(0)]: 1, [upOf(1)]: 1, [upOf(2)]: 0 });
      // What keymux keeps for c while it is down: everything placed there, none confirmed.
      expect(valueOf(await scrape(admin), 'keymux_pubsub_node_subscriptions', { shard: 'c' })).toBe(4);
      const [c] = await pubsubOf('c');
      expect(c.state).not.toBe('ready');
      expect(c.subscriptions).toBe(4);
      expect(c.confirmed).toBe(0);
      expect(c.last_error).toBe(`did not answer the connection within ${CONNECT_TIMEOUT_MS} ms`);
      // Down since the SUBSCRIBE timed out (the retries since keep that start).
      const since = Date.parse(c.down_since!);
      expect(since).toBeGreaterThanOrEqual(frozenAt);
      expect(since).toBeLessThanOrEqual(Date.now());
      expect((await pubsubOf('a'))[0]).toMatchObject({ state: 'ready', last_error: null, down_since: null });
      // Pub/sub down on one node does not take the pod out of service.
      expect((await httpGet(admin, '/readyz')).status).toBe(200);
      expect(valueOf(await scrape(admin), 'keymux_ready')).toBe(1);

      // keymux top shows it: the shard's PUBSUB cell, and a line with the reason.
      const { stdout } = await exec(process.execPath, [
        BIN,
        'top',
        '--once',
        '--admin',
        `127.0.0.1:${admin}`,
        '--interval',
        '100',
      ]);
      expect(stdout).toMatch(/SHARD\s+ADDRESS\s+STATE\s+OPS\/S\s+HIT%\s+P99 MS\s+INFLIGHT\s+ERR\/S\s+PUBSUB/);
      const row = (name: string): string[] =>
        stdout
          .split('\n')
          .find((l) => l.startsWith(`${name} `))!
          .trimEnd()
          .split(/\s+/);
      expect(row('a').at(-1)).toBe('ready');
      expect(['down', 'connecting']).toContain(row('c').at(-1));
      expect(stdout).toMatch(
        new RegExp(
          `^PUBSUB c ${backends[2].address} (down|connecting) for \\d+ s, 4 subscriptions: did not answer the connection within ${CONNECT_TIMEOUT_MS} ms$`,
          'm',
        ),
      );
    } finally {
      process.kill(backends[2].pid, 'SIGCONT');
    }
    await waitFor(async () => (await nodeUp())[upOf(2)] === 1, 'c up again after SIGCONT');
    await waitFor(async () => (await pubsubOf('c'))[0].confirmed === 4, 'everything subscribed again on c');
    expect((await pubsubOf('c'))[0]).toMatchObject({
      state: 'ready',
      subscriptions: 4,
      last_error: null,
      down_since: null,
    });
    expect(await nodeUp()).toEqual({ [upOf(0)]: 1, [upOf(1)]: 1, [upOf(2)]: 1 });
  });
});
