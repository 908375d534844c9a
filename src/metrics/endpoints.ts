/**
 * The observability endpoints of the admin server: GET /metrics (Prometheus text from the Metrics registry),
 * /shards, /hotkeys and /slowlog (JSON; DELETE /slowlog empties the slow log). Each JSON body is built by a pure
 * function of the proxy's state (shardsReport, hotKeysReport, slowlogReport) so tests and other tools can call
 * them directly. Control plane only; the reports read plain numbers and never block the data path for long (the
 * hot-key merge is over at most BUCKETS * capacity candidates).
 *
 * Key names (which often hold e-mail addresses or session ids) are shown only to a caller that showed the admin
 * token: anyone else gets /hotkeys with every key hashed (the first 16 hex digits of its SHA-256, as
 * `export: hash` writes them) and /slowlog without keys. /metrics follows metrics.hot_keys.export alone (it is
 * often public, for Prometheus: use `export: hash` then).
 */
import type { AdminServer, Caller } from './admin-server.js';
import { sendJson, sendText } from './admin-server.js';
import { hotKeyRows, shardNameOf, type Metrics, type MetricsSource } from './metrics.js';
import type { SubscriberNode } from '../pubsub/hub.js';
import type { ShardPool } from '../backend/pool.js';
import type { BackendConnection } from '../backend/backend-connection.js';

export function addObservabilityRoutes(admin: AdminServer, src: MetricsSource, metrics: Metrics): void {
  admin.addRoute(
    'GET',
    '/metrics',
    async (_req, res) => {
      sendText(res, 200, await metrics.text(), metrics.contentType);
    },
    'metrics',
  );
  admin.addRoute('GET', '/shards', (_req, res) => sendJson(res, 200, shardsReport(src)));
  admin.addRoute('GET', '/hotkeys', (_req, res, _url, caller) => sendJson(res, 200, hotKeysReport(src, caller)));
  admin.addRoute('GET', '/slowlog', (_req, res, url, caller) => {
    const raw = url.searchParams.get('limit');
    const limit = raw === null ? Infinity : Number(raw);
    if (raw !== null && (raw === '' || !Number.isInteger(limit) || limit < 0)) {
      sendJson(res, 400, { error: `limit must be a non-negative integer, got ${JSON.stringify(raw)}` });
      return;
    }
    sendJson(res, 200, slowlogReport(src, limit, caller));
  });
  admin.addRoute('DELETE', '/slowlog', (_req, res) => {
    src.observer.slowlog.reset();
    sendJson(res, 200, { ok: true });
  });
}

/** A caller that showed the admin token (the reports' default, for tools that call them directly). */
const TRUSTED: Caller = { authorized: true };

const round = (v: number, digits: number): number => Number(v.toFixed(digits));

function connectionReport(c: BackendConnection): Record<string, unknown> {
  return {
    state: c.state,
    inflight: c.inflight,
    reconnects: c.reconnects,
    timeouts: c.timeouts,
    last_error: c.state === 'ready' ? null : c.lastError,
  };
}

/** keymux's pub/sub subscriber connection to one node, as /shards shows it. */
function subscriberReport(n: SubscriberNode): Record<string, unknown> {
  return {
    address: n.address,
    state: n.state,
    subscriptions: n.subscriptions,
    confirmed: n.confirmed,
    reconnects: n.reconnects,
    last_error: n.lastError,
    down_since: n.notReadySince === null ? null : new Date(n.notReadySince).toISOString(),
  };
}

/**
 * GET /shards: every shard of the running topology, its address, role, slots or weight and connections, and
 * keymux's pub/sub subscriber connection to it (a list, as with workers every worker has its own).
 */
