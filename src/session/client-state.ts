/**
 * SessionState: one client's connection-bound state that keymux keeps for it (created on its first MULTI, WATCH
 * or blocking command; null for every other client): the transaction being queued (MULTI ... EXEC), the lease
 * holding its WATCHes, and the lease with a command in flight (an EXEC batch, a blocked command, a WATCH).
 * Invariants:
 * - `queuedBytes` is the size of the queued frames, reported (onQueuedBytes) on every change, so the client
 *   session counts them as held bytes under limits.max_buffered_bytes until EXEC, DISCARD, RESET or the client
 *   leaves;
 * - a transaction is bound to one router group (shard in slots/ring mode, slot in cluster mode): the group of
 *   its WATCHed keys, else of its first keyed command; -1 until known;
 * - `busy` is set exactly while a command of this client is at a leased connection; if the client leaves then,
 *   that connection is destroyed, never reused (whatever it was doing belongs to a client that is gone);
 * - the WATCH lease is given back (with UNWATCH) on EXEC, DISCARD, UNWATCH, RESET, or when the client leaves;
 * - `group` and `watchGroup` are groups of `topo`, the snapshot they were found with; after a reload the session
 *   finds them again in the new one before it compares or uses them (dispatch/session.ts rebaseTransaction);
 * - `waiting` is set exactly while a WAIT of this client holds leases; if the client leaves then, they are closed.
 */
import type { CommandSpec } from '../commands/spec.js';
import type { AccessControl } from '../security/acl.js';
import type { Topology } from '../routing/topology.js';
import type { Lease, SessionPools } from './session-pool.js';

/** One command queued between MULTI and EXEC. */
export interface QueuedCommand {
  readonly frame: Buffer;
  readonly args: Buffer[];
  readonly spec: CommandSpec;
  /** Answered by keymux at EXEC time (PING, ECHO, CLIENT ...), in its place in the EXEC array. */
  readonly local: boolean;
  /** A reply fixed at queue time (UNWATCH inside MULTI: +OK), or null. */
  readonly fixed: Buffer | null;
  /**
   * CONFIG SET / RESETSTAT with commands.config_broadcast: it runs in the transaction on its shard and, once that
   * shard answered +OK, on every other shard before EXEC is answered (dispatch/session.ts TransactionRun).
   */
  readonly everywhere?: boolean;
  /** Its reply as the client gets it, from the shard's (CONFIG GET: without the secrets, dispatch/config.ts). */
  readonly reshape?: (reply: Buffer) => Buffer;
}

export class SessionState {
  /** MULTI was answered and EXEC/DISCARD has not come yet. */
  inMulti: boolean;
  /** A command was refused while queuing: EXEC answers EXECABORT. */
  dirty: boolean;
  /**
   * The MULTI itself was refused (commands.deny): every command up to EXEC or DISCARD is refused too, so nothing
   * meant to run atomically runs on its own; EXEC answers EXECABORT.
   */
  refused: boolean;
  /** The transaction's router group (-1: none yet). */
  group: number;
  /**
   * The users and rules its commands were checked against when queued (the ACL of MULTI's time; null: none): a
   * reload that compiled new ones before EXEC has them checked again (dispatch/session.ts exec).
   */
  checkedWith: AccessControl | null;
  queued: QueuedCommand[];
  /** Queued commands that go to the shard (the rest are answered locally). */
  remoteCount: number;
  /**
   * Bytes of the queued commands' frames: held for the client until EXEC or DISCARD, so they count towards
   * limits.max_buffered_bytes like an unfinished command (reported through onQueuedBytes).
   */
  queuedBytes: number;
  /** The lease holding this client's WATCHes, and the group of the watched keys. */
  watchLease: Lease | null;
  watchGroup: number;
  /** The keys of this client's WATCHes (owned bytes: the WATCH requests'), while it holds a WATCH lease. */
  watchKeys: Buffer[];
  /** The snapshot `group` and `watchGroup` belong to (null: neither is set). */
  topo: Topology | null;
  /**
   * A reload moved keys of the transaction off its node: with WATCH, EXEC answers a null reply (as when a watched
   * key changed); without, they are now on different shards and EXEC answers EXECABORT. Nothing is run.
   */
  stale: boolean;
  /** A lease with a command of this client in flight. */
  busy: Lease | null;
  /** That command is a blocking one (the client is blocked) or an isolated script: if the client leaves, cut it at once. */
  blocking: boolean;
  /** A WAIT of this client in progress (its leases, one per shard it waits on: server/dispatch/wait.ts), or null. */
  waiting: { clientGone(): void } | null;
  private readonly pools: SessionPools;
  private readonly clientId: number;
  /** Told queuedBytes whenever it changes (the client session reports it to the limits). */
  private readonly onQueuedBytes: (bytes: number) => void;

