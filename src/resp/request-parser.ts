/**
 * Incremental parser for the client side of the connection: RESP2 multibulk requests and inline commands.
 * It turns socket chunks into commands, each delivered as the client's own frame bytes plus one Buffer view per
 * argument, both pointing into the received memory (no copies, no strings). A command split across chunks is
 * resumed where parsing stopped; its bytes are gathered in an accumulation buffer that grows by doubling, so a
 * large command costs linear copying, and a known bulk length is waited for without re-scanning.
 * Untrusted input is checked here, at the edge: argument count, bulk length and inline length limits, and lengths
 * written the way Redis itself accepts them (string2ll: no sign but '-', no leading zeros), because a multibulk
 * frame is forwarded to a backend byte for byte and must not be one that Redis rejects. Memory follows the bytes
 * that actually arrived: an announced bulk length is trusted for waiting, not for reserving memory up front
 * beyond MAX_RESERVE (a client announcing 512 MB and sending nothing costs little). On a protocol error the parser
 * reports a Redis-worded error once and stops: the stream cannot be resynchronised.
 * Inline commands are re-encoded as multibulk frames, so everything downstream sees one format.
 */
import { constants as bufferConstants } from 'node:buffer';
import { viewOf } from '../core/byte-view.js';

export interface RequestSink {
  /**
   * One complete command: frame = exact multibulk bytes; args[0] = command name. Views stay valid forever. For a
   * command of more than LAZY_ARGS_ABOVE arguments only the first EAGER_ARGS views are made (args has its full
   * length, later entries are holes) and `lazy` holds every argument's [start, end) offsets in the frame: a
   * million views cost a million objects and seconds of garbage collection; core/request.ts argAt makes them on
   * demand and materializeArgs all at once.
   */
  onCommand(frame: Buffer, args: Buffer[], lazy: Uint32Array | null): void;
  /** The stream is malformed; `reply` is an encoded -ERR line. No further commands will be delivered. */
  onProtocolError(reply: Buffer): void;
}

export interface RequestLimits {
  maxBulkBytes: number;
  maxArgs: number;
  maxInlineBytes: number;
}

const CR = 13;
const LF = 10;
const STAR = 42;
const DOLLAR = 36;
/** Longest header line accepted ("*" or "$" + digits); Redis uses the inline limit here too. */
const MAX_HEADER_LINE = 64;
const MIN_ACCUMULATOR = 4096;
/** Most memory reserved ahead of the bytes that fill it, when a bulk length announces a large body. */
const MAX_RESERVE = 1024 * 1024;
/** Memory of one entry of argOffsets (a small integer in a JS array: one 8-byte slot on 64-bit). */
const OFFSET_BYTES = 8;
/**
 * Most entries of argOffsets kept from one command to the next (512 arguments, 8 KiB): a larger command's array is
 * dropped once the command is delivered, so a connection that sent one MGET of 4,000 keys does not hold (and have
 * counted in heldBytes) 64 KB of offsets for the rest of its life.
 */
const REUSED_OFFSETS_MAX = 1024;
/** Commands with more arguments than this get lazily made argument views (RequestSink.onCommand). */
export const LAZY_ARGS_ABOVE = 4096;
/** The arguments made eagerly for such a command (name, subcommand, first keys: what the slow log shows). */
export const EAGER_ARGS = 64;
/** A command spanning chunks with more arguments than this is accumulated a chunk at a time, not a line. */
const WHOLE_CHUNKS_ABOVE_ARGS = 64;
/**
 * Largest command we can hold: one Buffer, and offsets into it that fit the lazy path's Uint32Array (an end offset
 * of 2^32 would wrap to 0). Node 20's Buffers stop at 2^32 bytes; later Nodes allow more, which would wrap.
 */
const MAX_FRAME = Math.min(bufferConstants.MAX_LENGTH, 2 ** 32 - 1);
/** MAX_FRAME, for tests (the parser reads its own module-local constant). */
export const MAX_COMMAND_BYTES = MAX_FRAME;

function protocolError(detail: string): Buffer {
  return Buffer.from(`-ERR Protocol error: ${detail}\r\n`, 'latin1');
}

export class RequestParser {
  private readonly limits: RequestLimits;
  private readonly sink: RequestSink;

