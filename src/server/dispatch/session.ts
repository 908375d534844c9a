/**
 * Session dispatch: commands that need a backend connection of their own for a while (src/session/): MULTI,
 * EXEC, DISCARD, WATCH, UNWATCH, the blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
 * BZPOPMAX, BZMPOP, XREAD/XREADGROUP with BLOCK) and CLIENT UNBLOCK; plus queueing while a MULTI is open
 * (queueInTransaction, called by the session for every command between MULTI and EXEC).
 *
 * Design: a transaction is buffered here, not at a shard. MULTI is answered +OK, every command after it is
 * checked (known, arity, keys on the transaction's shard; cluster mode: its slot) and answered +QUEUED, or refused
 * with Redis's or keymux's error, which marks the transaction so EXEC answers EXECABORT, as Redis does. At EXEC,
 * keymux leases a session connection to the transaction's shard (or uses the one holding the client's WATCH) and
 * sends MULTI, the queued commands and EXEC in one write; the shard's EXEC reply (array, nil when a WATCHed key
 * changed, or EXECABORT) is the client's, with the replies of commands keymux answers itself (PING, ECHO,
 * CLIENT ...) put in their places. Why buffer rather than lease at MULTI: a transaction's shard is only known at
 * its first keyed command, a client may queue commands keymux must refuse (cross-shard keys, FLUSHALL) before
 * any reaches a shard, and a buffered transaction holds a connection for one round trip instead of for as long
 * as the client takes to queue it (a client that sends MULTI and stalls costs nothing). The price is that Redis's
 * own queue-time errors (e.g. ACL) surface as EXECABORT at EXEC, not at the command; nothing is ever applied.
 * A reload that changed users or rules between MULTI and EXEC has the queued commands checked again at EXEC, as
 * Redis does: a refused one is answered NOPERM in its place and not sent (recheckQueued).
 *
 * WATCH leases a connection at once (the watch must be on the shard before the client reads the values it
 * watches) and keeps it until EXEC, DISCARD, UNWATCH, RESET or the client leaves. WATCH, EXEC and blocking
 * commands run alone in their client's order (DispatchSession.runAlone): they leave once the client's earlier
 * commands are answered, and later ones wait for them, since they go over a different connection than the
 * client's other commands; a blocked client is blocked, as on Redis. In cluster mode a MOVED/ASK answering a
 * blocking command or a WATCH is followed (the command is sent again on a lease to the named node); one answering
 * a queued command of a transaction aborts it (nothing is applied), topology is refreshed, and the client is told
 * to retry.
 */
import {
  KEYS_ERROR_NO_KEYS,
  equalsLower,
  findKeyIndexes,
  keysErrorReply,
  parseInteger,
  isKeylessOrBadNumkeys,
} from '../../commands/keys.js';
import { dispatchOneShard, shareEvalScript } from './one-shard.js';
import { LOCAL_HANDLERS } from '../../commands/local.js';
import type { CommandSpec } from '../../commands/spec.js';
import { Request, mayWrite, ownBytes, type BackendOp, type RequestOwner, type RoutedUnit } from '../../core/request.js';
import { parseRedirect, retryableError, withHost, type RedirectTarget } from '../../backend/redirect.js';
import type { ShardPool } from '../../backend/pool.js';
import {
  ERR_CLIENT_GONE,
  ERR_CROSSSLOT,
  ERR_EXECABORT,
  ERR_NESTED_MULTI,
  ERR_REFUSED_TX,
  ERR_SLOT_NOT_SERVED,
  errorReply,
} from '../../errors.js';
import { readArrayElements } from '../../resp/reply-reader.js';
import { OK, arrayHeader, commandFrame, integerReply } from '../../resp/writer.js';
import type { Topology } from '../../routing/topology.js';
import type { SessionState, QueuedCommand } from '../../session/client-state.js';
import { Lease, SideOp, type BlockedCall } from '../../session/session-pool.js';
import { dispatchKeyed } from './keyed.js';
import { configRefusal, withoutSecrets } from './config.js';
import type { DispatchHandler, DispatchSession } from './types.js';
import type { ShardStats } from '../../metrics/stats.js';
import { RULE_NONE, countHitMiss, hitMissRule } from '../../metrics/hit-miss.js';

export const QUEUED = Buffer.from('+QUEUED\r\n');
const ERR_EXEC_WITHOUT_MULTI = errorReply('ERR EXEC without MULTI');
const ERR_DISCARD_WITHOUT_MULTI = errorReply('ERR DISCARD without MULTI');
const ERR_WATCH_IN_MULTI = errorReply('ERR WATCH inside MULTI is not allowed');
const ERR_NOT_IN_MULTI = errorReply('ERR Command not allowed inside a transaction');
const ERR_TX_OTHER_SHARD = errorReply(
  "CROSSSLOT Keys in request don't hash to the same slot (keymux: a transaction runs on one shard, in cluster mode " +
    'one slot: the shard of its WATCHed keys or of its first keyed command; use {hash tags})',
);
const ERR_WATCH_OTHER_SHARD = errorReply(
  "CROSSSLOT Keys in request don't hash to the same slot (keymux: every WATCHed key must be on the shard of the " +
    'keys already watched, in cluster mode their slot; use {hash tags})',
);
const ERR_WATCH_LOST = errorReply(
  "ERR keymux: the connection holding this client's WATCH was lost; the transaction was not run (WATCH again and retry)",
);
const ERR_TX_SPLIT = errorReply(
  'EXECABORT keymux: the transaction was not applied: a config reload put its keys on different shards; retry it',
);
/** EXEC's reply when a WATCHed key changed (Redis's null array). */
const NULL_ARRAY_RESP2 = Buffer.from('*-1\r\n');
const NULL_ARRAY_RESP3 = Buffer.from('_\r\n');
/** Redis's words for a call ended by CLIENT UNBLOCK ... ERROR. */
const ERR_UNBLOCKED = errorReply('UNBLOCKED client unblocked via CLIENT UNBLOCK');
const ERR_TOO_MANY_REDIRECTS = errorReply('ERR keymux: too many cluster redirections for this command');
const MULTI_FRAME = commandFrame(['MULTI']);
const EXEC_FRAME = commandFrame(['EXEC']);
const ASKING_FRAME = commandFrame(['ASKING']);
const STREAMS = Buffer.from('streams');
const BLOCK = Buffer.from('block');
const ZERO = integerReply(0);
/** MOVED/ASK hops a blocking command or WATCH follows before the client gets an error. */
const MAX_REDIRECTS = 5;

/** Commands that are not queued between MULTI and EXEC (as in Redis: they act at once). */
export const NOT_QUEUED: ReadonlySet<string> = new Set(['exec', 'discard', 'multi', 'watch', 'quit', 'reset']);

