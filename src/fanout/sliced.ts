/**
 * Large fan-outs in slices. An MGET, DEL, EXISTS, TOUCH, UNLINK or MSET of more than SLICE_ABOVE_KEYS keys is not
 * split, sent and merged in one go (a million keys took keymux most of a second of uninterrupted work and hundreds
 * of MB, stalling every other client): its keys are taken SLICE_KEYS at a time, in the client's order; each slice
 * is split per shard and sent as its own fragments, one slice per event-loop turn (setImmediate), so other
 * clients' commands are read, routed and answered in between; at most WINDOW slices are at the shards at once, so
 * the replies held in keymux are bounded by the window, not by the command. A slice's replies are merged as soon
 * as they are all in (its values kept as one buffer in key order, or a partial sum), and the client gets one reply,
 * exactly the one the unsliced path gives (the first error of any part, never a partial answer).
 * Order: the client's later commands are held (not routed) until every slice has been sent; each slice goes to a
 * shard on the client's own connection of that shard's pool, so a later command to a key can never overtake the
 * slice that reads or writes it. Keys already sent are dropped from the request's argument list as it goes (the
 * first few stay for the slow log), so the per-key views the parser built are freed while the command runs.
 * Only slots and ring modes slice (cluster mode has per-slot ordering fences and retries; it keeps the one-go
 * path), and a fan-out does not start slicing while a migration is moving keys.
 * Reloads: no slice is routed by a topology older than the proxy's current one. A reload swaps the topology and a
 * migration's fence covers only what was sent before the swap, so a slice routed afterwards by the old snapshot
 * could write a key on an owner the migration has already scanned (a lost write). Before each slice the current
 * snapshot is compared with the one the fan-out routes by (one comparison when nothing changed); when it changed,
 * the fan-out waits for its slices still at the shards (as the session's topology fence does: a new pool may be
 * another connection to the same shard), then routes the rest by the new snapshot. While that snapshot's
 * migration is active, a slice whose keys are still on their old owners has them moved first (Migration.moveThen,
 * as a fresh request's holdForMigration does) and is routed again afterwards; a failed move answers that slice
 * TRYAGAIN (the command's reply, as any part's error is). Slices stay in the client's order throughout: none is
 * sent while an earlier one waits, so a key given twice keeps its last value.
 * Each slice is a Request of its own whose owner is the SlicedFanout (a RequestOwner), so backend connections,
 * fragments and merges work unchanged; backpressure calls are passed on to the client's session.
 */
import { Request, argAt, type RequestOwner, type RoutedUnit } from '../core/request.js';
import { Fragment } from '../core/fragment.js';
import type { CommandSpec, FanoutShape } from '../commands/spec.js';
import type { Topology } from '../routing/topology.js';
import type { Migration } from '../migration/migration.js';
import type { MergeFn } from '../core/fragment.js';
import { ERR_FANOUT_UNEXPECTED, ERR_MIGRATION_FAILED, ERR_SLOT_NOT_SERVED } from '../errors.js';
import { isErrorFrame, isOkFrame, readInteger } from '../resp/reply-reader.js';
import { arrayHeader, integerReply, OK } from '../resp/writer.js';

/** Fan-outs with more keys than this are sliced; smaller ones keep the one-go path, unchanged. */
export const SLICE_ABOVE_KEYS = 1024;
/** Keys per slice (a few ms of routing and merging). */
const SLICE_KEYS = 8192;
/** Slices at the shards at once. */
const WINDOW = 4;
/** Arguments kept in req.args after slicing (the slow log shows the first 16 keys). */
const KEEP_ARGS = 64;

const EMPTY = Buffer.alloc(0);
const CRLF_BYTES = 2;

/** What the sliced path needs from the client session (a subset of DispatchSession). */
export interface SlicingSession extends RequestOwner {
  /** `topology`: the proxy's current snapshot (read before each slice). */
  readonly ctx: { readonly topology: Topology; onKeyRouted(key: Buffer): void };
  /** Holds the client's later commands (not routed) until releaseLater(). */
  holdLater(): void;
  releaseLater(): void;
}

/** Sends a slice's fragments to their shards through `topo`'s pools (dispatch/fanout.ts sendFragments). */
export type SendFragments = (fragments: Fragment[], topo: Topology) => void;

type Combine = 'mget' | 'sum' | 'all-ok';

export class SlicedFanout implements RequestOwner {
  readonly id: number;
  private readonly session: SlicingSession;
  private readonly send: SendFragments;
  private readonly req: Request;
  private readonly spec: CommandSpec;
  /** The snapshot slices are routed by: the one the fan-out started with until a reload (routeAgain). */
  private topo: Topology;
  /**
   * The snapshot a slice may be routed by with no further check: `topo` while it has no active migration, else
   * null (never the current snapshot, so each slice goes through routeAgain).
   */
  private settled: Topology | null;
  private readonly stride: number;
  private readonly keyCount: number;
  private readonly merge: MergeFn;
  private readonly combine: Combine;
  /** Next key ordinal to send. */
  private next: number;
  private inFlight: number;
  private slicesLeft: number;
  private scheduled: boolean;
  /** The next slice waits for its keys to be moved (a migration); nothing is sent meanwhile. */
  private holding: boolean;
  /** The next slice's answer instead of sending it (its keys could not be moved). */
  private refusal: Buffer | null;
  private released: boolean;
  /** mget: each slice's values (no array header), by slice index. */
  private readonly parts: Buffer[];
  private sum: number;
  private failed: Buffer | null;

