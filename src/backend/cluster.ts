/**
 * ClusterController: keymux in front of a real Redis Cluster (mode: cluster). It owns
 * - discovery: CLUSTER SHARDS (or SLOTS) from the known nodes and the configured seeds, periodically and, debounced,
 *   on any sign of change (MOVED, CLUSTERDOWN, TRYAGAIN, a node going down); each new view becomes a new Topology
 *   snapshot installed by reference (a shard = a master, with its replicas' READONLY pools);
 * - the pools, one per node address (and role), shared across snapshots; pools of nodes that left are retired;
 * - redirections, absorbed so clients never see them: MOVED re-sends the op to the new owner and records the slot
 *   move (applied to a new snapshot once per event-loop turn); ASK sends ASKING then the op to the target without
 *   changing the map; TRYAGAIN, CLUSTERDOWN and an unreachable node retry with bounded exponential backoff,
 *   re-resolving the slot's owner each time. Redirections per op are bounded; past the bound, or for a malformed
 *   or out-of-range redirection, the client gets a clear -ERR, never MOVED/ASK.
 * Ops already written to a node that then fails are not retried (the write may have been applied): they get the
 * node's error, so nothing is duplicated. Ops that never left keymux (queued while the connection was being made)
 * are retried like ops sent to a node that is down. So are ops for a slot the current view gives no master
 * (`retryUnserved`, a failover window): keymux answers -CLUSTERDOWN only once the retries are spent.
 */
import { performance } from 'node:perf_hooks';
import type { KeymuxConfig } from '../config/schema.js';
import { ShardPool } from './pool.js';
import type { BackendConnection, RedirectHandler } from './backend-connection.js';
import { discoverCluster, type ClusterView } from './cluster-discovery.js';
import { parseRedirect, retryableError, formatAddress } from './redirect.js';
import { Topology, backendOptions, type ClusterPlan } from '../routing/topology.js';
import { SlotRouter } from '../routing/router.js';
import type { CommandTable } from '../commands/table.js';
import { Request, type BackendOp, type Resender, type RoutedUnit } from '../core/request.js';
import { Fragment } from '../core/fragment.js';
import { commandFrame } from '../resp/writer.js';
import { errorReply, ERR_SLOT_NOT_SERVED, noReplicaReachable } from '../errors.js';
import type { ProxyStats } from '../server/context.js';
import { childLogger, type Logger } from '../log.js';

const ASKING_FRAME = commandFrame(['ASKING']);
/**
 * `op.redirects` holds two separate counts, each with its own bound: MOVED/ASK redirections (max_redirections)
 * in the low 10 bits, backoff retries (retry.attempts) above them; both are at most 100 (config ranges). One
 * shared count would let a few TRYAGAIN retries of an op in a migrating slot use up the redirections it then
 * needs to follow the slot (ASK, then MOVED), and vice versa. The redirections are counted per attempt (a retry
 * starts them again), so a loop of redirections is bounded by max_redirections per attempt.
 */
const REDIRECT_BITS = 10;
const REDIRECT_MASK = (1 << REDIRECT_BITS) - 1;
const redirectionsOf = (op: BackendOp): number => op.redirects & REDIRECT_MASK;
const retriesOf = (op: BackendOp): number => op.redirects >>> REDIRECT_BITS;
/** Shortest gap between two discoveries triggered by events (periodic refreshes are separate). */
const MIN_EVENT_REFRESH_GAP_MS = 100;

/** What the controller needs from the proxy. */
export interface ClusterHost {
  topology: Topology;
  readonly stats: ProxyStats;
  /** Scripts and functions loaded through keymux: queued on every new master pool before anything else. */
  readonly scripts: { replayOn(pools: readonly ShardPool[]): void };
  installTopology(next: Topology): void;
  nextTopologyVersion(): number;
}

/** The ASKING sent before an ASK-redirected op: its +OK is consumed here. */
class AskingOp implements BackendOp {
  sentAt = 0;
  redirects = 0;
  readonly frame = ASKING_FRAME;
  readonly sessionId: number;
  constructor(sessionId: number) {
    this.sessionId = sessionId;
  }
  deliver(): void {
    // +OK, or an error that the op sent right after it will show in its own reply.
  }
}

export class ClusterController implements RedirectHandler, Resender {
  private readonly host: ClusterHost;
  private config: KeymuxConfig;
  private readonly log: Logger;
  private readonly pools = new Map<string, ShardPool>();
  private view: ClusterView | null = null;
  private periodic: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private lastRefreshAt = 0;
  private readonly pendingMoves = new Map<number, string>();
  private movesScheduled = false;
  private closed = false;

  constructor(host: ClusterHost, config: KeymuxConfig) {
    this.host = host;
    this.config = config;
    this.log = childLogger('cluster');
  }

