/**
 * Incremental scanner for the backend side: finds where each top-level reply ends in a stream of RESP2/RESP3
 * bytes and hands the raw frame (a Buffer view) to its sink, without decoding values. Nested aggregates are
 * tracked with a single "elements still needed" counter, so there is no recursion and no depth limit to blow.
 * A reply split across chunks resumes where scanning stopped; bytes are gathered in a doubling accumulator and a
 * known bulk length is awaited without re-scanning. Bytes that are not RESP put the scanner in a failed state:
 * the connection must be reset, since the stream cannot be trusted any more. A bad type byte or a length line
 * that cannot be a length is reported as soon as it is seen, not after waiting for a line end that may never come;
 * lengths no Buffer could hold are protocol errors, never exceptions.
 */
import { constants as bufferConstants } from 'node:buffer';
import { viewOf } from '../core/byte-view.js';

export interface ReplySink {
  onReply(frame: Buffer): void;
  onReplyProtocolError(detail: string): void;
}

const CR = 13;
const LF = 10;
const MIN_ACCUMULATOR = 4096;
const MAX_RESERVE = 1 << 20;
const EMPTY = Buffer.alloc(0);
/** Largest reply we can hold: one Buffer. */
const MAX_FRAME = bufferConstants.MAX_LENGTH;
/** Longest length line parseLength accepts (digits and sign). */
const MAX_LENGTH_CHARS = 20;

/** What each type byte introduces. */
const LINE = 1; // a value on its line: + - : _ , # (
const BULK = 2; // a length line, then that many bytes: $ = !
const AGGREGATE = 3; // n elements: * ~ >
const MAP = 4; // n pairs: %
const ATTRIBUTE = 5; // n pairs, then the value they annotate: |
const KIND = new Uint8Array(256);
for (const c of '+-:_,#(') KIND[c.charCodeAt(0)] = LINE;
for (const c of '$=!') KIND[c.charCodeAt(0)] = BULK;
for (const c of '*~>') KIND[c.charCodeAt(0)] = AGGREGATE;
KIND[37 /* % */] = MAP;
KIND[124 /* | */] = ATTRIBUTE;
const LENGTH_ERROR = [
  '',
  '',
  'invalid bulk length',
  'invalid multibulk length',
  'invalid map length',
  'invalid attribute length',
];

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
    let rest = chunk;
    // A reply spans chunks: copy into the accumulator only what that reply still needs (the rest of a bulk
    // whose length is known, else one line at a time). Replies always end at such a boundary, so once the
    // pending reply is complete the scanner is back to reading the chunk in place: a reply split across
    // chunks costs copying that reply, not the chunks after it.
    while (this.accumulating) {
      const lf = this.need > this.len ? -1 : rest.indexOf(LF);
      const take = this.need > this.len ? Math.min(rest.length, this.need - this.len) : lf < 0 ? rest.length : lf + 1;
      if (!this.append(rest.subarray(0, take))) return;
      rest = rest.subarray(take);
      if (this.len < this.need) return;
      this.scan();
      if (this.failed || rest.length === 0) return;
    }
    this.buf = rest;
    this.len = rest.length;
    this.frameStart = 0;
    this.pos = 0;
    this.scan();
  }

  /** Appends bytes to the accumulator (growing it by doubling); false if the reply cannot fit a Buffer. */
  private append(bytes: Buffer): boolean {
    const needed = this.len + bytes.length;
    if (needed > this.buf.length) {
      if (needed > MAX_FRAME) {
        this.fail('reply larger than a Buffer can hold');
        return false;
      }
      const grown = Buffer.allocUnsafe(Math.min(MAX_FRAME, Math.max(needed, this.buf.length * 2)));
      this.buf.copy(grown, 0, 0, this.len);
      this.buf = grown;
    }
    bytes.copy(this.buf, this.len);
    this.len = needed;
    return true;
  }

  private scan(): void {
    const owner = this.buf;
    // Only the valid bytes: a CR search must not run on into the accumulator's spare capacity (garbage, and
    // possibly megabytes of it: scanning it on every chunk would make a large reply cost quadratic time).
    const buf = this.len === owner.length ? owner : owner.subarray(0, this.len);
    const memory = owner.buffer; // replies are views of it, made directly (core/byte-view.ts)
    const at = owner.byteOffset;
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
      const kind = KIND[type];
      if (kind === 0) return this.fail(`unexpected byte 0x${type.toString(16)} at the start of a reply`);
      // Lines are short (a length, or a status like +OK): a plain loop beats a native indexOf call here.
      let eol = pos + 1;
      while (eol < len && buf[eol] !== CR) eol++;
      if (eol + 1 >= len) {
        // A length line already too long to be a length will never become one.
        if (kind !== LINE && eol - pos - 1 > MAX_LENGTH_CHARS) return this.fail(LENGTH_ERROR[kind]);
        break;
      }
      if (buf[eol + 1] !== LF) return this.fail('line does not end with CRLF');
      let next = eol + 2;
      if (kind === LINE) {
        pending--;
      } else {
        const n = parseLength(buf, pos + 1, eol);
        if (n === -2 || n > MAX_FRAME || (n === -1 && kind === ATTRIBUTE)) return this.fail(LENGTH_ERROR[kind]);
        if (kind === BULK) {
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
        } else if (kind === AGGREGATE) {
          pending += n > 0 ? n - 1 : -1;
        } else if (kind === MAP) {
          pending += n > 0 ? 2 * n - 1 : -1;
        } else {
          // attribute: its pairs, then the value it annotates (which `pending` already counts)
          pending += 2 * n;
        }
      }
      pos = next;
      if (pending === 0) {
        this.need = 0;
        this.sink.onReply(viewOf(memory, at + this.frameStart, pos - this.frameStart));
        if (this.failed || this.buf !== owner) return; // the sink reset us
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
    // Reserve for the announced bulk only up to MAX_RESERVE: a length is a promise, not bytes; beyond that the
    // accumulator grows by doubling as the bytes actually arrive.
    const acc = Buffer.allocUnsafe(
      Math.min(MAX_FRAME, Math.max(MIN_ACCUMULATOR, tail * 2, Math.min(this.need - start, MAX_RESERVE))),
    );
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