  constructor(
    session: SlicingSession,
    req: Request,
    spec: CommandSpec,
    topo: Topology,
    shape: FanoutShape,
    merge: MergeFn,
    send: SendFragments,
  ) {
    this.id = session.id;
    this.session = session;
    this.send = send;
    this.req = req;
    this.spec = spec;
    this.topo = topo;
    this.settled = topo;
    this.stride = shape === 'key-value' ? 2 : 1;
    this.keyCount = (req.args.length - 1) / this.stride;
    this.merge = merge;
    this.combine = spec.merge === 'sum' ? 'sum' : spec.merge === 'all-ok' ? 'all-ok' : 'mget';
    this.next = 0;
    this.inFlight = 0;
    this.slicesLeft = Math.ceil(this.keyCount / SLICE_KEYS);
    this.scheduled = false;
    this.holding = false;
    this.refusal = null;
    this.released = false;
    this.parts = new Array<Buffer>(this.slicesLeft);
    this.sum = 0;
    this.failed = null;
    this.pump = this.pump.bind(this);
  }

  /** Sends the first slice now and the rest one per turn; the client's later commands wait until all are sent. */
  start(): void {
    this.session.holdLater();
    this.pump();
  }

  private pump(): void {
    this.scheduled = false;
    if (this.holding) return; // the move's callback pumps again
    // A slice that must wait (earlier slices before a new topology, or a move) is sent by a later pump.
    if (this.next < this.keyCount && this.inFlight < WINDOW && !this.sendSlice()) return;
    if (this.next >= this.keyCount) {
      if (!this.released) {
        this.released = true;
        this.session.releaseLater();
      }
    } else if (this.inFlight < WINDOW) this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.pump);
  }

  /** Routes and sends the next slice; false when it must wait (and is sent by a later pump). */
  private sendSlice(): boolean {
    const current = this.session.ctx.topology;
    if (current !== this.settled && !this.routeAgain(current)) return false;
    const topo = this.topo;
    const req = this.req;
    const args = req.args;
    const stride = this.stride;
    const from = this.next;
    const to = Math.min(this.keyCount, from + SLICE_KEYS);
    this.next = to;
    const index = Math.floor(from / SLICE_KEYS);
    const router = topo.router;
    const groups = new Map<number, number[]>();
    for (let i = from; i < to; i++) {
      const key = argAt(req, 1 + i * stride);
      this.session.ctx.onKeyRouted(key);
      const g = router.groupFor(key);
      const list = groups.get(g);
      if (list === undefined) groups.set(g, [i - from]);
      else list.push(i - from);
    }
    const slice = new Request(this, EMPTY, args, req.startedAt, req.seq);
    slice.spec = this.spec;
    slice.mergeContext = index;
    const fragments: Fragment[] = [];
    for (const [group, ordinals] of groups) {
      const shard = router.shardOfGroup(group);
      const frame = fragmentFrame(req, 1 + from * stride, ordinals, stride);
      fragments.push(new Fragment(slice, shard, ordinals, frame, this.merge, group));
    }
    slice.fragments = fragments;
    slice.remaining = fragments.length;
    // Views of the keys just encoded are no longer needed (the first few stay for the slow log).
    if (req.argOffsets === null)
      for (let a = Math.max(KEEP_ARGS, 1 + from * stride); a < 1 + to * stride; a++) args[a] = EMPTY;
    this.inFlight++;
    let refusal = this.refusal;
    this.refusal = null;
    if (refusal === null)
      for (const f of fragments)
        if (topo.shards[f.shard] === undefined) {
          refusal = ERR_SLOT_NOT_SERVED;
          break;
        }
    if (refusal !== null) {
      for (const g of fragments) g.deliver(refusal); // nothing of this slice is sent
      return true;
    }
    this.send(fragments, topo);
    return true;
  }

  /**
   * Slow path, after a reload or while the current snapshot's migration is active: true when the next slice may
   * be routed by `this.topo` now. A newer snapshot is taken once no slice of the old one is at the shards (the
   * migration's fence covers those; onRequestDone pumps again). Keys of the slice still on their old owners are
   * moved first, as for a fresh request (client-session.ts holdForMigration); then the slice is routed again,
   * through whatever snapshot is current by then.
   */
  private routeAgain(current: Topology): boolean {
    if (this.refusal !== null) return true;
    if (current !== this.topo) {
      if (this.inFlight > 0) return false;
      this.topo = current;
    }
    const migration = current.migration;
    if (migration === null || !migration.active) {
      this.settled = current;
      return true;
    }
    this.settled = null;
    const keys = this.keysToMove(migration);
    if (keys === null) return true;
    this.holding = true;
    migration.moveThen(keys, (ok) => {
      this.holding = false;
      if (!ok) this.refusal = ERR_MIGRATION_FAILED;
      this.schedule();
    });
    return false;
  }

  /** The next slice's keys that `migration` has still to move (null: none). */
  private keysToMove(migration: Migration): Buffer[] | null {
    const req = this.req;
    const stride = this.stride;
    const to = Math.min(this.keyCount, this.next + SLICE_KEYS);
    let keys: Buffer[] | null = null;
    for (let i = this.next; i < to; i++) {
      const key = argAt(req, 1 + i * stride);
      if (migration.needsMove(key)) (keys ??= []).push(key);
    }
    return keys;
  }

  // ---- RequestOwner: a slice is answered; backpressure goes to the session ----------------------------------

  onRequestDone(slice: Request): void {
    const reply = slice.reply as Buffer;
    slice.fragments = null;
    this.inFlight--;
    if (this.failed === null) {
      if (isErrorFrame(reply)) this.failed = reply;
      else if (this.combine === 'mget') {
        const header = reply.indexOf(10) + 1; // the slice's own "*n\r\n"
        if (reply[0] !== 42 || header <= 0) this.failed = ERR_FANOUT_UNEXPECTED;
        else this.parts[slice.mergeContext as number] = reply.subarray(header);
      } else if (this.combine === 'sum') {
        const n = readInteger(reply);
        if (n === null) this.failed = ERR_FANOUT_UNEXPECTED;
        else this.sum += n;
      } else if (!isOkFrame(reply)) this.failed = ERR_FANOUT_UNEXPECTED;
    }
    if (--this.slicesLeft === 0) {
      this.req.deliver(this.failed ?? this.finalReply());
      return;
    }
    if (this.next < this.keyCount) this.schedule();
  }

  private finalReply(): Buffer {
    if (this.combine === 'sum') return integerReply(this.sum);
    if (this.combine === 'all-ok') return OK;
    const header = arrayHeader(this.keyCount);
    let size = header.length;
    for (const p of this.parts) size += p.length;
    const out = Buffer.allocUnsafe(size);
    let at = header.copy(out, 0);
    for (let i = 0; i < this.parts.length; i++) {
      at += this.parts[i].copy(out, at);
      this.parts[i] = EMPTY;
    }
    return out;
  }

  onFencedUnitDone(unit: RoutedUnit): void {
    this.session.onFencedUnitDone(unit);
  }

  retryInOrder(unit: RoutedUnit, delayMs: number): void {
    this.session.retryInOrder(unit, delayMs);
  }

  holdRedirect(unit: RoutedUnit): boolean {
    return this.session.holdRedirect(unit);
  }

  backendFull(): void {
    this.session.backendFull();
  }

  backendDrained(): void {
    this.session.backendDrained();
  }
}

