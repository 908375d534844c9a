/**
 * NearCacheStore: the memory of the near cache. It owns the cached replies of hot keys, their byte accounting,
 * LRU order and expiry; it knows nothing of sockets, shards' connections or clients.
 *
 * One CachedKey per key (found by a 32-bit FNV-1a hash of the key bytes, with a collision chain compared byte by
 * byte) holds the replies cached for that key, one per kind of read: GET, HGETALL and single-key EXISTS replies,
 * and HGET replies by field. Everything of one key goes at once when the key is invalidated (any write to the key
 * may change any of them), when its shard's invalidation channel is lost (dropShard), or when it expires.
 *
 * Invariants:
 * - `bytes` is the exact sum of every CachedKey's `bytes`, which is the exact length of every Buffer it keeps
 *   (key, HGET fields, replies; all copies owned here, never views into socket chunks) plus fixed per-object
 *   overheads (KEY_OVERHEAD, VALUE_OVERHEAD) standing for the JS objects around them; after every insert,
 *   least-recently-used keys are evicted until `bytes <= maxBytes`.
 * - An entry is never served past `expiresAt` (the key's TTL as read with the value, and the ttl_ms bound), so a
 *   key expires here no later than in Redis.
 * - Replies are stored as the shard sent them (RESP2 frames) and served byte for byte.
 */

/** Kinds of cached reads. */
export const ROLE_GET = 1;
export const ROLE_HGET = 2;
export const ROLE_HGETALL = 3;
export const ROLE_EXISTS = 4;

/** Accounted for each cached key besides its bytes (the CachedKey object, its Map slot, its Buffer headers). */
export const KEY_OVERHEAD = 160;
/** Accounted for each cached reply besides its bytes (the Buffer object and, for HGET, its field entry). */
export const VALUE_OVERHEAD = 64;
/** HGET fields cached per key at most (a wider hash is cached whole by HGETALL, or not at all). */
export const MAX_FIELDS_PER_KEY = 32;

/** FNV-1a over the key bytes (the same hash hotkeys.ts uses, so hot-key admission can compare hashes). */
export function hashKey(key: Buffer): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193);
  return h;
}

export class CachedKey {
  readonly hash: number;
  readonly key: Buffer;
  /** The shard (index in the topology it was filled under) whose invalidation channel covers this key. */
  readonly shard: number;
  get: Buffer | null;
  hgetall: Buffer | null;
  exists: Buffer | null;
  /** HGET replies: fields[i] -> fieldReplies[i]. */
  fields: Buffer[] | null;
  fieldReplies: Buffer[] | null;
  /** Clock time (ms) after which nothing of this key may be served. */
  expiresAt: number;
  bytes: number;
  /** Same-hash chain. */
  next: CachedKey | null;
  /** LRU list: `newer` towards the most recently used. */
  newer: CachedKey | null;
  older: CachedKey | null;

  constructor(hash: number, key: Buffer, shard: number, expiresAt: number) {
    this.hash = hash;
    this.key = key;
    this.shard = shard;
    this.get = null;
    this.hgetall = null;
    this.exists = null;
    this.fields = null;
    this.fieldReplies = null;
    this.expiresAt = expiresAt;
    this.bytes = KEY_OVERHEAD + key.length;
    this.next = null;
    this.newer = null;
    this.older = null;
  }
}

export interface StoreCounters {
  evictions: number;
  /** Keys dropped because the shard (or another keymux, or expiry) changed them, or their channel was lost. */
  invalidations: number;
}

export class NearCacheStore {
  maxBytes: number;
  maxEntryBytes: number;
  /** Bytes accounted (see the invariants). */
  bytes: number;
  /** Keys cached. */
  size: number;
  readonly counters: StoreCounters;
  private readonly index: Map<number, CachedKey>;
  /** Most and least recently used. */
  private newest: CachedKey | null;
  private oldest: CachedKey | null;

  constructor(maxBytes: number, maxEntryBytes: number) {
    this.maxBytes = maxBytes;
    this.maxEntryBytes = maxEntryBytes;
    this.bytes = 0;
    this.size = 0;
    this.counters = { evictions: 0, invalidations: 0 };
    this.index = new Map();
    this.newest = null;
    this.oldest = null;
  }

  /** The cached reply for (role, key[, field]) at clock time `now`, or null. A hit becomes the most recent. */
  lookup(hash: number, key: Buffer, role: number, field: Buffer | null, now: number): Buffer | null {
    const ck = this.find(hash, key);
    if (ck === null) return null;
    if (now >= ck.expiresAt) {
      this.remove(ck);
      return null;
    }
    let reply: Buffer | null;
    if (role === ROLE_GET) reply = ck.get;
    else if (role === ROLE_HGETALL) reply = ck.hgetall;
    else if (role === ROLE_EXISTS) reply = ck.exists;
    else reply = fieldReply(ck, field as Buffer);
    if (reply !== null) this.touch(ck);
    return reply;
  }

  /** Whether anything of `key` is cached (for /hotkeys). */
  contains(key: Buffer, now: number): boolean {
    const ck = this.find(hashKey(key), key);
    return ck !== null && now < ck.expiresAt;
  }

