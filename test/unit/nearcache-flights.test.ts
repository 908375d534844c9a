// NearCache's flights, driven with a scripted connection and a scripted invalidation channel: a read reply is
// cached only when nothing raced it (an invalidation of its key, the channel's loss, a topology change, a write of
// the key through keymux); identical reads of different clients share one send; a client's own write holds its key.
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { NearCache, type NearCacheSettings } from '../../src/nearcache/near-cache.js';
import type { InvalidationTracker } from '../../src/nearcache/invalidation.js';
import { Request, UNIT_AT_BACKEND, type BackendOp, type RequestOwner } from '../../src/core/request.js';
import { ShardStats } from '../../src/metrics/stats.js';
import { ROLE_GET } from '../../src/nearcache/store.js';
import type { Topology, ShardRuntime } from '../../src/routing/topology.js';
import type { ShardPool } from '../../src/backend/pool.js';
import { idleOwner } from '../support/owner.js';

const SETTINGS: NearCacheSettings = {
  enabled: true,
  maxBytes: 1 << 20,
  maxEntryBytes: 1 << 16,
  admit: 'all',
  ttlMs: 0,
  commands: ['GET', 'MGET', 'HGET', 'HGETALL', 'EXISTS'],
  coalesce: true,
};

function encode(args: string[]): { frame: Buffer; args: Buffer[] } {
  const frame = Buffer.from(`*${args.length}\r\n${args.map((a) => `$${a.length}\r\n${a}\r\n`).join('')}`);
  return { frame, args: args.map((a) => Buffer.from(a)) };
}

const owners = new Map<number, RequestOwner>();
function owner(id: number): RequestOwner {
  let o = owners.get(id);
  if (o === undefined) owners.set(id, (o = idleOwner(id)));
  return o;
}

function harness() {
  const sent: Array<{ op: BackendOp; frame: Buffer }> = [];
  const stats = new ShardStats('a', '127.0.0.1:1');
  // One connection, the same object whoever asks (a read joins only a read sent over the connection it would take).
  // Every op queued on it, in order, numbered by position (BackendConnection.positionOfLast / waitingAt): an op is
  // waiting until it is answered.
  const queued: BackendOp[] = [];
  const conn = {
    send: (op: BackendOp, frame: Buffer) => {
      queued.push(op);
      sent.push({ op, frame });
    },
    positionOfLast: (op: BackendOp) => (queued[queued.length - 1] === op ? queued.length - 1 : -1),
    waitingAt: (position: number) => {
      const op = queued[position] as Request | undefined;
      return op === undefined || op.answered ? undefined : op;
    },
  };
  const pool = {
    shard: { name: 'a', address: '127.0.0.1:1', host: '127.0.0.1', port: 1 },
    stats,
    pick: () => conn,
  } as unknown as ShardPool;
  const shard = { index: 0, name: 'a', address: '127.0.0.1:1', pool, replicas: [] } as unknown as ShardRuntime;
  const topo = {
    shards: [shard],
    config: { backend: { connectTimeoutMs: 1000, password: null, username: null, tls: null } },
    router: { shardFor: () => 0 },
  } as unknown as Topology;
  const channel = {
    address: '127.0.0.1:1',
    index: 0,
    ready: true,
    generation: 0,
    options: {},
    close: () => undefined,
  } as unknown as InvalidationTracker;
  const nc = new NearCache(
    SETTINGS,
    () => null,
    pino({ level: 'silent' }),
    (_a, _i, options) => {
      (channel as { options: unknown }).options = options;
      return channel;
    },
  );
  nc.onTopology(topo);
  const session = (id: number) => ({
    id,
    sendUnit(unit: Request) {
      unit.state = UNIT_AT_BACKEND;
      queued.push(unit);
      sent.push({ op: unit, frame: unit.frame });
    },
  });
  /** GET key by client `id`: returns the request (answered or not). */
  const read = (id: number, key: string): Request => {
    const { frame, args } = encode(['GET', key]);
    const req = new Request(owner(id), frame, args, 0, 0);
    req.shardStats = stats;
    nc.read(session(id), req, ROLE_GET, args[1], shard, pool, topo);
    return req;
  };
  const write = (id: number, key: string): Request => {
    const { frame, args } = encode(['SET', key, 'x']);
    const req = new Request(owner(id), frame, args, 0, 0);
    nc.write(req, [1], 1, 1);
    sent.push({ op: req, frame });
    return req;
  };
  /** Answers everything sent so far, in order: `value` for reads, +OK for writes, `pttl` for PTTL probes. */
  const answer = (value: string, pttl = ':-1\r\n') => {
    for (const { op, frame } of sent.splice(0)) {
      const text = frame.toString();
      if (text.includes('PTTL')) op.deliver(Buffer.from(pttl));
      else if (text.includes('SET')) op.deliver(Buffer.from('+OK\r\n'));
      else op.deliver(Buffer.from(`$${value.length}\r\n${value}\r\n`));
    }
  };
  return { nc, sent, read, write, answer, channel, stats, topo };
}

