/**
 * Session connections: backend connections a client leases for a while, because the state it builds lives on
 * the connection (a WATCH, a transaction, a blocked BLPOP) and must not be shared with the pipelined per-shard
 * connections of backend/pool.ts. It owns
 * - one SessionPool per node address (a shard in slots and ring modes, a master in cluster mode), bounded by
 *   `backend.session_connections.max` leased + idle connections; past it a lease is refused with a clear error
 *   (the client's command gets it; nothing waits for a free connection, which could deadlock clients that hold
 *   one and wait for each other);
 * - idle reuse: a released connection goes back to its pool's idle stack (most recently used first) and is
 *   closed once idle for `idle_timeout_s` or when more than `max_idle` are idle; a connection that failed, or
 *   whose client left while something was in flight on it, is closed, never reused (a BLPOP completing after
 *   its client left would pop an item nobody receives); when a node leaves the topology (reload, failover,
 *   cluster rediscovery) its idle connections close at once and its leased ones when given back (all at once
 *   for the old primary of a Sentinel failover: closeNode);
 * - the connection's protocol: a lease asks for the client's RESP version and HELLO 2|3 is sent on the
 *   connection when it differs, before the client's first command (and before EXEC on a WATCH lease, when the
 *   client switched protocol since its WATCH: Lease.speak);
 * - the backend CLIENT ID of each connection (asked once, right after the handshake), so a blocked command can be
 *   cancelled with CLIENT UNBLOCK over the node's shared connection: drain answers blocked clients that way (they
 *   get Redis's own timeout reply, nil), and a client's CLIENT UNBLOCK of another keymux client maps to it. A
 *   connection given back while such an unblock is unanswered is held out of the idle stack until it is answered
 *   (closed if it is not answered with an integer): the CLIENT UNBLOCK, late behind the shared connection's
 *   other commands, names the connection, not the client, and would otherwise unblock the next client leasing it;
 *   kept idle meanwhile, the connection runs nothing, so the node answers 0 (not blocked) when the call it was
 *   meant for had already completed, as Redis answers for a client no longer blocked;
 * - the blocked-call registry (keymux client id -> its blocked call) for drain and CLIENT UNBLOCK;
 * - the transactions and isolated scripts in flight (MULTI ... EXEC or EVAL written to a lease, not answered): a key
 *   migration's fence waits for them as for the shared connections' commands (execsAnswered), so none lands on an
 *   old owner after its keys moved.
 * Connections are plain BackendConnections (same handshake: AUTH, TLS; connect.ts) counting into the shard's
 * ShardStats like the shared connections (every reply, keymux's CLIENT ID / HELLO / UNWATCH too; a blocking
 * command's or isolated script's wait is not shard latency and stays out of the histogram), with the shared connections'
 * operation timeout (backend.timeout_ms) for what is not blocking (EXEC batches, WATCH, WAIT's marks, HELLO...),
 * and for a blocking command its own timeout on top (BackendOp.blockMs; none for timeout 0, nor for an isolated
 * script, which may rightly run for long); a timeout fails the connection, which is then closed when given back
 * (its state is unknown). No reconnection (its state dies with the socket) and no redirect handler (the session
 * handler follows MOVED itself).
 */
import { BackendConnection, type BackendOptions, type ShardIdentity } from '../backend/backend-connection.js';
import type { ShardPool } from '../backend/pool.js';
import type { BackendOp } from '../core/request.js';
import type { Topology } from '../routing/topology.js';
import { errorReply } from '../errors.js';
import { childLogger, type Logger } from '../log.js';
import { readInteger } from '../resp/reply-reader.js';
import { commandFrame, integerReply } from '../resp/writer.js';
import { controlCommands } from '../backend/control.js';

export interface SessionSettings {
  /** Leased + idle connections per node. */
  readonly max: number;
  /** Idle connections kept per node. */
  readonly maxIdle: number;
  /** An idle connection is closed after this many seconds (0: kept while under maxIdle). */
  readonly idleTimeoutS: number;
}

/** An operation whose reply only keymux reads (HELLO, CLIENT ID, UNWATCH, ASKING, CLIENT UNBLOCK). */
export class SideOp implements BackendOp {
  sentAt: number;
  redirects: number;
  readonly sessionId: number;
  readonly frame: Buffer;
  private readonly onReply: ((frame: Buffer) => void) | null;

  constructor(frame: Buffer, onReply: ((frame: Buffer) => void) | null = null) {
    this.sentAt = 0;
    this.redirects = 0;
    this.sessionId = 0;
    this.frame = frame;
    this.onReply = onReply;
  }

