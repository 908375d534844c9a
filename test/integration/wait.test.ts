/**
 * WAIT numreplicas timeout through keymux (issue 10), on real redis-server masters with real replicas: shard a has
 * two replicas, shard b one. keymux waits, per shard the client wrote to since its last WAIT, on a session
 * connection of its own (server/dispatch/wait.ts), and answers the smallest count:
 * - writes to both shards, WAIT 1 1000 -> 1, and the keys are on every replica when it returns;
 * - writes to shard a only -> only a is waited on (WAIT 2 -> 2, although b has one replica);
 * - more replicas than exist, timeout 200 -> the count reached once the timeout passed;
 * - no writes since the last WAIT -> the connected replicas (smallest over the shards), as Redis answers a
 *   connection that wrote nothing; when that is fewer than asked, it blocks until more replicas are online;
 * - a stopped replica (SIGSTOP): WAIT with a timeout answers 0; WAIT 0 (for ever) blocks while other clients'
 *   GETs on the same shard are answered, the client's own later commands wait behind it, and it returns 1 once the
 *   replica runs again (SIGCONT);
 * - a client that leaves mid-WAIT leaves no lease, no blocked entry and no blocked client on the shard;
 * - RESP3 (HELLO 3), redis-cli, argument errors in Redis's words, WAIT inside MULTI (answered at once), ring mode.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { Redis } from 'ioredis';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { RawClient, ringConfig, slotsConfig, startKeymux } from '../support/keymux.js';
import { startCluster } from '../support/cluster.js';
import { keySlot } from '../../src/routing/crc16.js';
import type { Proxy } from '../../src/proxy.js';

let ma: RedisProcess;
let mb: RedisProcess;
let ra1: RedisProcess;
let ra2: RedisProcess;
let rb: RedisProcess;
let proxy: Proxy;
let keyA: (name: string) => string;
let keyB: (name: string) => string;
const clients: Redis[] = [];

async function connectedReplicas(master: RedisProcess): Promise<number> {
  const info = String(await redisCommand(master.port, 'INFO', 'replication'));
  return (info.match(/^slave\d+:.*state=online/gm) ?? []).length;
}

/** Connections blocked in WAIT on `master` (CLIENT LIST: flag b, last command wait). */
async function waitingOn(master: RedisProcess): Promise<number> {
  const list = String(await redisCommand(master.port, 'CLIENT', 'LIST'));
  return list.split('\n').filter((l) => /flags=\w*b/.test(l) && / cmd=wait /.test(l)).length;
}

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10)); // no event for this; poll with a deadline
  }
}

function client(port = proxy.port): Redis {
  const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0 });
  c.on('error', () => undefined); // a client of a keymux a test closed may try to reconnect meanwhile
  clients.push(c);
  return c;
}

beforeAll(async () => {
  [ma, mb] = await Promise.all([startRedis(), startRedis()]);
  [ra1, ra2, rb] = await Promise.all([
    startRedis({ args: ['--replicaof', '127.0.0.1', String(ma.port)] }),
    startRedis({ args: ['--replicaof', '127.0.0.1', String(ma.port)] }),
    startRedis({ args: ['--replicaof', '127.0.0.1', String(mb.port)] }),
  ]);
  await waitUntil(async () => (await connectedReplicas(ma)) === 2 && (await connectedReplicas(mb)) === 1, 30_000);
  proxy = await startKeymux(slotsConfig([ma.port, mb.port]));
  const router = proxy.topology.router;
  const onShard = (shard: number) => (name: string) => {
    for (let i = 0; ; i++) {
      const key = `${name}{w${i}}`;
      if (router.shardOfGroup(router.groupFor(Buffer.from(key))) === shard) return key;
    }
  };
  keyA = onShard(0);
  keyB = onShard(1);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await proxy?.close();
  for (const r of [ra1, ra2, rb]) if (r !== undefined) process.kill(r.pid, 'SIGCONT');
  await Promise.all([ma, mb, ra1, ra2, rb].filter((r) => r !== undefined).map((r) => r.stop('SIGKILL')));
});

const waitCmd = (c: Redis, n: number, t: number): Promise<number> => c.call('WAIT', n, t) as Promise<number>;

