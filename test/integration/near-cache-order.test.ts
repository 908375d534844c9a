/**
 * Request coalescing (near_cache.coalesce, on by default) never answers a read with a value from after the
 * reader's own later write, nor from before its own earlier write:
 * - with two connections per shard, a read does not join an identical read of another client that went over the
 *   other connection (that one may run after the joiner's next write, which goes over the joiner's connection);
 * - a transaction whose queued script writes a key (MULTI / EVAL ... / EXEC) holds reads as a transaction of
 *   flagged writes does: a read after it does not join a read sent before it.
 * A gate (test/support/gate.ts) in front of the one real redis-server shard holds the leader's bytes, or its reply,
 * at the moment that matters; clients speak raw RESP.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, redisCommand, encodeCommand, type RedisProcess } from '../support/redis.js';
import { RawClient, configFrom } from '../support/keymux.js';
import { waitFor } from '../support/fake-backend.js';
import { Gate } from '../support/gate.js';
import { Proxy } from '../../src/proxy.js';

let shard: RedisProcess;
const open: Array<{ close(): unknown }> = [];

beforeAll(async () => {
  shard = await startRedis();
});
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
  await redisCommand(shard.port, 'FLUSHALL');
});
afterAll(async () => {
  await shard?.stop();
});

async function setUp(connections: number, scripts = 'allow'): Promise<{ proxy: Proxy; gate: Gate }> {
  const gate = await Gate.start(shard.port);
  open.push(gate);
  const proxy = await Proxy.start(
    configFrom({
      mode: 'slots',
      log: { level: 'silent' },
      backend: { connections },
      commands: { scripts },
      shards: [{ name: 'only', address: gate.address, slots: ['0-16383'] }],
    }),
  );
  open.push(proxy);
  return { proxy, gate };
}

async function raw(proxy: Proxy): Promise<{ client: RawClient; id: number }> {
  const client = await RawClient.connect(proxy.port);
  open.push(client);
  const [id] = (await client.exchange(encodeCommand(['CLIENT', 'ID']), 1)) as [number];
  return { client, id };
}

describe('coalescing and a reader’s own writes', () => {
  it('two connections per shard: a read does not join one that went over the other connection', async () => {
    const { proxy, gate } = await setUp(2);
    const k = 'order:1';
    expect(await redisCommand(proxy.port, 'SET', k, 'v1')).toBe('OK');
    const b = await raw(proxy);
    let a = await raw(proxy);
    while (a.id % 2 === b.id % 2) a = await raw(proxy); // the pool picks a connection by client id
    // b's GET is held at the gate on b's connection, not yet run.
    const held = gate.holdFrom(k);
    b.client.write(encodeCommand(['GET', k]));
    await held;
    // a pipelines the same GET, then a SET; its SET runs on a's connection at once.
    const aReplies = a.client.exchange(Buffer.concat([encodeCommand(['GET', k]), encodeCommand(['SET', k, 'v2'])]), 2);
    await waitFor(async () => (await redisCommand(shard.port, 'GET', k)) === 'v2', "a's SET to run");
    gate.release(); // b's GET runs now, after a's SET
    // Before the fix a's GET joined b's and answered v2: a value from after a's own SET.
    expect(await aReplies).toEqual(['v1', 'OK']);
  });

  it('MULTI / EVAL that writes / EXEC: a later read does not join a read sent before it', async () => {
    const { proxy, gate } = await setUp(1);
    const k = 'order:2';
    expect(await redisCommand(proxy.port, 'SET', k, 'v1')).toBe('OK');
    const b = await raw(proxy);
    const a = await raw(proxy);
    // b's GET runs (k is v1) but its reply is held: b's read is still in flight in keymux.
    const held = gate.holdRepliesFrom(k);
    b.client.write(encodeCommand(['GET', k]));
    await held;
    const script = "redis.call('SET', KEYS[1], ARGV[1]) return 1";
    const tx = await a.client.exchange(
      Buffer.concat([encodeCommand(['MULTI']), encodeCommand(['EVAL', script, '1', k, 'v2']), encodeCommand(['EXEC'])]),
      3,
    );
    expect(tx).toEqual(['OK', 'QUEUED', [1]]);
    const after = a.client.exchange(encodeCommand(['GET', k]), 1);
    gate.release();
    // Before the fix the script was not counted as a write: a's GET joined b's and answered v1.
    expect(await after).toEqual(['v2']);
  });

  it('an isolated script with no declared key that writes: a later read does not join a read sent before it', async () => {
    const { proxy, gate } = await setUp(1, 'isolated');
    const k = 'order:3';
    expect(await redisCommand(proxy.port, 'SET', k, 'v1')).toBe('OK');
    const b = await raw(proxy);
    const a = await raw(proxy);
    const held = gate.holdRepliesFrom(k);
    b.client.write(encodeCommand(['GET', k]));
    await held;
    // The script runs on a session connection of its own (not held), naming its key in ARGV only.
    const script = "redis.call('SET', ARGV[1], ARGV[2]) return 1";
    expect(await a.client.exchange(encodeCommand(['EVAL', script, '0', k, 'v2']), 1)).toEqual([1]);
    const after = a.client.exchange(encodeCommand(['GET', k]), 1);
    gate.release();
    // Before the fix nothing was held for it: a's GET joined b's (run before the script) and answered v1.
    expect(await after).toEqual(['v2']);
  });
});