  deliver(frame: Buffer): void {
    if (this.onReply !== null) this.onReply(frame);
  }
}

const CLIENT_ID = commandFrame(['CLIENT', 'ID']);
const ERR_UNBLOCK_FAILED = errorReply('ERR keymux: CLIENT UNBLOCK could not be sent');
const HELLO_2 = commandFrame(['HELLO', '2']);
const HELLO_3 = commandFrame(['HELLO', '3']);
const UNWATCH = commandFrame(['UNWATCH']);

/** One leased (or idle) connection. */
export class Lease {
  readonly pool: SessionPool;
  readonly conn: BackendConnection;
  /** RESP version the connection speaks now. */
  protocol: number;
  /** The connection's CLIENT ID on the node (-1 until known). */
  backendId: number;
  leased: boolean;
  /** The client may have left WATCH state on it: UNWATCH before it is reused. */
  watching: boolean;
  idleSince: number;
  /** The node's shared pool at lease time (CLIENT UNBLOCK is sent through it). */
  via: ShardPool | null;
  /** CLIENT UNBLOCKs naming this connection that are sent and not answered yet. */
  unblocksPending: number;
  /** Given back while unblocksPending > 0: kept out of the idle stack until they are answered (see unblock). */
  parked: boolean;
  /** A CLIENT UNBLOCK naming it got no integer reply (it may still reach the node): closed when given back. */
  spoiled: boolean;

  constructor(pool: SessionPool, conn: BackendConnection) {
    this.pool = pool;
    this.conn = conn;
    this.protocol = 2;
    this.backendId = -1;
    this.leased = false;
    this.watching = false;
    this.idleSince = 0;
    this.via = null;
    this.unblocksPending = 0;
    this.parked = false;
    this.spoiled = false;
  }

  /** Usable: connected, or on its way (a failure closes a session connection for good). */
  get usable(): boolean {
    const s = this.conn.state;
    return s === 'ready' || s === 'connecting' || s === 'handshake';
  }

  send(op: BackendOp): void {
    this.conn.send(op, op.frame);
  }

  /**
   * Makes the connection speak `protocol` (HELLO 2|3 when it differs) before what is sent next: at lease time, and
   * for a lease a client keeps across commands (its WATCH's) when the client switched protocol meanwhile (HELLO
   * does not drop the connection's watches).
   */
  speak(protocol: number): void {
    if (this.protocol === protocol) return;
    this.send(new SideOp(protocol === 3 ? HELLO_3 : HELLO_2));
    this.protocol = protocol;
  }

  /**
   * Gives the connection back: reused if nothing is in flight on it and it works, else closed; with a CLIENT
   * UNBLOCK naming it unanswered, parked until it is (see unblock).
   */
  release(): void {
    if (!this.leased) return;
    this.leased = false;
    if (this.unblocksPending > 0) {
      this.parked = true; // still counted as leased: it is not free for anyone yet
      return;
    }
    this.pool.released(this);
  }

  /** Closes the connection (its client left mid-command): never reused. */
  destroy(): void {
    const held = this.leased || this.parked;
    this.leased = false;
    this.parked = false;
    this.conn.close();
    if (held) this.pool.dropped(this);
  }

  /**
   * Cancels a blocked command with CLIENT UNBLOCK over the node's shared connection; false when it cannot.
   * `onReply` gets the node's answer: 1 when it unblocked this connection's call, 0 when nothing was blocked on it
   * (the call completed first). Until that answer the connection is not reused (release parks it): the id names
   * the connection, and a late CLIENT UNBLOCK would cancel whatever blocks on it next.
   */
  unblock(mode: 'timeout' | 'error', onReply: ((frame: Buffer) => void) | null = null): boolean {
    const via = this.via;
    if (this.backendId < 0 || via === null) return false;
    const args = ['CLIENT', 'UNBLOCK', String(this.backendId), mode.toUpperCase()];
    this.unblocksPending++;
    const answered = (frame: Buffer): void => {
      this.unblockAnswered(frame[0] === 58 /* : */);
      onReply?.(frame);
    };
    if (via.usable) {
      const frame = commandFrame(args);
      via.pick(0).send(new SideOp(frame, answered), frame);
      return true;
    }
    // The node's shared pool is gone (a reload retired it, or it is down): a connection of its own for this one
    // command, with the pool's credentials and TLS.
    const o = via.options;
    const target = { host: via.shard.host, port: via.shard.port, password: o.password, username: o.username };
    controlCommands({ ...target, timeoutMs: Math.max(1000, o.connectTimeoutMs), tls: o.tls ?? null }, [args]).then(
      ([reply]) => answered(typeof reply === 'number' ? integerReply(reply) : ERR_UNBLOCK_FAILED),
      () => answered(ERR_UNBLOCK_FAILED),
    );
    return true;
  }

