/**
 * WAIT numreplicas timeout: blocks until the client's earlier writes are acknowledged by at least numreplicas
 * replicas of every shard they went to, or timeout ms pass (0: for ever); the reply is the smallest number of
 * replicas that acknowledged them on any of those shards (one integer, as Redis answers).
 *
 * Why not forward WAIT: Redis measures WAIT against the offset of the *connection's* last write, and a client's
 * writes went over shared pipelined connections (one per shard), so WAIT there would block every client pipelined
 * behind it and measure the other clients' writes. Instead:
 * - the session notes, per client, the shard pools it sent a command that is not read-only to since its last WAIT
 *   (ClientSession.sendUnit: one boolean test per command, and one comparison per write; leased writes, EXEC and
 *   blocking pops, are noted by their handlers; cluster mode: a write re-sent after MOVED/ASK, by cluster.ts);
 * - WAIT runs alone in the client's order (runAlone): it starts once the client's earlier commands are answered,
 *   so their writes are in each master's replication stream, and later commands wait for it;
 * - for each written shard it leases a session connection (src/session/session-pool.ts, as blocking commands do)
 *   and marks the replication offset there with a propagated write that leaves nothing behind: MULTI, SET
 *   `__keymux:wait` 1, DEL `__keymux:wait`, EXEC (cluster mode: the key carries a {tag} of a slot that master
 *   serves). That connection's own write offset is then at or past the client's writes, so Redis's own WAIT on it
 *   (the client's numreplicas and timeout, unchanged) gives Redis's exact semantics and speed: the master asks its
 *   replicas for an acknowledgement at once (REPLCONF GETACK) instead of waiting for their once-a-second ACK;
 * - a client that wrote nothing since its last WAIT (or ever) gets Redis's answer for a connection that wrote
 *   nothing: the replicas online (each shard's INFO replication, over the shared connection; the smallest), at
 *   once when that reaches numreplicas, else from its WAIT on a leased connection of every shard (blocking for the
 *   timeout, or until enough replicas are online, as Redis does).
 * The shards are waited on in parallel, so the timeout holds overall (plus a round trip). Only the client's leases
 * block; the shared connections keep serving everyone else. A client that leaves mid-WAIT closes its leases (the
 * WAIT's timeout is the shards'; backend.timeout_ms counts on top of it, so a shard that stops answering fails the
 * WAIT with the timeout error, and the marks are timed as any command); drain and CLIENT UNBLOCK unblock each shard's WAIT
 * (the client then gets the counts reached so far, as Redis answers an unblocked WAIT).
 */
import { parseInteger } from '../../commands/keys.js';
import type { BackendOp, Request } from '../../core/request.js';
import type { ShardPool } from '../../backend/pool.js';
import { errorReply } from '../../errors.js';
import { readInteger } from '../../resp/reply-reader.js';
import { commandFrame, integerReply } from '../../resp/writer.js';
import { keySlot } from '../../routing/crc16.js';
import type { Topology } from '../../routing/topology.js';
import type { SessionState } from '../../session/client-state.js';
import { Lease, SideOp, type BlockedCall } from '../../session/session-pool.js';
import type { DispatchHandler, DispatchSession } from './types.js';

const ERR_NOT_INTEGER = errorReply('ERR value is not an integer or out of range');
const ERR_TIMEOUT_NOT_INTEGER = errorReply('ERR timeout is not an integer or out of range');
const ERR_TIMEOUT_NEGATIVE = errorReply('ERR timeout is negative');
const MULTI_FRAME = commandFrame(['MULTI']);
const EXEC_FRAME = commandFrame(['EXEC']);
/** The key whose SET + DEL marks the replication offset (slots and ring modes; cluster mode adds a {tag}). */
const MARK_KEY = '__keymux:wait';
const MARK_FRAMES = markFrames(MARK_KEY);
const INFO_REPLICATION = commandFrame(['INFO', 'replication']);
/** How INFO replication lists a replica that is online (the ones Redis's WAIT counts). */
const ONLINE = Buffer.from(',state=online,');

export const dispatchWait: DispatchHandler = (session, req, _spec, topo) => {
  const args = req.args;
  const numreplicas = parseInteger(args[1]);
  if (Number.isNaN(numreplicas)) {
    req.deliver(ERR_NOT_INTEGER);
    return;
  }
  const timeout = parseInteger(args[2]);
  if (Number.isNaN(timeout)) {
    req.deliver(ERR_TIMEOUT_NOT_INTEGER);
    return;
  }
  if (timeout < 0) {
    req.deliver(ERR_TIMEOUT_NEGATIVE);
    return;
  }
  if (!session.runAlone(req, true)) return; // dispatched again once the client's earlier commands are answered
  const pools = session.takeWritten();
  if (pools.length === 0) {
    connectedReplicas(session, req, topo, numreplicas);
    return;
  }
  const cluster = topo.config.mode === 'cluster';
  const frames: Buffer[][] = [];
  for (const pool of pools) {
    if (!cluster) frames.push(MARK_FRAMES);
    else {
      const marked = clusterMarkFrames(topo, pool);
      if (marked === null) {
        req.deliver(
          errorReply(
            `ERR keymux: WAIT: master ${pool.shard.address} serves no slot now (failover or resharding under way); ` +
              'the writes it received may be on another node: retry',
          ),
        );
        return;
      }
      frames.push(marked);
    }
  }
  waitOn(session, req, pools, frames);
};

