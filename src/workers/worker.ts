/**
 * A worker process (workers > 1, README "Workers"): one whole data plane — its own listener on the shared client
 * port (node:cluster hands it connections), its own backend connections, pools, near cache, pub/sub hub and
 * hot-key tracker — and no control plane: it reads no config file, watches none (nor the certificate, key, token
 * and password files: the primary does, and tells it to read them again), handles no SIGHUP and serves no admin
 * endpoint. It starts on the config the primary sends, applies the configs the primary sends (the same
 * in-process reload path as a single keymux: Proxy.reloadAsync), answers the primary's questions for the admin
 * endpoint (readiness, metrics, shards, hot keys, slow log), and drains when told to (or on its own SIGTERM, or
 * when the primary is gone), and answers the primary's heartbeats from its event loop (a worker that stops
 * answering is replaced). In key migrations it follows the primary (migration/migration.ts "Coordination"):
 * worker 1 leads (scans and moves), the others ask it, through the primary, to move the keys their clients touch.
 * Its clients' failed AUTHs are reported to the primary, which counts them for the whole process and sends every
 * worker the counts (security/auth-guard.ts).
 */
import { ConfigError } from '../config/load.js';
import { Proxy, type ClientsLink } from '../proxy.js';
import type { MigrationProgress, MoveResult } from '../migration/migration.js';
import { Metrics } from '../metrics/metrics.js';
import { hotKeysReport, shardsReport, slowlogReport } from '../metrics/endpoints.js';
import { childLogger, rootLogger, setLogLevel, setRootLogger } from '../log.js';
import {
  asBuffer,
  isAuthFailures,
  isHeartbeat,
  isClientsAnswer,
  isMoved,
  isPaused,
  type ClientsAnswerMessage,
  isRequest,
  type RequestMessage,
  type WorkerEvent,
  type WorkerRequest,
  type ReplyMessage,
} from './protocol.js';
import type { KillFilter } from '../commands/client-list.js';

/** How long CLIENT LIST / KILL wait for the primary's gathering of every worker's answer (it waits 1.5 s each). */
const CLIENTS_ASK_TIMEOUT_MS = 5_000;

