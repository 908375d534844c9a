/**
 * Proxy: the running keymux. It owns the listener, the admin server, and the current Topology snapshot, which it
 * replaces by reference on reload (sessions read `proxy.topology` once per request, so a request never sees half
 * of a reload; a reload of the running config and files replaces nothing: applyConfig). Start-up derives the command table from a live shard's COMMAND reply when one answers, and uses
 * the built-in table otherwise. Drain stops accepting, lets in-flight requests finish (bounded by a grace
 * period), and closes.
 */
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import type { KeymuxConfig } from './config/schema.js';
import { Topology } from './routing/topology.js';
import { CommandTable, specsFromCommandReply, builtinRows, type CommandTableOptions } from './commands/table.js';
import { controlCommands } from './backend/control.js';
import { Listener } from './server/listener.js';
import { freeSocketPath } from './server/unix-socket.js';
import { AdminServer } from './metrics/admin-server.js';
import { newProxyStats, type ProxyContext, type ProxyStats, type SessionLike } from './server/context.js';
import type { Request } from './core/request.js';
import {
  killMatching,
  listingsOf,
  type ClientDirectory,
  type ClientListing,
  type KillFilter,
} from './commands/client-list.js';
import { childLogger, setLogLevel, type Logger } from './log.js';
import { readConfigFile } from './config/load.js';
import { ConfigWatcher } from './config/watch.js';
import { addConfigRoutes } from './config/endpoints.js';
import { Observer } from './metrics/observer.js';
import { ClusterController } from './backend/cluster.js';
import {
  ChainLocator,
  Migration,
  TopologyLocator,
  type KeyLocator,
  type MigrationProgress,
  type MoveResult,
  MigrationPause,
  type MigrationHold,
} from './migration/migration.js';
import { readMigrationState, routingOf, stateFileProblem } from './migration/state-file.js';
import { StatsRegistry } from './metrics/stats.js';
import type { ShardPool } from './backend/pool.js';
import { Metrics } from './metrics/metrics.js';
import { addObservabilityRoutes } from './metrics/endpoints.js';
import { ConfigError } from './config/load.js';
import { loadSecurity, sameMaterial, type SecurityMaterial } from './security/material.js';
import { FileSetWatcher, installBackendTls } from './security/tls.js';
import { RefusalLog } from './metrics/admin-server.js';
import { restartOnlyChange } from './routing/plan.js';
import { PubSubHub, type PubSubHost } from './pubsub/hub.js';
import { AuthGuard } from './security/auth-guard.js';
import { SentinelController, resolveSentinelView, sentinelMasters, type SentinelHost } from './backend/sentinel.js';
import { ReplicaChecks } from './backend/replica-checks.js';
import { HotReadSet } from './metrics/hot-reads.js';
import type { SentinelView } from './routing/topology.js';
import { SessionPools, type SessionSettings } from './session/session-pool.js';
import { errorReply } from './errors.js';
import { NearCache } from './nearcache/near-cache.js';
import { ScriptMemory } from './keyspace/script-memory.js';
import { ScanEpochs } from './keyspace/scan-epochs.js';

const require = createRequire(import.meta.url);
const VERSION: string = (require('../package.json') as { version: string }).version;

export interface StartOptions {
  /** Skip asking a shard for COMMAND (tests of the built-in table). */
  builtinCommandTable?: boolean;
  /** The file the config came from: enables reloads from it (SIGHUP, POST /reload, and watching it). */
  configPath?: string;
  /** Watch configPath's directory and reload on change (default true when configPath is given). */
  watchConfig?: boolean;
  /**
   * Watch the files the config names (certificates, keys, CAs, admin token, password files) and re-read them on
   * change (default: as watchConfig, i.e. true unless --no-watch).
   */
  watchSecrets?: boolean;
  /**
   * Serve the admin endpoint (config `admin`) from this process (default true). A worker process (workers > 1,
   * src/workers/) sets false: the primary process answers for all workers.
   */
  admin?: boolean;
  /**
   * A worker process (workers > 1): its link to the primary for key migrations, which the primary coordinates
   * (migration/migration.ts, "Coordination"). Without it this process runs its migrations alone.
   */
  migrationLink?: MigrationLink;
  /** A worker started while a coordinated migration runs (or resumes one): the migration and where keys were. */
  joinMigration?: { id: number; chain: Array<Partial<KeymuxConfig>> } | null;
  /** A worker process: its first client id (unique across workers; default 1). */
  clientIds?: { first: number };
  /** A worker process: CLIENT LIST and CLIENT KILL reach every worker's clients through the primary. */
  clientsLink?: ClientsLink;
  /**
   * A worker process: the primary already made listen_unix's path free to bind (removed a stale socket there), and
   * binds it once for every worker (node:cluster); a worker must not take the primary's live socket for another's.
   */
  unixPathChecked?: boolean;
}

/**
 * A worker's way to every worker's clients (CLIENT LIST, CLIENT KILL), through the primary; `failed` (why) instead
 * of `done` when the primary is gone or does not answer in time.
 */
export type ClientsLink = Pick<ClientDirectory, 'list' | 'kill'>;

/** A worker's side of coordinated migrations: whether it leads them, and its messages to the primary. */
export interface MigrationLink {
  leader: boolean;
  remoteMove(id: number, keys: Buffer[], done: (result: MoveResult) => void): void;
  /**
   * Follower: asks the leader to hold its key moves; `quiet(release)` once none runs (or once it is known that the
   * leader cannot hold them: release then does nothing). release() ends the hold.
   */
  remotePause(quiet: (release: () => void) => void): void;
  onScanned(id: number, progress: MigrationProgress): void;
}

/** What the primary adds to a reload it sends a worker (workers > 1). */
export interface ReloadOrder {
  /** This reload moves keys: the number of the coordinated migration (it waits for releaseMigration). */
  migrationId?: number;
  /** Roll back: this migration (not started yet) is abandoned and the config goes back to where it came from. */
  abortMigration?: number;
}

export interface ReloadResult {
  ok: boolean;
  /**
   * The configuration (and every file it names) equals the running one: nothing was applied, the topology, its
   * version and the pools are the ones before (README "Live reloads"). Always false when ok is false.
   */
  unchanged: boolean;
  errors: string[];
  version: number;
}

