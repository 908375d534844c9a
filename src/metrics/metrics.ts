/**
 * The one declared list of keymux metrics (METRICS) and the prom-client registry that publishes them. Every
 * metric is one row: name, help, type, label names, and a `read` function that walks the plain-number stats
 * (stats.ts, the proxy's counters, the hot-key tracker) and emits values. Nothing here runs on the data path:
 * counters and gauges are prom-client Counter/Gauge objects whose collect() hook resets them and re-emits the
 * current values at scrape time; histograms are published from the data path's bucket arrays by a small
 * prom-client Histogram subclass that returns those buckets instead of observing values itself. Label objects
 * come precomputed with the stats (shard and command labels), so a scrape allocates little and the data path
 * never touches a label. The registry also carries prom-client's default process and Node.js metrics.
 *
 * Cardinality is bounded by construction: shards come from the config, commands from the command table (one
 * "unknown" for the rest), hot keys are at most K series (only the current top K is emitted at each scrape).
 */
import { Counter, Gauge, Histogram as PromHistogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Topology } from '../routing/topology.js';
import type { ShardPool } from '../backend/pool.js';
import type { ConnectionState } from '../backend/backend-connection.js';
import type { ProxyStats } from '../server/context.js';
import type { Observer } from './observer.js';
import { LATENCY_BUCKETS, type Histogram, type ShardStats } from './stats.js';
import { keyText } from './hotkeys.js';
import type { MigrationProgress } from '../migration/migration.js';
import type { SentinelController } from '../backend/sentinel.js';
import type { PubSubHub } from '../pubsub/hub.js';
import type { SessionPools } from '../session/session-pool.js';
import { KIND_NAMES } from '../pubsub/frames.js';
import type { AuthGuard } from '../security/auth-guard.js';
import type { NearCache } from '../nearcache/near-cache.js';

/** Migrations still moving keys, or else the last one (so a finished migration's totals stay visible). */
function currentMigrations(src: MetricsSource): MigrationProgress[] {
  const all = src.migrationProgress?.() ?? [];
  const active = all.filter((m) => m.state === 'fencing' || m.state === 'running');
  return active.length > 0 ? active : all.slice(-1);
}

/** What the metrics read; the Proxy provides it. */
export interface MetricsSource {
  readonly topology: Topology;
  readonly stats: ProxyStats;
  readonly observer: Observer;
  readonly version: string;
  clientCount(): number;
  /** Bytes held for clients now (unfinished commands, unsent replies), as limits.max_buffered_bytes counts them. */
  clientBufferedBytes(): number;
  readiness(): { ok: boolean; reason: string };
  /** Key migrations after reloads (slots and ring modes), newest last. */
  migrationProgress?(): MigrationProgress[];
  /** When each certificate keymux presents expires (ms since the epoch). */
  certificateExpiry?(): Array<{ port: 'client' | 'admin' | 'backend'; expiresAt: number }>;
  /** Pub/sub: subscriptions, messages, subscriber connections. */
  readonly pubsub?: PubSubHub;
  /** Failed AUTHs (security/auth-guard.ts). */
  readonly authGuard?: AuthGuard;
  /** Sentinel-managed shards: failovers seen and requests held during one (null without sentinel shards). */
  readonly sentinel?: SentinelController | null;
  /** Session connections (transactions, WATCH, blocking commands). */
  readonly sessions?: SessionPools;
  /** Near cache and request coalescing (null or absent: both off). */
  readonly nearCache?: NearCache | null;
}

type Labels = Readonly<Record<string, string>>;
type Emit = (labels: Labels, value: number) => void;
type EmitHistogram = (labels: Labels, h: Histogram) => void;

interface ScalarDef {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
  readonly labels: readonly string[];
  read(src: MetricsSource, emit: Emit): void;
}

interface HistogramDef {
  readonly name: string;
  readonly help: string;
  readonly type: 'histogram';
  readonly labels: readonly string[];
  read(src: MetricsSource, emit: EmitHistogram): void;
}

export type MetricDef = ScalarDef | HistogramDef;

const NO_LABELS: Labels = Object.freeze({});
/** The connection states a shard's connections are counted in (always all of them, so series are stable). */
const STATE_INDEX: Readonly<Record<ConnectionState, number>> = {
  connecting: 0,
  handshake: 1,
  ready: 2,
  down: 3,
  closed: 4,
};
const CONNECTION_STATES = Object.keys(STATE_INDEX) as ConnectionState[];

/** Every shard the proxy has had (counters outlive a reload that removes a shard, so they never go back). */
function allShardStats(src: MetricsSource): Iterable<ShardStats> {
  return src.topology.stats.shards.values();
}

