/**
 * INFO clients' blocked_clients through keymux counts a client as blocked only once its shard says a client is
 * blocked there, not as soon as keymux has written the blocking command to the shard's connection: a client that
 * waits for blocked_clients before acting (Redis's own test suite: wait_for_blocked_clients_count, then a SET that
 * must find the XREADGROUP blocked) acted before the shard had read the command, and the SET, on another
 * connection, overtook it (unit/type/stream-cgroups failed that way in CI). The shard here is scripted: it takes a
 * BLPOP and stays silent, and answers INFO with the blocked_clients the test sets.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { FakeBackend, bulk, waitFor } from '../support/fake-backend.js';
import { startKeymux, slotsConfig } from '../support/keymux.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('INFO blocked_clients', () => {
  it('counts a blocking call only once its shard reports it blocked', async () => {
    let shardBlocked = 0;
    const shard = await FakeBackend.start((cmd) => {
      const name = cmd[0].toUpperCase();
      if (name === 'BLPOP') return null; // taken, never answered
      if (name === 'CLIENT') return ':7\r\n';
      if (name === 'INFO') return bulk(`# Clients\r\nblocked_clients:${shardBlocked}\r\n\r\n# Keyspace\r\n`);
      return '+OK\r\n';
    });
    cleanups.push(() => shard.close());
    const proxy = await startKeymux(slotsConfig([shard.port], { backend: { timeout_ms: 0 } }));
    cleanups.push(() => proxy.close());
    const blocker = new Redis(proxy.port, '127.0.0.1', { enableReadyCheck: false, maxRetriesPerRequest: 0 });
    const other = new Redis(proxy.port, '127.0.0.1', { enableReadyCheck: false });
    cleanups.push(() => {
      blocker.disconnect();
      other.disconnect();
    });
    void blocker.blpop('q', 0).catch(() => undefined);
    await waitFor(() => shard.commands.some((c) => c[0].toUpperCase() === 'BLPOP'), 'the BLPOP at the shard');
    expect(proxy.sessions.blockedCount()).toBe(1); // written to the shard
    // The shard has not blocked it (yet): neither does keymux say so.
    expect(await other.info('clients')).toMatch(/blocked_clients:0\r\n/);
    shardBlocked = 1;
    expect(await other.info('clients')).toMatch(/blocked_clients:1\r\n/);
    // Clients blocked on the shard directly (not through keymux) are not keymux's.
    shardBlocked = 5;
    expect(await other.info('clients')).toMatch(/blocked_clients:1\r\n/);
  });
});
