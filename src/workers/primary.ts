/**
 * The primary process of `workers: N` (N > 1, README "Workers"): the control plane for N worker processes
 * (worker.ts) that each run a whole data plane behind the one client port (node:cluster's shared listening
 * handle: the primary accepts and hands each connection to a worker in turn; the bytes then flow between the
 * client and that worker alone). The primary serves no client and opens no backend connection. It owns:
 *
 * - the config: it reads and validates the YAML (at start, on SIGHUP, a file change or POST /reload) once, and
 *   sends the validated config to every worker, which applies it through the in-process reload path. A reload is
 *   reported applied only when every worker acknowledged it; when one refuses (or does not answer), the reload is
 *   reported failed and the workers that had applied it get the previous config again, so workers disagree about
 *   the topology only while a reload is in flight. A worker that answered (even with an error) still serves the
 *   running config; only one that did not answer in time or exited is replaced. Worker starts and reloads run one at a time (one chain), so a
 *   worker restarted during a reload starts on the config that reload ends with. A reload of the running config
 *   (equal once validated, its password and TLS files unchanged) is answered "unchanged" here and reaches no worker.
 * - key migrations: the primary decides that a reload moves keys, numbers the migration, writes the state file,
 *   and drives every worker through it (migration/migration.ts "Coordination"): each worker swaps to the new
 *   topology holding requests for keys in motion and acknowledges once its own requests to the old owners are
 *   answered; only when every worker has, the primary says go. Worker 1 leads: it scans the old owners and runs
 *   every MIGRATE; the others' requests to move keys are relayed to it here (and wait here while worker 1 is being
 *   replaced). When its scan is over the primary removes the state file and tells every worker the migration is
 *   done. A reload that moves keys while one runs chains a new one to it (as a single keymux does). A start
 *   with an interrupted migration in the state file resumes it in every worker.
 * - the admin endpoint, answering for all workers: /metrics merges every worker's registry (prom-client's
 *   AggregatorRegistry; counters and histograms sum, gauges sum unless metrics.ts says min or max), /hotkeys sums
 *   each key's counts across workers and re-ranks, /shards is one topology with per-shard (and per-replica) counts
 *   summed and every worker's connections listed, /slowlog merges by time, /readyz is ready when every worker is, /workers lists
 *   the workers and their PIDs.
 * - the count of failed AUTHs per client address for the whole process (README "Password guessing"): workers
 *   report each failure; the primary counts it and sends the address's new count to every serving worker (and to
 *   the reporter), and every address it remembers to a worker that starts serving, so a guesser whose connections
 *   land on different workers is delayed as by one keymux. Workers read only their copy: no AUTH waits on the primary.
 * - the workers' lives: a worker that exits unexpectedly is logged, counted (keymux_worker_restarts_total) and
 *   replaced (after a short back-off when it died young); SIGTERM/SIGINT drain every worker within the grace
 *   period, and the primary exits once all have exited. A serving worker is sent a heartbeat every second (a
 *   quarter of workers_heartbeat_timeout_ms when shorter); one that has sent nothing for that bound (its event loop
 *   is blocked, or it is stopped) is hung: killed with SIGKILL (it cannot drain), which takes it out of node:cluster's
 *   round robin, and replaced like a worker that died (counted with reason "hung"). A worker silent for a whole
 *   heartbeat interval is skipped by the admin endpoint (reported missing) instead of being waited for, and every
 *   admin question waits at most ADMIN_ASK_TIMEOUT_MS for a worker, so /readyz answers within the probes' timeout.
 */
import cluster, { type Worker } from 'node:cluster';
import { performance } from 'node:perf_hooks';
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { KeymuxConfig } from '../config/schema.js';
import { ConfigError, readConfigFile } from '../config/load.js';
import { ConfigWatcher } from '../config/watch.js';
import { addConfigRoutes } from '../config/endpoints.js';
import { AdminServer, RefusalLog, sendJson, sendText } from '../metrics/admin-server.js';
import { withProcessAggregators } from '../metrics/metrics.js';
import { loadSecurity, sameMaterial, type SecurityMaterial } from '../security/material.js';
import { FileSetWatcher } from '../security/tls.js';
import { AddressFailures } from '../security/address-failures.js';
import { freeSocketPath } from '../server/unix-socket.js';
import { restartOnlyChange } from '../routing/plan.js';
import type { ReloadResult } from '../proxy.js';
import { childLogger, setLogLevel, type Logger } from '../log.js';
import { readMigrationState, removeMigrationState, routingOf, writeMigrationState } from '../migration/state-file.js';
import type { MigrationProgress, MoveResult } from '../migration/migration.js';
import type { ClientListing, KillFilter } from '../commands/client-list.js';
import {
  isReply,
  isWorkerEvent,
  type AuthFailuresMessage,
  type ClientIdRange,
  type ClientsAnswerMessage,
  type JoinMigration,
  type MovedMessage,
  type PausedMessage,
  type ReplyMessage,
  type WorkerEvent,
  type WorkerOp,
  type WorkerRequest,
} from './protocol.js';

/** How long a worker may take to start (connect to its shards, learn the command table, listen). */
const START_TIMEOUT_MS = 60_000;
/** How long a worker may take to apply a reload (sentinel look-ups included). */
const RELOAD_TIMEOUT_MS = 30_000;
/** How long a worker may take to answer a control message (migration go / done, unpause). */
const ASK_TIMEOUT_MS = 5_000;
/**
 * How long the admin endpoint waits for a worker's answer (/readyz, /metrics, /shards, /hotkeys, /slowlog): below
 * the Kubernetes probes' timeoutSeconds (2 s in deploy/), so /readyz answers in time when a worker does not.
 */
const ADMIN_ASK_TIMEOUT_MS = 1_500;
/** Heartbeats go out this often, or four times per workers_heartbeat_timeout_ms when that is shorter. */
const HEARTBEAT_INTERVAL_MS = 1_000;
/** After the drain grace period, how long the primary waits for workers to exit before killing them. */
const EXIT_SLACK_MS = 5_000;
/** A worker that dies sooner than this after its start is restarted after a growing back-off. */
const YOUNG_MS = 5_000;
const MAX_BACKOFF_MS = 5_000;
/** How long a follower's request to move keys may wait for the leader (being replaced included). */
const MOVE_TIMEOUT_MS = 30_000;
/** The worker slot that leads key migrations (scans the old owners and runs every MIGRATE). */
const LEADER = 1;

/** The key migration the primary is running (one at a time). */
interface RunningMigration {
  id: number;
  /** Where keys are moving away from, oldest first (the previous config's placement; what the state file records). */
  chain: Array<Partial<KeymuxConfig>>;
  /** held: workers are fencing, nothing moves yet; running: keys move. */
  phase: 'held' | 'running';
  startedAt: number;
}