/** Every pool of the current topology (masters, and replicas in cluster mode) with its counters and role. */
function currentPools(src: MetricsSource): Array<{ pool: ShardPool; stats: ShardStats; role: 'master' | 'replica' }> {
  const reg = src.topology.stats;
  const stats = (p: ShardPool): ShardStats => p.stats ?? reg.shard(p.shard.name, p.shard.address);
  const out: Array<{ pool: ShardPool; stats: ShardStats; role: 'master' | 'replica' }> = [];
  for (const s of src.topology.shards) {
    out.push({ pool: s.pool, stats: stats(s.pool), role: 'master' });
    for (const r of s.replicas ?? []) out.push({ pool: r, stats: stats(r), role: 'replica' });
  }
  return out;
}

/**
 * The shard a node's address belongs to, for labels and /shards: the current topology's shard (or cluster replica)
 * at that address; else the name it had when a reload removed it (its counters keep that name); else the address
 * itself, as cluster mode names its shards (a node a MOVED pointed to before discovery listed it).
 */
export function shardNameOf(src: MetricsSource, address: string): string {
  for (const s of src.topology.shards) {
    if (s.address === address) return s.name;
    for (const r of s.replicas ?? []) if (r.shard.address === address) return r.shard.name;
  }
  for (const st of src.topology.stats.shards.values()) if (st.address === address) return st.name;
  return address;
}

/** The current hot keys with their display text (deduplicated) and the shard that owns them now. */
export function hotKeyRows(
  src: MetricsSource,
  mode = src.observer.config.hotKeys.export,
): {
  seconds: number;
  samples: number;
  rows: Array<{ key: string; shard: string; count: number; rate: number; cached: boolean }>;
} {
  const hk = src.observer.hotKeys;
  if (hk === null) return { seconds: 0, samples: 0, rows: [] };
  const topo = src.topology;
  const snap = hk.top();
  const seen = new Set<string>();
  const rows = snap.keys.map((k) => {
    let text = keyText(k.key, mode);
    if (seen.has(text)) text = `${text}#${keyText(k.key, 'hash')}`; // two keys shown alike stay two series
    seen.add(text);
    const shard = topo.shards[topo.router.shardFor(k.key)]?.name ?? '';
    const cached = src.nearCache?.isCached(k.key) ?? false;
    return { key: text, shard, count: k.count, rate: k.rate, cached };
  });
  return { seconds: snap.seconds, samples: snap.samples, rows };
}

const counter = (name: string, help: string, labels: readonly string[], read: ScalarDef['read']): ScalarDef => ({
  name,
  help,
  type: 'counter',
  labels,
  read,
});
const gauge = (name: string, help: string, labels: readonly string[], read: ScalarDef['read']): ScalarDef => ({
  name,
  help,
  type: 'gauge',
  labels,
  read,
});
const histogram = (
  name: string,
  help: string,
  labels: readonly string[],
  read: HistogramDef['read'],
): HistogramDef => ({ name, help, type: 'histogram', labels, read });

