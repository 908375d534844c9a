/**
 * Request: one client command from parse to reply. A fixed-shape object (every field set in the constructor)
 * with a slot for its reply: whoever answers it (a backend connection, the fan-out merger, a local handler)
 * calls `deliver(frame)`, and the owning session writes completed requests out in arrival order. No Promise and
 * no closure per request. A fan-out request owns its fragments and a countdown of those still outstanding.
 *
 * A request routed whole, and each fragment of a split one, is a RoutedUnit: it also carries the little state
 * cluster mode needs to keep one client's commands in order across retries and redirections (its sequence
 * number in the session, its slot, whether it is at a backend, waiting to be re-sent, or held by an ordering
 * fence: see server/order-fence.ts). Outside cluster mode those fields are set once and never read.
 */
import type { CommandSpec } from '../commands/spec.js';
import type { ShardPool } from '../backend/pool.js';
import type { Fragment } from './fragment.js';
import { viewOf } from './byte-view.js';
import type { ShardStats } from '../metrics/stats.js';

/** What a backend connection queues and answers: a Request, a Fragment, or a control-plane operation. */
export interface BackendOp {
  /** When the op's frame was written to the socket (performance.now()), for the timeout check and shard latency. */
  sentAt: number;
  /** The bytes sent for this op (re-sent as they are after a cluster redirection). */
  readonly frame: Buffer;
  /** Cluster redirections and retries this op has taken (bounded by cluster.max_redirections). */
  redirects: number;
  /** The client session's id: picks the connection of a pool, so one client's commands stay in order. */
  readonly sessionId: number;
  /**
   * A blocking command on a session connection: how much longer than the operation timeout the node may rightly
   * stay silent on it (its own timeout; Infinity: none, e.g. BLPOP k 0). Absent: an ordinary command.
   */
  readonly blockMs?: number;
  deliver(frame: Buffer): void;
}

/**
 * Where a routed unit is: not sent yet, at a backend (sent, unanswered), waiting to be re-sent after a retryable
 * error (it was not executed), or waiting to be re-sent after a redirection (MOVED/ASK: not executed either, and
 * nothing of the same slot can have run where it was sent, since that node does not hold the slot's keys).
 */
export const UNIT_NEW = 0;
export const UNIT_AT_BACKEND = 1;
export const UNIT_RETRYING = 2;
export const UNIT_REDIRECTED = 3;

/** A client's work as a backend sees it: a Request routed whole, or one Fragment of a split command. */
export interface RoutedUnit extends BackendOp {
  /** The client command's sequence number in its session (a fragment has its parent's). */
  readonly seq: number;
  /** The router group the unit was routed to (cluster mode: its slot); -1 when not routed by key (broadcast). */
  group: number;
  /** It carries two or more keys: in cluster mode the only kind of command a node answers -TRYAGAIN. */
  multiKey: boolean;
  /** UNIT_NEW, UNIT_AT_BACKEND, UNIT_RETRYING or UNIT_REDIRECTED. */
  state: number;
  /** Counted by an ordering fence of its session while at a backend (server/order-fence.ts). */
  fenced: boolean;
  /** Cluster mode: the node a MOVED or ASK named, for the re-send (null: route by slot when re-sent). */
  redirectTo: string | null;
  /** Cluster mode: the re-send to `redirectTo` follows an -ASK (ASKING goes first). */
  asking: boolean;
  /** Cluster mode: the error the client gets if the unit cannot be re-sent after all. */
  lastError: Buffer | null;
  /** The command only reads (may be served by a replica). */
  readonly reads: boolean;
  /** The command may write: flagged write, or a script (EVAL, FCALL; not *_RO). WAIT waits for these. */
  readonly writes: boolean;
  /**
   * The RESP version the client spoke when the unit was routed: it picks the pool's RESP2 connections or its
   * RESP3 twin (backend/pool.ts), and a re-send after a redirection keeps it even if the client switched since.
   */
  readonly protocol: number;
  /** It has its reply. */
  readonly answered: boolean;
  readonly owner: RequestOwner;
}