/** What applyConfig did with a config: applied it, found it equal to the running one, or refused it (why). */
type ApplyOutcome = 'applied' | 'unchanged' | string[];

/** How the command table is built from a config: the deny list and the scripts policy. */
function tableOptions(config: KeymuxConfig): CommandTableOptions {
  return { deny: config.commands.deny, scripts: config.commands.scripts };
}

export class Proxy implements ProxyContext, PubSubHost, SentinelHost {
  topology: Topology;
  readonly stats: ProxyStats;
  readonly startedAt: number;
  readonly version = VERSION;
  backendVersion: string;
  commandTableSource: 'live' | 'builtin';
  draining: boolean;

  /** Rows the current command table was built from (to rebuild it when the deny list changes). */
  private commandRows: ReturnType<typeof builtinRows>;
  readonly observer: Observer;
  /** Cluster mode only: discovery, redirections, node pools. */
  cluster: ClusterController | null;
  /** Pub/sub: client subscriptions multiplexed over one subscriber connection per node. */
  readonly pubsub: PubSubHub;
  /** Failed AUTHs: counted per client address, replies slowed, connections closed (security/auth-guard.ts). */
  readonly authGuard: AuthGuard;
  /** Sentinel-managed shards: discovery and failovers (null while the config has no sentinel section). */
  sentinel: SentinelController | null;
  /** Which replicas may serve reads (slots and ring modes). */
  private readonly replicaChecks: ReplicaChecks;
  /** hot_keys.read_from_replicas: the current top-K as a set the read path can ask. */
  private readonly hotReads: HotReadSet;
  /** Session connections leased per node (transactions, WATCH, blocking commands). */
  readonly sessions: SessionPools;
  /** Near cache and request coalescing (src/nearcache/); null when near_cache turns both off. */
  nearCache: NearCache | null;
  /** Scripts and functions loaded through keymux (replayed on shards added later). */
  readonly scripts = new ScriptMemory();
  /** Routings of SCAN walks (a walk spanning a reload). */
  readonly scanEpochs = new ScanEpochs();
  private readonly listener: Listener;
  private admin: AdminServer | null;
  private readonly log: Logger;
  private versionCounter: number;
  private configPath: string | null = null;
  private watcher: ConfigWatcher | null = null;
  private reloadChain: Promise<unknown> = Promise.resolve();
  private readonly migrations: Migration[] = [];
  /** Workers > 1: the primary coordinates migrations (null: this process runs them alone). */
  private migrationLink: MigrationLink | null = null;
  private clientsLink: ClientsLink | null = null;
  /** Leader (workers > 1): key-move holds given to followers' commands to every shard, by the primary's number. */
  private readonly workerPauses = new Map<number, { hold: MigrationPause; timer: NodeJS.Timeout }>();
  /** Set while joining a migration at start: it moves keys right after its (empty) fence. */
  private joiningMigration = false;
  private readonly migrationsDone: MigrationProgress[] = [];
  /** What the running config names in files: TLS contexts, the admin token, passwords (security/material.ts). */
  private security: SecurityMaterial;
  /** Watches those files (certificate rotation, a Kubernetes Secret update); null when there are none. */
  private secretsWatcher: FileSetWatcher | null = null;
  private watchSecrets = true;
  private readonly adminRefusals = new RefusalLog(10_000);

  private constructor(
    config: KeymuxConfig,
    table: CommandTable,
    rows: ReturnType<typeof builtinRows>,
    security: SecurityMaterial,
    sentinelView: SentinelView,
  ) {
    this.security = security;
    this.commandRows = rows;
    this.stats = newProxyStats();
    this.startedAt = Date.now();
    this.backendVersion = 'unknown';
    this.commandTableSource = 'builtin';
    this.draining = false;
    this.log = childLogger('proxy');
    this.versionCounter = 1;
    const stats = new StatsRegistry();
    this.observer = new Observer(stats, config.metrics);
    this.hotReads = new HotReadSet(this.observer);
    this.sentinel = config.sentinel !== null ? new SentinelController(this, config.sentinel) : null;
    this.topology = new Topology(config, table, this.versionCounter, null, stats, undefined, {
      sentinelView,
      sentinelHandler: this.sentinel,
      hotKeys: this.hotReads.test,
    });
    this.replicaChecks = new ReplicaChecks(this);
    this.listener = new Listener(this);
    this.admin = null;
    this.cluster = null;
    this.pubsub = new PubSubHub(this);
    this.authGuard = new AuthGuard();
    this.sessions = new SessionPools(sessionSettings(config));
    this.nearCache = null;
    this.configureNearCache(config);
  }

  /** Creates, reconfigures or closes the near cache for `config` (start-up and reload). */
  private configureNearCache(config: KeymuxConfig): void {
    const nc = config.nearCache;
    if (!nc.enabled && !nc.coalesce) {
      this.nearCache?.close();
      this.nearCache = null;
      return;
    }
    if (this.nearCache === null) {
      this.nearCache = new NearCache(nc, () => this.observer.hotKeys, childLogger('nearcache'));
      this.nearCache.onTopology(this.topology);
    } else {
      this.nearCache.configure(nc);
    }
  }

