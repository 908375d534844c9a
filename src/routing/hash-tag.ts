/**
 * Hash tags: the part of a key that decides where it lives. Redis Cluster's rule (also twemproxy's `hash_tag`):
 * find the first open character; if a close character follows it with at least one byte between them, only those
 * bytes are hashed; otherwise (no open, no close after it, or an empty tag "{}") the whole key is. Works on byte
 * ranges of a Buffer so routing never builds strings.
 */

/** Result holder reused by callers that want both ends without allocating. */
export interface TagRange {
  start: number;
  end: number;
}

/**
 * Narrows key = buf[start, end) to its hash tag in place (writes out.start/out.end).
 * `open` and `close` are byte values (e.g. 0x7b '{' and 0x7d '}'); open < 0 disables tags.
 */
export function hashTagRange(
  buf: Buffer,
  start: number,
  end: number,
  open: number,
  close: number,
  out: TagRange,
): void {
  out.start = start;
  out.end = end;
  if (open < 0) return;
  const o = buf.indexOf(open, start);
  if (o < 0 || o >= end) return;
  const c = buf.indexOf(close, o + 1);
  if (c < 0 || c >= end || c === o + 1) return;
  out.start = o + 1;
  out.end = c;
}

/** Parses a configured hash tag ("{}" or null) into byte values; [-1, -1] when disabled. */
export function hashTagBytes(tag: string | null): [number, number] {
  if (tag === null || tag.length !== 2) return [-1, -1];
  return [tag.charCodeAt(0), tag.charCodeAt(1)];
}