describe('WAIT through keymux (slots mode)', () => {
  it('writes to two shards, WAIT 1 1000 -> 1, and the keys are on every replica', async () => {
    const c = client();
    const ka = keyA('w1');
    const kb = keyB('w1');
    const [, , waited] = await Promise.all([c.set(ka, 'va'), c.set(kb, 'vb'), waitCmd(c, 1, 1000)]);
    expect(waited).toBe(1); // min(a: 1 or 2, b: 1)
    // WAIT 1 guarantees at least one replica of each shard; a full wait shows all of a's got it too.
    expect(await waitCmd(c, 1, 1000)).toBe(1); // nothing written since: the connected replicas, min over shards
    expect(await redisCommand(rb.port, 'GET', kb)).toBe('vb');
    await c.set(ka, 'va2');
    expect(await waitCmd(c, 2, 2000)).toBe(2);
    expect(await redisCommand(ra1.port, 'GET', ka)).toBe('va2');
    expect(await redisCommand(ra2.port, 'GET', ka)).toBe('va2');
    expect(proxy.sessions.leasedTotal).toBe(0);
  });

  it('only the shards the client wrote to are waited on', async () => {
    const c = client();
    await c.set(keyA('only-a'), '1');
    expect(await waitCmd(c, 2, 2000)).toBe(2); // shard b (one replica) is not counted: nothing was written there
    await c.set(keyB('only-b'), '1');
    expect(await waitCmd(c, 1, 2000)).toBe(1);
    // A script's writes and a transaction's (over a session connection) count too: only shard a is waited on.
    await c.eval("return redis.call('SET', KEYS[1], 'x')", 1, keyA('script'));
    expect(await waitCmd(c, 2, 2000)).toBe(2);
    await c.multi().set(keyA('tx'), '1').exec();
    expect(await waitCmd(c, 2, 2000)).toBe(2);
    // Without writes since the last WAIT: the smallest number of replicas online (b has one).
    expect(await waitCmd(c, 2, 200)).toBe(1);
  });

  it('more replicas than exist: returns the count reached once the timeout passed', async () => {
    const c = client();
    await c.set(keyA('many'), '1');
    await c.set(keyB('many'), '1');
    expect(await waitCmd(c, 5, 200)).toBe(1); // a reached 2, b 1
    await c.set(keyA('many2'), '1');
    expect(await waitCmd(c, 5, 200)).toBe(2);
  });

  it('a client that wrote nothing gets the connected replicas (smallest over the shards)', async () => {
    const c = client();
    expect(await waitCmd(c, 0, 0)).toBe(1);
    expect(await waitCmd(c, 1, 0)).toBe(1);
  });

  it('a client that wrote nothing and asks for more replicas than are online blocks, as Redis does, until they are', async () => {
    const c = client();
    const other = client();
    let answered: number | null = null;
    const waiting = waitCmd(c, 2, 0).then((n) => (answered = n)); // b has one replica online: Redis would block
    await waitUntil(async () => (await waitingOn(mb)) === 1); // a (two replicas online) answered at once
    expect(answered).toBeNull();
    expect(await other.get(keyB('meanwhile'))).toBeNull(); // only the waiting client is held
    const rb2 = await startRedis({ args: ['--replicaof', '127.0.0.1', String(mb.port)] });
    try {
      expect(await waiting).toBe(2); // b's second replica came online
    } finally {
      await rb2.stop();
      await waitUntil(async () => (await connectedReplicas(mb)) === 1, 30_000);
    }
    expect(await waitingOn(mb)).toBe(0);
  });

  it('argument errors in Redis words; WAIT inside MULTI is answered at once', async () => {
    const c = client();
    await expect(c.call('WAIT', 'x', 0)).rejects.toThrow('ERR value is not an integer or out of range');
    await expect(c.call('WAIT', 1, 'x')).rejects.toThrow('ERR timeout is not an integer or out of range');
    await expect(c.call('WAIT', 1, -1)).rejects.toThrow('ERR timeout is negative');
    await expect(c.call('WAIT', 1)).rejects.toThrow("ERR wrong number of arguments for 'wait' command");
    const k = keyA('multi');
    const res = await c.multi().set(k, '1').call('WAIT', 5, 0).get(k).exec();
    expect(res?.[0]).toEqual([null, 'OK']);
    expect(typeof res?.[1]?.[1]).toBe('number');
    expect(res?.[2]).toEqual([null, '1']);
  });

  it('a stopped replica: WAIT with a timeout answers 0; WAIT 0 blocks only its client and returns once it runs', async () => {
    const c = client();
    const other = client();
    const kb = keyB('stopped');
    process.kill(rb.pid, 'SIGSTOP');
    try {
      await c.set(kb, 'v1');
      expect(await waitCmd(c, 1, 200)).toBe(0);
      await c.set(kb, 'v2');
      let returned: number | null = null;
      const forever = waitCmd(c, 1, 0).then((n) => (returned = n));
      const after = c.get(kb); // pipelined behind the WAIT: answered after it
      let afterDone = false;
      void after.then(() => (afterDone = true));
      await waitUntil(async () => (await waitingOn(mb)) === 1);
      // Other clients on the same shard (same shared connections) are served meanwhile.
      for (let i = 0; i < 20; i++) {
        await other.set(keyB(`o${i}`), String(i));
        expect(await other.get(keyB(`o${i}`))).toBe(String(i));
      }
      expect(await other.get(kb)).toBe('v2');
      expect(returned).toBeNull();
      expect(afterDone).toBe(false);
      process.kill(rb.pid, 'SIGCONT');
      expect(await forever).toBe(1);
      expect(await after).toBe('v2');
      expect(await redisCommand(rb.port, 'GET', kb)).toBe('v2');
    } finally {
      process.kill(rb.pid, 'SIGCONT');
    }
    expect(proxy.sessions.leasedTotal).toBe(0);
    expect(proxy.sessions.blocked.size).toBe(0);
  });

  it('a client that leaves mid-WAIT leaves no lease, no blocked entry and no blocked client on the shard', async () => {
    process.kill(rb.pid, 'SIGSTOP');
    try {
      const raw = await RawClient.connect(proxy.port);
      const kb = keyB('gone');
      raw.write(`*3\r\n$3\r\nSET\r\n$${kb.length}\r\n${kb}\r\n$1\r\n1\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n`);
      await raw.untilText('+OK\r\n');
      await waitUntil(async () => (await waitingOn(mb)) === 1 && proxy.sessions.leasedTotal === 1);
      expect(proxy.sessions.blocked.size).toBe(1);
      raw.close();
      await waitUntil(async () => (await waitingOn(mb)) === 0);
      expect(proxy.sessions.leasedTotal).toBe(0);
      expect(proxy.sessions.blocked.size).toBe(0);
    } finally {
      process.kill(rb.pid, 'SIGCONT');
    }
  });

  it('CLIENT UNBLOCK of a client in WAIT: it gets the count reached so far, as Redis answers', async () => {
    process.kill(rb.pid, 'SIGSTOP');
    try {
      const c = client();
      const other = client();
      const id = (await c.client('ID')) as number;
      await c.set(keyB('unblock'), '1');
      const waited = waitCmd(c, 1, 0);
      await waitUntil(async () => (await waitingOn(mb)) === 1);
      expect(await other.call('CLIENT', 'UNBLOCK', id)).toBe(1);
      expect(await waited).toBe(0);
      expect(await c.get(keyB('unblock'))).toBe('1'); // the client goes on
    } finally {
      process.kill(rb.pid, 'SIGCONT');
    }
    await waitUntil(() => proxy.sessions.leasedTotal === 0);
  });

  it('drain answers a client in WAIT with the count reached so far, then closes it', async () => {
    const d = await startKeymux(slotsConfig([ma.port, mb.port]));
    process.kill(rb.pid, 'SIGSTOP');
    try {
      const raw = await RawClient.connect(d.port);
      const kb = keyB('drain');
      raw.write(`*3\r\n$3\r\nSET\r\n$${kb.length}\r\n${kb}\r\n$1\r\n1\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n`);
      await raw.untilText('+OK\r\n');
      await waitUntil(async () => (await waitingOn(mb)) === 1);
      const drained = d.drain(5000);
      expect(await raw.untilClosed()).toBe('+OK\r\n:0\r\n');
      await drained;
      expect(d.sessions.leasedTotal).toBe(0);
    } finally {
      process.kill(rb.pid, 'SIGCONT');
      await d.close();
    }
  });

  it('no session connection free: a clear error, and the next WAIT still waits for those writes', async () => {
    const small = await startKeymux(slotsConfig([ma.port, mb.port], { backend: { session_connections: { max: 1 } } }));
    try {
      const blocker = client(small.port);
      const c = client(small.port);
      const q = keyA('q');
      const popped = blocker.blpop(q, 0); // holds shard a's only session connection
      await waitUntil(() => small.sessions.leasedTotal === 1);
      await c.set(keyA('full'), '1');
      await expect(c.call('WAIT', 2, 2000)).rejects.toThrow('no session connection free');
      await c.lpush(q, 'x');
      expect(await popped).toEqual([q, 'x']);
      await waitUntil(() => small.sessions.leasedTotal === 0);
      expect(await waitCmd(c, 2, 2000)).toBe(2); // shard a still waited on (no write since: min over all = 1)
      blocker.disconnect();
      c.disconnect();
    } finally {
      await small.close();
    }
  });

  it('RESP3 client (HELLO 3) and redis-cli', async () => {
    const raw = await RawClient.connect(proxy.port);
    const ka = keyA('resp3');
    raw.write('*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n');
    await raw.untilText('proto');
    raw.data = Buffer.alloc(0);
    raw.write(`*3\r\n$3\r\nSET\r\n$${ka.length}\r\n${ka}\r\n$1\r\n1\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$4\r\n2000\r\n`);
    expect(await raw.untilText(':2\r\n')).toBe('+OK\r\n:2\r\n');
    raw.close();
    const kb = keyB('cli');
    const child = execFile('redis-cli', ['-p', String(proxy.port)]); // one connection: SET, then WAIT
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin?.end(`SET ${kb} 1\nWAIT 1 2000\n`);
    await new Promise((r) => child.on('exit', r));
    expect(out.trim().split('\n')).toEqual(['OK', '1']);
  });
});

