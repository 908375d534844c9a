/**
 * twemproxy's key hash functions (src/hashkit/*.c in twemproxy 0.5.0), bit for bit, over byte ranges of a Buffer.
 * Each KeyHasher hashes buf[start, end) and returns a uint32 as a JS number. The C code's quirks are kept on
 * purpose, because compatibility with a running twemproxy is the point:
 *   - twemproxy passes keys as `const char *`, and char is signed on x86-64, so one_at_a_time, fnv1_32,
 *     fnv1a_32, fnv1_64, fnv1a_64 and hsieh's 3-byte tail sign-extend bytes >= 0x80 (see `sx`).
 *   - fnv1_64 runs in 64 bits but returns the low 32; since the low 32 bits of a product depend only on the
 *     low 32 bits of its factors, that equals a 32-bit FNV with offset 0x84222325 and prime 0x1b3. fnv1a_64 is
 *     computed in 32 bits from the start with the same truncated constants.
 *   - crc32 is libmemcached's: ((~crc) >> 16) & 0x7fff (15 bits). crc32a is the standard CRC-32.
 *   - crc16 in 0.5.0 is CRC-16/XMODEM whose accumulator is never masked to 16 bits: the result grows to 32 bits.
 *     Its low 16 bits equal CRC-16/XMODEM. (Later twemproxy commits replaced it; 0.5.0 is what we match.)
 *   - md5 returns the first 4 digest bytes little-endian; murmur is MurmurHash2 seeded with 0xdeadbeef * len;
 *     jenkins is lookup3 hashlittle with initval 13 (its aligned fast paths equal the byte path on little-endian).
 * Hot path: no allocation; md5 uses module-level scratch (single-threaded JS makes that safe).
 */
import type { HashName } from '../config/schema.js';

export type KeyHasher = (buf: Buffer, start: number, end: number) => number;

/** Sign-extends a byte the way `(uint32_t)(char)b` does on x86-64 (as int32; callers >>> 0 at the end). */
function sx(b: number): number {
  return (b << 24) >> 24;
}

// ---------------------------------------------------------------------------------------------- one_at_a_time

export function oneAtATime(buf: Buffer, start: number, end: number): number {
  let v = 0;
  for (let i = start; i < end; i++) {
    v = (v + sx(buf[i])) | 0;
    v = (v + (v << 10)) | 0;
    v ^= v >>> 6;
  }
  v = (v + (v << 3)) | 0;
  v ^= v >>> 11;
  v = (v + (v << 15)) | 0;
  return v >>> 0;
}

// -------------------------------------------------------------------------------------------------------- md5

const MD5_K = Int32Array.from([
  // RFC 1321 T[i] = floor(abs(sin(i + 1)) * 2^32)
  0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501, 0x698098d8,
  0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
  0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87,
  0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
  0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039,
  0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
  0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
  0xeb86d391,
]);
const MD5_S = Uint8Array.from([
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 4,
  11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
]);
const md5Words = new Int32Array(16);
const md5Tail = Buffer.alloc(128);
const md5State = new Int32Array(4);

function md5Block(src: Uint8Array, off: number): void {
  const w = md5Words;
  for (let j = 0; j < 16; j++, off += 4) {
    w[j] = src[off] | (src[off + 1] << 8) | (src[off + 2] << 16) | (src[off + 3] << 24);
  }
  let a = md5State[0],
    b = md5State[1],
    c = md5State[2],
    d = md5State[3];
  for (let i = 0; i < 64; i++) {
    let f: number, g: number;
    if (i < 16) {
      f = d ^ (b & (c ^ d));
      g = i;
    } else if (i < 32) {
      f = c ^ (d & (b ^ c));
      g = (5 * i + 1) & 15;
    } else if (i < 48) {
      f = b ^ c ^ d;
      g = (3 * i + 5) & 15;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) & 15;
    }
    const t = (a + f + MD5_K[i] + w[g]) | 0;
    const s = MD5_S[i];
    a = d;
    d = c;
    c = b;
    b = (b + ((t << s) | (t >>> (32 - s)))) | 0;
  }
  md5State[0] = (md5State[0] + a) | 0;
  md5State[1] = (md5State[1] + b) | 0;
  md5State[2] = (md5State[2] + c) | 0;
  md5State[3] = (md5State[3] + d) | 0;
}