  constructor(pools: SessionPools, clientId: number, onQueuedBytes: (bytes: number) => void = () => undefined) {
    this.inMulti = false;
    this.dirty = false;
    this.refused = false;
    this.group = -1;
    this.checkedWith = null;
    this.queued = [];
    this.remoteCount = 0;
    this.queuedBytes = 0;
    this.watchLease = null;
    this.watchGroup = -1;
    this.watchKeys = [];
    this.topo = null;
    this.stale = false;
    this.busy = null;
    this.blocking = false;
    this.waiting = null;
    this.pools = pools;
    this.clientId = clientId;
    this.onQueuedBytes = onQueuedBytes;
  }

  /**
   * Starts queuing (MULTI), its commands checked against `checkedWith`. The transaction is bound to the watched
   * keys' group, if any.
   */
  begin(checkedWith: AccessControl | null): void {
    this.inMulti = true;
    this.checkedWith = checkedWith;
    this.dirty = false;
    this.refused = false;
    this.group = this.watchGroup;
    this.dropQueue();
  }

  /** A command queued (answered +QUEUED); `remote`: it goes to the shard. */
  enqueue(q: QueuedCommand, remote: boolean): void {
    this.queued.push(q);
    if (remote) this.remoteCount++;
    this.queuedBytes += q.frame.length;
    this.onQueuedBytes(this.queuedBytes);
  }

  private dropQueue(): void {
    this.queued = [];
    this.remoteCount = 0;
    if (this.queuedBytes === 0) return;
    this.queuedBytes = 0;
    this.onQueuedBytes(0);
  }

  /** A refused MULTI: refuse what follows up to EXEC/DISCARD, then abort (see `refused`). */
  beginRefused(): void {
    this.begin(null);
    this.dirty = true;
    this.refused = true;
  }

  /** Ends queuing (EXEC, DISCARD) and returns what was queued. */
  take(): QueuedCommand[] {
    const q = this.queued;
    this.inMulti = false;
    this.dirty = false;
    this.refused = false;
    this.group = -1;
    this.checkedWith = null;
    this.dropQueue(); // EXEC's run holds `q` now, and lets it go once answered
    if (this.watchLease === null) {
      this.topo = null;
      this.stale = false;
    }
    return q;
  }

  /** Gives back the WATCH lease (UNWATCH is sent on it first: see Lease.release). */
  endWatch(): void {
    const lease = this.watchLease;
    this.watchLease = null;
    this.watchGroup = -1;
    this.watchKeys = [];
    if (!this.inMulti) {
      this.topo = null;
      this.stale = false;
    }
    if (lease !== null && lease !== this.busy) lease.release();
  }

  /** EXEC: the WATCH lease (or null) goes to the transaction, which gives it back (EXEC unwatches). */
  takeWatch(): Lease | null {
    const lease = this.watchLease;
    this.watchLease = null;
    this.watchGroup = -1;
    this.watchKeys = [];
    this.topo = null;
    this.stale = false;
    return lease;
  }

  /** RESET: no transaction, no WATCH (nothing is in flight: RESET waits behind a busy command). */
  reset(): void {
    this.take();
    this.endWatch();
  }

  /** The client left: a connection with something in flight is closed; the WATCH lease is given back. */
  clientGone(): void {
    this.take();
    this.pools.blocked.delete(this.clientId);
    const busy = this.busy;
    this.busy = null;
    this.blocking = false;
    if (busy !== null) busy.destroy();
    if (this.watchLease === busy) this.watchLease = null;
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting !== null) waiting.clientGone();
    this.endWatch();
  }
}