/** A follower's request to move keys, waiting for the leader. */
interface PendingMove {
  id: number;
  keys: Uint8Array[];
  answer(result: MoveResult): void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Why a worker was replaced (the reason label of keymux_worker_restarts_total). */
type RestartReason = 'exited' | 'hung' | 'reload';
const RESTART_REASONS: readonly RestartReason[] = ['exited', 'hung', 'reload'];

/**
 * A worker slot's state as the admin endpoint reports it (/workers, keymux_workers{state}): every state is always
 * present in the gauge, 0 or not, so a dashboard's series do not come and go.
 */
type WorkerState = 'starting' | 'serving' | 'restarting' | 'draining' | 'stopped';
const WORKER_STATES: readonly WorkerState[] = ['serving', 'starting', 'restarting', 'draining', 'stopped'];

/** How often the primary sends heartbeats for a bound (0: none; the loop still turns, for a bound set by a reload). */
export function heartbeatIntervalMs(timeoutMs: number): number {
  return timeoutMs === 0
    ? HEARTBEAT_INTERVAL_MS
    : Math.max(1, Math.min(HEARTBEAT_INTERVAL_MS, Math.floor(timeoutMs / 4)));
}

/** A worker the admin endpoint has no answer from this time, and why. */
interface MissingWorker {
  worker: number;
  pid: number | null;
  reason: string;
}

/** One worker slot (1..N): the process filling it now. */
interface Slot {
  readonly id: number;
  worker: Worker;
  pid: number;
  state: 'starting' | 'serving' | 'stopping';
  startedAt: number;
  /** Deaths in a row of workers that died young in this slot (the back-off grows with it). */
  youngDeaths: number;
  pending: Map<number, Pending>;
  online: Promise<void>;
  exited: Promise<void>;
  /** When the primary last heard from it (any message: it proves the worker's event loop turned), performance.now(). */
  heardAt: number;
  /** Heartbeats sent since it was last heard from. */
  unanswered: number;
  /** Heartbeats it had not answered when the next one was due (0 once it is heard from again). */
  missed: number;
  /** Set when the primary kills it: why (so its exit is counted as that, not as a crash). */
  killedFor: RestartReason | null;
}

export interface PrimaryOptions {
  configPath: string;
  watchConfig: boolean;
}

/** One metric as prom-client's getMetricsAsJSON gives it (what workers send for /metrics). */
interface MetricJson {
  name: string;
  type: string;
  values: Array<{ labels: Record<string, string | number>; value: number }>;
}

/**
 * Series the primary answers itself (primaryGauges, ownMetrics): each worker counts its own reloads (a rollback
 * too) and a new worker starts at version 1, so theirs would disagree with the process's.
 */
const PRIMARY_OWNED = new Set(['keymux_config_version', 'keymux_config_reloads_total', 'keymux_ready']);

function withoutPrimaryOwned(json: MetricJson[]): MetricJson[] {
  return json.filter((m) => !PRIMARY_OWNED.has(m.name));
}

/** The counters and histograms of an answer (what must not go backwards); gauges are the worker's present. */
function cumulativeOnly(json: MetricJson[]): MetricJson[] {
  return json.filter((m) => m.type === 'counter' || m.type === 'histogram');
}

/** The counts of a /shards row that only grow. */
const SHARD_COUNTS = ['commands', 'errors', 'hits', 'misses'] as const;
/** The counts of a /shards row summed over the workers: the growing ones and the present `inflight`. */
const SUMMED_COUNTS = [...SHARD_COUNTS, 'inflight'] as const;

/** One worker's /shards row of a shard or of one of its replicas. */
export type ShardReportRow = Record<string, unknown> & { connections: unknown[]; state: string };
export type ReplicaReportRow = ShardReportRow & { address: string };
type ShardRow = ShardReportRow & { name: string; replicas?: ReplicaReportRow[] };

/**
 * The key of a replica row's counts among the shards' (by shard name): the shard and the replica's address, which
 * is what identifies a replica across workers. A newline is in no shard name or address.
 */
export function replicaCountsKey(shardName: string, address: string): string {
  return `${shardName}\n${address}`;
}

function countsOf(row: Record<string, unknown>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const k of SHARD_COUNTS) counts[k] = (row[k] as number) ?? 0;
  return counts;
}

/** The growing counts of every row of one worker's /shards: each shard's (by name) and each replica's. */
function shardCountsOf(rows: ShardRow[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const row of rows) {
    out.set(row.name, countsOf(row));
    for (const r of row.replicas ?? []) out.set(replicaCountsKey(row.name, r.address), countsOf(r));
  }
  return out;
}

function addShardCounts(into: Map<string, Record<string, number>>, from: Map<string, Record<string, number>>): void {
  for (const [name, counts] of from) {
    const sum = into.get(name) ?? {};
    for (const k of SHARD_COUNTS) sum[k] = (sum[k] ?? 0) + (counts[k] ?? 0);
    into.set(name, sum);
  }
}

/** The connection lists of a /shards row: every worker's is listed, each entry with its `worker`. */
const LISTED_CONNECTIONS = ['connections', 'resp3_connections', 'pubsub_connections'] as const;

/**
 * /shards with workers: one row (a shard's, or one of its replicas') as every worker that knows it reported it,
 * merged. The first worker's fields; the counts summed, plus `carried` (the counts of workers that did not answer or
 * were replaced: counts never go backwards); every worker's connections (each worker has its own pool and pub/sub
 * subscriber connection to the node) listed with `worker`; ready only when ready in every worker, otherwise the state
 * a worker is stuck in.
 */
function mergeWorkerRows(
  known: ReadonlyArray<{ worker: number; row: ShardReportRow }>,
  carried: Record<string, number> | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...known[0]!.row };
  for (const list of LISTED_CONNECTIONS) out[list] = [];
  for (const k of SUMMED_COUNTS) out[k] = 0;
  for (const k of SHARD_COUNTS) (out[k] as number) += carried?.[k] ?? 0;
  for (const { worker, row } of known) {
    for (const k of SUMMED_COUNTS) (out[k] as number) += (row[k] as number) ?? 0;
    for (const list of LISTED_CONNECTIONS)
      for (const c of (row[list] as unknown[] | undefined) ?? [])
        (out[list] as unknown[]).push({ worker, ...(c as object) });
  }
  const states = new Set(known.map(({ row }) => row.state));
  out.state = states.size === 1 ? [...states][0] : ([...states].find((s) => s !== 'ready') ?? 'ready');
  return out;
}

/**
 * One shard's replica rows as every worker reported them, merged into one row per replica (mergeWorkerRows). A
 * replica is the same one in every worker when its address is (each worker discovers replicas on its own, so during
 * a topology change one may list a replica another does not yet: it is listed with what the workers that know it
 * said, in the order the workers list them). `readable` only when every worker that knows it may read from it (a
 * worker that may not sends its reads to the master: readable_reason is that worker's reason).
 */
export function mergeReplicaRows(
  shardName: string,
  rows: Array<{ worker: number; row: ReplicaReportRow }>,
  carried: Map<string, Record<string, number>>,
): Array<Record<string, unknown>> {
  const byAddress = new Map<string, Array<{ worker: number; row: ReplicaReportRow }>>();
  for (const r of rows) byAddress.set(r.row.address, [...(byAddress.get(r.row.address) ?? []), r]);
  return [...byAddress].map(([address, known]) => {
    const out = mergeWorkerRows(known, carried.get(replicaCountsKey(shardName, address)));
    const unreadable = known.find(({ row }) => row.readable === false);
    if (unreadable !== undefined) {
      out.readable = false;
      out.readable_reason = unreadable.row.readable_reason;
    }
    return out;
  });
}

function readyOf(json: MetricJson[]): boolean {
  const m = json.find((x) => x.name === 'keymux_ready');
  return m === undefined || m.values.every((v) => v.value === 1);
}

export class WorkerPrimary {
  config: KeymuxConfig;
  /** 1 at start, +1 per reload applied by every worker. */
  version = 1;
  readonly count: number;
  readonly startedAt = Date.now();
  private readonly slots: Array<Slot | null>;
  private readonly log: Logger;
  private readonly configPath: string;
  private security: SecurityMaterial;
  private admin: AdminServer | null = null;
  private watcher: ConfigWatcher | null = null;
  private secretsWatcher: FileSetWatcher | null = null;
  private readonly watchFiles: boolean;
  private chain: Promise<unknown> = Promise.resolve();
  private nextRequestId = 1;
  private stopping = false;
  /** Every worker served once: from now on a worker that exits is replaced. */
  private started = false;
  /** Workers replaced, by why (keymux_worker_restarts_total{reason}). */
  private readonly restarts: Record<RestartReason, number> = { exited: 0, hung: 0, reload: 0 };
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** When the heartbeat loop last ran (a much later run means the primary itself was stalled). */
  private heartbeatAt = 0;
  private nextHeartbeat = 1;
  /** /metrics: each slot's last answer (and the process that gave it), and the last answers of replaced workers. */
  private readonly lastMetrics = new Map<number, { pid: number; json: MetricJson[] }>();
  private retired: object[][] = [];
  /** /shards: the same for each shard's counts (by shard name). */
  private readonly lastShardCounts = new Map<number, { pid: number; counts: Map<string, Record<string, number>> }>();
  private readonly shardCountsRetired = new Map<string, Record<string, number>>();
  /** Forks so far, by slot (client id blocks: clientIdsFor). */
  private readonly forks: number[] = [];
  /** The umask workers start with when the primary's is narrowed for the Unix socket's bind (null: unchanged). */
  private workerUmask: number | null = null;
  private reloadsOk = 0;
  private reloadsFailed = 0;
  private reloadsUnchanged = 0;
  private adminRefusedCount = 0;
  private readonly adminRefusals = new RefusalLog(10_000);
  private readonly registry: Registry;
  private migration: RunningMigration | null = null;
  private nextMigrationId = 1;
  /** How recent migrations ended (a follower may still ask about one): done, or aborted before anything moved. */
  private readonly endedMigrations = new Map<number, 'done' | 'aborted'>();
  /** Migrations a later one took over while they ran: a follower still asking about one is told to route again. */
  private readonly superseded = new Set<number>();
  /**
   * The leader's scan-done reports of migrations that were not the primary's current one when they came (a chained
   * reload had taken over): if that reload is refused and the migration is reinstated, it is over already (the
   * leader will not report it again).
   */
  private readonly scannedEarly = new Map<number, MigrationProgress>();
  /** Follower move requests waiting for the leader to be serving. */
  private pendingMoves: PendingMove[] = [];
  /** Holds of the leader's key moves given to followers' commands to every shard: number -> the leader that holds it. */
  private readonly leaderPauses = new Map<number, Slot>();
  private nextPause = 1;
  /** The leader's figures for the migrations it finished, newest last (`keymux plan` quotes their rate). */
  private readonly finished: MigrationProgress[] = [];
  /** Failed AUTHs per client address, every worker's: the count the workers hold AUTHs by. */
  private readonly authFailures = new AddressFailures();