  /** Bytes being parsed: the current chunk, or the accumulator while a command spans chunks. */
  private buf: Buffer = Buffer.alloc(0);
  /** Valid bytes in `buf` (the accumulator has spare capacity beyond). */
  private len = 0;
  /** True when `buf` is our accumulator (owned, growable), false when it is a socket chunk. */
  private accumulating = false;
  /** Offset where the current, unfinished command starts. */
  private cmdStart = 0;
  /** Offset of the next byte to look at. */
  private pos = 0;
  /** Arguments announced by the current multibulk header, -1 before the header is read. */
  private argc = -1;
  /** Length of the bulk whose header was read and whose data is awaited, -1 when a header is expected. */
  private bulkLen = -1;
  /** `buf`'s memory and its offset in it, taken once per buffer (views are made from them: core/byte-view.ts). */
  private memory: ArrayBufferLike = EMPTY.buffer;
  private memoryOffset = EMPTY.byteOffset;
  /**
   * [start, end) offsets of the arguments read so far for the current command: the first `offsetCount` entries.
   * Reused from command to command (setting an array's length is a runtime call, and regrowing it another).
   */
  private argOffsets: number[] = [];
  private offsetCount = 0;
  /** Do not parse again until `len` reaches this (a bulk body in flight). */
  private need = 0;
  private failed = false;
  /** Paused by the session: parse nothing more until resume(). */
  private stopped = false;

  constructor(limits: RequestLimits, sink: RequestSink) {
    this.limits = limits;
    this.sink = sink;
  }

  private dropOffsets(): void {
    this.argOffsets = [];
    this.offsetCount = 0;
  }

  private useBuf(buf: Buffer): void {
    this.buf = buf;
    this.memory = buf.buffer;
    this.memoryOffset = buf.byteOffset;
  }

  /** True once a protocol error has been reported; later input is ignored. */
  get broken(): boolean {
    return this.failed;
  }

  /** Bytes held for an unfinished command (for memory accounting and tests). */
  get buffered(): number {
    return this.accumulating ? this.len - this.cmdStart : 0;
  }

  /**
   * Bytes of memory the parser holds for an unfinished command, 0 when it holds none: its accumulator, and the
   * offsets of the arguments read so far (two per argument in a JS array, 8 bytes each: an argument of "$0\r\n\r\n" is
   * 6 bytes of input and 16 of offsets, so a command of a million arguments held half-sent costs more in offsets
   * than in bytes, and limits.max_buffered_bytes must see them). The offsets array is counted at its length, which
   * a command of up to REUSED_OFFSETS_MAX entries left behind can exceed the current command's by at most that.
   */
  get heldBytes(): number {
    return this.accumulating ? this.buf.length + this.argOffsets.length * OFFSET_BYTES : 0;
  }

  /** It holds input it has not parsed yet (an unfinished command, or commands held while paused). */
  get holding(): boolean {
    return this.accumulating;
  }

  /** The client is in the middle of a command: bytes of it arrived, the rest has not (not paused, not failed). */
  get partial(): boolean {
    return this.accumulating && !this.stopped && !this.failed;
  }

  /** Stops parsing for good and drops what is held (the session is closing); no error is reported. */
  abandon(): void {
    this.failed = true;
    this.accumulating = false;
    this.useBuf(EMPTY);
    this.len = 0;
    this.dropOffsets();
  }

  feed(chunk: Buffer): void {
    if (this.failed || chunk.length === 0) return;
    let rest = chunk;
    // A command spans chunks: copy into the accumulator only what that command still needs (the rest of a bulk
    // whose length is known, else one line at a time). Commands end at such a boundary, so once it is complete
    // parsing continues in the chunk itself: a split command costs copying that command, not what follows.
    while (this.accumulating && !this.stopped) {
      // A command of many arguments takes whole chunks instead (line by line would cost a copy, a view and a
      // parse call per argument: seconds for a million keys); what follows it is then parsed in the accumulator.
      const take =
        this.need > this.len
          ? Math.min(rest.length, this.need - this.len)
          : this.argc > WHOLE_CHUNKS_ABOVE_ARGS
            ? rest.length
            : lineLength(rest);
      this.append(rest.subarray(0, take));
      if (this.failed) return;
      rest = rest.subarray(take);
      if (this.len < this.need) return;
      this.parse();
      if (this.failed || rest.length === 0) return;
    }
    if (this.stopped) {
      // Paused by the session (backpressure): keep the bytes for resume().
      if (!this.accumulating) this.startAccumulator(rest);
      else this.append(rest);
      return;
    }
    this.useBuf(rest);
    this.len = rest.length;
    this.cmdStart = 0;
    this.pos = 0;
    this.parse();
  }

  /**
   * Stops delivering commands after the current one (the session has enough in flight); bytes already received
   * are kept. resume() delivers them. This makes the session's in-flight limit exact, whatever the chunk size.
   */
  pause(): void {
    this.stopped = true;
  }

