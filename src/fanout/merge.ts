/**
 * Reassembles the replies of a split or broadcast command into the one reply the client expects. Refuse rather
 * than guess: if any part failed (a shard error, or a reply of the wrong shape) the client gets that error, never
 * a silently partial answer.
 * - mget: each fragment's array is scattered back to the client's key positions (duplicates included).
 * - sum: integer replies added (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
 * - all-ok: +OK only if every part said +OK (MSET, FLUSHALL, FLUSHDB).
 */
import type { Request } from '../core/request.js';
import type { Fragment } from '../core/fragment.js';
import { ERR_FANOUT_UNEXPECTED } from '../errors.js';
import { afterAttributes, isErrorFrame, isOkFrame, readArrayBounds, readInteger } from '../resp/reply-reader.js';
import { arrayHeader, integerReply, OK } from '../resp/writer.js';

/** The first error among the fragments' replies, or null. */
function firstError(fragments: Fragment[]): Buffer | null {
  for (const f of fragments) if (isErrorFrame(f.reply as Buffer)) return f.reply;
  return null;
}

/** Element bounds of one fragment's reply (reused: merges run one at a time). */
const bounds: number[] = [];

/** Elements up to this many bytes are copied byte by byte (cheaper than making a view to copy from). */
const COPY_LOOP_MAX = 64;

export function mergeMget(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  let total = 0;
  for (const f of fragments) total += f.keyOrdinals.length;
  // Where each key's element is: its fragment's reply and its byte range there, by key position.
  const source = new Array<Buffer>(total);
  const starts = new Array<number>(total);
  const ends = new Array<number>(total);
  let bytes = 0;
  for (const f of fragments) {
    let reply = f.reply as Buffer;
    if (reply[0] === 124 /* | */) {
      // RESP3 attributes before the array (metadata about it): the array itself is merged.
      const value = afterAttributes(reply);
      if (value === null || value === reply) return ERR_FANOUT_UNEXPECTED;
      reply = value;
    }
    const ordinals = f.keyOrdinals;
    const n = readArrayBounds(reply, bounds);
    if (n < 0 || n !== ordinals.length) return ERR_FANOUT_UNEXPECTED;
    for (let i = 0; i < n; i++) {
      const ord = ordinals[i];
      source[ord] = reply;
      starts[ord] = bounds[2 * i];
      ends[ord] = bounds[2 * i + 1];
      bytes += bounds[2 * i + 1] - bounds[2 * i];
    }
  }
  const header = arrayHeader(total);
  const out = Buffer.allocUnsafe(header.length + bytes);
  out.set(header, 0);
  let p = header.length;
  for (let k = 0; k < total; k++) {
    const from = source[k];
    const s = starts[k];
    const e = ends[k];
    if (e - s <= COPY_LOOP_MAX) {
      for (let i = s; i < e; i++) out[p++] = from[i];
    } else {
      out.set(from.subarray(s, e), p);
      p += e - s;
    }
  }
  return out;
}

export function mergeSum(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  let sum = 0;
  for (const f of fragments) {
    const n = readInteger(f.reply as Buffer);
    if (n === null) return ERR_FANOUT_UNEXPECTED;
    sum += n;
  }
  return integerReply(sum);
}

export function mergeAllOk(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  for (const f of fragments) if (!isOkFrame(f.reply as Buffer)) return ERR_FANOUT_UNEXPECTED;
  return OK;
}
