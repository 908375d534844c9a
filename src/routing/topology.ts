/**
 * Topology: an immutable snapshot of where keys live and how to reach them: the shards (name, address, slots or
 * weight) with their connection pools, the router, and the command table. It is built from one validated config
 * (slots and ring modes) or from one discovered Redis Cluster view (cluster mode: a shard is a master, with its
 * replicas' pools for read_from: replica). The proxy holds the current snapshot and swaps it by reference on
 * reload or rediscovery; requests read it once and keep using the pools they were sent to. Pools whose shard,
 * address and connection settings are unchanged are carried over from the previous snapshot, so a reload does not
 * drop their connections.
 */
import type { Endpoint, KeymuxConfig, ShardConfig } from '../config/schema.js';
import { ShardPool } from '../backend/pool.js';
import type { BackendOptions, RedirectHandler } from '../backend/backend-connection.js';
import type { BackendOp, Resender } from '../core/request.js';
import type { CommandTable } from '../commands/table.js';
import { buildRouter, SlotRouter, type Router } from './router.js';
import { SlotMap } from './slot-map.js';
import { ketamaKey } from './ketama.js';
import { childLogger } from '../log.js';
import { StatsRegistry } from '../metrics/stats.js';
import type { Migration } from '../migration/migration.js';
import { AccessControl, type UserDefinition } from '../security/acl.js';

export interface ShardRuntime {
  readonly index: number;
  readonly config: ShardConfig;
  readonly name: string;
  readonly address: string;
  readonly pool: ShardPool;
  /**
   * Pools of this shard's replicas: cluster mode, the master's replicas (READONLY connections); slots and ring
   * modes, the static `replicas` of the shard or those the sentinels name.
   */
  readonly replicas: readonly ShardPool[];
  /** Where this shard's read-only commands go (its own read_from, else the top-level one). */
  readonly readFrom: ReadFrom;
  /** The sentinels' master name when the sentinels name this shard's primary; null for a fixed address. */
  readonly sentinelMaster: string | null;
}

export type ReadFrom = 'master' | 'replica' | 'prefer-replica';

/** What the sentinels say of one master: its primary now and its replicas fit to be asked. */
export interface SentinelMasterView {
  readonly primary: Endpoint;
  readonly replicas: readonly Endpoint[];
}

/** The sentinels' view of every sentinel_master shard, by master name (backend/sentinel.ts keeps it current). */
export type SentinelView = ReadonlyMap<string, SentinelMasterView>;

/** What a snapshot takes beyond its config; each absent field is carried over from the previous snapshot. */
export interface TopologyExtras {
  sentinelView?: SentinelView;
  sentinelHandler?: RedirectHandler | null;
  hotKeys?: HotKeyTest | null;
}

/** Called for each key of a read: true when reads of it should go to replicas (hot_keys.read_from_replicas). */
export type HotKeyTest = (key: Buffer) => boolean;

/** What cluster discovery hands to a topology: the slot owners and a pool per master and replica. */
export interface ClusterPlan {
  /** slot -> index into masters (0xffff = not served). */
  readonly slotOwner: Uint16Array;
  readonly masters: ReadonlyArray<{ address: string; host: string; port: number; id: string }>;
  readonly masterPools: readonly ShardPool[];
  readonly replicaPools: ReadonlyArray<readonly ShardPool[]>;
  readonly readFrom: ReadFrom;
  /** Takes over an op whose slot has no master in this view (retry later); false when it gives up. */
  readonly onUnserved: UnservedHandler;
  /** Re-sends units that sessions held back to keep a client's commands in order (the cluster controller). */
  readonly resender: Resender;
}

/** Cluster mode: what a session does with a request (or fragment) whose slot no master serves in this snapshot. */
export type UnservedHandler = (op: BackendOp) => boolean;

/** The users clients.users defines, as the ACL compiler takes them. */
export function userDefinitions(config: KeymuxConfig): UserDefinition[] {
  return config.clients.users.map((u) => ({
    name: u.name,
    passwords: u.password === null ? u.passwords : [u.password, ...u.passwords],
    nopass: u.nopass,
    rules: u.rules,
    operator: u.operator,
  }));
}

function accessControlFor(config: KeymuxConfig, table: CommandTable): AccessControl {
  return new AccessControl(userDefinitions(config), config.clients.password, table);
}

function sameUsers(a: KeymuxConfig, b: KeymuxConfig): boolean {
  return (
    a.clients === b.clients ||
    (a.clients.password === b.clients.password && JSON.stringify(a.clients.users) === JSON.stringify(b.clients.users))
  );
}