describe('WAIT through keymux (ring mode)', () => {
  it('writes over the ring, WAIT 1 1000 -> 1', async () => {
    const ring = await startKeymux(ringConfig([ma.port, mb.port]));
    try {
      const c = client(ring.port);
      // Five keys on each master (the ring depends on the ports; twemproxy's fnv1a_64 can put ten keys that
      // differ only in their last byte all on one shard, whose two replicas would make WAIT 1 answer 2).
      const router = ring.topology.router;
      const shardOf = (k: string): number => router.shardOfGroup(router.groupFor(Buffer.from(k)));
      const candidates = Array.from({ length: 200 }, (_, i) => `${i}:ring`);
      const keys = [0, 1].flatMap((s) => candidates.filter((k) => shardOf(k) === s).slice(0, 5));
      expect(keys).toHaveLength(10);
      for (const [i, k] of keys.entries()) await c.set(k, String(i));
      expect(await waitCmd(c, 1, 1000)).toBe(1);
      for (const [i, k] of keys.entries()) {
        const onA = await redisCommand(ma.port, 'EXISTS', k);
        const replica = onA === 1 ? ra1 : rb;
        expect(await redisCommand(replica.port, 'GET', k)).toBe(String(i));
      }
      c.disconnect();
    } finally {
      await ring.close();
    }
  });
});