  private get settings() {
    return this.config.cluster!;
  }

  /** First discovery (errors are logged; keymux keeps trying in the background), then periodic refreshes. */
  async start(): Promise<void> {
    await this.refresh();
    this.schedulePeriodic();
  }

  /**
   * A reload changed the config: the current view is reinstalled at once with the new command table and settings.
   * When the backend connection settings changed (connections, timeouts, credentials...), every node gets new pools
   * built with them; the old pools finish what was sent on them and close once idle (sessions do not route a
   * client's next command until its earlier ones are answered when the snapshot changes, so order holds).
   */
  updateConfig(config: KeymuxConfig, table: CommandTable): void {
    const backendChanged = JSON.stringify(config.backend) !== JSON.stringify(this.config.backend);
    this.config = config;
    const retired = backendChanged ? [...this.pools.values()] : [];
    if (backendChanged) this.pools.clear();
    if (this.view !== null) {
      const router = this.host.topology.router;
      this.install(Uint16Array.from(router instanceof SlotRouter ? router.map.owners : this.view.slotOwner), table);
    }
    for (const pool of retired) pool.closeWhenIdle();
    this.schedulePeriodic();
    this.refreshSoon();
  }

  close(): void {
    this.closed = true;
    if (this.periodic !== null) clearInterval(this.periodic);
    if (this.soon !== null) clearTimeout(this.soon);
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
  }

  get currentView(): ClusterView | null {
    return this.view;
  }

  // ---- redirections (data path, rare) --------------------------------------------------------------------

  interceptReply(op: BackendOp, frame: Buffer, from: BackendConnection): boolean {
    if (op instanceof AskingOp) return false; // its error shows again in the reply of the op sent after it
    const redirect = parseRedirect(frame);
    if (redirect === null) {
      if (retryableError(frame) !== null) return this.retryLater(op, frame);
      return false;
    }
    const stats = this.host.stats;
    if (redirect.kind === 'invalid') {
      stats.invalidRedirects++;
      this.log.warn({ node: from.shard.address, reason: redirect.reason }, 'node sent an invalid redirection');
      this.refreshSoon();
      op.deliver(
        errorReply(`ERR keymux: node ${from.shard.address} sent an invalid cluster redirection (${redirect.reason})`),
      );
      return true;
    }
    if (redirectionsOf(op) >= this.settings.maxRedirections) {
      op.deliver(
        errorReply(
          `ERR keymux: too many cluster redirections (${this.settings.maxRedirections}); last: ${redirect.kind.toUpperCase()} ${redirect.slot} ${redirect.address}`,
        ),
      );
      this.refreshSoon();
      return true;
    }
    op.redirects++;
    const address = redirect.sameHost ? formatAddress(from.shard.host, redirect.port) : redirect.address;
    const asking = redirect.kind === 'ask';
    if (asking) {
      stats.ask++;
    } else {
      stats.moved++;
      this.recordMove(redirect.slot, address);
    }
    const unit = routedUnit(op);
    if (unit !== null) {
      unit.redirectTo = address;
      unit.asking = asking;
      // Behind an ordering fence of its client for this slot, it is re-sent from there, in client order.
      if (unit.owner.holdRedirect(unit)) return true;
      unit.redirectTo = null;
      unit.asking = false;
    }
    this.sendTo(op, address, asking);
    return true;
  }

  /** Sends `op` to the node at `address` (created on first use), after ASKING for an -ASK redirection. */
  private sendTo(op: BackendOp, address: string, asking: boolean): void {
    const master = this.pool(address, false);
    const unit = routedUnit(op);
    if (unit !== null && unit.writes) unit.owner.noteWrite?.(master); // WAIT waits where the write went
    const pool = master.forProtocol(protocolOf(op));
    attribute(op, pool);
    const target = pool.pick(op.sessionId);
    if (asking) target.send(new AskingOp(op.sessionId), ASKING_FRAME);
    target.send(op, op.frame);
  }

  interceptUnavailable(op: BackendOp, from: BackendConnection): boolean {
    // An ASKING that did not get through is moot: the op sent after it is retried on the slot's owner (which
    // answers ASK again if the slot is still migrating).
    if (op instanceof AskingOp) return false;
    return this.retryLater(op, from.unavailableReply);
  }

  /**
   * The current view gives the op's slot no master (a failover window: the failed master is left out until a
   * replica is promoted; or a slot not assigned yet). Handled like -CLUSTERDOWN: retried with backoff against the
   * slot's owner at that time, with a refresh soon; false (the caller answers "-CLUSTERDOWN Hash slot not
   * served") when out of attempts. Installed on every cluster topology as `onUnserved` (bound once).
   */
  readonly retryUnserved = (op: BackendOp): boolean => this.retryLater(op, ERR_SLOT_NOT_SERVED);