export const dispatchSession: DispatchHandler = (session, req, spec, topo) => {
  switch (spec.name) {
    case 'multi':
      multi(session, req, topo);
      return;
    case 'exec':
      exec(session, req, topo);
      return;
    case 'discard':
      discard(session, req);
      return;
    case 'watch':
      watch(session, req, spec, topo);
      return;
    case 'unwatch':
      session.txn?.endWatch();
      req.deliver(OK);
      return;
    case 'client|unblock':
      clientUnblock(session, req);
      return;
    case 'eval':
    case 'evalsha':
    case 'eval_ro':
    case 'evalsha_ro':
    case 'fcall':
    case 'fcall_ro':
      // Only with commands.scripts: isolated (commands/table.ts); otherwise scripts are keyed commands.
      isolatedScript(session, req, spec, topo);
      return;
    case 'xread':
    case 'xreadgroup':
      if (unbalancedStreams(req.args)) {
        // The server refuses it before it could block, in its own words (they vary between versions).
        dispatchOneShard(session, req, spec, topo);
        return;
      }
      if (!hasBlockOption(req.args)) {
        dispatchKeyed(session, req, spec, topo);
        return;
      }
      break;
  }
  block(session, req, spec, topo);
};

// ---- MULTI / queueing / EXEC / DISCARD ------------------------------------------------------------------------

function multi(session: DispatchSession, req: Request, topo: Topology): void {
  const state = session.sessionState();
  if (state.inMulti) {
    req.deliver(ERR_NESTED_MULTI); // Redis does not flag the transaction for this one
    return;
  }
  state.begin(topo.acl);
  req.deliver(OK);
}

/** A command between MULTI and EXEC: checked and answered +QUEUED, or refused (the transaction is then aborted). */
export function queueInTransaction(
  session: DispatchSession,
  state: SessionState,
  req: Request,
  spec: CommandSpec,
  topo: Topology,
): void {
  const refuse = (reply: Buffer): void => {
    state.dirty = true;
    req.deliver(reply);
  };
  ownBytes(req); // held until EXEC, as long as the client takes: its own bytes, not a read pool
  if (state.refused) {
    refuse(ERR_REFUSED_TX);
    return;
  }
  if (spec.flags.includes('no_multi')) {
    refuse(ERR_NOT_IN_MULTI); // SAVE, SHUTDOWN...: Redis's own refusal comes first
    return;
  }
  if (spec.dispatch === 'wait') {
    // Redis answers WAIT inside MULTI at once (it never blocks there): it goes with the transaction to its shard
    // (a transaction of no keyed command: slot 0's), where it counts the replicas that acknowledged that
    // connection's earlier writes.
    state.enqueue({ frame: req.frame, args: req.args, spec, local: false, fixed: null }, true);
    req.deliver(QUEUED);
    return;
  }
  if (spec.dispatch === 'config') {
    // With commands.config_broadcast (an operator's switch): queued with the transaction like WAIT (a transaction
    // of no keyed command runs on slot 0's shard); SET and RESETSTAT reach every other shard after it (`everywhere`).
    const refused = configRefusal(session, spec, req.args, topo);
    if (refused !== null) {
      refuse(refused);
      return;
    }
    const everywhere = spec.merge !== null;
    const reshape = spec.name === 'config|get' ? withoutSecrets : undefined;
    state.enqueue({ frame: req.frame, args: req.args, spec, local: false, fixed: null, everywhere, reshape }, true);
    req.deliver(QUEUED);
    return;
  }
  switch (spec.dispatch) {
    case 'local':
      state.enqueue({ frame: req.frame, args: req.args, spec, local: true, fixed: null }, false);
      req.deliver(QUEUED);
      return;
    case 'refused':
      refuse(spec.refuseReason as Buffer);
      return;
    case 'one-shard':
      // TIME, LASTSAVE, ... HELP: any one shard answers them; they run with the transaction on its shard (slot 0's
      // when it has no keyed command), as Redis queues them.
      state.enqueue({ frame: req.frame, args: req.args, spec, local: false, fixed: null }, true);
      req.deliver(QUEUED);
      return;
    case 'keyed':
    case 'fanout':
    case 'session':
      break;
    default:
      refuse(
        errorReply(
          `ERR keymux: command '${spec.name}' cannot be queued in a transaction: it goes to every shard or to ` +
            'none (a transaction runs on one shard, the shard of its keys)',
        ),
      );
      return;
  }
  if (spec.name === 'unwatch') {
    // Redis queues it; inside MULTI it has no effect a client can see (EXEC unwatches anyway).
    state.enqueue({ frame: req.frame, args: req.args, spec, local: true, fixed: OK }, false);
    req.deliver(QUEUED);
    return;
  }
  if (spec.name === 'client|unblock') {
    refuse(errorReply("ERR keymux: command 'client|unblock' cannot be queued in a transaction"));
    return;
  }
  if (state.topo !== null && state.topo !== topo) rebaseTransaction(session, state, topo);
  const idx = session.keyIndexes;
  const n = findKeyIndexes(spec, req.args, idx);
  if (n <= 0) {
    if (
      isKeylessOrBadNumkeys(n) ||
      ((spec.name === 'xread' || spec.name === 'xreadgroup') && unbalancedStreams(req.args))
    ) {
      // EVAL script 0, a numkeys or stream list the server refuses: queued as Redis queues them, run with the
      // transaction on its shard (which words any error in its place in EXEC's reply), binding it to none.
      state.enqueue({ frame: req.frame, args: req.args, spec, local: false, fixed: null }, true);
      req.deliver(QUEUED);
      return;
    }
    refuse(keysErrorReply(n, spec));
    return;
  }
  const router = topo.router;
  const group = router.groupFor(req.args[idx[0]]);
  for (let i = 1; i < n; i++) {
    if (router.groupFor(req.args[idx[i]]) !== group) {
      refuse(ERR_CROSSSLOT);
      return;
    }
  }
  if (state.group === -1) {
    state.group = group;
    state.topo = topo;
  } else if (state.group !== group) {
    refuse(ERR_TX_OTHER_SHARD);
    return;
  }
  state.enqueue({ frame: req.frame, args: req.args, spec, local: false, fixed: null }, true);
  req.deliver(QUEUED);
}

function discard(session: DispatchSession, req: Request): void {
  const state = session.txn;
  if (state === null || !state.inMulti) {
    req.deliver(ERR_DISCARD_WITHOUT_MULTI);
    return;
  }
  state.take();
  state.endWatch(); // DISCARD unwatches, as in Redis
  req.deliver(OK);
}

