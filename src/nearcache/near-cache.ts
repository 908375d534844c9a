/**
 * NearCache: request coalescing and the near cache of hot keys, behind the keyed and fan-out dispatch kinds. It
 * owns the reads in flight that others may join (flights), the keys with writes in flight through this keymux,
 * the store (store.ts) and one invalidation channel per shard (invalidation.ts). Dispatch calls it only for the
 * commands of `near_cache.commands` and for writes; every other request never reaches it.
 *
 * A read of one key (GET, HGET, HGETALL, single-key EXISTS):
 * 1. cache on: served from memory when the store has it (the shard is not asked);
 * 2. coalescing on: joins an identical read (same command bytes) of the same key already sent by another client
 *    and still open, and is answered with a copy of that reply, in its own client's order;
 * 3. otherwise it is sent, and becomes a flight others may join. When the cache wants it (admitted key, primary
 *    pool, channel ready), a `PTTL key` goes right behind it on the same connection, and the reply is cached once
 *    both have arrived, unless the flight was spoiled meanwhile.
 * MGET is served from memory when every key has a cached GET reply, and otherwise sent as usual.
 *
 * Correctness:
 * - Own writes: a write through keymux (keyed, fan-out or to every shard) drops its keys from the store and spoils
 *   their flights before it is sent, and holds them (a write count per slot, `slotWords`) until it is answered:
 *   reads of a held key neither join a flight nor become one that fills the cache, since they may run on the shard
 *   before the write.
 *   A read sent after the write's reply runs after the write. So a client always reads its own writes.
 * - Others' writes: the shard's invalidation message drops the key and spoils its flights. A flight is the epoch
 *   of its key: a reply whose flight was spoiled (an invalidation arrived between send and reply) is not cached;
 *   so is a reply from a shard whose channel was not ready when the read was sent or was lost since (generation),
 *   or sent under an older topology (`epoch`).
 * - Expiry: the PTTL read with the value bounds the entry (from when the PTTL was sent, so never later than in
 *   Redis); ttl_ms bounds it further.
 * - Loss of a channel drops that shard's entries and spoils its flights at once; a topology change (reload,
 *   cluster layout, migration) drops everything.
 */
import { performance } from 'node:perf_hooks';
import type { KeymuxConfig } from '../config/schema.js';
import type { Request, ReplyTap, BackendOp } from '../core/request.js';
import { argAt, UNIT_AT_BACKEND } from '../core/request.js';
import type { CommandSpec } from '../commands/spec.js';
import type { ShardPool } from '../backend/pool.js';
import type { BackendConnection } from '../backend/backend-connection.js';
import type { ShardRuntime, Topology } from '../routing/topology.js';
import type { ShardStats } from '../metrics/stats.js';
import type { HotKeys } from '../metrics/hotkeys.js';
import { arrayHeader, commandFrame } from '../resp/writer.js';
import type { Logger } from '../log.js';
import { hashKey, NearCacheStore, ROLE_EXISTS, ROLE_GET, ROLE_HGET, ROLE_HGETALL } from './store.js';
import { InvalidationTracker, type TrackerOptions, type TrackerSink } from './invalidation.js';

export type NearCacheSettings = KeymuxConfig['nearCache'];

/** Opens the invalidation channel of one shard (tests pass a scripted one). */
export type OpenChannel = (
  address: string,
  index: number,
  options: TrackerOptions,
  sink: TrackerSink,
  log: Logger,
) => InvalidationTracker;

const openTracker: OpenChannel = (address, index, options, sink, log) => {
  const t = new InvalidationTracker(address, index, options, sink, log);
  t.connect();
  return t;
};

/** MGET: served from GET entries, never filled or coalesced as a whole. */
export const ROLE_MGET = 5;

const ROLE_BY_COMMAND: Readonly<Record<string, number>> = {
  GET: ROLE_GET,
  HGET: ROLE_HGET,
  HGETALL: ROLE_HGETALL,
  EXISTS: ROLE_EXISTS,
  MGET: ROLE_MGET,
};

/** How often the admitted hot keys are read from the hot-key tracker (admit: hot). */
const HOT_REFRESH_MS = 500;
/** A probe must never be re-sent by the cluster controller: both of its counters are at their bounds. */
const NO_REDIRECTS = 0x7fffffff;