  /**
   * Caches `reply` (copied) for (role, key[, field]) of `shard`, to be served until `expiresAt` (clock `now`). False
   * when it is too large (max_entry_bytes), already expired, or the key has too many HGET fields cached already.
   */
  set(
    hash: number,
    key: Buffer,
    shard: number,
    role: number,
    field: Buffer | null,
    reply: Buffer,
    expiresAt: number,
    now: number,
  ): boolean {
    if (reply.length > this.maxEntryBytes || expiresAt <= now) return false;
    let ck = this.find(hash, key);
    if (ck !== null && (ck.shard !== shard || ck.expiresAt <= now)) {
      this.remove(ck);
      ck = null;
    }
    if (ck === null) {
      ck = new CachedKey(hash, Buffer.from(key), shard, expiresAt);
      const head = this.index.get(hash);
      if (head !== undefined) ck.next = head;
      this.index.set(hash, ck);
      this.size++;
      this.bytes += ck.bytes;
      this.linkNewest(ck);
    } else {
      if (expiresAt < ck.expiresAt) ck.expiresAt = expiresAt;
      this.touch(ck);
    }
    const copy = Buffer.from(reply);
    let delta: number;
    if (role === ROLE_GET) delta = replace(ck.get, copy, (b) => (ck.get = b));
    else if (role === ROLE_HGETALL) delta = replace(ck.hgetall, copy, (b) => (ck.hgetall = b));
    else if (role === ROLE_EXISTS) delta = replace(ck.exists, copy, (b) => (ck.exists = b));
    else {
      const f = field as Buffer;
      const fields = (ck.fields ??= []);
      const replies = (ck.fieldReplies ??= []);
      let i = 0;
      while (i < fields.length && !fields[i].equals(f)) i++;
      if (i < fields.length) {
        delta = copy.length - replies[i].length;
        replies[i] = copy;
      } else if (fields.length < MAX_FIELDS_PER_KEY) {
        fields.push(Buffer.from(f));
        replies.push(copy);
        delta = f.length + copy.length + VALUE_OVERHEAD;
      } else {
        return false;
      }
    }
    ck.bytes += delta;
    this.bytes += delta;
    this.evictToBound();
    return true;
  }

  /** Drops everything of `key` (a write, an invalidation message). True when something was cached. */
  invalidate(hash: number, key: Buffer): boolean {
    const ck = this.find(hash, key);
    if (ck === null) return false;
    this.remove(ck);
    this.counters.invalidations++;
    return true;
  }

  /** Drops every key of `shard` (its invalidation channel was lost, or it flushed). Returns how many. */
  dropShard(shard: number): number {
    let n = 0;
    for (let ck = this.oldest; ck !== null;) {
      const next = ck.newer;
      if (ck.shard === shard) {
        this.remove(ck);
        n++;
      }
      ck = next;
    }
    this.counters.invalidations += n;
    return n;
  }

  /** Drops everything (topology change, FLUSHALL through keymux, reconfiguration). */
  clear(): number {
    const n = this.size;
    this.index.clear();
    this.newest = null;
    this.oldest = null;
    this.size = 0;
    this.bytes = 0;
    this.counters.invalidations += n;
    return n;
  }

  private find(hash: number, key: Buffer): CachedKey | null {
    let ck = this.index.get(hash) ?? null;
    while (ck !== null && !ck.key.equals(key)) ck = ck.next;
    return ck;
  }

  private evictToBound(): void {
    while (this.bytes > this.maxBytes && this.oldest !== null) {
      this.remove(this.oldest);
      this.counters.evictions++;
    }
  }

  private remove(ck: CachedKey): void {
    const head = this.index.get(ck.hash);
    if (head === ck) {
      if (ck.next === null) this.index.delete(ck.hash);
      else this.index.set(ck.hash, ck.next);
    } else {
      let p = head ?? null;
      while (p !== null && p.next !== ck) p = p.next;
      if (p !== null) p.next = ck.next;
    }
    ck.next = null;
    this.unlink(ck);
    this.size--;
    this.bytes -= ck.bytes;
  }

  private touch(ck: CachedKey): void {
    if (this.newest === ck) return;
    this.unlink(ck);
    this.linkNewest(ck);
  }

  private linkNewest(ck: CachedKey): void {
    ck.older = this.newest;
    ck.newer = null;
    if (this.newest !== null) this.newest.newer = ck;
    this.newest = ck;
    if (this.oldest === null) this.oldest = ck;
  }

  private unlink(ck: CachedKey): void {
    if (ck.newer !== null) ck.newer.older = ck.older;
    else this.newest = ck.older;
    if (ck.older !== null) ck.older.newer = ck.newer;
    else this.oldest = ck.newer;
    ck.newer = null;
    ck.older = null;
  }
}

function fieldReply(ck: CachedKey, field: Buffer): Buffer | null {
  const fields = ck.fields;
  if (fields === null) return null;
  for (let i = 0; i < fields.length; i++) if (fields[i].equals(field)) return (ck.fieldReplies as Buffer[])[i];
  return null;
}

/** Puts `next` in a reply slot; returns the change in accounted bytes. */
function replace(prev: Buffer | null, next: Buffer, put: (b: Buffer) => void): number {
  put(next);
  return prev === null ? next.length + VALUE_OVERHEAD : next.length - prev.length;
}
