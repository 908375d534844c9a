/**
 * A sentinel's event connection (backend/sentinel.ts SentinelWatcher) against a scripted sentinel: a refused AUTH
 * ends the connection and it is opened again (it stayed connected and unsubscribed, hearing no failover, until a
 * reload), and once subscribed its events arrive.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBackend, waitFor, type FakeConnection } from '../support/fake-backend.js';
import { SentinelWatcher } from '../../src/backend/sentinel.js';
import { childLogger } from '../../src/log.js';
import type { SentinelConfig } from '../../src/config/schema.js';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

const subscribed = (channels: string[]): string =>
  channels.map((c, i) => `*3\r\n$9\r\nsubscribe\r\n$${c.length}\r\n${c}\r\n:${i + 1}\r\n`).join('');

describe('SentinelWatcher', () => {
  it('a refused AUTH ends the connection, which is opened again; once subscribed, events arrive', async () => {
    // The first connection is refused (the sentinel's password was changed, then changed back), later ones pass.
    const sentinel = await FakeBackend.start((cmd: string[], conn: FakeConnection) => {
      if (cmd[0]?.toUpperCase() === 'AUTH')
        return conn.index === 0 ? '-WRONGPASS invalid username-password pair or user is disabled.\r\n' : '+OK\r\n';
      if (cmd[0]?.toUpperCase() === 'SUBSCRIBE')
        return conn.index === 0 ? '-NOAUTH Authentication required.\r\n' : subscribed(cmd.slice(1));
      return '-ERR unexpected\r\n';
    });
    open.push(sentinel);
    const events: string[] = [];
    const settings = { password: 'pw', username: null } as unknown as SentinelConfig;
    const at = { host: '127.0.0.1', port: sentinel.port, address: sentinel.address };
    const watcher = new SentinelWatcher(at, settings, childLogger('test'), (channel, text) =>
      events.push(`${channel} ${text}`),
    );
    open.push(watcher);
    watcher.start();
    expect(watcher.subscribed).toBe(false);
    await waitFor(() => sentinel.connections.length === 2, 'a second connection after the refused AUTH', 5000);
    expect(sentinel.connections[0]!.closed).toBe(true);
    await waitFor(() => sentinel.connections[1]!.commands.some((c) => c[0] === 'SUBSCRIBE'), 'the SUBSCRIBE', 5000);
    const text = 'mymaster 127.0.0.1 6379 127.0.0.1 6380';
    sentinel.connections[1]!.write(`*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$${text.length}\r\n${text}\r\n`);
    await waitFor(() => events.length === 1, 'the event', 5000);
    expect(events).toEqual([`+switch-master ${text}`]);
    expect(watcher.subscribed).toBe(true); // keymux_sentinel_up 1
    sentinel.connections[1]!.socket.destroy();
    await waitFor(() => !watcher.subscribed, 'the lost subscription to show', 5000); // keymux_sentinel_up 0
  });
});
