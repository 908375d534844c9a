/**
 * Which node's pub/sub subscriber connection is down, since when and why, as an operator reads it: per node in
 * /metrics (`keymux_pubsub_node_up{shard,address}`, `keymux_pubsub_node_subscriptions{shard,address}`), per shard
 * in GET /shards (`pubsub_connections`: state, subscriptions, last error, down since) and in `keymux top`. Real
 * redis-servers: one frozen with SIGSTOP (a SUBSCRIBE placed on it times out, its reconnection's handshake goes
 * unanswered) reads 0 with its last error while the others read 1, /readyz stays 200 (data traffic does not depend on
 * pub/sub), and it reads 1 again after SIGCONT. With `workers: 2` (the real binary), every worker has its own
 * subscriber connection to a node: the merged gauge is up only when every worker's is (the minimum, not the sum),
 * subscriptions add up, /shards lists each worker's connection, and a node killed and restarted goes 0, then 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { runBinary, slotsConfig, startKeymux, type RunningBinary } from '../support/keymux.js';
import { getJson, httpGet, parseExposition, samplesOf, scrape, valueOf } from '../support/metrics.js';
import { keyOn, waitFor } from '../support/fake-backend.js';
import { PubSubSocket, backendNumsub, cmd } from '../support/pubsub.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { keySlot } from '../../src/routing/crc16.js';
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

describe('pub/sub per node with workers: 2 (the real binary)', () => {
  let a: RedisProcess, b: RedisProcess;
  let dir: string;
  let adminPort: number;
  let port: number;
  let binary: RunningBinary;
  const clients: Redis[] = [];
  /** A channel on shard b (slots 8192-16383). */
  let channel: string;

  /** The merged values of `name` for `shard` (one series per node: one value). */
  const gaugeOf = async (name: string, shard: string): Promise<number[]> =>
    samplesOf(parseExposition((await httpGet(adminPort, '/metrics')).body), name, { shard }).map((s) => s.value);
  const pubsubOfB = async (): Promise<PubSubConnection[]> =>
    (await getJson<ShardsReport>(adminPort, '/shards')).shards
      .find((s) => s.name === 'b')!
      .pubsub_connections.sort((x, y) => x.worker! - y.worker!);

  beforeAll(async () => {
    [a, b] = await Promise.all([startRedis(), startRedis()]);
    [port, adminPort] = [await freePort(), await freePort()];
    dir = makeTempDir('keymux-pubsub-workers-');
    const file = path.join(dir, 'keymux.yaml');
    fs.writeFileSync(
      file,
      stringify({
        listen: `127.0.0.1:${port}`,
        admin: `127.0.0.1:${adminPort}`,
        mode: 'slots',
        workers: 2,
        log: { level: 'info' },
        backend: { connect_timeout_ms: CONNECT_TIMEOUT_MS, timeout_ms: CONNECT_TIMEOUT_MS },
        shards: [
          { name: 'a', address: a.address, slots: ['0-8191'] },
          { name: 'b', address: b.address, slots: ['8192-16383'] },
        ],
      }),
    );
    binary = await runBinary(file, 'keymux workers serving');
    for (let n = 0; ; n++) {
      channel = `news:${n}`;
      if (keySlot(Buffer.from(channel)) >= 8192) break;
    }
  });

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await binary?.kill();
    await Promise.all([a, b].map((r) => r?.stop()));
    if (dir !== undefined) removeTempDir(dir);
  });

  it("up only when every worker's subscriber connection is; a node killed reads 0 in every worker, then 1 when back", async () => {
    // A subscriber in each worker (INFO's process_id tells which serves a connection).
    const byWorker = new Map<number, Redis>();
    for (let i = 0; i < 40 && byWorker.size < 2; i++) {
      const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
      clients.push(c);
      const pid = Number(/process_id:(\d+)/.exec(await c.info('server'))![1]);
      if (!byWorker.has(pid)) byWorker.set(pid, c);
    }
    expect(byWorker.size, 'clients on both workers').toBe(2);
    const heard: string[] = [];
    for (const c of byWorker.values()) {
      c.on('message', (_ch: string, m: string) => heard.push(m));
      await c.subscribe(channel);
    }
    // Each worker subscribed once on b over its own connection.
    expect(await backendNumsub(b.port, channel)).toBe(2);
    expect(await gaugeOf('keymux_pubsub_node_up', 'b')).toEqual([1]);
    expect(await gaugeOf('keymux_pubsub_node_subscriptions', 'b')).toEqual([2]);
    expect((await pubsubOfB()).map((c) => [c.worker, c.state, c.subscriptions])).toEqual([
      [1, 'ready', 1],
      [2, 'ready', 1],
    ]);

    await b.stop('SIGKILL');
    await waitFor(
      async () => (await gaugeOf('keymux_pubsub_node_up', 'b'))[0] === 0,
      'b down in the merged gauge',
      10_000,
      50,
    );
    await waitFor(
      async () => (await pubsubOfB()).every((c) => c.state !== 'ready'),
      "every worker's subscriber connection to b down",
      10_000,
      50,
    );
    for (const c of await pubsubOfB()) {
      expect(c.last_error).toMatch(/^(closed the connection|connection error ECONNREFUSED)$/);
      expect(Date.parse(c.down_since!)).toBeLessThanOrEqual(Date.now());
    }
    expect(await gaugeOf('keymux_pubsub_node_up', 'b')).toEqual([0]);
    expect(await gaugeOf('keymux_pubsub_node_subscriptions', 'b')).toEqual([2]);
    expect((await httpGet(adminPort, '/readyz')).status).toBe(200);

    await b.restart();
    await waitFor(
      async () => (await gaugeOf('keymux_pubsub_node_up', 'b'))[0] === 1,
      'b up again in the merged gauge',
      10_000,
      50,
    );
    await waitFor(
      async () => (await backendNumsub(b.port, channel)) === 2,
      'both workers subscribed again',
      10_000,
      50,
    );
    expect((await pubsubOfB()).map((c) => [c.worker, c.state, c.last_error])).toEqual([
      [1, 'ready', null],
      [2, 'ready', null],
    ]);
    const publisher = new Redis({ port, host: '127.0.0.1' });
    clients.push(publisher);
    expect(await publisher.publish(channel, 'back')).toBe(2);
    await waitFor(() => heard.length === 2, 'both subscribers to hear the message');
  });
});