export function runWorker(): void {
  // Every log line of this process says which worker wrote it (the slot the primary forked it for, and its PID).
  setRootLogger(rootLogger().child({ worker: Number(process.env.KEYMUX_WORKER ?? 0), pid: process.pid }));
  // The primary narrowed its umask for the Unix socket's bind (primary.ts); this process has the operator's.
  if (process.env.KEYMUX_UMASK !== undefined) process.umask(Number(process.env.KEYMUX_UMASK));
  const log = childLogger('worker');
  const send = (msg: ReplyMessage | WorkerEvent): void => {
    if (process.connected) process.send!(msg);
  };
  let proxy: Proxy | null = null;
  let metrics: Metrics | null = null;
  let draining: Promise<void> | null = null;
  // A follower's key-move requests waiting for the primary's answer, by reference.
  const moves = new Map<number, (result: MoveResult) => void>();
  let nextMoveRef = 1;
  // A follower's asks to hold the leader's key moves (a command to every shard), waiting for the primary's answer.
  const pauses = new Map<number, (release: () => void) => void>();
  let nextPauseRef = 1;
  const noRelease = (): void => undefined;
  // CLIENT LIST / KILL asked of every worker through the primary, waiting for its answer, by reference.
  const clientAsks = new Map<number, { answer: (msg: ClientsAnswerMessage) => void; failed: (why: string) => void }>();
  let nextClientsRef = 1;
  const askClients = (
    kill: { filter: KillFilter; callerId: number } | null,
    answer: (msg: ClientsAnswerMessage) => void,
    failed: (why: string) => void,
  ): void => {
    if (!process.connected) {
      failed('the primary process is gone');
      return;
    }
    const ref = nextClientsRef++;
    // The primary waits at most 1.5 s for each worker; a primary that does not answer at all (stopped, busy) is
    // given up on rather than waited for by the client.
    const timer = setTimeout(() => {
      clientAsks.delete(ref);
      failed(`the primary process did not answer in ${CLIENTS_ASK_TIMEOUT_MS} ms`);
    }, CLIENTS_ASK_TIMEOUT_MS);
    clientAsks.set(ref, {
      answer: (msg) => {
        clearTimeout(timer);
        answer(msg);
      },
      failed: (why) => {
        clearTimeout(timer);
        failed(why);
      },
    });
    send({ type: 'keymux:clients', ref, kill });
  };
  const clientsLink: ClientsLink = {
    list: (done, failed) => askClients(null, (msg) => done(msg.listings ?? []), failed),
    kill: (filter, callerId, done, failed) => askClients({ filter, callerId }, (msg) => done(msg.killed), failed),
  };
  const migrationLink = (leader: boolean) => ({
    leader,
    remoteMove(id: number, keys: Buffer[], done: (result: MoveResult) => void): void {
      if (!process.connected) {
        done(false);
        return;
      }
      const ref = nextMoveRef++;
      moves.set(ref, done);
      send({ type: 'keymux:move', ref, migration: id, keys });
    },
    remotePause(quiet: (release: () => void) => void): void {
      if (!process.connected) {
        quiet(noRelease);
        return;
      }
      const ref = nextPauseRef++;
      pauses.set(ref, quiet);
      send({ type: 'keymux:pause', ref });
    },
    onScanned(id: number, progress: MigrationProgress): void {
      send({ type: 'keymux:migration-scanned', migration: id, progress });
    },
  });

  const drain = (graceMs: number, why: string): Promise<void> => {
    if (draining !== null) return draining;
    log.info({ why, graceMs }, 'worker draining');
    const current = proxy;
    draining = (current === null ? Promise.resolve() : current.drain(graceMs)).then(() => {
      log.info('worker stopped');
      process.exit(0);
    });
    return draining;
  };

  const answer = async (req: RequestMessage): Promise<unknown> => {
    if (req.op === 'start') {
      setLogLevel(req.config.log.level);
      proxy = await Proxy.start(req.config, {
        admin: false,
        watchSecrets: false, // the primary watches them, and has every worker read them again (reread-secrets)
        migrationLink: migrationLink(req.leader),
        clientsLink,
        joinMigration: req.migration,
        clientIds: req.clientIds,
        unixPathChecked: true, // the primary did, and binds the socket for every worker
      });
      metrics = new Metrics(proxy);
      // Failed AUTHs count for the whole process: reported to the primary, whose counts come back (onShared).
      // Without a primary to report to, this worker counts alone (README "Password guessing").
      proxy.authGuard.shareWith((host) => {
        if (!process.connected) return false;
        send({ type: 'keymux:auth-failure', host });
        return true;
      });
      return proxy.port;
    }
    if (proxy === null || metrics === null) throw new Error('the worker has not started');
    switch (req.op) {
      case 'reload':
        return applyReload(proxy, req);
      case 'reread-secrets':
        return proxy.rereadSecrets('file change (primary)').then((errors) => errors?.join('; ') ?? null);
      case 'migration-go':
        proxy.releaseMigration(req.migration);
        return null;
      case 'migration-done':
        proxy.endMigration(req.migration);
        return null;
      case 'move':
        return proxy.moveForWorker(req.migration, req.keys.map(asBuffer));
      case 'pause':
        return proxy.pauseForWorker(req.pause);
      case 'unpause':
        proxy.unpauseForWorker(req.pause);
        return null;
      case 'drain':
        void drain(req.graceMs, 'primary');
        return null;
      case 'ready':
        return proxy.readiness();
      case 'metrics':
        return metrics.registry.getMetricsAsJSON();
      case 'shards':
        return shardsReport(proxy);
      case 'hotkeys':
        return hotKeysReport(proxy, { authorized: req.authorized });
      case 'slowlog':
        return slowlogReport(proxy, Infinity, { authorized: req.authorized });
      case 'slowlog-reset':
        proxy.observer.slowlog.reset();
        return null;
      case 'client-listings':
        return proxy.localClientListings();
      case 'client-kill':
        return proxy.killLocalClients(req.filter, req.callerId);
    }
  };

  process.on('message', (msg: unknown) => {
    // Answered here, at once: the answer's only meaning is that this event loop turns (README "Workers").
    if (isHeartbeat(msg)) {
      send({ type: 'keymux:heartbeat-answer', seq: msg.seq });
      return;
    }
    if (isAuthFailures(msg)) {
      const guard = proxy?.authGuard;
      if (guard !== undefined)
        for (const [host, count, quietMs] of msg.rows) guard.onShared(host, count, quietMs, msg.own);
      return;
    }
    if (isPaused(msg)) {
      const quiet = pauses.get(msg.ref);
      pauses.delete(msg.ref);
      const pause = msg.pause;
      quiet?.(pause === null ? noRelease : () => send({ type: 'keymux:unpause', pause }));
      return;
    }
    if (isClientsAnswer(msg)) {
      const ask = clientAsks.get(msg.ref);
      clientAsks.delete(msg.ref);
      ask?.answer(msg);
      return;
    }
    if (isMoved(msg)) {
      const done = moves.get(msg.ref);
      moves.delete(msg.ref);
      done?.(msg.result);
      return;
    }
    if (!isRequest(msg)) return;
    answer(msg).then(
      (value) => {
        send({ type: 'keymux:reply', id: msg.id, ok: true, value });
      },
      (err: unknown) => {
        if (msg.op === 'start') {
          const errors = err instanceof ConfigError ? err.errors : [(err as Error).message];
          send({ type: 'keymux:start-failed', errors });
        }
        send({ type: 'keymux:reply', id: msg.id, ok: false, error: (err as Error)?.message ?? String(err) });
      },
    );
  });
  // The primary forwards SIGTERM as a drain request; a signal sent to the whole process group (a terminal's ^C,
  // systemd's control-group kill) reaches the worker too and drains it the same way. SIGHUP is the primary's.
  process.on('SIGTERM', () => void drain(graceOf(proxy), 'SIGTERM'));
  process.on('SIGINT', () => void drain(graceOf(proxy), 'SIGINT'));
  process.on('SIGHUP', () => undefined);
  // The primary is gone (killed): nobody can reload or restart this worker any more; drain and exit.
  process.on('disconnect', () => {
    // Nobody will answer the key moves asked for: their requests get an error instead of waiting.
    for (const done of moves.values()) done(false);
    for (const quiet of pauses.values()) quiet(noRelease);
    moves.clear();
    // CLIENT LIST / KILL waiting for every worker's answer get an error: nobody will answer them.
    for (const ask of clientAsks.values()) ask.failed('the primary process is gone');
    clientAsks.clear();
    void drain(graceOf(proxy), 'primary gone');
  });
  send({ type: 'keymux:online' });
}

/**
 * A reload the primary sent: null once applied, else why not. A reload that throws (a bug: configs are refused,
 * not thrown at) is answered as a refusal with its message, never as an error: the primary replaces a worker only
 * when it does not answer, and this one still serves the running config (Proxy.applyConfig changes nothing
 * before the new snapshot is built).
 */
export async function applyReload(
  proxy: Pick<Proxy, 'reloadAsync' | 'migrationFenced'>,
  req: Extract<WorkerRequest, { op: 'reload' }>,
): Promise<string | null> {
  let refusal: string | null;
  try {
    refusal = await proxy.reloadAsync(req.config, { migrationId: req.migrationId, abortMigration: req.abortMigration });
  } catch (err) {
    childLogger('worker').error({ err }, 'config reload failed');
    return `reload failed: ${(err as Error)?.message ?? String(err)}`;
  }
  // A reload that moves keys is acknowledged once this worker's earlier requests to the old owners are done.
  if (refusal === null && req.migrationId !== undefined) await proxy.migrationFenced(req.migrationId);
  return refusal;
}

function graceOf(proxy: Proxy | null): number {
  return proxy === null ? 0 : proxy.topology.config.drain.graceS * 1000;
}
