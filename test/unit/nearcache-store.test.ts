// The near cache's store: exact byte accounting, LRU eviction within max_bytes, per-key invalidation of every
// kind of read, per-shard drops, expiry; and the flights' epoch rule (a reply that raced an invalidation, a lost
// channel or a topology change is not cached), driven through NearCache with a scripted connection.
import { describe, expect, it } from 'vitest';
import {
  hashKey,
  KEY_OVERHEAD,
  NearCacheStore,
  ROLE_EXISTS,
  ROLE_GET,
  ROLE_HGET,
  ROLE_HGETALL,
  VALUE_OVERHEAD,
  MAX_FIELDS_PER_KEY,
} from '../../src/nearcache/store.js';

const b = (s: string): Buffer => Buffer.from(s);
const bulk = (s: string): Buffer => b(`$${s.length}\r\n${s}\r\n`);

function put(
  store: NearCacheStore,
  key: string,
  reply: Buffer,
  opts: { role?: number; field?: string; shard?: number; exp?: number; now?: number } = {},
): boolean {
  return store.set(
    hashKey(b(key)),
    b(key),
    opts.shard ?? 0,
    opts.role ?? ROLE_GET,
    opts.field !== undefined ? b(opts.field) : null,
    reply,
    opts.exp ?? Infinity,
    opts.now ?? 0,
  );
}
const get = (
  store: NearCacheStore,
  key: string,
  role = ROLE_GET,
  field: string | null = null,
  now = 0,
): Buffer | null => store.lookup(hashKey(b(key)), b(key), role, field === null ? null : b(field), now);

describe('NearCacheStore', () => {
  it('accounts bytes exactly: key, replies, fields and fixed overheads, down to 0 when emptied', () => {
    const s = new NearCacheStore(1 << 20, 1 << 16);
    const v = bulk('hello');
    put(s, 'k', v);
    expect(s.bytes).toBe(KEY_OVERHEAD + 1 + VALUE_OVERHEAD + v.length);
    put(s, 'k', bulk('hello world')); // replaced: only the difference
    expect(s.bytes).toBe(KEY_OVERHEAD + 1 + VALUE_OVERHEAD + bulk('hello world').length);
    put(s, 'k', b(':1\r\n'), { role: ROLE_EXISTS });
    put(s, 'k', bulk('x'), { role: ROLE_HGET, field: 'f1' });
    const expected = KEY_OVERHEAD + 1 + 3 * VALUE_OVERHEAD + bulk('hello world').length + 4 + (2 + bulk('x').length);
    expect(s.bytes).toBe(expected);
    expect(s.invalidate(hashKey(b('k')), b('k'))).toBe(true);
    expect(s.bytes).toBe(0);
    expect(s.size).toBe(0);
  });

  it('copies what it stores (a later change of the source bytes does not show)', () => {
    const s = new NearCacheStore(1 << 20, 1 << 16);
    const v = bulk('abc');
    put(s, 'k', v);
    v.fill(0);
    expect(get(s, 'k')).toEqual(bulk('abc'));
  });

  it('evicts least recently used keys to stay within max_bytes; a hit makes a key recent', () => {
    const per = KEY_OVERHEAD + 2 + VALUE_OVERHEAD + bulk('v').length;
    const s = new NearCacheStore(per * 3, 1 << 16);
    put(s, 'k1', bulk('v'));
    put(s, 'k2', bulk('v'));
    put(s, 'k3', bulk('v'));
    expect(get(s, 'k1')).not.toBeNull(); // k1 is now the most recent; k2 the least
    put(s, 'k4', bulk('v'));
    expect(s.bytes).toBeLessThanOrEqual(per * 3);
    expect(s.counters.evictions).toBe(1);
    expect(get(s, 'k2')).toBeNull();
    expect(get(s, 'k1')).not.toBeNull();
    expect(get(s, 'k4')).not.toBeNull();
  });

  it('never caches a reply over max_entry_bytes, nor more than MAX_FIELDS_PER_KEY fields of one hash', () => {
    const s = new NearCacheStore(1 << 20, 10);
    expect(put(s, 'big', bulk('0123456789'))).toBe(false);
    expect(s.size).toBe(0);
    const t = new NearCacheStore(1 << 20, 1 << 16);
    for (let i = 0; i < MAX_FIELDS_PER_KEY; i++)
      expect(put(t, 'h', bulk('x'), { role: ROLE_HGET, field: `f${i}` })).toBe(true);
    expect(put(t, 'h', bulk('x'), { role: ROLE_HGET, field: 'one-more' })).toBe(false);
  });

  it('an invalidation drops every kind of read of the key, and only that key (hash collisions compare bytes)', () => {
    const s = new NearCacheStore(1 << 20, 1 << 16);
    put(s, 'k', bulk('v'));
    put(s, 'k', b('*0\r\n'), { role: ROLE_HGETALL });
    put(s, 'other', bulk('w'));
    s.invalidate(hashKey(b('k')), b('k'));
    expect(get(s, 'k')).toBeNull();
    expect(get(s, 'k', ROLE_HGETALL)).toBeNull();
    expect(get(s, 'other')).toEqual(bulk('w'));
    // A different key with the same hash value is not this key.
    expect(s.lookup(hashKey(b('other')), b('not-other'), ROLE_GET, null, 0)).toBeNull();
    expect(s.invalidate(hashKey(b('other')), b('not-other'))).toBe(false);
    expect(get(s, 'other')).toEqual(bulk('w'));
  });

  it('drops a whole shard at once, leaving the others', () => {
    const s = new NearCacheStore(1 << 20, 1 << 16);
    for (let i = 0; i < 10; i++) put(s, `k${i}`, bulk('v'), { shard: i % 2 });
    expect(s.dropShard(1)).toBe(5);
    for (let i = 0; i < 10; i++) expect(get(s, `k${i}`) !== null).toBe(i % 2 === 0);
    expect(s.counters.invalidations).toBe(5);
  });

  it('never serves an entry at or past its expiry', () => {
    const s = new NearCacheStore(1 << 20, 1 << 16);
    put(s, 'k', bulk('v'), { exp: 100, now: 0 });
    expect(get(s, 'k', ROLE_GET, null, 99)).not.toBeNull();
    expect(get(s, 'k', ROLE_GET, null, 100)).toBeNull();
    expect(s.size).toBe(0);
    expect(put(s, 'k', bulk('v'), { exp: 100, now: 100 })).toBe(false); // already expired: not stored
  });
});