/** The one list. Names are keymux_*; docs/observability.md documents each. */
export const METRICS: readonly MetricDef[] = Object.freeze([
  // ---- proxy-wide -------------------------------------------------------------------------------------------
  gauge('keymux_info', 'keymux build and mode (value 1).', ['version', 'mode'], (s, emit) =>
    emit({ version: s.version, mode: s.topology.config.mode }, 1),
  ),
  gauge('keymux_ready', '1 when keymux is ready for traffic (the /readyz answer), else 0.', [], (s, emit) =>
    emit(NO_LABELS, s.readiness().ok ? 1 : 0),
  ),
  gauge('keymux_client_connections', 'Client connections open now.', [], (s, emit) => emit(NO_LABELS, s.clientCount())),
  counter('keymux_client_connections_total', 'Client connections accepted.', [], (s, emit) =>
    emit(NO_LABELS, s.stats.clientsAccepted),
  ),
  counter(
    'keymux_client_connections_rejected_total',
    'Client connections refused because clients.max was reached.',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.clientsRejected),
  ),
  counter(
    'keymux_client_output_limit_disconnects_total',
    'Clients disconnected because replies they had not read passed clients.max_output_bytes.',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.outputLimitDisconnects),
  ),
  counter(
    'keymux_client_partial_command_timeouts_total',
    'Clients closed for leaving a command unfinished past clients.partial_command_timeout_s (slowloris).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.partialCommandTimeouts),
  ),
  counter(
    'keymux_client_connections_rate_limited_total',
    'Client connections refused because clients.max_new_connections_per_s was reached.',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.connectionRateRefused),
  ),
  counter(
    'keymux_client_buffer_evictions_total',
    'Clients disconnected because the bytes held for all clients passed limits.max_buffered_bytes (largest first).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.bufferEvictions),
  ),
  gauge(
    'keymux_client_buffered_bytes',
    'Bytes held for clients now: unfinished commands and replies not yet taken (bounded by limits.max_buffered_bytes).',
    [],
    (s, emit) => emit(NO_LABELS, s.clientBufferedBytes()),
  ),
  counter('keymux_client_received_bytes_total', 'Bytes read from clients.', [], (s, emit) =>
    emit(NO_LABELS, s.stats.bytesIn),
  ),
  counter('keymux_client_sent_bytes_total', 'Bytes written to clients.', [], (s, emit) =>
    emit(NO_LABELS, s.stats.bytesOut),
  ),
  counter(
    'keymux_protocol_errors_total',
    'Client connections closed for sending bytes that are not valid RESP.',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.protocolErrors),
  ),
  counter(
    'keymux_redirections_total',
    'MOVED and ASK redirections absorbed (Redis Cluster mode; 0 otherwise).',
    ['type'],
    (s, emit) => {
      emit(REDIRECT_MOVED, s.stats.moved);
      emit(REDIRECT_ASK, s.stats.ask);
    },
  ),
  counter(
    'keymux_invalid_redirections_total',
    'MOVED/ASK replies refused as malformed or out of range (Redis Cluster mode).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.invalidRedirects),
  ),
  counter(
    'keymux_retries_total',
    'Requests retried with backoff after TRYAGAIN, CLUSTERDOWN or an unreachable node (Redis Cluster mode).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.retries),
  ),
  counter(
    'keymux_tryagain_total',
    'Retries after -TRYAGAIN: a multi-key command met a slot being migrated (Redis Cluster mode).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.tryagain),
  ),
  counter(
    'keymux_config_reloads_total',
    'Config reloads, by result: ok (applied), failed (rejected; the running config stayed) or unchanged (the ' +
      'same config and files as the running ones: nothing applied).',
    ['result'],
    (s, emit) => {
      emit(RELOAD_OK, s.stats.reloadsOk);
      emit(RELOAD_FAILED, s.stats.reloadsFailed);
      emit(RELOAD_UNCHANGED, s.stats.reloadsUnchanged);
    },
  ),
  counter(
    'keymux_client_tls_handshake_failures_total',
    'TLS handshakes with clients that failed (no or wrong client certificate, not TLS, too slow).',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.tlsHandshakeFailures),
  ),
  counter(
    'keymux_auth_failures_total',
    'Failed AUTH and HELLO AUTH attempts (wrong user name or password, or a disabled user).',
    [],
    (s, emit) => emit(NO_LABELS, s.authGuard?.failures ?? 0),
  ),
  counter(
    'keymux_auth_failure_disconnects_total',
    'Client connections closed for failing AUTH clients.auth_failures.close_after times.',
    [],
    (s, emit) => emit(NO_LABELS, s.authGuard?.disconnects ?? 0),
  ),
  counter(
    'keymux_admin_refused_total',
    'Admin requests refused: no or wrong token, a web page (Origin, form or text body), or a DNS name without a token.',
    [],
    (s, emit) => emit(NO_LABELS, s.stats.adminRefused),
  ),
  gauge(
    'keymux_tls_certificate_expiry_seconds',
    'When a certificate keymux presents expires (Unix time), by port: client (tls), admin (admin.tls), backend.',
    ['port'],
    (s, emit) => {
      for (const c of s.certificateExpiry?.() ?? []) emit(CERT_PORT[c.port], Math.floor(c.expiresAt / 1000));
    },
  ),
  gauge(
    'keymux_config_version',
    'Version of the running topology (1 at start, +1 per applied reload).',
    [],
    (s, emit) => emit(NO_LABELS, s.topology.version),
  ),
  gauge('keymux_migrations_active', 'Key migrations in progress after a reload changed key owners.', [], (s, emit) =>
    emit(
      NO_LABELS,
      (s.migrationProgress?.() ?? []).filter((m) => m.state === 'fencing' || m.state === 'running').length,
    ),
  ),
  gauge(
    'keymux_migration_keys_moved',
    'Keys moved to their new shard by the migrations in progress (or the last one).',
    [],
    (s, emit) =>
      emit(
        NO_LABELS,
        currentMigrations(s).reduce((n, m) => n + m.keysMoved, 0),
      ),
  ),
  gauge(
    'keymux_migration_keys_left',
    'Keys on old owners not yet examined by the migrations in progress (0 when none runs).',
    [],
    (s, emit) =>
      emit(
        NO_LABELS,
        currentMigrations(s).reduce((n, m) => n + m.keysLeft, 0),
      ),
  ),

  // ---- per command (client side) ----------------------------------------------------------------------------
  counter(
    'keymux_commands_total',
    'Commands answered to clients, by command (lowercase; subcommands as "container|sub").',
    ['command'],
    (s, emit) => {
      for (const c of s.topology.stats.commands.values()) emit(c.labels, c.count);
    },
  ),
  counter(
    'keymux_command_errors_total',
    'Commands answered with an error reply, by command.',
    ['command'],
    (s, emit) => {
      for (const c of s.topology.stats.commands.values()) emit(c.labels, c.errors);
    },
  ),
  counter(
    'keymux_slow_commands_total',
    'Commands at or above the slow-log threshold (metrics.slowlog.threshold_ms), by command.',
    ['command'],
    (s, emit) => {
      for (const c of s.topology.stats.commands.values()) emit(c.labels, c.slow);
    },
  ),
  histogram(
    'keymux_command_duration_seconds',
    'Client-observed latency: command parsed to reply written, by command.',
    ['command'],
    (s, emit) => {
      for (const c of s.topology.stats.commands.values()) emit(c.labels, c.latency);
    },
  ),

  // ---- per shard (backend side) -----------------------------------------------------------------------------
  gauge(
    'keymux_shard_info',
    'Each shard of the running topology (value 1): address and role (master; replica in cluster mode).',
    ['shard', 'address', 'role'],
    (s, emit) => {
      for (const { pool, stats, role } of currentPools(s))
        emit({ shard: stats.name, address: pool.shard.address, role }, 1);
    },
  ),
  counter(
    'keymux_shard_hits_total',
    'Cache hits: read lookups that found a value, per shard (rules: docs/observability.md).',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.hits);
    },
  ),
  counter(
    'keymux_shard_misses_total',
    'Cache misses: read lookups that found nothing, per shard.',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.misses);
    },
  ),
  counter(
    'keymux_shard_commands_total',
    'Replies received from the shard, on shared and session connections (fragments of split commands count one each).',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.commands);
    },
  ),
  counter(
    'keymux_shard_errors_total',
    'Error replies from the shard (and error elements of EXEC replies).',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.errors);
    },
  ),
  counter(
    'keymux_shard_timeouts_total',
    'Connections to the shard dropped because it made no progress (no reply bytes) for backend.timeout_ms.',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.timeouts);
    },
  ),
  counter(
    'keymux_shard_pushbacks_total',
    'Clients paused (their sockets not read) because a connection to the shard held backend.max_pending operations.',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.pushbacks);
    },
  ),
  // ---- near cache and request coalescing (src/nearcache/) ------------------------------------------------------
  counter(
    'keymux_near_cache_hits_total',
    "Reads answered from keymux's near cache, by the shard owning the key (that shard was not asked).",
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.nearHits);
    },
  ),
  counter(
    'keymux_near_cache_misses_total',
    'Reads looked up in the near cache and not found there (sent to the shard or coalesced), by shard.',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.nearMisses);
    },
  ),
  counter(
    'keymux_coalesced_requests_total',
    'Reads answered with the reply of an identical read of the same key already in flight, by shard.',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.coalesced);
    },
  ),
  counter(
    'keymux_near_cache_evictions_total',
    'Keys evicted from the near cache to stay within near_cache.max_bytes (least recently used first).',
    [],
    (s, emit) => {
      if (s.nearCache) emit(NO_LABELS, s.nearCache.store.counters.evictions);
    },
  ),
  counter(
    'keymux_near_cache_invalidations_total',
    'Keys dropped from the near cache because they changed (a write, an invalidation message, a flush) or ' +
      'their invalidation channel or the topology changed.',
    [],
    (s, emit) => {
      if (s.nearCache) emit(NO_LABELS, s.nearCache.store.counters.invalidations);
    },
  ),
  gauge(
    'keymux_near_cache_bytes',
    'Bytes held by the near cache (keys, replies and per-entry overhead), at most near_cache.max_bytes.',
    [],
    (s, emit) => {
      emit(NO_LABELS, s.nearCache ? s.nearCache.store.bytes : 0);
    },
  ),
  gauge('keymux_near_cache_keys', 'Keys held by the near cache.', [], (s, emit) => {
    emit(NO_LABELS, s.nearCache ? s.nearCache.store.size : 0);
  }),
  gauge(
    'keymux_near_cache_channels_ready',
    'Invalidation channels (one per shard) subscribed and tracking; a shard whose channel is down is not cached.',
    [],
    (s, emit) => {
      if (s.nearCache) emit(NO_LABELS, s.nearCache.channels().filter((c) => c.ready).length);
    },
  ),
  counter('keymux_shard_reconnects_total', 'Reconnection attempts to the shard.', ['shard'], (s, emit) => {
    for (const st of allShardStats(s)) emit(st.labels, st.reconnects);
  }),
  histogram(
    'keymux_shard_duration_seconds',
    'Backend latency: request written to the shard to its reply, per shard (blocking commands and isolated scripts not observed).',
    ['shard'],
    (s, emit) => {
      for (const st of allShardStats(s)) emit(st.labels, st.latency);
    },
  ),
  gauge(
    'keymux_shard_connections',
    'Connections to the shard, by state (connecting, handshake, ready, down, closed).',
    ['shard', 'state'],
    (s, emit) => {
      for (const { pool, stats } of currentPools(s)) {
        const counts = [0, 0, 0, 0, 0];
        for (const c of pool.allConnections()) counts[STATE_INDEX[c.state]]++;
        for (let i = 0; i < CONNECTION_STATES.length; i++) emit(stateLabels(stats, CONNECTION_STATES[i]), counts[i]);
      }
    },
  ),
  gauge('keymux_shard_up', '1 when at least one connection to the shard is ready, else 0.', ['shard'], (s, emit) => {
    for (const { pool, stats } of currentPools(s)) emit(stats.labels, pool.healthy ? 1 : 0);
  }),
  counter(
    'keymux_failovers_total',
    'Primary changes keymux followed for Sentinel-managed shards (the sentinels named a new primary).',
    ['shard'],
    (s, emit) => {
      // Every shard of slots and ring modes (0 for a fixed address); cluster mode follows failovers on its own.
      if (s.topology.config.mode === 'cluster') return;
      for (const sh of s.topology.shards) emit({ shard: sh.name }, s.sentinel?.failovers.get(sh.name) ?? 0);
    },
  ),
  gauge(
    'keymux_sentinel_up',
    "Sentinel-managed shards: 1 while keymux is subscribed to the sentinel's events (it hears failovers at once), " +
      'else 0 (they are then found by the periodic check only, every sentinel.refresh_interval_ms).',
    ['sentinel'],
    (s, emit) => {
      for (const st of s.sentinel?.sentinelStates() ?? []) emit({ sentinel: st.address }, st.up ? 1 : 0);
    },
  ),
  gauge(
    'keymux_shard_role',
    'Nodes of each shard by role (primary, replica): 1 when the node serves its role now (a primary with a ready ' +
      'connection; a replica that is reachable and fit for reads: in sync, not loading, within the lag bound), else 0.',
    ['shard', 'address', 'role'],
    (s, emit) => {
      for (const sh of s.topology.shards) {
        emit({ shard: sh.name, address: sh.address, role: 'primary' }, sh.pool.healthy ? 1 : 0);
        for (const r of sh.replicas) {
          emit({ shard: sh.name, address: r.shard.address, role: 'replica' }, r.healthy && r.readable ? 1 : 0);
        }
      }
    },
  ),
  gauge('keymux_shard_inflight', 'Requests sent to the shard and not answered yet.', ['shard'], (s, emit) => {
    for (const { pool, stats } of currentPools(s)) emit(stats.labels, pool.inflight);
  }),

  // ---- hot keys -------------------------------------------------------------------------------------------------
  gauge(
    'keymux_hot_key_requests_per_second',
    'Estimated requests per second of the current top-K keys over the hot-key window (at most metrics.hot_keys.k series; ' +
      'the key label is the key, or a hash of it with export: hash).',
    ['key', 'shard'],
    (s, emit) => {
      for (const r of hotKeyRows(s).rows) emit({ key: r.key, shard: r.shard }, r.rate);
    },
  ),

  // ---- session connections ----------------------------------------------------------------------------------
  gauge(
    'keymux_session_connections',
    'Session connections per shard (cluster: per master) by state: leased (a transaction, WATCH or blocked ' +
      'command holds it) or idle (kept for reuse); bounded by backend.session_connections.max.',
    ['shard', 'state'],
    (s, emit) => {
      for (const g of s.sessions?.gauges() ?? []) {
        emit({ shard: g.shard, state: 'leased' }, g.leased);
        emit({ shard: g.shard, state: 'idle' }, g.idle);
      }
    },
  ),
  counter(
    'keymux_session_connections_exhausted_total',
    'Transactions, WATCHes and blocking commands refused because their shard had backend.session_connections.max ' +
      'connections leased.',
    [],
    (s, emit) => emit(NO_LABELS, s.sessions?.exhausted ?? 0),
  ),
  counter(
    'keymux_session_connections_opened_total',
    'Session connections opened (an idle one is reused first).',
    [],
    (s, emit) => emit(NO_LABELS, s.sessions?.created ?? 0),
  ),

  // ---- pub/sub ----------------------------------------------------------------------------------------------
  gauge(
    'keymux_pubsub_subscriptions',
    'Client subscriptions now, by kind (channel, pattern, shard channel): what clients asked for.',
    ['kind'],
    (s, emit) => {
      const counts = s.pubsub?.stats.clientSubscriptions;
      for (let k = 0; k < 3; k++) emit(PUBSUB_KIND_LABELS[k], counts?.[k] ?? 0);
    },
  ),
  gauge(
    'keymux_pubsub_backend_subscriptions',
    'Distinct names keymux subscribes to on the backends now, by kind (one backend subscription serves every client).',
    ['kind'],
    (s, emit) => {
      const entries = s.pubsub?.gauges().entries;
      for (let k = 0; k < 3; k++) emit(PUBSUB_KIND_LABELS[k], entries?.[k] ?? 0);
    },
  ),
  gauge(
    'keymux_pubsub_connections',
    'Shared subscriber connections to backend nodes, by state (ready, or not ready: connecting or down).',
    ['state'],
    (s, emit) => {
      const g = s.pubsub?.gauges();
      emit(PUBSUB_READY, g?.connectionsReady ?? 0);
      emit(PUBSUB_NOT_READY, g === undefined ? 0 : g.connections - g.connectionsReady);
    },
  ),
  gauge(
    'keymux_pubsub_node_up',
    "1 while keymux's shared subscriber connection to the node is ready (its handshake answered), else 0; one " +
      'series per node keymux has a subscriber connection to (a node some subscription was placed on).',
    ['shard', 'address'],
    (s, emit) => {
      for (const n of s.pubsub?.nodes() ?? []) {
        emit({ shard: shardNameOf(s, n.address), address: n.address }, n.state === 'ready' ? 1 : 0);
      }
    },
  ),
  gauge(
    'keymux_pubsub_node_subscriptions',
    'Backend subscriptions (channels, patterns, shard channels) keymux keeps on the node: confirmed, or to be made ' +
      'again once its subscriber connection is back.',
    ['shard', 'address'],
    (s, emit) => {
      for (const n of s.pubsub?.nodes() ?? []) {
        emit({ shard: shardNameOf(s, n.address), address: n.address }, n.subscriptions);
      }
    },
  ),
  counter(
    'keymux_pubsub_messages_received_total',
    'Messages received from backends, by kind (channel: message, pattern: pmessage, shard: smessage).',
    ['kind'],
    (s, emit) => {
      const m = s.pubsub?.stats.messages;
      for (let k = 0; k < 3; k++) emit(PUBSUB_KIND_LABELS[k], m?.[k] ?? 0);
    },
  ),
  counter(
    'keymux_pubsub_messages_delivered_total',
    'Messages queued to clients (one per subscribed client reached).',
    [],
    (s, emit) => emit(NO_LABELS, s.pubsub?.stats.delivered ?? 0),
  ),
  counter(
    'keymux_pubsub_resubscriptions_total',
    'Subscriptions made again on a backend after its subscriber connection came back.',
    [],
    (s, emit) => emit(NO_LABELS, s.pubsub?.stats.resubscribes ?? 0),
  ),
  counter(
    'keymux_pubsub_moves_total',
    'Subscriptions placed on another node after a reload, a cluster topology change or a redirection.',
    [],
    (s, emit) => emit(NO_LABELS, s.pubsub?.stats.moves ?? 0),
  ),
  counter(
    'keymux_pubsub_refused_total',
    'Subscriptions a backend refused (the waiting clients got its error; clients subscribed through it were disconnected).',
    [],
    (s, emit) => emit(NO_LABELS, s.pubsub?.stats.refused ?? 0),
  ),
  counter(
    'keymux_pubsub_publishes_gated_total',
    'PUBLISH / SPUBLISH that waited for keymux own subscription on their node to be (re)made.',
    [],
    (s, emit) => emit(NO_LABELS, s.pubsub?.stats.gated ?? 0),
  ),
] as MetricDef[]);

