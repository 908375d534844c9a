/**
 * OrderFences: one client's ordering guard in cluster mode. Redis promises a connection that its commands take
 * effect, and are answered, as if executed in the order sent; keymux pipelines a client's commands to the nodes,
 * so when a node answers one of them "not now" (TRYAGAIN, CLUSTERDOWN, LOADING, a node down, no master for the
 * slot) or "not here" (MOVED, ASK), the client's later commands for that slot must not overtake it.
 *
 * A fence exists per slot while something of this client for that slot waits to be (re-)sent or must not be
 * overtaken. While it exists:
 * - the client's new units for the slot do not go out: they join the fence's queue, in client order;
 * - units that come back for a re-send (retry or redirection) join it too, at their place in client order;
 * - units of the slot that are at a backend are counted (`tracked`): the queue leaves, in client order, as one
 *   "wave" only when none is at a backend any more and the backoff of the last retry has passed; a wave ends after
 *   a multi-key unit (see below), so at most one unit that a node can answer -TRYAGAIN is ever in flight.
 * - If a unit of the slot was executed by a node while an earlier one of the same client waited for its retry, the
 *   earlier one can no longer take effect in order: it gets an error (it was not applied), never a reordered result.
 *   A unit redirected with MOVED or ASK is exempt: the node that redirected it does not hold its keys, so nothing
 *   that ran there since can have touched them.
 *
 * Multi-key units (two or more keys of one slot) are the only commands a node answers -TRYAGAIN (their keys are
 * split between the migrating and the importing node); a TRYAGAIN retry is exact only if nothing later of the same
 * client for that slot ran meanwhile. So a multi-key unit fences its slot from the moment it is sent until it is
 * answered: later units of the client for that slot wait for it (one round trip, in cluster mode only, only for
 * pipelines that mix multi-key commands with other commands of the same slot).
 *
 * Without retries, redirections or multi-key units nothing here runs: the session checks one field per unit.
 * Fences are rare and short-lived, so they use plain arrays and one timer each.
 */
import { performance } from 'node:perf_hooks';
import {
  UNIT_AT_BACKEND,
  UNIT_NEW,
  UNIT_REDIRECTED,
  UNIT_RETRYING,
  type Request,
  type Resender,
  type RoutedUnit,
} from '../core/request.js';
import type { RingQueue } from '../core/ring-queue.js';
import { ERR_RETRY_OUT_OF_ORDER } from '../errors.js';

class SlotFence {
  readonly group: number;
  /** Units waiting to be sent, in client order (seq). */
  readonly queue: RoutedUnit[];
  /** Units of this slot at a backend that the next wave must wait for. */
  tracked: number;
  /** Highest seq of a unit of this slot a node executed while the fence stood. */
  executedMax: number;
  /** performance.now() before which the next wave may not leave (the backoff of the last retry). */
  notBefore: number;
  timer: NodeJS.Timeout | null;

  constructor(group: number) {
    this.group = group;
    this.queue = [];
    this.tracked = 0;
    this.executedMax = -1;
    this.notBefore = 0;
    this.timer = null;
  }
}

export class OrderFences {
  private readonly bySlot: Map<number, SlotFence>;
  /** The session's in-flight requests, oldest first (every request after the oldest unanswered one). */
  private readonly inflight: RingQueue<Request>;
  private readonly resender: Resender;
  /** The fence whose wave is being sent (re-entrant calls leave it to the loop). */
  private releasing: SlotFence | null;

  constructor(inflight: RingQueue<Request>, resender: Resender) {
    this.bySlot = new Map();
    this.inflight = inflight;
    this.resender = resender;
    this.releasing = null;
  }

  /** Slots currently fenced (for tests and metrics). */
  get size(): number {
    return this.bySlot.size;
  }

  /**
   * A new unit about to be sent for its slot. True when it must wait (it joined the fence's queue and leaves with a
   * later wave); false when the caller sends it now (a multi-key unit then fences its slot until answered).
   */
  admit(unit: RoutedUnit): boolean {
    const fence = this.bySlot.get(unit.group);
    if (fence !== undefined) {
      fence.queue.push(unit); // a new unit comes after everything of its client already seen
      return true;
    }
    if (unit.multiKey) {
      const opened = new SlotFence(unit.group);
      this.bySlot.set(unit.group, opened);
      unit.fenced = true;
      opened.tracked = 1;
    }
    return false;
  }

