/**
 * The ketama consistent-hash continuum exactly as twemproxy 0.5.0 builds and searches it (nc_ketama.c
 * ketama_update / ketama_dispatch, nc_conf.c conf_add_server / conf_validate_server, nc_server.c
 * server_pool_idx), and RingRouter: key bytes -> shard index for ring mode.
 *
 * What twemproxy does, and we copy:
 *   - Server key: the configured name when the server line has one ("host:port:weight name"), otherwise
 *     "host:port" (never the weight). Special case: an unnamed server on port 11211 hashes as just "host"
 *     (libmemcached compatibility).
 *   - Servers are ordered by name before the continuum is built (conf_validate_server sorts by string_compare:
 *     shorter first, then bytewise). Only visible on ties (below); indices we return are always positions in
 *     the caller's array.
 *   - Points per server: pct = (float)weight / (float)total_weight;
 *     points = floorf((float)(pct * 160 / 4 * (float)nservers + 0.0000000001)) * 4, in single precision as C
 *     computes it. Each group of 4 points is the MD5 digest of "<key>-<i>" (i = 0, 1, ...) read as four
 *     little-endian uint32s. The point values always come from MD5, whatever the key hash is.
 *   - Sorted by value with qsort. glibc's qsort is a stable merge sort for arrays like this one, so equal values
 *     keep insertion order: the server that sorts first by name, then the earlier point. We sort the same way
 *     explicitly (value, then insertion order), so a tie goes to that server, as it does in twemproxy.
 *   - Dispatch: first point whose value >= hash, wrapping to the first point past the end.
 *   - Routing: with one server, always that server. Otherwise apply hash_tag (first open byte, then the first close
 *     byte after it, and at least one byte between them, else the whole key). An empty key, or an empty result,
 *     hashes to 0 rather than being passed to the hash function.
 * The continuum is built once (start-up or reload) and only read afterwards; lookups allocate nothing. A lookup
 * does not binary-search all points: a table indexed by the hash's top bits (about one bucket per point) gives the
 * points whose values share them, and the search runs among those few (the same answer, without the ten or so
 * unpredictable branches a search of 640 points takes).
 */
import type { HashName, ShardConfig } from '../config/schema.js';
import { HASHERS, md5Words4, type KeyHasher } from './hashers.js';

const POINTS_PER_SERVER = 160;
const POINTS_PER_HASH = 4;
const DEFAULT_KETAMA_PORT = 11211;
/** At most 2^16 buckets (256 KiB) in the lookup table, however many points. */
const MAX_BUCKET_BITS = 16;

export interface KetamaServer {
  /** The exact string twemproxy hashes for this server (see ketamaKey). */
  key: string;
  /** Positive integer weight. */
  weight: number;
}

/** The string twemproxy feeds to ketama for a server: its name, or "host:port" ("host" alone on port 11211). */
export function ketamaKey(shard: Pick<ShardConfig, 'named' | 'name' | 'host' | 'port'>): string {
  if (shard.named) return shard.name;
  return shard.port === DEFAULT_KETAMA_PORT ? shard.host : `${shard.host}:${shard.port}`;
}

/** twemproxy's string_compare: shorter first, then bytewise. */
function compareNames(a: Buffer, b: Buffer): number {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return Buffer.compare(a, b);
}

/** Points a server gets: twemproxy's float arithmetic, step by step in single precision. */
export function ketamaPointCount(weight: number, totalWeight: number, nservers: number): number {
  const f = Math.fround;
  const pct = f(f(weight) / f(totalWeight));
  const perHashGroups = f(f(f(pct * POINTS_PER_SERVER) / 4) * f(nservers));
  return Math.floor(f(perHashGroups + 0.0000000001)) * 4;
}

export class KetamaContinuum {
  /** Point values, ascending. */
  readonly points: Uint32Array;
  /** owners[i] = index (into the servers array as given) of the server owning points[i]. */
  readonly owners: Uint16Array;
  readonly size: number;
  readonly serverCount: number;
  private readonly hasher: KeyHasher;
  /** bucketStart[b] = index of the first point whose value is >= b << bucketShift; bucketStart[buckets] = size. */
  private readonly bucketStart: Uint32Array;
  private readonly bucketShift: number;

