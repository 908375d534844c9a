/**
 * Hot-key detection: a streaming top-K of the keys clients ask for, over a sliding window. It owns the sketches,
 * the candidate heaps and the one rotation timer; it never sees a shard or a socket.
 *
 * How: the window is cut into BUCKETS sub-windows. Each sub-window has a count-min sketch (DEPTH rows of WIDTH
 * counters, indexes from one FNV-1a hash and a mixed second hash) and a min-heap of at most `capacity` candidate
 * keys ordered by their sketch estimate, indexed by hash. A sampled key costs one hash over its bytes, DEPTH
 * counter increments, one Map lookup and, when its estimate changed its rank, a heap sift; a key is copied only
 * when it enters a heap, which takes an estimate above the heap's minimum and at least 1 / (ADMIT_FACTOR *
 * capacity) of the sub-window's samples (so a flat key space, where no key is hot, does not churn the heap). An
 * unref'd timer rotates the sub-windows (a control-plane timer, not one per request); the oldest is cleared and
 * reused, so memory is fixed: BUCKETS * (DEPTH * WIDTH * 4 bytes + capacity entries).
 *
 * Reading (top(), at scrape or /hotkeys time) merges the candidates of every live sub-window, sums their
 * estimates, and returns the K largest with an estimated request count (divided by the sampling rate) and rate
 * over the time the live sub-windows cover. Estimates are count-min estimates: never below the sampled count,
 * and a hot key's error is small relative to its count. Keys are identified by their 32-bit hash inside a
 * sub-window; two keys colliding on it would share a count (odds ~ capacity / 2^32 per key).
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';

const DEPTH = 4;
const WIDTH = 2048; // a power of two
const MASK = WIDTH - 1;
/** Sub-windows per window. */
export const BUCKETS = 6;
/** A key is tracked once its estimate is at least 1 / (ADMIT_FACTOR * capacity) of its sub-window's samples. */
const ADMIT_FACTOR = 16;

class Entry {
  hash: number;
  key: Buffer;
  count: number;
  pos: number;

  constructor(hash: number, key: Buffer, count: number, pos: number) {
    this.hash = hash;
    this.key = key;
    this.count = count;
    this.pos = pos;
  }
}

class Bucket {
  readonly sketch: Uint32Array;
  /** Min-heap by count. */
  readonly heap: Entry[];
  readonly index: Map<number, Entry>;
  /** performance.now() when this sub-window started; -1 = not in use yet. */
  startedAt: number;
  samples: number;

  constructor() {
    this.sketch = new Uint32Array(DEPTH * WIDTH);
    this.heap = [];
    this.index = new Map();
    this.startedAt = -1;
    this.samples = 0;
  }

  reset(now: number): void {
    this.sketch.fill(0);
    this.heap.length = 0;
    this.index.clear();
    this.startedAt = now;
    this.samples = 0;
  }
}

export interface HotKeysOptions {
  /** How many keys to report. */
  k: number;
  /** Window length in seconds. */
  windowS: number;
  /** Fraction of keys sampled by the caller (counts are divided by it). */
  sampleRate: number;
  /** Clock in milliseconds (tests); default performance.now. Passing one also disables the rotation timer. */
  clock?: () => number;
}

export interface HotKey {
  key: Buffer;
  /** Estimated requests for the key in the window (sample counts divided by the sampling rate). */
  count: number;
  /** Estimated requests per second over the window. */
  rate: number;
}

export interface HotKeysSnapshot {
  /** Seconds the live sub-windows cover (at most the window). */
  seconds: number;
  /** Keys sampled in the window. */
  samples: number;
  keys: HotKey[];
}

export class HotKeys {
  readonly k: number;
  readonly windowS: number;
  readonly sampleRate: number;
  /** Candidates kept per sub-window. */
  readonly capacity: number;
  /** ADMIT_FACTOR * capacity. */
  private readonly admitShare: number;
  private readonly buckets: Bucket[];
  private current: Bucket;
  private currentIndex: number;
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | null;

  constructor(options: HotKeysOptions) {
    this.k = options.k;
    this.windowS = options.windowS;
    this.sampleRate = options.sampleRate;
    this.capacity = Math.max(2 * options.k, options.k + 16);
    this.admitShare = ADMIT_FACTOR * this.capacity;
    this.clock = options.clock ?? (() => performance.now());
    this.buckets = [];
    for (let i = 0; i < BUCKETS; i++) this.buckets.push(new Bucket());
    this.currentIndex = 0;
    this.current = this.buckets[0];
    this.current.reset(this.clock());
    this.timer = null;
    if (options.clock === undefined) {
      this.timer = setInterval(() => this.rotate(), (options.windowS * 1000) / BUCKETS);
      this.timer.unref();
    }
  }