/**
 * Leases a session connection on each pool, sends `marks[i]` (nothing when empty) and then the client's WAIT on it,
 * and answers the smallest count once every shard answered.
 */
function waitOn(session: DispatchSession, req: Request, pools: readonly ShardPool[], marks: Buffer[][]): void {
  const leases: Lease[] = [];
  for (const pool of pools) {
    const got = session.ctx.sessions.lease(pool, 2);
    if (!(got instanceof Lease)) {
      for (const l of leases) l.release();
      // Not waited for: the next WAIT still waits for these writes.
      for (let i = 0; i < pools.length; i++) if (marks[i].length > 0) session.noteWrite(pools[i]);
      req.deliver(got);
      return;
    }
    leases.push(got);
  }
  const state = session.sessionState();
  const run = new WaitRun(session, state, req, leases.length);
  state.waiting = run;
  session.ctx.sessions.blocked.set(session.id, run);
  // The shards' WAIT blocks for its timeout (0: for ever): their connections' operation timeout comes on top.
  const timeout = parseInteger(req.args[2]);
  const blockMs = timeout === 0 ? Infinity : timeout;
  for (let i = 0; i < leases.length; i++)
    run.start(new WaitLeg(run, leases[i], req.frame, session.id, blockMs), marks[i]);
}

/** One client's WAIT over its leases (one per shard waited on). */
class WaitRun implements BlockedCall {
  private readonly session: DispatchSession;
  private readonly state: SessionState;
  private readonly req: Request;
  private readonly legs: WaitLeg[];
  private pending: number;
  private least: number;
  private error: Buffer | null;
  private abortReply: Buffer | null;

  constructor(session: DispatchSession, state: SessionState, req: Request, count: number) {
    this.session = session;
    this.state = state;
    this.req = req;
    this.legs = [];
    this.pending = count;
    this.least = Number.MAX_SAFE_INTEGER;
    this.error = null;
    this.abortReply = null;
  }

  /** When the first shard's WAIT was written (0: none yet); INFO blocked_clients counts the client from then. */
  get sentAt(): number {
    for (const leg of this.legs) if (leg.sentAt > 0) return leg.sentAt;
    return 0;
  }

  start(leg: WaitLeg, mark: Buffer[]): void {
    this.legs.push(leg);
    const lease = leg.lease;
    if (mark.length === 0) {
      lease.send(leg);
      return;
    }
    for (let i = 0; i < mark.length - 1; i++) lease.send(new SideOp(mark[i]));
    lease.send(
      new SideOp(mark[mark.length - 1], (frame) => {
        // EXEC's reply: an array when the mark was applied (and propagated); else why not (OOM, a slot moving...).
        if (frame[0] === 42 /* * */ && lease.leased) lease.send(leg);
        else this.legDone(leg, frame[0] === 45 /* - */ ? markFailed(lease, frame) : frame);
      }),
    );
  }

  legDone(leg: WaitLeg, frame: Buffer): void {
    if (leg.done) return;
    leg.done = true;
    if (leg.lease.leased) leg.lease.release();
    const n = readInteger(frame);
    if (n !== null) {
      if (n < this.least) this.least = n;
    } else if (this.error === null) {
      this.error = frame[0] === 45 /* - */ ? frame : errorReply('ERR keymux: unexpected reply to WAIT from a shard');
    }
    if (--this.pending > 0) return;
    if (this.state.waiting === this) this.state.waiting = null;
    const blocked = this.session.ctx.sessions.blocked;
    if (blocked.get(this.session.id) === this) blocked.delete(this.session.id);
    this.req.deliver(this.abortReply ?? this.error ?? integerReply(this.least));
  }

  /** CLIENT UNBLOCK / drain: each shard's WAIT is unblocked (it answers the count so far); false when one cannot be. */
  unblock(mode: 'timeout' | 'error', onReply: ((frame: Buffer) => void) | null = null): boolean {
    for (const leg of this.legs) {
      if (leg.done) continue;
      const lease = leg.lease;
      // Not yet blocked (its mark is still on the way) or no CLIENT ID known: it cannot be unblocked on the node.
      if (leg.sentAt === 0 || lease.backendId < 0 || lease.via === null || !lease.via.usable) return false;
    }
    let first = true;
    for (const leg of this.legs) {
      if (leg.done) continue;
      leg.lease.unblock(mode, first ? onReply : null);
      first = false;
    }
    if (first && onReply !== null) onReply(integerReply(0));
    return true;
  }