  private constructor(config: KeymuxConfig, count: number, material: SecurityMaterial, options: PrimaryOptions) {
    this.config = config;
    this.count = count;
    this.security = material;
    this.configPath = options.configPath;
    this.watchFiles = options.watchConfig;
    this.slots = new Array<Slot | null>(count).fill(null);
    this.log = childLogger('primary');
    this.registry = this.ownMetrics();
  }

  /**
   * Starts N workers on `config` and the admin endpoint; resolves once every worker serves. A worker that cannot
   * start stops them all and throws (a ConfigError with the worker's errors when it had any).
   */
  static async start(config: KeymuxConfig, count: number, options: PrimaryOptions): Promise<WorkerPrimary> {
    const loaded = loadSecurity(config);
    if (loaded.errors !== undefined) throw new ConfigError(loaded.errors);
    const primary = new WorkerPrimary(config, count, loaded.material, options);
    primary.migration = interruptedMigration(config, primary.nextMigrationId);
    if (primary.migration !== null) {
      primary.nextMigrationId++;
      primary.log.info({ migration: primary.migration.id }, 'resuming an interrupted key migration in every worker');
    }
    // The Unix socket is bound here once for every worker (node:cluster's shared handle), so a stale file is
    // replaced here, before any worker asks for it; workers skip the check (they would find the live socket).
    if (config.listenUnix !== null) {
      try {
        await freeSocketPath(config.listenUnix.path);
      } catch (err) {
        throw new ConfigError([`${config.source}: ${(err as Error).message}`]);
      }
      // node:cluster binds the socket here, in the primary, when the first worker listens: the worker's owner-only
      // umask around its listen() (unix-socket.ts listenOnPath) does not reach that bind, so the file would have
      // this process's umask's mode (0777 under umask 0) until the worker's chmod. The primary binds with an
      // owner-only umask for good (it creates no other file but the migration state file, which it alone reads);
      // its workers get the operator's umask back (runWorker).
      if (config.listenUnix.mode !== null) primary.workerUmask = process.umask(0o177);
    }
    cluster.setupPrimary({ serialization: 'advanced' });
    const starts = [];
    for (let id = 1; id <= count; id++) starts.push(primary.startWorker(id));
    const results = await Promise.allSettled(starts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      primary.stopping = true;
      await primary.killAll();
      throw primary.startErrors !== null ? new ConfigError(primary.startErrors) : failed.reason;
    }
    primary.started = true;
    await primary.startAdmin();
    if (options.watchConfig) {
      primary.watcher = new ConfigWatcher(options.configPath, () => void primary.reloadFromFile('file change'));
      primary.watcher.start();
    }
    primary.watchSecretFiles(loaded.material.files);
    primary.heartbeatAt = performance.now();
    primary.scheduleHeartbeat();
    primary.log.info(
      {
        workers: count,
        pids: primary.slots.map((s) => s?.pid ?? null),
        listen: config.listen === null ? null : `${config.listen.host}:${config.listen.port}`,
        ...(config.listenUnix !== null ? { unix: config.listenUnix.path } : {}),
        admin: primary.admin?.port ?? null,
      },
      'keymux workers serving',
    );
    return primary;
  }

  // ---- the control plane ---------------------------------------------------------------------------------------

  /** For the config endpoints (/config, dry runs). */
  get topology(): { config: KeymuxConfig; version: number } {
    return { config: this.config, version: this.version };
  }

  get configFile(): string {
    return this.configPath;
  }

  /** Migrations the workers finished (for dry runs: `keymux plan` estimates at the last one's rate). */
  migrationProgress(): MigrationProgress[] {
    return [...this.finished];
  }

  /** A dry run (POST /reload?dry_run=1, keymux plan): why the primary would refuse the reload beyond the plan's own checks. */
  reloadRefusal(_next: KeymuxConfig): string | null {
    return null; // a reload that moves keys during a migration is chained to it, as in a single keymux
  }

  /** Re-reads the config file and applies it to every worker (serialised with other reloads and worker starts). */
  reloadFromFile(trigger: string): Promise<ReloadResult> {
    return this.enqueue(async () => {
      // Never rejects: SIGHUP and the file watch do not wait for it (a rejection would end the primary), and POST
      // /reload answers the error like any refused reload.
      try {
        const seen = this.watcher?.snapshot() ?? '';
        const result = await readConfigFile(this.configPath);
        this.watcher?.markCurrent(seen);
        if (result.errors !== undefined) return this.reloadFailed(trigger, result.errors);
        return await this.applyEverywhere(result.config, trigger);
      } catch (err) {
        return this.reloadFailed(trigger, [`reload failed: ${(err as Error)?.message ?? String(err)}`]);
      }
    });
  }

  private async applyEverywhere(next: KeymuxConfig, trigger: string): Promise<ReloadResult> {
    const previous = this.config;
    const restartOnly = restartOnlyChange(previous, next);
    if (restartOnly !== null)
      return this.reloadFailed(trigger, [`${next.source}: ${restartOnly} cannot change without a restart`]);
    const moving = movesKeys(previous, next);
    const loaded = loadSecurity(next);
    if (loaded.errors !== undefined) return this.reloadFailed(trigger, loaded.errors);
    if (sameMaterial(loaded.material, this.security)) {
      // The running config, from files with the same contents: no worker is asked (their topologies, versions and
      // pools stay), as a single keymux applies nothing (proxy.ts applyConfig).
      this.reloadsUnchanged++;
      this.log.info({ trigger, version: this.version }, 'config unchanged: nothing to apply');
      return { ok: true, unchanged: true, errors: [], version: this.version };
    }
    const serving = this.serving();
    let migration: RunningMigration | null = null;
    // A reload during a migration chains a new one to it (keys may still be on the placements that one moves
    // them from, then on the one it moves them to); the workers chain theirs the same way.
    const running = moving ? this.migration : null;
    if (moving) {
      // Recorded before any worker holds it: a primary that dies from here on resumes it at its next start. Written
      // before anything here changes: a state file that cannot be written refuses the reload, and the running
      // config and migration stay as they were.
      const chain = [...(running?.chain ?? []), routingOf(previous)];
      const startedAt = Date.now();
      const file = next.migration.stateFile;
      if (file !== null) {
        try {
          writeMigrationState(file, startedAt, chain);
        } catch (err) {
          return this.reloadFailed(trigger, [
            `${next.source}: migration.state_file: cannot record the key migration in ${file}: ${(err as Error).message}`,
          ]);
        }
      }
      migration = { id: this.nextMigrationId++, chain, phase: 'held', startedAt };
      this.migration = migration;
      if (running !== null) this.superseded.add(running.id);
    }
    const migrationId = migration?.id;
    const outcomes = await Promise.allSettled(
      serving.map((slot) => this.ask(slot, { op: 'reload', config: next, migrationId }, RELOAD_TIMEOUT_MS)),
    );
    const { applied, errors, unanswered } = sortReloadAnswers(serving, outcomes);
    // It did not answer (timed out or exited): it may still apply this config later, so it cannot be trusted to
    // hold either one. A worker that answered, even with an error, still serves the running config.
    for (const slot of unanswered) this.replaceWorker(slot, 'no answer to a reload');
    if (errors.length > 0) {
      if (applied.length > 0) await this.rollBack(applied, previous, migrationId);
      if (migration !== null) {
        this.endMigration(migration, 'aborted', next.migration.stateFile);
        if (running !== null) {
          // The migration it was chained to goes on in every worker (they reinstate it on the rollback).
          this.superseded.delete(running.id);
          this.migration = running;
          this.restoreState(previous.migration.stateFile, running);
          // The leader finished its scan while this reload was in flight: it is done (its report was held back).
          const scanned = this.scannedEarly.get(running.id);
          if (scanned !== undefined) this.scanDone(running, scanned, previous.migration.stateFile);
        }
      }
      return this.reloadFailed(trigger, errors);
    }
    this.config = next;
    this.version++;
    setLogLevel(next.log.level);
    this.applySecurity(loaded.material);
    this.reloadsOk++;
    if (migration !== null) {
      // Every worker holds requests for keys in motion and has no earlier request left on an old owner: go.
      migration.phase = 'running';
      await Promise.allSettled(
        serving.map((slot) => this.ask(slot, { op: 'migration-go', migration: migration.id }, ASK_TIMEOUT_MS)),
      );
      this.log.info(
        { migration: migration.id, workers: serving.length, ...(running !== null ? { chainedTo: running.id } : {}) },
        'key migration started in every worker',
      );
    }
    this.log.info({ trigger, version: this.version, workers: serving.length }, 'config reloaded by every worker');
    return { ok: true, unchanged: false, errors: [], version: this.version };
  }

