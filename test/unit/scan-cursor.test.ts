// The SCAN cursor keymux hands out (src/keyspace/scan-cursor.ts): positions survive the round trip through the
// decimal cursor for any shard count, "0" is only the start, Redis's strtoul reading of cursors is kept, and the
// phase order puts the shard itself between two passes over the others.
import { describe, expect, it } from 'vitest';
import {
  decodeCursor,
  encodeCursor,
  ownPhase,
  phaseCount,
  phaseShard,
  type ScanPosition,
} from '../../src/keyspace/scan-cursor.js';
import { ScanEpochs, hash8 } from '../../src/keyspace/scan-epochs.js';
import type { Topology } from '../../src/routing/topology.js';

describe('SCAN cursor', () => {
  it('round-trips every position, and only the start encodes to 0', () => {
    for (const shards of [1, 2, 3, 7, 64]) {
      for (let i = 0; i < 2000; i++) {
        const pos: ScanPosition = {
          epoch: Math.floor(Math.random() * 256),
          shard: Math.floor(Math.random() * shards),
          phase: Math.floor(Math.random() * phaseCount(shards)),
          cursor: BigInt(Math.floor(Math.random() * 2 ** 40)),
        };
        const text = encodeCursor(pos, shards)!;
        expect(text).toMatch(/^\d+$/);
        expect(decodeCursor(Buffer.from(text), shards)).toEqual(pos);
        if (text === '0') expect(pos).toEqual({ epoch: 0, shard: 0, phase: 0, cursor: 0n });
      }
    }
  });

  it('reads cursors as Redis does', () => {
    const start = { epoch: 0, shard: 0, phase: 0, cursor: 0n };
    for (const t of ['0', '', '+0', '-0', '00']) expect(decodeCursor(Buffer.from(t), 3), t).toEqual(start);
    for (const t of ['abc', ' 1', '1 ', '1.5', '-', '+', '18446744073709551616', '123456789012345678901'])
      expect(decodeCursor(Buffer.from(t), 3), t).toBeNull();
    expect(decodeCursor(Buffer.from('-1'), 3)).toEqual(decodeCursor(Buffer.from('18446744073709551615'), 3));
  });

  it('walks the other shards, then the shard itself, then the others again', () => {
    expect([0, 1, 2, 3, 4].map((p) => phaseShard(0, p, 3))).toEqual([1, 2, 0, 1, 2]);
    expect([0, 1, 2, 3, 4].map((p) => phaseShard(2, p, 3))).toEqual([0, 1, 2, 0, 1]);
    expect(ownPhase(1)).toBe(0);
    expect(phaseShard(0, 0, 1)).toBe(0);
  });

  it('epochs are 0..255 whatever the routing text', () => {
    for (let i = 0; i < 5000; i++) {
      const e = hash8(`routing-${i}-${Math.random()}`);
      expect(e >= 0 && e < 256 && Number.isInteger(e)).toBe(true);
    }
  });
});

describe('SCAN epochs', () => {
  /** Just what ScanEpochs reads of a snapshot. */
  function fakeTopology(signature: string): Topology {
    return { routingSignature: () => signature, router: {}, shards: [] } as unknown as Topology;
  }

  it('two routings whose 8-bit hashes collide get numbers of their own; a walk keeps its routing', () => {
    const first = 'routing-0';
    let second = '';
    for (let i = 1; second === ''; i++) if (hash8(`routing-${i}`) === hash8(first)) second = `routing-${i}`;
    const epochs = new ScanEpochs();
    const a = epochs.of(fakeTopology(first));
    const b = epochs.of(fakeTopology(second));
    expect(a.epoch).toBe(hash8(first));
    expect(b.epoch).not.toBe(a.epoch);
    expect(epochs.get(a.epoch)?.signature).toBe(first);
    expect(epochs.get(b.epoch)?.signature).toBe(second);
    // The first routing again (a reload back to it): its own number, not a new one.
    expect(epochs.of(fakeTopology(first)).epoch).toBe(a.epoch);
  });
});
