/**
 * The event-loop turn clock: performance.now() read once per turn (by the first caller) and reused by every
 * request parsed, sent and answered in that turn; the flush pass at the end of the turn (core/flush.ts) forgets
 * it. Timestamps on the data path (a request's start, an op's send time, a reply's arrival) therefore cost one
 * clock read per turn instead of several per request, at a resolution of one turn, which is what the latency
 * histograms and the one timer per connection need. Control-plane code keeps calling performance.now().
 */
import { performance } from 'node:perf_hooks';
import { scheduleFlush, type Flushable } from './flush.js';

class TurnClock implements Flushable {
  flushScheduled = false;
  value = -1;

  flush(): void {
    this.value = -1;
  }
}

const clock = new TurnClock();

/** Milliseconds (performance.now() time base) as of the start of this event-loop turn's data-path work. */
export function turnNow(): number {
  let v = clock.value;
  if (v < 0) {
    v = clock.value = performance.now();
    scheduleFlush(clock);
  }
  return v;
}
