/**
 * twemproxy hash functions and the ketama continuum, without processes. Vectors: twemproxy's own test_all.c
 * ("apple", identical to libmemcached's hash_results.h), a table computed by compiling a transcription of
 * twemproxy 0.5.0's src/hashkit/*.c with gcc on x86-64, and independent references (node:crypto MD5, zlib
 * CRC-32, published FNV / one-at-a-time / lookup3 / CRC-16/XMODEM check values). Ketama: point counts, order,
 * binary search, wraparound, ties, hash tags, empty and single-server rings. (Agreement with a running
 * nutcracker is test/integration/ring-nutcracker.test.ts.)
 */
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { HashName, ShardConfig } from '../../src/config/schema.js';
import { HASHERS, lookup3, md5Words4 } from '../../src/routing/hashers.js';
import { hashTagged, KetamaContinuum, ketamaKey, ketamaPointCount, RingRouter } from '../../src/routing/ketama.js';

const NAMES: HashName[] = [
  'one_at_a_time',
  'md5',
  'crc16',
  'crc32',
  'crc32a',
  'fnv1_64',
  'fnv1a_64',
  'fnv1_32',
  'fnv1a_32',
  'hsieh',
  'murmur',
  'jenkins',
];

function h(name: HashName, input: string | Buffer): number {
  const b = typeof input === 'string' ? Buffer.from(input) : input;
  return HASHERS[name](b, 0, b.length);
}

