/**
 * Write batching shared by every socket keymux writes to. A connection or session with bytes to send calls
 * `scheduleFlush(this)`; once per event-loop turn (setImmediate, after all I/O callbacks of the turn ran) every
 * scheduled target flushes at once. Commands from many clients read in the same turn leave in one write per
 * backend, and replies completed in the same turn leave in one write per client.
 */
import type { Writable } from 'node:stream';

export interface Flushable {
  /** True while the target is in the pending list (set and cleared only here). */
  flushScheduled: boolean;
  flush(): void;
}

let pending: Flushable[] = [];
let spare: Flushable[] = [];
let scheduled = false;

function runFlush(): void {
  scheduled = false;
  const batch = pending;
  pending = spare;
  spare = batch;
  for (let i = 0; i < batch.length; i++) {
    const target = batch[i];
    target.flushScheduled = false;
    target.flush();
  }
  batch.length = 0;
}

export function scheduleFlush(target: Flushable): void {
  if (target.flushScheduled) return;
  target.flushScheduled = true;
  pending.push(target);
  if (!scheduled) {
    scheduled = true;
    setImmediate(runFlush);
  }
}

/** Above this many queued bytes, buffers are written one by one (corked) instead of concatenated. */
export const CONCAT_LIMIT = 64 * 1024;

/**
 * Writes a turn's worth of buffers to a socket in as few writes as is cheap: one buffer as is, small batches
 * concatenated (one copy, one syscall), large batches corked so big payloads are not copied. Returns what the
 * last write returned: false means the socket's buffer is full and the caller should wait for 'drain'.
 */
export function writeBatch(sock: Writable, out: Buffer[], bytes: number, count = out.length): boolean {
  if (count === 1) return sock.write(out[0]);
  if (bytes <= CONCAT_LIMIT) return sock.write(concatFirst(out, count, bytes));
  sock.cork();
  for (let i = 0; i < count - 1; i++) sock.write(out[i]);
  const ok = sock.write(out[count - 1]);
  sock.uncork();
  return ok;
}

/** out[0 .. count) (`bytes` in all) copied into one new buffer. */
export function concatFirst(out: Buffer[], count: number, bytes: number): Buffer {
  if (count === out.length) return Buffer.concat(out, bytes);
  const all = Buffer.allocUnsafe(bytes);
  let p = 0;
  for (let i = 0; i < count; i++) {
    all.set(out[i], p);
    p += out[i].length;
  }
  return all;
}

/** An empty buffer for cleared slots of kept output arrays. */
export const NO_BYTES: Buffer = Buffer.alloc(0);