  /**
   * Starts keymux on `config`. Every file it names (certificates, keys, CAs, the admin token, password files) is
   * read and checked first: a bad one throws a ConfigError listing each problem, and nothing is started.
   */
  static async start(validated: KeymuxConfig, options: StartOptions = {}): Promise<Proxy> {
    const loaded = loadSecurity(validated);
    if (loaded.errors !== undefined) throw new ConfigError(loaded.errors);
    const stateProblem = validated.migration.enabled ? stateFileProblem(validated.migration.stateFile) : null;
    if (stateProblem !== null) throw new ConfigError([`${validated.source}: ${stateProblem}`]);
    // Before anything is started: a path keymux must not take (a file, another process's live socket) stops here.
    if (validated.listenUnix !== null && options.unixPathChecked !== true)
      await startStep(validated.source, () => freeSocketPath(validated.listenUnix!.path));
    const material = loaded.material;
    const config = material.config;
    if (material.backendTls !== null) installBackendTls(config.backend.tls, material.backendTls);
    const rows = builtinRows();
    let sentinelView: SentinelView;
    try {
      sentinelView = await resolveSentinelView(config);
    } catch (err) {
      throw new ConfigError((err as Error).message.split('\n').map((line) => `${config.source}: sentinel: ${line}`));
    }
    const table = CommandTable.fromRows(rows, tableOptions(config));
    const proxy = new Proxy(config, table, rows, material, sentinelView);
    proxy.warnInsecure(config);
    proxy.topology.connect();
    proxy.startHighAvailability(config);
    if (options.builtinCommandTable !== true) await proxy.learnFromShards();
    if (config.mode === 'cluster') {
      proxy.cluster = new ClusterController(proxy, config);
      await proxy.cluster.start();
    }
    proxy.migrationLink = options.migrationLink ?? null;
    proxy.clientsLink = options.clientsLink ?? null;
    proxy.resumeMigration(options.joinMigration ?? null);
    if (options.configPath !== undefined) {
      proxy.configPath = options.configPath;
      if (options.watchConfig !== false) {
        proxy.watcher = new ConfigWatcher(options.configPath, () => void proxy.reloadFromFile('file change'));
        proxy.watcher.start();
      }
    }
    if (options.clientIds !== undefined) proxy.listener.useClientIds(options.clientIds.first);
    const addr = config.listen !== null ? await proxy.listener.listen(config.listen.host, config.listen.port) : null;
    const tlsAddr =
      config.tls.enabled && config.tls.listen !== null && material.clientTls !== null
        ? await proxy.listener.listenTls(config.tls.listen.host, config.tls.listen.port, material.clientTls.options)
        : null;
    const unix = config.listenUnix;
    if (unix !== null) {
      await startStep(config.source, () => proxy.listener.listenUnix(unix.path, unix.mode, false)).catch(
        async (err: unknown) => {
          await proxy.close();
          throw err;
        },
      );
    }
    if (config.admin !== null && options.admin !== false) {
      proxy.admin = new AdminServer(
        { ready: () => proxy.readiness() },
        {
          tls: material.adminTls?.options ?? null,
          access: {
            token: () => proxy.security.adminToken,
            publicMetrics: () => proxy.topology.config.admin?.publicMetrics ?? true,
            refused: (reason, req) => proxy.adminRefused(reason, req.method, req.url, req.socket.remoteAddress),
          },
        },
      );
      proxy.admin.setErrorHandler((err, method, path) =>
        proxy.log.error({ err, method, path }, 'admin request failed'),
      );
      addObservabilityRoutes(proxy.admin, proxy, new Metrics(proxy));
      addConfigRoutes(proxy.admin, proxy);
      await proxy.admin.listen(config.admin.host, config.admin.port);
    }
    proxy.watchSecrets = options.watchSecrets ?? options.watchConfig !== false;
    proxy.watchSecretFiles(material.files);
    proxy.log.info(
      {
        listen: addr === null ? null : `${addr.address}:${addr.port}`,
        ...(tlsAddr !== null ? { tls: `${tlsAddr.address}:${tlsAddr.port}` } : {}),
        ...(unix !== null ? { unix: unix.path } : {}),
        admin: proxy.admin?.port ?? null,
        ...(material.adminToken !== null ? { adminToken: true } : {}),
        mode: config.mode,
        shards: config.shards.length,
        commandTable: proxy.commandTableSource,
      },
      'keymux listening',
    );
    return proxy;
  }

  /**
   * The plain port clients connect to (useful when the config says port 0); the TLS port when there is none; 0 when
   * clients connect over the Unix socket only.
   */
  get port(): number {
    return (this.listener.address ?? this.listener.tlsAddress)?.port ?? 0;
  }

  /** The Unix socket's path while keymux listens on it (null without listen_unix). */
  get unixSocket(): string | null {
    return this.listener.unixSocket;
  }

  /** The TLS port (tls.listen), or null without client TLS. */
  get tlsPort(): number | null {
    return this.listener.tlsAddress?.port ?? null;
  }

  /** When each certificate keymux presents expires (ms since the epoch), for keymux_tls_certificate_expiry_seconds. */
  certificateExpiry(): Array<{ port: 'client' | 'admin' | 'backend'; expiresAt: number }> {
    const out: Array<{ port: 'client' | 'admin' | 'backend'; expiresAt: number }> = [];
    const s = this.security;
    if (s.clientTls !== null) out.push({ port: 'client', expiresAt: s.clientTls.expiresAt });
    if (s.adminTls !== null) out.push({ port: 'admin', expiresAt: s.adminTls.expiresAt });
    if (s.backendTls !== null && s.backendTls.expiresAt !== null)
      out.push({ port: 'backend', expiresAt: s.backendTls.expiresAt });
    return out;
  }

  get adminPort(): number | null {
    return this.admin?.port ?? null;
  }

  /** The config file reloads read, or null (started from a config object). */
  get configFile(): string | null {
    return this.configPath;
  }

  clientCount(): number {
    return this.listener.sessions.size;
  }

  /**
   * CLIENT LIST / KILL (commands/client-list.ts): this process's clients, or with a ClientsLink (a worker) every
   * worker's, through the primary.
   */
  readonly clients: ClientDirectory = {
    list: (done, failed) => {
      if (this.clientsLink === null) done(this.localClientListings());
      else this.clientsLink.list(done, failed);
    },
    kill: (filter, callerId, done, failed) => {
      if (this.clientsLink === null) done(this.killLocalClients(filter, callerId));
      else this.clientsLink.kill(filter, callerId, done, failed);
    },
    userExists: (name) => this.topology.acl.users.has(name),
  };

  /** This process's own clients' listings (a worker's answer to the primary's `client-listings`). */
  localClientListings(): ClientListing[] {
    return listingsOf(this.listener.sessions);
  }

  /** Kills this process's clients `filter` matches, never `callerId` (a worker's answer to `client-kill`). */
  killLocalClients(filter: KillFilter, callerId: number): number {
    return killMatching(this.listener.sessions, filter, callerId);
  }

  clientBufferedBytes(): number {
    return this.listener.limits.bufferedBytes;
  }

  sessionClosed(session: SessionLike): void {
    this.listener.remove(session);
  }

  onReplied(req: Request): void {
    this.stats.commands++;
    this.observer.onReplied(req);
  }

  onKeyRouted(key: Buffer): void {
    this.observer.onKeyRouted(key);
  }

  clusterHint(): void {
    this.cluster?.refreshSoon();
  }

  nodePool(address: string): ShardPool | null {
    return this.cluster === null ? null : this.cluster.pool(address, false);
  }