describe('twemproxy hash functions', () => {
  it('match twemproxy test_all.c for "apple"', () => {
    expect(h('one_at_a_time', 'apple')).toBe(2297466611);
    expect(h('md5', 'apple')).toBe(3195025439);
    expect(h('crc16', 'apple')).toBe(3662830516);
    expect(h('crc32', 'apple')).toBe(10542);
    expect(h('crc32a', 'apple')).toBe(2838417488);
    expect(h('fnv1_32', 'apple')).toBe(67176023);
    expect(h('fnv1a_32', 'apple')).toBe(280767167);
    expect(h('fnv1_64', 'apple')).toBe(473199127);
    expect(h('fnv1a_64', 'apple')).toBe(1488911807);
    expect(h('hsieh', 'apple')).toBe(3738850110);
    expect(h('jenkins', 'apple')).toBe(1442444624);
    expect(h('murmur', 'apple')).toBe(4142305122);
  });

  // [input hex, [one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur,
  // jenkins]] from the C definitions (char signed, as on x86-64).
  const TABLE: Array<[string, number[]]> = [
    [
      '', // empty
      [0, 3649838548, 0, 0, 0, 2216829733, 2216829733, 2166136261, 2166136261, 0, 0, 3735928572],
    ],
    [
      '61', // "a"
      [
        3392050242, 3111502092, 31879, 26807, 3904355907, 2248259518, 2248273036, 84696446, 3826002220, 2472816263,
        1262581116, 3768813200,
      ],
    ],
    [
      '68656c6c6f20776f726c64', // "hello world"
      [
        1045060183, 3141252702, 4060494820, 3402, 222957957, 2979073647, 37540583, 1418570095, 3582672807, 1333368947,
        1578702139, 355681275,
      ],
    ],
    [
      '54686520717569636b2062726f776e20666f78206a756d7073206f76657220746865206c617a7920646f67', // "The quick brown fox jumps over the lazy dog"
      [
        1369346549, 2642219166, 581169352, 16719, 1095738169, 2112060110, 3890508048, 3922226286, 76545936, 471461527,
        818385189, 314054204,
      ],
    ],
    [
      '757365723a313030303a70726f66696c65', // "user:1000:profile"
      [
        522545543, 2585628903, 2691867350, 471, 30907001, 1037178972, 1426878874, 2253373212, 66513402, 1203955876,
        78543240, 886310305,
      ],
    ],
    [
      '80', // one high byte
      [
        3273477671, 2128427405, 37256, 16314, 1069182125, 2046707807, 2046684255, 4210270879, 83079839, 3606367026,
        2421514821, 2976898632,
      ],
    ],
    [
      'ff7f80', // 3-byte tail, high third byte (hsieh sign extension)
      [
        4209098539, 1200018802, 512509580, 1222, 80088038, 1813152045, 1912875833, 833818253, 2648649113, 3192312286,
        1363412201, 1649582330,
      ],
    ],
    [
      'e974e9', // "été" in latin1
      [
        2356222837, 812560496, 1821677114, 19447, 3422016531, 1808966059, 3039305723, 947716075, 4217837435, 977899829,
        4151717119, 532907563,
      ],
    ],
    [
      '00ff00ff00ff00ff00ff00ff00', // NULs and 0xff, 13 bytes (jenkins: one mix + 1-byte tail)
      [
        3256463142, 2552974869, 3843807322, 22404, 1468315226, 3369507479, 2911460583, 3406584471, 3762896999,
        1795682295, 60607018, 263595098,
      ],
    ],
    [
      'c3a9c3a8c3aa', // "éèê" in UTF-8
      [
        997557953, 910622809, 2093390122, 16078, 1053733653, 2464140183, 3079502163, 1240845015, 1175587411, 885785547,
        170397640, 1015904690,
      ],
    ],
    [
      '61'.repeat(56), // 56 bytes: md5 needs a second padding block
      [
        4024347470, 3347713083, 1130153982, 31097, 2037976375, 1841827373, 2437901373, 1952853837, 467530077,
        1395216433, 3699261076, 1612518451,
      ],
    ],
    [
      'fe'.repeat(64), // 64 bytes: one full md5 block, then padding
      [
        4167995750, 3543193825, 2952312006, 28961, 1898024483, 1190987813, 1190987813, 3755895493, 3755895493,
        312760384, 3911298497, 2572714811,
      ],
    ],
  ];

  it.each(TABLE)('match the C definitions for input %s', (hex, want) => {
    const b = Buffer.from(hex, 'hex');
    expect(NAMES.map((n) => h(n, b))).toEqual(want);
  });

  it('hash exactly buf[start, end) of a larger buffer, never the bytes around it', () => {
    const rand = crypto.randomBytes(300);
    for (const n of NAMES) {
      for (const [s, e] of [
        [0, 0],
        [7, 8],
        [13, 16],
        [1, 66],
        [100, 300],
        [5, 133],
      ]) {
        const copy = Buffer.from(rand.subarray(s, e));
        expect(HASHERS[n](rand, s, e), `${n} [${s}, ${e})`).toBe(HASHERS[n](copy, 0, copy.length));
      }
    }
  });

  it('return uint32 values', () => {
    for (let i = 0; i < 200; i++) {
      const b = crypto.randomBytes(i % 50);
      for (const n of NAMES) {
        const v = h(n, b);
        expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff, `${n} -> ${v}`).toBe(true);
      }
    }
  });

  it('md5: whole digest equals node:crypto at every padding boundary', () => {
    const words = new Uint32Array(4);
    for (let len = 0; len <= 200; len++) {
      const b = crypto.randomBytes(len);
      md5Words4(b, 0, len, words);
      const ref = crypto.createHash('md5').update(b).digest();
      expect(Buffer.from(words.buffer).equals(ref), `len ${len}`).toBe(true);
      expect(h('md5', b)).toBe(ref.readUInt32LE(0));
    }
  });

  it('md5: ketama_hash vectors from twemproxy test_all.c', () => {
    const words = new Uint32Array(4);
    const b = Buffer.from('server1-8');
    md5Words4(b, 0, b.length, words);
    expect(words[0]).toBe(3853726576);
    expect(words[3]).toBe(2667054752);
  });

  it('crc32a is the standard CRC-32 and crc32 is its top 15 bits (libmemcached)', () => {
    expect(h('crc32a', '123456789')).toBe(0xcbf43926);
    for (let i = 0; i < 100; i++) {
      const b = crypto.randomBytes(i);
      const ref = zlib.crc32(b);
      expect(h('crc32a', b)).toBe(ref);
      expect(h('crc32', b)).toBe((ref >>> 16) & 0x7fff);
    }
  });

  it("crc16: low 16 bits are CRC-16/XMODEM, upper bits keep 0.5.0's unmasked accumulator", () => {
    expect(h('crc16', '123456789') & 0xffff).toBe(0x31c3);
    expect(h('crc16', '123456789')).toBeGreaterThan(0xffff);
  });

  it('fnv: published FNV-1/FNV-1a 32-bit check values', () => {
    expect(h('fnv1a_32', 'a')).toBe(0xe40c292c);
    expect(h('fnv1a_32', 'foobar')).toBe(0xbf9cf968);
    expect(h('fnv1_32', 'foobar')).toBe(0x31f0b262);
    expect(h('fnv1_32', '')).toBe(0x811c9dc5);
  });

  it('fnv1_64 is the low 32 bits of the real 64-bit FNV-1 (checked with BigInt)', () => {
    const ref = (b: Buffer): number => {
      let x = 0xcbf29ce484222325n;
      for (const c of b) {
        x = (x * 0x100000001b3n) & 0xffffffffffffffffn;
        x ^= BigInt.asUintN(64, BigInt((c << 24) >> 24)); // (uint64_t)(signed char)
      }
      return Number(x & 0xffffffffn);
    };
    for (let i = 0; i < 100; i++) {
      const b = crypto.randomBytes(i % 40);
      expect(h('fnv1_64', b)).toBe(ref(b));
    }
  });

  it('sign-extend bytes >= 0x80 where twemproxy reads plain char (fnv, one_at_a_time)', () => {
    const hi = Buffer.from([0x80]);
    // unsigned reading would give (0x84222325 ^ 0x80) * 0x1b3
    expect(h('fnv1a_64', hi)).not.toBe(Math.imul(0x84222325 ^ 0x80, 0x1b3) >>> 0);
    expect(h('fnv1a_64', hi)).toBe(Math.imul(0x84222325 ^ 0xffffff80, 0x1b3) >>> 0);
  });

  it('one_at_a_time: published check values', () => {
    expect(h('one_at_a_time', 'a')).toBe(0xca2e9442);
    expect(h('one_at_a_time', 'The quick brown fox jumps over the lazy dog')).toBe(0x519e91f5);
  });

  it("jenkins is lookup3 hashlittle with initval 13 (Bob Jenkins' published vectors for 0 and 1)", () => {
    const b = Buffer.from('Four score and seven years ago');
    expect(lookup3(b, 0, b.length, 0)).toBe(0x17770551);
    expect(lookup3(b, 0, b.length, 1)).toBe(0xcd628161);
    expect(h('jenkins', b)).toBe(lookup3(b, 0, b.length, 13));
    expect(h('jenkins', '')).toBe((0xdeadbeef + 13) >>> 0);
  });
});