  constructor(servers: ReadonlyArray<KetamaServer>, hasher: KeyHasher) {
    this.hasher = hasher;
    this.serverCount = servers.length;
    if (servers.length > 0xffff) throw new Error(`ketama: at most 65535 servers, got ${servers.length}`);

    const names = servers.map((s) => Buffer.from(s.key, 'utf8'));
    let totalWeight = 0;
    for (const s of servers) {
      if (!Number.isInteger(s.weight) || s.weight <= 0)
        throw new Error(`ketama: server "${s.key}" has weight ${s.weight}; it must be a positive integer`);
      totalWeight += s.weight;
    }
    const order = servers.map((_, i) => i).sort((x, y) => compareNames(names[x], names[y]));
    for (let i = 1; i < order.length; i++) {
      if (compareNames(names[order[i - 1]], names[order[i]]) === 0) {
        throw new Error(`ketama: two servers hash as the same name "${servers[order[i]].key}"`);
      }
    }

    // Points in twemproxy's insertion order: servers by name, each server's points in order.
    const values: number[] = [];
    const owner: number[] = [];
    const digest = new Uint32Array(4);
    for (const si of order) {
      const count = ketamaPointCount(servers[si].weight, totalWeight, servers.length);
      for (let i = 0; i < count / POINTS_PER_HASH; i++) {
        // snprintf(host, 86, "%.*s-%u"): twemproxy's buffer is 86 bytes, but it hashes the untruncated length
        // (reading past the buffer) for keys over 81 bytes; we hash the full string.
        const label = Buffer.concat([names[si], Buffer.from(`-${i}`, 'latin1')]);
        md5Words4(label, 0, label.length, digest);
        for (let x = 0; x < POINTS_PER_HASH; x++) {
          values.push(digest[x]);
          owner.push(si);
        }
      }
    }
    const idx = values.map((_, i) => i).sort((a, b) => values[a] - values[b] || a - b);
    this.size = idx.length;
    this.points = new Uint32Array(this.size);
    this.owners = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) {
      this.points[i] = values[idx[i]];
      this.owners[i] = owner[idx[i]];
    }
    let bits = 1;
    while (bits < MAX_BUCKET_BITS && 1 << bits < this.size) bits++;
    this.bucketShift = 32 - bits;
    const buckets = 1 << bits;
    this.bucketStart = new Uint32Array(buckets + 1);
    let i = 0;
    for (let b = 0; b < buckets; b++) {
      const low = b * 2 ** this.bucketShift; // b << shift as an unsigned value
      while (i < this.size && this.points[i] < low) i++;
      this.bucketStart[b] = i;
    }
    this.bucketStart[buckets] = this.size;
  }

  /** ketama_dispatch: the owner of the first point >= hash, wrapping to the first point; -1 when empty. */
  ownerOf(hash: number): number {
    if (this.size === 0) return -1;
    const points = this.points;
    const b = hash >>> this.bucketShift;
    let left = this.bucketStart[b];
    let right = this.bucketStart[b + 1];
    // Every point before `left` is below the bucket (so below hash); every point from `right` on is above it.
    while (left < right && right - left <= 4) {
      if (points[left] >= hash) return this.owners[left];
      left++;
    }
    while (left < right) {
      const mid = (left + right) >>> 1;
      if (points[mid] < hash) left = mid + 1;
      else right = mid;
    }
    return this.owners[right === this.size ? 0 : right];
  }

  /** Owner of key bytes buf[start, end) (no hash tag): twemproxy hashes an empty key as 0. */
  ownerOfKey(buf: Buffer, start: number, end: number): number {
    return this.ownerOf(end > start ? this.hasher(buf, start, end) : 0);
  }
}

/** Parses a twemproxy hash_tag (exactly two bytes, e.g. "{}") into byte values; [-1, -1] for none. */
export function parseHashTag(tag: string | null): [number, number] {
  if (tag === null) return [-1, -1];
  const b = Buffer.from(tag, 'utf8');
  if (b.length !== 2) throw new Error(`hash tag "${tag}" must be exactly two bytes`);
  return [b[0], b[1]];
}

/**
 * twemproxy's hash_tag rule on buf[start, end): returns the range to hash, [start, end] itself unless a
 * non-empty tag is found. Allocates the result pair; the router inlines the same scan instead.
 */
export function hashTagged(buf: Buffer, start: number, end: number, tag: string | null): [number, number] {
  const [open, close] = parseHashTag(tag);
  if (open < 0) return [start, end];
  let o = start;
  while (o < end && buf[o] !== open) o++;
  if (o >= end) return [start, end];
  let c = o + 1;
  while (c < end && buf[c] !== close) c++;
  if (c >= end || c === o + 1) return [start, end];
  return [o + 1, c];
}

/** Ring mode: shard index for key bytes, twemproxy-compatible (hash, hash_tag, ketama). */
export class RingRouter {
  readonly continuum: KetamaContinuum;
  private readonly hasher: KeyHasher;
  private readonly open: number;
  private readonly close: number;
  private readonly single: boolean;

  constructor(shards: ReadonlyArray<ShardConfig>, hash: HashName, hashTag: string | null) {
    if (shards.length === 0) throw new Error('ring: no shards');
    const hasher = HASHERS[hash];
    if (hasher === undefined) throw new Error(`ring: unknown hash "${hash}"`);
    this.hasher = hasher;
    this.continuum = new KetamaContinuum(
      shards.map((s) => ({ key: ketamaKey(s), weight: s.weight })),
      hasher,
    );
    [this.open, this.close] = parseHashTag(hashTag);
    this.single = shards.length === 1;
  }

  /** Index into the shards array of the shard owning key buf[start, end). */
  shardFor(buf: Buffer, start: number, end: number): number {
    if (this.single) return 0;
    let s = start;
    let e = end;
    const open = this.open;
    if (open >= 0) {
      let o = start;
      while (o < end && buf[o] !== open) o++;
      if (o < end) {
        const close = this.close;
        let c = o + 1;
        while (c < end && buf[c] !== close) c++;
        if (c < end && c > o + 1) {
          s = o + 1;
          e = c;
        }
      }
    }
    return this.continuum.ownerOf(e > s ? this.hasher(buf, s, e) : 0);
  }
}