export class Topology {
  readonly config: KeymuxConfig;
  readonly shards: readonly ShardRuntime[];
  readonly router: Router;
  readonly table: CommandTable;
  /** The users of this config compiled against this table (reused from the previous snapshot when neither changed). */
  readonly acl: AccessControl;
  readonly version: number;
  /** Counters by shard and command, shared by every snapshot of one proxy. */
  readonly stats: StatsRegistry;
  readonly readFrom: ReadFrom;
  /**
   * Cluster mode: takes over ops for slots this snapshot gives no master (the controller retries them with
   * backoff and a refresh, as for -CLUSTERDOWN); null otherwise, and the op gets "-CLUSTERDOWN Hash slot not served".
   */
  readonly onUnserved: UnservedHandler | null;
  /** Cluster mode: re-sends units held by a session's ordering fence (server/order-fence.ts); null otherwise. */
  readonly resender: Resender | null;
  /**
   * Keys moving because this snapshot changed their owner (set once, by the proxy, before the snapshot is
   * installed; the Migration itself is the mutable part). null when no migration started with this snapshot.
   */
  migration: Migration | null = null;
  /** Slots and ring modes: where sentinel_master shards' primaries and replicas are now (empty without any). */
  readonly sentinelView: SentinelView;
  /**
   * hot_keys.read_from_replicas: reads of keys this says are hot go to replicas even under read_from: master;
   * null when off or when no shard has replicas (then a read to a master shard costs nothing more).
   */
  readonly hotKeyReads: HotKeyTest | null;
  /** Follows sentinel shards' failovers: the redirect handler of their primary pools (null without any). */
  readonly sentinelHandler: RedirectHandler | null;

  constructor(
    config: KeymuxConfig,
    table: CommandTable,
    version: number,
    previous: Topology | null,
    stats?: StatsRegistry,
    cluster?: ClusterPlan,
    extras: TopologyExtras = {},
  ) {
    this.config = config;
    this.table = table;
    this.acl =
      previous !== null && previous.table === table && sameUsers(previous.config, config)
        ? previous.acl
        : accessControlFor(config, table);
    this.version = version;
    this.stats = stats ?? previous?.stats ?? new StatsRegistry();
    this.sentinelView = extras.sentinelView ?? previous?.sentinelView ?? new Map<string, SentinelMasterView>();
    this.sentinelHandler =
      extras.sentinelHandler !== undefined ? extras.sentinelHandler : (previous?.sentinelHandler ?? null);
    if (cluster !== undefined) {
      this.hotKeyReads = null;
      const map = SlotMap.fromOwners(cluster.slotOwner);
      this.router = new SlotRouter(map, '{}', true);
      this.readFrom = cluster.readFrom;
      this.onUnserved = cluster.onUnserved;
      this.resender = cluster.resender;
      this.shards = Object.freeze(
        cluster.masters.map((m, index) =>
          Object.freeze({
            index,
            config: Object.freeze({
              name: m.address,
              named: false,
              address: m.address,
              host: m.host,
              port: m.port,
              slots: map.rangesOf(index),
              weight: 1,
            }),
            name: m.address,
            address: m.address,
            pool: cluster.masterPools[index],
            replicas: Object.freeze([...(cluster.replicaPools[index] ?? [])]),
            readFrom: cluster.readFrom,
            sentinelMaster: null,
          }),
        ),
      );
      return;
    }
    this.router = buildRouter(config);
    this.readFrom = config.readFrom;
    this.onUnserved = null;
    this.resender = null;
    const log = childLogger('backend');
    const reusable = new Map<string, ShardPool>();
    if (previous !== null) {
      for (const s of previous.shards) {
        reusable.set(poolKey(s.config, previous.config), s.pool);
        for (const r of s.replicas) reusable.set(replicaPoolKey(s.name, r.shard.address, previous.config), r);
      }
    }
    const take = (key: string, make: () => ShardPool): ShardPool => {
      const pool = reusable.get(key);
      if (pool === undefined) return make();
      reusable.delete(key);
      return pool;
    };
    const view = this.sentinelView;
    this.shards = Object.freeze(
      config.shards.map((declared, index) => {
        const master = declared.sentinelMaster ?? null;
        const seen = master !== null ? view.get(master) : undefined;
        if (master !== null && seen === undefined) {
          throw new Error(`keymux: shard ${declared.name}: the sentinels named no primary for ${master} yet`);
        }
        // A sentinel shard runs on its primary of the moment; its config keeps its name (the ring's identity).
        const shard: ShardConfig =
          seen === undefined ? declared : Object.freeze({ ...declared, ...seen.primary, replicas: [] });
        const sentinelOptions = master !== null ? { expectPrimary: true, redirectHandler: this.sentinelHandler } : {};
        const pool = take(
          poolKey(shard, config),
          () =>
            new ShardPool(
              shard,
              config.backend.connections,
              { ...backendOptions(config, false), ...sentinelOptions },
              log,
              this.stats.shard(shard.name, shard.address),
            ),
        );
        const replicaEndpoints = seen?.replicas ?? declared.replicas ?? [];
        const replicas = replicaEndpoints.map((r) =>
          take(replicaPoolKey(shard.name, r.address, config), () => {
            const p = new ShardPool(
              { name: shard.name, address: r.address, host: r.host, port: r.port },
              config.backend.connections,
              backendOptions(config, false),
              log,
              this.stats.shard(`${shard.name}/${r.address}`, r.address),
            );
            // Serves reads once backend/replica-checks.ts has seen it fit (not loading, in sync, not lagging).
            p.readable = false;
            p.readableReason = 'not checked yet';
            return p;
          }),
        );
        return Object.freeze({
          index,
          config: shard,
          name: shard.name,
          address: shard.address,
          pool,
          replicas: Object.freeze(replicas),
          readFrom: declared.readFrom ?? config.readFrom,
          sentinelMaster: master,
        });
      }),
    );
    const anyReplicas = this.shards.some((s) => s.replicas.length > 0);
    this.hotKeyReads =
      config.metrics.hotKeys.readFromReplicas && anyReplicas
        ? extras.hotKeys !== undefined
          ? extras.hotKeys
          : (previous?.hotKeyReads ?? null)
        : null;
  }