  /**
   * The state file records `running` again (the reload chained to it was refused). A file that cannot be written
   * now is logged: the migration goes on in every worker all the same (a restart meanwhile would not resume it).
   */
  private restoreState(file: string | null, running: RunningMigration): void {
    if (file === null) return;
    try {
      writeMigrationState(file, running.startedAt, running.chain);
    } catch (err) {
      this.log.error(
        { migration: running.id, stateFile: file, err: (err as Error).message },
        'could not record the key migration in the state file again',
      );
    }
  }

  /** A reload some workers refused: the ones that applied it go back to the running config. */
  private async rollBack(applied: Slot[], previous: KeymuxConfig, abortMigration: number | undefined): Promise<void> {
    const ids = applied.map((s) => s.id);
    this.log.warn({ workers: ids }, 'reload refused by another worker: restoring the running config on these');
    await Promise.all(
      applied.map((slot) =>
        this.ask(slot, { op: 'reload', config: previous, abortMigration }, RELOAD_TIMEOUT_MS).then(
          (refusal) => {
            if (refusal !== null) this.replaceWorker(slot, `could not restore the running config: ${String(refusal)}`);
          },
          (err: Error) => this.replaceWorker(slot, `could not restore the running config: ${err.message}`),
        ),
      ),
    );
  }

  /**
   * The migration is over: done (the leader's scan moved every key; the workers are told) or aborted (a worker
   * refused the reload before anything moved; the others were given the running config back). Either way the
   * state file goes, and followers still waiting on a move are answered.
   */
  private endMigration(migration: RunningMigration, how: 'done' | 'aborted', stateFile: string | null): void {
    if (this.migration !== migration) return;
    this.migration = null;
    this.endedMigrations.set(migration.id, how);
    if (this.endedMigrations.size > 16) this.endedMigrations.delete(this.endedMigrations.keys().next().value!);
    if (stateFile !== null) removeMigrationState(stateFile);
    const waiting = this.pendingMoves.filter((m) => m.id === migration.id);
    this.pendingMoves = this.pendingMoves.filter((m) => m.id !== migration.id);
    for (const m of waiting) m.answer(how === 'done');
    if (how === 'aborted') return;
    // The migrations it took over are finished with it.
    for (const id of this.superseded) this.endedMigrations.set(id, 'done');
    this.superseded.clear();
    this.scannedEarly.clear();
    this.log.info(
      { migration: migration.id, seconds: Math.round((Date.now() - migration.startedAt) / 100) / 10 },
      'key migration finished in every worker',
    );
    for (const slot of this.slots) {
      if (slot !== null && slot.state === 'serving')
        this.ask(slot, { op: 'migration-done', migration: migration.id }, ASK_TIMEOUT_MS).catch(() => undefined);
    }
  }