/**
 * Sees a request's reply before its session does: the near cache (src/nearcache/) fills itself from a read's reply
 * and answers the reads coalesced behind it, and ends a write's hold on its keys. One shared object or one per
 * read in flight, never a closure; null on every request the near cache does not take.
 */
export interface ReplyTap {
  onReply(req: Request, frame: Buffer): void;
}

/** Cluster mode: sends a unit again, to the node it was redirected to or to its slot's owner at that time. */
export interface Resender {
  resend(unit: RoutedUnit): void;
}

/** The session side of a request: told when a request has its reply, and (cluster mode) asked to order re-sends. */
export interface RequestOwner {
  readonly id: number;
  onRequestDone(req: Request): void;
  /** A unit counted by an ordering fence was answered. */
  onFencedUnitDone(unit: RoutedUnit): void;
  /**
   * Cluster mode: `unit` must be sent again after `delayMs` (TRYAGAIN, CLUSTERDOWN, a node down...). The session
   * re-sends it no earlier, and not before, nor after, the wrong ones of the client's other units for its slot.
   */
  retryInOrder(unit: RoutedUnit, delayMs: number): void;
  /**
   * Cluster mode: `unit` was redirected (MOVED/ASK). True when the session holds it behind an ordering fence of
   * its slot (it is re-sent from there, in order); false when it may be re-sent at once.
   */
  holdRedirect(unit: RoutedUnit): boolean;
  /** A backend connection this owner sent to holds its bound of operations: stop sending until backendDrained(). */
  backendFull(): void;
  /** That connection drained (called once per backendFull()). */
  backendDrained(): void;
  /**
   * Cluster mode: a unit of this owner that may write was re-sent (MOVED/ASK, retry) through `pool` (a master's
   * shared pool): WAIT must wait there too (server/dispatch/wait.ts). Absent: the owner does not track writes.
   */
  noteWrite?(pool: ShardPool): void;
}

/** Argument `i` of `req`, made from the frame when its view was not made (a command of many arguments). */
export function argAt(req: Request, i: number): Buffer {
  const a = req.args[i];
  if (a !== undefined) return a;
  const o = req.argOffsets as Uint32Array;
  return req.frame.subarray(o[2 * i], o[2 * i + 1]);
}

/** Makes every argument view of `req` (before code that reads req.args directly). */
export function materializeArgs(req: Request): void {
  const o = req.argOffsets;
  if (o === null) return;
  const args = req.args;
  const frame = req.frame;
  for (let i = 0; i < args.length; i++) if (args[i] === undefined) args[i] = frame.subarray(o[2 * i], o[2 * i + 1]);
  req.argOffsets = null;
}

/**
 * Gives `req` bytes of its own: its frame is copied and every argument view inside the frame is remade over the
 * copy (holes stay holes; argAt reads the copy). Client reads land in a shared 64 KiB pool (server/client-reads.ts)
 * and any view keeps the whole pool alive, which costs nothing for a request answered in a millisecond but 64 KiB
 * per request held for long: a blocking command (a fleet of queue workers each blocked for minutes), a WAIT, an
 * isolated script (the session's runAlone, which all of them go through), a command queued in a transaction, a command
 * held behind one of them. Those get this first, so each holds only its own bytes.
 */
export function ownBytes(req: Request): void {
  const frame = req.frame;
  const memory = frame.buffer;
  if (memory.byteLength === frame.length) return; // already alone in its memory
  const start = frame.byteOffset;
  const end = start + frame.length;
  const own = new ArrayBuffer(frame.length);
  new Uint8Array(own).set(frame);
  const args = req.args;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a !== undefined && a.buffer === memory && a.byteOffset >= start && a.byteOffset + a.length <= end) {
      args[i] = viewOf(own, a.byteOffset - start, a.length);
    }
  }
  req.frame = viewOf(own, 0, frame.length);
}

