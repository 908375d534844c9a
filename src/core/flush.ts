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