  /** Counts one (sampled) request for `key`. The hot path: no allocation unless the key becomes a candidate. */
  record(key: Buffer): void {
    let h = 0x811c9dc5 | 0;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193);
    let h2 = h ^ (h >>> 16);
    h2 = Math.imul(h2, 0x85ebca6b);
    h2 ^= h2 >>> 13;
    h2 = Math.imul(h2, 0xc2b2ae35);
    h2 = (h2 ^ (h2 >>> 16)) | 1;
    const b = this.current;
    b.samples++;
    const sk = b.sketch;
    let est = 0xffffffff;
    for (let d = 0; d < DEPTH; d++) {
      const v = ++sk[d * WIDTH + ((h + Math.imul(d, h2)) & MASK)];
      if (v < est) est = v;
    }
    const heap = b.heap;
    const e = b.index.get(h);
    if (e !== undefined) {
      e.count = est;
      siftDown(heap, e.pos);
      return;
    }
    // Admission: only a key with at least 1/ADMIT_SHARE of the sub-window's samples becomes a candidate. This keeps
    // a flat key space (where no key is hot) from churning the heap, and cannot keep out a key that is hot.
    if (est * this.admitShare < b.samples) return;
    if (heap.length < this.capacity) {
      const entry = new Entry(h, Buffer.from(key), est, heap.length);
      heap.push(entry);
      b.index.set(h, entry);
      siftUp(heap, entry.pos);
      return;
    }
    const min = heap[0];
    if (est <= min.count) return;
    b.index.delete(min.hash);
    min.hash = h;
    min.key = Buffer.from(key);
    min.count = est;
    b.index.set(h, min);
    siftDown(heap, 0);
  }

  /** Starts the next sub-window, dropping the oldest (the timer calls this every windowS / BUCKETS seconds). */
  rotate(): void {
    this.currentIndex = (this.currentIndex + 1) % BUCKETS;
    this.current = this.buckets[this.currentIndex];
    this.current.reset(this.clock());
  }

  /** The current top K, largest first. */
  top(): HotKeysSnapshot {
    const now = this.clock();
    const merged = new Map<number, { key: Buffer; count: number }>();
    let oldest = now;
    let samples = 0;
    for (const b of this.buckets) {
      if (b.startedAt < 0) continue;
      if (b.startedAt < oldest) oldest = b.startedAt;
      samples += b.samples;
      for (const e of b.heap) {
        const m = merged.get(e.hash);
        if (m === undefined) merged.set(e.hash, { key: e.key, count: e.count });
        else m.count += e.count;
      }
    }
    const seconds = Math.max((now - oldest) / 1000, 0.001);
    const sorted = [...merged.values()]
      .sort((a, b) => b.count - a.count || Buffer.compare(a.key, b.key))
      .slice(0, this.k);
    const scale = 1 / this.sampleRate;
    return {
      seconds,
      samples,
      keys: sorted.map((m) => ({ key: m.key, count: m.count * scale, rate: (m.count * scale) / seconds })),
    };
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}

function siftUp(heap: Entry[], pos: number): void {
  const e = heap[pos];
  while (pos > 0) {
    const parent = (pos - 1) >> 1;
    const p = heap[parent];
    if (p.count <= e.count) break;
    heap[pos] = p;
    p.pos = pos;
    pos = parent;
  }
  heap[pos] = e;
  e.pos = pos;
}

function siftDown(heap: Entry[], pos: number): void {
  const n = heap.length;
  const e = heap[pos];
  for (;;) {
    let child = 2 * pos + 1;
    if (child >= n) break;
    if (child + 1 < n && heap[child + 1].count < heap[child].count) child++;
    const c = heap[child];
    if (c.count >= e.count) break;
    heap[pos] = c;
    c.pos = pos;
    pos = child;
  }
  heap[pos] = e;
  e.pos = pos;
}

/** How keys are shown outside keymux: the key itself, or a hash of it (config metrics.hot_keys.export). */
export type KeyExport = 'key' | 'hash';

/** Longest key text shown; longer keys are cut and get a hash suffix so distinct keys stay distinct. */
const MAX_KEY_TEXT = 200;

/**
 * The text shown for a key in /metrics labels and /hotkeys: for 'hash', the first 16 hex digits of the SHA-256
 * of the key bytes; for 'key', the key as UTF-8 when it is valid UTF-8 without control characters, otherwise
 * with every byte outside printable ASCII written as \xHH (so binary keys stay distinct and readable).
 */
export function keyText(key: Buffer, mode: KeyExport): string {
  if (mode === 'hash') return keyHash(key);
  const utf8 = key.toString('utf8');
  let text =
    !utf8.includes('\ufffd') && !/[\u0000-\u001f\u007f]/.test(utf8) && !utf8.includes('\\') ? utf8 : escapeBytes(key);
  if (text.length > MAX_KEY_TEXT) text = `${text.slice(0, MAX_KEY_TEXT)}…#${keyHash(key)}`;
  return text;
}

export function keyHash(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

function escapeBytes(key: Buffer): string {
  let out = '';
  for (const byte of key) {
    out +=
      byte >= 0x20 && byte < 0x7f && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}