describe('NearCache flights', () => {
  it('caches a reply nothing raced, with a PTTL right behind the read; the next read is served from memory', () => {
    const h = harness();
    const r1 = h.read(1, 'k');
    expect(h.sent.map((s) => s.frame.toString())).toEqual([r1.frame.toString(), '*2\r\n$4\r\nPTTL\r\n$1\r\nk\r\n']);
    h.answer('v1');
    expect(r1.reply?.toString()).toBe('$2\r\nv1\r\n');
    const r2 = h.read(2, 'k');
    expect(h.sent).toEqual([]);
    expect(r2.reply?.toString()).toBe('$2\r\nv1\r\n');
    expect(h.stats.nearHits).toBe(1);
  });

  it('does not cache a reply whose key was invalidated while it was in flight (the classic race)', () => {
    const h = harness();
    h.read(1, 'k');
    h.nc.invalidated(h.channel, [Buffer.from('k')]);
    h.answer('old');
    expect(h.nc.store.size).toBe(0);
    h.read(2, 'k');
    expect(h.sent.length).toBe(2); // sent again: not served from memory
  });

  it('does not cache a reply whose channel was lost, or whose topology changed, while it was in flight', () => {
    const h = harness();
    h.read(1, 'k');
    (h.channel as { generation: number }).generation++;
    h.nc.lost(h.channel);
    h.answer('v');
    expect(h.nc.store.size).toBe(0);
    h.read(1, 'k2');
    h.nc.onTopology(h.topo);
    h.answer('v');
    expect(h.nc.store.size).toBe(0);
  });

  it('does not fill while the channel is not ready', () => {
    const h = harness();
    (h.channel as { ready: boolean }).ready = false;
    h.read(1, 'k');
    expect(h.sent.length).toBe(1); // no PTTL probe
    h.answer('v');
    expect(h.nc.store.size).toBe(0);
  });

  it('coalesces identical reads of different clients into one send; not those of the same client', () => {
    const h = harness();
    const gets = (): number => h.sent.filter((s) => s.frame.toString().startsWith('*2\r\n$3\r\nGET')).length;
    // The first read of a key is the leader; identical reads of other clients wait for it.
    const a = h.read(1, 'k');
    expect(gets()).toBe(1);
    const b = h.read(2, 'k');
    const d = h.read(3, 'k');
    expect(gets()).toBe(1); // b and d wait for a: a burst reaches the shard as one read
    const c = h.read(1, 'k');
    expect(gets()).toBe(2); // a and c (c is a's own client: sent, not merged; b and d wait for a)
    expect(h.stats.coalesced).toBe(2);
    h.answer('v');
    expect([a, b, d, c].map((r) => r.reply?.toString())).toEqual(Array(4).fill('$1\r\nv\r\n'));
    // An answered leader is joined by nobody: the next identical read is sent (and leads in turn).
    h.nc.store.clear();
    const e = h.read(2, 'k');
    expect(gets()).toBe(1);
    const f = h.read(3, 'k');
    expect(gets()).toBe(1);
    h.answer('w');
    expect([e, f].map((r) => r.reply?.toString())).toEqual(Array(2).fill('$1\r\nw\r\n'));
  });

  it('a write through keymux drops the key, ends coalescing, and holds the key until it is answered', () => {
    const h = harness();
    h.read(1, 'k');
    h.answer('v0');
    expect(h.nc.store.size).toBe(1);
    const leader = h.read(1, 'j'); // in flight when j is written
    const w = h.write(2, 'k');
    expect(h.nc.store.size).toBe(0);
    h.write(3, 'j');
    const follower = h.read(4, 'j'); // must not join the flight sent before the write
    expect(leader.tap).not.toBeNull();
    expect(follower.done).toBe(false);
    // While the write of k is in flight, reads of k are sent plainly (no PTTL) and never cached.
    h.sent.splice(0).forEach(({ op, frame }) => {
      if (frame.toString().includes('PTTL')) op.deliver(Buffer.from(':-1\r\n'));
      else if (op !== w) op.deliver(Buffer.from('$2\r\nv0\r\n'));
    });
    const during = h.read(5, 'k');
    expect(h.sent.length).toBe(1);
    h.sent[0].op.deliver(Buffer.from('$2\r\nv0\r\n'));
    h.sent.length = 0;
    expect(during.done).toBe(true);
    expect(h.nc.store.size).toBe(0);
    w.deliver(Buffer.from('+OK\r\n'));
    h.read(5, 'k');
    expect(h.sent.length).toBe(2); // released: a read may fill again
    h.answer('x');
    expect(h.nc.store.size).toBe(1);
  });
});
