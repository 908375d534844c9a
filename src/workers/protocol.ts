/**
 * The messages between the primary process and its workers (workers > 1, README "Workers"), over node:cluster's
 * IPC channel with the 'advanced' serialization (structured clone: a validated config crosses as it is, Buffers
 * and all). Control plane only: nothing here is on the data path, which each worker runs alone.
 *
 * The primary sends requests ({ type: 'keymux:request', id, op, ... }) and each worker answers every one with a
 * reply carrying the same id ({ type: 'keymux:reply', id, ok, value | error }). Besides, a worker tells the
 * primary when it listens for requests (`keymux:online`) and why it could not start (`keymux:start-failed`).
 */
import type { KeymuxConfig } from '../config/schema.js';

/** What the primary asks of a worker. */
export type WorkerRequest =
  /** Start serving `config` (sent once, right after the worker came online). */
  | { op: 'start'; config: KeymuxConfig; watchSecrets: boolean }
  /** Apply `config` through the in-process reload path; the reply's value is null or why it was refused. */
  | { op: 'reload'; config: KeymuxConfig }
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
  | { op: 'slowlog-reset' };

export type WorkerOp = WorkerRequest['op'];

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
  { type: 'keymux:online' } | { type: 'keymux:start-failed'; errors: readonly string[] };

export function isRequest(msg: unknown): msg is RequestMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:request';
}

export function isReply(msg: unknown): msg is ReplyMessage {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === 'keymux:reply';
}

export function isWorkerEvent(msg: unknown): msg is WorkerEvent {
  const type = typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
  return type === 'keymux:online' || type === 'keymux:start-failed';
}

/** `workers` of a config as a number of processes ("auto": one per CPU the process may use). */
export function workerCount(workers: KeymuxConfig['workers'], cpus: () => number): number {
  return workers === 'auto' ? Math.max(1, cpus()) : workers;
}