export class Request implements RoutedUnit {
  owner: RequestOwner;
  /** The client's frame bytes (forwarded unchanged for single-shard commands). */
  frame: Buffer;
  /**
   * Argument views into `frame`; args[0] is the command name. A command of thousands of arguments has only its
   * first views made (the rest are holes) until materializeArgs(); argAt() reads any argument either way.
   */
  args: Buffer[];
  /** For such a command: every argument's [start, end) in `frame`; null once all views exist. */
  argOffsets: Uint32Array | null;
  spec: CommandSpec | null;
  /** The reply frame once known. */
  reply: Buffer | null;
  done: boolean;
  /** Close the client connection after this reply is written (QUIT, protocol error). */
  closeAfter: boolean;
  /** The reply is not written (CLIENT REPLY OFF / SKIP); the request still runs and completes in order. */
  silent: boolean;
  startedAt: number;
  sentAt: number;
  /** Index of the shard the request went to (-1: local, fan-out, or not routed). */
  shard: number;
  /** Counters of that shard (kept here so a reload in between cannot misattribute the reply). */
  shardStats: ShardStats | null;
  fragments: Fragment[] | null;
  remaining: number;
  /** Opaque context for merges that need it (INFO, DBSIZE): set by the dispatcher. */
  mergeContext: unknown;
  redirects: number;
  readonly seq: number;
  group: number;
  multiKey: boolean;
  state: number;
  fenced: boolean;
  redirectTo: string | null;
  asking: boolean;
  lastError: Buffer | null;
  /** RESP version of the client when routed (set by the session at dispatch; see RoutedUnit). */
  protocol: number;
  /** The near cache's hook on this request's reply (null: none). */
  tap: ReplyTap | null;
  /** A number the tap keeps with the request (the near cache: a write's hold slot), -1 when unused. */
  tapIndex: number;

  constructor(owner: RequestOwner, frame: Buffer, args: Buffer[], startedAt: number, seq: number) {
    this.owner = owner;
    this.frame = frame;
    this.args = args;
    this.argOffsets = null;
    this.spec = null;
    this.reply = null;
    this.done = false;
    this.closeAfter = false;
    this.silent = false;
    this.startedAt = startedAt;
    this.sentAt = 0;
    this.shard = -1;
    this.shardStats = null;
    this.fragments = null;
    this.remaining = 0;
    this.mergeContext = null;
    this.redirects = 0;
    this.seq = seq;
    this.group = -1;
    this.multiKey = false;
    this.state = UNIT_NEW;
    this.fenced = false;
    this.redirectTo = null;
    this.asking = false;
    this.lastError = null;
    this.protocol = 2;
    this.tap = null;
    this.tapIndex = -1;
  }

  get sessionId(): number {
    return this.owner.id;
  }

  get reads(): boolean {
    // EVALSHA_RO: replicas may lack its script (server/dispatch/one-shard.ts sendToShard); re-sent to the primary.
    return this.spec !== null && this.spec.readonly && this.spec.name !== 'evalsha_ro';
  }

  get writes(): boolean {
    return this.spec !== null && mayWrite(this.spec);
  }

  get answered(): boolean {
    return this.done;
  }

  deliver(frame: Buffer): void {
    if (this.done) return; // a late answer after a timeout or reset is dropped, never misdelivered
    this.reply = frame;
    this.done = true;
    if (this.tap !== null) this.tap.onReply(this, frame);
    if (this.fenced) this.owner.onFencedUnitDone(this);
    this.owner.onRequestDone(this);
  }
}

/** Flagged write, or a script that is not read-only (EVAL, EVALSHA, FCALL: Redis flags them neither way). */
export function mayWrite(spec: CommandSpec): boolean {
  return spec.write || (!spec.readonly && spec.aclCategories?.includes('@scripting') === true);
}
