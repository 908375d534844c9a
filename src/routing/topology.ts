/**
 * Topology: an immutable snapshot of where keys live and how to reach them: the shards (name, address, slots or
 * weight) with their connection pools, the router, and the command table. It is built from one validated config
 * (slots and ring modes) or from one discovered Redis Cluster view (cluster mode: a shard is a master, with its
 * replicas' pools for read_from: replica). The proxy holds the current snapshot and swaps it by reference on
 * reload or rediscovery; requests read it once and keep using the pools they were sent to. Pools whose shard,
 * address and connection settings are unchanged are carried over from the previous snapshot, so a reload does not
 * drop their connections.
 */
import type { KeymuxConfig, ShardConfig } from '../config/schema.js';
import { ShardPool } from '../backend/pool.js';
import type { BackendOptions } from '../backend/backend-connection.js';
import type { BackendOp, Resender } from '../core/request.js';
import type { CommandTable } from '../commands/table.js';
import { buildRouter, SlotRouter, type Router } from './router.js';
import { SlotMap } from './slot-map.js';
import { childLogger } from '../log.js';
import { StatsRegistry } from '../metrics/stats.js';
import type { Migration } from '../migration/migration.js';

export interface ShardRuntime {
  readonly index: number;
  readonly config: ShardConfig;
  readonly name: string;
  readonly address: string;
  readonly pool: ShardPool;
  /** Cluster mode: pools of this master's replicas (READONLY connections); empty otherwise. */
  readonly replicas: readonly ShardPool[];
}

export type ReadFrom = 'master' | 'replica' | 'prefer-replica';

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

export class Topology {
  readonly config: KeymuxConfig;
  readonly shards: readonly ShardRuntime[];
  readonly router: Router;
  readonly table: CommandTable;
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

  constructor(
    config: KeymuxConfig,
    table: CommandTable,
    version: number,
    previous: Topology | null,
    stats?: StatsRegistry,
    cluster?: ClusterPlan,
  ) {
    this.config = config;
    this.table = table;
    this.version = version;
    this.stats = stats ?? previous?.stats ?? new StatsRegistry();
    if (cluster !== undefined) {
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
          }),
        ),
      );
      return;
    }
    this.router = buildRouter(config);
    this.readFrom = 'master';
    this.onUnserved = null;
    this.resender = null;
    const log = childLogger('backend');
    const reusable = new Map<string, ShardPool>();
    if (previous !== null) for (const s of previous.shards) reusable.set(poolKey(s.config, previous.config), s.pool);
    this.shards = Object.freeze(
      config.shards.map((shard, index) => {
        const key = poolKey(shard, config);
        let pool = reusable.get(key);
        if (pool === undefined) {
          pool = new ShardPool(
            shard,
            config.backend.connections,
            backendOptions(config, false),
            log,
            this.stats.shard(shard.name, shard.address),
          );
        } else {
          reusable.delete(key);
        }
        return Object.freeze({ index, config: shard, name: shard.name, address: shard.address, pool, replicas: [] });
      }),
    );
  }

  /**
   * The pool a read-only command for `shard` goes to: under read_from replica / prefer-replica, one of its replicas
   * (chosen by session, skipping those that are down), else the master. prefer-replica falls back to the master when
   * no replica is usable; replica does not: null (the caller answers a clear error, never silently the master).
   */
  readPool(shard: ShardRuntime, sessionId: number): ShardPool | null {
    const replicas = shard.replicas;
    const n = replicas.length;
    if (this.readFrom === 'master' || n === 0) return shard.pool;
    for (let i = 0; i < n; i++) {
      const p = replicas[(sessionId + i) % n];
      if (p.usable) return p;
    }
    return this.readFrom === 'prefer-replica' ? shard.pool : null;
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
        c.shards.map((s) => [s.named ? s.name : '', s.address, s.weight]),
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

function poolKey(shard: ShardConfig, config: KeymuxConfig): string {
  const b = config.backend;
  return JSON.stringify([
    shard.name,
    shard.address,
    b.connections,
    b.connectTimeoutMs,
    b.timeoutMs,
    b.password,
    b.username,
    b.maxPending,
    b.tls,
  ]);
}
