/**
 * Untrusted and pathological cluster redirections, with scripted fake nodes (test/support/fake-backend.ts) standing
 * in for a Redis Cluster: each answers CLUSTER SHARDS with a slot map naming the fakes, and GET/SET/MGET as the
 * test scripts it.
 * - A node answering some keys with a malformed or out-of-range MOVED/ASK (slot 99999, a bad host, a port out of
 *   range, ASK without a port, a bare "-MOVED", an overlong line): those commands get a clear -ERR naming the node
 *   and the reason; keymux does not crash, opens no connection anywhere else, and every other command in the same
 *   pipelines (and after) is served, in order, with its own value.
 * - Two nodes redirecting a slot to each other forever (MOVED, and ASK): the command ends with a clear -ERR after
 *   max_redirections, having been sent exactly max_redirections + 1 times; other keys keep being served.
 * - A node that accepts connections but never finishes the handshake (AUTH unanswered) while its slots move to
 *   another node: commands queued on the unfinished connection were never written, so they are retried on the
 *   slot's new owner instead of failing.
 * - Retries and redirections have separate budgets: TRYAGAIN retries do not use up the redirections an op needs
 *   next (MOVED). A slot the view gives no master (a failover window) is retried with backoff while keymux
 *   rediscovers, and is served once a master is named; if none is, the client gets -CLUSTERDOWN after the
 *   retries, and other slots are served meanwhile.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { FakeBackend, bulk, waitFor, type Script } from '../support/fake-backend.js';
import { startKeymux } from '../support/keymux.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface FakeShard {
  node: FakeBackend;
  id: string;
  ranges: Array<[number, number]>;
}

/** A CLUSTER SHARDS reply (RESP2: flat key/value arrays) with one master per shard. */
function shardsReply(shards: FakeShard[]): string {
  const str = (s: string): string => bulk(s);
  let out = `*${shards.length}\r\n`;
  for (const s of shards) {
    out += `*4\r\n${str('slots')}*${s.ranges.length * 2}\r\n${s.ranges.map(([a, z]) => `:${a}\r\n:${z}\r\n`).join('')}`;
    out +=
      `${str('nodes')}*1\r\n*14\r\n${str('id')}${str(s.id)}${str('port')}:${s.node.port}\r\n${str('ip')}${str('127.0.0.1')}` +
      `${str('endpoint')}${str('127.0.0.1')}${str('role')}${str('master')}${str('replication-offset')}:1\r\n` +
      `${str('health')}${str('online')}`;
  }
  return out;
}

const nodeId = (n: number): string => n.toString(16).padStart(40, '0');

/** A fake cluster node: CLUSTER SHARDS from `layout()`, AUTH/PING +OK, the rest from `data` (null: default). */
async function fakeNode(layout: () => FakeShard[], data: (cmd: string[]) => string | null): Promise<FakeBackend> {
  const script: Script = (cmd) => {
    const name = cmd[0]!.toUpperCase();
    if (name === 'CLUSTER' && cmd[1]?.toUpperCase() === 'SHARDS') return shardsReply(layout());
    if (name === 'AUTH' || name === 'READONLY' || name === 'ASKING') return '+OK\r\n';
    if (name === 'PING') return '+PONG\r\n';
    const answer = data(cmd);
    if (answer !== null) return answer;
    if (name === 'GET') return bulk(`value-of-${cmd[1]}`);
    if (name === 'SET') return '+OK\r\n';
    if (name === 'MGET')
      return `*${cmd.length - 1}\r\n${cmd
        .slice(1)
        .map((k) => bulk(`value-of-${k}`))
        .join('')}`;
    return `-ERR fake node: unexpected ${name}\r\n`;
  };
  const node = await FakeBackend.start(script);
  cleanups.push(() => node.close());
  return node;
}

async function keymux(config: Record<string, unknown>): Promise<Proxy> {
  const proxy = await startKeymux({ mode: 'cluster', ...config }, { builtinCommandTable: true });
  cleanups.push(() => proxy.close());
  return proxy;
}