/** MD5 of buf[start, end); the digest is left in md5State as four little-endian words. */
function md5Run(buf: Uint8Array, start: number, end: number): void {
  md5State[0] = 0x67452301;
  md5State[1] = 0xefcdab89 | 0;
  md5State[2] = 0x98badcfe | 0;
  md5State[3] = 0x10325476;
  const len = end - start;
  let p = start;
  for (; end - p >= 64; p += 64) md5Block(buf, p);
  const rest = end - p;
  const tail = md5Tail;
  for (let i = 0; i < rest; i++) tail[i] = buf[p + i];
  tail[rest] = 0x80;
  const blocks = rest < 56 ? 1 : 2;
  const lenAt = blocks * 64 - 8;
  tail.fill(0, rest + 1, lenAt);
  const lo = (len << 3) >>> 0; // bit length, low word (len mod 2^29, shifted)
  const hi = Math.floor(len / 0x20000000); // bit length, high word
  tail[lenAt] = lo;
  tail[lenAt + 1] = lo >>> 8;
  tail[lenAt + 2] = lo >>> 16;
  tail[lenAt + 3] = lo >>> 24;
  tail[lenAt + 4] = hi;
  tail[lenAt + 5] = hi >>> 8;
  tail[lenAt + 6] = hi >>> 16;
  tail[lenAt + 7] = hi >>> 24;
  md5Block(tail, 0);
  if (blocks === 2) md5Block(tail, 64);
}

/** twemproxy hash_md5: digest bytes 0..3 as a little-endian uint32. */
export function md5(buf: Buffer, start: number, end: number): number {
  md5Run(buf, start, end);
  return md5State[0] >>> 0;
}

/**
 * The whole MD5 digest of buf[start, end) as four little-endian uint32 words written into `out`
 * (word i = digest bytes 4i..4i+3, exactly ketama_hash(key, len, i)). For building the ketama continuum.
 */
export function md5Words4(buf: Uint8Array, start: number, end: number, out: Uint32Array): void {
  md5Run(buf, start, end);
  out[0] = md5State[0];
  out[1] = md5State[1];
  out[2] = md5State[2];
  out[3] = md5State[3];
}

// ------------------------------------------------------------------------------------------------------ crc16

const CRC16_TABLE = new Uint16Array(256); // CRC-16/XMODEM (poly 0x1021, not reflected)
for (let i = 0; i < 256; i++) {
  let c = i << 8;
  for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
  CRC16_TABLE[i] = c;
}

/** twemproxy 0.5.0 hash_crc16: `crc = (crc << 8) ^ tab[((crc >> 8) ^ b) & 0xff]` on a uint32, never masked. */
export function crc16(buf: Buffer, start: number, end: number): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = (crc << 8) ^ CRC16_TABLE[((crc >>> 8) ^ buf[i]) & 0xff];
  return crc >>> 0;
}

// ------------------------------------------------------------------------------------------------ crc32/crc32a

