/**
 * HotReadSet: the keys of the current hot-key top-K (metrics/hotkeys.ts), as a set the read path can ask "is this
 * key hot?" without building a string: keys are bucketed by length and compared byte for byte (K is small, 20 by
 * default). Refreshed once a second from the top-K (a merge of the sketches' candidates, control-plane work); used
 * only when metrics.hot_keys.read_from_replicas is on (Topology.readPool then sends those reads to replicas).
 */
import type { Observer } from './observer.js';

const REFRESH_MS = 1000;

export class HotReadSet {
  private byLength = new Map<number, Buffer[]>();
  private timer: NodeJS.Timeout | null = null;
  private readonly observer: Observer;
  /** Bound once: the function topologies call per read. */
  readonly test: (key: Buffer) => boolean;

  constructor(observer: Observer) {
    this.observer = observer;
    this.test = (key) => {
      const list = this.byLength.get(key.length);
      if (list === undefined) return false;
      for (const k of list) if (k.equals(key)) return true;
      return false;
    };
  }

  /** Starts or stops refreshing (on when hot keys are tracked and read_from_replicas is set). */
  enable(on: boolean): void {
    if (on && this.timer === null) {
      this.timer = setInterval(() => this.refresh(), REFRESH_MS);
      this.timer.unref();
      this.refresh();
    } else if (!on && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
      this.byLength = new Map();
    }
  }

  /** Reads the top-K now. */
  refresh(): void {
    const next = new Map<number, Buffer[]>();
    for (const { key } of this.observer.hotKeys?.top().keys ?? []) {
      let list = next.get(key.length);
      if (list === undefined) next.set(key.length, (list = []));
      list.push(key);
    }
    this.byLength = next;
  }

  close(): void {
    this.enable(false);
  }
}