const PUBSUB_KIND_LABELS: readonly Labels[] = KIND_NAMES.map((kind) => Object.freeze({ kind }));
const PUBSUB_READY: Labels = Object.freeze({ state: 'ready' });
const PUBSUB_NOT_READY: Labels = Object.freeze({ state: 'not_ready' });

const REDIRECT_MOVED: Labels = Object.freeze({ type: 'moved' });
const REDIRECT_ASK: Labels = Object.freeze({ type: 'ask' });
const CERT_PORT: Readonly<Record<'client' | 'admin' | 'backend', Labels>> = {
  client: Object.freeze({ port: 'client' }),
  admin: Object.freeze({ port: 'admin' }),
  backend: Object.freeze({ port: 'backend' }),
};
const RELOAD_OK: Labels = Object.freeze({ result: 'ok' });
const RELOAD_FAILED: Labels = Object.freeze({ result: 'failed' });
const RELOAD_UNCHANGED: Labels = Object.freeze({ result: 'unchanged' });

/** {shard, state} label objects, built once per shard and state. */
const stateLabelCache = new WeakMap<ShardStats, Map<string, Labels>>();
function stateLabels(stats: ShardStats, state: string): Labels {
  let m = stateLabelCache.get(stats);
  if (m === undefined) stateLabelCache.set(stats, (m = new Map()));
  let l = m.get(state);
  if (l === undefined) m.set(state, (l = Object.freeze({ shard: stats.name, state })));
  return l;
}