  /**
   * Re-sends `op` after a backoff (its client's session holds it so that nothing later of that client for its slot
   * overtakes it: server/order-fence.ts); false (the caller delivers `lastError`) when out of attempts.
   */
  private retryLater(op: BackendOp, lastError: Buffer): boolean {
    const retry = this.settings.retry;
    const retries = retriesOf(op);
    if (retries >= retry.attempts || this.closed) return false;
    const delay = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** retries);
    // One more retry, and a fresh redirection budget: the retry starts again from the slot's owner, and in a
    // migrating slot meets the same ASK each time (ASK, then TRYAGAIN from the target for a multi-key command whose
    // keys are split); counted across retries, that ASK ran out of redirections long before the retries ran out.
    op.redirects = (retries + 1) << REDIRECT_BITS;
    const stats = this.host.stats;
    stats.retries++;
    if (retryableError(lastError) === 'tryagain') stats.tryagain++;
    this.refreshSoon();
    const unit = routedUnit(op);
    if (unit === null) return false; // only client units are retried (control ops are not sent through pools)
    unit.lastError = lastError;
    unit.redirectTo = null;
    unit.asking = false;
    unit.owner.retryInOrder(unit, delay);
    return true;
  }

  /**
   * Sends a unit again (called by the session's ordering fence when its turn comes): to the node a redirection
   * named, to the node a broadcast piece is meant for, or else to the owner of its slot now (a replica of it for a
   * read under read_from replica). When its slot has no owner now, it is retried later, or gets its last error.
   */
  resend(unit: RoutedUnit): void {
    const lastError = unit.lastError ?? ERR_SLOT_NOT_SERVED;
    if (this.closed) {
      unit.deliver(lastError);
      return;
    }
    const to = unit.redirectTo;
    if (to !== null) {
      const asking = unit.asking;
      unit.redirectTo = null;
      unit.asking = false;
      this.sendTo(unit, to, asking);
      return;
    }
    // A MOVED for this slot that the topology does not show yet (it is applied at the next setImmediate): the node it
    // named owns the slot now. Routing by the older topology would send this unit to the old owner while a later unit
    // of the same client, redirected there with MOVED, goes straight to the new one and overtakes it (an ordering
    // fence's wave can leave before the move is applied: cluster-order.test.ts failed so on a loaded machine).
    const moved = unit.group >= 0 ? this.pendingMoves.get(unit.group) : undefined;
    if (moved !== undefined) {
      this.sendTo(unit, moved, false);
      return;
    }
    const topo = this.host.topology;
    let pool: ShardPool | undefined;
    if (unit.group >= 0) {
      const shard = topo.shards[topo.router.shardOfGroup(unit.group)];
      if (shard !== undefined) {
        const chosen = unit.reads ? topo.readPool(shard, unit.sessionId) : shard.pool;
        if (chosen === null) {
          unit.deliver(noReplicaReachable(shard.name));
          return;
        }
        pool = chosen;
      }
    } else if (unit instanceof Fragment && unit.node !== null) {
      // A broadcast piece goes back to the node it was meant for, if that node is still a master.
      const node = unit.node;
      pool = topo.shards.find((s) => s.address === node)?.pool;
      if (pool === undefined) {
        unit.deliver(
          errorReply(`ERR keymux: node ${node} is no longer a master of the cluster; the command was not run there`),
        );
        return;
      }
    }
    if (pool === undefined) {
      if (!this.retryLater(unit, lastError)) unit.deliver(lastError);
      return;
    }
    if (unit.writes) unit.owner.noteWrite?.(pool); // WAIT waits where the write went
    pool = pool.forProtocol(unit.protocol);
    attribute(unit, pool);
    pool.pick(unit.sessionId).send(unit, unit.frame);
  }

  // ---- topology ------------------------------------------------------------------------------------------

  /** Schedules a discovery soon (debounced): something changed. */
  refreshSoon(): void {
    if (this.soon !== null || this.closed) return;
    const wait = Math.max(0, this.lastRefreshAt + MIN_EVENT_REFRESH_GAP_MS - performance.now());
    this.soon = setTimeout(() => {
      this.soon = null;
      void this.refresh();
    }, wait);
  }

  /** Discovers the cluster and installs a new topology if the view changed. Never throws. */
  refresh(): Promise<void> {
    if (this.refreshing !== null) return this.refreshing;
    this.refreshing = this.discover().finally(() => {
      this.refreshing = null;
      this.lastRefreshAt = performance.now();
    });
    return this.refreshing;
  }

  private async discover(): Promise<void> {
    const b = this.config.backend;
    const known =
      this.view === null ? [] : [...this.view.masters, ...this.view.replicasOf.flat()].map((n) => n.address);
    const seeds = [...new Set([...known, ...this.settings.seeds.map((s) => s.address)])];
    let view: ClusterView;
    try {
      view = await discoverCluster(seeds, {
        password: b.password,
        username: b.username,
        timeoutMs: b.connectTimeoutMs,
        tls: b.tls,
      });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cluster discovery failed; keeping the current view');
      return;
    }
    if (this.closed) return;
    this.pendingMoves.clear();
    if (this.view !== null && this.view.signature === view.signature) return;
    this.view = view;
    this.install(view.slotOwner);
    this.log.info(
      { masters: view.masters.length, replicas: view.replicasOf.reduce((n, r) => n + r.length, 0) },
      'cluster topology updated',
    );
  }

  private recordMove(slot: number, address: string): void {
    this.pendingMoves.set(slot, address);
    this.refreshSoon();
    if (this.movesScheduled) return;
    this.movesScheduled = true;
    setImmediate(() => {
      this.movesScheduled = false;
      this.applyMoves();
    });
  }

  /** Applies MOVED slots to a new snapshot now, before the next discovery confirms them. */
  private applyMoves(): void {
    const view = this.view;
    if (view === null || this.pendingMoves.size === 0 || this.closed) return;
    const router = this.host.topology.router;
    const owners = Uint16Array.from(router instanceof SlotRouter ? router.map.owners : view.slotOwner);
    let changed = false;
    for (const [slot, address] of this.pendingMoves) {
      const idx = view.masters.findIndex((m) => m.address === address);
      if (idx >= 0 && owners[slot] !== idx) {
        owners[slot] = idx;
        changed = true;
      }
    }
    this.pendingMoves.clear();
    if (changed) this.install(owners);
  }

  private install(slotOwner: Uint16Array, table: CommandTable = this.host.topology.table): void {
    const view = this.view as ClusterView;
    const plan: ClusterPlan = {
      slotOwner,
      masters: view.masters,
      masterPools: view.masters.map((m) => this.pool(m.address, false)),
      replicaPools: view.replicasOf.map((rs) => rs.map((r) => this.pool(r.address, true))),
      readFrom: this.settings.readFrom,
      onUnserved: this.retryUnserved,
      resender: this,
    };
    const previous = this.host.topology;
    const next = new Topology(this.config, table, this.host.nextTopologyVersion(), previous, previous.stats, plan);
    this.host.installTopology(next);
    // Retire pools of nodes that left the cluster, once idle.
    const used = new Set(next.allPools());
    for (const [key, pool] of this.pools) {
      if (!used.has(pool)) {
        this.pools.delete(key);
        pool.closeWhenIdle();
      }
    }
  }

  /** The pool for a node address (created and connected on first use: a MOVED may name a node not yet seen). */
  pool(address: string, readOnly: boolean): ShardPool {
    const key = `${address}|${readOnly ? 'replica' : 'master'}`;
    let pool = this.pools.get(key);
    if (pool !== undefined) return pool;
    const sep = address.lastIndexOf(':');
    const host = address.slice(0, sep).replace(/^\[|\]$/g, '');
    const port = Number(address.slice(sep + 1));
    const options = { ...backendOptions(this.config, readOnly), redirectHandler: this };
    const stats = this.host.topology.stats.shard(address, address);
    pool = new ShardPool(
      { name: address, address, host, port },
      this.config.backend.connections,
      options,
      this.log,
      stats,
    );
    this.pools.set(key, pool);
    pool.connect();
    // A master keymux has not used before (a new node, or one a MOVED names first): it gets the scripts and
    // functions loaded through keymux ahead of any client command.
    if (!readOnly) this.host.scripts.replayOn([pool]);
    return pool;
  }

  private schedulePeriodic(): void {
    if (this.periodic !== null) clearInterval(this.periodic);
    if (this.closed) return;
    this.periodic = setInterval(() => void this.refresh(), this.settings.refreshIntervalMs);
    this.periodic.unref();
  }
}

/** The client unit behind a backend op (a Request or a Fragment), or null for control ops. */
function routedUnit(op: BackendOp): RoutedUnit | null {
  return op instanceof Request || op instanceof Fragment ? op : null;
}

/** The RESP version an op's replies must be in: its client's when it was routed (control ops: 2). */
function protocolOf(op: BackendOp): number {
  return op instanceof Request || op instanceof Fragment ? op.protocol : 2;
}

/** Hits, misses and latency of a re-sent op count on the node that finally answers it. */
function attribute(op: BackendOp, pool: ShardPool): void {
  if (op instanceof Request || op instanceof Fragment) op.shardStats = pool.stats ?? null;
}
