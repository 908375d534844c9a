/**
 * Test support for keymux runs in slots mode whose shards are real redis-servers: a layout (which slot ranges
 * each shard holds, as the config lists them), the shard that owns a key in it, an admin endpoint's answers, and
 * a bounded poll for conditions only the admin endpoint can tell (it has no push).
 */
import { keySlot } from '../../src/routing/crc16.js';
import type { RedisProcess } from './redis.js';

/** Slot ranges per shard, as in the config ("A-B" or "A"); a sentinel_master shard by its master's name. */
export type SlotLayout = Array<[RedisProcess | { master: string }, string[]]>;

/** The redis-server that owns `key` in `layout`. */
export function slotOwner(layout: SlotLayout, key: string): RedisProcess {
  const slot = keySlot(Buffer.from(key));
  for (const [shard, ranges] of layout) {
    for (const range of ranges) {
      const [lo, hi] = range.split('-').map(Number);
      if (slot >= lo! && slot <= (hi ?? lo)!) {
        if ('master' in shard) throw new Error(`slot ${slot} is on a sentinel shard`);
        return shard;
      }
    }
  }
  throw new Error(`no owner for slot ${slot}`);
}

/** The config's `shards` list for `layout` (named s0, s1, ...). */
export function slotShards(layout: SlotLayout): Array<Record<string, unknown>> {
  return layout.map(([shard, slots], i) =>
    'master' in shard
      ? { name: `s${i}`, sentinel_master: shard.master, slots }
      : { name: `s${i}`, address: shard.address, slots },
  );
}

/** One request to keymux's admin endpoint on `port`: status and body. */
export async function adminRequest(
  port: number,
  pathname: string,
  method = 'GET',
): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${pathname}`, { method });
  return { status: res.status, text: await res.text() };
}

/**
 * Resolves with what `probe` gives once it gives something (polled every 50 ms: the admin endpoint has no push);
 * rejects after `timeoutMs` with `context()` (a process's recent output) in the message.
 */
export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  context: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A slots-mode config (an object for configFrom or a YAML file) with key migration on: slots 0-8191 on `low`, the
 * rest on `high` (shards named low and high); a reload to another `low` moves the low half's keys. `migration`
 * adds to the migration section.
 */
export function halvesConfig(
  low: { address: string },
  high: { address: string },
  migration: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    mode: 'slots',
    migration: { enabled: true, ...migration },
    shards: [
      { name: 'low', address: low.address, slots: ['0-8191'] },
      { name: 'high', address: high.address, slots: ['8192-16383'] },
    ],
  };
}