// ---------------------------------------------------------------------------------------------------------------
// Publishing

/** `le` label objects of the latency buckets, then +Inf. */
const LE_LABELS: readonly Labels[] = Object.freeze([
  ...LATENCY_BUCKETS.map((b) => Object.freeze({ le: String(b) })),
  Object.freeze({ le: '+Inf' }),
]);

interface Sample {
  metricName: string;
  labels: Labels;
  sharedLabels?: Labels;
  value: number;
}

/**
 * A prom-client Histogram whose values are the data path's bucket arrays: it answers prom-client's two read
 * calls (getForPromString for the text format, get for JSON) from `def.read` instead of its own observations.
 */
class PublishedHistogram extends PromHistogram<string> {
  private readonly def: HistogramDef;
  private readonly src: MetricsSource;

  constructor(def: HistogramDef, src: MetricsSource, registry: Registry) {
    super({
      name: def.name,
      help: def.help,
      labelNames: [...def.labels],
      buckets: [...LATENCY_BUCKETS],
      registers: [registry],
    });
    this.def = def;
    this.src = src;
  }

  private samples(splay: boolean): Sample[] {
    const out: Sample[] = [];
    const bucketName = `${this.def.name}_bucket`;
    const sumName = `${this.def.name}_sum`;
    const countName = `${this.def.name}_count`;
    this.def.read(this.src, (labels, h) => {
      let acc = 0;
      for (let i = 0; i < LE_LABELS.length; i++) {
        acc += h.counts[i];
        out.push(
          splay
            ? { metricName: bucketName, labels: { ...labels, ...LE_LABELS[i] }, value: acc }
            : { metricName: bucketName, labels: LE_LABELS[i], sharedLabels: labels, value: acc },
        );
      }
      out.push(
        splay
          ? { metricName: sumName, labels, value: h.sum }
          : { metricName: sumName, labels: NO_LABELS, sharedLabels: labels, value: h.sum },
      );
      out.push(
        splay
          ? { metricName: countName, labels, value: h.count }
          : { metricName: countName, labels: NO_LABELS, sharedLabels: labels, value: h.count },
      );
    });
    return out;
  }