  readiness(): { ok: boolean; reason: string } {
    if (this.draining) return { ok: false, reason: 'draining' };
    const up = this.topology.shards.filter((s) => s.pool.healthy).length;
    if (up === 0) return { ok: false, reason: 'no shard is reachable' };
    return { ok: true, reason: `${up}/${this.topology.shards.length} shards reachable` };
  }

  /**
   * Re-reads the config file and applies it; a config with errors is rejected (logged, counted) and the running
   * one stays. Reloads are serialised. `trigger` names what asked (SIGHUP, file change, admin).
   */
  reloadFromFile(trigger: string): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      if (this.configPath === null)
        return {
          ok: false,
          unchanged: false,
          errors: ['keymux was started without a config file'],
          version: this.topology.version,
        };
      const seen = this.watcher?.snapshot() ?? '';
      const result = await readConfigFile(this.configPath);
      if (result.errors !== undefined) {
        this.stats.reloadsFailed++;
        this.log.error({ trigger, errors: result.errors }, 'config reload rejected; the running config stays');
        return { ok: false, unchanged: false, errors: result.errors, version: this.topology.version };
      }
      const prepared = await this.prepareSentinels(result.config);
      if (Array.isArray(prepared)) {
        this.stats.reloadsFailed++;
        this.log.error({ trigger, errors: prepared }, 'config reload rejected; the running config stays');
        this.watcher?.markCurrent(seen);
        return { ok: false, unchanged: false, errors: prepared, version: this.topology.version };
      }
      const outcome = this.applyConfig(result.config, trigger, prepared);
      this.watcher?.markCurrent(seen);
      const version = this.topology.version;
      if (Array.isArray(outcome)) return { ok: false, unchanged: false, errors: outcome, version };
      if (outcome === 'applied') this.log.info({ trigger, version }, 'config reloaded');
      return { ok: true, unchanged: outcome === 'unchanged', errors: [], version };
    };
    // A reload that throws (a bug, never a config: those are refused above) is reported, not left as a rejection
    // nobody handles (SIGHUP and the file watcher do not wait for the result): that would end the process.
    const guarded = async (): Promise<ReloadResult> => {
      try {
        return await run();
      } catch (err) {
        this.stats.reloadsFailed++;
        this.log.error({ trigger, err }, 'config reload failed');
        return {
          ok: false,
          unchanged: false,
          errors: [`reload failed: ${(err as Error).message}`],
          version: this.topology.version,
        };
      }
    };
    const next = this.reloadChain.then(guarded, guarded);
    this.reloadChain = next;
    return next;
  }

  /**
   * Applies a new validated config: builds a new topology (carrying over unchanged pools) and swaps it in by
   * reference. Requests already sent finish on the pools they were sent to; pools no longer used close once idle.
   * Returns null, or why the config was refused (the running config stays).
   */
  reload(config: KeymuxConfig): string | null {
    const outcome = this.applyConfig(config, 'reload');
    return Array.isArray(outcome) ? outcome.join('\n') : null;
  }

  /**
   * reload() for a config whose sentinel_master shards may not be known yet: asks the sentinels first (as a
   * reload from the file does). Returns null, or why the config was refused.
   */
  async reloadAsync(config: KeymuxConfig, order: ReloadOrder = {}): Promise<string | null> {
    const run = async (): Promise<string | null> => {
      const prepared = await this.prepareSentinels(config);
      if (Array.isArray(prepared)) return prepared.join('\n');
      const outcome = this.applyConfig(config, 'reload', prepared, order);
      return Array.isArray(outcome) ? outcome.join('\n') : null;
    };
    const next = this.reloadChain.then(run, run);
    this.reloadChain = next;
    return next;
  }

  /**
   * Before a reload: the sentinels' view for every sentinel_master of `config` (masters already followed keep
   * their current view; new ones are asked now, with the password of `sentinel.password_file` when the config
   * names one: a file that cannot be read refuses the reload with its own error, not with the sentinels' NOAUTH).
   * A list of lines: why the reload must be refused.
   */
  private async prepareSentinels(config: KeymuxConfig): Promise<SentinelView | string[]> {
    if (sentinelMasters(config).length === 0) return new Map();
    let asking = config;
    if ((config.sentinel?.passwordFile ?? null) !== null) {
      const loaded = loadSecurity(config);
      if (loaded.errors !== undefined) return loaded.errors;
      asking = loaded.material.config;
    }
    try {
      return await resolveSentinelView(asking, this.topology.sentinelView);
    } catch (err) {
      return [`${config.source}: sentinel: ${(err as Error).message}`];
    }
  }

  /** Starts following the sentinels (when configured), the replica checks and hot-key reads. */
  private startHighAvailability(config: KeymuxConfig): void {
    this.sentinel?.start();
    this.replicaChecks.configure(config);
    this.hotReads.enable(config.metrics.hotKeys.readFromReplicas && config.metrics.hotKeys.enabled);
  }

  /** Sentinel: a failover replaced the primary at `address`: keymux's session connections there close. */
  closeSessionConnections(address: string): void {
    this.sessions.closeNode(address);
  }

  /** Sentinel: the sentinels named another primary (or other replicas) for a shard: a snapshot with them. */
  installSentinelView(view: SentinelView, reason: string): void {
    const previous = this.topology;
    const next = new Topology(previous.config, previous.table, ++this.versionCounter, previous, undefined, undefined, {
      sentinelView: view,
    });
    // A failover moves no key: the shard's keys are on its new primary (replicated); nothing to migrate.
    next.migration = previous.migration;
    next.connect();
    this.topology = next;
    this.pubsub.onTopology(next);
    // The near cache follows the new primary: its invalidation channel on the old one would report nothing of the
    // writes the new one takes (the old one may even come back as a primary for a while and answer as if current).
    this.nearCache?.onTopology(next);
    for (const pool of next.retiredPools(previous)) pool.closeWhenIdle();
    this.sessions.retireAbsent(next);
    this.replicaChecks.configure(next.config);
    this.log.info({ version: next.version, reason }, 'sentinel view installed');
  }

  /**
   * reload(), with the errors as lines. The files the config names (certificates, token, passwords) are read and
   * checked before anything changes: a bad one rejects the reload like a bad config. A config equal to the running
   * one, read from files with the same contents, is not applied ('unchanged'): the topology object, its version,
   * the pools and every setting stay as they are (a ConfigMap sync or a cron touching the file, a SIGHUP to be
   * sure, would otherwise look like a change on every dashboard).
   */
  private applyConfig(
    validated: KeymuxConfig,
    trigger: string,
    sentinelView?: SentinelView,
    order: ReloadOrder = {},
  ): ApplyOutcome {
    const previous = this.topology;
    const view = sentinelView ?? previous.sentinelView;
    const unresolved = sentinelMasters(validated).filter((m) => !view.has(m));
    if (unresolved.length > 0) {
      this.stats.reloadsFailed++;
      return [
        `${validated.source}: sentinel: no primary known yet for ${unresolved.join(', ')}: reload from the file ` +
          '(SIGHUP, POST /reload) so keymux asks the sentinels first',
      ];
    }
    const restartOnly = restartOnlyChange(previous.config, validated);
    if (restartOnly !== null) {
      this.stats.reloadsFailed++;
      this.log.error({ change: restartOnly }, 'config reload rejected: this change needs a restart');
      return [`${validated.source}: ${restartOnly} cannot change without a restart`];
    }
    const refused = migrationRefusal(previous, validated);
    if (refused !== null) {
      this.stats.reloadsFailed++;
      this.log.error({ trigger, reason: refused }, 'config reload rejected: the running config stays');
      return [`${validated.source}: ${refused}`];
    }
    const loaded = loadSecurity(validated);
    if (loaded.errors !== undefined) {
      this.stats.reloadsFailed++;
      this.log.error(
        { trigger, errors: loaded.errors },
        'config reload rejected: a certificate, key, CA, token or password file is bad; the running config stays',
      );
      return loaded.errors;
    }
    // A worker told to start or abort a coordinated migration applies it whatever it finds (the primary decided).
    const ordered = order.migrationId !== undefined || order.abortMigration !== undefined;
    if (!ordered && sameMaterial(loaded.material, this.security)) {
      this.stats.reloadsUnchanged++;
      this.log.info({ trigger, version: previous.version }, 'config unchanged: nothing to apply');
      return 'unchanged';
    }
    const config = loaded.material.config;
    const table =
      previous.config.commands.deny.join() === config.commands.deny.join() &&
      previous.config.commands.scripts === config.commands.scripts
        ? previous.table
        : CommandTable.fromRows(this.commandRows, tableOptions(config));
    if (this.cluster !== null) {
      this.installSettings(loaded.material);
      this.cluster.updateConfig(config, table);
      this.observer.configure(config.metrics);
      this.accessChanged(previous);
      this.configureNearCache(config);
      this.stats.reloadsOk++;
      return 'applied';
    }
    // The snapshot is built before anything changes (it connects nothing yet): a config it cannot be built from
    // (a router that refuses its shards) is refused with the running token, certificates, log level, session
    // settings and counters as they were.
    const sentinel = config.sentinel === null ? null : (this.sentinel ?? new SentinelController(this, config.sentinel));
    let next: Topology;
    try {
      next = new Topology(config, table, this.versionCounter + 1, previous, undefined, undefined, {
        sentinelView: view,
        sentinelHandler: sentinel,
      });
    } catch (err) {
      this.stats.reloadsFailed++;
      this.log.error({ trigger, err }, 'config reload rejected: the running config stays');
      return [`${validated.source}: ${(err as Error).message}`];
    }
    this.versionCounter++;
    this.installSettings(loaded.material);
    this.updateSentinel(config, sentinel);
    next.connect();
    this.scripts.replayOn(newPools(previous, next));
    // A rollback of a coordinated migration that never started moving: keys are still where it came from.
    const held = previous.migration;
    const aborted =
      order.abortMigration !== undefined && held !== null && held.id === order.abortMigration && held.active
        ? held
        : null;
    // Aborting one chained after a migration that was running: that one goes on.
    const reinstated = aborted?.predecessor ?? null;
    let migration: Migration | null = null;
    if (reinstated !== null) next.migration = reinstated;
    else migration = this.startMigration(aborted?.fromTopology ?? previous, next, order.migrationId ?? null);
    this.topology = next;
    // Only now is the running migration superseded: the requests its fence holds are routed again at once, and must
    // meet the new topology (and the new migration's fence), not the one this reload replaces.
    migration?.predecessor?.supersede();
    // A client blocked (BLPOP...) on a node its keys left would wait there for good: it gets nil, as on a timeout.
    this.sessions.unblockMoved(next, errorReply('ERR keymux: the keys moved to another shard (config reload); retry'));
    this.pubsub.onTopology(next);
    this.accessChanged(previous);
    this.nearCache?.onTopology(next);
    aborted?.abort();
    reinstated?.reinstate();
    // A transaction written to a session connection before the swap may still be on its way to an old owner.
    migration?.start(previous, (done) => this.sessions.execsAnswered(done, config.backend.timeoutMs));
    this.observer.configure(config.metrics);
    this.configureNearCache(config);
    for (const pool of next.retiredPools(previous)) pool.closeWhenIdle();
    this.sessions.retireAbsent(next);
    this.replicaChecks.configure(config);
    this.hotReads.enable(config.metrics.hotKeys.readFromReplicas && config.metrics.hotKeys.enabled);
    this.stats.reloadsOk++;
    return 'applied';
  }

  /** A reload that will be applied: its certificates and token, log level and session settings take effect. */
  private installSettings(material: SecurityMaterial): void {
    this.applySecurity(material);
    setLogLevel(material.config.log.level);
    this.sessions.settings = sessionSettings(material.config);
  }

  /**
   * A reload: starts, re-targets or stops following the sentinels as the config's sentinel section says.
   * `controller`: the one the new snapshot was built with (the running one, or a new one not started yet).
   */
  private updateSentinel(config: KeymuxConfig, controller: SentinelController | null): void {
    if (config.sentinel === null || controller === null) {
      this.sentinel?.close();
      this.sentinel = null;
    } else if (this.sentinel !== controller) {
      this.sentinel = controller;
      controller.start();
    } else {
      controller.updateSettings(config.sentinel);
    }
  }

  /** After a reload: when users or rules changed, each session checks its subscriptions against its new rules. */
  private accessChanged(previous: Topology): void {
    const acl = this.topology.acl;
    if (acl === previous.acl) return;
    for (const session of this.listener.sessions) session.onAccessChanged(acl);
  }

  /** Makes `material` the live security material: new handshakes use its certificates, the admin its token. */
  private applySecurity(material: SecurityMaterial): void {
    this.security = material;
    const config = material.config;
    if (material.clientTls !== null) this.listener.setSecureContext(material.clientTls.options);
    if (material.adminTls !== null) this.admin?.setSecureContext(material.adminTls.options);
    if (material.backendTls !== null) installBackendTls(config.backend.tls, material.backendTls);
    this.warnInsecure(config);
    this.watchSecretFiles(material.files);
  }

  /**
   * One of the files the running config names changed (a rotated certificate, a Kubernetes Secret update): reads
   * them all again. Good files take effect for new connections (connected clients and shards keep theirs); a
   * changed password file applies the config again with the new password; a bad file is logged and counted as a
   * failed reload, and the running material stays. Resolves with null once applied, else why not (one line per
   * problem). Called by this proxy's own watch, or, in a worker, when the primary's watch saw the change
   * (workers/primary.ts: it counts the re-read once for the whole process).
   */
  rereadSecrets(trigger: string): Promise<string[] | null> {
    const run = (): string[] | null => {
      const current = this.topology.config;
      const loaded = loadSecurity(current);
      if (loaded.errors !== undefined) {
        this.stats.reloadsFailed++;
        this.log.error(
          { trigger, errors: loaded.errors },
          'new certificate, key, CA, token or password file rejected; the running ones stay',
        );
        return loaded.errors;
      }
      const next = loaded.material.config;
      if (
        next.clients.password !== current.clients.password ||
        next.backend.password !== current.backend.password ||
        next.sentinel?.password !== current.sentinel?.password
      ) {
        // The sentinels' password reaches the controller (its queries and subscriber connections) with the config.
        const outcome = this.applyConfig(current, trigger);
        if (outcome === 'applied') this.log.info({ trigger, version: this.topology.version }, 'secret files re-read');
        return typeof outcome === 'string' ? null : outcome;
      }
      this.applySecurity(loaded.material);
      this.stats.reloadsOk++;
      this.log.info({ trigger, files: loaded.material.files.length }, 'TLS and secret files re-read');
      return null;
    };
    const next = this.reloadChain.then(run, run);
    this.reloadChain = next;
    return next;
  }

  /** (Re)starts the watch on `files` when the set changed; otherwise records their current contents. */
  private watchSecretFiles(files: readonly string[]): void {
    if (!this.watchSecrets || this.draining) return;
    const same =
      this.secretsWatcher !== null && this.secretsWatcher.files.join('\n') === [...new Set(files)].sort().join('\n');
    if (same) {
      this.secretsWatcher!.markCurrent();
      return;
    }
    this.secretsWatcher?.stop();
    this.secretsWatcher = null;
    if (files.length === 0) return;
    this.secretsWatcher = new FileSetWatcher(files, () => void this.rereadSecrets('file change'));
    this.secretsWatcher.start();
  }

  private warnInsecure(config: KeymuxConfig): void {
    if (config.backend.tls.enabled && !config.backend.tls.verify) {
      this.log.warn(
        'backend.tls.verify is false: connections to the shards are encrypted but the shards are not authenticated',
      );
    }
  }

  /** A refused admin request: counted; logged at most every 10 s, with the number refused since the last line. */
  private adminRefused(
    reason: string,
    method: string | undefined,
    url: string | undefined,
    remote: string | undefined,
  ) {
    this.stats.adminRefused++;
    const n = this.adminRefusals.note();
    if (n > 0) this.log.warn({ reason, method, path: url, remote, refused: n }, 'admin request refused');
  }

  /**
   * When `next` places keys differently from `previous` (slots or ring mode), creates the Migration that moves
   * them, chained to a migration still running. Returns it (not started) or null.
   */
  private startMigration(
    previous: Topology,
    next: Topology,
    coordinatedId: number | null = null,
    resumed: { from: KeyLocator; chain: Array<Partial<KeymuxConfig>>; sources: string[] } | null = null,
  ): Migration | null {
    const settings = migrationSettings(next.config);
    if (!settings.enabled || next.config.mode === 'cluster') return null;
    const running = previous.migration !== null && previous.migration.active ? previous.migration : null;
    const link = this.migrationLink;
    if (link !== null) {
      // A worker: the primary decides which reloads move keys and numbers them; one it did not number moves none
      // here (a migration already running carries on).
      if (coordinatedId === null) {
        next.migration = running;
        return null;
      }
      // Numbered by the primary: it runs even if this worker still holds an earlier one (superseded below).
    } else if (resumed === null || !resumed.from.uncertain) {
      if (running === null && previous.routingSignature() === next.routingSignature()) return null;
      if (running !== null && running.to.routingSignature() === next.routingSignature()) {
        next.migration = running; // same destination: the running migration carries on
        return null;
      }
    }
    const sources = new Set<string>(previous.shards.map((s) => s.address));
    if (running !== null) for (const a of running.sources) sources.add(a);
    if (resumed !== null) for (const a of resumed.sources) sources.add(a);
    const from: KeyLocator = running ?? resumed?.from ?? new TopologyLocator(previous);
    // Where keys may still be: the running migration's places, then the placement this reload leaves.
    const chain = resumed?.chain ?? [...(running?.chain ?? []), routingOf(previous.config)];
    const migration = new Migration(
      from,
      [...sources],
      next,
      // Coordinated: the primary keeps the state file (one writer for all workers).
      { stateFile: link === null ? settings.stateFile : null, chain, resumed: resumed !== null },
      (done) => {
        this.migrationsDone.push(done.progress());
        if (this.migrationsDone.length > 10) this.migrationsDone.shift();
      },
      link === null || coordinatedId === null
        ? null
        : {
            id: coordinatedId,
            role: link.leader ? 'leader' : 'follower',
            released: this.joiningMigration,
            remoteMove: link.remoteMove,
            onScanned: link.onScanned,
          },
    );
    next.migration = migration;
    this.migrations.push(migration);
    this.pruneMigrations();
    return migration;
  }

  /**
   * Keeps the running migrations and the last KEEP_ENDED_MIGRATIONS ended ones (a follower may still ask the leader
   * about one it just finished: moveForWorker answers "done" from it); older ones are dropped with their topologies.
   */
  private pruneMigrations(): void {
    let ended = 0;
    for (let i = this.migrations.length - 1; i >= 0; i--) {
      const state = this.migrations[i].state;
      if (state !== 'done' && state !== 'aborted') continue;
      if (++ended > KEEP_ENDED_MIGRATIONS) this.migrations.splice(i, 1);
    }
  }

  /** Migrations of this process, newest last (for /shards and metrics). */
  migrationProgress(): MigrationProgress[] {
    const ended = (m: Migration): boolean => m.state === 'done' || m.state === 'aborted';
    return [...this.migrationsDone, ...this.migrations.filter((m) => !ended(m)).map((m) => m.progress())];
  }

  /**
   * Resumes a migration recorded in the state file by a previous run (restart during a migration); a worker
   * (workers > 1) joins the one the primary names instead (it reads no state file: the primary does).
   */
  private resumeMigration(join: { id: number; chain: Array<Partial<KeymuxConfig>> } | null): void {
    const settings = migrationSettings(this.topology.config);
    if (!settings.enabled || this.topology.config.mode === 'cluster') return;
    let chain: Array<Partial<KeymuxConfig>> | null;
    if (this.migrationLink !== null) chain = join?.chain ?? null;
    else chain = settings.stateFile === null ? null : readMigrationState(settings.stateFile);
    if (chain === null) return; // no migration was interrupted
    const current = this.topology;
    const placements = chain.map(
      (from) =>
        new Topology(
          { ...current.config, ...from } as KeymuxConfig,
          current.table,
          0,
          null,
          new StatsRegistry(),
          undefined,
          {
            sentinelView: current.sentinelView,
          },
        ),
    );
    const old = placements[placements.length - 1];
    // One placement: keys are on its owners or already moved. More (keymux stopped during chained migrations):
    // a key may be on its owner in any of them, so moves probe each, oldest first (migration.ts ChainLocator).
    const from: KeyLocator = placements.length === 1 ? new TopologyLocator(old) : new ChainLocator(placements);
    const sources = [...new Set(placements.flatMap((t) => t.shards.map((s) => s.address)))];
    const next = new Topology(current.config, current.table, ++this.versionCounter, current);
    this.joiningMigration = true; // nothing of this process is on its way to an old owner: no fence to wait for
    const migration = this.startMigration(old, next, join?.id ?? null, { from, chain, sources });
    this.joiningMigration = false;
    this.topology = next;
    this.pubsub.onTopology(next);
    this.nearCache?.onTopology(next);
    this.log.info(
      join !== null
        ? { migration: join.id, placements: chain.length }
        : { stateFile: settings.stateFile, placements: chain.length },
      join !== null ? 'joining a running migration' : 'resuming an interrupted migration',
    );
    migration?.start(old);
  }

  // ---- coordinated migrations (a worker process, workers > 1) ---------------------------------------------------

  /** The running migration numbered `id` by the primary, or null. */
  private coordinated(id: number): Migration | null {
    for (let i = this.migrations.length - 1; i >= 0; i--) if (this.migrations[i].id === id) return this.migrations[i];
    return null;
  }

  /** Resolves once this worker's requests to the old owners of migration `id` are answered (its fence). */
  migrationFenced(id: number): Promise<void> {
    const m = this.coordinated(id);
    return new Promise((resolve) => (m === null ? resolve() : m.whenFencedHere(resolve)));
  }

  /** The primary: every worker has fenced; migration `id` may move keys. */
  releaseMigration(id: number): void {
    this.coordinated(id)?.release();
  }

  /** The primary: the leader's scan of migration `id` is over; every key is on its new owner. */
  endMigration(id: number): void {
    this.coordinated(id)?.endCoordinated();
  }

  /** Leader: moves `keys` for another worker; true once they are on their new owners. */
  /** What holds key moves for a command to every shard (ProxyContext.pauseMigrations). */
  pauseMigrations(): MigrationHold {
    const link = this.migrationLink;
    if (link !== null && !link.leader && this.topology.migration !== null && this.topology.migration.active) {
      return new RemotePause(link); // the leader runs every MIGRATE of a coordinated migration
    }
    return new MigrationPause();
  }

  /**
   * Leader (workers > 1): holds this process's key moves for a follower's command to every shard; resolves with
   * `pause` once no MIGRATE runs. Ended by unpauseForWorker, or after WORKER_PAUSE_MAX_MS by itself (the follower
   * died holding it, or its word was lost with the primary: the moves must not stop for good).
   */
  pauseForWorker(pause: number): Promise<number> {
    const hold = new MigrationPause();
    const limit = Math.max(WORKER_PAUSE_MAX_MS, 2 * this.topology.config.backend.timeoutMs);
    const timer = setTimeout(() => this.unpauseForWorker(pause), limit);
    timer.unref();
    this.workerPauses.set(pause, { hold, timer });
    this.log.debug({ pause }, "key moves held for another worker's command to every shard");
    return new Promise((resolve) => hold.whenQuiet(() => resolve(pause)));
  }

  unpauseForWorker(pause: number): void {
    const held = this.workerPauses.get(pause);
    if (held === undefined) return;
    this.workerPauses.delete(pause);
    clearTimeout(held.timer);
    held.hold.release();
  }

  moveForWorker(id: number, keys: Buffer[]): Promise<MoveResult> {
    const m = this.coordinated(id);
    if (m === null) return Promise.resolve(false);
    if (m.state === 'done') return Promise.resolve(true); // every key is on its new owner
    if (m.state === 'superseded') return Promise.resolve('superseded'); // a chained one moves them now
    if (!m.active) return Promise.resolve(false);
    return new Promise((resolve) => m.moveThen(keys, resolve));
  }

  /** Cluster mode: the controller installs each new snapshot here. */
  installTopology(next: Topology): void {
    next.connect();
    // New masters got the remembered scripts and functions when the controller created their pools.
    this.topology = next;
    this.pubsub.onTopology(next);
    this.nearCache?.onTopology(next);
    this.sessions.retireAbsent(next);
  }

  nextTopologyVersion(): number {
    return ++this.versionCounter;
  }

  /** Stops accepting clients, waits for in-flight requests (at most graceMs), then closes everything. */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    await this.listener.stopAccepting();
    // Blocked clients get their command's timeout reply (nil) from the shard itself (CLIENT UNBLOCK), so an item
    // popped at that very moment still reaches its client; then they close like the others.
    this.sessions.drain(ERR_DRAIN_BLOCKED);
    for (const s of this.listener.sessions) s.closeWhenDone();
    const deadline = performance.now() + graceMs;
    while (this.listener.sessions.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20)); // sessions close on their own; poll the count until the grace ends
    }
    const left = this.listener.sessions;
    if (left.size > 0) {
      // The grace ran out: close() cuts these clients, and the requests they still wait for are never answered.
      let requestsInFlight = 0;
      for (const s of left) requestsInFlight += s.pendingRequests;
      this.log.warn(
        { graceMs, clientsCut: left.size, requestsInFlight },
        'drain grace period ended: cutting the clients still connected',
      );
    }
    await this.close();
  }

  async close(): Promise<void> {
    this.draining = true;
    this.watcher?.stop();
    this.secretsWatcher?.stop();
    await this.listener.stopAccepting();
    for (const s of [...this.listener.sessions]) s.destroy();
    this.cluster?.close();
    this.sentinel?.close();
    this.replicaChecks.close();
    this.hotReads.close();
    this.pubsub.close();
    this.sessions.close();
    this.nearCache?.close();
    for (const m of this.migrations) m.close();
    this.topology.close();
    this.observer.close();
    if (this.admin !== null) await this.admin.close();
  }

  /** Asks the first shard that answers for COMMAND and INFO server; falls back to the built-in table. */
  private async learnFromShards(): Promise<void> {
    const config = this.topology.config;
    // Runtime shards: a sentinel shard's current primary (its config has no address).
    const candidates = config.cluster !== null ? config.cluster.seeds : this.topology.shards.map((s) => s.config);
    for (const shard of candidates) {
      try {
        const [commands, info] = await controlCommands(
          {
            host: shard.host,
            port: shard.port,
            password: config.backend.password,
            username: config.backend.username,
            timeoutMs: config.backend.connectTimeoutMs,
            tls: config.backend.tls,
          },
          [['COMMAND'], ['INFO', 'server']],
        );
        if (typeof info === 'string') this.backendVersion = /redis_version:([^\r\n]+)/.exec(info)?.[1] ?? 'unknown';
        if (!Array.isArray(commands)) continue;
        const rows = specsFromCommandReply(commands);
        const table = CommandTable.fromRows(rows, tableOptions(config));
        this.commandRows = rows;
        this.topology = new Topology(config, table, this.versionCounter, this.topology);
        this.nearCache?.onTopology(this.topology);
        this.commandTableSource = 'live';
        return;
      } catch (err) {
        this.log.debug(
          { shard: `${shard.host}:${shard.port}`, err: (err as Error).message },
          'could not read COMMAND from shard',
        );
      }
    }
    this.log.warn('no shard answered COMMAND at start-up: using the built-in command table');
  }
}