const CRC32_TABLE = new Int32Array(256); // reflected polynomial 0xedb88320
for (let i = 0; i < 256; i++) {
  let c = i;
  for (let j = 0; j < 8; j++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  CRC32_TABLE[i] = c;
}

function crc32Raw(buf: Buffer, start: number, end: number): number {
  let crc = -1;
  for (let i = start; i < end; i++) crc = (crc >>> 8) ^ CRC32_TABLE[(crc ^ buf[i]) & 0xff];
  return crc;
}

/** libmemcached-compatible crc32: the top 15 bits of the standard CRC-32, ((~crc) >> 16) & 0x7fff. */
export function crc32(buf: Buffer, start: number, end: number): number {
  return (~crc32Raw(buf, start, end) >>> 16) & 0x7fff;
}

/** The standard CRC-32 (as zlib computes it). */
export function crc32a(buf: Buffer, start: number, end: number): number {
  return ~crc32Raw(buf, start, end) >>> 0;
}

// -------------------------------------------------------------------------------------------------------- fnv

const FNV64_OFFSET_LO32 = 0x84222325; // (uint32_t)0xcbf29ce484222325
const FNV64_PRIME_LO32 = 0x1b3; // (uint32_t)0x100000001b3
const FNV32_OFFSET = 0x811c9dc5; // 2166136261
const FNV32_PRIME = 0x01000193; // 16777619

/** hash_fnv1_64: 64-bit FNV-1 truncated to 32 bits (equivalently 32-bit FNV-1 with the truncated constants). */
export function fnv1_64(buf: Buffer, start: number, end: number): number {
  let h = FNV64_OFFSET_LO32 | 0;
  for (let i = start; i < end; i++) h = Math.imul(h, FNV64_PRIME_LO32) ^ sx(buf[i]);
  return h >>> 0;
}

/** hash_fnv1a_64: computed in 32 bits with (uint32_t) of the 64-bit offset basis and prime. */
export function fnv1a_64(buf: Buffer, start: number, end: number): number {
  let h = FNV64_OFFSET_LO32 | 0;
  for (let i = start; i < end; i++) h = Math.imul(h ^ sx(buf[i]), FNV64_PRIME_LO32);
  return h >>> 0;
}

export function fnv1_32(buf: Buffer, start: number, end: number): number {
  let h = FNV32_OFFSET | 0;
  for (let i = start; i < end; i++) h = Math.imul(h, FNV32_PRIME) ^ sx(buf[i]);
  return h >>> 0;
}

export function fnv1a_32(buf: Buffer, start: number, end: number): number {
  let h = FNV32_OFFSET | 0;
  for (let i = start; i < end; i++) h = Math.imul(h ^ sx(buf[i]), FNV32_PRIME);
  return h >>> 0;
}

// ------------------------------------------------------------------------------------------------------ hsieh

/** Paul Hsieh's SuperFastHash as twemproxy has it (0 for an empty key; signed third byte of a 3-byte tail). */
export function hsieh(buf: Buffer, start: number, end: number): number {
  const len = end - start;
  if (len <= 0) return 0;
  let h = 0;
  let p = start;
  for (let n = len >>> 2; n > 0; n--, p += 4) {
    h = (h + (buf[p] | (buf[p + 1] << 8))) | 0;
    const tmp = ((buf[p + 2] | (buf[p + 3] << 8)) << 11) ^ h;
    h = (h << 16) ^ tmp;
    h = (h + (h >>> 11)) | 0;
  }
  switch (len & 3) {
    case 3:
      h = (h + (buf[p] | (buf[p + 1] << 8))) | 0;
      h ^= h << 16;
      h ^= sx(buf[p + 2]) << 18;
      h = (h + (h >>> 11)) | 0;
      break;
    case 2:
      h = (h + (buf[p] | (buf[p + 1] << 8))) | 0;
      h ^= h << 11;
      h = (h + (h >>> 17)) | 0;
      break;
    case 1:
      h = (h + buf[p]) | 0;
      h ^= h << 10;
      h = (h + (h >>> 1)) | 0;
      break;
    default:
      break;
  }
  h ^= h << 3;
  h = (h + (h >>> 5)) | 0;
  h ^= h << 4;
  h = (h + (h >>> 17)) | 0;
  h ^= h << 25;
  h = (h + (h >>> 6)) | 0;
  return h >>> 0;
}

// ----------------------------------------------------------------------------------------------------- murmur

const MURMUR_M = 0x5bd1e995;

/** MurmurHash2 (little-endian reads), seed = 0xdeadbeef * len, h = seed ^ len. */
export function murmur(buf: Buffer, start: number, end: number): number {
  let len = end - start;
  let h = Math.imul(0xdeadbeef | 0, len) ^ len;
  let p = start;
  while (len >= 4) {
    let k = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16) | (buf[p + 3] << 24);
    k = Math.imul(k, MURMUR_M);
    k ^= k >>> 24;
    k = Math.imul(k, MURMUR_M);
    h = Math.imul(h, MURMUR_M) ^ k;
    p += 4;
    len -= 4;
  }
  if (len > 0) {
    // C: switch (len) { case 3: ... case 2: ... case 1: ... } falling through
    if (len === 3) h ^= buf[p + 2] << 16;
    if (len >= 2) h ^= buf[p + 1] << 8;
    h ^= buf[p];
    h = Math.imul(h, MURMUR_M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, MURMUR_M);
  h ^= h >>> 15;
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------------- jenkins

function rot(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Bob Jenkins' lookup3 hashlittle() over bytes, with the given initval (twemproxy's jenkins uses 13). */
export function lookup3(buf: Buffer, start: number, end: number, initval: number): number {
  let len = end - start;
  let a = (0xdeadbeef + len + initval) | 0;
  let b = a;
  let c = a;
  let p = start;
  while (len > 12) {
    a = (a + (buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16) | (buf[p + 3] << 24))) | 0;
    b = (b + (buf[p + 4] | (buf[p + 5] << 8) | (buf[p + 6] << 16) | (buf[p + 7] << 24))) | 0;
    c = (c + (buf[p + 8] | (buf[p + 9] << 8) | (buf[p + 10] << 16) | (buf[p + 11] << 24))) | 0;
    // mix(a, b, c)
    a = (a - c) | 0;
    a ^= rot(c, 4);
    c = (c + b) | 0;
    b = (b - a) | 0;
    b ^= rot(a, 6);
    a = (a + c) | 0;
    c = (c - b) | 0;
    c ^= rot(b, 8);
    b = (b + a) | 0;
    a = (a - c) | 0;
    a ^= rot(c, 16);
    c = (c + b) | 0;
    b = (b - a) | 0;
    b ^= rot(a, 19);
    a = (a + c) | 0;
    c = (c - b) | 0;
    c ^= rot(b, 4);
    b = (b + a) | 0;
    len -= 12;
    p += 12;
  }
  if (len === 0) return c >>> 0; // zero-length strings require no mixing
  // The last block (1..12 bytes): bytes 0-3 go to a, 4-7 to b, 8-11 to c, little-endian (C's falling-through
  // switch on length).
  for (let j = 0; j < len; j++) {
    const v = buf[p + j] << ((j & 3) << 3);
    if (j < 4) a = (a + v) | 0;
    else if (j < 8) b = (b + v) | 0;
    else c = (c + v) | 0;
  }
  // final(a, b, c)
  c ^= b;
  c = (c - rot(b, 14)) | 0;
  a ^= c;
  a = (a - rot(c, 11)) | 0;
  b ^= a;
  b = (b - rot(a, 25)) | 0;
  c ^= b;
  c = (c - rot(b, 16)) | 0;
  a ^= c;
  a = (a - rot(c, 4)) | 0;
  b ^= a;
  b = (b - rot(a, 14)) | 0;
  c ^= b;
  c = (c - rot(b, 24)) | 0;
  return c >>> 0;
}

export function jenkins(buf: Buffer, start: number, end: number): number {
  return lookup3(buf, start, end, 13);
}

// ------------------------------------------------------------------------------------------------------ table

export const HASHERS: Record<HashName, KeyHasher> = {
  one_at_a_time: oneAtATime,
  md5,
  crc16,
  crc32,
  crc32a,
  fnv1_64,
  fnv1a_64,
  fnv1_32,
  fnv1a_32,
  hsieh,
  murmur,
  jenkins,
};
