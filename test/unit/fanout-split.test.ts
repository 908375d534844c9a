/**
 * Splitting a multi-key command (src/fanout/split.ts): each fragment's frame is exactly the RESP command a client
 * would send for the command name and that group's keys (and values) in the client's order, whatever the lengths
 * (0 bytes, and lengths of 1 to 6 decimal digits), for both shapes (MGET-like keys, MSET-like key-value pairs).
 */
import { describe, expect, it } from 'vitest';
import { Request } from '../../src/core/request.js';
import { buildFragments, groupKeys } from '../../src/fanout/split.js';
import { commandFrame } from '../../src/resp/writer.js';
import type { Router } from '../../src/routing/router.js';
import { idleOwner } from '../support/owner.js';

const owner = idleOwner();

/** Three groups by key length (a stand-in for slots or shards); group g is served by shard g. */
const router = {
  groupFor: (key: Buffer) => key.length % 3,
  shardOfGroup: (g: number) => g,
  keylessGroup: () => 0,
  groupsAreSlots: false,
} as unknown as Router;

const LENGTHS = [0, 1, 9, 10, 99, 100, 999, 1000, 12345, 100000, 2, 5];

function keyOf(i: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let j = 0; j < n; j++) b[j] = (i * 17 + j) & 0xff;
  return b;
}

function requestOf(args: Buffer[]): Request {
  return new Request(owner, commandFrame(args), args, 0, 0);
}

describe('fan-out fragments', () => {
  it('MGET-like: each fragment is the command over its keys, in the client order', () => {
    const keys = LENGTHS.map((n, i) => keyOf(i, n));
    const req = requestOf([Buffer.from('MGET'), ...keys]);
    const { single, groups } = groupKeys(req, 'keys', router);
    expect(single).toBe(-1);
    const fragments = buildFragments(req, 'keys', groups!, router, () => Buffer.alloc(0));
    expect(fragments.length).toBe(3);
    for (const f of fragments) {
      const mine = f.keyOrdinals.map((o) => keys[o]!);
      expect(new Set(mine.map((k) => router.groupFor(k))).size).toBe(1); // one group per fragment
      expect(f.frame.equals(commandFrame([Buffer.from('MGET'), ...mine]))).toBe(true);
    }
    expect(fragments.flatMap((f) => f.keyOrdinals).sort((a, b) => a - b)).toEqual(LENGTHS.map((_, i) => i));
  });

  it('MSET-like: keys with their values, values of every length', () => {
    const pairs = LENGTHS.map((n, i) => [keyOf(i, (i * 7) % 13), keyOf(i + 100, n)] as const);
    const req = requestOf([Buffer.from('MSET'), ...pairs.flat()]);
    const { groups } = groupKeys(req, 'key-value', router);
    const fragments = buildFragments(req, 'key-value', groups!, router, () => Buffer.alloc(0));
    for (const f of fragments) {
      const mine = f.keyOrdinals.flatMap((o) => [pairs[o]![0], pairs[o]![1]]);
      expect(f.frame.equals(commandFrame([Buffer.from('MSET'), ...mine]))).toBe(true);
    }
  });

  it('groups keys by group in first-seen order, for any group number, one call after another', () => {
    // Groups are slots (below 16384) on a Redis Cluster and shard indexes elsewhere; larger numbers must work too.
    const groupOf = new Map<string, number>();
    const byFirstByte = {
      groupFor: (key: Buffer) => groupOf.get(key.toString()) as number,
      shardOfGroup: (g: number) => g,
      keylessGroup: () => 0,
      groupsAreSlots: true,
    } as unknown as Router;
    const check = (assignment: Array<[string, number]>): void => {
      groupOf.clear();
      for (const [k, g] of assignment) groupOf.set(k, g);
      const req = requestOf([Buffer.from('DEL'), ...assignment.map(([k]) => Buffer.from(k))]);
      const { single, groups } = groupKeys(req, 'keys', byFirstByte);
      const expected = new Map<number, number[]>();
      assignment.forEach(([, g], i) => expected.set(g, [...(expected.get(g) ?? []), i]));
      if (expected.size === 1) {
        expect(single).toBe(assignment[0]![1]);
        expect(groups).toBeNull();
        return;
      }
      expect(single).toBe(-1);
      expect(groups!.groups).toEqual([...expected.keys()]);
      expect(groups!.ordinals).toEqual([...expected.values()]);
    };
    check([
      ['a', 16383],
      ['b', 0],
      ['c', 16383],
      ['d', 7],
      ['e', 0],
    ]);
    // The same groups again in another order: nothing of the call before is left in the table.
    check([
      ['a', 0],
      ['b', 7],
      ['c', 16383],
      ['d', 0],
    ]);
    check([
      ['a', 20000],
      ['b', 16384],
      ['c', 20000],
      ['d', 3],
      ['e', 16384],
      ['f', 3],
    ]);
    check([
      ['a', 5],
      ['b', 5],
      ['c', 5],
    ]);
    check([
      ['a', 5],
      ['b', 5],
      ['c', 20000],
      ['d', 5],
    ]);
  });
});