function exec(session: DispatchSession, req: Request, topo: Topology): void {
  const state = session.txn;
  if (state === null || !state.inMulti) {
    req.deliver(ERR_EXEC_WITHOUT_MULTI);
    return;
  }
  // A failed move answers the held EXEC -TRYAGAIN and ends the transaction (discarded, unwatched), as every EXEC
  // reply does in Redis: left in MULTI, the client's next commands were answered +QUEUED and never run.
  const failed = (): void => {
    state.take();
    state.endWatch();
  };
  if (!state.dirty && state.remoteCount > 0 && heldForMigration(session, req, null, topo, state.queued, failed)) {
    return;
  }
  if (!session.runAlone(req)) return; // dispatched again once the client's earlier commands are answered
  if (state.topo !== null && state.topo !== topo) rebaseTransaction(session, state, topo);
  const dirty = state.dirty;
  const stale = state.stale;
  const group = state.group;
  const checkedWith = state.checkedWith;
  let remote = state.remoteCount;
  const queued = state.take();
  const watched = state.watchLease !== null;
  if (dirty) {
    state.endWatch();
    req.deliver(ERR_EXECABORT);
    return;
  }
  if (stale) {
    // A reload moved its keys (rebaseTransaction). Nothing of it reached a shard: the WATCH lease is given back
    // with UNWATCH (release), as after DISCARD, and the client retries under the new topology.
    state.endWatch();
    req.deliver(watched ? (session.protocol === 3 ? NULL_ARRAY_RESP3 : NULL_ARRAY_RESP2) : ERR_TX_SPLIT);
    return;
  }
  if (checkedWith !== session.ctx.topology.acl) remote -= recheckQueued(session, queued);
  if (remote === 0 && !watched) {
    answerExec(session, req, queued, null);
    return;
  }
  // Near cache: a transaction's writes go over a session connection the cache does not see; drop what is cached
  // and hold reads until EXEC is answered, so the client reads its own writes (coarse: transactions that write
  // empty the cache; their invalidations would arrive later through tracking anyway).
  const nc = session.ctx.nearCache;
  const writes = queued.some((q) => !q.local && !q.spec.readonly);
  // Scripts count as writes (mayWrite): they are flagged neither way, and may write their keys.
  if (nc !== null && queued.some((q) => !q.local && mayWrite(q.spec))) nc.writeAll(req);
  // No keyed command (only WAIT, TIME, EVAL script 0...): the keyless shard's, slot 0's (ring: the first server).
  const txGroup = group === -1 ? topo.router.keylessGroup() : group;
  let lease = state.takeWatch();
  if (lease !== null) {
    if (!lease.usable) {
      lease.release();
      req.deliver(ERR_WATCH_LOST);
      return;
    }
    lease.watching = false; // EXEC unwatches
    // Leased at WATCH time with the protocol the client spoke then: EXEC's reply is in the one it speaks now.
    lease.speak(session.protocol);
  } else {
    const pool = poolOfGroup(topo, txGroup);
    if (pool === null) {
      // Cluster mode, a failover under way: nothing was sent; it goes once the slot has a master again.
      if (!execWhenServed(session, state, req, queued, txGroup, writes, 0)) req.deliver(ERR_SLOT_NOT_SERVED);
      return;
    }
    const got = session.ctx.sessions.lease(pool, session.protocol);
    if (!(got instanceof Lease)) {
      req.deliver(got);
      return;
    }
    lease = got;
  }
  if (writes && lease.via !== null) session.noteWrite(lease.via); // WAIT waits for them (dispatch/wait.ts)
  state.busy = lease;
  new TransactionRun(session, state, req, lease, queued, watched, txGroup).send();
}

/**
 * A reload compiled new users and rules after the transaction's commands were checked: each is checked again
 * against the client's user now, as Redis checks queued commands at EXEC; a refused one is not sent, its NOPERM
 * ("ACLs rules changed between the moment the transaction was accumulated and the EXEC call...") takes its place in
 * EXEC's reply and the others run (Redis 7.0 runs them too). Returns how many refused ones were to go to the shard.
 */
function recheckQueued(session: DispatchSession, queued: QueuedCommand[]): number {
  let refusedRemote = 0;
  for (let i = 0; i < queued.length; i++) {
    const q = queued[i];
    const refused = session.permissionAtExec(q.spec, q.args);
    if (refused === null) continue;
    if (!q.local) refusedRemote++;
    queued[i] = { frame: q.frame, args: q.args, spec: q.spec, local: true, fixed: refused };
  }
  return refusedRemote;
}

/**
 * Cluster mode: the backoff before try number `tries` + 1 of something that did not run (a failover, a slot
 * half-way through a migration), by cluster.retry as for plain commands (backend/cluster.ts); null when out of
 * tries or not in cluster mode.
 */
function clusterBackoffMs(session: DispatchSession, tries: number): number | null {
  const config = session.ctx.topology.config;
  const retry = config.mode === 'cluster' ? config.cluster?.retry : undefined;
  if (retry === undefined || tries >= retry.attempts) return null;
  session.ctx.stats.retries++;
  session.ctx.clusterHint();
  return Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** tries);
}

/**
 * Cluster mode: EXEC (without WATCH) whose slot has no master now (a failover under way) is sent after a backoff,
 * within cluster.retry, once it has one. False when out of tries or not in cluster mode (the caller answers that
 * the slot is not served). The client's later commands wait meanwhile (EXEC runs alone).
 */
function execWhenServed(
  session: DispatchSession,
  state: SessionState,
  req: Request,
  queued: QueuedCommand[],
  group: number,
  writes: boolean,
  tries: number,
): boolean {
  const delay = clusterBackoffMs(session, tries);
  if (delay === null) return false;
  const ctx = session.ctx;
  setTimeout(() => {
    if (session.left) {
      req.deliver(ERR_CLIENT_GONE); // nothing is leased for a client that is gone
      return;
    }
    const pool = poolOfGroup(ctx.topology, group);
    if (pool === null) {
      if (!execWhenServed(session, state, req, queued, group, writes, tries + 1)) req.deliver(ERR_SLOT_NOT_SERVED);
      return;
    }
    const got = ctx.sessions.lease(pool, session.protocol);
    if (!(got instanceof Lease)) {
      req.deliver(got);
      return;
    }
    if (writes && got.via !== null) session.noteWrite(got.via);
    state.busy = got;
    new TransactionRun(session, state, req, got, queued, false, group).send();
  }, delay).unref();
  return true;
}

/**
 * The MULTI ... EXEC batch of one transaction on its lease; its replies are read as they come. Cluster mode: when
 * the shard answers a queued command with MOVED (the slot has a new owner), it aborted the transaction (EXECABORT,
 * nothing applied); without WATCH the batch is sent again to the new owner (bounded), with WATCH the client is told
 * (its watch was on the old owner). ASK (a migrating slot) and a run that did not happen (a failover) are handled
 * in `done`.
 */
class TransactionRun {
  private readonly session: DispatchSession;
  private readonly state: SessionState;
  private readonly req: Request;
  private lease: Lease;
  private readonly queued: QueuedCommand[];
  private readonly watched: boolean;
  /** A queued command was answered with a redirection (cluster mode): the slot is elsewhere now. */
  private moved: RedirectTarget | null;
  private redirects: number;
  /** Queued commands with keys that the node took (+QUEUED): their keys are there (cluster mode, see done). */
  private keyedQueued: number;
  /** This run follows an -ASK: ASKING goes before MULTI (it holds for the whole transaction). */
  private asking: boolean;
  /** A queued command was refused for now (CLUSTERDOWN, TRYAGAIN, LOADING): the node aborts the transaction. */
  private refused: boolean;
  /** Cluster mode: its slot, and the runs sent again because the slot was half-way through a migration. */
  private readonly group: number;
  private retries: number;

