/**
 * RingQueue: FIFO order across wraparound and growth, at(), peek(), drain(), shift on empty, and slots released
 * on shift (completed requests must not be kept alive by the queue). A seeded random walk checks it against an
 * array model.
 */
import { describe, expect, it } from 'vitest';
import { RingQueue } from '../../src/core/ring-queue.js';
import { Rng, seeds } from '../support/resp-gen.js';

/** The queue's backing array (white-box: to check slots are released). */
function slots<T>(q: RingQueue<T>): Array<T | undefined> {
  return (q as unknown as { items: Array<T | undefined> }).items;
}

function contents<T>(q: RingQueue<T>): Array<T | undefined> {
  return Array.from({ length: q.length }, (_, i) => q.at(i));
}

describe('RingQueue', () => {
  it('starts empty: shift, peek and at return undefined', () => {
    const q = new RingQueue<number>();
    expect(q.length).toBe(0);
    expect(q.shift()).toBeUndefined();
    expect(q.peek()).toBeUndefined();
    expect(q.at(0)).toBeUndefined();
    expect(q.drain()).toEqual([]);
    expect(q.length).toBe(0);
  });

  it('is FIFO', () => {
    const q = new RingQueue<number>(4);
    for (let i = 0; i < 3; i++) q.push(i);
    expect(q.length).toBe(3);
    expect(q.peek()).toBe(0);
    expect([q.shift(), q.shift(), q.shift(), q.shift()]).toEqual([0, 1, 2, undefined]);
    expect(q.length).toBe(0);
  });

  it('shift on empty after use leaves it usable', () => {
    const q = new RingQueue<string>(2);
    q.push('a');
    expect(q.shift()).toBe('a');
    expect(q.shift()).toBeUndefined();
    expect(q.shift()).toBeUndefined();
    expect(q.length).toBe(0);
    q.push('b');
    expect(q.peek()).toBe('b');
    expect(q.length).toBe(1);
  });

  it('rounds the capacity up to a power of two', () => {
    expect(slots(new RingQueue<number>(5)).length).toBe(8);
    expect(slots(new RingQueue<number>(16)).length).toBe(16);
    expect(slots(new RingQueue<number>(0)).length).toBe(1);
    expect(slots(new RingQueue<number>()).length).toBe(16);
  });

  it('grows while wrapped around, keeping order', () => {
    const q = new RingQueue<number>(4);
    for (let i = 0; i < 4; i++) q.push(i); // full: [0 1 2 3]
    expect(q.shift()).toBe(0);
    expect(q.shift()).toBe(1);
    expect(q.shift()).toBe(2);
    q.push(4);
    q.push(5);
    q.push(6); // wrapped: head at slot 3, items in slots 3, 0, 1, 2
    expect(slots(q).length).toBe(4);
    expect(contents(q)).toEqual([3, 4, 5, 6]);
    q.push(7); // grows from a wrapped state
    expect(slots(q).length).toBe(8);
    expect(contents(q)).toEqual([3, 4, 5, 6, 7]);
    for (let i = 8; i < 20; i++) q.push(i);
    expect(slots(q).length).toBe(32);
    expect(q.drain()).toEqual(Array.from({ length: 17 }, (_, i) => i + 3));
    expect(q.length).toBe(0);
  });

  it('a capacity-1 queue grows on the second push', () => {
    const q = new RingQueue<number>(1);
    q.push(1);
    q.push(2);
    q.push(3);
    expect(q.drain()).toEqual([1, 2, 3]);
  });

  it('at() indexes from the head and rejects out-of-range positions', () => {
    const q = new RingQueue<string>(4);
    for (const s of ['x', 'y', 'a', 'b', 'c']) q.push(s);
    q.shift();
    q.shift();
    expect(q.at(0)).toBe('a');
    expect(q.at(2)).toBe('c');
    expect(q.at(3)).toBeUndefined();
    expect(q.at(-1)).toBeUndefined();
    expect(q.at(100)).toBeUndefined();
  });

  it('numbers items by push order across shifts, growth and drain: taken + i is never reused', () => {
    const q = new RingQueue<string>(2);
    expect(q.last()).toBeUndefined();
    const positions = new Map<string, number>();
    const push = (s: string): void => {
      q.push(s);
      expect(q.last()).toBe(s);
      positions.set(s, q.taken + q.length - 1);
    };
    for (const s of ['a', 'b', 'c']) push(s);
    q.shift();
    push('d'); // wraps and grows
    push('e');
    for (const [s, p] of positions) expect(q.at(p - q.taken)).toBe(s === 'a' ? undefined : s);
    q.drain();
    push('f');
    expect(positions.get('f')).toBe(5);
    for (const s of ['a', 'b', 'c', 'd', 'e']) expect(q.at((positions.get(s) as number) - q.taken)).toBeUndefined();
    expect(q.at(5 - q.taken)).toBe('f');
  });

  it('drain() returns everything oldest first and empties the queue, which stays usable', () => {
    const q = new RingQueue<number>(2);
    for (let i = 0; i < 5; i++) q.push(i);
    q.shift();
    expect(q.drain()).toEqual([1, 2, 3, 4]);
    expect(q.length).toBe(0);
    expect(q.shift()).toBeUndefined();
    q.push(9);
    expect(q.drain()).toEqual([9]);
  });

  it('releases slots on shift and drain, so finished items can be collected', () => {
    const q = new RingQueue<object>(4);
    const items = Array.from({ length: 6 }, () => ({}));
    for (const it of items) q.push(it);
    q.shift();
    q.shift();
    expect(slots(q).filter((s) => s !== undefined)).toHaveLength(4);
    expect(slots(q).includes(items[0])).toBe(false);
    q.drain();
    expect(slots(q).every((s) => s === undefined)).toBe(true);
  });

  it('stores falsy values faithfully', () => {
    const q = new RingQueue<number | null | string>(2);
    q.push(0);
    q.push(null);
    q.push('');
    expect(q.length).toBe(3);
    expect(q.drain()).toEqual([0, null, '']);
  });

  it.each(seeds(5, 3000))('seed %i: a random walk of pushes and shifts matches an array', (seed) => {
    const rng = new Rng(seed);
    const q = new RingQueue<number>(rng.int(1, 8));
    const model: number[] = [];
    let next = 0;
    let failure: string | null = null;
    for (let step = 0; step < 20_000 && failure === null; step++) {
      const r = rng.float();
      // Phases that favour pushing or shifting, so the queue both grows large and wraps while small.
      const pushBias = Math.floor(step / 2000) % 2 === 0 ? 0.6 : 0.4;
      if (r < pushBias) {
        q.push(next);
        model.push(next++);
      } else if (r < 0.97) {
        const got = q.shift();
        const want = model.shift();
        if (got !== want) failure = `step ${step}: shift() gave ${got}, expected ${want}`;
      } else {
        const i = rng.int(-1, model.length);
        const want = i >= 0 ? model[i] : undefined;
        if (q.at(i) !== want) failure = `step ${step}: at(${i}) gave ${q.at(i)}, expected ${want}`;
      }
      if (q.length !== model.length) failure = `step ${step}: length ${q.length}, expected ${model.length}`;
      if (q.peek() !== model[0]) failure = `step ${step}: peek() gave ${q.peek()}, expected ${model[0]}`;
    }
    expect(failure, `seed ${seed}`).toBeNull();
    expect(q.drain()).toEqual(model);
  });
});