/** Ended migrations a process keeps (see pruneMigrations). */
const KEEP_ENDED_MIGRATIONS = 8;
/** Longest a leader holds its key moves for a follower's command to every shard (at least 2 x backend.timeout_ms). */
const WORKER_PAUSE_MAX_MS = 30_000;

/**
 * A follower's hold on the leader's key moves (workers > 1), asked through the primary. whenQuiet's callback runs
 * once the leader holds its moves with none running, or once it is known it cannot (no leader serving: nothing
 * moves keys then, or the ask failed); release() is passed on as soon as the hold exists.
 */
class RemotePause implements MigrationHold {
  private quiet = false;
  private released = false;
  private onQuiet: (() => void) | null = null;
  private releaseRemote: (() => void) | null = null;

  constructor(link: MigrationLink) {
    link.remotePause((release) => {
      this.releaseRemote = release;
      if (this.released) release();
      this.quiet = true;
      const cb = this.onQuiet;
      this.onQuiet = null;
      cb?.();
    });
  }

  whenQuiet(cb: () => void): void {
    if (this.quiet) cb();
    else this.onQuiet = cb;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.releaseRemote?.();
  }
}
/** Runs a start-up step whose failure is the operator's to fix (a path in the way): a ConfigError naming it. */
async function startStep(source: string, step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (err) {
    throw new ConfigError([`${source}: ${(err as Error).message}`]);
  }
}

