/**
 * Incremental scanner for the backend side: finds where each top-level reply ends in a stream of RESP2/RESP3
 * bytes and hands the raw frame (a Buffer view) to its sink, without decoding values. Nested aggregates are
 * tracked with a single "elements still needed" counter, so there is no recursion and no depth limit to blow.
 * A reply split across chunks resumes where scanning stopped; bytes are gathered in a doubling accumulator and a
 * known bulk length is awaited without re-scanning. Bytes that are not RESP put the scanner in a failed state:
 * the connection must be reset, since the stream cannot be trusted any more.
 */

export interface ReplySink {
  onReply(frame: Buffer): void;
  onReplyProtocolError(detail: string): void;
}

const CR = 13;
const LF = 10;
const MIN_ACCUMULATOR = 4096;
const EMPTY = Buffer.alloc(0);

export class ReplyScanner {
  private readonly sink: ReplySink;
  private buf: Buffer = EMPTY;
  private len = 0;
  private accumulating = false;
  private frameStart = 0;
  private pos = 0;
  /** Elements still needed to finish the current top-level frame (0 = between frames). */
  private pending = 0;
  private need = 0;
  private failed = false;

  constructor(sink: ReplySink) {
    this.sink = sink;
  }

  /** Forgets any partial frame (after a connection reset). */
  reset(): void {
    this.buf = EMPTY;
    this.len = 0;
    this.accumulating = false;
    this.frameStart = 0;
    this.pos = 0;
    this.pending = 0;
    this.need = 0;
    this.failed = false;
  }

  get broken(): boolean {
    return this.failed;
  }

  feed(chunk: Buffer): void {
    if (this.failed || chunk.length === 0) return;
    if (!this.accumulating) {
      this.buf = chunk;
      this.len = chunk.length;
      this.frameStart = 0;
      this.pos = 0;
    } else {
      const needed = this.len + chunk.length;
      if (needed > this.buf.length) {
        const grown = Buffer.allocUnsafe(Math.max(needed, this.buf.length * 2, this.need));
        this.buf.copy(grown, 0, 0, this.len);
        this.buf = grown;
      }
      chunk.copy(this.buf, this.len);
      this.len = needed;
      if (this.len < this.need) return;
    }
    this.scan();
  }

  private scan(): void {
    const buf = this.buf;
    const len = this.len;
    let pos = this.pos;
    let pending = this.pending;
    while (pos < len) {
      if (pending === 0) {
        this.frameStart = pos;
        pending = 1;
      }
      // One element: a type byte and a line.
      const type = buf[pos];
      const eol = buf.indexOf(CR, pos + 1);
      if (eol < 0 || eol + 1 >= len) break;
      if (buf[eol + 1] !== LF) return this.fail('line does not end with CRLF');
      let next = eol + 2;
      switch (type) {
        case 43: // + simple string
        case 45: // - error
        case 58: // : integer
        case 95: // _ null
        case 44: // , double
        case 35: // # boolean
        case 40: // ( big number
          pending--;
          break;
        case 36: // $ bulk string
        case 61: // = verbatim string
        case 33: { // ! blob error
          const n = parseLength(buf, pos + 1, eol);
          if (n === -2) return this.fail('invalid bulk length');
          if (n >= 0) {
            const end = next + n;
            if (end + 2 > len) {
              this.need = end + 2;
              this.pos = pos;
              this.pending = pending;
              this.keepTail();
              return;
            }
            if (buf[end] !== CR || buf[end + 1] !== LF) return this.fail('bulk data does not end with CRLF');
            next = end + 2;
          }
          pending--;
          break;
        }
        case 42: // * array
        case 126: // ~ set
        case 62: { // > push
          const n = parseLength(buf, pos + 1, eol);
          if (n === -2) return this.fail('invalid multibulk length');
          pending += n > 0 ? n - 1 : -1;
          break;
        }
        case 37: { // % map
          const n = parseLength(buf, pos + 1, eol);
          if (n === -2) return this.fail('invalid map length');
          pending += n > 0 ? 2 * n - 1 : -1;
          break;
        }
        case 124: { // | attribute: its pairs, then the value it annotates
          const n = parseLength(buf, pos + 1, eol);
          if (n < 0) return this.fail('invalid attribute length');
          pending += 2 * n;
          break;
        }
        default:
          return this.fail(`unexpected byte 0x${type.toString(16)} at the start of a reply`);
      }
      pos = next;
      if (pending === 0) {
        this.need = 0;
        this.sink.onReply(buf.subarray(this.frameStart, pos));
        if (this.failed || this.buf !== buf) return; // the sink reset us
      }
    }
    this.pos = pos;
    this.pending = pending;
    if (pending === 0 && pos >= len) {
      this.accumulating = false;
      this.buf = EMPTY;
      this.len = 0;
      this.pos = 0;
      this.frameStart = 0;
      return;
    }
    this.keepTail();
  }

  private keepTail(): void {
    if (this.accumulating && this.frameStart === 0) return;
    const start = this.pending === 0 ? this.pos : this.frameStart;
    const tail = this.len - start;
    const acc = Buffer.allocUnsafe(Math.max(MIN_ACCUMULATOR, tail * 2, this.need - start));
    this.buf.copy(acc, 0, start, this.len);
    this.buf = acc;
    this.len = tail;
    this.pos -= start;
    if (this.need > 0) this.need -= start;
    this.frameStart = 0;
    this.accumulating = true;
  }

  private fail(detail: string): void {
    this.failed = true;
    this.buf = EMPTY;
    this.len = 0;
    this.accumulating = false;
    this.sink.onReplyProtocolError(detail);
  }
}

/** Parses a signed decimal length in buf[start, end); -1 is null; returns -2 when not a valid length. */
export function parseLength(buf: Buffer, start: number, end: number): number {
  if (start >= end || end - start > 20) return -2;
  if (buf[start] === 45 /* - */) {
    return end - start === 2 && buf[start + 1] === 49 /* 1 */ ? -1 : -2;
  }
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i] - 48;
    if (c < 0 || c > 9) return -2;
    n = n * 10 + c;
  }
  return n;
}