  /** `unit` must be sent again after `delayMs` (it was not executed). */
  retry(unit: RoutedUnit, delayMs: number): void {
    const fence = this.bySlot.get(unit.group) ?? this.open(unit);
    this.takeBack(fence, unit, UNIT_RETRYING);
    const due = performance.now() + delayMs;
    if (due > fence.notBefore) fence.notBefore = due;
    this.release(fence);
  }

  /** A redirected unit: held (true) when its slot is fenced, so it is re-sent in order; false to re-send it now. */
  hold(unit: RoutedUnit): boolean {
    const fence = this.bySlot.get(unit.group);
    if (fence === undefined) return false;
    this.takeBack(fence, unit, UNIT_REDIRECTED);
    this.release(fence);
    return true;
  }

  /** A unit counted by a fence was answered by a node (or given an error while at one). */
  done(unit: RoutedUnit): void {
    unit.fenced = false;
    const fence = this.bySlot.get(unit.group);
    if (fence === undefined) return;
    fence.tracked--;
    if (unit.seq > fence.executedMax) fence.executedMax = unit.seq;
    this.release(fence);
  }

  /** Opens a fence for a unit about to be retried: its slot's other units at a backend are counted. */
  private open(unit: RoutedUnit): SlotFence {
    const fence = new SlotFence(unit.group);
    this.bySlot.set(unit.group, fence);
    const q = this.inflight;
    for (let i = 0; i < q.length; i++) {
      const req = q.at(i) as Request;
      if (req.done) continue;
      const fragments = req.fragments;
      if (fragments === null) {
        if (req !== unit) this.track(fence, req);
      } else {
        for (let j = 0; j < fragments.length; j++) if (fragments[j] !== unit) this.track(fence, fragments[j]);
      }
    }
    return fence;
  }

  private track(fence: SlotFence, unit: RoutedUnit): void {
    if (unit.group !== fence.group || unit.fenced || unit.state !== UNIT_AT_BACKEND || unit.answered) return;
    unit.fenced = true;
    fence.tracked++;
  }

  /** Puts a unit that came back from a node into the queue at its place in client order. */
  private takeBack(fence: SlotFence, unit: RoutedUnit, state: number): void {
    if (unit.fenced) {
      unit.fenced = false;
      fence.tracked--;
    }
    unit.state = state;
    const queue = fence.queue;
    let i = queue.length;
    while (i > 0 && queue[i - 1].seq > unit.seq) i--;
    queue.splice(i, 0, unit);
  }

  /** Sends the next wave when nothing of the slot is at a backend and the backoff has passed; closes empty fences. */
  private release(fence: SlotFence): void {
    if (this.releasing === fence) return; // the wave loop below sees the change
    for (;;) {
      if (fence.tracked > 0) return;
      if (fence.queue.length === 0) {
        if (fence.timer !== null) clearTimeout(fence.timer);
        if (this.bySlot.get(fence.group) === fence) this.bySlot.delete(fence.group);
        return;
      }
      const wait = fence.notBefore - performance.now();
      if (wait > 0) {
        if (fence.timer === null) {
          fence.timer = setTimeout(() => {
            fence.timer = null;
            this.release(fence);
          }, Math.ceil(wait));
        }
        return;
      }
      this.releasing = fence;
      try {
        this.sendWave(fence);
      } finally {
        this.releasing = null;
      }
    }
  }

  private sendWave(fence: SlotFence): void {
    const queue = fence.queue;
    while (queue.length > 0 && performance.now() >= fence.notBefore) {
      const unit = queue.shift() as RoutedUnit;
      if (unit.state === UNIT_RETRYING && unit.seq < fence.executedMax) {
        // A later command of this client for this slot already ran where this one was refused: re-sending this one
        // would reorder them. (A redirected unit is exempt: the node that redirected it does not hold its keys, so
        // nothing that ran there touched them.)
        unit.state = UNIT_NEW;
        unit.deliver(ERR_RETRY_OUT_OF_ORDER);
        continue;
      }
      unit.state = UNIT_AT_BACKEND;
      unit.fenced = true;
      fence.tracked++;
      this.resender.resend(unit); // may come straight back (retry, error): handled re-entrantly
      if (unit.multiKey) break;
    }
  }
}