  constructor(
    session: DispatchSession,
    state: SessionState,
    req: Request,
    lease: Lease,
    queued: QueuedCommand[],
    watched: boolean,
    group: number,
  ) {
    this.session = session;
    this.state = state;
    this.req = req;
    this.lease = lease;
    this.queued = queued;
    this.watched = watched;
    this.moved = null;
    this.redirects = 0;
    this.keyedQueued = 0;
    this.asking = false;
    this.refused = false;
    this.group = group;
    this.retries = 0;
  }

  send(): void {
    const lease = this.lease;
    this.moved = null;
    this.keyedQueued = 0;
    this.refused = false;
    this.session.ctx.sessions.execSent(lease); // a migration starting now waits for its reply (execsAnswered)
    if (this.asking) lease.send(new SideOp(ASKING_FRAME));
    lease.send(new SideOp(MULTI_FRAME));
    const onQueued = (frame: Buffer): void => {
      if (this.moved === null && frame[0] === 45 /* - */) {
        const r = parseRedirect(frame);
        if (r !== null && r.kind !== 'invalid') this.moved = withHost(r, hostOf(lease.pool.address));
        else if (r === null && retryableError(frame) !== null) this.refused = true;
      }
    };
    const onKeyedQueued = (frame: Buffer): void => {
      if (frame[0] === 43 /* + */) this.keyedQueued++;
      else onQueued(frame);
    };
    const idx = this.session.keyIndexes;
    for (const q of this.queued) {
      if (q.local) continue;
      lease.send(new SideOp(q.frame, findKeyIndexes(q.spec, q.args, idx) > 0 ? onKeyedQueued : onQueued));
    }
    const execOp: SideOp = new SideOp(EXEC_FRAME, (frame) => this.done(frame, execOp.sentAt === 0));
    lease.send(execOp);
  }

  /** `unsent`: EXEC never left keymux (its connection failed first), so the node ran nothing of it. */
  private done(frame: Buffer, unsent: boolean): void {
    const state = this.state;
    const lease = this.lease;
    this.session.ctx.sessions.execAnswered(lease);
    if (!lease.leased) {
      this.req.deliver(frame); // the client left: closed with it
      return;
    }
    const m = this.moved;
    // Without WATCH nothing of it ran (the node aborted it), so it may go where the slot is: after MOVED, to the new
    // owner; after ASK (the slot is migrating), to the importing node with ASKING, but only when the node asked
    // took none of its keyed commands: each ASK says its key is not there (nor can it come back: a migrating slot
    // takes no new key), while a command it queued has its key there, and the target would run it on a key it does
    // not hold. Keys split between the two nodes: EXECABORT (retry it; the migration ends the split).
    const follow = m !== null && (m.kind === 'moved' || this.keyedQueued === 0);
    if (m !== null && follow && !this.watched && this.redirects < MAX_REDIRECTS) {
      const ctx = this.session.ctx;
      if (m.kind === 'moved') ctx.stats.moved++;
      else ctx.stats.ask++;
      ctx.clusterHint();
      const pool = ctx.nodePool(m.address);
      const next = pool === null ? null : ctx.sessions.lease(pool, this.session.protocol);
      if (next instanceof Lease) {
        if (state.busy === lease) state.busy = next;
        lease.release();
        this.lease = next;
        this.redirects++;
        this.asking = m.kind === 'ask';
        this.send();
        return;
      }
    }
    // Half-way through a migration of its slot, without WATCH: its keys split between the two nodes (some queued
    // at the source, some asked for), or the importing node answering EXEC with TRYAGAIN (a key of it not there
    // yet). Neither node applied anything; it is sent again from the slot's owner after a backoff, within
    // cluster.retry, as a plain command answered TRYAGAIN is, and the client gets the error only when out of tries.
    // A failover, likewise: the node could not be reached before EXEC was written, or it refused the transaction
    // (CLUSTERDOWN, LOADING: EXEC discarded, or a queued command refused and EXEC answered EXECABORT).
    const split = m !== null && m.kind === 'ask' && this.keyedQueued > 0;
    const refused = m === null && frame[0] === 45 /* - */ && (unsent || this.refused || retryableError(frame) !== null);
    if ((split || refused) && !this.watched && this.retryLater(frame)) return;
    if (m === null && frame[0] === 42 /* * */) countExecResults(lease.conn.stats, this.queued, frame);
    if (m === null && frame[0] === 42 /* * */ && this.queued.some((q) => q.everywhere === true)) {
      if (state.busy === lease) state.busy = null;
      lease.release();
      new EverywhereRun(this.session, this.req, this.queued, frame, lease.pool.address).send();
      return;
    }
    if (state.busy === lease) state.busy = null;
    lease.release();
    let reply = frame;
    if (m !== null) {
      // Cluster mode: the transaction's slot moved while it was queued; the shard aborted it (EXECABORT).
      this.session.ctx.clusterHint();
      reply = errorReply(
        `EXECABORT keymux: the transaction was not applied: slot ${m.slot} ` +
          `${m.kind === 'moved' ? 'moved' : 'is migrating'} to ${m.address}` +
          `${this.watched ? ' (its WATCH was on the former owner)' : m.kind === 'ask' && this.keyedQueued > 0 ? ' (its keys are split between the two nodes)' : ''}; retry it`,
      );
    } else if (frame[0] === 42 /* * */) {
      answerExec(this.session, this.req, this.queued, frame);
      return;
    }
    this.req.deliver(reply);
  }

  /** Sends the transaction again after a backoff (see done); false when out of retries (or not cluster mode). */
  private retryLater(lastReply: Buffer): boolean {
    const delay = clusterBackoffMs(this.session, this.retries);
    if (delay === null) return false;
    this.retries++;
    const ctx = this.session.ctx;
    if (retryableError(lastReply) === 'tryagain') ctx.stats.tryagain++;
    // The lease stays with the run meanwhile: the client's next commands wait (it runs alone), and a client that
    // leaves has it closed (clientGone), which the timer sees.
    setTimeout(() => {
      const lease = this.lease;
      if (!lease.leased) {
        this.req.deliver(lastReply);
        return;
      }
      const owner = poolOfGroup(ctx.topology, this.group);
      if (owner === null) {
        // No master for the slot yet (a failover): another backoff, the lease kept.
        if (this.retryLater(lastReply)) return;
        if (this.state.busy === lease) this.state.busy = null;
        lease.release();
        this.req.deliver(lastReply);
        return;
      }
      const next =
        owner.shard.address === lease.pool.address && lease.usable
          ? lease
          : ctx.sessions.lease(owner, this.session.protocol);
      if (!(next instanceof Lease)) {
        if (this.state.busy === lease) this.state.busy = null;
        lease.release();
        this.req.deliver(lastReply);
        return;
      }
      if (next !== lease) {
        if (this.state.busy === lease) this.state.busy = next;
        lease.release();
        this.lease = next;
      }
      this.asking = false;
      this.redirects = 0;
      this.send();
    }, delay).unref();
    return true;
  }
}

/**
 * After EXEC: a queued CONFIG SET / RESETSTAT (`everywhere`) that the transaction's shard answered +OK is sent to
 * every other shard (cluster mode: master) on a lease of its own, and EXEC is answered once they all replied. A shard
 * that refuses it turns that command's element of the EXEC reply into an error naming the shard (the transaction's
 * shard applied it; the operator sees where it failed). One that failed on the transaction's shard goes nowhere else.
 */
