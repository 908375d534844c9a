/**
 * Plan: what a new config would change compared with the running one, computed from the two configs alone (no
 * I/O). Shared by `keymux plan` and the admin endpoint `POST /reload?dry_run=1`; live key counts come from
 * migration/estimate.ts on top of this. It answers:
 *  - whether the reload would be refused (listen, listen_unix, admin and mode need a restart; cluster mode has no plan);
 *  - shards added, removed (by name), and changed (address, weight, slots), and other sections that differ;
 *  - slots mode: every slot whose owner address changes, grouped by (from address, to address) with counts
 *    and inclusive ranges; ring mode: each shard's share of the 2^32 hash ring before and after, and the arcs
 *    of the ring that change owner, grouped the same way. Keys move by address, as the migration moves them
 *    (migration.ts): a shard renamed at the same address keeps its keys in slots mode, a shard whose address
 *    changes has all its keys moved.
 * When the hash function or hash tag changes, positions say nothing about keys (`rehash`): every key may move,
 * and only the sampled estimate can tell how many do.
 */
import type { KeymuxConfig } from '../config/schema.js';
import { SLOT_COUNT } from './crc16.js';
import { HASHERS } from './hashers.js';
import { KetamaContinuum, ketamaKey } from './ketama.js';
import { SlotMap, UNASSIGNED } from './slot-map.js';

type ShardConfig = KeymuxConfig['shards'][number];

export interface ShardRef {
  name: string;
  address: string;
}

export interface ShardChange extends ShardRef {
  /** What differs, e.g. "address 127.0.0.1:7001 -> 127.0.0.1:7011", "weight 1 -> 2", "slots 5461 -> 4096". */
  changes: string[];
}

/** Keys placed by one part of the key space leave `from` for `to`. */
export interface Move {
  from: ShardRef;
  to: ShardRef;
  /** slots mode: how many slots change hands. */
  slots: number | null;
  /** slots mode: the slots as inclusive ranges ("0-1364", "5000"). */
  ranges: string[] | null;
  /** ring mode: the fraction of the hash ring that changes hands (0..1). */
  share: number | null;
  /** ring mode: how many arcs of the ring change hands. */
  arcs: number | null;
}

export interface ShardShare extends ShardRef {
  /** Fraction of the slots (slots mode) or of the hash ring (ring mode) before and after; null if absent. */
  before: number | null;
  after: number | null;
}

export interface TopologyPlan {
  mode: KeymuxConfig['mode'];
  /** Why a reload of this config would be refused (the running config stays), or null. */
  refused: string | null;
  /** True when the two configs place every key on the same address. */
  unchanged: boolean;
  /** The hash function or hash tag changes: positions cannot tell which keys move; every key may. */
  rehash: boolean;
  added: ShardRef[];
  removed: ShardRef[];
  changed: ShardChange[];
  /** Top-level sections other than the routing ones whose values differ (backend, commands, metrics...). */
  otherChanges: string[];
  shares: ShardShare[];
  moves: Move[];
  /** Fraction of the slots or of the ring that changes owner address (0..1); with `rehash`, unknown (null). */
  movingShare: number | null;
}

const RING_SPACE = 2 ** 32;

/** The plan from `current` (running) to `next` (the new file). */
export function planTopology(current: KeymuxConfig, next: KeymuxConfig): TopologyPlan {
  const plan: TopologyPlan = {
    mode: next.mode,
    refused: restartOnly(current, next),
    unchanged: false,
    rehash: false,
    added: [],
    removed: [],
    changed: [],
    otherChanges: otherSections(current, next),
    shares: [],
    moves: [],
    movingShare: null,
  };
  if (plan.refused !== null) return plan;
  if (next.mode === 'cluster') {
    plan.refused = 'cluster mode: the Redis Cluster decides where keys live; keymux plans slots and ring modes only';
    return plan;
  }
  diffShards(current, next, plan);
  plan.rehash =
    current.hashTag !== next.hashTag ||
    (next.mode === 'ring' && current.ring.hash !== next.ring.hash) ||
    JSON.stringify(current.routing) !== JSON.stringify(next.routing);
  if (next.mode === 'slots') planSlots(current, next, plan);
  else planRing(current, next, plan);
  plan.unchanged = !plan.rehash && plan.moves.length === 0;
  return plan;
}

/**
 * Settings a running keymux cannot change in place (Proxy.reload refuses them; the plan says so): the sockets it
 * listens on (listen, tls.listen, listen_unix, the admin address, whether TLS or mutual TLS is on for either port) and the
 * mode. Certificates, CAs, the TLS version floor and the admin token may change (re-read on reload).
 */