function shard(host: string, port: number, weight = 1, name?: string): ShardConfig {
  return {
    name: name ?? `${host}:${port}`,
    named: name !== undefined,
    address: `${host}:${port}`,
    host,
    port,
    slots: null,
    weight,
  };
}

describe('ketama continuum', () => {
  it('hashes a server\'s name if it has one, else "host:port" (no weight), "host" alone on port 11211', () => {
    expect(ketamaKey(shard('10.0.0.1', 6379, 3))).toBe('10.0.0.1:6379');
    expect(ketamaKey(shard('10.0.0.1', 6379, 3, 'redis-a'))).toBe('redis-a');
    expect(ketamaKey(shard('cache.local', 11211))).toBe('cache.local');
    expect(ketamaKey(shard('cache.local', 11211, 1, 'm1'))).toBe('m1');
  });

  it('gives 160 points per server at equal weights and scales by weight share, as C floats do', () => {
    expect(ketamaPointCount(1, 4, 4)).toBe(160);
    expect([1, 2, 1, 3].map((w) => ketamaPointCount(w, 7, 4))).toEqual([88, 180, 88, 272]);
    // 1/25 * 40 * 5 is 8 in exact arithmetic but 7.9999... in single precision: 28 points, not 32.
    expect([1, 11, 1, 11, 1].map((w) => ketamaPointCount(w, 25, 5))).toEqual([28, 352, 28, 352, 28]);
    // Vectors from ketama_update compiled with gcc: weights -> points.
    expect([5, 5, 2, 1, 4, 2, 3, 1, 4, 1].map((w) => ketamaPointCount(w, 28, 10))).toEqual([
      284, 284, 112, 56, 228, 112, 168, 56, 228, 56,
    ]);
    expect([32, 27].map((w) => ketamaPointCount(w, 59, 2))).toEqual([172, 144]);
    expect([69721, 92179].map((w) => ketamaPointCount(w, 161900, 2))).toEqual([136, 180]);
  });

  it('builds sorted points, each server owning its point count', () => {
    const servers = [
      { key: 'a:1', weight: 1 },
      { key: 'b:2', weight: 2 },
      { key: 'c:3', weight: 1 },
      { key: 'd:4', weight: 3 },
    ];
    const c = new KetamaContinuum(servers, HASHERS.md5);
    expect(c.size).toBe(88 + 180 + 88 + 272);
    for (let i = 1; i < c.size; i++) expect(c.points[i - 1] <= c.points[i]).toBe(true);
    const count = [0, 0, 0, 0];
    for (const o of c.owners) count[o]++;
    expect(count).toEqual([88, 180, 88, 272]);
  });

  it('puts exactly md5("<key>-<i>") words on the ring', () => {
    const c = new KetamaContinuum([{ key: 'server1', weight: 1 }], HASHERS.md5);
    expect(c.size).toBe(160);
    const set = new Set(c.points);
    expect(set.has(3853726576)).toBe(true); // ketama_hash("server1-8", 0)
    expect(set.has(2667054752)).toBe(true); // ketama_hash("server1-8", 3)
  });

  it('dispatches to the first point >= hash and wraps past the last point', () => {
    const c = new KetamaContinuum(
      [
        { key: 'x', weight: 1 },
        { key: 'y', weight: 1 },
        { key: 'z', weight: 2 },
      ],
      HASHERS.md5,
    );
    const p = c.points;
    const last = c.size - 1;
    expect(c.ownerOf(0)).toBe(c.owners[0]);
    expect(c.ownerOf(p[0])).toBe(c.owners[0]);
    expect(c.ownerOf(p[last])).toBe(c.owners[last]);
    expect(p[last]).toBeLessThan(0xffffffff);
    expect(c.ownerOf(p[last] + 1)).toBe(c.owners[0]);
    expect(c.ownerOf(0xffffffff)).toBe(c.owners[0]);
    for (let i = 1; i < c.size; i++) {
      if (p[i] === p[i - 1]) continue;
      expect(c.ownerOf(p[i])).toBe(c.owners[i]);
      expect(c.ownerOf(p[i - 1] + 1)).toBe(c.owners[i]);
    }
  });

  it('finds through its bucket table exactly the point a search of the whole ring finds, for every ring size', () => {
    // The reference: ketama_dispatch's binary search over all points.
    const reference = (c: KetamaContinuum, hash: number): number => {
      let left = 0;
      let right = c.size;
      while (left < right) {
        const mid = (left + right) >>> 1;
        if (c.points[mid] < hash) left = mid + 1;
        else right = mid;
      }
      return c.owners[right === c.size ? 0 : right];
    };
    let seed = 12345;
    const next = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    // 1 to 600 servers (160 to 96,000 points: buckets of a few points, and the capped table's crowded buckets), and
    // skewed weights, whose points crowd some buckets.
    for (const [n, skew] of [
      [1, false],
      [2, false],
      [3, true],
      [4, false],
      [7, true],
      [50, false],
      [600, false],
    ] as const) {
      const servers = Array.from({ length: n }, (_, i) => ({
        key: `10.0.${i >> 8}.${i & 255}:6379`,
        weight: skew ? 1 + i * 9 : 1,
      }));
      const c = new KetamaContinuum(servers, HASHERS.md5);
      const probes = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
      for (let i = 0; i < c.size; i += Math.max(1, c.size >> 9))
        probes.push(c.points[i], (c.points[i] + 1) >>> 0, Math.max(0, c.points[i] - 1));
      for (let i = 0; i < 4000; i++) probes.push(next());
      for (const h of probes) expect(c.ownerOf(h)).toBe(reference(c, h));
    }
  });

  it('does not depend on the order servers are listed in', () => {
    const a = new KetamaContinuum(
      [
        { key: 'p', weight: 1 },
        { key: 'q', weight: 3 },
        { key: 'rr', weight: 2 },
      ],
      HASHERS.md5,
    );
    const b = new KetamaContinuum(
      [
        { key: 'rr', weight: 2 },
        { key: 'p', weight: 1 },
        { key: 'q', weight: 3 },
      ],
      HASHERS.md5,
    );
    const keyOfA = ['p', 'q', 'rr'];
    const keyOfB = ['rr', 'p', 'q'];
    expect(Array.from(a.points)).toEqual(Array.from(b.points));
    for (let i = 0; i < a.size; i++) expect(keyOfA[a.owners[i]]).toBe(keyOfB[b.owners[i]]);
  });

  it('gives an equal point value to the server first in twemproxy name order (length, then bytes)', () => {
    // "tie-84" and "tie-666" share a point (found by search; also checked against nutcracker in integration).
    const servers = [
      { key: 'tie-666', weight: 1 },
      { key: 'tie-84', weight: 1 },
    ];
    const c = new KetamaContinuum(servers, HASHERS.md5);
    const v = 765867936;
    const at = c.points.indexOf(v);
    expect(at).toBeGreaterThanOrEqual(0);
    expect(c.points[at + 1]).toBe(v);
    expect(c.owners[at]).toBe(1); // tie-84: shorter, though bytewise greater and listed second
    expect(c.ownerOf(v)).toBe(1);
  });

  it('empty ring has no owner; a single server owns everything', () => {
    const empty = new KetamaContinuum([], HASHERS.md5);
    expect(empty.size).toBe(0);
    expect(empty.ownerOf(12345)).toBe(-1);
    const one = new KetamaContinuum([{ key: 'solo', weight: 5 }], HASHERS.md5);
    expect(one.size).toBe(160);
    for (const v of [0, 1, 0x7fffffff, 0xffffffff]) expect(one.ownerOf(v)).toBe(0);
  });

  it('refuses duplicate names and non-positive weights', () => {
    expect(
      () =>
        new KetamaContinuum(
          [
            { key: 'a', weight: 1 },
            { key: 'a', weight: 2 },
          ],
          HASHERS.md5,
        ),
    ).toThrow(/same name/);
    expect(() => new KetamaContinuum([{ key: 'a', weight: 0 }], HASHERS.md5)).toThrow(/weight/);
  });
});

