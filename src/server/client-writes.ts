/**
 * Client writes straight to the socket's handle, without Node's Writable machinery. At pipeline 1 every reply is a
 * write of its own, and `socket.write` wraps each in a new WriteWrap, Writable bookkeeping, an after-write object
 * and a `process.nextTick` (about 290 bytes of garbage and a few hundred instructions per reply). A DirectWriter
 * hands the bytes to the handle's `writeBuffer` itself, as Node's `writeGeneric` does, with one request object that
 * is reused while writes complete at once (the kernel took every byte: nothing was queued, so nothing holds it).
 *
 * When the kernel does not take everything, libuv queues the rest and completes the write later: that request
 * object then belongs to the write (a new one is made for the next), the bytes stay referenced by it until it
 * completes, `pending` counts them, and the owner hears `directWriteDone` when the write is over (the same moment
 * Node would emit 'drain'). libuv writes a stream's queued writes in order, and a write is only tried at once when
 * nothing is queued, so direct writes and any `socket.write` (endings, TLS-free fallbacks) keep their order; still,
 * while Node's own Writable holds data not yet handed to the handle, a DirectWriter writes through it too.
 *
 * It needs `process.binding('stream_wrap')` (WriteWrap and the stream state array) and a plain socket (TCP, or a
 * Unix socket, whose Pipe handle has the same writeBuffer); without them `DirectWriter.for` returns null and the
 * session writes with `socket.write` as before.
 */
import type net from 'node:net';

/** What the handle's writeBuffer is given: the fields Node's own createWriteWrap sets, plus our owner. */
interface WriteReq {
  handle: StreamHandle | null;
  oncomplete: (this: WriteReq, status: number) => void;
  async: boolean;
  bytes: number;
  buffer: Buffer | null;
  callback: null;
  writer: DirectWriter | null;
}

interface StreamHandle {
  writeBuffer(req: WriteReq, data: Uint8Array): number;
}

interface StreamBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

/** Told when a write that did not complete at once is over (status < 0: it failed; the socket is destroyed). */
export interface DirectWriteOwner {
  directWriteDone(status: number): void;
}

let binding: StreamBinding | null | undefined;

function streamBinding(): StreamBinding | null {
  if (binding !== undefined) return binding;
  binding = null;
  try {
    const b = (process as unknown as { binding(name: string): Partial<StreamBinding> }).binding('stream_wrap');
    if (
      typeof b.WriteWrap === 'function' &&
      b.streamBaseState instanceof Int32Array &&
      typeof b.kLastWriteWasAsync === 'number'
    ) {
      binding = b as StreamBinding;
    }
  } catch {
    /* not offered by this Node: socket.write it is */
  }
  return binding;
}

function onWriteComplete(this: WriteReq, status: number): void {
  const writer = this.writer as DirectWriter;
  this.writer = null;
  this.buffer = null;
  this.handle = null;
  writer.completed(this.bytes, status);
}

function newRequest(b: StreamBinding): WriteReq {
  const req = new b.WriteWrap();
  req.handle = null;
  req.oncomplete = onWriteComplete;
  req.async = false;
  req.bytes = 0;
  req.buffer = null;
  req.callback = null;
  req.writer = null;
  return req;
}

/** Counts of direct writes, for tests: how many completed at once and how many were queued by libuv. */
export const directWriteStats = { immediate: 0, queued: 0 };

export class DirectWriter {
  /** Bytes of queued writes the kernel has not taken yet (0 when every write completed at once). */
  pending: number;
  private readonly socket: net.Socket;
  private readonly owner: DirectWriteOwner;
  private readonly state: Int32Array;
  private readonly asyncField: number;
  private readonly binding: StreamBinding;
  /** The request object of the last write that completed at once: nothing refers to it, so it is reused. */
  private spare: WriteReq | null;

  private constructor(socket: net.Socket, owner: DirectWriteOwner, b: StreamBinding) {
    this.pending = 0;
    this.socket = socket;
    this.owner = owner;
    this.binding = b;
    this.state = b.streamBaseState;
    this.asyncField = b.kLastWriteWasAsync;
    this.spare = null;
  }

  /** A writer for `socket`, or null when it cannot be written to directly (TLS, no binding, no handle). */
  static for(socket: net.Socket, owner: DirectWriteOwner): DirectWriter | null {
    if ((socket as { encrypted?: boolean }).encrypted === true) return null;
    const b = streamBinding();
    const handle = (socket as unknown as { _handle: Partial<StreamHandle> | null })._handle;
    if (b === null || handle === null || typeof handle.writeBuffer !== 'function') return null;
    return new DirectWriter(socket, owner, b);
  }

  /**
   * Writes `buf`. True when the kernel took all of it (or the socket is gone); false when the rest waits in libuv:
   * the owner hears directWriteDone once it is written.
   */
  write(buf: Buffer): boolean {
    const sock = this.socket;
    const handle = (sock as unknown as { _handle: StreamHandle | null })._handle;
    if (handle === null || sock.destroyed) return true; // closing: nothing more reaches the client
    // Node's Writable still holds bytes it has not handed to the handle: after them, through it.
    if (sock.writableLength > 0) return sock.write(buf);
    const req = this.spare ?? newRequest(this.binding);
    req.handle = handle;
    req.writer = this;
    const err = handle.writeBuffer(req, buf);
    if (err !== 0) {
      // As Node does with a failed write: the socket is destroyed ('close' follows).
      req.writer = null;
      req.handle = null;
      sock.destroy();
      return true;
    }
    if (this.state[this.asyncField] === 0) {
      directWriteStats.immediate++;
      req.writer = null;
      req.handle = null;
      this.spare = req;
      return true;
    }
    // Queued: this request object is the write's now, and keeps the bytes alive until it completes.
    directWriteStats.queued++;
    this.spare = null;
    req.buffer = buf;
    req.bytes = buf.length;
    this.pending += buf.length;
    return false;
  }

  /** A queued write is over (called from its request's oncomplete). */
  completed(bytes: number, status: number): void {
    this.pending -= bytes;
    if (status < 0) this.socket.destroy();
    if (status < 0 || this.pending === 0) this.owner.directWriteDone(status);
  }
}