export function restartOnlyChange(from: KeymuxConfig, to: KeymuxConfig): string | null {
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  const serverTls = (t: { enabled: boolean; caFile: string | null } | undefined) =>
    t === undefined ? null : [t.enabled, t.enabled && t.caFile !== null];
  if (!same(from.listen, to.listen)) return 'listen';
  if (!same(from.listenUnix, to.listenUnix)) return 'listen_unix (its path or mode)';
  if (!same(serverTls(from.tls), serverTls(to.tls)) || (to.tls.enabled && !same(from.tls.listen, to.tls.listen)))
    return 'tls.enabled, tls.listen or mutual TLS (tls.ca_file set or not)';
  const admin = (a: KeymuxConfig['admin']) => (a === null ? null : [a.host, a.port, serverTls(a.tls)]);
  if (!same(admin(from.admin), admin(to.admin))) return 'admin (its address, or TLS on it)';
  if (from.mode !== to.mode) return 'mode';
  if (from.workers !== to.workers) return 'workers (the number of worker processes)';
  return null;
}

/** The same rule as Proxy.reload: these settings need a restart. */
function restartOnly(from: KeymuxConfig, to: KeymuxConfig): string | null {
  const what = restartOnlyChange(from, to);
  return what === null ? null : `${to.source}: ${what} cannot change without a restart`;
}

const ROUTING_KEYS = new Set([
  'source',
  'shards',
  'ring',
  'hashTag',
  'routing',
  'listen',
  'listenUnix',
  'admin',
  'mode',
  'workers',
]);

function otherSections(a: KeymuxConfig, b: KeymuxConfig): string[] {
  const out: string[] = [];
  for (const key of Object.keys(b) as Array<keyof KeymuxConfig>) {
    if (ROUTING_KEYS.has(key)) continue;
    if (JSON.stringify(a[key]) !== JSON.stringify(b[key])) out.push(snake(key));
  }
  return out;
}

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

const ref = (s: ShardConfig): ShardRef => ({ name: s.name, address: s.address });

function slotCount(s: ShardConfig): number {
  let n = 0;
  for (const [a, b] of s.slots ?? []) n += b - a + 1;
  return n;
}

/** "0-5460" or "0-3640,14563-16383" (up to 3 ranges), else "5461 slots in 7 ranges". */
function slotsText(s: ShardConfig): string {
  const ranges = s.slots ?? [];
  if (ranges.length <= 3) return ranges.map(([a, b]) => rangeText(a, b)).join(',') || 'none';
  return `${slotCount(s)} slots in ${ranges.length} ranges`;
}

function diffShards(current: KeymuxConfig, next: KeymuxConfig, plan: TopologyPlan): void {
  const before = new Map(current.shards.map((s) => [s.name, s]));
  const after = new Map(next.shards.map((s) => [s.name, s]));
  for (const s of next.shards) {
    const old = before.get(s.name);
    if (old === undefined) {
      plan.added.push(ref(s));
      continue;
    }
    const changes: string[] = [];
    if (old.address !== s.address) changes.push(`address ${old.address} -> ${s.address}`);
    const [was, now] = [old.sentinelMaster ?? null, s.sentinelMaster ?? null];
    if (was !== now) changes.push(now !== null ? `now sentinel_master ${now}` : `no longer sentinel_master ${was}`);
    if (next.mode === 'ring' && old.weight !== s.weight) changes.push(`weight ${old.weight} -> ${s.weight}`);
    if (next.mode === 'ring' && old.named !== s.named) changes.push(s.named ? 'now named' : 'no longer named');
    if (next.mode === 'slots' && JSON.stringify(old.slots) !== JSON.stringify(s.slots))
      changes.push(`slots ${slotsText(old)} -> ${slotsText(s)}`);
    if (changes.length > 0) plan.changed.push({ ...ref(s), changes });
  }
  for (const s of current.shards) if (!after.has(s.name)) plan.removed.push(ref(s));
}

/** The shard (of either config) that has `address`, preferring the new config's name. */
function refResolver(current: KeymuxConfig, next: KeymuxConfig): (address: string) => ShardRef {
  const byAddress = new Map<string, ShardRef>();
  for (const s of current.shards) byAddress.set(s.address, ref(s));
  for (const s of next.shards) byAddress.set(s.address, ref(s));
  return (address) => byAddress.get(address) ?? { name: address, address };
}

function rangeText(a: number, b: number): string {
  return a === b ? `${a}` : `${a}-${b}`;
}

