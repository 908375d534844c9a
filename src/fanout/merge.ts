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
import { isErrorFrame, isOkFrame, readArrayElements, readInteger } from '../resp/reply-reader.js';
import { arrayHeader, integerReply, OK } from '../resp/writer.js';

/** The first error among the fragments' replies, or null. */
function firstError(fragments: Fragment[]): Buffer | null {
  for (const f of fragments) if (isErrorFrame(f.reply as Buffer)) return f.reply;
  return null;
}

export function mergeMget(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  let total = 0;
  for (const f of fragments) total += f.keyOrdinals.length;
  const slots = new Array<Buffer>(total);
  let bytes = 0;
  for (const f of fragments) {
    const elements = readArrayElements(f.reply as Buffer);
    if (elements === null || elements.length !== f.keyOrdinals.length) return ERR_FANOUT_UNEXPECTED;
    for (let i = 0; i < elements.length; i++) {
      slots[f.keyOrdinals[i]] = elements[i];
      bytes += elements[i].length;
    }
  }
  const header = arrayHeader(total);
  const out = Buffer.allocUnsafe(header.length + bytes);
  let p = header.copy(out, 0);
  for (let i = 0; i < total; i++) p += slots[i].copy(out, p);
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