  async getForPromString(): Promise<{
    name: string;
    help: string;
    type: 'histogram';
    values: Sample[];
    aggregator: 'sum';
  }> {
    return {
      name: this.def.name,
      help: this.def.help,
      type: 'histogram',
      values: this.samples(false),
      aggregator: 'sum',
    };
  }

  // prom-client's own type for get() is generic over its label values; ours are plain strings.
  override async get(): Promise<never> {
    return {
      name: this.def.name,
      help: this.def.help,
      type: 'histogram',
      values: this.samples(true),
      aggregator: 'sum',
    } as never;
  }
}

/**
 * How a metric adds up across worker processes (workers > 1: the primary merges every worker's registry with
 * prom-client's AggregatorRegistry). Counters, histograms and most gauges sum (the default); these do not: a
 * value every worker holds alike (build info, config version, reloads applied by each worker, failovers each one
 * saw), one that is true only when true in every worker (ready, a shard up, a node's subscriber connection
 * up), or the earliest expiry.
 */
const ACROSS_WORKERS: Readonly<Record<string, 'min' | 'max'>> = {
  keymux_info: 'max',
  keymux_ready: 'min',
  keymux_config_reloads_total: 'max',
  keymux_tls_certificate_expiry_seconds: 'min',
  keymux_config_version: 'max',
  keymux_shard_info: 'max',
  keymux_shard_up: 'min',
  keymux_shard_role: 'min',
  keymux_failovers_total: 'max',
  keymux_sentinel_up: 'min',
  // Each worker has its own subscriber connection to a node: up only when every worker's is (a worker whose
  // connection is down leaves its clients without that node's messages). Subscriptions sum: the node holds each
  // worker's.
  keymux_pubsub_node_up: 'min',
  // Every worker holds its part of the one coordinated migration; the leader alone scans (keys left).
  keymux_migrations_active: 'max',
  keymux_migration_keys_left: 'max',
};

