/**
 * Hit/miss rules (src/metrics/hit-miss.ts) without a server: every rule against hand-written reply frames
 * (RESP2 and the RESP3 forms), errors counting as neither, per-element counting checked against redis-parser on
 * random MGET replies whose values contain nil-looking bytes, and the rule table itself: every command in it is
 * in the command table, is routed to shards (not answered locally or refused), and is documented in
 * README.md.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  countHitMiss,
  hitMissRule,
  HIT_MISS_RULES,
  RULE_BOOL,
  RULE_COUNT,
  RULE_ELEMENTS_BOOL,
  RULE_ELEMENTS_NIL,
  RULE_EMPTY,
  RULE_NIL,
  RULE_NIL_OR_EMPTY,
  RULE_NONE,
} from '../../src/metrics/hit-miss.js';
import { ShardStats } from '../../src/metrics/stats.js';
import { CommandTable } from '../../src/commands/table.js';
import { Rng } from '../support/resp-gen.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

/** Applies a rule to a frame on a fresh shard and returns [hits, misses]. */
function count(rule: number, frame: string | Buffer, keys = 1): [number, number] {
  const st = new ShardStats('a', 'h:1');
  countHitMiss(rule, Buffer.isBuffer(frame) ? frame : Buffer.from(frame, 'latin1'), keys, st);
  return [st.hits, st.misses];
}

describe('rules on reply frames', () => {
  it('nil: a nil reply is a miss, any value (even empty) a hit', () => {
    expect(count(RULE_NIL, '$3\r\nfoo\r\n')).toEqual([1, 0]);
    expect(count(RULE_NIL, '$0\r\n\r\n')).toEqual([1, 0]);
    expect(count(RULE_NIL, ':3\r\n')).toEqual([1, 0]);
    expect(count(RULE_NIL, '$-1\r\n')).toEqual([0, 1]);
    expect(count(RULE_NIL, '*-1\r\n')).toEqual([0, 1]);
    expect(count(RULE_NIL, '_\r\n')).toEqual([0, 1]);
  });

  it('nil-or-empty: nil or an empty array is a miss', () => {
    expect(count(RULE_NIL_OR_EMPTY, '$1\r\na\r\n')).toEqual([1, 0]);
    expect(count(RULE_NIL_OR_EMPTY, '*1\r\n$1\r\na\r\n')).toEqual([1, 0]);
    expect(count(RULE_NIL_OR_EMPTY, ':0\r\n')).toEqual([1, 0]); // LPOS found the element at index 0
    expect(count(RULE_NIL_OR_EMPTY, '*0\r\n')).toEqual([0, 1]);
    expect(count(RULE_NIL_OR_EMPTY, '$-1\r\n')).toEqual([0, 1]);
    expect(count(RULE_NIL_OR_EMPTY, '~0\r\n')).toEqual([0, 1]);
  });

  it('empty: an empty array, set, map or string is a miss', () => {
    expect(count(RULE_EMPTY, '*2\r\n$1\r\nf\r\n$1\r\nv\r\n')).toEqual([1, 0]);
    expect(count(RULE_EMPTY, '$3\r\nabc\r\n')).toEqual([1, 0]);
    expect(count(RULE_EMPTY, '*10\r\n')).toEqual([1, 0]); // "*10" is not "*0"
    for (const f of ['*0\r\n', '$0\r\n\r\n', '%0\r\n', '~0\r\n', '*-1\r\n'])
      expect(count(RULE_EMPTY, f), f).toEqual([0, 1]);
  });

  it('0/1: :1 is a hit, :0 a miss, anything else neither', () => {
    expect(count(RULE_BOOL, ':1\r\n')).toEqual([1, 0]);
    expect(count(RULE_BOOL, ':0\r\n')).toEqual([0, 1]);
    expect(count(RULE_BOOL, ':10\r\n')).toEqual([0, 0]);
    expect(count(RULE_BOOL, '$1\r\n1\r\n')).toEqual([0, 0]);
  });

  it('count: n of k keys found is n hits and k - n misses', () => {
    expect(count(RULE_COUNT, ':2\r\n', 3)).toEqual([2, 1]);
    expect(count(RULE_COUNT, ':0\r\n', 4)).toEqual([0, 4]);
    expect(count(RULE_COUNT, ':12\r\n', 12)).toEqual([12, 0]);
    expect(count(RULE_COUNT, ':5\r\n', 3)).toEqual([3, 0]); // never more hits than keys
  });

  it('per-element nil: one lookup per element', () => {
    expect(count(RULE_ELEMENTS_NIL, '*4\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n$-1\r\n')).toEqual([2, 2]);
    expect(count(RULE_ELEMENTS_NIL, '*3\r\n_\r\n,1.5\r\n$-1\r\n')).toEqual([1, 2]); // RESP3 null and double
    expect(count(RULE_ELEMENTS_NIL, '*0\r\n')).toEqual([0, 0]);
    expect(count(RULE_ELEMENTS_NIL, '*-1\r\n')).toEqual([0, 0]);
    expect(count(RULE_ELEMENTS_NIL, '*2\r\n$5\r\n$-1\r\n\r\n$-1\r\n')).toEqual([1, 1]); // a value that looks like nil
  });

  it('per-element 0/1: one lookup per element', () => {
    expect(count(RULE_ELEMENTS_BOOL, '*4\r\n:1\r\n:0\r\n:1\r\n:1\r\n')).toEqual([3, 1]);
  });

  it('errors are neither hits nor misses, for every rule', () => {
    for (const r of HIT_MISS_RULES) {
      expect(count(r.rule, '-ERR wrong\r\n', 3), r.name).toEqual([0, 0]);
      expect(
        count(r.rule, '-WRONGTYPE Operation against a key holding the wrong kind of value\r\n', 3),
        r.name,
      ).toEqual([0, 0]);
      expect(count(r.rule, '!5\r\nerror\r\n', 3), r.name).toEqual([0, 0]);
    }
  });

  it('per-element counting agrees with redis-parser on random MGET replies', () => {
    const rng = new Rng(4242);
    for (let round = 0; round < 300; round++) {
      const n = rng.u32() % 20;
      const parts: Buffer[] = [Buffer.from(`*${n}\r\n`)];
      for (let i = 0; i < n; i++) {
        if (rng.u32() % 3 === 0) {
          parts.push(Buffer.from('$-1\r\n'));
          continue;
        }
        const len = rng.u32() % 12;
        const v = Buffer.alloc(len);
        for (let j = 0; j < len; j++) v[j] = [36, 45, 49, 13, 10, 42, 95, 97][rng.u32() % 8];
        parts.push(Buffer.from(`$${len}\r\n`), v, Buffer.from('\r\n'));
      }
      const frame = Buffer.concat(parts);
      let decoded: unknown[] = [];
      new RedisParser({
        returnBuffers: true,
        returnReply: (r) => {
          decoded = r as unknown[];
        },
        returnError: () => undefined,
      }).execute(frame);
      const expected: [number, number] = [
        decoded.filter((v) => v !== null).length,
        decoded.filter((v) => v === null).length,
      ];
      expect(count(RULE_ELEMENTS_NIL, frame), `round ${round}: ${JSON.stringify(frame.toString('latin1'))}`).toEqual(
        expected,
      );
    }
  });
});