function planSlots(current: KeymuxConfig, next: KeymuxConfig, plan: TopologyPlan): void {
  const ownersBefore = new SlotMap(current.shards.map((s) => s.slots)).owners;
  const ownersAfter = new SlotMap(next.shards.map((s) => s.slots)).owners;
  const addrBefore = (slot: number): string | null =>
    ownersBefore[slot] === UNASSIGNED ? null : current.shards[ownersBefore[slot]].address;
  const addrAfter = (slot: number): string | null =>
    ownersAfter[slot] === UNASSIGNED ? null : next.shards[ownersAfter[slot]].address;
  const resolve = refResolver(current, next);
  for (const s of current.shards) {
    const after = next.shards.find((n) => n.name === s.name);
    plan.shares.push({
      ...ref(s),
      before: slotCount(s) / SLOT_COUNT,
      after: after === undefined ? null : slotCount(after) / SLOT_COUNT,
    });
  }
  for (const s of next.shards) {
    if (!current.shards.some((c) => c.name === s.name))
      plan.shares.push({ ...ref(s), before: null, after: slotCount(s) / SLOT_COUNT });
  }
  const groups = new Map<string, { from: string; to: string; slots: number; ranges: string[]; open: number }>();
  let moving = 0;
  let prevKey: string | null = null;
  for (let slot = 0; slot <= SLOT_COUNT; slot++) {
    const from = slot < SLOT_COUNT ? addrBefore(slot) : null;
    const to = slot < SLOT_COUNT ? addrAfter(slot) : null;
    const key = from !== null && to !== null && from !== to ? `${from}\n${to}` : null;
    if (prevKey !== null && key !== prevKey) {
      const g = groups.get(prevKey)!;
      g.ranges.push(rangeText(g.open, slot - 1));
    }
    if (key !== null) {
      moving++;
      let g = groups.get(key);
      if (g === undefined) groups.set(key, (g = { from: from!, to: to!, slots: 0, ranges: [], open: slot }));
      if (key !== prevKey) g.open = slot;
      g.slots++;
    }
    prevKey = key;
  }
  for (const g of groups.values()) {
    plan.moves.push({
      from: resolve(g.from),
      to: resolve(g.to),
      slots: g.slots,
      ranges: g.ranges,
      share: g.slots / SLOT_COUNT,
      arcs: null,
    });
  }
  sortMoves(plan.moves);
  plan.movingShare = plan.rehash ? null : moving / SLOT_COUNT;
}

/** The continuum of a ring-mode config (points and owner shard indexes). */
function continuumOf(config: KeymuxConfig): KetamaContinuum {
  return new KetamaContinuum(
    config.shards.map((s) => ({ key: ketamaKey(s), weight: s.weight })),
    HASHERS[config.ring.hash],
  );
}

/**
 * Ring ownership as arcs: the owner of (points[i-1], points[i]] is owners[i]; the first arc wraps from the last
 * point through 2^32 - 1 and 0 to points[0]. Returns each shard's share of the 2^32 positions.
 */
function ringShares(c: KetamaContinuum, shardCount: number): number[] {
  const shares = new Array<number>(shardCount).fill(0);
  if (shardCount === 1 || c.size === 0) {
    if (shardCount >= 1) shares[0] = 1;
    return shares;
  }
  for (let i = 0; i < c.size; i++) {
    const start = i === 0 ? c.points[c.size - 1] - RING_SPACE : c.points[i - 1];
    shares[c.owners[i]] += (c.points[i] - start) / RING_SPACE;
  }
  return shares;
}

function planRing(current: KeymuxConfig, next: KeymuxConfig, plan: TopologyPlan): void {
  const before = continuumOf(current);
  const after = continuumOf(next);
  const sharesBefore = ringShares(before, current.shards.length);
  const sharesAfter = ringShares(after, next.shards.length);
  current.shards.forEach((s, i) => {
    const j = next.shards.findIndex((n) => n.name === s.name);
    plan.shares.push({ ...ref(s), before: sharesBefore[i], after: j < 0 ? null : sharesAfter[j] });
  });
  next.shards.forEach((s, j) => {
    if (!current.shards.some((c) => c.name === s.name))
      plan.shares.push({ ...ref(s), before: null, after: sharesAfter[j] });
  });
  const resolve = refResolver(current, next);
  // Walk the union of both point sets: between two consecutive breakpoints both owners are constant.
  const owner = (c: KetamaContinuum, shards: readonly ShardConfig[], hash: number): string =>
    shards.length === 1 ? shards[0].address : shards[c.ownerOf(hash)].address;
  const cuts = new Float64Array(before.size + after.size);
  cuts.set(before.points, 0);
  cuts.set(after.points, before.size);
  cuts.sort();
  const groups = new Map<string, { from: string; to: string; share: number; arcs: number }>();
  let moving = 0;
  let prevKey: string | null = null;
  let lo = -1; // positions (lo, hi] share owners; the first interval starts at 0
  const visit = (hi: number): void => {
    if (hi <= lo) return;
    const from = owner(before, current.shards, hi);
    const to = owner(after, next.shards, hi);
    const width = (hi - lo) / RING_SPACE;
    const key = from !== to ? `${from}\n${to}` : null;
    if (key !== null) {
      moving += width;
      let g = groups.get(key);
      if (g === undefined) groups.set(key, (g = { from, to, share: 0, arcs: 0 }));
      g.share += width;
      if (key !== prevKey) g.arcs++;
    }
    prevKey = key;
    lo = hi;
  };
  for (const p of cuts) visit(p);
  visit(RING_SPACE - 1);
  for (const g of groups.values()) {
    plan.moves.push({
      from: resolve(g.from),
      to: resolve(g.to),
      slots: null,
      ranges: null,
      share: g.share,
      arcs: g.arcs,
    });
  }
  sortMoves(plan.moves);
  plan.movingShare = plan.rehash ? null : moving;
}

function sortMoves(moves: Move[]): void {
  moves.sort((a, b) => (b.share ?? 0) - (a.share ?? 0) || a.from.name.localeCompare(b.from.name));
}