/** What the session side of dispatch gives the near cache. */
export interface ReadSender {
  readonly id: number;
  sendUnit(unit: Request, pool: ShardPool, topo: Topology): void;
}

/**
 * A read in flight whose reply may fill the cache: the request sent (the leader), the cache role to fill, and the
 * epoch it was sent under. Also the PTTL probe sent right behind it on the same connection.
 */
class Flight implements ReplyTap, BackendOp {
  readonly owner: NearCache;
  readonly hash: number;
  readonly key: Buffer;
  readonly leader: Request;
  /** Same-hash chain of flights. */
  next: Flight | null;
  /** In the flights map. */
  linked: boolean;
  /** Cache role to fill (0: none, or spoiled). */
  fill: number;
  readonly field: Buffer | null;
  readonly shard: number;
  readonly generation: number;
  readonly epoch: number;
  /** The leader's reply while the PTTL is awaited. */
  reply: Buffer | null;
  /** BackendOp (the PTTL probe): */
  sentAt: number;
  frame: Buffer;
  redirects: number;
  readonly sessionId: number;

  constructor(
    owner: NearCache,
    hash: number,
    key: Buffer,
    leader: Request,
    fill: number,
    field: Buffer | null,
    shard: number,
    generation: number,
  ) {
    this.owner = owner;
    this.hash = hash;
    this.key = key;
    this.leader = leader;
    this.next = null;
    this.linked = false;
    this.fill = fill;
    this.field = field;
    this.shard = shard;
    this.generation = generation;
    this.epoch = owner.epoch;
    this.reply = null;
    this.sentAt = 0;
    this.frame = EMPTY;
    this.redirects = NO_REDIRECTS;
    this.sessionId = leader.owner.id;
  }

  /** The leader's reply: answer the followers, then cache it (now, or once the PTTL is in). */
  onReply(req: Request, frame: Buffer): void {
    this.owner.leaderDone(req, frame);
    if (this.fill !== 0 && (frame[0] === 45 /* - */ || req.redirects !== 0)) this.fill = 0;
    if (this.fill === 0) {
      this.owner.unlink(this);
      return;
    }
    this.reply = frame;
  }