  /**
   * A CLIENT UNBLOCK naming this connection was answered (`ran`: with an integer). A parked connection is given
   * back once none is pending. One not answered with an integer (a timeout, a failed connection: it may still be
   * on its way to the node, and would cancel the next client's call) spoils the connection: closed when given back.
   */
  private unblockAnswered(ran: boolean): void {
    this.unblocksPending--;
    if (!ran) this.spoiled = true;
    if (!this.parked || this.unblocksPending > 0) return;
    this.parked = false;
    this.pool.released(this);
  }
}

/** The session connections of one node. */
export class SessionPool {
  readonly name: string;
  readonly address: string;
  /** Connections leased now. */
  leasedCount: number;
  /**
   * The node left the topology: nothing new is leased here unless it comes back, and each connection still leased
   * is closed when its client gives it back (the node may be decommissioned right after the reload).
   */
  retired: boolean;
  private readonly identity: ShardIdentity;
  private readonly idle: Lease[];
  /** The leases counted in leasedCount (leased, or parked until their CLIENT UNBLOCKs are answered). */
  private readonly out: Set<Lease>;
  private readonly owner: SessionPools;

  constructor(owner: SessionPools, identity: ShardIdentity) {
    this.owner = owner;
    this.identity = identity;
    this.name = identity.name;
    this.address = identity.address;
    this.leasedCount = 0;
    this.retired = false;
    this.idle = [];
    this.out = new Set();
  }

  get idleCount(): number {
    return this.idle.length;
  }

  /** A connection for a client speaking `protocol`, or the error reply when the pool is exhausted. */
  lease(shared: ShardPool, protocol: number): Lease | Buffer {
    let lease: Lease | undefined;
    while ((lease = this.idle.pop()) !== undefined && !lease.usable) lease.conn.close();
    if (lease === undefined) {
      const max = this.owner.settings.max;
      if (this.leasedCount >= max) {
        this.owner.exhausted++;
        return errorReply(
          `ERR keymux: no session connection free for shard '${this.name}' (${this.address}): all ` +
            `${max} (backend.session_connections.max) are held by transactions, WATCH or blocking commands; ` +
            'retry later or raise the limit',
        );
      }
      // The shard's counters, as its shared connections': replies, errors and latency over leases count there too.
      const conn = new BackendConnection(this.identity, this.owner.optionsFor(shared), this.owner.log, shared.stats);
      lease = new Lease(this, conn);
      const created = lease;
      conn.connect();
      created.send(
        new SideOp(CLIENT_ID, (frame) => {
          const id = readInteger(frame);
          if (id !== null) created.backendId = id;
        }),
      );
      this.owner.created++;
    }
    lease.speak(protocol);
    lease.leased = true;
    lease.via = shared;
    this.leasedCount++;
    this.out.add(lease);
    return lease;
  }

  released(lease: Lease): void {
    this.leasedCount--;
    this.out.delete(lease);
    if (!lease.usable || this.retired || lease.spoiled) {
      lease.conn.close();
      if (this.retired) this.owner.forgetIfDone(this);
      return;
    }
    if (lease.watching) {
      // Replies on a connection come in order: the UNWATCH is answered before the next client's first command.
      lease.send(new SideOp(UNWATCH));
      lease.watching = false;
    }
    lease.via = null;
    lease.idleSince = Date.now();
    this.idle.push(lease);
    const maxIdle = this.owner.settings.maxIdle;
    while (this.idle.length > maxIdle) (this.idle.shift() as Lease).conn.close();
    this.owner.armSweep();
  }

  dropped(lease: Lease): void {
    this.leasedCount--;
    this.out.delete(lease);
    if (this.retired) this.owner.forgetIfDone(this);
  }

  /** The node left the topology: idle connections close now, leased ones when given back. */
  retire(): void {
    this.retired = true;
    this.close();
  }

  /** Closes idle connections older than `cutoff` (ms since the epoch); returns how many stay idle. */
  sweep(cutoff: number): number {
    const idle = this.idle;
    while (idle.length > 0 && (idle[0].idleSince <= cutoff || !idle[0].usable)) (idle.shift() as Lease).conn.close();
    return idle.length;
  }

  close(): void {
    for (const l of this.idle) l.conn.close();
    this.idle.length = 0;
  }