describe('hash tags (twemproxy hash_tag)', () => {
  const cases: Array<[string, string | null, string]> = [
    ['{user1000}.following', '{}', 'user1000'],
    ['foo{bar}{zap}', '{}', 'bar'],
    ['{}{zap}', '{}', '{}{zap}'], // empty tag: whole key
    ['foo{bar', '{}', 'foo{bar'], // no close
    ['}foo{bar}', '{}', 'bar'], // close before open is ignored
    ['{a}', '{}', 'a'],
    ['{user}.x', null, '{user}.x'],
    ['a$b$c', '$$', 'b'], // same open and close byte
    ['a:b:c', '::', 'b'],
  ];
  it.each(cases)('%s with tag %s hashes %s', (key, tag, want) => {
    const b = Buffer.from(key);
    const [s, e] = hashTagged(b, 0, b.length, tag);
    expect(b.subarray(s, e).toString()).toBe(want);
  });

  it('RingRouter applies the tag, and an empty key (or empty range) hashes as 0', () => {
    const shards = [shard('10.0.0.1', 7000, 1), shard('10.0.0.2', 7000, 2), shard('10.0.0.3', 7000, 1)];
    const r = new RingRouter(shards, 'fnv1a_64', '{}');
    const c = r.continuum;
    const key = (s: string): number => {
      const b = Buffer.from(s);
      return r.shardFor(b, 0, b.length);
    };
    for (let i = 0; i < 200; i++) {
      expect(key(`{user${i}}:a`)).toBe(key(`user${i}`));
      expect(key(`x{user${i}}:b:{c}`)).toBe(key(`user${i}`));
      const whole = Buffer.from(`{}user${i}`);
      expect(key(`{}user${i}`)).toBe(c.ownerOf(h('fnv1a_64', whole)));
    }
    expect(r.shardFor(Buffer.alloc(0), 0, 0)).toBe(c.owners[0]);
    // Bytes outside [start, end) never matter, tags included.
    const framed = Buffer.from('{zz}abc{def}{');
    expect(r.shardFor(framed, 4, 7)).toBe(key('abc'));
  });

  it('RingRouter with one shard always answers 0; routes by configured names when given', () => {
    const one = new RingRouter([shard('h', 1)], 'md5', '{}');
    expect(one.shardFor(Buffer.from('anything'), 0, 8)).toBe(0);
    const unnamed = new RingRouter([shard('h', 1), shard('h', 2)], 'md5', null);
    const named = new RingRouter([shard('h', 1, 1, 'h:1'), shard('h', 2, 1, 'h:2')], 'md5', null);
    expect(Array.from(named.continuum.points)).toEqual(Array.from(unnamed.continuum.points));
    const renamed = new RingRouter([shard('h', 1, 1, 'east'), shard('h', 2, 1, 'west')], 'md5', null);
    expect(Array.from(renamed.continuum.points)).not.toEqual(Array.from(unnamed.continuum.points));
  });

  it('RingRouter refuses a hash tag that is not two bytes', () => {
    expect(() => new RingRouter([shard('h', 1), shard('h', 2)], 'md5', '{')).toThrow(/two bytes/);
    expect(() => new RingRouter([shard('h', 1), shard('h', 2)], 'md5', '«»')).toThrow(/two bytes/);
  });
});
