/**
 * The connect timer of a backend connection (and of a pub/sub subscriber connection) after a stalled event loop:
 * the timer runs before that loop
 * iteration's I/O poll, so a connection whose server already answered its handshake (the reply waiting in the
 * socket) must not be failed for "not answering". Made deterministic with a server in a worker thread (its own
 * event loop, so it answers while this thread is stalled) and shared memory: the server holds its PONG until this
 * thread is stalled, this thread stays stalled until the PONG is written and the connect timer is due.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import '../support/keymux.js'; // silences the logger
import { BackendConnection } from '../../src/backend/backend-connection.js';
import { InvalidationTracker } from '../../src/nearcache/invalidation.js';
import {
  SubscriberConnection,
  type SubscribeTarget,
  type SubscriberSink,
} from '../../src/pubsub/subscriber-connection.js';
import { childLogger } from '../../src/log.js';
import { waitFor } from '../support/fake-backend.js';

/**
 * flags[0]: the server got the first command; flags[1]: this thread is stalled, answer now; flags[2]: the answer is
 * written. Only the first answer is held; later commands are answered at once. It answers the handshakes keymux
 * sends: PING, and the near cache's invalidation channel (CLIENT ID, CLIENT TRACKING, SUBSCRIBE).
 */
const SERVER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const flags = new Int32Array(workerData.shared);
const CHANNEL = '__redis__:invalidate';
function answer(command) {
  if (command.includes('PING')) return '+PONG\\r\\n';
  if (command.includes('TRACKING')) return '+OK\\r\\n';
  if (command.includes('SUBSCRIBE')) return '*3\\r\\n$9\\r\\nsubscribe\\r\\n$' + CHANNEL.length + '\\r\\n' + CHANNEL + '\\r\\n:1\\r\\n';
  if (command.includes('CLIENT')) return ':7\\r\\n';
  return '-ERR unknown\\r\\n';
}
const server = net.createServer((sock) => {
  let seen = '';
  sock.on('data', (d) => {
    seen += d.toString('latin1');
    // Whole commands only: a multibulk "*N" header starts each one.
    const complete = seen.split(/(?=\\*\\d+\\r\\n\\$)/);
    const last = complete[complete.length - 1];
    const whole = last.split('\\r\\n').length - 1 === 1 + 2 * Number(last.slice(1, last.indexOf('\\r')));
    seen = whole ? '' : complete.pop();
    for (const command of complete) {
      if (Atomics.load(flags, 0) === 0) {
        Atomics.store(flags, 0, 1);
        Atomics.wait(flags, 1, 0, 20000);
        sock.write(answer(command));
        Atomics.store(flags, 2, 1);
        Atomics.notify(flags, 2);
      } else {
        sock.write(answer(command));
      }
    }
  });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
`;

/** Long enough for the PING to reach the worker on a loaded machine before the timer is due. */
const CONNECT_TIMEOUT_MS = 2000;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Resolves in a later check phase (setImmediate) once `pred` holds: the loop keeps polling I/O meanwhile. */
async function inCheckPhaseWhen(pred: () => boolean): Promise<void> {
  while (!pred()) await new Promise((r) => setImmediate(r));
}

/** A server in a worker thread that holds its PONG until released (flags above); its port. */
async function startHeldServer(flags: Int32Array): Promise<number> {
  const server = new Worker(SERVER, { eval: true, workerData: { shared: flags.buffer } });
  cleanups.push(() => server.terminate());
  const [port] = (await once(server, 'message')) as [number];
  return port;
}

/**
 * Once the server has the PING: stalls this thread (the event loop) until the server has written its PONG and the
 * connect timer started at `connectedAt` is due, so the next loop iteration runs the timer before the poll that
 * reads the PONG.
 */
async function stallPastTheTimer(flags: Int32Array, connectedAt: number): Promise<void> {
  await inCheckPhaseWhen(() => Atomics.load(flags, 0) === 1);
  Atomics.store(flags, 1, 1);
  Atomics.notify(flags, 1);
  Atomics.wait(flags, 2, 0, 20000);
  expect(Atomics.load(flags, 2)).toBe(1);
  while (performance.now() < connectedAt + CONNECT_TIMEOUT_MS + 5) {
    // busy: the event loop is stalled on purpose (this is the case under test, not a wait for an event)
  }
}

describe('the connect timer after a stalled event loop', () => {
  it('a handshake reply already received when the timer runs late makes the connection ready, not failed', async () => {
    const flags = new Int32Array(new SharedArrayBuffer(12));
    const port = await startHeldServer(flags);
    const conn = new BackendConnection(
      { name: 'a', address: `127.0.0.1:${port}`, host: '127.0.0.1', port },
      {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        timeoutMs: 1000,
        password: null,
        username: null,
        readOnly: false,
        pingHandshake: true,
      },
      childLogger('test'),
    );
    cleanups.push(() => conn.close());
    const connectedAt = performance.now();
    conn.connect();
    await stallPastTheTimer(flags, connectedAt);
    await waitFor(() => conn.state !== 'handshake', 'the handshake to end');
    expect(conn.lastError).not.toMatch(/did not answer/);
    expect(conn.state).toBe('ready');
  });

  it('the same for a pub/sub subscriber connection: ready, not failed', async () => {
    const flags = new Int32Array(new SharedArrayBuffer(12));
    const port = await startHeldServer(flags);
    const events: string[] = [];
    const sink: SubscriberSink<SubscribeTarget> = {
      subscriberReady: () => events.push('ready'),
      subscriberDown: (_c, reason) => events.push(`down: ${reason}`),
      subscriptionConfirmed: () => {},
      unsubscriptionConfirmed: () => {},
      subscriptionRefused: () => {},
      message: () => {},
      serverUnsubscribed: () => {},
    };
    const conn = new SubscriberConnection<SubscribeTarget>(
      `127.0.0.1:${port}`,
      {
        host: '127.0.0.1',
        port,
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        timeoutMs: 1000,
        password: null,
        username: null,
        tls: null,
      },
      sink,
      childLogger('test'),
    );
    cleanups.push(() => conn.close());
    const connectedAt = performance.now();
    conn.connect();
    await stallPastTheTimer(flags, connectedAt);
    await waitFor(() => events.length > 0, 'ready or down');
    expect(events).toEqual(['ready']);
  });

  it("the same for the near cache's invalidation channel: ready, not lost", async () => {
    const flags = new Int32Array(new SharedArrayBuffer(12));
    const port = await startHeldServer(flags);
    let lost = 0;
    const tracker = new InvalidationTracker(
      `127.0.0.1:${port}`,
      0,
      { host: '127.0.0.1', port, connectTimeoutMs: CONNECT_TIMEOUT_MS, password: null, username: null, tls: null },
      { invalidated: () => {}, lost: () => lost++ },
      childLogger('test'),
    );
    cleanups.push(() => tracker.close());
    const connectedAt = performance.now();
    tracker.connect();
    await stallPastTheTimer(flags, connectedAt);
    await waitFor(() => tracker.ready || lost > 0, 'ready or lost');
    expect(tracker.lastError).not.toMatch(/did not complete the handshake/);
    expect(lost).toBe(0);
    expect(tracker.ready).toBe(true);
  });
});
