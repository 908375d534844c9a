/**
 * CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster uses to place keys:
 * slot = crc16(key or its hash tag) mod 16384. Table-driven over byte ranges of a Buffer.
 */
import { hashTagRange, type TagRange } from './hash-tag.js';

export const SLOT_COUNT = 16384;

const TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  TABLE[i] = crc;
}

export function crc16(buf: Buffer, start = 0, end = buf.length): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ buf[i]) & 0xff];
  return crc;
}

const scratch: TagRange = { start: 0, end: 0 };

/** Redis Cluster slot of a key (whole Buffer), honouring the hash tag given as byte values (open < 0: none). */
export function keySlot(key: Buffer, open = 0x7b, close = 0x7d): number {
  hashTagRange(key, 0, key.length, open, close, scratch);
  return crc16(key, scratch.start, scratch.end) & (SLOT_COUNT - 1);
}