  resume(): void {
    if (!this.stopped || this.failed) return;
    this.stopped = false;
    if (this.accumulating && this.pos < this.len) this.parse();
  }

  get paused(): boolean {
    return this.stopped;
  }

  private startAccumulator(bytes: Buffer): void {
    const acc = Buffer.allocUnsafe(Math.max(MIN_ACCUMULATOR, bytes.length * 2));
    bytes.copy(acc, 0);
    this.useBuf(acc);
    this.len = bytes.length;
    this.cmdStart = 0;
    this.pos = 0;
    this.need = 0;
    this.accumulating = true;
  }

  private append(chunk: Buffer): void {
    const needed = this.len + chunk.length;
    if (needed > this.buf.length) {
      if (needed > MAX_FRAME) {
        this.fail(protocolError('too big request'));
        return;
      }
      // Doubling keeps total copying linear; a known end (`need`) caps it so a big bulk is not over-allocated.
      let size = Math.max(needed, this.buf.length * 2);
      if (this.need > needed && size > this.need) size = this.need;
      const grown = Buffer.allocUnsafe(Math.min(size, MAX_FRAME));
      this.buf.copy(grown, 0, 0, this.len);
      this.useBuf(grown);
    }
    chunk.copy(this.buf, this.len);
    this.len = needed;
  }

  private parse(): void {
    while (this.pos < this.len) {
      const done = this.argc >= 0 || this.buf[this.cmdStart] === STAR ? this.parseMultibulk() : this.parseInline();
      if (this.failed) return;
      if (!done || (this.stopped && this.pos < this.len)) {
        this.keepTail();
        return;
      }
    }
    // Everything consumed: the next chunk can be parsed in place.
    this.accumulating = false;
    this.useBuf(EMPTY);
    this.len = 0;
    this.cmdStart = 0;
    this.pos = 0;
    this.need = 0;
  }

  /** Moves the unfinished command into a fresh accumulator (views already handed out keep the old memory). */
  private keepTail(): void {
    const tail = this.len - this.cmdStart;
    if (this.accumulating && this.cmdStart === 0) return; // accumulator holds only this command: keep growing it
    const acc = Buffer.allocUnsafe(
      Math.max(MIN_ACCUMULATOR, tail * 2, Math.min(this.need - this.cmdStart, MAX_RESERVE)),
    );
    this.buf.copy(acc, 0, this.cmdStart, this.len);
    const shift = this.cmdStart;
    this.useBuf(acc);
    this.len = tail;
    this.pos -= shift;
    if (this.need > 0) this.need -= shift;
    for (let i = 0; i < this.offsetCount; i++) this.argOffsets[i] -= shift;
    this.cmdStart = 0;
    this.accumulating = true;
  }

  /**
   * Reads the header line at `pos` ("*n" or "$n"); returns its integer, null if the line is incomplete, or
   * undefined after reporting a protocol error. The number must be what Redis's string2ll accepts: an optional
   * '-', then "0" alone or digits not starting with 0, within the safe-integer range.
   */
  private readHeaderInt(what: 'multibulk' | 'bulk'): number | null | undefined {
    const buf = this.buf;
    const start = this.pos + 1;
    const limit = Math.min(this.len, start + MAX_HEADER_LINE);
    let i = start;
    let negative = false;
    let value = 0;
    let digits = 0;
    let leadingZero = false;
    if (i < limit && buf[i] === 45 /* - */) {
      negative = true;
      i++;
    }
    for (; i < limit; i++) {
      const c = buf[i];
      if (c >= 48 && c <= 57) {
        if (digits === 0) leadingZero = c === 48;
        value = value * 10 + (c - 48);
        digits++;
        continue;
      }
      if (c === CR) {
        if (i + 1 >= this.len) return null;
        if (
          buf[i + 1] !== LF ||
          digits === 0 ||
          (leadingZero && (digits > 1 || negative)) ||
          value > Number.MAX_SAFE_INTEGER
        )
          break;
        this.pos = i + 2;
        return negative ? -value : value;
      }
      break;
    }
    if (i >= this.len && i < start + MAX_HEADER_LINE) return null; // header still arriving
    this.fail(
      protocolError(
        i >= start + MAX_HEADER_LINE
          ? `too big ${what === 'multibulk' ? 'mbulk' : 'bulk'} count string`
          : `invalid ${what} length`,
      ),
    );
    return undefined;
  }

