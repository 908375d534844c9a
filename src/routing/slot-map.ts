/**
 * SlotMap: 16384 slots -> shard index, as a Uint16Array built once (from configured ranges or a discovered
 * cluster). Immutable after construction (a new map is built on reload or rediscovery); lookups are one read.
 */
import { SLOT_COUNT } from './crc16.js';

export const UNASSIGNED = 0xffff;

export class SlotMap {
  readonly owners: Uint16Array;

  constructor(rangesPerShard: ReadonlyArray<ReadonlyArray<readonly [number, number]> | null>, owners?: Uint16Array) {
    if (owners !== undefined) {
      this.owners = owners;
      return;
    }
    this.owners = new Uint16Array(SLOT_COUNT).fill(UNASSIGNED);
    rangesPerShard.forEach((ranges, shard) => {
      for (const [from, to] of ranges ?? []) this.owners.fill(shard, from, to + 1);
    });
  }

  static fromOwners(owners: Uint16Array): SlotMap {
    return new SlotMap([], Uint16Array.from(owners));
  }

  ownerOf(slot: number): number {
    return this.owners[slot];
  }

  /** Inclusive slot ranges owned by `shard`. */
  rangesOf(shard: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let start = -1;
    for (let s = 0; s <= SLOT_COUNT; s++) {
      const mine = s < SLOT_COUNT && this.owners[s] === shard;
      if (mine && start < 0) start = s;
      if (!mine && start >= 0) {
        out.push([start, s - 1]);
        start = -1;
      }
    }
    return out;
  }
}
