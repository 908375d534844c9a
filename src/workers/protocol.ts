/**
 * The messages between the primary process and its workers (workers > 1, README "Workers"), over node:cluster's
 * IPC channel with the 'advanced' serialization (structured clone: a validated config crosses as it is, Buffers
 * and all). Control plane only: nothing here is on the data path, which each worker runs alone.
 *
 * The primary sends requests ({ type: 'keymux:request', id, op, ... }) and each worker answers every one with a
 * reply carrying the same id ({ type: 'keymux:reply', id, ok, value | error }). Besides, a worker tells the
 * primary when it listens for requests (`keymux:online`) and why it could not start (`keymux:start-failed`).
 *
 * Key migrations (README "Workers"): the primary numbers each one and drives it (reload with `migrationId`, then
 * `migration-go` once every worker fenced, `migration-done` once the leader's scan is over). A follower asks for
 * keys to be moved with `keymux:move` (its own reference `ref`); the primary has the leader move them (`move`)
 * and answers the follower with `keymux:moved`. The leader says its scan is over with `keymux:migration-scanned`.
 *
 * Failed AUTHs (README "Password guessing"): a worker reports each one with `keymux:auth-failure`; the primary
 * counts it for the whole process and sends every serving worker (and the reporter) the address's new count in
 * `keymux:auth-failures`, and a worker that starts serving every address it remembers. Fire and forget: no AUTH
 * waits for an answer.
 *
 * Files: the primary alone watches the certificate, key, token and password files (the workers start with
 * `watchSecrets: false`) and asks every worker to read them again (`reread-secrets`) when one changed, so the
 * process counts one re-read per change, as a single keymux does, and only once every worker has it.
 *
 * Liveness (README "Workers": hung workers): the primary sends every serving worker `keymux:heartbeat` every second
 * and the worker answers `keymux:heartbeat-answer` straight from its message handler, so an answer proves that its
 * event loop turns. Any message from a worker counts as a sign of life; one silent for
 * `workers_heartbeat_timeout_ms` is declared hung and replaced.
 */
import type { KeymuxConfig } from '../config/schema.js';
import type { MigrationProgress } from '../migration/migration.js';
import type { ClientListing, KillFilter } from '../commands/client-list.js';

/** A coordinated migration a worker joins at its start: its number and the placements keys move away from. */
export interface JoinMigration {
  id: number;
  /** Oldest first (more than one only when resuming a state file written during chained migrations). */
  chain: Array<Partial<KeymuxConfig>>;
}

/** What the primary asks of a worker. */
/** A worker's client ids: first, first + 1, ... */
export interface ClientIdRange {
  first: number;
}

export type WorkerRequest =
  /** Start serving `config` (sent once, right after the worker came online). */
  | {
      op: 'start';
      config: KeymuxConfig;
      leader: boolean;
      migration: JoinMigration | null;
      /** The client ids this worker gives (Listener.useClientIds): unique across workers and their restarts. */
      clientIds: ClientIdRange;
    }
  /**
   * Apply `config` through the in-process reload path; the reply's value is null or why it was refused. With
   * `migrationId` the reload moves keys: the reply waits for this worker's fence, and nothing moves before
   * `migration-go`. With `abortMigration` it is the rollback of one that never got its go.
   */
  | { op: 'reload'; config: KeymuxConfig; migrationId?: number; abortMigration?: number }
  /**
   * The certificate, key, token or password files the running config names changed (the primary watches them for
   * every worker): read them again as a single keymux does on such a change; the value is null once applied, else
   * the lines saying why not.
   */
  | { op: 'reread-secrets' }
  /** Every worker has fenced: keys may move. */
  | { op: 'migration-go'; migration: number }
  /** The leader's scan is over: every key is on its new owner. */
  | { op: 'migration-done'; migration: number }
  /** Leader: move these keys (a follower's clients touch them); the value is true once they are on their new owners. */
  | { op: 'move'; migration: number; keys: Uint8Array[] }
  /**
   * Leader: hold key moves for a follower's command to every shard (Proxy.pauseForWorker); the value (the pause's
   * number) comes once no MIGRATE runs. `unpause` ends it (the leader also ends it by itself after a bound).
   */
  | { op: 'pause'; pause: number }
  | { op: 'unpause'; pause: number }
  /** Stop accepting, finish in-flight requests within graceMs, exit 0. */
  | { op: 'drain'; graceMs: number }
  /** { ok, reason } as /readyz answers for one process. */
  | { op: 'ready' }
  /** The worker's metrics as prom-client JSON (Registry.getMetricsAsJSON). */
  | { op: 'metrics' }
  /** The /shards, /hotkeys and /slowlog reports of this worker. */
  | { op: 'shards' }
  | { op: 'hotkeys'; authorized: boolean }
  | { op: 'slowlog'; authorized: boolean }
  | { op: 'slowlog-reset' }
  /** CLIENT LIST through any worker: this worker's clients' listings. */
  | { op: 'client-listings' }
  /** CLIENT KILL through any worker: kill this worker's clients `filter` matches, never `callerId`; the count. */
  | { op: 'client-kill'; filter: KillFilter; callerId: number };

