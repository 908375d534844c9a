/**
 * Byte views: a Buffer over part of another Buffer's memory, made without Buffer#subarray's per-call cost. Node 20's
 * subarray reads `this.buffer` (a C++ getter, not inlined) and checks its offsets on every call: about 600 machine
 * instructions of a GET's ~12,000 at pipeline 16 (measured with callgrind). The parser and the reply scanner take
 * the ArrayBuffer and offset once per socket chunk and make each view from them directly.
 *
 * A ByteView is a Uint8Array whose prototype chain holds Buffer.prototype: every Buffer method works on it,
 * `instanceof Buffer` and Buffer.isBuffer are true, and sockets write it as a Buffer.
 */

class ByteView extends Uint8Array {}
Object.setPrototypeOf(ByteView.prototype, Buffer.prototype);

/** The view of `length` bytes at `offset` of `memory` (the caller has checked the bounds). */
export function viewOf(memory: ArrayBufferLike, offset: number, length: number): Buffer {
  return new ByteView(memory as ArrayBuffer, offset, length) as unknown as Buffer;
}