/**
 * How prom-client's default process and Node.js metrics add up across the primary and its workers (workers > 1),
 * where prom-client's own aggregators read wrong. What is left out sums, as prom-client does, and reads right
 * summed: CPU seconds, resident and virtual memory, heap sizes and external memory (the pod's memory limit covers
 * every process), active handles, requests and resources, GC time. These do not:
 * - a per-process limit and the use that meets it: `process_max_fds` is each process's own limit (the minimum over
 *   the processes; summed, N+1 workers' limits made one far from reach), `process_open_fds` the most any one
 *   process has open (a worker near its own limit shows; summed, it hid among the others);
 * - per-process headroom: `nodejs_heap_space_size_available_bytes` is the least any process has left in each heap
 *   space (V8's heap limit is per process: summed, a worker about to run out of heap looked roomy);
 * - the event loop's lag: the worst process's (prom-client averages, and the idle primary halved a stalled worker's);
 * - `process_start_time_seconds`: the primary's start, the earliest (prom-client omits it from a merge: it was
 *   missing), which is also when the merged counters started, since a replaced worker's counts stay in the sum.
 */
const PROCESS_ACROSS_WORKERS: Readonly<Record<string, 'min' | 'max'>> = {
  process_max_fds: 'min',
  process_open_fds: 'max',
  nodejs_heap_space_size_available_bytes: 'min',
  nodejs_eventloop_lag_seconds: 'max',
  nodejs_eventloop_lag_mean_seconds: 'max',
  nodejs_eventloop_lag_stddev_seconds: 'max',
  nodejs_eventloop_lag_p50_seconds: 'max',
  nodejs_eventloop_lag_p90_seconds: 'max',
  nodejs_eventloop_lag_p99_seconds: 'max',
  process_start_time_seconds: 'min',
};