class EverywhereRun {
  private readonly session: DispatchSession;
  private readonly req: Request;
  private readonly queued: QueuedCommand[];
  private readonly shardReply: Buffer;
  private readonly elements: Buffer[] | null;
  /** The transaction's shard ("host:port"): it ran the commands already. */
  private readonly txAddress: string;
  private pending: number;

  constructor(session: DispatchSession, req: Request, queued: QueuedCommand[], shardReply: Buffer, txAddress: string) {
    this.session = session;
    this.req = req;
    this.queued = queued;
    this.shardReply = shardReply;
    this.elements = readArrayElements(shardReply);
    this.txAddress = txAddress;
    this.pending = 1; // released by send() once every command is on its way
  }

  send(): void {
    const elements = this.elements;
    if (elements !== null) {
      const pools = this.session.ctx.topology.shards
        .map((s) => s.pool)
        .filter((p) => p.shard.address !== this.txAddress);
      let r = 0;
      for (const q of this.queued) {
        if (q.local) continue;
        const at = r++;
        if (q.everywhere !== true || elements[at] === undefined || elements[at][0] !== 43 /* + */) continue;
        for (const pool of pools) this.sendTo(pool, q.frame, at);
      }
    }
    this.oneDone();
  }

  private sendTo(pool: ShardPool, frame: Buffer, at: number): void {
    const got = this.session.ctx.sessions.lease(pool, 2);
    if (!(got instanceof Lease)) {
      this.failed(at, pool, got);
      return;
    }
    this.pending++;
    got.send(
      new SideOp(frame, (reply) => {
        if (got.leased) got.release();
        if (reply[0] === 45 /* - */) this.failed(at, pool, reply);
        this.oneDone();
      }),
    );
  }

  private failed(at: number, pool: ShardPool, reply: Buffer): void {
    const why = reply.toString('latin1', 1).trim();
    (this.elements as Buffer[])[at] = errorReply(
      `ERR keymux: applied on the transaction's shard but refused by shard ${pool.shard.address}: ${why}`,
    );
  }

  private oneDone(): void {
    if (--this.pending > 0) return;
    const elements = this.elements;
    const shardReply = elements === null ? this.shardReply : Buffer.concat([arrayHeader(elements.length), ...elements]);
    answerExec(this.session, this.req, this.queued, shardReply);
  }
}

/**
 * The shard counters of the commands a transaction ran: the shard answered each +QUEUED (counted as replies by the
 * connection) and its result is an element of EXEC's array, so errors (WRONGTYPE...) and hits/misses (hit-miss.ts)
 * are counted here from those elements, as they are from the replies of commands sent alone. Commands keymux
 * answered itself have no element. Per transaction, not on the shared connections' path.
 */
function countExecResults(stats: ShardStats, queued: QueuedCommand[], execArray: Buffer): void {
  const elements = readArrayElements(execArray);
  if (elements === null) return;
  let i = 0;
  for (const q of queued) {
    if (q.local) continue;
    const element = elements[i++];
    if (element === undefined) return;
    if (element[0] === 45 /* - */) stats.errors++;
    const rule = hitMissRule(q.spec.name);
    if (rule !== RULE_NONE) countHitMiss(rule, element, q.args.length - 1, stats);
  }
}

/** The host part of "host:port" ("[v6]:port" -> "v6"). */
function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}

/**
 * Answers EXEC: the shard's array (`shardReply`, one element per remote command) with the replies of commands
 * keymux answers itself in their places (null shardReply: every command is local). The local ones run now; an
 * AUTH among them is checked at once, and the reply waits the AuthGuard holds of all of them (the session), so a
 * transaction of guesses is no faster than as many separate AUTHs.
 */
function answerExec(session: DispatchSession, req: Request, queued: QueuedCommand[], shardReply: Buffer | null): void {
  session.beginExecAuth();
  session.answerAfterExecAuth(req, execReply(session, queued, shardReply));
}

function execReply(session: DispatchSession, queued: QueuedCommand[], shardReply: Buffer | null): Buffer {
  let hasLocal = false;
  for (const q of queued) if (q.local || q.reshape !== undefined) hasLocal = true;
  if (!hasLocal && shardReply !== null) return shardReply;
  const remote = shardReply === null ? [] : readArrayElements(shardReply);
  if (remote === null) return shardReply as Buffer;
  const parts: Buffer[] = [arrayHeader(queued.length)];
  let r = 0;
  for (const q of queued) {
    if (!q.local) {
      const element = remote[r++] ?? Buffer.from('$-1\r\n');
      parts.push(q.reshape === undefined ? element : q.reshape(element));
      continue;
    }
    parts.push(q.fixed ?? runLocal(session, q));
  }
  return Buffer.concat(parts);
}

/** A local command's reply, run now (at EXEC) through its handler. */
function runLocal(session: DispatchSession, q: QueuedCommand): Buffer {
  const handler = LOCAL_HANDLERS[q.spec.name];
  if (handler === undefined) return errorReply(`ERR keymux: command '${q.spec.name}' is not available here`);
  const sub = new Request(CAPTURE, q.frame, q.args, 0, -1);
  sub.spec = q.spec;
  handler(session, sub, session.ctx);
  return sub.reply ?? errorReply(`ERR keymux: command '${q.spec.name}' gave no reply inside a transaction`);
}

/** The owner of a local command run inside EXEC: its reply is read from the request, nothing else happens. */
const CAPTURE: RequestOwner = {
  id: -1,
  onRequestDone: () => undefined,
  onFencedUnitDone: () => undefined,
  retryInOrder: (unit: RoutedUnit) => unit.deliver(errorReply('ERR keymux: not retried')),
  holdRedirect: () => false,
  backendFull: () => undefined,
  backendDrained: () => undefined,
};

// ---- WATCH and blocking commands: one command on a lease --------------------------------------------------------

function watch(session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology): void {
  const state = session.sessionState();
  if (state.inMulti) {
    req.deliver(ERR_WATCH_IN_MULTI); // not flagged, as in Redis
    return;
  }
  if (state.topo !== null && state.topo !== topo) rebaseTransaction(session, state, topo);
  const group = groupOfKeys(session, req, spec, topo);
  if (group < 0) return;
  if (state.watchLease !== null && state.watchGroup !== group) {
    req.deliver(ERR_WATCH_OTHER_SHARD);
    return;
  }
  if (heldForMigration(session, req, spec, topo, null)) return;
  if (!session.runAlone(req)) return;
  let lease = state.watchLease;
  if (lease === null || !lease.usable) {
    if (lease !== null) state.endWatch();
    const got = leaseFor(session, req, topo, group);
    if (got === null) return;
    lease = got;
    state.watchLease = lease;
    state.watchGroup = group;
    state.topo = topo;
  }
  // Kept for a reload before EXEC (rebaseTransaction); runAlone gave the request its own bytes.
  const idx = session.keyIndexes;
  const n = findKeyIndexes(spec, req.args, idx);
  for (let i = 0; i < n; i++) state.watchKeys.push(req.args[idx[i]]);
  lease.watching = true;
  lease.speak(session.protocol); // a lease kept from an earlier WATCH, the client having switched since
  state.busy = lease;
  lease.send(new LeasedCall(session, state, req, lease, false));
}