  /** Ends the WAIT with `reply`: its leases are closed (their replies come back as errors, `reply` goes out). */
  abort(reply: Buffer): void {
    this.abortReply = reply;
    this.closeLeases();
  }

  /** The client left: its leases are closed, never reused (a WAIT may still be blocked on them). */
  clientGone(): void {
    this.closeLeases();
  }

  private closeLeases(): void {
    const blocked = this.session.ctx.sessions.blocked;
    if (blocked.get(this.session.id) === this) blocked.delete(this.session.id);
    if (this.state.waiting === this) this.state.waiting = null;
    for (const leg of [...this.legs]) if (!leg.done && leg.lease.leased) leg.lease.destroy();
  }
}

/** The client's WAIT frame on one lease. */
class WaitLeg implements BackendOp {
  sentAt: number;
  redirects: number;
  readonly sessionId: number;
  readonly frame: Buffer;
  readonly lease: Lease;
  /** WAIT's timeout (ms; Infinity for 0): the lease's operation timeout counts from its end. */
  readonly blockMs: number;
  done: boolean;
  private readonly run: WaitRun;

  constructor(run: WaitRun, lease: Lease, frame: Buffer, sessionId: number, blockMs: number) {
    this.blockMs = blockMs;
    this.sentAt = 0;
    this.redirects = 0;
    this.sessionId = sessionId;
    this.frame = frame;
    this.lease = lease;
    this.done = false;
    this.run = run;
  }

  deliver(frame: Buffer): void {
    this.run.legDone(this, frame);
  }
}

/**
 * Nothing written since the last WAIT: Redis's answer for a connection that wrote nothing is the replicas online
 * (every one has acknowledged offset 0), at once when that reaches numreplicas, else after blocking until more come
 * online or the timeout. So: each shard's INFO replication over the shared connection (it never blocks), the
 * smallest count; when it is short of numreplicas, the client's WAIT itself on a leased connection of every shard
 * (no mark: that connection's own last write, if any, is long acknowledged), which blocks exactly as Redis does.
 */
function connectedReplicas(session: DispatchSession, req: Request, topo: Topology, numreplicas: number): void {
  const shards = topo.shards;
  let pending = shards.length;
  let least = Number.MAX_SAFE_INTEGER;
  let error: Buffer | null = null;
  if (pending === 0) {
    req.deliver(integerReply(0));
    return;
  }
  const done = (frame: Buffer): void => {
    if (frame[0] === 36 /* $ */) {
      let n = 0;
      for (let at = frame.indexOf(ONLINE); at >= 0; at = frame.indexOf(ONLINE, at + ONLINE.length)) n++;
      if (n < least) least = n;
    } else error ??= frame[0] === 45 /* - */ ? frame : errorReply('ERR keymux: unexpected INFO reply from a shard');
    if (--pending > 0) return;
    if (error !== null || least >= numreplicas) req.deliver(error ?? integerReply(least));
    else {
      const now = session.ctx.topology;
      waitOn(
        session,
        req,
        now.shards.map((s) => s.pool),
        now.shards.map(() => []),
      );
    }
  };
  for (const shard of shards) {
    const pool = shard.pool;
    if (!pool.usable) {
      done(errorReply(`ERR keymux: shard '${shard.name}' (${shard.address}) is unreachable`));
      continue;
    }
    pool.pick(session.id).send(new SideOp(INFO_REPLICATION, done), INFO_REPLICATION);
  }
}

function markFrames(key: string): Buffer[] {
  return [MULTI_FRAME, commandFrame(['SET', key, '1']), commandFrame(['DEL', key]), EXEC_FRAME];
}

function markFailed(lease: Lease, frame: Buffer): Buffer {
  const why = frame.subarray(1, Math.max(1, frame.length - 2)).toString('latin1');
  return errorReply(
    `ERR keymux: WAIT could not mark the replication offset on shard '${lease.pool.name}' ` +
      `(${lease.pool.address}): ${why}`,
  );
}

/** Cluster mode: a key in a slot `pool`'s master serves now, by slot (computed once per slot). */
const clusterMarks = new Map<number, Buffer[]>();

function clusterMarkFrames(topo: Topology, pool: ShardPool): Buffer[] | null {
  const address = pool.shard.address;
  const router = topo.router;
  for (let slot = 0; slot < 16384; slot++) {
    const shard = topo.shards[router.shardOfGroup(slot)];
    if (shard === undefined || shard.address !== address) continue;
    let frames = clusterMarks.get(slot);
    if (frames === undefined) {
      for (let i = 0; ; i++) {
        const key = `${MARK_KEY}:{${i}}`;
        if (keySlot(Buffer.from(key)) === slot) {
          frames = markFrames(key);
          break;
        }
      }
      clusterMarks.set(slot, frames);
    }
    return frames;
  }
  return null;
}