  /**
   * The pool a read-only command for `shard` goes to: under read_from replica / prefer-replica, one of its replicas
   * (chosen by session, skipping those that are down), else the master. prefer-replica falls back to the master when
   * no replica is usable; replica does not: null (the caller answers a clear error, never silently the master).
   */
  readPool(shard: ShardRuntime, sessionId: number, key?: Buffer): ShardPool | null {
    const replicas = shard.replicas;
    const n = replicas.length;
    if (n === 0) return shard.pool;
    let readFrom = shard.readFrom;
    if (readFrom === 'master') {
      // Hot keys, second cure: their reads spread over the replicas, the primary still serving when none can.
      const hot = this.hotKeyReads;
      if (hot === null || key === undefined || !hot(key)) return shard.pool;
      readFrom = 'prefer-replica';
    }
    for (let i = 0; i < n; i++) {
      const p = replicas[(sessionId + i) % n];
      if (p.usable && p.readable) return p;
    }
    return readFrom === 'prefer-replica' ? shard.pool : null;
  }

  /** Every pool of this snapshot (masters and replicas). */
  allPools(): ShardPool[] {
    const out: ShardPool[] = [];
    for (const s of this.shards) out.push(s.pool, ...s.replicas);
    return out;
  }

  /** Starts connecting every pool (idempotent for carried-over pools). */
  connect(): void {
    for (const p of this.allPools()) p.connect();
  }

  /** Pools of `previous` that this topology does not use (to be retired once idle). */
  retiredPools(previous: Topology): ShardPool[] {
    const kept = new Set(this.allPools());
    return previous.allPools().filter((p) => !kept.has(p));
  }

  close(): void {
    for (const p of this.allPools()) p.close();
  }

  /**
   * What decides key placement, as a string: two snapshots with the same signature put every key on the same
   * address (slots: the owner address of each slot and the hash tag; ring: hash, tag and weighted members; both:
   * the routing rules).
   */
  routingSignature(): string {
    const c = this.config;
    if (c.mode === 'ring') {
      return JSON.stringify([
        'ring',
        c.ring.hash,
        c.hashTag,
        // What the ring hashes (ketamaKey: the name, or "host:port" for an unnamed shard) and where the keys are
        // (runtime shards: a sentinel shard's current primary, not its config placeholder).
        this.shards.map((s) => [ketamaKey(s.config), s.address, s.config.weight]),
        ...(c.routing.length > 0 ? [c.routing] : []),
      ]);
    }
    const owners = (this.router as SlotRouter).map.owners;
    const parts: string[] = [c.hashTag ?? ''];
    if (c.routing.length > 0 && c.mode !== 'cluster') parts.push(JSON.stringify(c.routing));
    let prev = -1;
    for (let slot = 0; slot < owners.length; slot++) {
      if (owners[slot] !== prev) {
        prev = owners[slot];
        parts.push(`${slot}=${this.shards[prev]?.address ?? '-'}`);
      }
    }
    return parts.join(',');
  }
}

export function backendOptions(config: KeymuxConfig, readOnly: boolean): BackendOptions {
  const b = config.backend;
  return {
    connectTimeoutMs: b.connectTimeoutMs,
    timeoutMs: b.timeoutMs,
    password: b.password,
    username: b.username,
    readOnly,
    maxPending: b.maxPending,
    tls: b.tls,
  };
}

/** A replica's pool is carried over while its shard, address and connection settings stay the same. */
function replicaPoolKey(shard: string, address: string, config: KeymuxConfig): string {
  return `replica|${shard}|${poolKey({ name: shard, address } as ShardConfig, config)}`;
}

function poolKey(shard: ShardConfig, config: KeymuxConfig): string {
  const b = config.backend;
  return JSON.stringify([
    shard.name,
    shard.address,
    shard.sentinelMaster ?? null,
    b.connections,
    b.connectTimeoutMs,
    b.timeoutMs,
    b.password,
    b.username,
    b.maxPending,
    b.tls,
  ]);
}
