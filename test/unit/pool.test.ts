/**
 * ShardPool's RESP3 twin: created on first use with the pool's size, settings and counters and HELLO 3 in its
 * handshake; one per pool; the RESP2 connections are never touched by it; it follows the pool when the pool is
 * closed or retired, also when it is created after that (an op sent to it is answered, never left waiting).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ShardPool } from '../../src/backend/pool.js';
import type { BackendOptions } from '../../src/backend/backend-connection.js';
import type { BackendOp } from '../../src/core/request.js';
import { waitFor } from '../support/fake-backend.js';

const log = pino({ level: 'silent' });
const servers: net.Server[] = [];
const pools: ShardPool[] = [];

afterEach(async () => {
  for (const p of pools.splice(0)) p.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A server that answers HELLO with a map and anything else with +OK, recording the commands' first words. */
async function server(seen: string[]): Promise<number> {
  const s = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.on('data', (d) => {
      for (const m of d.toString('latin1').matchAll(/\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n/g)) {
        seen.push(m[1]);
        sock.write(m[1] === 'HELLO' ? '%1\r\n+proto\r\n:3\r\n' : '+OK\r\n');
      }
    });
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  s.unref();
  return (s.address() as net.AddressInfo).port;
}

function pool(port: number, size = 2): ShardPool {
  const options: BackendOptions = {
    connectTimeoutMs: 1000,
    timeoutMs: 1000,
    password: null,
    username: null,
    readOnly: false,
  };
  const p = new ShardPool({ name: 's', address: `127.0.0.1:${port}`, host: '127.0.0.1', port }, size, options, log);
  pools.push(p);
  return p;
}

function op(): BackendOp & { replies: string[] } {
  const replies: string[] = [];
  return {
    sentAt: 0,
    frame: Buffer.from('*1\r\n$4\r\nPING\r\n'),
    redirects: 0,
    sessionId: 1,
    replies,
    deliver: (f) => replies.push(f.toString()),
  };
}

describe('ShardPool RESP3 twin', () => {
  it('is created once, on first use, with the pool size and HELLO 3; RESP2 connections send no HELLO', async () => {
    const seen: string[] = [];
    const p = pool(await server(seen));
    p.connect();
    expect(p.allConnections()).toHaveLength(2);
    expect(p.forProtocol(2)).toBe(p);
    const twin = p.resp3();
    expect(p.resp3()).toBe(twin);
    expect(p.forProtocol(3)).toBe(twin);
    expect(twin.resp3()).toBe(twin);
    expect(twin.protocol).toBe(3);
    expect(p.protocol).toBe(2);
    expect(p.allConnections()).toHaveLength(4);
    expect(twin.connections.every((c) => c.protocol === 3)).toBe(true);
    await waitFor(() => p.allConnections().every((c) => c.state === 'ready'), 'all connected');
    expect(seen.filter((w) => w === 'HELLO')).toHaveLength(2); // one per twin connection, none on the others
    const o = op();
    twin.pick(1).send(o, o.frame);
    await waitFor(() => o.replies.length === 1, 'reply');
    expect(o.replies).toEqual(['+OK\r\n']);
    expect(p.inflight).toBe(0);
    p.close();
    expect(twin.connections.every((c) => c.state === 'closed')).toBe(true);
  });

  it('a twin made after the pool closed is closed: what is sent there is answered with an error at once', async () => {
    const p = pool(await server([]), 1);
    p.connect();
    p.close();
    const o = op();
    p.resp3().pick(1).send(o, o.frame);
    expect(o.replies).toHaveLength(1);
    expect(o.replies[0]).toMatch(/^-ERR keymux: shard 's'/);
  });

  it('a twin made after the pool was retired serves the op it was made for, then closes', async () => {
    const p = pool(await server([]), 1);
    p.connect();
    p.closeWhenIdle();
    const o = op();
    const twin = p.resp3();
    twin.pick(1).send(o, o.frame);
    await waitFor(() => o.replies.length === 1, 'reply');
    expect(o.replies).toEqual(['+OK\r\n']);
    await waitFor(() => twin.connections[0].state === 'closed', 'twin closed once idle');
  });
});