/**
 * One fragment's frame: the command name, then for each ordinal its `stride` arguments starting at
 * args[base + ordinal * stride], encoded into one buffer sized up front (no per-key header buffers).
 */
function fragmentFrame(req: Request, base: number, ordinals: number[], stride: number): Buffer {
  const name = req.args[0];
  const argc = 1 + ordinals.length * stride;
  const o = req.argOffsets;
  let size = 1 + decimalLength(argc) + CRLF_BYTES + bulkSize(name.length);
  for (const ord of ordinals)
    for (let j = 0; j < stride; j++) {
      const a = base + ord * stride + j;
      size += bulkSize(o !== null ? o[2 * a + 1] - o[2 * a] : req.args[a].length);
    }
  const out = Buffer.allocUnsafe(size);
  out[0] = 42; // *
  let p = writeDecimal(out, 1, argc);
  p = writeBulk(out, p, name, 0, name.length);
  const frame = req.frame;
  for (const ord of ordinals)
    for (let j = 0; j < stride; j++) {
      const a = base + ord * stride + j;
      // Lazily viewed arguments are copied straight from the client's frame (no view per argument).
      if (o !== null) p = writeBulk(out, p, frame, o[2 * a], o[2 * a + 1]);
      else p = writeBulk(out, p, req.args[a], 0, req.args[a].length);
    }
  return out;
}

function bulkSize(n: number): number {
  return 1 + decimalLength(n) + CRLF_BYTES + n + CRLF_BYTES;
}

function writeBulk(out: Buffer, p: number, src: Buffer, start: number, end: number): number {
  out[p] = 36; // $
  p = writeDecimal(out, p + 1, end - start);
  p += src.copy(out, p, start, end);
  out[p] = 13;
  out[p + 1] = 10;
  return p + 2;
}

/** Writes n (>= 0) then CRLF at p; returns the position after them. */
function writeDecimal(out: Buffer, p: number, n: number): number {
  const len = decimalLength(n);
  for (let i = len - 1; i >= 0; i--) {
    out[p + i] = 48 + (n % 10);
    n = Math.floor(n / 10);
  }
  out[p + len] = 13;
  out[p + len + 1] = 10;
  return p + len + 2;
}

function decimalLength(n: number): number {
  let len = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    len++;
  }
  return len;
}