describe('the rule table', () => {
  const table = CommandTable.builtin();

  it('maps names to rules, and other commands to none', () => {
    expect(hitMissRule('get')).toBe(RULE_NIL);
    expect(hitMissRule('mget')).toBe(RULE_ELEMENTS_NIL);
    expect(hitMissRule('exists')).toBe(RULE_COUNT);
    expect(hitMissRule('hgetall')).toBe(RULE_EMPTY);
    expect(hitMissRule('smismember')).toBe(RULE_ELEMENTS_BOOL);
    expect(hitMissRule('sismember')).toBe(RULE_BOOL);
    expect(hitMissRule('srandmember')).toBe(RULE_NIL_OR_EMPTY);
    for (const name of ['set', 'del', 'lpop', 'llen', 'scan', 'ping', 'unknown'])
      expect(hitMissRule(name), name).toBe(RULE_NONE);
  });

  it('names only commands the table routes to shards', () => {
    for (const r of HIT_MISS_RULES) {
      for (const name of r.commands) {
        const spec = table.get(name);
        expect(spec, name).toBeDefined();
        expect(['keyed', 'fanout'], name).toContain(spec!.dispatch);
      }
    }
  });

  it('is documented in README.md, command by command', () => {
    const doc = readFileSync('README.md', 'utf8');
    for (const r of HIT_MISS_RULES) for (const name of r.commands) expect(doc, name).toContain(name.toUpperCase());
  });
});