function block(session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology): void {
  const idx = session.keyIndexes;
  if (isKeylessOrBadNumkeys(findKeyIndexes(spec, req.args, idx))) {
    // A numkeys the server rejects (BLMPOP/BZMPOP 0, -1, a): it answers with its own words before it could block,
    // so the shared connection of the keyless shard is safe to ask (as keyed dispatch does).
    dispatchOneShard(session, req, spec, topo);
    return;
  }
  const group = groupOfKeys(session, req, spec, topo);
  if (group < 0) return;
  if (heldForMigration(session, req, spec, topo, null)) return;
  if (!session.runAlone(req, true)) return;
  if (poolOfGroup(topo, group) === null && blockLater(session, req, spec)) return;
  const lease = leaseFor(session, req, topo, group);
  if (lease === null) return;
  // Near cache: a blocking pop/move writes its keys over a session connection: hold them until it is answered.
  if (spec.write && session.ctx.nearCache !== null) session.ctx.nearCache.write(req, null, 0, 1);
  if (spec.write && lease.via !== null) session.noteWrite(lease.via); // WAIT waits for them (dispatch/wait.ts)
  const state = session.sessionState();
  state.busy = lease;
  state.blocking = true;
  const call = new LeasedCall(session, state, req, lease, true, false, group, blockingTimeoutMs(spec, req.args));
  session.ctx.sessions.blocked.set(session.id, call);
  lease.send(call);
}

/** Blocking commands waiting for their slot to have a master again (cluster failover): the tries each has had. */
const slotWaits = new WeakMap<Request, number>();

/**
 * Cluster mode: the slot of a blocking command has no master now (a failover under way): it is dispatched again
 * after a backoff, within cluster.retry, as a plain command is (nothing ran). False when out of tries (the caller
 * answers that the slot is not served) or not in cluster mode.
 */
function blockLater(session: DispatchSession, req: Request, spec: CommandSpec): boolean {
  const tries = slotWaits.get(req) ?? 0;
  const delay = clusterBackoffMs(session, tries);
  if (delay === null) return false;
  slotWaits.set(req, tries + 1);
  // Its client may have left meanwhile: runAlone (called again by block) answers it without sending anything.
  setTimeout(() => block(session, req, spec, session.ctx.topology), delay).unref();
  return true;
}

/**
 * commands.scripts: isolated: a script call on a lease of its own, alone in its client's order (as a blocking
 * command), so a script that runs for long holds only this connection: other clients' commands to its shard are
 * not queued behind it in keymux, and reach the shard, which answers them BUSY (or runs them) as it would a direct
 * client, and SCRIPT KILL reaches it. A script with no declared key runs on the keyless shard, as in keyed dispatch.
 * Not a blocked client: drain waits for it (within the grace period) rather than unblocking it, and CLIENT
 * UNBLOCK does not reach it (Redis's does not either), and INFO does not count it blocked. A client that leaves
 * mid-script is cut at once and its lease closed, not reused (clientGone), since the script's reply is still to come
 * on it.
 */
function isolatedScript(session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology): void {
  const idx = session.keyIndexes;
  const n = findKeyIndexes(spec, req.args, idx);
  let group: number;
  if (n === KEYS_ERROR_NO_KEYS) group = topo.router.keylessGroup();
  else if (n <= 0) {
    // A numkeys the server rejects: it answers in its own words without running anything (as keyed dispatch).
    if (isKeylessOrBadNumkeys(n)) dispatchOneShard(session, req, spec, topo);
    else req.deliver(keysErrorReply(n, spec));
    return;
  } else {
    group = groupOfKeys(session, req, spec, topo);
    if (group < 0) return;
    if (heldForMigration(session, req, spec, topo, null)) return;
  }
  if (!session.runAlone(req)) return;
  const lease = leaseFor(session, req, topo, group);
  if (lease === null) return;
  shareEvalScript(session, req, spec, topo, topo.router.shardOfGroup(group));
  // Near cache: a script may write its declared keys (keyed dispatch treats it so too).
  const nc = session.ctx.nearCache;
  if (nc !== null) {
    if (n > 0)
      nc.write(req, idx, n, 1); // idx still holds this command's keys
    else if (mayWrite(spec)) nc.writeAll(req); // no declared key: what it writes is unknown, nothing is read past it
  }
  if (lease.via !== null) session.noteWrite(lease.via); // WAIT waits for what it may have written
  const state = session.sessionState();
  state.busy = lease;
  // As for a blocked client: if it leaves now, nobody will read the script's reply, so it is cut at once and its
  // lease closed (client-session onEnd) rather than waited for.
  state.blocking = true;
  // A key migration starting while the script is on its way waits for its reply (execsAnswered), as for a
  // transaction: it may write keys the migration is about to move.
  session.ctx.sessions.execSent(lease);
  // Not timed (blockMs Infinity): a script may rightly run for long; SCRIPT KILL ends it.
  lease.send(new LeasedCall(session, state, req, lease, true, true, -1, Infinity));
}

/**
 * One command on a lease: a blocking command (the lease is given back with its reply) or a WATCH (the lease
 * stays the client's). Cluster mode: a MOVED/ASK reply is followed on a lease to the named node.
 */
class LeasedCall implements BackendOp, BlockedCall {
  sentAt: number;
  redirects: number;
  readonly sessionId: number;
  readonly frame: Buffer;
  /** A blocking command's own timeout in ms (Infinity: none) or an isolated script's (Infinity); else undefined. */
  readonly blockMs: number | undefined;
  private readonly session: DispatchSession;
  private readonly state: SessionState;
  private readonly req: Request;
  private lease: Lease;
  private readonly releaseAfter: boolean;
  private abortReply: Buffer | null;
  /** An isolated script: counted by a key migration's fence until answered (the lease it was sent on). */
  private fencedOn: Lease | null;
  /** A blocking command's slot (cluster mode): it may be sent again there after a failover (retryLater); else -1. */
  private readonly group: number;
  private retries: number;
  private backoff: NodeJS.Timeout | null;

  constructor(
    session: DispatchSession,
    state: SessionState,
    req: Request,
    lease: Lease,
    releaseAfter: boolean,
    fenced = false,
    group = -1,
    blockMs: number | undefined = undefined,
  ) {
    this.blockMs = blockMs;
    this.group = group;
    this.retries = 0;
    this.backoff = null;
    this.fencedOn = fenced ? lease : null;
    this.sentAt = 0;
    this.redirects = 0;
    this.sessionId = session.id;
    this.frame = req.frame;
    this.session = session;
    this.state = state;
    this.req = req;
    this.lease = lease;
    this.releaseAfter = releaseAfter;
    this.abortReply = null;
  }

