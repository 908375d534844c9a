/**
 * Topology: an immutable snapshot of where keys live and how to reach them, built from one validated config:
 * the shards (name, address, slots or weight) with their connection pools, the router, and the command table.
 * The proxy holds the current snapshot and swaps it by reference on reload; requests read it once and keep
 * using the pools they were sent to. Pools whose shard address and connection settings are unchanged are
 * carried over from the previous snapshot, so a reload does not drop their connections.
 */
import type { KeymuxConfig, ShardConfig } from '../config/schema.js';
import { ShardPool } from '../backend/pool.js';
import type { BackendOptions } from '../backend/backend-connection.js';
import type { CommandTable } from '../commands/table.js';
import { buildRouter, type Router } from './router.js';
import { childLogger } from '../log.js';
import { StatsRegistry } from '../metrics/stats.js';

export interface ShardRuntime {
  readonly index: number;
  readonly config: ShardConfig;
  readonly name: string;
  readonly address: string;
  readonly pool: ShardPool;
}

export class Topology {
  readonly config: KeymuxConfig;
  readonly shards: readonly ShardRuntime[];
  readonly router: Router;
  readonly table: CommandTable;
  readonly version: number;

  /** Counters by shard and command, shared by every snapshot of one proxy. */
  readonly stats: StatsRegistry;

  constructor(config: KeymuxConfig, table: CommandTable, version: number, previous: Topology | null, stats?: StatsRegistry) {
    this.config = config;
    this.stats = stats ?? previous?.stats ?? new StatsRegistry();
    this.table = table;
    this.version = version;
    this.router = buildRouter(config);
    const log = childLogger('backend');
    const reusable = new Map<string, ShardPool>();
    if (previous !== null) for (const s of previous.shards) reusable.set(poolKey(s.config, previous.config), s.pool);
    this.shards = Object.freeze(config.shards.map((shard, index) => {
      const key = poolKey(shard, config);
      let pool = reusable.get(key);
      if (pool === undefined) pool = new ShardPool(shard, config.backend.connections, backendOptions(config), log,
        this.stats.shard(shard.name, shard.address));
      else reusable.delete(key);
      return Object.freeze({ index, config: shard, name: shard.name, address: shard.address, pool });
    }));
  }

  /** Starts connecting every pool (idempotent for carried-over pools). */
  connect(): void {
    for (const s of this.shards) s.pool.connect();
  }

  /** Pools of `previous` that this topology does not use (to be retired once idle). */
  retiredPools(previous: Topology): ShardPool[] {
    const kept = new Set(this.shards.map((s) => s.pool));
    return previous.shards.map((s) => s.pool).filter((p) => !kept.has(p));
  }

  close(): void {
    for (const s of this.shards) s.pool.close();
  }
}

function backendOptions(config: KeymuxConfig): BackendOptions {
  const b = config.backend;
  return { connectTimeoutMs: b.connectTimeoutMs, timeoutMs: b.timeoutMs, password: b.password, username: b.username, readOnly: false };
}

function poolKey(shard: ShardConfig, config: KeymuxConfig): string {
  const b = config.backend;
  return JSON.stringify([shard.name, shard.address, b.connections, b.connectTimeoutMs, b.timeoutMs, b.password, b.username]);
}