/**
 * One process's metrics (Registry.getMetricsAsJSON) with PROCESS_ACROSS_WORKERS's aggregators in place of
 * prom-client's, for AggregatorRegistry.aggregate (which merges each metric by the aggregator of its first part).
 */
export function withProcessAggregators<T extends { name: string; aggregator?: string }>(json: readonly T[]): T[] {
  return json.map((m) => {
    const aggregator = PROCESS_ACROSS_WORKERS[m.name];
    return aggregator === undefined ? m : { ...m, aggregator };
  });
}

export interface MetricsOptions {
  /** Register prom-client's default process and Node.js metrics (default true). */
  processMetrics?: boolean;
}

/** The registry of one proxy: METRICS plus prom-client's default metrics. */
export class Metrics {
  readonly registry: Registry;

  constructor(src: MetricsSource, options: MetricsOptions = {}) {
    const registry = new Registry();
    this.registry = registry;
    for (const def of METRICS) {
      if (def.type === 'histogram') {
        new PublishedHistogram(def, src, registry);
      } else if (def.type === 'counter') {
        const read = def.read;
        new Counter({
          name: def.name,
          help: def.help,
          labelNames: [...def.labels],
          registers: [registry],
          aggregator: ACROSS_WORKERS[def.name] ?? 'sum',
          collect() {
            this.reset();
            read(src, (labels, value) => this.inc(labels as Record<string, string>, value));
          },
        });
      } else {
        const read = def.read;
        new Gauge({
          name: def.name,
          help: def.help,
          labelNames: [...def.labels],
          registers: [registry],
          aggregator: ACROSS_WORKERS[def.name] ?? 'sum',
          collect() {
            this.reset();
            read(src, (labels, value) => this.set(labels as Record<string, string>, value));
          },
        });
      }
    }
    if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