  deliver(frame: Buffer): void {
    const lease = this.lease;
    if (this.fencedOn !== null) {
      this.session.ctx.sessions.execAnswered(this.fencedOn);
      this.fencedOn = null;
    }
    if (!lease.leased) {
      // Destroyed: its client left, or drain ended it.
      this.req.deliver(this.abortReply ?? frame);
      return;
    }
    if (frame[0] === 45 /* - */ && (this.follow(frame) || this.retryLater(frame))) return;
    const state = this.state;
    if (state.busy === lease) state.busy = null;
    if (this.releaseAfter) {
      state.blocking = false;
      this.session.ctx.sessions.blocked.delete(this.session.id);
      lease.release();
    }
    this.req.deliver(frame);
  }

  /** Cluster mode: MOVED/ASK -> the same command on a lease to the named node. True when it took over. */
  private follow(frame: Buffer): boolean {
    const r = parseRedirect(frame);
    if (r === null) return false;
    const ctx = this.session.ctx;
    if (r.kind === 'invalid' || this.redirects >= MAX_REDIRECTS) {
      this.finishWith(
        r.kind === 'invalid'
          ? errorReply(`ERR keymux: invalid redirection from the cluster (${r.reason})`)
          : ERR_TOO_MANY_REDIRECTS,
      );
      return true;
    }
    const target = withHost(r, hostOf(this.lease.pool.address));
    if (r.kind === 'moved') {
      ctx.stats.moved++;
      ctx.clusterHint();
    } else ctx.stats.ask++;
    const pool = ctx.nodePool(target.address);
    if (pool === null) return false;
    const got = ctx.sessions.lease(pool, this.session.protocol);
    if (!(got instanceof Lease)) {
      this.finishWith(got);
      return true;
    }
    const old = this.lease;
    const state = this.state;
    if (state.watchLease === old) state.watchLease = got;
    if (state.busy === old) state.busy = got;
    got.watching = old.watching;
    old.watching = false;
    old.release();
    this.lease = got;
    this.redirects++;
    if (target.kind === 'ask') got.send(new SideOp(ASKING_FRAME));
    got.send(this);
    return true;
  }

  /**
   * Cluster mode, a blocking command that did not run: its node could not be reached before it was written (a
   * master killed, not yet failed over: ECONNREFUSED), or the node refused it (CLUSTERDOWN while the cluster
   * fails a master over, TRYAGAIN, LOADING). Nothing was popped, so it is sent again after a backoff to its slot's
   * owner then, within cluster.retry, as a plain command is; a slot with no owner yet waits another backoff. True
   * when it took over; the client gets the error only once the retries are spent.
   */
  private retryLater(frame: Buffer): boolean {
    if (this.group < 0 || (this.sentAt !== 0 && retryableError(frame) === null)) return false;
    const delay = clusterBackoffMs(this.session, this.retries);
    if (delay === null) return false;
    this.retries++;
    const ctx = this.session.ctx;
    // The lease stays with the call meanwhile (the client's next commands wait; drain and a leaving client end it
    // through abort, which stops the wait).
    this.backoff = setTimeout(() => {
      this.backoff = null;
      if (!this.lease.leased) {
        // Its client left meanwhile (clientGone destroyed the lease): nothing is sent for it.
        this.req.deliver(this.abortReply ?? frame);
        return;
      }
      const pool = poolOfGroup(ctx.topology, this.group);
      if (pool === null) {
        if (!this.retryLater(frame)) this.finishWith(frame);
        return;
      }
      const got = ctx.sessions.lease(pool, this.session.protocol);
      if (!(got instanceof Lease)) {
        this.finishWith(got);
        return;
      }
      const old = this.lease;
      if (this.state.busy === old) this.state.busy = got;
      old.release(); // closed if its connection failed, else idle again
      this.lease = got;
      this.sentAt = 0;
      this.redirects = 0;
      got.send(this);
    }, delay);
    this.backoff.unref();
    return true;
  }

  private finishWith(reply: Buffer): void {
    const state = this.state;
    if (state.busy === this.lease) state.busy = null;
    if (this.releaseAfter) {
      state.blocking = false;
      this.session.ctx.sessions.blocked.delete(this.session.id);
      this.lease.release();
    } else {
      state.endWatch();
    }
    this.req.deliver(reply);
  }

  unblock(mode: 'timeout' | 'error', onReply: ((frame: Buffer) => void) | null = null): boolean {
    if (!this.lease.leased) return false;
    if (this.backoff !== null) {
      // Waiting to be sent again after a failover (retryLater): not blocked anywhere, so answered here as the node
      // would answer an unblocked call, and CLIENT UNBLOCK (or drain) is told it was unblocked.
      clearTimeout(this.backoff);
      this.backoff = null;
      onReply?.(integerReply(1));
      this.finishWith(
        mode === 'timeout' ? (this.session.protocol === 3 ? NULL_ARRAY_RESP3 : NULL_ARRAY_RESP2) : ERR_UNBLOCKED,
      );
      return true;
    }
    return this.lease.unblock(mode, onReply);
  }

  keysMovedIn(topo: Topology): boolean {
    const spec = this.req.spec;
    if (spec === null || !this.lease.leased) return false;
    const idx: number[] = [];
    const n = findKeyIndexes(spec, this.req.args, idx);
    const node = this.lease.pool.address;
    for (let i = 0; i < n; i++) {
      const shard = topo.shards[topo.router.shardFor(this.req.args[idx[i]])];
      if (shard === undefined || shard.address !== node) return true;
    }
    return false;
  }

  abort(reply: Buffer): void {
    this.abortReply = reply;
    this.session.ctx.sessions.blocked.delete(this.session.id);
    if (this.state.busy === this.lease) this.state.busy = null;
    this.state.blocking = false;
    this.lease.destroy(); // the pending reply comes back as an error, and `reply` is delivered instead
    if (this.backoff !== null) {
      // Waiting to be sent again: nothing is pending on the lease to come back.
      clearTimeout(this.backoff);
      this.backoff = null;
      this.req.deliver(reply);
    }
  }
}

// ---- CLIENT UNBLOCK ----------------------------------------------------------------------------------------------

const TIMEOUT = Buffer.from('timeout');
const ERROR = Buffer.from('error');

/** CLIENT UNBLOCK <id> [TIMEOUT|ERROR]: ids are keymux's (CLIENT ID); the blocked call is unblocked on its node. */
function clientUnblock(session: DispatchSession, req: Request): void {
  const args = req.args;
  if (args.length > 4) {
    req.deliver(errorReply('ERR syntax error'));
    return;
  }
  const id = parseInteger(args[2]);
  if (Number.isNaN(id)) {
    req.deliver(errorReply('ERR value is not an integer or out of range'));
    return;
  }
  let mode: 'timeout' | 'error' = 'timeout';
  if (args.length === 4) {
    if (equalsLower(args[3], ERROR)) mode = 'error';
    else if (!equalsLower(args[3], TIMEOUT)) {
      req.deliver(errorReply('ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR'));
      return;
    }
  }
  const call = session.ctx.sessions.blocked.get(id);
  if (call === undefined || !call.unblock(mode, (frame) => req.deliver(frame))) req.deliver(ZERO);
}