  /** A follower's clients touch keys still on their old owners: the leader moves them; the follower is answered. */
  private relayMove(from: Slot, ref: number, id: number, keys: Uint8Array[]): void {
    let answered = false;
    const answer = (result: MoveResult): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      const msg: MovedMessage = { type: 'keymux:moved', ref, result };
      if (from.worker.isConnected()) from.worker.send(msg);
    };
    const timer = setTimeout(() => {
      this.pendingMoves = this.pendingMoves.filter((m) => m.answer !== answer);
      // The follower logs what its clients got (TRYAGAIN); this says why: the leader never answered in time.
      this.log.warn(
        { migration: id, worker: from.id, keys: keys.length, seconds: MOVE_TIMEOUT_MS / 1000 },
        'a move a worker asked for got no answer from worker 1 in time; answered not moved',
      );
      answer(false);
    }, MOVE_TIMEOUT_MS);
    if (this.superseded.has(id)) {
      answer('superseded'); // the follower routes the request again once it has the migration that took over
      return;
    }
    if (this.migration?.id !== id) {
      answer(this.endedMigrations.get(id) === 'done');
      return;
    }
    this.pendingMoves.push({ id, keys, answer });
    this.pumpMoves();
  }

  /**
   * A follower's command to every shard (FLUSHALL, DBSIZE...) during a migration: the leader, which runs every
   * MIGRATE, holds them and answers once none runs; the follower then sends the command and ends the hold when its
   * replies are in. With no leader serving nothing moves keys, and a failed ask is answered at once too (null): the
   * follower goes ahead without a hold rather than wait for one that may never come.
   */
  private relayPause(from: Slot, ref: number): void {
    const answer = (pause: number | null): void => {
      const msg: PausedMessage = { type: 'keymux:paused', ref, pause };
      if (from.worker.isConnected()) from.worker.send(msg);
    };
    const leader = this.slots[LEADER - 1];
    if (leader === null || leader === undefined || leader.state !== 'serving') {
      answer(null);
      return;
    }
    const pause = this.nextPause++;
    this.leaderPauses.set(pause, leader);
    this.ask(leader, { op: 'pause', pause }, MOVE_TIMEOUT_MS).then(
      () => answer(pause),
      () => {
        this.relayUnpause(pause); // the leader ends it by itself if it holds it at all (Proxy.pauseForWorker)
        answer(null);
      },
    );
  }

  private relayUnpause(pause: number): void {
    const leader = this.leaderPauses.get(pause);
    this.leaderPauses.delete(pause);
    // A leader replaced since took its holds with it; its successor never had this one.
    if (leader === undefined || leader !== this.slots[LEADER - 1]) return;
    this.ask(leader, { op: 'unpause', pause }, ASK_TIMEOUT_MS).catch(() => undefined);
  }

  /**
   * CLIENT LIST or CLIENT KILL run on a worker: every serving worker lists (or kills) its own clients, and the asking
   * worker gets them all (or the count). A worker that does not answer in time is left out, and logged.
   */
  private relayClients(from: Slot, ref: number, kill: { filter: KillFilter; callerId: number } | null): void {
    const request: WorkerRequest =
      kill === null ? { op: 'client-listings' } : { op: 'client-kill', filter: kill.filter, callerId: kill.callerId };
    void this.askAll(request).then(({ answers, missing }) => {
      if (missing.length > 0)
        this.log.warn(
          { missing, command: kill === null ? 'CLIENT LIST' : 'CLIENT KILL' },
          'workers left out of a CLIENT command',
        );
      const msg: ClientsAnswerMessage =
        kill === null
          ? {
              type: 'keymux:clients-answer',
              ref,
              listings: answers.flatMap((a) => a.value as ClientListing[]),
              killed: 0,
            }
          : {
              type: 'keymux:clients-answer',
              ref,
              listings: null,
              killed: answers.reduce((n, a) => n + (a.value as number), 0),
            };
      if (from.worker.isConnected()) from.worker.send(msg);
    });
  }

  /** Hands the waiting move requests to the leader when it serves (else they wait for its replacement). */
  private pumpMoves(): void {
    const leader = this.slots[LEADER - 1];
    if (leader === null || leader === undefined || leader.state !== 'serving' || this.pendingMoves.length === 0) return;
    const moves = this.pendingMoves;
    this.pendingMoves = [];
    for (const m of moves) {
      this.ask(leader, { op: 'move', migration: m.id, keys: m.keys }, MOVE_TIMEOUT_MS).then(
        (result) => m.answer(result === 'superseded' ? 'superseded' : result === true),
        () => {
          // The leader died with it: its replacement moves them (a key it finds gone answers +NOKEY).
          if (this.migration?.id === m.id) this.pendingMoves.push(m);
          else if (this.superseded.has(m.id)) m.answer('superseded');
          else m.answer(this.endedMigrations.get(m.id) === 'done');
        },
      );
    }
  }

  private reloadFailed(trigger: string, errors: string[]): ReloadResult {
    this.reloadsFailed++;
    this.log.error({ trigger, errors }, 'config reload rejected; the running config stays');
    return { ok: false, unchanged: false, errors, version: this.version };
  }

  private applySecurity(material: SecurityMaterial): void {
    this.security = material;
    if (material.adminTls !== null) this.admin?.setSecureContext(material.adminTls.options);
    this.watchSecretFiles(material.files);
  }

  /**
   * Every certificate, key, token and password file the config names, for the whole process: the workers watch
   * none (they start with watchSecrets false); a change is read here and by every worker (rereadSecretsEverywhere).
   */
  private watchSecretFiles(files: readonly string[]): void {
    if (!this.watchFiles || this.stopping) return;
    const wanted = [...new Set(files)].sort().join('\n');
    if (this.secretsWatcher !== null && this.secretsWatcher.files.join('\n') === wanted) {
      this.secretsWatcher.markCurrent();
      return;
    }
    this.secretsWatcher?.stop();
    this.secretsWatcher = null;
    if (files.length === 0) return;
    this.secretsWatcher = new FileSetWatcher(files, () => void this.rereadSecretsEverywhere());
    this.secretsWatcher.start();
  }

  /**
   * A watched file changed: the admin port takes the new token and certificate, and every serving worker reads the
   * files again as a single keymux does (its ports' certificates; a changed password applies the config again).
   * Counted once in keymux_config_reloads_total, as a single keymux counts it: ok when every worker applied it
   * (and the config version +1 when a password changed, which the workers apply as a config reload), failed when
   * the files are bad here or a worker refused or did not answer. Each worker counted its own before, and the
   * primary, which answers that counter, counted none. Nothing is rolled back: the files are what they are, a
   * worker that refused keeps its running material (as a single keymux does) and the next change or reload tries
   * again. Serialised with reloads and worker starts.
   */
  private rereadSecretsEverywhere(): Promise<void> {
    const trigger = 'file change';
    return this.enqueue(async () => {
      if (this.stopping) return;
      const loaded = loadSecurity(this.config);
      if (loaded.errors !== undefined) {
        this.reloadsFailed++;
        this.log.error(
          { trigger, errors: loaded.errors },
          'new certificate, key, CA, token or password file rejected; the running ones stay',
        );
        return;
      }
      const running = this.security.config;
      const next = loaded.material.config;
      const passwordChanged =
        next.clients.password !== running.clients.password ||
        next.backend.password !== running.backend.password ||
        next.sentinel?.password !== running.sentinel?.password;
      this.applySecurity(loaded.material);
      const serving = this.serving();
      const outcomes = await Promise.allSettled(
        serving.map((slot) => this.ask(slot, { op: 'reread-secrets' }, RELOAD_TIMEOUT_MS)),
      );
      const { errors } = sortReloadAnswers(serving, outcomes);
      if (errors.length > 0) {
        this.reloadsFailed++;
        this.log.error({ trigger, errors }, 'secret files not re-read by every worker');
        return;
      }
      this.reloadsOk++;
      if (passwordChanged) this.version++;
      this.log.info(
        { trigger, version: this.version, workers: serving.length, files: loaded.material.files.length },
        'secret files re-read by every worker',
      );
    });
  }

  private enqueue<T>(run: () => Promise<T>): Promise<T> {
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => undefined);
    return next;
  }

  // ---- the workers' lives ---------------------------------------------------------------------------------------

  /**
   * The first CLIENT ID of the next worker forked for slot `id`: each slot has a block of 2^44 ids and each fork of
   * it (a restart) a block of 2^32 in it, counted up one by one, so no two clients of this keymux (any worker, any
   * restart) share an id. Redis never repeats a client id, and CLIENT UNBLOCK <id> relies on it: with each worker
   * counting from 1, a client of one worker unblocked another worker's client of the same number. Consecutive ids
   * within a worker keep spreading its clients over a pool's connections (pool.pick: id modulo their number).
   * Below 2^53 (exact as a JS number and in RESP) for up to 511 workers; a slot's 4,096th restart reuses its first
   * block.
   */
  private clientIdsFor(id: number): ClientIdRange {
    const generation = this.forks[id - 1] ?? 0;
    this.forks[id - 1] = generation + 1;
    return { first: id * 2 ** 44 + (generation % 4096) * 2 ** 32 + 1 };
  }

  /** Forks the worker of slot `id` and starts it on the current config; resolves once it serves. */
  private startWorker(id: number, youngDeaths = 0): Promise<void> {
    return this.enqueue(async () => {
      if (this.stopping) return;
      if (!this.started && this.startErrors !== null) throw new Error('another worker could not start');
      const worker = cluster.fork({
        KEYMUX_WORKER: String(id),
        ...(this.workerUmask === null ? {} : { KEYMUX_UMASK: String(this.workerUmask) }),
      });
      let online!: () => void;
      let exited!: () => void;
      const slot: Slot = {
        id,
        worker,
        pid: worker.process.pid ?? 0,
        state: 'starting',
        startedAt: performance.now(),
        youngDeaths,
        pending: new Map(),
        online: new Promise<void>((r) => (online = r)),
        exited: new Promise<void>((r) => (exited = r)),
        heardAt: performance.now(),
        unanswered: 0,
        missed: 0,
        killedFor: null,
      };
      this.slots[id - 1] = slot;
      worker.on('message', (msg: unknown) => {
        this.heardFrom(slot);
        if (isReply(msg)) this.settle(slot, msg);
        else if (isWorkerEvent(msg)) this.onEvent(slot, msg, online);
      });
      worker.on('exit', (code, signal) => {
        exited();
        this.onExit(slot, code, signal);
      });
      await Promise.race([slot.online, slot.exited]);
      if (slot.state !== 'starting') throw new Error(`worker ${id} exited before it could start`);
      const joined: JoinMigration | null =
        this.migration === null ? null : { id: this.migration.id, chain: this.migration.chain };
      try {
        await this.ask(
          slot,
          {
            op: 'start',
            config: this.config,
            leader: id === LEADER,
            migration: joined,
            clientIds: this.clientIdsFor(id),
          },
          START_TIMEOUT_MS,
        );
      } catch (err) {
        this.log.error({ worker: id, pid: slot.pid, err: (err as Error).message }, 'worker could not start');
        this.startErrors ??= [(err as Error).message];
        worker.process.kill('SIGKILL');
        throw err;
      }
      slot.state = 'serving';
      slot.heardAt = performance.now(); // heartbeats start now: the bound counts from here
      this.log.info({ worker: id, pid: slot.pid }, 'worker serving');
      // Every later failure reaches it as it serves (tellAuthFailure); the earlier ones come now.
      const remembered = this.authFailures.remembered(performance.now());
      if (remembered.length > 0)
        this.sendAuthFailures(slot, { type: 'keymux:auth-failures', rows: remembered, own: false });
      // The migration it joined ended while it started (it missed the primary's word): tell it now.
      if (joined !== null && this.migration?.id !== joined.id)
        this.ask(slot, { op: 'migration-done', migration: joined.id }, ASK_TIMEOUT_MS).catch(() => undefined);
      if (id === LEADER) this.pumpMoves();
    });
  }

  private onEvent(slot: Slot, event: WorkerEvent, online: () => void): void {
    if (event.type === 'keymux:online') online();
    else if (event.type === 'keymux:start-failed') this.startErrors = event.errors;
    else if (event.type === 'keymux:move') this.relayMove(slot, event.ref, event.migration, event.keys);
    else if (event.type === 'keymux:pause') this.relayPause(slot, event.ref);
    else if (event.type === 'keymux:unpause') this.relayUnpause(event.pause);
    else if (event.type === 'keymux:auth-failure') this.tellAuthFailure(slot, event.host);
    else if (event.type === 'keymux:clients') this.relayClients(slot, event.ref, event.kill);
    else if (event.type === 'keymux:migration-scanned') {
      if (slot.id !== LEADER) return;
      if (this.migration?.id === event.migration && this.migration.phase === 'running')
        this.scanDone(this.migration, event.progress, this.config.migration.stateFile);
      else if (this.superseded.has(event.migration)) {
        // A chained reload took it over while the leader finished it: kept in case that reload is refused.
        this.scannedEarly.set(event.migration, event.progress);
        if (this.scannedEarly.size > 16) this.scannedEarly.delete(this.scannedEarly.keys().next().value!);
      }
    }
  }

  /**
   * A worker's client from `host` failed an AUTH: counted for the whole process, and the new count sent to every
   * serving worker and to the reporter (which may not be marked serving yet, and must hear its own failure counted:
   * AuthGuard.onShared).
   */
  private tellAuthFailure(from: Slot, host: string): void {
    const count = this.authFailures.add(host, performance.now());
    for (const slot of this.slots) {
      if (slot === null || (slot !== from && slot.state !== 'serving')) continue;
      this.sendAuthFailures(slot, { type: 'keymux:auth-failures', rows: [[host, count, 0]], own: slot === from });
    }
  }

  private sendAuthFailures(slot: Slot, msg: AuthFailuresMessage): void {
    if (slot.worker.isConnected()) slot.worker.send(msg);
  }

  /** The leader's scan of `migration` is over: every key is on its new owner; it ends in every worker. */
  private scanDone(migration: RunningMigration, progress: MigrationProgress, stateFile: string | null): void {
    this.finished.push(progress);
    if (this.finished.length > 10) this.finished.shift();
    this.endMigration(migration, 'done', stateFile);
  }

  /** The last start failure's errors (a ConfigError for main.ts to print when the first start fails). */
  private startErrors: readonly string[] | null = null;

  private onExit(slot: Slot, code: number | null, signal: string | null): void {
    const wasStarting = slot.state === 'starting';
    slot.state = 'stopping';
    for (const [, p] of slot.pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`worker ${slot.id} (pid ${slot.pid}) exited`));
    }
    slot.pending.clear();
    if (this.slots[slot.id - 1] !== slot) return; // already replaced
    if (this.stopping) return;
    if (!this.started && wasStarting) return; // the first start: start() reports it
    const young = performance.now() - slot.startedAt < YOUNG_MS;
    const youngDeaths = young ? slot.youngDeaths + 1 : 0;
    const delay = young ? Math.min(MAX_BACKOFF_MS, 250 * 2 ** (youngDeaths - 1)) : 0;
    const reason = slot.killedFor ?? 'exited';
    this.restarts[reason]++;
    this.log.error(
      { worker: slot.id, pid: slot.pid, code, signal, reason, restartInMs: delay },
      reason === 'exited'
        ? 'worker exited unexpectedly; starting a new one'
        : 'killed worker exited; starting a new one',
    );
    this.slots[slot.id - 1] = null;
    setTimeout(() => {
      this.startWorker(slot.id, youngDeaths).catch(() => undefined); // its exit schedules the next attempt
    }, delay).unref();
  }

  /** A worker that cannot be trusted to hold the running config: killed (and so replaced). */
  private replaceWorker(slot: Slot, why: string, reason: RestartReason = 'reload'): void {
    this.log.error({ worker: slot.id, pid: slot.pid, why, reason }, 'replacing worker');
    slot.killedFor ??= reason;
    slot.worker.process.kill('SIGKILL');
  }

  // ---- heartbeats -----------------------------------------------------------------------------------------------

  private scheduleHeartbeat(): void {
    if (this.stopping) return;
    this.heartbeatTimer = setTimeout(
      () => this.heartbeat(),
      heartbeatIntervalMs(this.config.workersHeartbeatTimeoutMs),
    );
    this.heartbeatTimer.unref(); // the workers' channels keep the primary alive, not its heartbeats
  }

  /**
   * One round: a worker silent for the bound is hung (killed and replaced); every other serving worker is sent a
   * heartbeat. The bound is read from the running config each round (a reload may change it).
   */
  private heartbeat(): void {
    this.heartbeatTimer = null;
    if (this.stopping) return;
    const bound = this.config.workersHeartbeatTimeoutMs;
    const interval = heartbeatIntervalMs(bound);
    const now = performance.now();
    // This round runs far later than planned: the primary itself was stalled (stopped, swapped out, a long pause).
    // Timers run before I/O in a loop turn, so the workers' answers of that time are still unread: their silence
    // says nothing yet, and each worker gets the whole bound again from now.
    const stalled = now - this.heartbeatAt > 2 * interval + 1_000;
    this.heartbeatAt = now;
    for (const slot of this.slots) {
      if (slot === null || slot.state !== 'serving' || slot.killedFor !== null) continue;
      if (bound === 0) {
        slot.unanswered = 0;
        slot.missed = 0;
        continue;
      }
      if (stalled) {
        slot.heardAt = now;
        slot.unanswered = 0;
      }
      const silentMs = now - slot.heardAt;
      if (silentMs > bound) {
        this.log.error(
          { worker: slot.id, pid: slot.pid, silentMs: Math.round(silentMs), boundMs: bound, missed: slot.unanswered },
          'worker hung: no heartbeat answered within workers_heartbeat_timeout_ms; killing it (SIGKILL: its ' +
            'client connections are lost) and starting a new one',
        );
        this.replaceWorker(slot, `no heartbeat answered in ${Math.round(silentMs)} ms`, 'hung');
        continue;
      }
      if (slot.unanswered > 0 && slot.missed === 0)
        this.log.warn(
          { worker: slot.id, pid: slot.pid, silentMs: Math.round(silentMs), boundMs: bound },
          'worker late answering a heartbeat (busy or hung); skipped by the admin endpoint until it answers',
        );
      slot.missed = slot.unanswered;
      if (!slot.worker.isConnected()) continue;
      slot.worker.send({ type: 'keymux:heartbeat', seq: this.nextHeartbeat++ });
      slot.unanswered++;
    }
    this.scheduleHeartbeat();
  }

  /** Any message from a worker: its event loop turns. */
  private heardFrom(slot: Slot): void {
    const now = performance.now();
    if (slot.missed > 0)
      this.log.info(
        { worker: slot.id, pid: slot.pid, silentMs: Math.round(now - slot.heardAt) },
        'worker answering heartbeats again',
      );
    slot.heardAt = now;
    slot.unanswered = 0;
    slot.missed = 0;
  }

  private serving(): Slot[] {
    return this.slots.filter((s): s is Slot => s !== null && s.state === 'serving');
  }

  private ask(slot: Slot, request: WorkerRequest, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (slot.state === 'stopping' || !slot.worker.isConnected()) {
        reject(new Error(`worker ${slot.id} (pid ${slot.pid}) is gone`));
        return;
      }
      const id = this.nextRequestId++;
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(new Error(`worker ${slot.id} (pid ${slot.pid}) did not answer ${request.op} in ${timeoutMs} ms`));
      }, timeoutMs);
      slot.pending.set(id, { resolve, reject, timer });
      slot.worker.send({ ...request, type: 'keymux:request', id });
    });
  }

  private settle(slot: Slot, reply: ReplyMessage): void {
    const p = slot.pending.get(reply.id);
    if (p === undefined) return;
    slot.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (reply.ok) p.resolve(reply.value);
    else p.reject(new WorkerAnsweredError(reply.error ?? 'failed'));
  }

  /**
   * The admin endpoint's question to every serving worker: the answers of those that answered, with their slots,
   * and the slots without an answer and why. A worker that missed a heartbeat is not asked (it would only make the
   * request wait: it is busy or hung), and none is waited for longer than ADMIN_ASK_TIMEOUT_MS.
   */
  private async askAll(
    request: WorkerRequest & { op: WorkerOp },
  ): Promise<{ answers: Array<{ slot: Slot; value: unknown }>; missing: MissingWorker[] }> {
    const missing: MissingWorker[] = [];
    const asked: Slot[] = [];
    this.slots.forEach((slot, i) => {
      if (slot === null) missing.push({ worker: i + 1, pid: null, reason: 'restarting' });
      else if (slot.state !== 'serving' || slot.killedFor !== null)
        missing.push({ worker: slot.id, pid: slot.pid, reason: slot.state === 'starting' ? 'starting' : 'restarting' });
      else if (slot.missed > 0) missing.push({ worker: slot.id, pid: slot.pid, reason: silence(slot) });
      else asked.push(slot);
    });
    const outcomes = await Promise.allSettled(asked.map((s) => this.ask(s, request, ADMIN_ASK_TIMEOUT_MS)));
    const answers: Array<{ slot: Slot; value: unknown }> = [];
    outcomes.forEach((o, i) => {
      const slot = asked[i]!;
      if (o.status === 'fulfilled') answers.push({ slot, value: o.value });
      else {
        // The ask's message names the worker; the report says which one beside it.
        const message = (o.reason as Error).message;
        const named = `worker ${slot.id} (pid ${slot.pid}) `;
        const reason = message.startsWith(named) ? message.slice(named.length) : message;
        missing.push({ worker: slot.id, pid: slot.pid, reason });
      }
    });
    missing.sort((x, y) => x.worker - y.worker);
    return { answers, missing };
  }

  /** SIGTERM: every worker drains within graceMs; resolves once all exited (killing stragglers after a slack). */
  async drain(graceMs: number): Promise<void> {
    this.stopping = true;
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.watcher?.stop();
    this.secretsWatcher?.stop();
    const live = this.slots.filter((s): s is Slot => s !== null);
    for (const slot of live) {
      if (slot.state === 'serving') this.ask(slot, { op: 'drain', graceMs }, graceMs + EXIT_SLACK_MS).catch(() => {});
      else slot.worker.process.kill('SIGTERM');
    }
    const allExited = Promise.all(live.map((s) => s.exited));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), graceMs + EXIT_SLACK_MS)));
    if ((await Promise.race([allExited, late])) === 'late') {
      this.log.warn('workers did not exit within the grace period: killing them');
      await this.killAll();
    }
    clearTimeout(timer);
    if (this.admin !== null) await this.admin.close();
  }

  private async killAll(): Promise<void> {
    const live = this.slots.filter((s): s is Slot => s !== null);
    for (const s of live) s.worker.process.kill('SIGKILL');
    await Promise.all(live.map((s) => s.exited));
  }

  // ---- the admin endpoint ---------------------------------------------------------------------------------------

  private async startAdmin(): Promise<void> {
    const config = this.config;
    if (config.admin === null) return;
    const admin = new AdminServer(
      { ready: () => ({ ok: !this.stopping, reason: this.stopping ? 'draining' : 'see /readyz' }) },
      {
        tls: this.security.adminTls?.options ?? null,
        access: {
          token: () => this.security.adminToken,
          publicMetrics: () => this.config.admin?.publicMetrics ?? true,
          refused: (reason, req) => {
            this.adminRefusedCount++;
            const n = this.adminRefusals.note();
            if (n > 0)
              this.log.warn({ reason, method: req.method, path: req.url, refused: n }, 'admin request refused');
          },
        },
      },
    );
    admin.setErrorHandler((err, method, path) => this.log.error({ err, method, path }, 'admin request failed'));
    admin.addRoute(
      'GET',
      '/readyz',
      async (_req, res) => {
        const r = await this.readiness();
        sendText(res, r.ok ? 200 : 503, `${r.ok ? 'ready' : 'not ready'}: ${r.reason}\n`);
      },
      'open',
    );
    admin.addRoute(
      'GET',
      '/metrics',
      async (_req, res) => {
        const merged = await this.metrics();
        sendText(res, 200, await merged.metrics(), merged.contentType);
      },
      'metrics',
    );
    admin.addRoute('GET', '/shards', async (_req, res) => sendJson(res, 200, await this.shards()));
    admin.addRoute('GET', '/hotkeys', async (_req, res, _url, caller) =>
      sendJson(res, 200, await this.hotKeys(caller.authorized)),
    );
    admin.addRoute('GET', '/slowlog', async (_req, res, url, caller) => {
      const raw = url.searchParams.get('limit');
      const limit = raw === null ? Infinity : Number(raw);
      if (raw !== null && (raw === '' || !Number.isInteger(limit) || limit < 0)) {
        sendJson(res, 400, { error: `limit must be a non-negative integer, got ${JSON.stringify(raw)}` });
        return;
      }
      sendJson(res, 200, await this.slowlog(limit, caller.authorized));
    });
    admin.addRoute('DELETE', '/slowlog', async (_req, res) => {
      const { missing } = await this.askAll({ op: 'slowlog-reset' });
      sendJson(res, 200, { ok: true, missing_workers: missing });
    });
    admin.addRoute('GET', '/workers', (_req, res) => sendJson(res, 200, this.workersReport()));
    addConfigRoutes(admin, this);
    await admin.listen(config.admin.host, config.admin.port);
    this.admin = admin;
  }

  /** Ready when every worker slot has a serving worker that says it is ready. */
  async readiness(): Promise<{ ok: boolean; reason: string }> {
    if (this.stopping) return { ok: false, reason: 'draining' };
    const serving = this.serving();
    if (serving.length < this.count)
      return { ok: false, reason: `${serving.length}/${this.count} workers serving (the others are starting)` };
    const { answers, missing } = await this.askAll({ op: 'ready' });
    const notReady = answers.filter((a) => !(a.value as { ok: boolean }).ok);
    if (missing.length > 0) {
      const m = missing[0]!;
      return {
        ok: false,
        reason: `${answers.length}/${this.count} workers answered; worker ${m.worker} (pid ${m.pid}): ${m.reason}`,
      };
    }
    if (notReady.length > 0) {
      const a = notReady[0]!;
      return { ok: false, reason: `worker ${a.slot.id}: ${(a.value as { reason: string }).reason}` };
    }
    return { ok: true, reason: `${this.count} workers ready; ${(answers[0]!.value as { reason: string }).reason}` };
  }

  workersReport(): unknown {
    return {
      workers: this.slots.map((s, i) =>
        s === null
          ? { id: i + 1, pid: null, state: this.reportedState(s) }
          : {
              id: s.id,
              pid: s.pid,
              state: this.reportedState(s),
              up_s: Math.round((performance.now() - s.startedAt) / 1000),
              missed_heartbeats: s.missed,
            },
      ),
      restarts: RESTART_REASONS.reduce((n, r) => n + this.restarts[r], 0),
      restarts_by_reason: { ...this.restarts },
      heartbeat_timeout_ms: this.config.workersHeartbeatTimeoutMs,
      config_version: this.version,
    };
  }

  /**
   * A worker slot's state, for /workers and keymux_workers alike (so the two never disagree): while the primary
   * drains (SIGTERM), a worker still running is `draining` (it was told to, and finishes its clients' requests within
   * the grace) and one that exited is `stopped`, as is a slot left empty (no worker is started during a drain); the
   * slot's own state stays `serving` meanwhile, since the scrapes and requests to workers still go to those that
   * run. Otherwise an empty slot, or one whose worker exited, is `restarting` (its replacement is on its way).
   */
  private reportedState(slot: Slot | null): WorkerState {
    if (this.stopping) return slot === null || slot.state === 'stopping' ? 'stopped' : 'draining';
    return slot === null || slot.state === 'stopping' ? 'restarting' : slot.state;
  }

  /** Every worker's registry and the primary's own, merged (each metric by its aggregator). */
  async metrics(): Promise<Registry> {
    const { answers, missing } = await this.askAll({ op: 'metrics' });
    const own = await this.registry.getMetricsAsJSON();
    // Counters and histograms never go backwards: a worker that did not answer (busy, just killed) counts with its
    // last answer, and a worker replaced by a new process (which counts from 0) leaves its last answer in `retired`.
    const answered = new Set<number>();
    const parts: object[][] = [];
    for (const a of answers) {
      const value = withoutPrimaryOwned(a.value as MetricJson[]);
      const last = this.lastMetrics.get(a.slot.id);
      if (last !== undefined && last.pid !== a.slot.pid) this.retired.push(cumulativeOnly(last.json));
      this.lastMetrics.set(a.slot.id, { pid: a.slot.pid, json: value });
      answered.add(a.slot.id);
      parts.push(value);
    }
    for (const [id, last] of this.lastMetrics) if (!answered.has(id)) parts.push(cumulativeOnly(last.json));
    if (this.retired.length > 1) {
      // Folded into one, so restarts do not make each scrape longer.
      this.retired = [await AggregatorRegistry.aggregate(this.retired).getMetricsAsJSON()];
    }
    const ready = answers.length === this.count && answers.every((a) => readyOf(a.value as MetricJson[]));
    const all = [...parts, ...this.retired, own, this.primaryGauges(ready, missing)] as MetricJson[][];
    return AggregatorRegistry.aggregate(all.map((json) => withProcessAggregators(json)));
  }

  /**
   * What only the primary knows for the whole process: its config version, readiness of every worker, and which
   * workers this scrape has no answer from.
   */
  private primaryGauges(ready: boolean, missing: readonly MissingWorker[]): object[] {
    const silent = new Set(missing.map((m) => m.worker));
    return [
      {
        name: 'keymux_worker_answered',
        help:
          "1 when this scrape has the worker's own answer; 0 when it has none (silent: busy or hung, starting, " +
          'restarting, or too slow to answer): its counters and histograms then count with its last answer.',
        type: 'gauge',
        aggregator: 'min',
        values: this.slots.map((_, i) => ({ labels: { worker: String(i + 1) }, value: silent.has(i + 1) ? 0 : 1 })),
      },
      {
        name: 'keymux_config_version',
        help: 'Version of the active config: 1 at start, +1 per applied reload.',
        type: 'gauge',
        aggregator: 'max',
        values: [{ labels: {}, value: this.version }],
      },
      {
        name: 'keymux_ready',
        help: '1 when every worker is serving and ready (as /readyz answers 200), else 0.',
        type: 'gauge',
        aggregator: 'min',
        values: [{ labels: {}, value: ready ? 1 : 0 }],
      },
    ];
  }

  /** The primary's own metrics: its workers, restarts, the reloads it coordinated, refused admin requests. */
  private ownMetrics(): Registry {
    const registry = new Registry();
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const primary = this;
    new Gauge({
      name: 'keymux_workers',
      help:
        'Worker processes (config workers), by state: serving, starting, restarting; during a drain (SIGTERM) ' +
        'draining, then stopped once exited (as GET /workers says).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        this.reset();
        const counts = Object.fromEntries(WORKER_STATES.map((state) => [state, 0])) as Record<WorkerState, number>;
        for (const s of primary.slots) counts[primary.reportedState(s)]++;
        for (const state of WORKER_STATES) this.set({ state }, counts[state]);
      },
    });
    new Counter({
      name: 'keymux_worker_restarts_total',
      help:
        'Worker processes replaced, by reason: exited (died on its own), hung (answered no heartbeat within ' +
        'workers_heartbeat_timeout_ms: killed), reload (did not answer a reload, or could not restore the running ' +
        'config: killed).',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const reason of RESTART_REASONS) this.inc({ reason }, primary.restarts[reason]);
      },
    });
    new Counter({
      name: 'keymux_config_reloads_total',
      help:
        'Config reloads, by result: ok (applied), failed (rejected; the running config stayed) or unchanged (the ' +
        'same config and files as the running ones: nothing applied).',
      labelNames: ['result'],
      registers: [registry],
      aggregator: 'max',
      collect() {
        this.reset();
        this.inc({ result: 'ok' }, primary.reloadsOk);
        this.inc({ result: 'failed' }, primary.reloadsFailed);
        this.inc({ result: 'unchanged' }, primary.reloadsUnchanged);
      },
    });
    new Counter({
      name: 'keymux_admin_refused_total',
      help: 'Admin requests refused: no or wrong token, a web page (Origin, form or text body), or a DNS name without a token.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(primary.adminRefusedCount);
      },
    });
    collectDefaultMetrics({ register: registry });
    return registry;
  }

  /**
   * /shards: one topology (the first worker's), with per-shard counts summed and every worker's connections and
   * pub/sub subscriber connections; each shard's replicas merged the same way (mergeReplicaRows).
   */
  async shards(): Promise<unknown> {
    const { answers, missing } = await this.askAll({ op: 'shards' });
    if (answers.length === 0) return { workers: this.workersReport(), missing_workers: missing, shards: [] };
    type Report = Record<string, unknown> & { shards: ShardRow[]; version: number };
    const reports = answers.map((a) => ({ id: a.slot.id, report: a.value as Report }));
    // Counts never go backwards (as in /metrics): a worker that did not answer adds its last counts, a replaced
    // one's last counts stay in `shardCountsRetired`.
    const answered = new Set<number>();
    for (const a of answers) {
      const counts = shardCountsOf((a.value as Report).shards);
      const last = this.lastShardCounts.get(a.slot.id);
      if (last !== undefined && last.pid !== a.slot.pid) addShardCounts(this.shardCountsRetired, last.counts);
      this.lastShardCounts.set(a.slot.id, { pid: a.slot.pid, counts });
      answered.add(a.slot.id);
    }
    const carried = new Map<string, Record<string, number>>();
    addShardCounts(carried, this.shardCountsRetired);
    for (const [id, last] of this.lastShardCounts) if (!answered.has(id)) addShardCounts(carried, last.counts);
    const first = reports[0]!.report;
    const shards = first.shards.map((row) => {
      const known: Array<{ worker: number; row: ShardRow }> = [];
      for (const { id, report } of reports) {
        const same = report.shards.find((s) => s.name === row.name);
        if (same !== undefined) known.push({ worker: id, row: same });
      }
      const out = mergeWorkerRows(known, carried.get(row.name));
      if (row.replicas !== undefined)
        out.replicas = mergeReplicaRows(
          row.name,
          known.flatMap(({ worker, row: r }) => (r.replicas ?? []).map((replica) => ({ worker, row: replica }))),
          carried,
        );
      return out;
    });
    // The leader moves the keys: its migrations list is the one with the scan's progress.
    const leader = reports.find((r) => r.id === LEADER)?.report;
    return {
      ...first,
      ...(leader !== undefined ? { migrations: leader.migrations } : {}),
      version: this.version,
      worker_versions: Object.fromEntries(reports.map(({ id, report }) => [id, report.version])),
      shards,
      other_pubsub_connections: reports.flatMap(({ id, report }) =>
        ((report.other_pubsub_connections as unknown[] | undefined) ?? []).map((c) => ({
          worker: id,
          ...(c as object),
        })),
      ),
      workers: this.workersReport(),
      missing_workers: missing,
    };
  }

  /** /hotkeys: each key's requests and rate summed over the workers, re-ranked, the top k kept. */
  async hotKeys(authorized: boolean): Promise<unknown> {
    type Row = { key: string; shard: string; requests: number; rate: number; cached: boolean };
    type Report = Record<string, unknown> & { k: number; samples: number; covered_s: number; keys: Row[] };
    const { answers, missing } = await this.askAll({ op: 'hotkeys', authorized });
    const reports = answers.map((a) => a.value as Report);
    if (reports.length === 0) return { enabled: false, keys: [], missing_workers: missing };
    const byKey = new Map<string, Row>();
    for (const r of reports) {
      for (const row of r.keys) {
        const seen = byKey.get(row.key);
        if (seen === undefined) byKey.set(row.key, { ...row });
        else {
          seen.requests += row.requests;
          seen.rate += row.rate;
          seen.cached ||= row.cached;
        }
      }
    }
    const first = reports[0]!;
    const keys = [...byKey.values()]
      .sort((a, b) => b.requests - a.requests || (a.key < b.key ? -1 : 1))
      .slice(0, first.k)
      .map((row, i) => ({
        rank: i + 1,
        key: row.key,
        shard: row.shard,
        requests: row.requests,
        rate: Number(row.rate.toFixed(3)),
        cached: row.cached,
      }));
    return {
      ...first,
      covered_s: Math.max(...reports.map((r) => r.covered_s)),
      samples: reports.reduce((n, r) => n + r.samples, 0),
      workers: reports.length,
      missing_workers: missing,
      keys,
    };
  }

  /** /slowlog: every worker's entries, newest first, each with its worker. */
  async slowlog(limit: number, authorized: boolean): Promise<unknown> {
    type Entry = Record<string, unknown> & { time: string };
    type Report = Record<string, unknown> & { entries: Entry[] };
    const { answers, missing } = await this.askAll({ op: 'slowlog', authorized });
    if (answers.length === 0) return { missing_workers: missing, entries: [] };
    const entries = answers
      .flatMap((a) => (a.value as Report).entries.map((e) => ({ worker: a.slot.id, ...e })))
      .sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))
      .slice(0, limit);
    return { ...(answers[0]!.value as Report), missing_workers: missing, entries };
  }
}

