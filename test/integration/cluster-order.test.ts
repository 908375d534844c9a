/**
 * One client's commands take effect, and are answered, in the order it sent them, across cluster retries and
 * redirections (issue 9). Scripted fake cluster nodes (test/support/fake-cluster.ts) keep a real little keyspace, so
 * the order in which keymux sends a client's commands shows in the values the client reads; each case scripts the
 * one answer that used to let a later command overtake an earlier one:
 * - TRYAGAIN to a one-slot MGET while the client's next command, a SET of one of its keys, is in the same pipeline:
 *   the SET must not run before the MGET's retry (the MGET reads the value from before the SET).
 * - CLUSTERDOWN to a GET whose SET, already sent behind it, then runs: the GET cannot be retried in order any more,
 *   so it gets an error (it was not applied), never the SET's value; when the SET is refused too, both are retried
 *   in order and the GET reads the old value.
 * - MOVED and ASK of a whole pipeline, and a MOVED of a command held behind a retry, keep client order.
 * - A retried piece of a broadcast command (DBSIZE) goes back to the node it was meant for, even after a rediscovery
 *   changed the order of the masters.
 * - read_from: replica with the replica down: reads get a clear error and are never sent to the master; under
 *   prefer-replica the master serves them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { FakeClusterNode, nodeId, type FakeShardLayout } from '../support/fake-cluster.js';
import { configFrom, startKeymux } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function node(): Promise<FakeClusterNode> {
  const n = await FakeClusterNode.start();
  cleanups.push(() => n.close());
  return n;
}

async function keymux(seeds: FakeClusterNode[], cluster: Record<string, unknown> = {}): Promise<Proxy> {
  const proxy = await startKeymux(
    { mode: 'cluster', cluster: { seeds: seeds.map((s) => s.address), ...cluster } },
    { builtinCommandTable: true },
  );
  cleanups.push(() => proxy.close());
  return proxy;
}

function client(port: number): Redis {
  const c = new Redis({
    port,
    host: '127.0.0.1',
    maxRetriesPerRequest: 0,
    enableReadyCheck: false,
    commandTimeout: 5000,
  });
  cleanups.push(() => c.disconnect());
  return c;
}

/** One node owning every slot. */
async function oneNode(): Promise<FakeClusterNode> {
  const a = await node();
  a.layout = () => [{ node: a, id: nodeId(1), ranges: [[0, 16383]] }];
  return a;
}

/** A `before` hook answering the first `n` data commands matching `match` with `reply`. */
function firstAnswers(n: number, reply: string, match: (cmd: string[]) => boolean = () => true) {
  let left = n;
  return (cmd: string[]): string | 'pass' => {
    if (left > 0 && match(cmd)) {
      left--;
      return reply;
    }
    return 'pass';
  };
}

const isMget = (cmd: string[]): boolean => cmd[0]!.toUpperCase() === 'MGET';