  /**
   * Closes every connection, leased ones too: what is in flight on them is answered with an error, and their
   * clients get errors until they give them back (then closed, not reused).
   */
  closeAll(): void {
    this.close();
    for (const l of this.out) l.conn.close();
  }
}

/** unblockMoved: CLIENT UNBLOCK tries for one call, and the pause between two. */
const UNBLOCK_TRIES = 100;
const UNBLOCK_RETRY_MS = 20;

/** A client's blocked command, as drain and CLIENT UNBLOCK see it. */
export interface BlockedCall {
  /** When the command was written to its connection (0: not yet, e.g. the connection is still connecting). */
  readonly sentAt: number;
  /** CLIENT UNBLOCK on the node (its reply: Redis's timeout reply, or an -UNBLOCKED error); false when impossible. */
  unblock(mode: 'timeout' | 'error', onReply?: ((frame: Buffer) => void) | null): boolean;
  /** Ends the call with `reply` and closes its connection (used when it cannot be unblocked). */
  abort(reply: Buffer): void;
  /** A key of the call is owned by another node than the one it blocks on, in `topo` (absent: it has no keys). */
  keysMovedIn?(topo: Topology): boolean;
}

/** Every node's session pool, and the calls blocked on them. */
export class SessionPools {
  settings: SessionSettings;
  readonly log: Logger;
  /** Blocked calls by keymux client id. */
  readonly blocked: Map<number, BlockedCall>;
  /** Connections opened, and leases refused because a pool was full (counters, for metrics). */
  created: number;
  exhausted: number;
  private readonly pools: Map<string, SessionPool>;
  /** Leases with a transaction in flight, and the fences waiting for some of them (each: those it waits for). */
  private readonly execs: Set<Lease>;
  private execFences: Array<{ left: Set<Lease>; done: () => void }>;
  private readonly optionsCache: WeakMap<BackendOptions, BackendOptions>;
  private sweepTimer: NodeJS.Timeout | null;

  constructor(settings: SessionSettings) {
    this.settings = settings;
    // Session connections come and go with clients: their connects are not worth an info line each.
    this.log = childLogger('session');
    this.log.level = 'warn';
    this.blocked = new Map();
    this.created = 0;
    this.exhausted = 0;
    this.pools = new Map();
    this.execs = new Set();
    this.execFences = [];
    this.optionsCache = new WeakMap();
    this.sweepTimer = null;
    this.sweep = this.sweep.bind(this);
  }

  /** A session connection to the node of `shared` (the shard's or master's shared pool) for `protocol`. */
  lease(shared: ShardPool, protocol: number): Lease | Buffer {
    const address = shared.shard.address;
    let pool = this.pools.get(address);
    if (pool === undefined) {
      pool = new SessionPool(this, shared.shard);
      this.pools.set(address, pool);
    }
    pool.retired = false; // a node back in the topology before its last lease was given back
    return pool.lease(shared, protocol);
  }

  /**
   * Closes every session connection to `address`, leased ones too (a Sentinel failover: the old primary must run
   * nothing more of keymux's; see SentinelController.apply).
   */
  closeNode(address: string): void {
    this.pools.get(address)?.closeAll();
  }

  /**
   * A new topology is live: the session pools of nodes it does not name are retired. Their idle connections close
   * now rather than after idle_timeout_s (or never, with 0), and the pool leaves the gauges once its last lease is
   * given back. A node that comes back gets its pool again.
   */
  retireAbsent(topo: Topology): void {
    const live = new Set<string>();
    for (const p of topo.allPools()) live.add(p.shard.address);
    for (const pool of this.pools.values()) {
      if (live.has(pool.address) || pool.retired) continue;
      pool.retire();
      this.forgetIfDone(pool);
    }
  }

  /** A retired pool with nothing leased is dropped (a later lease to its address makes a new one). */
  forgetIfDone(pool: SessionPool): void {
    if (pool.retired && pool.leasedCount === 0 && this.pools.get(pool.address) === pool)
      this.pools.delete(pool.address);
  }

  /** A transaction (dispatch/session.ts TransactionRun), or an isolated script, was written to `lease`. */
  execSent(lease: Lease): void {
    this.execs.add(lease);
  }

  /** Its EXEC (or the script) was answered, or failed with the connection. */
  execAnswered(lease: Lease): void {
    if (!this.execs.delete(lease) || this.execFences.length === 0) return;
    const fences = this.execFences;
    this.execFences = [];
    for (const f of fences) {
      f.left.delete(lease);
      if (f.left.size === 0) f.done();
      else this.execFences.push(f);
    }
  }

