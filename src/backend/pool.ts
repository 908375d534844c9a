/**
 * ShardPool: the connections of one shard, shared by every client. A client always uses the same connection of
 * a shard (chosen by its session id), so its commands to that shard stay in order; different clients spread over
 * the pool. The pool reports the shard's health as the best state of its connections.
 */
import { BackendConnection, type BackendOptions, type ShardIdentity } from './backend-connection.js';
import type { Logger } from '../log.js';
import type { ShardStats } from '../metrics/stats.js';

export class ShardPool {
  readonly shard: ShardIdentity;
  readonly connections: BackendConnection[];
  readonly options: BackendOptions;

  readonly stats: ShardStats | undefined;
  /**
   * A replica fit to serve reads (backend/replica-checks.ts: not loading, not syncing, link to its primary up,
   * lag within the bound); always true for primaries and cluster replicas. Read by Topology.readPool.
   */
  readable: boolean;
  /** Why the replica is not readable, or 'ok' (for /shards). */
  readableReason: string;

  constructor(shard: ShardIdentity, size: number, options: BackendOptions, log: Logger, stats?: ShardStats) {
    this.shard = shard;
    this.options = options;
    this.stats = stats;
    this.readable = true;
    this.readableReason = 'ok';
    this.connections = [];
    for (let i = 0; i < size; i++) this.connections.push(new BackendConnection(shard, options, log, stats));
  }

  connect(): void {
    for (const c of this.connections) c.connect();
  }

  /** The connection serving client `clientId`. */
  pick(clientId: number): BackendConnection {
    const conns = this.connections;
    return conns.length === 1 ? conns[0] : conns[clientId % conns.length];
  }

  get healthy(): boolean {
    return this.connections.some((c) => c.state === 'ready');
  }

  /** A connection is up or on its way up (not down after a failure, not closed): worth sending to. */
  get usable(): boolean {
    return this.connections.some((c) => c.state === 'ready' || c.state === 'connecting' || c.state === 'handshake');
  }

  get inflight(): number {
    let n = 0;
    for (const c of this.connections) n += c.inflight;
    return n;
  }

  close(): void {
    for (const c of this.connections) c.close();
  }

  closeWhenIdle(): void {
    for (const c of this.connections) c.closeWhenIdle();
  }
}
