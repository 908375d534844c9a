/**
 * ProxyContext: what a client session needs from the proxy, as a narrow interface so sessions do not depend on
 * the Proxy class: the current topology snapshot (read once per request), plain-number counters, and hooks the
 * session calls when a reply is written and when it closes.
 */
import type { Request } from '../core/request.js';
import type { Topology } from '../routing/topology.js';
import type { PubSubHub } from '../pubsub/hub.js';
import type { AuthGuard } from '../security/auth-guard.js';
import type { SessionPools } from '../session/session-pool.js';
import type { ShardPool } from '../backend/pool.js';
import type { NearCache } from '../nearcache/near-cache.js';
import type { ScriptMemory } from '../keyspace/script-memory.js';
import type { ScanEpochs } from '../keyspace/scan-epochs.js';
import type { MigrationHold } from '../migration/migration.js';
import type { ClientDirectory } from '../commands/client-list.js';

export interface ProxyStats {
  bytesIn: number;
  bytesOut: number;
  protocolErrors: number;
  clientsAccepted: number;
  clientsRejected: number;
  /** Clients disconnected because replies they did not read passed clients.max_output_bytes. */
  outputLimitDisconnects: number;
  /** Clients closed for holding an unfinished command past clients.partial_command_timeout_s (slowloris). */
  partialCommandTimeouts: number;
  /** Connections refused because clients.max_new_connections_per_s was reached. */
  connectionRateRefused: number;
  /** Clients disconnected to bring the bytes held for all clients back under limits.max_buffered_bytes. */
  bufferEvictions: number;
  commands: number;
  /** Cluster mode: MOVED and ASK redirections absorbed, retries (TRYAGAIN, CLUSTERDOWN, node down), bad redirects. */
  moved: number;
  ask: number;
  retries: number;
  /** Cluster mode: retries that answered -TRYAGAIN (a multi-key command in a slot being migrated). */
  tryagain: number;
  invalidRedirects: number;
  /** Config reloads applied, rejected, and not applied because the configuration equals the running one. */
  reloadsOk: number;
  reloadsFailed: number;
  reloadsUnchanged: number;
  /** TLS handshakes with clients that failed (no or wrong client certificate, not TLS, timeout). */
  tlsHandshakeFailures: number;
  /** Admin requests refused: no or wrong token, or a cross-origin / browser-style request. */
  adminRefused: number;
}

export function newProxyStats(): ProxyStats {
  return {
    bytesIn: 0,
    bytesOut: 0,
    protocolErrors: 0,
    clientsAccepted: 0,
    clientsRejected: 0,
    outputLimitDisconnects: 0,
    partialCommandTimeouts: 0,
    connectionRateRefused: 0,
    bufferEvictions: 0,
    commands: 0,
    moved: 0,
    ask: 0,
    retries: 0,
    tryagain: 0,
    invalidRedirects: 0,
    reloadsOk: 0,
    reloadsFailed: 0,
    reloadsUnchanged: 0,
    tlsHandshakeFailures: 0,
    adminRefused: 0,
  };
}

export interface SessionLike {
  readonly id: number;
}

export interface ProxyContext {
  /** The current immutable topology snapshot; replaced by reference on reload. */
  readonly topology: Topology;
  readonly stats: ProxyStats;
  readonly startedAt: number;
  readonly version: string;
  /** redis_version reported by the backends (for INFO/HELLO), "unknown" until seen. */
  readonly backendVersion: string;
  /** Pub/sub: every client subscription, multiplexed over shared subscriber connections. */
  readonly pubsub: PubSubHub;
  /** Failed AUTHs: how long each reply waits and when a connection is closed. */
  readonly authGuard: AuthGuard;
  /** Session connections (transactions, WATCH, blocking commands), leased per node. */
  readonly sessions: SessionPools;
  /** Cluster mode: a sign that slots moved (a MOVED seen on a session connection): rediscover soon. */
  clusterHint(): void;
  /** Cluster mode: the shared pool of a master named by a redirection (created on first use); null otherwise. */
  nodePool(address: string): ShardPool | null;
  /** Near cache and request coalescing (src/nearcache/); null when both are off. */
  readonly nearCache: NearCache | null;
  /** Scripts and functions loaded through keymux, replayed on shards added later. */
  readonly scripts: ScriptMemory;
  /** The routings SCAN walks began under (SCAN across a reload). */
  readonly scanEpochs: ScanEpochs;
  /**
   * A hold on key moves for a command sent to every shard (server/dispatch/broadcast.ts): this process's MIGRATEs,
   * or, in a worker that follows a coordinated migration, the leader's (asked through the primary).
   */
  pauseMigrations(): MigrationHold;
  clientCount(): number;
  /** CLIENT LIST / KILL: the process's client connections (with workers, every worker's). */
  readonly clients: ClientDirectory;
  sessionClosed(session: SessionLike): void;
  /** Called for every request whose reply is written to its client. */
  onReplied(req: Request): void;
  /** Called for each key routed to a shard (hot-key tracking samples; the shard is looked up only for reports). */
  onKeyRouted(key: Buffer): void;
}
