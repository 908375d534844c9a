/**
 * Client reads without a new Buffer per read. By default Node allocates 64 KiB for every socket read, shrinks it
 * to what was read, wraps it in an ArrayBuffer and a Buffer, and pushes it through the Readable stream machinery to
 * 'data': at pipeline 1 that is one malloc/realloc/free, two objects and a dozen JS calls per request. Here every
 * plain-TCP client socket reads into one shared 64 KiB scratch buffer (libuv fills it and Node calls us before any
 * other read can happen), and the bytes read are copied at once into the unused rest of a shared pool, whose views
 * the parser keeps (pool memory is never written twice: a full pool is replaced, and lives on while views of it
 * do). A read of more than 16 KiB gets a buffer of its own instead (one allocation for a large payload, as before).
 * Copying a read of a few hundred bytes is far cheaper than what it replaces.
 *
 * Node offers this (`onread`) only for sockets it connects itself, not for accepted ones; the socket's own fields
 * for it are found by name on a probe socket. If a Node version lacks them, `readInto` answers false and the
 * session reads through 'data' events as before, so nothing breaks but the saving. A Unix socket client's handle
 * (a Pipe) is a libuv stream like TCP's and takes the same path (test: unix-socket.test.ts).
 */
import net from 'node:net';
import { viewOf } from '../core/byte-view.js';

const SCRATCH_BYTES = 64 * 1024;
const POOL_BYTES = 64 * 1024;
/** Reads larger than this get an ArrayBuffer of their own instead of pool space. */
const OWN_BUFFER_ABOVE = 16 * 1024;

interface ReadFields {
  buffer: symbol;
  callback: symbol;
}

/** Node's per-socket `onread` fields (kBuffer, kBufferCb), found once; null when this Node has none. */
let fields: ReadFields | null | undefined;

function readFields(): ReadFields | null {
  if (fields !== undefined) return fields;
  const probe = new net.Socket();
  const own = Object.getOwnPropertySymbols(probe);
  const named = (name: string): symbol | undefined => own.find((s) => s.description === name);
  const buffer = named('kBuffer');
  const callback = named('kBufferCb');
  // kBufferGen must exist (and stays null): with it set, Node would ask for a new buffer after every read.
  fields =
    buffer !== undefined && callback !== undefined && named('kBufferGen') !== undefined ? { buffer, callback } : null;
  probe.destroy();
  return fields;
}

const scratchMemory = new ArrayBuffer(SCRATCH_BYTES);
const scratch = new Uint8Array(scratchMemory);
let pool = new ArrayBuffer(POOL_BYTES);
let poolBytes = new Uint8Array(pool);
let poolUsed = 0;

/**
 * Views of the scratch buffer's first n bytes, made once per length (only lengths up to OWN_BUFFER_ABOVE are
 * copied into the pool): the source of each copy without a new object per read.
 */
const scratchViews: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(OWN_BUFFER_ABOVE + 1).fill(
  undefined,
);

function scratchView(n: number): Uint8Array {
  let view = scratchViews[n];
  if (view === undefined) view = scratchViews[n] = new Uint8Array(scratchMemory, 0, n);
  return view;
}

/** The `n` bytes just read into the scratch buffer, copied where they can stay. */
function keep(n: number): Buffer {
  if (n > OWN_BUFFER_ABOVE) {
    const own = new ArrayBuffer(n);
    new Uint8Array(own).set(n === SCRATCH_BYTES ? scratch : new Uint8Array(scratchMemory, 0, n));
    return viewOf(own, 0, n);
  }
  const read = scratchView(n);
  if (POOL_BYTES - poolUsed < n) {
    pool = new ArrayBuffer(POOL_BYTES);
    poolBytes = new Uint8Array(pool);
    poolUsed = 0;
  }
  const at = poolUsed;
  poolBytes.set(read, at);
  // 8-byte aligned starts, as Node's own pool keeps them.
  poolUsed = (at + n + 7) & ~7;
  return viewOf(pool, at, n);
}

/** Sockets that took the shared-buffer path since start (tests read it to know the path is in use). */
export const sharedReadStats = { sockets: 0 };

interface AcceptedHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
  reading?: boolean;
}

/**
 * Makes `socket` (an accepted plain-TCP socket, before its first read) hand each read to `onChunk` through the
 * shared scratch buffer. 'data' is then never emitted; pause()/resume() and 'end' work as before. False: not
 * possible here (TLS socket, other Node internals); use 'data'.
 */
export function readInto(socket: net.Socket, onChunk: (chunk: Buffer) => void): boolean {
  const f = readFields();
  const handle = (socket as unknown as { _handle: AcceptedHandle | null })._handle;
  if (f === null || handle === null || typeof handle.useUserBuffer !== 'function') return false;
  const s = socket as unknown as Record<symbol, unknown>;
  if (s[f.buffer] !== null || s[f.callback] !== null) return false; // already reading some other way
  s[f.buffer] = scratch;
  s[f.callback] = (n: number): boolean => {
    onChunk(keep(n));
    return true; // pausing is the session's, through socket.pause()
  };
  handle.useUserBuffer(scratch);
  sharedReadStats.sockets++;
  return true;
}
