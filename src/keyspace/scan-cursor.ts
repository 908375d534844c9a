/**
 * The SCAN cursor keymux hands out: one plain unsigned decimal integer, as Redis's, that says where the walk over
 * every shard stands. It packs, for S shards:
 *
 *   cursor = ((c * P + phase) * S + shard) * 256 + epoch        with P = 2S - 1
 *
 * - epoch (0..255): 8 bits of a hash of the routing (slot owners or ring, hash tag, routing rules) in force when
 *   the walk began, so a walk that spans a reload still knows which keys it set out to cover;
 * - shard (0..S-1): the logical shard being walked: the keys that epoch's routing put on shard `shard`;
 * - phase (0..P-1): which physical shard is being scanned for them (see phaseShard); while nothing moved since
 *   the walk began only the middle phase runs (the shard itself): plain SCAN of each shard in turn;
 * - c: that physical shard's own SCAN cursor.
 * "0" starts and ends a walk, as in Redis. Nothing is stored in keymux: the cursor is valid across keymux
 * restarts and between keymux instances as long as the shard list is the same; with S shards the shard's own
 * cursor is multiplied by 256 * S * (2S - 1) (3 shards: 3,840), which a shard's cursor (below its table size)
 * leaves far inside 64 bits.
 */

/** Largest cursor Redis accepts (unsigned 64-bit). */
const MAX_CURSOR = (1n << 64n) - 1n;
export const EPOCHS = 256;

export interface ScanPosition {
  epoch: number;
  shard: number;
  phase: number;
  cursor: bigint;
}

/** Phases per logical shard for `shards` shards. */
export function phaseCount(shards: number): number {
  return 2 * shards - 1;
}

/** The phase that scans the logical shard itself (the only one run while nothing moved). */
export function ownPhase(shards: number): number {
  return shards - 1;
}

/**
 * The physical shard scanned in `phase` of logical shard `shard`: first every other shard (for keys of `shard`
 * still on their old owner, on their way in), then `shard` itself, then every other shard again (for keys that
 * left `shard` while it was walked).
 */
export function phaseShard(shard: number, phase: number, shards: number): number {
  const own = ownPhase(shards);
  if (phase === own) return shard;
  const k = phase < own ? phase : phase - shards;
  return (shard + 1 + k) % shards;
}

/**
 * The position a client cursor names, or null ("invalid cursor"). Read as Redis reads it (strtoul): an optional
 * sign and decimal digits, nothing else; "" is 0, "-1" wraps to 2^64 - 1, beyond 2^64 - 1 is refused.
 */
export function decodeCursor(text: Buffer, shards: number): ScanPosition | null {
  const len = text.length;
  let i = 0;
  let negative = false;
  if (len > 0 && (text[0] === 43 || text[0] === 45)) {
    negative = text[0] === 45;
    i = 1;
    if (len === 1) return null;
  }
  if (len - i > 20) return null;
  for (let j = i; j < len; j++) if (text[j] < 48 || text[j] > 57) return null;
  let v = i < len ? BigInt(text.toString('latin1', i)) : 0n;
  if (v > MAX_CURSOR) return null;
  if (negative && v > 0n) v = MAX_CURSOR + 1n - v;
  const e = BigInt(EPOCHS);
  const s = BigInt(shards);
  const p = BigInt(phaseCount(shards));
  let rest = v / e;
  const epoch = Number(v % e);
  const shard = Number(rest % s);
  rest /= s;
  const phase = Number(rest % p);
  return { epoch, shard, phase, cursor: rest / p };
}

/** The client cursor for a position ("0" for the end); null when it would not fit in 64 bits. */
export function encodeCursor(pos: ScanPosition, shards: number): string | null {
  const v =
    ((pos.cursor * BigInt(phaseCount(shards)) + BigInt(pos.phase)) * BigInt(shards) + BigInt(pos.shard)) *
      BigInt(EPOCHS) +
    BigInt(pos.epoch);
  return v > MAX_CURSOR ? null : v.toString();
}