  /**
   * Calls `done` once every transaction in flight now has been answered (a migration's fence: a reload routes
   * later ones by the new topology), or after `timeoutMs` (0: no limit), as a timed-out PING marker counts.
   */
  execsAnswered(done: () => void, timeoutMs: number): void {
    if (this.execs.size === 0) {
      done();
      return;
    }
    let timer: NodeJS.Timeout | null = null;
    const fence = {
      left: new Set(this.execs),
      done: () => {
        if (timer !== null) clearTimeout(timer);
        done();
      },
    };
    this.execFences.push(fence);
    if (timeoutMs <= 0) return;
    timer = setTimeout(() => {
      const i = this.execFences.indexOf(fence);
      if (i < 0) return;
      this.execFences.splice(i, 1);
      done();
    }, timeoutMs);
    timer.unref();
  }

  /** The shared pool's settings (AUTH, TLS, connect and operation timeouts) for a session connection. */
  optionsFor(shared: ShardPool): BackendOptions {
    let o = this.optionsCache.get(shared.options);
    if (o === undefined) {
      o = {
        ...shared.options,
        maxPending: 0,
        readOnly: false,
        redirectHandler: null,
        reconnect: false,
        blockingOps: true,
      };
      this.optionsCache.set(shared.options, o);
    }
    return o;
  }

  /** Per node: connections leased and idle (for metrics and tests). */
  gauges(): Array<{ shard: string; address: string; leased: number; idle: number }> {
    return [...this.pools.values()].map((p) => ({
      shard: p.name,
      address: p.address,
      leased: p.leasedCount,
      idle: p.idleCount,
    }));
  }

  /** Clients blocked now: their blocking command has been written to the shard (INFO blocked_clients). */
  blockedCount(): number {
    let n = 0;
    for (const call of this.blocked.values()) if (call.sentAt > 0) n++;
    return n;
  }

  /** Connections leased now, over every node. */
  get leasedTotal(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.leasedCount;
    return n;
  }

  /** Drain: every blocked call is unblocked on its node (the client gets nil, as on a timeout) or ended. */
  drain(reply: Buffer): void {
    for (const call of [...this.blocked.values()]) if (!call.unblock('timeout')) call.abort(reply);
  }

  /**
   * A reload installed `topo`: a call blocked on a node that no longer owns its keys would wait there for good (a
   * push now goes to the new owner), so it is unblocked the way drain does it: the client gets nil, as on its
   * timeout, and its next call blocks where the keys are now. Calls whose keys stayed are left alone.
   */
  unblockMoved(topo: Topology, reply: Buffer): void {
    for (const [client, call] of [...this.blocked]) {
      if (call.keysMovedIn?.(topo) === true) this.unblockUntilAnswered(client, call, reply, 0);
    }
  }

  /**
   * CLIENT UNBLOCK for `call`, again while the node answers 0 (not blocked) and the call is unanswered: the command
   * may still be on its way on its own connection (the two connections are read in no set order), and would then
   * block after the first try. Bounded (UNBLOCK_TRIES, UNBLOCK_RETRY_MS apart); a call that cannot be unblocked
   * is ended with `reply`.
   */
  private unblockUntilAnswered(client: number, call: BlockedCall, reply: Buffer, tries: number): void {
    const sent = call.unblock('timeout', (frame) => {
      const notBlocked = frame[0] === 58 /* : */ && frame[1] === 48; /* 0 */
      if (!notBlocked || this.blocked.get(client) !== call || tries + 1 >= UNBLOCK_TRIES) return;
      setTimeout(() => {
        if (this.blocked.get(client) === call) this.unblockUntilAnswered(client, call, reply, tries + 1);
      }, UNBLOCK_RETRY_MS).unref();
    });
    if (!sent) call.abort(reply);
  }

  armSweep(): void {
    if (this.sweepTimer !== null || this.settings.idleTimeoutS <= 0) return;
    this.sweepTimer = setTimeout(this.sweep, Math.min(this.settings.idleTimeoutS * 1000, 5_000));
    this.sweepTimer.unref();
  }

  private sweep(): void {
    this.sweepTimer = null;
    const cutoff = Date.now() - this.settings.idleTimeoutS * 1000;
    let left = 0;
    for (const p of this.pools.values()) left += p.sweep(cutoff);
    if (left > 0) this.armSweep();
  }

  close(): void {
    if (this.sweepTimer !== null) clearTimeout(this.sweepTimer);
    this.sweepTimer = null;
    for (const call of [...this.blocked.values()]) call.abort(errorReply('ERR keymux: shutting down'));
    for (const p of this.pools.values()) p.close();
  }
}