describe('client order across cluster retries', () => {
  it('a SET pipelined behind a one-slot MGET that gets TRYAGAIN does not overtake its retry', async () => {
    const a = await oneNode();
    a.data.set('{t}:a', '1');
    a.before = firstAnswers(1, '-TRYAGAIN Multiple keys request during rehashing of slot\r\n', isMget);
    const proxy = await keymux([a]);
    const c = client(proxy.port);

    const replies = await c
      .pipeline()
      .mget('{t}:a', '{t}:b')
      .set('{t}:a', '2')
      .mget('{t}:a', '{t}:b')
      .incr('{t}:n')
      .exec();
    expect(replies).toEqual([
      [null, ['1', null]],
      [null, 'OK'],
      [null, ['2', null]],
      [null, 1],
    ]);
    // The node executed them in client order: the first MGET's retry before the SET.
    expect(a.executed).toEqual(['MGET {t}:a {t}:b', 'SET {t}:a 2', 'MGET {t}:a {t}:b', 'INCR {t}:n']);
    expect(proxy.stats.tryagain).toBe(1);
    expect(proxy.stats.retries).toBe(1);
  });

  it('a GET answered CLUSTERDOWN whose pipelined SET then ran gets an error, never the later value', async () => {
    const a = await oneNode();
    a.data.set('k', 'old');
    a.before = firstAnswers(1, '-CLUSTERDOWN The cluster is down\r\n', (cmd) => cmd[0]!.toUpperCase() === 'GET');
    const proxy = await keymux([a]);
    const c = client(proxy.port);

    const replies = await c.pipeline().get('k').set('k', 'new').get('other').exec();
    expect(replies![0]![0]?.message).toMatch(/^TRYAGAIN keymux: a later command of this connection for the same slot/);
    expect(replies![0]![1] ?? null).toBeNull();
    expect(replies![1]).toEqual([null, 'OK']);
    expect(replies![2]).toEqual([null, null]);
    // The GET was never executed: re-sending it after the SET would have read "new".
    expect(a.executed).toEqual(['SET k new', 'GET other']);
    expect(await c.get('k')).toBe('new');
  });

  it('commands of one slot refused together (CLUSTERDOWN) are retried together, in order', async () => {
    const a = await oneNode();
    a.data.set('k', 'old');
    a.before = firstAnswers(3, '-CLUSTERDOWN The cluster is down\r\n');
    const proxy = await keymux([a]);
    const c = client(proxy.port);

    const replies = await c.pipeline().get('k').set('k', 'new').get('k').exec();
    expect(replies).toEqual([
      [null, 'old'],
      [null, 'OK'],
      [null, 'new'],
    ]);
    expect(a.executed).toEqual(['GET k', 'SET k new', 'GET k']);
    expect(proxy.stats.retries).toBe(3);
  });

  it('a whole pipeline redirected with MOVED, or with ASK, runs on the target in client order', async () => {
    for (const kind of ['MOVED', 'ASK'] as const) {
      const a = await node();
      const b = await node();
      const layout = (): FakeShardLayout[] => [
        { node: a, id: nodeId(1), ranges: [[0, 8191]] },
        { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
      ];
      a.layout = layout;
      b.layout = layout;
      let k = 'a'; // a key of a slot that node a owns
      for (let i = 0; keySlot(Buffer.from(k)) > 8191; i++) k = `k${i}`;
      const slot = keySlot(Buffer.from(k));
      const redirect = `-${kind} ${slot} ${b.address}\r\n`;
      a.before = (cmd) => (cmd[1] === k ? redirect : 'pass');
      const proxy = await keymux([a, b], { refresh_interval_ms: 60_000 });
      const c = client(proxy.port);

      const replies = await c.pipeline().set(k, '1').incr(k).get(k).del(k).get(k).exec();
      expect(replies, kind).toEqual([
        [null, 'OK'],
        [null, 2],
        [null, '2'],
        [null, 1],
        [null, null],
      ]);
      expect(b.executed, kind).toEqual([`SET ${k} 1`, `INCR ${k}`, `GET ${k}`, `DEL ${k}`, `GET ${k}`]);
      if (kind === 'ASK') {
        // Every ASK-redirected command was preceded by ASKING on the target.
        const got = b.received().filter((x) => !x.startsWith('CLUSTER'));
        for (let i = 0; i < got.length; i++)
          if (!got[i]!.startsWith('ASKING')) expect(got[i - 1], got[i]).toBe('ASKING');
      }
    }
  });

  it('a command redirected with MOVED while an earlier one of its slot waits for a retry stays behind it', async () => {
    const a = await node();
    const b = await node();
    let k = 'x';
    for (let i = 0; keySlot(Buffer.from(k)) > 8191; i++) k = `x${i}`;
    const slot = keySlot(Buffer.from(k));
    const layout = (): FakeShardLayout[] => [
      { node: a, id: nodeId(1), ranges: [[0, 8191]] },
      { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
    ];
    a.layout = layout;
    b.layout = layout;
    b.data.set(k, 'old');
    // a: the GET gets CLUSTERDOWN, the SET behind it MOVED; from then on a answers MOVED for the key.
    let first = true;
    a.before = (cmd) => {
      if (cmd[1] !== k) return 'pass';
      if (first) {
        first = false;
        return '-CLUSTERDOWN The cluster is down\r\n';
      }
      return `-MOVED ${slot} ${b.address}\r\n`;
    };
    const proxy = await keymux([a, b], { refresh_interval_ms: 60_000, retry: { base_delay_ms: 50 } });
    const c = client(proxy.port);

    const replies = await c.pipeline().get(k).set(k, 'new').exec();
    expect(replies).toEqual([
      [null, 'old'],
      [null, 'OK'],
    ]);
    expect(b.executed).toEqual([`GET ${k}`, `SET ${k} new`]);
  });
});

describe('a MOVED not yet applied', () => {
  it('a retried command routed by slot goes where a MOVED of its slot pointed, not behind a later command', async () => {
    // As above, but the SET's MOVED comes only after the GET's retry backoff has passed: the fence's wave then leaves
    // at once, before keymux has applied the move to its topology (next setImmediate). The GET, re-sent by slot,
    // went to the old owner and came back MOVED while the SET, sent straight to b, ran first (GET read 'new').
    const a = await node();
    const b = await node();
    let k = 'y';
    for (let i = 0; keySlot(Buffer.from(k)) > 8191; i++) k = `y${i}`;
    const slot = keySlot(Buffer.from(k));
    const layout = (): FakeShardLayout[] => [
      { node: a, id: nodeId(1), ranges: [[0, 8191]] },
      { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
    ];
    a.layout = layout;
    b.layout = layout;
    b.data.set(k, 'old');
    let first = true;
    a.before = (cmd, _node, conn) => {
      if (cmd[1] !== k) return 'pass';
      if (first) {
        first = false;
        return '-CLUSTERDOWN The cluster is down\r\n';
      }
      if (cmd[0].toUpperCase() === 'SET') {
        setTimeout(() => conn.write(`-MOVED ${slot} ${b.address}\r\n`), 150); // after the GET's 20 ms backoff
        return null;
      }
      return `-MOVED ${slot} ${b.address}\r\n`;
    };
    const proxy = await keymux([a, b], { refresh_interval_ms: 60_000, retry: { base_delay_ms: 20, max_delay_ms: 20 } });
    const c = client(proxy.port);
    const replies = await c.pipeline().get(k).set(k, 'new').exec();
    expect(replies).toEqual([
      [null, 'old'],
      [null, 'OK'],
    ]);
    expect(b.executed).toEqual([`GET ${k}`, `SET ${k} new`]);
  });
});

describe('retried broadcast pieces', () => {
  it('go back to the node they were meant for, even after the masters changed order', async () => {
    const a = await node();
    const b = await node();
    let swapped = false;
    const layout = (): FakeShardLayout[] =>
      swapped
        ? [
            { node: a, id: nodeId(1), ranges: [[8192, 16383]] },
            { node: b, id: nodeId(2), ranges: [[0, 8191]] },
          ]
        : [
            { node: a, id: nodeId(1), ranges: [[0, 8191]] },
            { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
          ];
    a.layout = layout;
    b.layout = layout;
    a.data.set('one', '1');
    b.data.set('two', '2').set('three', '3');
    const proxy = await keymux([a, b], {
      refresh_interval_ms: 60_000,
      retry: { base_delay_ms: 400, max_delay_ms: 400 },
    });
    expect(proxy.topology.shards.map((s) => s.address)).toEqual([a.address, b.address]);
    // a answers the first DBSIZE -LOADING and, meanwhile, the layout swaps: a is now master #1, b master #0.
    a.before = (cmd) => {
      if (cmd[0]!.toUpperCase() !== 'DBSIZE' || swapped) return 'pass';
      swapped = true;
      return '-LOADING Redis is loading the dataset in memory\r\n';
    };
    const c = client(proxy.port);
    const size = c.dbsize();
    await waitFor(() => proxy.topology.shards[0]?.address === b.address, 'keymux to see the swapped layout', 5000);
    expect(await size).toBe(3);
    const dbsizes = (n: FakeClusterNode): number => n.received().filter((x) => x === 'DBSIZE').length;
    expect(dbsizes(a)).toBe(2); // the first try and the retry
    expect(dbsizes(b)).toBe(1);
  });
});

describe('read_from: replica with the replica down', () => {
  it('answers a clear error and never reads from the master; prefer-replica reads from the master', async () => {
    const master = await node();
    const replica = await node();
    const replicaAddress = replica.address;
    await replica.close(); // a replica that is down: its port refuses connections
    master.layout = () => [{ node: master, id: nodeId(1), ranges: [[0, 16383]], replicas: [replica] }];
    master.data.set('k', 'v');
    for (const readFrom of ['replica', 'prefer-replica'] as const) {
      const before = master.executed.length;
      const proxy = await keymux([master], { read_from: readFrom, refresh_interval_ms: 60_000 });
      expect(proxy.topology.shards[0]!.replicas.map((p) => p.shard.address)).toEqual([replicaAddress]);
      await waitFor(() => !proxy.topology.shards[0]!.replicas[0]!.usable, 'the replica pool to be down', 5000);
      const c = client(proxy.port);
      if (readFrom === 'replica') {
        await expect(c.get('k')).rejects.toThrow(/^ERR keymux: no replica of shard '.*' is reachable/);
        await expect(c.mget('k', 'k2')).rejects.toThrow(/no replica/);
        expect(master.executed.slice(before)).toEqual([]);
      } else {
        expect(await c.get('k')).toBe('v');
        expect(master.executed.slice(before)).toEqual(['GET k']);
      }
      expect(await c.set('w', '1')).toBe('OK'); // writes go to the master either way
    }
  });
});

describe('a reload that changes backend connection settings in cluster mode', () => {
  it('rebuilds every node pool with the new settings; the old connections close once idle', async () => {
    const a = await oneNode();
    a.data.set('k', 'v');
    const proxy = await keymux([a], { refresh_interval_ms: 60_000 });
    const c = client(proxy.port);
    expect(await c.get('k')).toBe('v');
    const before = proxy.topology.shards[0]!.pool;
    expect(before.connections.length).toBe(1);
    expect(before.options.timeoutMs).toBe(2000);
    const config = configFrom({
      mode: 'cluster',
      cluster: { seeds: [a.address], refresh_interval_ms: 60_000 },
      backend: { connections: 3, timeout_ms: 7000 },
    });
    expect(proxy.reload(config)).toBeNull();
    const after = proxy.topology.shards[0]!.pool;
    expect(after).not.toBe(before);
    expect(after.connections.length).toBe(3);
    expect(after.options.timeoutMs).toBe(7000);
    expect(await c.get('k')).toBe('v');
    await waitFor(() => before.connections.every((x) => x.state === 'closed'), 'the old pool to close', 5000);
    await a.backend.until(() => a.backend.connections.filter((x) => !x.closed).length >= 3, 'three new connections');
  });
});
