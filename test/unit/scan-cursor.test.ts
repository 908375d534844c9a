// The SCAN cursor keymux hands out (src/keyspace/scan-cursor.ts): positions survive the round trip through the
// decimal cursor for any shard count, "0" is only the start, Redis's strtoul reading of cursors is kept, and the
// phase order puts the shard itself between two passes over the others; the epoch is read before the shard count
// it implies, and the epochs record each routing's shard list.
import { describe, expect, it } from 'vitest';
import {
  ADDED_SHARDS,
  cursorEpoch,
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
        // shard = shards: the shards added during the walk, numbered 0..ADDED_SHARDS-1 in the phase.
        const shard = Math.floor(Math.random() * (shards + 1));
        const pos: ScanPosition = {
          epoch: Math.floor(Math.random() * 256),
          shard,
          phase: Math.floor(Math.random() * (shard < shards ? phaseCount(shards) : ADDED_SHARDS)),
          cursor: BigInt(Math.floor(Math.random() * 2 ** 40)),
        };
        const text = encodeCursor(pos, shards)!;
        expect(text).toMatch(/^\d+$/);
        expect(decodeCursor(Buffer.from(text), shards)).toEqual(pos);
        if (text === '0') expect(pos).toEqual({ epoch: 0, shard: 0, phase: 0, cursor: 0n });
        // The epoch is readable without knowing the shard count (it says what the count is).
        expect(cursorEpoch(BigInt(text))).toBe(pos.epoch);
      }
    }
    expect(encodeCursor({ epoch: 1, shard: 3, phase: ADDED_SHARDS, cursor: 0n }, 3)).toBeNull();
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
  function fakeTopology(
    signature: string,
    shards: Array<{ address: string; sentinelMaster: string | null }> = [],
  ): Topology {
    return { routingSignature: () => signature, router: {}, shards } as unknown as Topology;
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

  it('records the shard list: a shard is its address, or its sentinel master name (a failover keeps the shard)', () => {
    const epochs = new ScanEpochs();
    const before = epochs.of(
      fakeTopology('r1', [
        { address: '10.0.0.1:6379', sentinelMaster: null },
        { address: '10.0.0.2:6379', sentinelMaster: 'm2' },
      ]),
    );
    const failedOver = epochs.of(
      fakeTopology('r2', [
        { address: '10.0.0.1:6379', sentinelMaster: null },
        { address: '10.0.0.9:6379', sentinelMaster: 'm2' },
      ]),
    );
    const added = epochs.of(
      fakeTopology('r3', [
        { address: '10.0.0.1:6379', sentinelMaster: null },
        { address: '10.0.0.2:6379', sentinelMaster: 'm2' },
        { address: '10.0.0.3:6379', sentinelMaster: null },
      ]),
    );
    expect(before.shards.map((s) => s.id)).toEqual(['10.0.0.1:6379', 'sentinel:m2']);
    expect(failedOver.shardList).toBe(before.shardList);
    expect(failedOver.shards[1].address).toBe('10.0.0.9:6379');
    expect(added.shardList).not.toBe(before.shardList);
    expect(epochs.get(before.epoch)?.shards.length).toBe(2);
  });
});
