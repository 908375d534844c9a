/**
 * The pieces of high availability that need no Sentinel: the ROLE check of a primary connection's handshake
 * (backend-connection.ts: a node that answers "slave" is never used, and no client command reaches it) against a
 * scripted backend, and replicaProblem (replica-checks.ts): which INFO fields keep a replica from serving reads.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FakeBackend, waitFor } from '../support/fake-backend.js';
import '../support/keymux.js'; // silences the logger
import { BackendConnection } from '../../src/backend/backend-connection.js';
import { replicaProblem } from '../../src/backend/replica-checks.js';
import { childLogger } from '../../src/log.js';
import { commandFrame } from '../../src/resp/writer.js';
import type { BackendOp } from '../../src/core/request.js';

const fakes: FakeBackend[] = [];
const conns: BackendConnection[] = [];
afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  for (const f of fakes.splice(0)) await f.close();
});

const ROLE_MASTER = '*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n';
const ROLE_SLAVE = '*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n';

async function connectTo(role: string): Promise<{ fake: FakeBackend; conn: BackendConnection }> {
  const fake = await FakeBackend.start((cmd) => (cmd[0]!.toUpperCase() === 'ROLE' ? role : '+OK\r\n'));
  fakes.push(fake);
  const conn = new BackendConnection(
    { name: 'a', address: fake.address, host: fake.host, port: fake.port },
    { connectTimeoutMs: 1000, timeoutMs: 1000, password: null, username: null, readOnly: false, expectPrimary: true },
    childLogger('test'),
  );
  conns.push(conn);
  return { fake, conn };
}

function op(): BackendOp & { reply: Buffer | null } {
  return {
    sentAt: 0,
    frame: commandFrame(['SET', 'k', 'v']),
    redirects: 0,
    sessionId: 1,
    reply: null,
    deliver(frame: Buffer) {
      this.reply = frame;
    },
  };
}

describe('the ROLE check of a primary connection', () => {
  it('a node that says master is used', async () => {
    const { fake, conn } = await connectTo(ROLE_MASTER);
    conn.connect();
    await waitFor(() => conn.state === 'ready', 'ready');
    const o = op();
    conn.send(o, o.frame);
    await waitFor(() => o.reply !== null, 'reply');
    expect(o.reply!.toString()).toBe('+OK\r\n');
    expect(fake.commands.map((c) => c[0])).toEqual(['ROLE', 'SET']);
  });

  it('a node that says slave fails the handshake: the write waiting for it gets an error and never reaches it', async () => {
    const { fake, conn } = await connectTo(ROLE_SLAVE);
    const o = op();
    conn.connect();
    conn.send(o, o.frame); // queued while connecting
    await waitFor(() => o.reply !== null, 'the error');
    expect(o.reply!.toString()).toMatch(/^-ERR keymux: shard 'a' .* is not a primary \(ROLE says slave\)/);
    expect(conn.lastError).toMatch(/not a primary/);
    expect(fake.commands.map((c) => c[0])).toEqual(['ROLE']);
  });
});

describe('replicaProblem', () => {
  const info = (fields: Record<string, string>): Map<string, string> =>
    new Map(
      Object.entries({
        role: 'slave',
        loading: '0',
        master_sync_in_progress: '0',
        master_link_status: 'up',
        slave_repl_offset: '1000',
        ...fields,
      }),
    );

  it('accepts a replica in sync within the lag bound', () => {
    expect(replicaProblem(info({}), 1500, 1000)).toBeNull();
    expect(replicaProblem(info({}), 10_000_000, null)).toBeNull();
  });

  it('refuses a replica that is loading, syncing, unlinked, lagging or not a replica', () => {
    expect(replicaProblem(info({ loading: '1' }), 1000, 10)).toBe('loading its data set');
    expect(replicaProblem(info({ master_sync_in_progress: '1' }), 1000, 10)).toBe('syncing with its primary');
    expect(replicaProblem(info({ master_link_status: 'down' }), 1000, 10)).toBe('its link to the primary is down');
    expect(replicaProblem(info({}), 5000, 1000)).toBe('lagging 4000 bytes behind its primary (bound 1000)');
    expect(replicaProblem(info({ role: 'master' }), 1000, 10)).toBe('not a replica (role master)');
    expect(replicaProblem(info({}), null, 10)).toBe('replication offset unknown');
  });
});