/** Why the admin endpoint does not ask a worker that missed a heartbeat. */
function silence(slot: Slot): string {
  const ms = Math.round(performance.now() - slot.heardAt);
  return `silent: no heartbeat answered for ${ms} ms (busy or hung; replaced at workers_heartbeat_timeout_ms)`;
}

/** A worker answered a request with an error (it did answer: unlike a timeout or its exit). */
export class WorkerAnsweredError extends Error {}

/**
 * Every serving worker's answer to a reload: those that applied it, the errors of those that did not (refused,
 * answered an error, or did not answer), and those that did not answer at all (timed out or exited).
 */
export function sortReloadAnswers<S extends { id: number; pid: number }>(
  serving: readonly S[],
  outcomes: ReadonlyArray<PromiseSettledResult<unknown>>,
): { applied: S[]; errors: string[]; unanswered: S[] } {
  const applied: S[] = [];
  const errors: string[] = [];
  const unanswered: S[] = [];
  outcomes.forEach((o, i) => {
    const slot = serving[i]!;
    if (o.status === 'fulfilled' && o.value === null) {
      applied.push(slot);
      return;
    }
    const why = o.status === 'fulfilled' ? String(o.value) : (o.reason as Error).message;
    errors.push(`worker ${slot.id} (pid ${slot.pid}): ${why}`);
    if (o.status === 'rejected' && !(o.reason instanceof WorkerAnsweredError)) unanswered.push(slot);
  });
  return { applied, errors, unanswered };
}