  /** Parses (or resumes) one multibulk command. Returns true when it completed or was skipped. */
  private parseMultibulk(): boolean {
    const buf = this.buf;
    if (this.argc < 0) {
      const argc = this.readHeaderInt('multibulk');
      if (argc === null || argc === undefined) return false;
      if (argc > this.limits.maxArgs || argc > 1024 * 1024 * 1024) {
        this.fail(
          protocolError(`invalid multibulk length (${argc} arguments exceed limits.max_args ${this.limits.maxArgs})`),
        );
        return false;
      }
      if (argc <= 0) {
        // Redis ignores "*0" and "*-1"
        this.cmdStart = this.pos;
        return true;
      }
      this.argc = argc;
      this.offsetCount = 0;
    }
    while (this.offsetCount < this.argc * 2) {
      if (this.bulkLen < 0) {
        if (this.pos >= this.len) return false;
        if (buf[this.pos] !== DOLLAR) {
          this.fail(
            protocolError(`expected '$', got '${String.fromCharCode(buf[this.pos]).replace(/[^\x20-\x7e]/, '?')}'`),
          );
          return false;
        }
        const n = this.readHeaderInt('bulk');
        if (n === null || n === undefined) return false;
        if (n < 0 || n > this.limits.maxBulkBytes) {
          this.fail(
            protocolError(
              n < 0
                ? 'invalid bulk length'
                : `invalid bulk length (${n} bytes exceed limits.max_bulk_bytes ${this.limits.maxBulkBytes})`,
            ),
          );
          return false;
        }
        if (this.pos + n + 2 - this.cmdStart > MAX_FRAME) {
          this.fail(protocolError(`invalid bulk length (${n} bytes: the command would exceed ${MAX_FRAME} bytes)`));
          return false;
        }
        this.bulkLen = n;
      }
      const end = this.pos + this.bulkLen;
      if (end + 2 > this.len) {
        this.need = end + 2;
        return false;
      }
      if (buf[end] !== CR || buf[end + 1] !== LF) {
        this.fail(protocolError('bulk data does not end with CRLF'));
        return false;
      }
      const at = this.offsetCount;
      this.argOffsets[at] = this.pos;
      this.argOffsets[at + 1] = end;
      this.offsetCount = at + 2;
      this.pos = end + 2;
      this.bulkLen = -1;
    }
    const offsets = this.argOffsets;
    const argc = this.argc;
    const args = new Array<Buffer>(argc);
    const memory = this.memory;
    const at = this.memoryOffset;
    let lazy: Uint32Array | null = null;
    if (argc <= LAZY_ARGS_ABOVE) {
      for (let i = 0; i < argc; i++) args[i] = viewOf(memory, at + offsets[2 * i], offsets[2 * i + 1] - offsets[2 * i]);
      if (offsets.length > REUSED_OFFSETS_MAX) this.dropOffsets();
    } else {
      for (let i = 0; i < EAGER_ARGS; i++)
        args[i] = viewOf(memory, at + offsets[2 * i], offsets[2 * i + 1] - offsets[2 * i]);
      // Offsets from the frame's start: a frame is at most one Buffer (< 2^32 bytes), so they fit 32 bits.
      lazy = new Uint32Array(2 * argc);
      const base = this.cmdStart;
      for (let j = 0; j < 2 * argc; j++) lazy[j] = offsets[j] - base;
      this.dropOffsets(); // a client's one huge command does not keep its offsets' memory for good
    }
    const frame = viewOf(memory, at + this.cmdStart, this.pos - this.cmdStart);
    this.argc = -1;
    this.need = 0;
    this.cmdStart = this.pos;
    this.sink.onCommand(frame, args, lazy);
    return true;
  }

