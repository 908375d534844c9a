/**
 * SlotMap: 16384 slots -> shard index, as a Uint16Array built once from the configured ranges. Immutable after
 * construction (a new map is built on reload); lookups are a single array read.
 */
import { SLOT_COUNT } from './crc16.js';

export const UNASSIGNED = 0xffff;

export class SlotMap {
  readonly owners: Uint16Array;

  constructor(rangesPerShard: ReadonlyArray<ReadonlyArray<readonly [number, number]> | null>) {
    this.owners = new Uint16Array(SLOT_COUNT).fill(UNASSIGNED);
    rangesPerShard.forEach((ranges, shard) => {
      for (const [from, to] of ranges ?? []) this.owners.fill(shard, from, to + 1);
    });
  }

  ownerOf(slot: number): number {
    return this.owners[slot];
  }
}