function client(port: number): Redis {
  // No ready check (its INFO would fan out to the fakes); a client-side timeout turns a hang into a failure.
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

/** Data commands (not CLUSTER/AUTH/...) a fake received, as "GET key" strings. */
function dataCommands(node: FakeBackend): string[] {
  return node.commands
    .filter((c) => !['CLUSTER', 'AUTH', 'READONLY', 'PING', 'COMMAND', 'INFO'].includes(c[0]!.toUpperCase()))
    .map(commandText);
}

/** "GET key" (ioredis sends names in lower case). */
function commandText(c: string[]): string {
  return [c[0]!.toUpperCase(), ...c.slice(1)].join(' ');
}

describe('malformed and out-of-range redirections', () => {
  it('answer a clear -ERR for the affected command; other commands are served, nothing else is contacted', async () => {
    let port = 0;
    const bad: Record<string, string> = {
      'bad:slot': '-MOVED 99999 127.0.0.1:PORT\r\n',
      'bad:slot-ask': '-ASK 16384 127.0.0.1:PORT\r\n',
      'bad:host': '-MOVED 1234 not_a host!:7000\r\n',
      'bad:v6': '-MOVED 1234 [::zz]:7000\r\n',
      'bad:port0': '-MOVED 1234 127.0.0.1:0\r\n',
      'bad:port-big': '-ASK 1234 127.0.0.1:70000\r\n',
      'bad:ask-no-port': '-ASK 1234 127.0.0.1\r\n',
      'bad:ask-empty-port': '-ASK 1234 127.0.0.1:\r\n',
      'bad:bare': '-MOVED\r\n',
      'bad:no-address': '-MOVED 1234\r\n',
      'bad:slot-text': '-MOVED abc 127.0.0.1:PORT\r\n',
      'bad:long': `-MOVED 1234 ${'a'.repeat(400)}:7000\r\n`,
    };
    const node = await fakeNode(
      () => [{ node, id: nodeId(1), ranges: [[0, 16383]] }],
      (cmd) => {
        const answer = cmd[1] !== undefined ? bad[cmd[1]] : undefined;
        return answer === undefined ? null : answer.replace('PORT', String(port));
      },
    );
    port = node.port;
    const proxy = await keymux({ cluster: { seeds: [node.address] } });
    expect(proxy.topology.shards.map((s) => s.address)).toEqual([node.address]);
    const c = client(proxy.port);

    // Bad keys interleaved with good ones in one pipeline.
    const badKeys = Object.keys(bad);
    const p = c.pipeline();
    const expected: Array<{ key: string; bad: boolean }> = [];
    for (const k of badKeys) {
      p.get(`good:${k}`);
      expected.push({ key: `good:${k}`, bad: false });
      p.get(k);
      expected.push({ key: k, bad: true });
    }
    p.set('good:set', 'v');
    expected.push({ key: 'good:set', bad: false });
    const results = (await p.exec())!;
    results.forEach(([err, rep], i) => {
      const e = expected[i]!;
      if (e.bad) {
        expect(rep ?? null).toBeNull();
        expect(err?.message).toMatch(
          new RegExp(`^ERR keymux: node ${node.address} sent an invalid cluster redirection \\(.+\\)$`),
        );
        expect(err?.message).not.toMatch(/^(MOVED|ASK)/);
      } else if (e.key === 'good:set') {
        expect(err).toBeNull();
        expect(rep).toBe('OK');
      } else {
        expect(err).toBeNull();
        expect(rep).toBe(`value-of-${e.key}`);
      }
    });
    const reasons = results
      .filter(([err]) => err !== null)
      .map(([err]) => err!.message.replace(/^.*?invalid cluster redirection \((.*)\)$/, '$1'));
    console.log(`invalid redirections, as the client sees them: ${JSON.stringify(reasons)}`);
    expect(reasons.find((r) => r.includes('99999'))).toMatch(/out of range/);
    expect(reasons.find((r) => r.includes('missing port'))).toBeDefined();

    // An MGET across slots with one bad key: the whole MGET gets the error (never a partial answer).
    const mgetErr = await c.mget('good:a', 'bad:slot', 'good:b').then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    expect(mgetErr).toMatch(/^ERR keymux: node .* sent an invalid cluster redirection/);

    // Every command reached the node exactly once: nothing was re-sent or sent anywhere else.
    const sent = dataCommands(node);
    expect(sent.filter((s) => s.startsWith('GET bad:')).length).toBe(badKeys.length);
    expect(sent.filter((s) => s === 'GET good:bad:slot').length).toBe(1);
    expect(proxy.stats.invalidRedirects).toBe(badKeys.length + 1);
    expect(proxy.stats.moved + proxy.stats.ask).toBe(0);
    expect(proxy.topology.shards.map((s) => s.address)).toEqual([node.address]);
    expect(proxy.topology.allPools().length).toBe(1);

    // keymux keeps serving: more good traffic, and a fresh connection.
    expect(await c.get('good:after')).toBe('value-of-good:after');
    const c2 = client(proxy.port);
    expect(await c2.mget('x1', 'x2', 'x3')).toEqual(['value-of-x1', 'value-of-x2', 'value-of-x3']);
    // An invalid redirection also asks for a fresh view of the cluster.
    await node.until(() => node.commands.filter((x) => x[0]!.toUpperCase() === 'CLUSTER').length >= 2, 'a rediscovery');
  });
});

describe('redirection loops', () => {
  it('a MOVED loop between two nodes ends with a clear -ERR after max_redirections', async () => {
    const layout = (): FakeShard[] => [
      { node: a, id: nodeId(1), ranges: [[0, 8191]] },
      { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
    ];
    const loop =
      (to: () => FakeBackend) =>
      (cmd: string[]): string | null =>
        cmd[1]?.startsWith('loop:') ? `-MOVED ${keySlot(Buffer.from(cmd[1]))} 127.0.0.1:${to().port}\r\n` : null;
    let a: FakeBackend, b: FakeBackend;
    a = await fakeNode(
      layout,
      loop(() => b),
    );
    b = await fakeNode(
      layout,
      loop(() => a),
    );
    const proxy = await keymux({ cluster: { seeds: [a.address], max_redirections: 3 } });
    expect(proxy.topology.shards.length).toBe(2);
    const c = client(proxy.port);

    const p = c.pipeline();
    p.get('loop:1');
    p.get('plain:1');
    p.set('loop:2', 'x');
    p.get('plain:2');
    const [r1, r2, r3, r4] = (await p.exec())!;
    expect(r1![0]?.message).toMatch(
      /^ERR keymux: too many cluster redirections \(3\); last: MOVED \d+ 127\.0\.0\.1:\d+$/,
    );
    expect(r2).toEqual([null, 'value-of-plain:1']);
    expect(r3![0]?.message).toMatch(/^ERR keymux: too many cluster redirections \(3\)/);
    expect(r4).toEqual([null, 'value-of-plain:2']);
    // Sent once, then redirected 3 times: 4 sends in all, alternating between the nodes.
    const sends = [...dataCommands(a), ...dataCommands(b)];
    expect(sends.filter((s) => s === 'GET loop:1').length).toBe(4);
    expect(sends.filter((s) => s === 'SET loop:2 x').length).toBe(4);
    expect(proxy.stats.moved).toBe(6);
    expect(await c.get('plain:3')).toBe('value-of-plain:3');
  });

  it('an ASK loop between two nodes ends with a clear -ERR after max_redirections', async () => {
    const layout = (): FakeShard[] => [
      { node: a, id: nodeId(1), ranges: [[0, 8191]] },
      { node: b, id: nodeId(2), ranges: [[8192, 16383]] },
    ];
    const loop =
      (to: () => FakeBackend) =>
      (cmd: string[]): string | null =>
        cmd[1]?.startsWith('ask:') ? `-ASK ${keySlot(Buffer.from(cmd[1]))} 127.0.0.1:${to().port}\r\n` : null;
    let a: FakeBackend, b: FakeBackend;
    a = await fakeNode(
      layout,
      loop(() => b),
    );
    b = await fakeNode(
      layout,
      loop(() => a),
    );
    const proxy = await keymux({ cluster: { seeds: [a.address], max_redirections: 2 } });
    const c = client(proxy.port);
    const [r1, r2] = (await c.pipeline().get('ask:1').get('plain:1').exec())!;
    expect(r1![0]?.message).toMatch(
      /^ERR keymux: too many cluster redirections \(2\); last: ASK \d+ 127\.0\.0\.1:\d+$/,
    );
    expect(r2).toEqual([null, 'value-of-plain:1']);
    const all = [...a.commands, ...b.commands].map(commandText);
    expect(all.filter((s) => s === 'GET ask:1').length).toBe(3);
    // Each ASK-redirected send is preceded by ASKING on the same connection.
    expect(all.filter((s) => s.toUpperCase() === 'ASKING').length).toBe(2);
    expect(proxy.stats.ask).toBe(2);
  });
});

describe('a node that never finishes the handshake', () => {
  it("commands queued on its unfinished connection are retried on the slot's new owner", async () => {
    let moved = false;
    const layout = (): FakeShard[] =>
      moved
        ? [{ node: a, id: nodeId(1), ranges: [[0, 16383]] }]
        : [
            { node: a, id: nodeId(1), ranges: [[0, 8191]] },
            { node: stuck, id: nodeId(2), ranges: [[8192, 16383]] },
          ];
    let a: FakeBackend, stuck: FakeBackend;
    a = await fakeNode(layout, () => null);
    // Accepts, reads, never answers anything (so keymux's AUTH stays unanswered).
    stuck = await FakeBackend.start(() => null);
    cleanups.push(() => stuck.close());
    const proxy = await keymux({
      backend: { password: 'pw', connect_timeout_ms: 300 },
      cluster: { seeds: [a.address], refresh_interval_ms: 60_000 },
    });
    expect(proxy.topology.shards.length).toBe(2);
    const stuckPool = proxy.topology.shards[1]!.pool;
    // The cluster moves the slots away (keymux does not know yet), and keymux is mid-handshake with the stuck node.
    moved = true;
    await waitFor(() => stuckPool.connections[0]!.state === 'handshake', 'a connection in its handshake', 5000, 2);
    const keys = Array.from({ length: 2000 }, (_, i) => `hs:${i}`)
      .filter((k) => keySlot(Buffer.from(k)) >= 8192)
      .slice(0, 20);
    const c = client(proxy.port);
    const p = c.pipeline();
    for (const k of keys) p.get(k);
    const results = (await p.exec())!;
    expect(results).toEqual(keys.map((k) => [null, `value-of-${k}`]));
    expect(proxy.stats.retries).toBeGreaterThan(0);
    expect(proxy.topology.shards.map((s) => s.address)).toEqual([a.address]);
    // The stuck node never saw a command: only AUTH on each connection attempt.
    expect(stuck.commands.every((x) => x[0] === 'AUTH')).toBe(true);
  });
});

describe('retries and redirections', () => {
  it('TRYAGAIN retries do not use up the redirections an op needs afterwards', async () => {
    // "t:" keys: a answers TRYAGAIN three times (a slot mid-migration), then MOVED to b, which serves them.
    const layout = (): FakeShard[] => [{ node: a, id: nodeId(1), ranges: [[0, 16383]] }];
    const tries = new Map<string, number>();
    let a: FakeBackend, b: FakeBackend;
    a = await fakeNode(layout, (cmd) => {
      if (!cmd[1]?.startsWith('t:')) return null;
      const n = (tries.get(cmd[1]) ?? 0) + 1;
      tries.set(cmd[1], n);
      return n <= 3
        ? '-TRYAGAIN Multiple keys request during rehashing of slot\r\n'
        : `-MOVED ${keySlot(Buffer.from(cmd[1]))} 127.0.0.1:${b.port}\r\n`;
    });
    b = await fakeNode(layout, () => null);
    const proxy = await keymux({
      cluster: { seeds: [a.address], max_redirections: 1, retry: { attempts: 3, base_delay_ms: 5 } },
    });
    const c = client(proxy.port);
    const [r1, r2] = (await c.pipeline().get('t:1').get('plain').exec())!;
    expect(r1).toEqual([null, 'value-of-t:1']);
    expect(r2).toEqual([null, 'value-of-plain']);
    expect(proxy.stats.retries).toBe(3);
    expect(proxy.stats.moved).toBe(1);
    expect(dataCommands(b)).toEqual(['GET t:1']);
  });

  it('ASK then TRYAGAIN, again and again (a multi-key command in a migrating slot): each retry starts afresh', async () => {
    // "m:" keys: a (the slot's owner) answers ASK to b; b, after ASKING, answers TRYAGAIN four times (the keys are
    // split between the nodes), then serves. Each retry goes back to a and meets the ASK again: that ASK must not
    // count against max_redirections (2 here), or the command fails after two loops with "too many redirections"
    // instead of being retried for the whole retry budget (and then surfacing TRYAGAIN, as a cluster client would).
    const layout = (): FakeShard[] => [{ node: a, id: nodeId(1), ranges: [[0, 16383]] }];
    let tries = 0;
    let a: FakeBackend, b: FakeBackend;
    a = await fakeNode(layout, (cmd) =>
      cmd[1]?.startsWith('m:') ? `-ASK ${keySlot(Buffer.from(cmd[1]))} 127.0.0.1:${b.port}\r\n` : null,
    );
    b = await fakeNode(layout, (cmd) => {
      if (!cmd[1]?.startsWith('m:')) return null;
      return ++tries <= 4 ? '-TRYAGAIN Multiple keys request during rehashing of slot\r\n' : null;
    });
    const proxy = await keymux({
      cluster: { seeds: [a.address], max_redirections: 2, retry: { attempts: 5, base_delay_ms: 5, max_delay_ms: 20 } },
    });
    const c = client(proxy.port);
    const [r1, r2] = (await c.pipeline().mget('m:{x}1', 'm:{x}2').get('plain').exec())!;
    expect(r1).toEqual([null, ['value-of-m:{x}1', 'value-of-m:{x}2']]);
    expect(r2).toEqual([null, 'value-of-plain']);
    expect(proxy.stats.ask).toBe(5);
    expect(proxy.stats.retries).toBe(4);
    // Out of retries, the client gets Redis's own TRYAGAIN, not a redirection error.
    tries = -100;
    const [r3] = (await c.pipeline().mget('m:{y}1', 'm:{y}2').exec())!;
    expect(r3![0]?.message).toMatch(/^TRYAGAIN /);
  });

  it('a blocking command refused CLUSTERDOWN is retried; CLIENT UNBLOCK meanwhile ends it as Redis would', async () => {
    // The node answers BLPOP "-CLUSTERDOWN" (a failover under way): nothing was popped, so keymux sends it again
    // after a backoff. A CLIENT UNBLOCK from another client while it waits answers it nil (TIMEOUT) or -UNBLOCKED.
    const layout = (): FakeShard[] => [{ node: a, id: nodeId(1), ranges: [[0, 16383]] }];
    let a: FakeBackend;
    a = await fakeNode(layout, (cmd) => {
      const name = cmd[0]!.toUpperCase();
      if (name === 'BLPOP') return '-CLUSTERDOWN The cluster is down\r\n';
      if (name === 'CLIENT' || name === 'HELLO') return ':1\r\n';
      return null;
    });
    const proxy = await keymux({
      cluster: { seeds: [a.address], retry: { attempts: 100, base_delay_ms: 20, max_delay_ms: 200 } },
    });
    const blocked = client(proxy.port);
    const other = client(proxy.port);
    for (const mode of ['TIMEOUT', 'ERROR'] as const) {
      const id = String(await blocked.client('ID'));
      const blpops = () => a.commands.filter((c) => c[0]!.toUpperCase() === 'BLPOP').length;
      const before = blpops();
      const popped = blocked.blpop('q', 0).then(
        (v) => v,
        (e: Error) => e,
      );
      await waitFor(() => blpops() >= before + 2, 'BLPOP sent again after CLUSTERDOWN');
      const unblocked =
        mode === 'TIMEOUT' ? await other.client('UNBLOCK', id, 'TIMEOUT') : await other.client('UNBLOCK', id, 'ERROR');
      expect(unblocked).toBe(1);
      const got = await popped;
      if (mode === 'TIMEOUT') expect(got).toBeNull();
      else expect((got as Error).message).toBe('UNBLOCKED client unblocked via CLIENT UNBLOCK');
    }
    expect(proxy.sessions.leasedTotal).toBe(0);
  });

  it('a slot no master serves (failover window) is retried until discovery names its new master', async () => {
    let covered = false;
    const layout = (): FakeShard[] => [{ node: a, id: nodeId(1), ranges: covered ? [[0, 16383]] : [[0, 8191]] }];
    const a: FakeBackend = await fakeNode(layout, () => null);
    const proxy = await keymux({
      cluster: { seeds: [a.address], refresh_interval_ms: 60_000, retry: { attempts: 8, base_delay_ms: 20 } },
    });
    const high = Array.from({ length: 100 }, (_, i) => `u:${i}`)
      .filter((k) => keySlot(Buffer.from(k)) > 8191)
      .slice(0, 3);
    const c = client(proxy.port);
    // The reply is on its way back once the slot is covered: keymux retries (and rediscovers) meanwhile.
    const pending = c.pipeline().get(high[0]!).mget(high[1]!, 'u:low', high[2]!).get('u:low').exec();
    await waitFor(() => proxy.stats.retries >= 2, 'keymux retrying the unserved slot', 5000, 2);
    covered = true;
    const [r1, r2, r3] = (await pending)!;
    expect(r1).toEqual([null, `value-of-${high[0]}`]);
    expect(r2).toEqual([null, [`value-of-${high[1]}`, 'value-of-u:low', `value-of-${high[2]}`]]);
    expect(r3).toEqual([null, 'value-of-u:low']);
  });

  it('a slot that stays unserved gets -CLUSTERDOWN once the retries are spent, without holding other keys', async () => {
    const a: FakeBackend = await fakeNode(
      () => [{ node: a, id: nodeId(1), ranges: [[0, 8191]] }],
      () => null,
    );
    const proxy = await keymux({
      cluster: { seeds: [a.address], retry: { attempts: 3, base_delay_ms: 10, max_delay_ms: 20 } },
    });
    const high = Array.from({ length: 100 }, (_, i) => `s:${i}`).find((k) => keySlot(Buffer.from(k)) > 8191)!;
    const c = client(proxy.port);
    const t0 = Date.now();
    const err = await c.get(high).then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    expect(err).toBe('CLUSTERDOWN Hash slot not served');
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(proxy.stats.retries).toBe(3);
    expect(await c.get('s:low')).toBe('value-of-s:low');
  });
});