/** Where a config places keys (slots and ring modes): two configs that differ here move keys. */
function placement(config: KeymuxConfig): string {
  if (config.mode === 'cluster') return 'cluster';
  const routing = [config.mode, config.hashTag, config.routing];
  if (config.mode === 'slots') {
    const owners = config.shards.map((s) => JSON.stringify([s.address, s.slots])).sort();
    return JSON.stringify([...routing, owners]);
  }
  const ring = config.shards.map((s) => [s.named ? s.name : s.address, s.address, s.weight]);
  return JSON.stringify([...routing, config.ring, ring]);
}

/** True when going from `previous` to `next` moves keys (migration enabled; slots or ring placement changed). */
export function movesKeys(previous: KeymuxConfig, next: KeymuxConfig): boolean {
  return next.migration.enabled && next.mode !== 'cluster' && placement(previous) !== placement(next);
}

/** The migration recorded in migration.state_file by a keymux that stopped in the middle of it, to resume. */
function interruptedMigration(config: KeymuxConfig, id: number): RunningMigration | null {
  const file = config.migration.stateFile;
  if (!config.migration.enabled || file === null || config.mode === 'cluster') return null;
  const chain = readMigrationState(file);
  if (chain === null) return null;
  if (chain.every((from) => placement({ ...config, ...from } as KeymuxConfig) === placement(config))) {
    removeMigrationState(file); // the config went back to where the keys are: nothing to move
    return null;
  }
  return { id, chain, phase: 'running', startedAt: Date.now() };
}
