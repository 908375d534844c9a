/**
 * Write batching shared by every socket keymux writes to. A connection or session with bytes to send calls
 * `scheduleFlush(this)`; once per event-loop turn (setImmediate, after all I/O callbacks of the turn ran) every
 * scheduled target flushes at once. Commands from many clients read in the same turn leave in one write per
 * backend, and replies completed in the same turn leave in one write per client.
 */

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
const CONCAT_LIMIT = 64 * 1024;

/**
 * What a batch is written to: a socket (net.Socket and every Writable fit), or a client's direct writer
 * (server/client-writes.ts), which has no cork because libuv keeps its queued writes in order and writes them
 * together anyway.
 */
export interface BatchTarget {
  write(chunk: Buffer): boolean;
  cork?(): void;
  uncork?(): void;
}

/**
 * Writes a turn's worth of buffers, out[0 .. count) (`bytes` in all), in as few writes as is cheap: one buffer as is,
 * small batches concatenated (one copy, one syscall), large batches one by one (corked where the target corks) so
 * big payloads are not copied. Returns what the last write returned: false means the target holds bytes the kernel
 * has not taken, and the caller should wait for them to drain.
 */
export function writeBatch(target: BatchTarget, out: Buffer[], bytes: number, count = out.length): boolean {
  if (count === 1) return target.write(out[0]);
  if (bytes <= CONCAT_LIMIT) return target.write(concatFirst(out, count, bytes));
  target.cork?.();
  let ok = true;
  for (let i = 0; i < count; i++) ok = target.write(out[i]);
  target.uncork?.();
  return ok;
}

/** out[0 .. count) (`bytes` in all) copied into one new buffer. */
function concatFirst(out: Buffer[], count: number, bytes: number): Buffer {
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
