// Graceful drain: /readyz turns false at once, the listener stops accepting, a request in flight to a slow shard
// still gets its reply, and drain completes once it has; a client idle at the time is closed.
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { request } from 'undici';
import { FakeBackend, bulk, waitFor } from '../support/fake-backend.js';
import { startKeymux, RawClient } from '../support/keymux.js';

describe('drain', () => {
  it('stops accepting, reports not ready, finishes in-flight requests, then closes', async () => {
    let release: (() => void) | null = null;
    const backend = await FakeBackend.start((cmd, conn) => {
      if (cmd[0].toUpperCase() === 'GET') {
        release = () => conn.write(bulk(`value-of-${cmd[1]}`));
        return null; // answer only when the test says so
      }
      return '+OK\r\n';
    });
    const proxy = await startKeymux(
      {
        admin: '127.0.0.1:0',
        mode: 'ring',
        shards: [{ address: backend.address }],
        log: { level: 'silent' },
      },
      { builtinCommandTable: true },
    );
    const ready = async () => (await request(`http://127.0.0.1:${proxy.adminPort}/readyz`)).statusCode;
    await waitFor(async () => (await ready()) === 200, 'readyz 200');

    const busy = await RawClient.connect(proxy.port);
    const idle = await RawClient.connect(proxy.port);
    busy.write('*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n');
    await waitFor(() => release !== null, 'the GET to reach the shard');

    const port = proxy.port;
    const drained = proxy.drain(10_000);
    expect(proxy.readiness().ok).toBe(false);
    expect(proxy.readiness().reason).toBe('draining');
    // New connections are refused once the listener has stopped.
    await waitFor(
      () =>
        new Promise<boolean>((res) => {
          const s = net.connect(port, '127.0.0.1');
          s.once('connect', () => {
            s.destroy();
            res(false);
          });
          s.once('error', () => res(true));
        }),
      'the listener to refuse connections',
    );
    // The idle client is closed; the busy one still waits for its reply.
    expect(await idle.untilClosed()).toBe('');
    expect(busy.closed).toBe(false);
    (release as unknown as () => void)();
    expect(await busy.untilClosed()).toBe('$12\r\nvalue-of-key\r\n');
    await drained;
    await backend.close();
  });
});
