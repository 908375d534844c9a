/**
 * Reads values out of complete raw reply frames, on demand: integers for summing, array elements (as raw frame
 * views) for reassembly, bulk bodies for INFO, error text for MOVED/ASK. Only merges, redirects and the control
 * plane call these; single-shard replies are forwarded as bytes and never read. Frames are trusted to be
 * complete (the scanner produced them); anything unexpected yields null and the caller refuses.
 */
import { parseLength } from './reply-scanner.js';

const CR = 13;

/**
 * Index of the CR ending the line that continues at `from`, or -1. Lines here are short (a length, an integer, a
 * status): a plain loop beats a native indexOf call, which matters when a merge walks many small elements.
 */
function lineEnd(buf: Buffer, from: number): number {
  const n = buf.length;
  for (let i = from; i < n; i++) if (buf[i] === CR) return i;
  return -1;
}

export const OK_FRAME = Buffer.from('+OK\r\n');

export function isErrorFrame(frame: Buffer): boolean {
  return frame[0] === 45 /* - */ || frame[0] === 33; /* ! */
}

export function isOkFrame(frame: Buffer): boolean {
  if (frame[0] === 124) return readAfterAttributes(frame, isOkFrame) === true;
  return frame.length === 5 && frame[0] === 43 && frame[1] === 79 && frame[2] === 75;
}

/** `read` applied to the value behind a frame's attributes (null when malformed). */
function readAfterAttributes<T>(frame: Buffer, read: (value: Buffer) => T): T | null {
  const value = afterAttributes(frame);
  return value === null || value === frame ? null : read(value);
}

/**
 * The integer of a ":n" frame, or null: for anything but an optional '-' and decimal digits (Number() would take
 * "", " 1", "0x10" or "1e3"), and for integers beyond the safe range, which a sum could not carry exactly.
 */
export function readInteger(frame: Buffer): number | null {
  if (frame[0] !== 58 /* : */) return frame[0] === 124 ? readAfterAttributes(frame, readInteger) : null;
  const eol = lineEnd(frame, 1);
  if (eol < 0) return null;
  let i = 1;
  const negative = frame[1] === 45; /* - */
  if (negative) i++;
  if (i === eol || eol - i > 16) return null; // no digits, or more than MAX_SAFE_INTEGER can have
  let n = 0;
  for (; i < eol; i++) {
    const d = frame[i] - 48;
    if (d < 0 || d > 9) return null;
    n = n * 10 + d;
  }
  if (n > Number.MAX_SAFE_INTEGER) return null;
  return negative ? 0 - n : n;
}

/** The body of a "$n" bulk frame (null for the nil bulk or a non-bulk frame). */
export function readBulk(frame: Buffer): Buffer | null {
  if (frame[0] !== 36 /* $ */ && frame[0] !== 61 /* = */)
    return frame[0] === 124 ? readAfterAttributes(frame, readBulk) : null;
  const eol = lineEnd(frame, 1);
  const n = parseLength(frame, 1, eol);
  if (n < 0) return null;
  return frame.subarray(eol + 2, eol + 2 + n);
}

/**
 * The value of a frame without the RESP3 attributes ('|' pairs annotating the value after them) in front of it: the
 * frame itself when it has none; null when malformed. Merges read values: an attribute (Redis 7 sends none
 * unasked) is metadata about the value, not part of it.
 */
export function afterAttributes(frame: Buffer): Buffer | null {
  let pos = 0;
  while (frame[pos] === 124 /* | */) {
    const eol = lineEnd(frame, pos + 1);
    const n = eol < 0 ? -2 : parseLength(frame, pos + 1, eol);
    if (n < 0) return null;
    pos = eol + 2;
    for (let i = 0; i < 2 * n; i++) {
      pos = elementEnd(frame, pos);
      if (pos < 0) return null;
    }
  }
  return pos === 0 ? frame : frame.subarray(pos);
}

/**
 * A push frame ('>'), possibly behind attributes: out of band in RESP3, never the reply to a command. Only called
 * for frames starting with '>' or '|' (the latter is rare).
 */
export function isPushFrame(frame: Buffer): boolean {
  const value = frame[0] === 62 ? frame : afterAttributes(frame);
  return value !== null && value[0] === 62; /* > */
}

/** The text of an error frame, without the leading '-' and trailing CRLF. */
export function errorText(frame: Buffer): string {
  if (frame[0] === 45) return frame.toString('utf8', 1, frame.length - 2);
  const b = readBulk(Buffer.concat([Buffer.from('$'), frame.subarray(1)]));
  return b === null ? '' : b.toString('utf8');
}

/** End offset (exclusive) of the one element starting at `pos`, or -1 if malformed or truncated. */
export function elementEnd(buf: Buffer, pos: number): number {
  let pending = 1;
  while (pending > 0) {
    if (pos >= buf.length) return -1;
    const type = buf[pos];
    const eol = lineEnd(buf, pos + 1);
    if (eol < 0) return -1;
    let next = eol + 2;
    switch (type) {
      case 36:
      case 61:
      case 33: {
        const n = parseLength(buf, pos + 1, eol);
        if (n === -2) return -1;
        if (n >= 0) next += n + 2;
        pending--;
        break;
      }
      case 42:
      case 126:
      case 62: {
        const n = parseLength(buf, pos + 1, eol);
        if (n === -2) return -1;
        pending += n > 0 ? n - 1 : -1;
        break;
      }
      case 37: {
        const n = parseLength(buf, pos + 1, eol);
        if (n === -2) return -1;
        pending += n > 0 ? 2 * n - 1 : -1;
        break;
      }
      case 124: {
        const n = parseLength(buf, pos + 1, eol);
        if (n < 0) return -1;
        pending += 2 * n;
        break;
      }
      default:
        pending--;
    }
    pos = next;
  }
  return pos <= buf.length ? pos : -1;
}

/**
 * The elements of a top-level RESP2/RESP3 array frame (`*`) as byte ranges instead of views: element i of the
 * frame is bytes [bounds[2i], bounds[2i+1]). Returns the element count, or -1 if `frame` is not a plain array of
 * complete elements (nil array, attributes first, truncated). For merges that copy elements out, where a view per
 * element would cost more than the copy.
 */
export function readArrayBounds(frame: Buffer, bounds: number[]): number {
  if (frame[0] !== 42 /* * */) return -1;
  const eol = lineEnd(frame, 1);
  if (eol < 0) return -1;
  const n = parseLength(frame, 1, eol);
  if (n < 0) return -1;
  let pos = eol + 2;
  for (let i = 0; i < n; i++) {
    const end = elementEnd(frame, pos);
    if (end < 0) return -1;
    bounds[2 * i] = pos;
    bounds[2 * i + 1] = end;
    pos = end;
  }
  return n;
}

/** The elements of a top-level array frame as raw frame views; null if not an array (or a nil array). */
export function readArrayElements(frame: Buffer): Buffer[] | null {
  if (frame[0] !== 42 /* * */) return frame[0] === 124 ? readAfterAttributes(frame, readArrayElements) : null;
  const eol = lineEnd(frame, 1);
  const n = parseLength(frame, 1, eol);
  if (n < 0) return null;
  const out = new Array<Buffer>(n);
  let pos = eol + 2;
  for (let i = 0; i < n; i++) {
    const end = elementEnd(frame, pos);
    if (end < 0) return null;
    out[i] = frame.subarray(pos, end);
    pos = end;
  }
  return out;
}
