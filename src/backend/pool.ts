/**
 * ShardPool: the connections of one shard, shared by every client. A client always uses the same connection of
 * a shard (chosen by its session id), so its commands to that shard stay in order; different clients spread over
 * the pool. The pool reports the shard's health as the best state of its connections.
 *
 * Protocols: the pool's own connections speak RESP2. Clients that switched to RESP3 (HELLO 3) use the pool's
 * RESP3 twin (`resp3()`): as many connections to the same shard, HELLO 3 in their handshake, created and
 * connected the first time a RESP3 client sends there, sharing the shard's counters. So a RESP2 client's path is
 * exactly what it was, and a RESP3 client gets the backend's own RESP3 replies as bytes, nothing converted. The
 * twin follows its pool: closed with it, retired with it, holding with it (hold()). Health (`healthy`, `usable`) is the RESP2 connections'.
 */
import { BackendConnection, type BackendOptions, type ShardIdentity } from './backend-connection.js';
import type { Logger } from '../log.js';
import type { ShardStats } from '../metrics/stats.js';

export class ShardPool {
  readonly shard: ShardIdentity;
  readonly connections: BackendConnection[];
  readonly options: BackendOptions;

  readonly stats: ShardStats | undefined;
  private readonly log: Logger;
  /** The RESP3 twin (null until a RESP3 client first needs it; always null on a twin itself). */
  private twin: ShardPool | null;
  /** close() or closeWhenIdle() was called: a twin made afterwards follows suit. */
  private ending: 'open' | 'retiring' | 'closed';
  /** Every connection, the twin's too, holds new operations (BackendConnection.holding): see hold(). */
  private holding = false;
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
    this.log = log;
    this.twin = null;
    this.ending = 'open';
    this.readable = true;
    this.readableReason = 'ok';
    this.connections = [];
    // Long-lived, busy connections: reads into slabs. Their readiness is the shard's health, so a connection is
    // ready only once the server answered its handshake (a PING when there is nothing else to send).
    const shared = { ...options, slabReads: true, pingHandshake: true };
    for (let i = 0; i < size; i++) this.connections.push(new BackendConnection(shard, shared, log, stats));
  }

  connect(): void {
    for (const c of this.connections) c.connect();
  }

  /** The connection serving client `clientId`. */
  pick(clientId: number): BackendConnection {
    const conns = this.connections;
    return conns.length === 1 ? conns[0] : conns[clientId % conns.length];
  }

  /** The RESP version this pool's connections speak. */
  get protocol(): 2 | 3 {
    return this.options.protocol ?? 2;
  }

  /** The pool serving clients that speak `protocol` (this one for RESP2, the RESP3 twin for RESP3). */
  forProtocol(protocol: number): ShardPool {
    return protocol === 3 ? this.resp3() : this;
  }

  /** The RESP3 twin of this pool, created and connected on first use. */
  resp3(): ShardPool {
    if (this.protocol === 3) return this;
    let twin = this.twin;
    if (twin !== null) return twin;
    twin = new ShardPool(this.shard, this.connections.length, { ...this.options, protocol: 3 }, this.log, this.stats);
    this.twin = twin;
    if (this.holding) twin.hold(true);
    if (this.ending === 'closed') {
      twin.close(); // what is sent there is answered with an error at once, as on this pool
    } else {
      twin.connect();
      // A retired pool still serves what was routed to it before (and cluster re-sends): the twin closes once the
      // op its creation is for, sent right after this returns, has been answered.
      if (this.ending === 'retiring') queueMicrotask(() => twin.closeWhenIdle());
    }
    return twin;
  }

  /** Every connection to the shard, RESP2 and RESP3 (for metrics, and for fences that must cover all of them). */
  allConnections(): BackendConnection[] {
    return this.twin === null ? this.connections : [...this.connections, ...this.twin.connections];
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
    return this.twin === null ? n : n + this.twin.inflight;
  }

  /** Makes every connection (the twin's too) hold new operations, or stop (sentinel.ts: a failover in progress). */
  hold(on: boolean): void {
    this.holding = on;
    for (const c of this.connections) c.holding = on;
    this.twin?.hold(on);
  }

  close(): void {
    this.ending = 'closed';
    for (const c of this.connections) c.close();
    this.twin?.close();
  }

  closeWhenIdle(): void {
    if (this.ending === 'open') this.ending = 'retiring';
    for (const c of this.connections) c.closeWhenIdle();
    this.twin?.closeWhenIdle();
  }
}
