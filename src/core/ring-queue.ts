/**
 * RingQueue: a growable FIFO ring buffer. Used for every ordered queue on the data path (a client's in-flight
 * requests, a backend connection's waiting operations) so that taking the head is O(1) and never shifts an array.
 * Capacity is a power of two and doubles when full; slots are cleared on shift so completed requests are not kept
 * alive by the queue.
 */
export class RingQueue<T> {
  private items: Array<T | undefined>;
  private head = 0;
  private count = 0;
  private mask: number;
  /** Items ever shifted: item i from the head was the (taken + i)-th ever pushed (a position that never repeats). */
  taken = 0;

  constructor(initialCapacity = 16) {
    let cap = 1;
    while (cap < initialCapacity) cap <<= 1;
    this.items = new Array<T | undefined>(cap);
    this.mask = cap - 1;
  }

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count > this.mask) this.grow();
    this.items[(this.head + this.count) & this.mask] = item;
    this.count++;
  }

  /** The oldest item, or undefined when empty. */
  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.count--;
    this.taken++;
    return item;
  }

  /** Item at position i from the head (0 = oldest). */
  at(i: number): T | undefined {
    return i < 0 || i >= this.count ? undefined : this.items[(this.head + i) & this.mask];
  }

  /** The newest item, or undefined when empty. */
  last(): T | undefined {
    return this.count === 0 ? undefined : this.items[(this.head + this.count - 1) & this.mask];
  }

  /** Removes and returns every item, oldest first. */
  drain(): T[] {
    const out: T[] = [];
    while (this.count > 0) out.push(this.shift() as T);
    return out;
  }

  private grow(): void {
    const cap = (this.mask + 1) * 2;
    const next = new Array<T | undefined>(cap);
    for (let i = 0; i < this.count; i++) next[i] = this.items[(this.head + i) & this.mask];
    this.items = next;
    this.head = 0;
    this.mask = cap - 1;
  }
}