// ---- helpers -------------------------------------------------------------------------------------------------------

/**
 * How long a blocking command may rightly block (ms), its session connection's operation timeout coming on top:
 * Infinity for timeout 0 (for ever). A timeout the server will refuse (negative, not a number) counts as none
 * (0): the server answers at once.
 */
function blockingTimeoutMs(spec: CommandSpec, args: Buffer[]): number {
  let text: string;
  let scale = 1000; // seconds, as a float (BLPOP ... 1.5)
  switch (spec.name) {
    case 'blmpop':
    case 'bzmpop':
      text = args[1].toString('latin1');
      break;
    case 'xread':
    case 'xreadgroup': {
      text = '';
      // The options after XREADGROUP's GROUP group consumer (names that may read "block").
      for (let i = spec.name === 'xreadgroup' ? 4 : 1; i + 1 < args.length && !equalsLower(args[i], STREAMS); i++) {
        if (!equalsLower(args[i], BLOCK)) continue;
        text = args[i + 1].toString('latin1');
        break;
      }
      scale = 1; // milliseconds
      break;
    }
    default:
      text = args[args.length - 1].toString('latin1'); // BLPOP k... timeout, BLMOVE s d LEFT RIGHT timeout, ...
  }
  const t = text.trim() === '' ? Number.NaN : Number(text);
  if (t === 0) return Infinity;
  return Number.isFinite(t) && t > 0 ? t * scale : 0;
}

/** The options of XREAD / XREADGROUP before STREAMS, with the number of arguments each takes. */
const STREAM_READ_OPTIONS: ReadonlyArray<readonly [Buffer, number]> = [
  [Buffer.from('count'), 1],
  [BLOCK, 1],
  [Buffer.from('group'), 2],
  [Buffer.from('noack'), 0],
];

/**
 * XREAD / XREADGROUP whose options are well formed but with a lone argument after STREAMS (a stream and no ID):
 * keymux finds no key in it, and the server answers "Unbalanced ... list of streams" before it could block. Only
 * that shape: one with an option keymux does not know might be one the server runs (and blocks on).
 */
function unbalancedStreams(args: Buffer[]): boolean {
  const argc = args.length;
  for (let i = 1; i < argc;) {
    if (equalsLower(args[i], STREAMS)) return argc - i - 1 === 1;
    const option = STREAM_READ_OPTIONS.find(([name]) => equalsLower(args[i], name));
    if (option === undefined) return false;
    i += option[1] + 1;
  }
  return false;
}

/** XREAD / XREADGROUP: BLOCK among the options before STREAMS. */
function hasBlockOption(args: Buffer[]): boolean {
  for (let i = 1; i < args.length; i++) {
    if (equalsLower(args[i], STREAMS)) return false;
    if (equalsLower(args[i], BLOCK)) return true;
  }
  return false;
}

/** The one router group of the command's keys; -1 after answering the request with the error. */
function groupOfKeys(session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology): number {
  const idx = session.keyIndexes;
  const n = findKeyIndexes(spec, req.args, idx);
  if (n <= 0) {
    req.deliver(keysErrorReply(n, spec));
    return -1;
  }
  const router = topo.router;
  const group = router.groupFor(req.args[idx[0]]);
  for (let i = 1; i < n; i++) {
    if (router.groupFor(req.args[idx[i]]) !== group) {
      req.deliver(ERR_CROSSSLOT);
      return -1;
    }
  }
  return group;
}

/**
 * During a key migration (slots/ring reload): keys of the command (or of the queued commands, for EXEC) still on
 * their old shard are moved first, and the request is dispatched again afterwards, as keyed commands are.
 */
function heldForMigration(
  session: DispatchSession,
  req: Request,
  spec: CommandSpec | null,
  topo: Topology,
  queued: QueuedCommand[] | null,
  failed?: () => void,
): boolean {
  const migration = topo.migration;
  if (migration === null || !migration.active) return false;
  const idx = session.keyIndexes;
  if (queued !== null) {
    const keys: Buffer[] = [];
    for (const q of queued) {
      if (q.local) continue;
      const n = findKeyIndexes(q.spec, q.args, idx);
      for (let i = 0; i < n; i++) keys.push(q.args[idx[i]]);
    }
    return session.holdForMigration(req, migration, idx, 0, keys, failed);
  }
  const n = findKeyIndexes(spec as CommandSpec, req.args, idx);
  return n > 0 && session.holdForMigration(req, migration, idx, n);
}

/**
 * A reload came between the transaction's WATCH or first queued key (state.topo) and now (`topo`): its groups are
 * found again in `topo`, where a shard may have another index (slots and ring modes: a group is a shard's index),
 * and its keys' owners are checked. With WATCH the transaction can only run on the node holding the watches (the
 * lease): if a watched or queued key is owned by another node now, it is marked stale and EXEC answers a null
 * reply, as Redis does when a watched key changed. Not to be left to the node: a key that did not exist is moved
 * by nobody, so the old owner's WATCH does not see the move, and EXEC would succeed there, writing where keymux no
 * longer reads. A reload that leaves the keys on that node changes nothing. Without WATCH nothing has reached a
 * shard: EXEC goes to the keys' owner in `topo`, unless they are on different shards now (stale: EXECABORT).
 * Cluster mode: groups are slots, the same in every snapshot, and a node that lost a slot answers MOVED.
 */
function rebaseTransaction(session: DispatchSession, state: SessionState, topo: Topology): void {
  state.topo = topo;
  const router = topo.router;
  if (router.groupsAreSlots) return;
  const lease = state.watchLease;
  const at = lease === null ? null : lease.pool.address;
  let group = -1;
  let stale = false;
  const check = (key: Buffer): void => {
    const g = router.groupFor(key);
    if (group === -1) group = g;
    else if (g !== group) stale = true;
    if (at !== null && topo.shards[router.shardOfGroup(g)]?.address !== at) stale = true;
  };
  for (const key of state.watchKeys) check(key);
  const idx = session.keyIndexes;
  for (const q of state.queued) {
    if (q.local) continue;
    const n = findKeyIndexes(q.spec, q.args, idx);
    for (let i = 0; i < n; i++) check(q.args[idx[i]]);
  }
  if (stale) state.stale = true;
  if (lease !== null) state.watchGroup = group;
  if (state.inMulti && group !== -1) state.group = group;
}

/** The master pool of a group's shard now, or null when no master serves it (cluster failover). */
function poolOfGroup(topo: Topology, group: number): ShardPool | null {
  const shard = topo.shards[topo.router.shardOfGroup(group)];
  return shard === undefined ? null : shard.pool;
}

/** A lease on the group's shard, or null after answering the request with why not. */
function leaseFor(session: DispatchSession, req: Request, topo: Topology, group: number): Lease | null {
  const pool = poolOfGroup(topo, group);
  if (pool === null) {
    req.deliver(ERR_SLOT_NOT_SERVED);
    return null;
  }
  const got = session.ctx.sessions.lease(pool, session.protocol);
  if (!(got instanceof Lease)) {
    req.deliver(got);
    return null;
  }
  return got;
}