  /** The PTTL probe's reply. */
  deliver(frame: Buffer): void {
    const reply = this.reply;
    this.reply = null;
    if (this.fill !== 0 && reply !== null) this.owner.fillFrom(this, reply, frame);
    this.fill = 0;
    this.owner.unlink(this);
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Coalescing costs the ordinary read path a short hash and a few typed-array reads, no Map and no allocation: each
 * slot of a fixed table indexed by quickHash keeps the hash of the last key read there, the leader of that key (the
 * last read sent for it, as its connection and its position there; a newer key of a colliding slot just replaces
 * it), and the writes in flight of the keys of that slot (a collision only holds
 * another key back for the length of a write). The hash and the write count of a slot are neighbours in one typed
 * array (`slotWords`): a read or a write touches one cache line of it, and the whole table (32 KiB) stays in cache.
 * Followers, rare, live in a Map by leader.
 */
const LEADER_SLOTS = 4096;
const LEADER_MASK = LEADER_SLOTS - 1;
/** slotWords[HASH_WORD(slot)]: quickHash of the last key read there; slotWords[HOLD_WORD(slot)]: writes in flight. */
const HASH_WORD = (slot: number): number => slot << 1;
const HOLD_WORD = (slot: number): number => (slot << 1) | 1;

/** A short hash for the coalescing tables: the length, the last 8 bytes and the first 4 (O(1) in the key size). */
export function quickHash(key: Buffer): number {
  const n = key.length;
  let h = Math.imul(n, 0x9e3779b1) | 0;
  const stop = n > 8 ? n - 8 : 0;
  for (let i = n - 1; i >= stop; i--) h = Math.imul(h ^ key[i], 0x01000193);
  if (n > 8) {
    const m = n > 12 ? 4 : n - 8;
    for (let i = 0; i < m; i++) h = Math.imul(h ^ key[i], 0x01000193);
  }
  return (h ^ (h >>> 15)) | 0;
}

/** A write of one key in flight through keymux: its write count (slotWords[req.tapIndex]) is released with its reply. */
class SingleHold implements ReplyTap {
  readonly owner: NearCache;

  constructor(owner: NearCache) {
    this.owner = owner;
  }

  onReply(req: Request): void {
    this.owner.slotWords[req.tapIndex]--;
  }
}

/** A write of several keys in flight: their write counts are released with its reply. */
class WriteHold implements ReplyTap {
  readonly owner: NearCache;
  readonly slots: number[];

  constructor(owner: NearCache, slots: number[]) {
    this.owner = owner;
    this.slots = slots;
  }

  onReply(): void {
    const words = this.owner.slotWords;
    for (let i = 0; i < this.slots.length; i++) words[this.slots[i]]--;
  }
}

/**
 * The tap of a read that others may join (and that fills nothing): frees its leader slot at once (so no request
 * outlives its reply in the table: they stay young for the GC) and answers its followers.
 */
class LeaderTap implements ReplyTap {
  readonly owner: NearCache;

  constructor(owner: NearCache) {
    this.owner = owner;
  }

  onReply(req: Request, frame: Buffer): void {
    this.owner.leaderDone(req, frame);
  }
}

/** A write sent to every shard (FLUSHALL, FLUSHDB...): every key is held until it is answered. */
class GlobalHold implements ReplyTap {
  readonly owner: NearCache;

  constructor(owner: NearCache) {
    this.owner = owner;
  }

  onReply(): void {
    this.owner.globalWrites--;
  }
}

export class NearCache implements TrackerSink {
  settings: NearCacheSettings;
  /** near_cache.enabled. */
  caching: boolean;
  coalescing: boolean;
  readonly store: NearCacheStore;
  /** Bumped at every topology change: flights of an older topology never fill. */
  epoch: number;
  /** Writes to every shard in flight. */
  globalWrites: number;
  /**
   * Test hook: called for every key an invalidation channel reports, and with null when a shard's entries were all
   * dropped (its channel was lost, or it flushed). Null in production.
   */
  onInvalidation: ((address: string, key: Buffer | null) => void) | null;

  /** Per slot (quickHash & LEADER_MASK): the hash of the last key read there, and writes in flight (see above). */
  readonly slotWords: Int32Array;
  private roles: Map<string, number>;
  /** The last command looked up in `roles` and its role: reads of one kind in a row skip the Map (a string key). */
  private roleSpec: CommandSpec | null = null;
  private role = 0;
  /**
   * The last read sent per leader slot (quickHash & LEADER_MASK), which identical reads of other clients join: its
   * position in the queue of the connection it went over (BackendConnection.positionOfLast), with that connection
   * below (null: no leader).
   */
  private readonly leaderPositions: Float64Array;
  /**
   * The backend connection each leader went over. A read joins a leader only on the connection it would itself go
   * over: its client's later commands to the shard go there too, behind the leader, so the answer it shares can
   * never come from after them (on another connection the leader may run after the joiner's own next write).
   */
  private readonly leaderConns: Array<BackendConnection | null>;
  /** Followers by leader (only leaders that got some). */
  private readonly followers: Map<Request, Request[]>;
  /** Reads in flight that may fill the cache, by hashKey (chains for collisions). */
  private readonly flights: Map<number, Flight>;
  private readonly globalHold: GlobalHold;
  private readonly singleHold: SingleHold;
  private readonly leaderTap: LeaderTap;
  /** Channels by shard index of the current topology, and by address (kept across topologies). */
  private trackers: InvalidationTracker[];
  private readonly trackersByAddress: Map<string, InvalidationTracker>;
  private topology: Topology | null;
  private readonly hotKeys: () => HotKeys | null;
  /** Hashes (hashKey) of the current hot keys (admit: hot). */
  private hot: Set<number>;
  private hotTimer: NodeJS.Timeout | null;
  private readonly log: Logger;
  private readonly openChannel: OpenChannel;
  private closed: boolean;

  constructor(
    settings: NearCacheSettings,
    hotKeys: () => HotKeys | null,
    log: Logger,
    openChannel: OpenChannel = openTracker,
  ) {
    this.settings = settings;
    this.caching = settings.enabled;
    this.coalescing = settings.coalesce;
    this.store = new NearCacheStore(settings.maxBytes, settings.maxEntryBytes);
    this.epoch = 0;
    this.globalWrites = 0;
    this.onInvalidation = null;
    this.roles = rolesOf(settings);
    this.slotWords = new Int32Array(2 * LEADER_SLOTS);
    this.leaderPositions = new Float64Array(LEADER_SLOTS);
    this.leaderConns = new Array<BackendConnection | null>(LEADER_SLOTS).fill(null);
    this.followers = new Map();
    this.flights = new Map();
    this.globalHold = new GlobalHold(this);
    this.singleHold = new SingleHold(this);
    this.leaderTap = new LeaderTap(this);
    this.trackers = [];
    this.trackersByAddress = new Map();
    this.topology = null;
    this.hotKeys = hotKeys;
    this.hot = new Set();
    this.hotTimer = null;
    this.log = log;
    this.openChannel = openChannel;
    this.closed = false;
    this.configureHot();
  }

  /** Whether dispatch should hand this command to the near cache (a read it serves or coalesces). */
  roleOf(spec: CommandSpec): number {
    if (spec === this.roleSpec) return this.role;
    const role = this.roles.get(spec.name) ?? 0;
    this.roleSpec = spec;
    this.role = role;
    return role;
  }

  /** New settings (reload). Everything cached is dropped when the cache's own settings change. */
  configure(settings: NearCacheSettings): void {
    const prev = this.settings;
    this.settings = settings;
    this.coalescing = settings.coalesce;
    this.roles = rolesOf(settings);
    this.roleSpec = null;
    if (
      prev.enabled !== settings.enabled ||
      prev.admit !== settings.admit ||
      prev.ttlMs !== settings.ttlMs ||
      prev.commands.join() !== settings.commands.join()
    ) {
      this.caching = settings.enabled;
      this.dropAll();
    }
    this.store.maxBytes = settings.maxBytes;
    this.store.maxEntryBytes = settings.maxEntryBytes;
    if (this.store.bytes > settings.maxBytes) this.dropAll();
    this.configureHot();
    if (this.topology !== null) this.onTopology(this.topology);
  }

  /**
   * A new topology is installed: everything cached or in flight was routed with the old one and is dropped; the
   * invalidation channels follow the shards (kept for addresses still present, opened for new ones).
   */
  onTopology(topo: Topology): void {
    this.topology = topo;
    this.dropAll();
    const wanted = new Map<string, number>();
    if (this.caching && !this.closed) topo.shards.forEach((s, i) => wanted.set(s.pool.shard.address, i));
    for (const [address, t] of this.trackersByAddress) {
      const options = trackerOptions(topo, address);
      if (!wanted.has(address) || JSON.stringify(options) !== JSON.stringify(t.options)) {
        t.close();
        this.trackersByAddress.delete(address);
      }
    }
    const list: InvalidationTracker[] = [];
    for (const [address, index] of wanted) {
      let t = this.trackersByAddress.get(address);
      if (t === undefined) {
        t = this.openChannel(address, index, trackerOptions(topo, address), this, this.log);
        this.trackersByAddress.set(address, t);
      }
      t.index = index;
      list[index] = t;
    }
    this.trackers = list;
  }

  // ---- data path (called by dispatch) --------------------------------------------------------------------

  /**
   * A read of one key (role != ROLE_MGET), routed to `shard` through `pool`: served from memory, joined to an
   * identical read in flight, or sent (and perhaps cached). req.shardStats is set by the caller.
   */
  read(
    session: ReadSender,
    req: Request,
    role: number,
    key: Buffer,
    shard: ShardRuntime,
    pool: ShardPool,
    topo: Topology,
  ): void {
    const quick = quickHash(key);
    const field = role === ROLE_HGET ? req.args[2] : null;
    const st = req.shardStats;
    let hash = 0;
    if (this.caching) {
      hash = hashKey(key);
      const hit = this.store.lookup(hash, key, role, field, performance.now());
      if (hit !== null) {
        if (st !== null) st.nearHits++;
        req.deliver(hit);
        return;
      }
      if (st !== null) st.nearMisses++;
    }
    const slot = quick & LEADER_MASK;
    const words = this.slotWords;
    if (this.globalWrites > 0 || words[HOLD_WORD(slot)] !== 0) {
      session.sendUnit(req, pool, topo); // a write of this key is in flight: this read may not share or fill
      return;
    }
    let leading: BackendConnection | null = null;
    if (this.coalescing) {
      // The slot's hash is compared before its leader is looked up: on ordinary traffic the slot last saw another
      // key, and its leader's connection queue is far from the CPU's caches.
      const conn = pool.pick(req.owner.id); // only RESP2 reads come here: the pool's own connections
      if (words[HASH_WORD(slot)] === quick) {
        const leader =
          this.leaderConns[slot] === conn ? (conn.waitingAt(this.leaderPositions[slot]) as Request) : undefined;
        if (
          leader !== undefined &&
          !leader.done &&
          leader.state === UNIT_AT_BACKEND &&
          leader.frame.equals(req.frame) &&
          (leader.tap === null || leader.tap === this.leaderTap || leader.tap instanceof Flight)
        ) {
          if (leader.owner === req.owner) {
            // A client's own identical reads are not merged: its pipeline reaches the shard as it sent it.
            session.sendUnit(req, pool, topo);
            return;
          }
          // Its reply is what the followers wait for: a leader's tap is set when its first follower comes (a Flight
          // tells leaderDone itself).
          if (leader.tap === null) leader.tap = this.leaderTap;
          this.follow(leader, req);
          if (st !== null) st.coalesced++;
          return;
        }
      } else words[HASH_WORD(slot)] = quick;
      leading = conn;
    }
    const tracker = this.caching ? this.trackers[shard.index] : undefined;
    if (tracker === undefined || !tracker.ready || pool !== shard.pool || !this.admits(hash, key)) {
      session.sendUnit(req, pool, topo);
      if (leading !== null) this.lead(slot, leading, req);
      return;
    }
    const flight = new Flight(this, hash, key, req, role, field, shard.index, tracker.generation);
    this.link(flight);
    req.tap = flight;
    session.sendUnit(req, pool, topo);
    if (leading !== null) this.lead(slot, leading, req);
    if (req.state !== UNIT_AT_BACKEND || req.done) {
      flight.fill = 0; // held by a cluster ordering fence (or already answered): no PTTL right behind it
      return;
    }
    flight.frame = commandFrame(['PTTL', key]);
    flight.sentAt = performance.now();
    pool.pick(session.id).send(flight, flight.frame);
  }

  /**
   * `req`, just sent, is the read others of the same bytes may join until its reply. It is found again by its
   * connection and its position there, not kept itself: no reference to a young request is stored in this old
   * table (a write barrier per read), and no hook on its reply is needed to forget it (once answered, the position
   * finds nothing). Not a leader when it was not queued last on `conn` (held, refused, or answered at once).
   */
  private lead(slot: number, conn: BackendConnection, req: Request): void {
    const position = conn.positionOfLast(req);
    if (position < 0) {
      if (this.leaderConns[slot] !== null) this.leaderConns[slot] = null;
      return;
    }
    this.leaderConns[slot] = conn;
    this.leaderPositions[slot] = position;
  }

  /**
   * MGET: answered from memory when every key has a cached GET reply (counted as hits and misses on each key's
   * shard, as the fragments would have been). False: not all cached, send it as usual.
   */
  serveMget(req: Request, topo: Topology): boolean {
    if (!this.caching) return false;
    const n = req.args.length - 1; // argAt: a large MGET has only its first argument views made
    const now = performance.now();
    const parts: Buffer[] = [arrayHeader(n)];
    for (let i = 1; i <= n; i++) {
      const key = argAt(req, i);
      const reply = this.store.lookup(hashKey(key), key, ROLE_GET, null, now);
      if (reply === null) {
        for (let j = 1; j <= n; j++) {
          const st = shardStatsOf(topo, argAt(req, j));
          if (st !== null) st.nearMisses++;
        }
        return false;
      }
      parts.push(reply);
    }
    for (let i = 1; i <= n; i++) {
      const st = shardStatsOf(topo, argAt(req, i));
      if (st === null) continue;
      st.nearHits++;
      if (parts[i][0] === 36 /* $ */ && parts[i][1] === 45 /* - */) st.misses++;
      else st.hits++;
    }
    req.deliver(Buffer.concat(parts));
    return true;
  }

  /**
   * A write to the keys at `idx[0..n)` of req.args (keyed dispatch) or at every `step`-th argument from 1
   * (fan-out: idx null): drops them here before the write is sent and holds them until it is answered.
   */
  write(req: Request, idx: number[] | null, n: number, step: number): void {
    if (req.tap !== null) return; // dispatched again after a migration hold: already held
    const args = req.args;
    if (idx !== null && n === 1) {
      req.tapIndex = this.holdKey(args[idx[0]]);
      req.tap = this.singleHold;
      return;
    }
    const slots: number[] = [];
    if (idx !== null) for (let i = 0; i < n; i++) slots.push(this.holdKey(args[idx[i]]));
    else for (let i = 1; i < args.length; i += step) slots.push(this.holdKey(argAt(req, i))); // large fan-outs: views not all made
    req.tap = new WriteHold(this, slots);
  }

  /** A write sent to every shard (FLUSHALL, FLUSHDB, FUNCTION/SCRIPT changes): everything is dropped and held. */
  writeAll(req: Request): void {
    if (req.tap !== null) return;
    this.dropAll();
    this.globalWrites++;
    req.tap = this.globalHold;
  }

  // ---- invalidation channels (TrackerSink) ----------------------------------------------------------------

  invalidated(tracker: InvalidationTracker, keys: Buffer[] | null): void {
    if (keys === null) {
      this.store.dropShard(tracker.index);
      this.spoilShard(tracker.index);
      this.onInvalidation?.(tracker.address, null);
      return;
    }
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      const hash = hashKey(key);
      this.store.invalidate(hash, key);
      this.spoil(hash, key);
      this.leaderConns[quickHash(key) & LEADER_MASK] = null; // later reads do not join a read sent before the write
      this.onInvalidation?.(tracker.address, key);
    }
  }

  lost(tracker: InvalidationTracker): void {
    if (this.trackers[tracker.index] !== tracker) return;
    this.store.dropShard(tracker.index);
    this.spoilShard(tracker.index);
    this.onInvalidation?.(tracker.address, null);
  }

  // ---- introspection ---------------------------------------------------------------------------------------

  /** Whether `key` is cached now (for /hotkeys). */
  isCached(key: Buffer): boolean {
    return this.caching && this.store.contains(key, performance.now());
  }

  /** Per-channel state for /shards-like reports and tests. */
  channels(): Array<{ address: string; ready: boolean; messages: number; keys: number; reconnects: number }> {
    return this.trackers
      .filter((t) => t !== undefined)
      .map((t) => ({
        address: t.address,
        ready: t.ready,
        messages: t.messages,
        keys: t.keys,
        reconnects: t.reconnects,
      }));
  }

  close(): void {
    this.closed = true;
    for (const t of this.trackersByAddress.values()) t.close();
    this.trackersByAddress.clear();
    this.trackers = [];
    if (this.hotTimer !== null) clearInterval(this.hotTimer);
    this.hotTimer = null;
    this.dropAll();
  }

  // ---- internals ----------------------------------------------------------------------------------------

  /** Called by a flight once both replies are in and nothing spoiled it. */
  fillFrom(f: Flight, reply: Buffer, pttl: Buffer): void {
    const tracker = this.trackers[f.shard];
    if (f.epoch !== this.epoch || tracker === undefined || !tracker.ready || tracker.generation !== f.generation)
      return;
    const ttl = integerOf(pttl);
    if (ttl === null || ttl === 0) return;
    let expiresAt = ttl > 0 ? f.sentAt + ttl : Number.POSITIVE_INFINITY; // -1: no TTL; -2: no key (nil cached)
    const maxAge = this.settings.ttlMs;
    const now = performance.now();
    if (maxAge > 0 && now + maxAge < expiresAt) expiresAt = now + maxAge;
    this.store.set(f.hash, f.key, f.shard, f.fill, f.field, reply, expiresAt, now);
  }

  /** `leader`'s reply (its position now finds nothing, so later reads lead anew): its followers get the same bytes, each in its client's order. */
  leaderDone(leader: Request, frame: Buffer): void {
    if (this.followers.size === 0) return;
    const list = this.followers.get(leader);
    if (list === undefined) return;
    this.followers.delete(leader);
    for (let i = 0; i < list.length; i++) list[i].deliver(frame);
  }

  private follow(leader: Request, req: Request): void {
    const list = this.followers.get(leader);
    if (list !== undefined) {
      list.push(req);
      return;
    }
    this.followers.set(leader, [req]);
  }

  unlink(f: Flight): void {
    if (!f.linked) return;
    f.linked = false;
    const head = this.flights.get(f.hash);
    if (head === f) {
      if (f.next === null) this.flights.delete(f.hash);
      else this.flights.set(f.hash, f.next);
    } else {
      let p = head ?? null;
      while (p !== null && p.next !== f) p = p.next;
      if (p !== null) p.next = f.next;
    }
    f.next = null;
  }

  private link(f: Flight): void {
    const head = this.flights.get(f.hash);
    if (head !== undefined) f.next = head;
    this.flights.set(f.hash, f);
    f.linked = true;
  }

  /** Drops `key` here and holds it until the write is answered; returns the index of its write count in slotWords. */
  private holdKey(key: Buffer): number {
    const quick = quickHash(key);
    if (this.caching) {
      const hash = hashKey(key);
      this.store.invalidate(hash, key);
      this.spoil(hash, key);
    }
    const slot = quick & LEADER_MASK;
    // A read sent before this write is joined by nobody after it (read first: most slots have no leader to clear).
    if (this.leaderConns[slot] !== null) this.leaderConns[slot] = null;
    const word = HOLD_WORD(slot);
    this.slotWords[word]++;
    return word;
  }

  /** The key changed: its flights neither take followers nor fill the cache. */
  private spoil(hash: number, key: Buffer): void {
    let f = this.flights.get(hash) ?? null;
    while (f !== null) {
      const next = f.next;
      if (f.key.equals(key)) {
        f.fill = 0;
        this.unlink(f);
      }
      f = next;
    }
  }

  private spoilShard(shard: number): void {
    this.leaderConns.fill(null);
    for (const head of [...this.flights.values()]) {
      for (let f: Flight | null = head; f !== null;) {
        const next: Flight | null = f.next;
        if (f.shard === shard) {
          f.fill = 0;
          this.unlink(f);
        }
        f = next;
      }
    }
  }

  private dropAll(): void {
    this.epoch++;
    this.store.clear();
    for (const head of [...this.flights.values()]) {
      for (let f: Flight | null = head; f !== null;) {
        const next: Flight | null = f.next;
        f.fill = 0;
        f.linked = false;
        f.next = null;
        f = next;
      }
    }
    this.flights.clear();
    this.leaderConns.fill(null);
  }

  private admits(hash: number, _key: Buffer): boolean {
    return this.settings.admit === 'all' || this.hot.has(hash);
  }

  private configureHot(): void {
    const want = this.caching && this.settings.admit === 'hot' && !this.closed;
    if (want && this.hotTimer === null) {
      this.hotTimer = setInterval(() => this.refreshHot(), HOT_REFRESH_MS);
      this.hotTimer.unref();
      this.refreshHot();
    } else if (!want && this.hotTimer !== null) {
      clearInterval(this.hotTimer);
      this.hotTimer = null;
      this.hot = new Set();
    }
  }

  /** Reads the hot-key top-K (a few dozen keys, off the data path). */
  refreshHot(): void {
    const hk = this.hotKeys();
    const next = new Set<number>();
    if (hk !== null) for (const k of hk.top().keys) next.add(hashKey(k.key));
    this.hot = next;
  }
}

function rolesOf(settings: NearCacheSettings): Map<string, number> {
  const roles = new Map<string, number>();
  if (!settings.enabled && !settings.coalesce) return roles;
  for (const c of settings.commands) roles.set(c.toLowerCase(), ROLE_BY_COMMAND[c]);
  return roles;
}

function trackerOptions(topo: Topology, address: string): TrackerOptions {
  const b = topo.config.backend;
  const shard = topo.shards.find((s) => s.pool.shard.address === address);
  return {
    host: shard?.pool.shard.host ?? '',
    port: shard?.pool.shard.port ?? 0,
    connectTimeoutMs: b.connectTimeoutMs,
    password: b.password,
    username: b.username,
    tls: b.tls,
  };
}

function shardStatsOf(topo: Topology, key: Buffer): ShardStats | null {
  return topo.shards[topo.router.shardFor(key)]?.pool.stats ?? null;
}

/** The value of an integer reply (":123\r\n"), or null for anything else. */
function integerOf(frame: Buffer): number | null {
  if (frame[0] !== 58 /* : */) return null;
  let i = 1;
  let neg = false;
  if (frame[i] === 45) {
    neg = true;
    i++;
  }
  let v = 0;
  for (; i < frame.length && frame[i] !== 13; i++) {
    const d = frame[i] - 48;
    if (d < 0 || d > 9) return null;
    v = v * 10 + d;
  }
  return neg ? -v : v;
}
