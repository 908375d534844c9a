/**
 * A planned Sentinel failover (SENTINEL FAILOVER: the old primary stays up) behind keymux loses no acknowledged
 * write. 3 real redis-sentinel processes, one master with one replica, keymux in slots mode; 4 clients loop SET
 * (each on its own keys) through keymux while SENTINEL FAILOVER runs. From the promotion of the replica until keymux
 * switches, the old primary used to acknowledge writes (tens of thousands) that the new primary never got (the
 * sentinels later make the old primary a replica, which discards them); keymux now holds the shard's requests from
 * the leader's +selected-slave to the switch and pauses the old primary's writes. Every acknowledged key must be on
 * the new primary (a SET that got an error may be absent); one client writes with MULTI/EXEC (session connections).
 * A failover the leader aborts (its replica SIGSTOPped before it could be promoted: -failover-abort-slave-timeout)
 * ends the hold before sentinel.failover_wait_ms: the held requests go to the old primary, which takes writes again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { startSentinels, type SentinelSetup } from '../support/sentinel.js';
import { startKeymux } from '../support/keymux.js';
import { redisCommands } from '../support/redis.js';
import { waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

let ha: SentinelSetup;
let proxy: Proxy;
let abortProxy: Proxy;
const clients: Redis[] = [];
const cleanups: Array<() => void> = [];
/** Write loops stop when their test is done, or failed (a loop on a disconnected client would spin). */
let running = true;

beforeAll(async () => {
  ha = await startSentinels({
    masters: [
      { name: 'pm', replicas: 1 },
      { name: 'pa', replicas: 1 },
    ],
    sentinels: 3,
    failoverTimeoutMs: 3000,
  });
  await ha.ready('pm', 1);
  await ha.ready('pa', 1);
  proxy = await startKeymux({
    mode: 'slots',
    sentinel: { sentinels: ha.addresses(), failover_wait_ms: 5000 },
    shards: [{ name: 'a', sentinel_master: 'pm', slots: ['0-16383'] }],
  });
  abortProxy = await startKeymux({
    mode: 'slots',
    // Far above the sentinels' failover-timeout: the abort, not this bound, must end the hold.
    sentinel: { sentinels: ha.addresses(), failover_wait_ms: 120_000 },
    shards: [{ name: 'a', sentinel_master: 'pa', slots: ['0-16383'] }],
  });
}, 60_000);

afterAll(async () => {
  running = false;
  for (const c of clients) c.disconnect();
  for (const f of cleanups) f();
  await proxy?.close();
  await abortProxy?.close();
  await ha?.stop();
});

/** Keys of `acked` that `port` does not have. */
async function absent(port: number, acked: string[]): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < acked.length; i += 1000) {
    const chunk = acked.slice(i, i + 1000);
    const replies = await redisCommands(
      port,
      chunk.map((k) => ['EXISTS', k]),
    );
    replies.forEach((r, j) => {
      if (Number(r) !== 1) out.push(chunk[j]);
    });
  }
  return out;
}

describe('planned Sentinel failover', () => {
  it('every write the old primary acknowledged is on the new primary', async () => {
    const oldPrimary = await ha.primaryAddress('pm');
    const writers = Array.from({ length: 4 }, () => new Redis({ port: proxy.port, maxRetriesPerRequest: 0 }));
    clients.push(...writers);
    const acked: string[] = [];
    const errors: string[] = [];
    let ackedAfterSwitch = -1; // acks counted once keymux has switched (-1: not yet)
    const loops = writers.map(async (w, wi) => {
      for (let i = 0; running && ackedAfterSwitch < 2000; i++) {
        const key = `k:${wi}:${i}`;
        try {
          if (wi === 0) {
            const replies = await w.multi().set(key, '1').exec();
            if (replies === null || replies[0][0] !== null) throw replies?.[0][0] ?? new Error('EXEC aborted');
          } else {
            await w.set(key, '1');
          }
          acked.push(key);
          if (ackedAfterSwitch >= 0) ackedAfterSwitch++;
        } catch (err) {
          errors.push(`${key}: ${(err as Error).message}`);
        }
      }
    });
    await waitFor(() => acked.length >= 2000, 'writes through keymux before the failover', 20_000);
    const [reply] = await redisCommands(ha.sentinels[0].port, [['SENTINEL', 'FAILOVER', 'pm']]);
    expect(String(reply)).toBe('OK');
    await waitFor(() => proxy.topology.shards[0].address !== oldPrimary, 'keymux to switch', 30_000);
    ackedAfterSwitch = 0;
    await Promise.all(loops);
    const newPrimary = proxy.topology.shards[0].address;
    expect((await ha.waitForPrimary('pm', oldPrimary)).address).toBe(newPrimary);
    const lost = await absent(Number(newPrimary.split(':').pop()), acked);
    console.log(
      `acked ${acked.length}, errors ${errors.length} (${errors.slice(0, 2).join(' | ')}), ` +
        `lost ${lost.length} (${lost.slice(0, 5).join(', ')})`,
    );
    expect(lost).toEqual([]);
    expect(acked.some((k) => k.startsWith('k:0:'))).toBe(true); // the transactions ran too
  }, 60_000);

  it('an aborted failover ends the hold: the held requests go to the old primary', async () => {
    const primary = await ha.primaryAddress('pa');
    const replica = ha.masters.find((m) => m.name === 'pa')!.nodes.find((n) => n.address !== primary)!;
    const events = new Redis({ port: ha.sentinels[0].port });
    clients.push(events);
    const seen: string[] = [];
    const selected = new Promise<void>((resolve) => {
      events.on('message', (channel: string, text: string) => {
        if (!text.includes(' @ pa ') && !text.startsWith('master pa ')) return;
        seen.push(channel);
        if (channel === '+selected-slave') {
          // Before the leader's REPLICAOF NO ONE reaches it: the promotion never happens, the failover times out.
          process.kill(replica.pid, 'SIGSTOP');
          cleanups.push(() => process.kill(replica.pid, 'SIGCONT'));
          resolve();
        }
      });
    });
    await events.subscribe('+selected-slave', '-failover-abort-slave-timeout');
    const writer = new Redis({ port: abortProxy.port, maxRetriesPerRequest: 0 });
    clients.push(writer);
    const acked: string[] = [];
    const errors: string[] = [];
    let stop = false;
    const loop = (async () => {
      for (let i = 0; running && !stop; i++) {
        try {
          await writer.set(`a:${i}`, '1');
          acked.push(`a:${i}`);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    })();
    await waitFor(() => acked.length >= 500, 'writes before the failover', 20_000);
    const [reply] = await redisCommands(ha.sentinels[0].port, [['SENTINEL', 'FAILOVER', 'pa']]);
    expect(String(reply)).toBe('OK');
    await selected;
    await waitFor(() => abortProxy.sentinel!.heldCount('a') > 0, 'requests held during the failover', 20_000);
    const heldAt = acked.length;
    await waitFor(() => seen.includes('-failover-abort-slave-timeout'), 'the leader to abort', 30_000);
    // Long before failover_wait_ms: the abort released them, and the old primary takes writes again (unpaused).
    await waitFor(() => acked.length > heldAt + 500, 'writes after the abort', 20_000);
    stop = true;
    await loop;
    expect(errors).toEqual([]);
    expect(abortProxy.topology.shards[0].address).toBe(primary);
    expect(await absent(Number(primary.split(':').pop()), acked)).toEqual([]);
  }, 60_000);
});