export function shardsReport(src: MetricsSource): unknown {
  const topo = src.topology;
  const subscribers = new Map((src.pubsub?.nodes() ?? []).map((n) => [n.address, n]));
  const listed = new Set<string>();
  const subscriberOf = (address: string): Array<Record<string, unknown>> => {
    const n = subscribers.get(address);
    if (n === undefined) return [];
    listed.add(address);
    return [subscriberReport(n)];
  };
  const pool = (p: ShardPool, role: 'master' | 'replica'): Record<string, unknown> => {
    const conns = p.connections;
    const state = conns.some((c) => c.state === 'ready')
      ? 'ready'
      : conns.some((c) => c.state === 'handshake' || c.state === 'connecting')
        ? 'connecting'
        : conns.every((c) => c.state === 'closed')
          ? 'closed'
          : 'down';
    const st = p.stats;
    return {
      role,
      state,
      inflight: p.inflight,
      connections: conns.map(connectionReport),
      // RESP3 clients' connections (the pool's RESP3 twin, backend/pool.ts); empty until a RESP3 client came.
      resp3_connections: p.allConnections().slice(conns.length).map(connectionReport),
      commands: st?.commands ?? 0,
      errors: st?.errors ?? 0,
      hits: st?.hits ?? 0,
      misses: st?.misses ?? 0,
    };
  };
  const report = {
    mode: topo.config.mode,
    version: topo.version,
    shards: topo.shards.map((s) => ({
      name: s.name,
      address: s.address,
      slots: s.config.slots === null ? null : s.config.slots.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)),
      weight: topo.config.mode === 'ring' ? s.config.weight : null,
      ...pool(s.pool, 'master'),
      pubsub_connections: subscriberOf(s.address),
      read_from: s.readFrom,
      ...(s.sentinelMaster !== null
        ? {
            sentinel_master: s.sentinelMaster,
            failovers: src.sentinel?.failovers.get(s.name) ?? 0,
            last_failover: src.sentinel?.lastFailover.get(s.name) ?? null,
            held: src.sentinel?.heldCount(s.name) ?? 0,
          }
        : {}),
      replicas: (s.replicas ?? []).map((r) => ({
        address: r.shard.address,
        ...pool(r, 'replica'),
        pubsub_connections: subscriberOf(r.shard.address),
        readable: r.readable,
        readable_reason: r.readableReason,
      })),
    })),
  };
  // Subscriber connections to nodes that are no shard of this topology (a reload removed it and its subscriptions
  // are still moving, a node a MOVED pointed to that discovery has not listed yet): shown too, with their shard.
  const other = [...subscribers.values()]
    .filter((n) => !listed.has(n.address))
    .map((n) => ({ shard: shardNameOf(src, n.address), ...subscriberReport(n) }));
  return { ...report, other_pubsub_connections: other, migrations: src.migrationProgress?.() ?? [] };
}

/** GET /hotkeys: the current top-K keys, hottest first, with estimated requests, rate and owning shard. */
export function hotKeysReport(src: MetricsSource, caller: Caller = TRUSTED): unknown {
  const cfg = src.observer.config.hotKeys;
  const enabled = src.observer.hotKeys !== null;
  const shown = caller.authorized ? cfg.export : 'hash';
  const { seconds, samples, rows } = hotKeyRows(src, shown);
  return {
    enabled,
    k: cfg.k,
    window_s: cfg.windowS,
    covered_s: round(seconds, 3),
    sample_rate: cfg.sampleRate,
    export: shown,
    samples,
    keys: rows.map((r, i) => ({
      rank: i + 1,
      key: r.key,
      shard: r.shard,
      requests: Math.round(r.count),
      rate: round(r.rate, 3),
      cached: r.cached,
    })),
  };
}

/** GET /slowlog: recent commands at or above the threshold, newest first. */
export function slowlogReport(src: MetricsSource, limit = Infinity, caller: Caller = TRUSTED): unknown {
  const log = src.observer.slowlog;
  return {
    threshold_ms: log.thresholdMs,
    max_entries: log.maxEntries,
    log_keys: log.logKeys,
    ...(log.logKeys && !caller.authorized ? { keys_hidden: 'key names are shown only with the admin token' } : {}),
    entries: log.entries(limit).map((e) => ({
      id: e.id,
      time: new Date(e.time).toISOString(),
      command: e.command,
      shards: e.shards,
      latency_ms: round(e.latencyMs, 3),
      args: e.args,
      ...(e.keys !== null && caller.authorized ? { keys: e.keys } : {}),
    })),
  };
}
