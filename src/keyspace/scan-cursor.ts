/**
 * The SCAN cursor keymux hands out: one plain unsigned decimal integer, as Redis's, that says where the walk over
 * every shard stands. It packs, for a walk begun under a routing of S shards:
 *
 *   cursor = ((c * R + phase) * (S + 1) + shard) * 256 + epoch        R = 2S - 1 (shard < S), 256 (shard = S)
 *
 * - epoch (0..255): the number keyspace/scan-epochs.ts gives the routing (slot owners or ring, hash tag, routing
 *   rules, shard list) in force when the walk began; read first, as it says what S is;
 * - shard (0..S-1): the logical shard being walked: the keys that epoch's routing put on shard `shard`; shard = S
 *   is the walk's last part, the shards that routing did not have (added by a reload during the walk);
 * - phase: for shard < S, which physical shard is scanned for them (see phaseShard); while nothing moved since
 *   the walk began only the middle phase runs (the shard itself): plain SCAN of each shard in turn. For shard = S,
 *   which of the added shards (0..ADDED_SHARDS-1);
 * - c: that physical shard's own SCAN cursor.
 * "0" starts and ends a walk, as in Redis. Nothing is stored in keymux but the routings (scan-epochs.ts): a cursor
 * is valid across keymux restarts and between keymux instances that know its routing; with S shards the shard's
 * own cursor is multiplied by 256 * (S + 1) * (2S - 1) (3 shards: 5,120), which a shard's cursor (below its table
 * size) leaves far inside 64 bits.
 */

/** Largest cursor Redis accepts (unsigned 64-bit). */
const MAX_CURSOR = (1n << 64n) - 1n;
export const EPOCHS = 256;
/** How many shards added during one walk its cursor can follow (the radix of the phase when shard = S). */
export const ADDED_SHARDS = 256;

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
 * left `shard` while it was walked). An index into the walk's routing's shard list.
 */
export function phaseShard(shard: number, phase: number, shards: number): number {
  const own = ownPhase(shards);
  if (phase === own) return shard;
  const k = phase < own ? phase : phase - shards;
  return (shard + 1 + k) % shards;
}

/**
 * The integer a client cursor is, or null ("invalid cursor"). Read as Redis reads it (strtoul): an optional sign
 * and decimal digits, nothing else; "" is 0, "-1" wraps to 2^64 - 1, beyond 2^64 - 1 is refused.
 */
export function readCursor(text: Buffer): bigint | null {
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
  return v;
}

/** The epoch a cursor names (what its other fields mean depends on that epoch's shard count). */
export function cursorEpoch(v: bigint): number {
  return Number(v % BigInt(EPOCHS));
}

/** The position cursor `v` names in a walk whose routing has `shards` shards. */
export function splitCursor(v: bigint, shards: number): ScanPosition {
  let rest = v / BigInt(EPOCHS);
  const epoch = cursorEpoch(v);
  const s = BigInt(shards + 1);
  const shard = Number(rest % s);
  rest /= s;
  const r = BigInt(shard < shards ? phaseCount(shards) : ADDED_SHARDS);
  return { epoch, shard, phase: Number(rest % r), cursor: rest / r };
}

/** readCursor then splitCursor: the position, or null for an invalid cursor. */
export function decodeCursor(text: Buffer, shards: number): ScanPosition | null {
  const v = readCursor(text);
  return v === null ? null : splitCursor(v, shards);
}

/** The client cursor for a position ("0" for the end); null when it would not fit in 64 bits. */
export function encodeCursor(pos: ScanPosition, shards: number): string | null {
  const r = pos.shard < shards ? phaseCount(shards) : ADDED_SHARDS;
  if (pos.phase >= r) return null;
  const v = ((pos.cursor * BigInt(r) + BigInt(pos.phase)) * BigInt(shards + 1) + BigInt(pos.shard)) * BigInt(EPOCHS);
  const out = v + BigInt(pos.epoch);
  return out > MAX_CURSOR ? null : out.toString();
}
