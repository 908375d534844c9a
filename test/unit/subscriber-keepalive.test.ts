/**
 * The keepalive of a pub/sub subscriber connection (src/pubsub/subscriber-connection.ts) against a real
 * redis-server frozen with SIGSTOP: an idle connection PINGs KEEPALIVE_MS after its last byte, and a PING left
 * unanswered for backend.timeout_ms fails it. libuv counts timers in whole milliseconds from its loop's cached time,
 * so a timer often fires a fraction of a millisecond before KEEPALIVE_MS has passed by performance.now(); the
 * connection must then wait out the rest of the period, not a whole new one (it did, and a frozen node was noticed
 * after up to twice the keepalive). Made deterministic with vitest's fake setTimeout and a performance.now() the
 * test moves itself; the socket I/O and setImmediate stay real.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { performance } from 'node:perf_hooks';
import '../support/keymux.js'; // silences the logger
import { startRedis, type RedisProcess } from '../support/redis.js';
import {
  KEEPALIVE_MS,
  SubscriberConnection,
  type SubscribeTarget,
  type SubscriberSink,
} from '../../src/pubsub/subscriber-connection.js';
import { KIND_CHANNEL } from '../../src/pubsub/frames.js';
import { childLogger } from '../../src/log.js';

const TIMEOUT_MS = 300;
let redis: RedisProcess | undefined;
let conn: SubscriberConnection<SubscribeTarget> | undefined;

afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  conn?.close();
  if (redis !== undefined) {
    process.kill(redis.pid, 'SIGCONT');
    await redis.stop();
  }
  redis = conn = undefined;
});

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('subscriber connection keepalive', () => {
  it('a timer that fires just before the period ends waits the rest of it: a frozen node is noticed after one period', async () => {
    redis = await startRedis();
    let now = 1_000;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const events: string[] = [];
    const sink: SubscriberSink<SubscribeTarget> = {
      subscriberReady: () => events.push('ready'),
      subscriberDown: (_c, reason) => events.push(`down: ${reason}`),
      subscriptionConfirmed: () => events.push('confirmed'),
      unsubscriptionConfirmed: () => undefined,
      subscriptionRefused: () => undefined,
      message: () => undefined,
      serverUnsubscribed: () => undefined,
    };
    conn = new SubscriberConnection(
      redis.address,
      {
        host: '127.0.0.1',
        port: redis.port,
        connectTimeoutMs: TIMEOUT_MS,
        timeoutMs: TIMEOUT_MS,
        password: null,
        username: null,
        tls: null,
      },
      sink,
      childLogger('test'),
    );
    conn.connect();
    while (!events.includes('ready')) await turn();
    conn.subscribe(KIND_CHANNEL, [{ name: Buffer.from('keepalive-test') }]);
    while (!events.includes('confirmed')) await turn();
    // Idle from `now` on: the keepalive is armed for KEEPALIVE_MS. The node freezes.
    process.kill(redis.pid, 'SIGSTOP');
    // The timer fires with half a millisecond of the period still to go by performance.now().
    now += KEEPALIVE_MS - 0.5;
    vi.advanceTimersByTime(KEEPALIVE_MS);
    // The rest of the period (at least 1 ms): the PING goes out.
    now += 1;
    vi.advanceTimersByTime(1);
    await turn(); // the turn's flush writes it
    expect(conn.state).toBe('ready');
    // Unanswered for the operation timeout: the connection fails (after letting one I/O poll run first).
    now += TIMEOUT_MS + 1;
    vi.advanceTimersByTime(TIMEOUT_MS + 1);
    await turn();
    await turn();
    expect(conn.lastError).toBe(`timed out: no reply within ${TIMEOUT_MS} ms`);
    expect(events).toContain(`down: timed out: no reply within ${TIMEOUT_MS} ms`);
  });
});