/** A blocked client keymux could not unblock on its shard during drain. */
const ERR_DRAIN_BLOCKED = errorReply('ERR keymux: shutting down (drain): the blocking command was cancelled; retry');

/** backend.session_connections. */
function sessionSettings(config: KeymuxConfig): SessionSettings {
  return config.backend.sessionConnections;
}

/** Pools of `next` that `previous` did not have (a shard added, or one whose connection settings changed). */
function newPools(previous: Topology, next: Topology): ShardPool[] {
  const old = new Set(previous.allPools());
  return next.shards.map((s) => s.pool).filter((p) => !old.has(p));
}

/** The migration settings (config section `migration`). */
/**
 * Why a reload to `next` must be refused for the key migration's sake, or null. Turning migration off while one
 * runs would route by the new placement at once while keys not yet moved sit on their old owners (and the scan would
 * go on moving old values over new writes); a state file that cannot be written would leave a migration unrecorded
 * half-way. The running config stays; the operator waits for the migration to end (keymux_migrations_active 0) or
 * fixes the path.
 */
function migrationRefusal(previous: Topology, next: KeymuxConfig): string | null {
  const running = previous.migration;
  if (running !== null && running.active && (!next.migration.enabled || next.mode === 'cluster')) {
    return (
      `migration ${running.id} is moving keys: a config without migration would leave the keys it has not moved ` +
      'where clients no longer look; reload again once it is done (keymux_migrations_active 0)'
    );
  }
  if (running !== null && running.active && next.migration.stateFile !== previous.config.migration.stateFile) {
    // The record of where keys still are would be split: the old file kept (and found by nobody after a restart on
    // the new config), the new one without the running migration's placements.
    return (
      `migration ${running.id} is moving keys: migration.state_file cannot change until it is done ` +
      '(keymux_migrations_active 0)'
    );
  }
  return next.migration.enabled ? stateFileProblem(next.migration.stateFile) : null;
}

function migrationSettings(config: KeymuxConfig): { enabled: boolean; stateFile: string | null } {
  return config.migration;
}