export type WorkerOp = WorkerRequest['op'];

/** `id` numbers the request (so no request may have a field of that name). */
export type RequestMessage = WorkerRequest & { type: 'keymux:request'; id: number };

export interface ReplyMessage {
  type: 'keymux:reply';
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

export type WorkerEvent =
  /** The worker listens for requests (sent first: a message sent before that would be lost). */
  | { type: 'keymux:online' }
  | { type: 'keymux:start-failed'; errors: readonly string[] }
  /** A follower needs these keys moved before its clients may use them. */
  | { type: 'keymux:move'; ref: number; migration: number; keys: Uint8Array[] }
  /** The leader's scan of migration `id` found and moved every key (`progress`: its figures, for keymux plan). */
  | { type: 'keymux:migration-scanned'; migration: number; progress: MigrationProgress }
  /** A follower's command to every shard needs the leader's key moves held (answered by keymux:paused). */
  | { type: 'keymux:pause'; ref: number }
  /** That command has its replies: the hold ends. */
  | { type: 'keymux:unpause'; pause: number }
  /** A client from `host` (its address without the port) failed an AUTH or HELLO ... AUTH on this worker. */
  | { type: 'keymux:auth-failure'; host: string }
  /** The answer to the primary's heartbeat `seq` (given by the worker's event loop as the message arrived). */
  | { type: 'keymux:heartbeat-answer'; seq: number }
  /**
   * A client of this worker ran CLIENT LIST (`kill` null) or CLIENT KILL: the primary asks every worker and
   * answers with keymux:clients-answer.
   */
  | { type: 'keymux:clients'; ref: number; kill: { filter: KillFilter; callerId: number } | null };

/** The primary's answer to keymux:clients: every worker's listings (CLIENT LIST), or how many were killed. */
export interface ClientsAnswerMessage {
  type: 'keymux:clients-answer';
  ref: number;
  listings: ClientListing[] | null;
  killed: number;
}

export function isClientsAnswer(msg: unknown): msg is ClientsAnswerMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:clients-answer';
}

/** The primary's answer to a follower's keymux:move. */
export interface MovedMessage {
  type: 'keymux:moved';
  ref: number;
  /** Moved (true), not (false), or taken over on worker 1 by a chained migration (migration.ts MoveResult). */
  result: boolean | 'superseded';
}

export function isMoved(msg: unknown): msg is MovedMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:moved';
}

/** The primary's answer to a follower's keymux:pause: the leader holds its moves (`pause`), or none could (null). */
export interface PausedMessage {
  type: 'keymux:paused';
  ref: number;
  pause: number | null;
}

export function isPaused(msg: unknown): msg is PausedMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:paused';
}

/** The primary's count of failed AUTHs per client address, for the whole process (every worker's failures). */
export interface AuthFailuresMessage {
  type: 'keymux:auth-failures';
  /** [address, failures, ms since its last failure]: one row after a reported failure, or all, for a new worker. */
  rows: Array<[string, number, number]>;
  /** The receiving worker reported the failure this (one-row) update counts. */
  own: boolean;
}

export function isAuthFailures(msg: unknown): msg is AuthFailuresMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:auth-failures';
}

/** The primary's "are you there?" to a worker (answered by keymux:heartbeat-answer with the same seq). */
export interface HeartbeatMessage {
  type: 'keymux:heartbeat';
  seq: number;
}

export function isHeartbeat(msg: unknown): msg is HeartbeatMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:heartbeat';
}

/** A Buffer over bytes that crossed the IPC channel (structured clone turns Buffers into Uint8Arrays). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function isRequest(msg: unknown): msg is RequestMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:request';
}

export function isReply(msg: unknown): msg is ReplyMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:reply';
}

export function isWorkerEvent(msg: unknown): msg is WorkerEvent {
  const type = typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
  return (
    type === 'keymux:online' ||
    type === 'keymux:start-failed' ||
    type === 'keymux:move' ||
    type === 'keymux:migration-scanned' ||
    type === 'keymux:pause' ||
    type === 'keymux:unpause' ||
    type === 'keymux:auth-failure' ||
    type === 'keymux:heartbeat-answer' ||
    type === 'keymux:clients'
  );
}

/** `workers` of a config as a number of processes ("auto": one per CPU the process may use). */
export function workerCount(workers: KeymuxConfig['workers'], cpus: () => number): number {
  return workers === 'auto' ? Math.max(1, cpus()) : workers;
}