describe('WAIT through keymux (cluster mode)', () => {
  it('writes to three masters, WAIT 1 2000 -> 1, the keys on every replica, no mark key left, MOVED writes', async () => {
    const cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
    const proxy = await startKeymux({ mode: 'cluster', cluster: { seeds: cluster.seeds().slice(0, 2) } });
    try {
      const c = client(proxy.port);
      const ranges = await cluster.slotRanges();
      const keys: Array<{ key: string; masterId: string }> = [];
      for (const [masterId, slots] of ranges) {
        const [from, to] = slots[0];
        for (let i = 0; ; i++) {
          const slot = keySlot(Buffer.from(`c${i}`));
          if (slot >= from && slot <= to) {
            keys.push({ key: `c${i}`, masterId });
            break;
          }
        }
      }
      expect(keys.length).toBe(3);
      for (const { key } of keys) await c.set(key, `v-${key}`);
      expect(await waitCmd(c, 1, 2000)).toBe(1);
      for (const { key, masterId } of keys) {
        for (const replica of cluster.replicasOf(masterId)) {
          const [, got] = await redisCommands(replica.port, [['READONLY'], ['GET', key]]);
          expect(got).toBe(`v-${key}`);
        }
      }
      expect(await waitCmd(c, 3, 200)).toBe(1); // nothing written since: the replicas online
      await c.set(keys[0].key, 'again');
      expect(await waitCmd(c, 2, 200)).toBe(1); // one replica per master: the timeout passes
      for (const m of cluster.masters()) {
        expect(await redisCommand(m.port, 'SCAN', '0', 'MATCH', '__keymux*', 'COUNT', '1000')).toEqual(['0', []]);
      }
      // A write that MOVED redirects (keymux's slot map is stale after a reshard) is waited for on the master that
      // took it: with that master's replica stopped, WAIT answers 0 (the former owner alone would answer 1).
      const [from, to] = cluster.masters();
      const before = await cluster.slotRanges();
      await cluster.reshard(from.id, to.id, 1);
      const after = await cluster.slotRanges();
      const toRanges = after.get(to.id) ?? [];
      const moved = (before.get(from.id) ?? [])
        .flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => a + i))
        .find((slot) => toRanges.some(([a, b]) => slot >= a && slot <= b)) as number;
      let movedKey = '';
      for (let i = 0; movedKey === ''; i++) if (keySlot(Buffer.from(`m${i}`)) === moved) movedKey = `m${i}`;
      const toReplica = cluster.replicasOf(to.id)[0];
      process.kill(toReplica.pid, 'SIGSTOP');
      try {
        await c.set(movedKey, 'moved');
        expect(await redisCommand(to.port, 'GET', movedKey)).toBe('moved');
        expect(await waitCmd(c, 1, 300)).toBe(0);
      } finally {
        process.kill(toReplica.pid, 'SIGCONT');
      }
      c.disconnect();
    } finally {
      await proxy.close();
      await cluster.stop();
    }
  }, 60_000);
});