  /** Parses one inline command (a text line), re-encoded as multibulk. */
  private parseInline(): boolean {
    const buf = this.buf;
    // Search only the valid bytes: the accumulator's spare capacity holds garbage and may be large.
    const eol = this.len === buf.length ? buf.indexOf(LF, this.pos) : buf.subarray(0, this.len).indexOf(LF, this.pos);
    if (eol < 0) {
      // The line so far, less a CR that may turn out to be the CR of its CRLF: the same verdict whatever the split.
      const lineSoFar = this.len - this.cmdStart - (buf[this.len - 1] === CR ? 1 : 0);
      if (lineSoFar > this.limits.maxInlineBytes) this.fail(protocolError('too big inline request'));
      this.pos = this.len;
      return false;
    }
    const lineEnd = eol > this.cmdStart && buf[eol - 1] === CR ? eol - 1 : eol;
    if (lineEnd - this.cmdStart > this.limits.maxInlineBytes) {
      this.fail(protocolError('too big inline request'));
      return false;
    }
    const words = splitInline(buf.subarray(this.cmdStart, lineEnd));
    this.pos = eol + 1;
    this.cmdStart = this.pos;
    if (words === null) {
      this.fail(protocolError('unbalanced quotes in request'));
      return false;
    }
    if (words.length === 0) return true; // empty line: ignored, as Redis does
    if (words.length > this.limits.maxArgs) {
      this.fail(protocolError('invalid multibulk length'));
      return false;
    }
    const frame = encodeMultibulk(words);
    // Views into the re-encoded frame, so downstream code can forward either the frame or the arguments.
    const args = new Array<Buffer>(words.length);
    let p = 0;
    for (let i = 0; i < words.length; i++) {
      p = frame.indexOf(LF, p) + 1; // skip "*n" or "$len" line
      if (i === 0) p = frame.indexOf(LF, p) + 1;
      args[i] = frame.subarray(p, p + words[i].length);
      p += words[i].length + 2;
    }
    this.sink.onCommand(frame, args, null);
    return true;
  }

  private fail(reply: Buffer): void {
    this.failed = true;
    this.accumulating = false;
    this.useBuf(EMPTY);
    this.len = 0;
    this.dropOffsets();
    this.sink.onProtocolError(reply);
  }
}

const EMPTY = Buffer.alloc(0);

/** Encodes arguments as one multibulk frame. */
export function encodeMultibulk(args: Buffer[]): Buffer {
  let size = 1 + digitsOf(args.length) + 2;
  for (const a of args) size += 1 + digitsOf(a.length) + 2 + a.length + 2;
  const out = Buffer.allocUnsafe(size);
  let p = out.write(`*${args.length}\r\n`, 0, 'latin1');
  for (const a of args) {
    p += out.write(`$${a.length}\r\n`, p, 'latin1');
    p += a.copy(out, p);
    out[p++] = CR;
    out[p++] = LF;
  }
  return out;
}

/** Bytes up to and including the first LF (the whole buffer when it has none). */
function lineLength(b: Buffer): number {
  const lf = b.indexOf(LF);
  return lf < 0 ? b.length : lf + 1;
}

function digitsOf(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : String(n).length;
}

/**
 * Splits an inline command line like Redis's sdssplitargs: whitespace (isspace) separates words, but an unquoted
 * word ends only at space, tab, CR or LF; "double quotes" support \n \r \t \b \a \\ \" and \xHH escapes;
 * 'single quotes' support \'; a closing quote must be followed by whitespace or the end. Returns null on unbalanced
 * quotes.
 */
export function splitInline(line: Buffer): Buffer[] | null {
  const words: Buffer[] = [];
  let i = 0;
  const n = line.length;
  const isSpace = (c: number) => c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;
  while (true) {
    while (i < n && isSpace(line[i])) i++;
    if (i >= n) return words;
    const bytes: number[] = [];
    let inDq = false;
    let inSq = false;
    let done = false;
    while (!done) {
      if (inDq) {
        if (i >= n) return null;
        const c = line[i];
        if (c === 92 /* \ */ && i + 3 < n && line[i + 1] === 120 /* x */ && isHex(line[i + 2]) && isHex(line[i + 3])) {
          bytes.push(parseInt(String.fromCharCode(line[i + 2], line[i + 3]), 16));
          i += 3;
        } else if (c === 92 && i + 1 < n) {
          i++;
          const e = line[i];
          bytes.push(e === 110 ? 10 : e === 114 ? 13 : e === 116 ? 9 : e === 98 ? 8 : e === 97 ? 7 : e);
        } else if (c === 34 /* " */) {
          if (i + 1 < n && !isSpace(line[i + 1])) return null;
          done = true;
        } else {
          bytes.push(c);
        }
      } else if (inSq) {
        if (i >= n) return null;
        const c = line[i];
        if (c === 92 && i + 1 < n && line[i + 1] === 39) {
          i++;
          bytes.push(39);
        } else if (c === 39) {
          if (i + 1 < n && !isSpace(line[i + 1])) return null;
          done = true;
        } else bytes.push(c);
      } else if (i >= n) {
        done = true;
      } else {
        const c = line[i];
        if (c === 32 || c === 10 || c === 13 || c === 9) done = true;
        else if (c === 34) inDq = true;
        else if (c === 39) inSq = true;
        else bytes.push(c);
      }
      if (i < n) i++;
    }
    words.push(Buffer.from(bytes));
  }
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}
