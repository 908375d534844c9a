/**
 * Merging MGET fragments (src/fanout/merge.ts mergeMget): each fragment's array is scattered back to the client's
 * key positions, byte for byte, whatever its elements (bulk strings short and long, RESP2 nil, RESP3 null, nested
 * arrays, attributes before the array); a fragment whose reply is an error makes the whole reply that error; a
 * reply of the wrong shape or size is refused, never merged partially.
 */
import { describe, expect, it } from 'vitest';
import { Request } from '../../src/core/request.js';
import { Fragment } from '../../src/core/fragment.js';
import { mergeMget } from '../../src/fanout/merge.js';
import { ERR_FANOUT_UNEXPECTED } from '../../src/errors.js';
import { idleOwner } from '../support/owner.js';

const owner = idleOwner();

const bulk = (s: string): string => `$${Buffer.byteLength(s, 'latin1')}\r\n${s}\r\n`;

/** A parent with one fragment per [ordinals, reply]; replies sit inside larger buffers, as slab reads leave them. */
function merged(parts: Array<[number[], string]>): Buffer {
  const parent = new Request(owner, Buffer.from('*1\r\n$4\r\nMGET\r\n'), [], 0, 0);
  parent.fragments = parts.map(([ordinals, reply], i) => {
    const f = new Fragment(parent, i, ordinals, Buffer.alloc(0), mergeMget, i);
    const memory = Buffer.from(`garbage${reply}more`, 'latin1');
    f.reply = memory.subarray(7, 7 + Buffer.byteLength(reply, 'latin1'));
    return f;
  });
  return mergeMget(parent);
}

describe('mergeMget', () => {
  it('scatters every element back to its key position, byte for byte', () => {
    const long = 'v'.repeat(70) + '\u00ff';
    const out = merged([
      [[0, 3], `*2\r\n${bulk('a')}$-1\r\n`],
      [[1, 4, 2], `*3\r\n${bulk(long)}_\r\n${bulk('')}`],
      [[5], `*1\r\n*2\r\n${bulk('x')}:7\r\n`],
    ]);
    expect(out.toString('latin1')).toBe(
      `*6\r\n${bulk('a')}${bulk(long)}${bulk('')}$-1\r\n_\r\n*2\r\n${bulk('x')}:7\r\n`,
    );
  });

  it('merges the array after RESP3 attributes', () => {
    const out = merged([
      [[1], `|1\r\n+key-popularity\r\n:1\r\n*1\r\n${bulk('b')}`],
      [[0], `*1\r\n${bulk('a')}`],
    ]);
    expect(out.toString('latin1')).toBe(`*2\r\n${bulk('a')}${bulk('b')}`);
  });

  it('an error from any fragment is the reply; a wrong shape or count is refused', () => {
    expect(
      merged([
        [[0], `*1\r\n${bulk('a')}`],
        [[1], '-ERR boom\r\n'],
      ]).toString(),
    ).toBe('-ERR boom\r\n');
    expect(merged([[[0, 1], `*1\r\n${bulk('a')}`]])).toBe(ERR_FANOUT_UNEXPECTED);
    expect(merged([[[0], '*-1\r\n']])).toBe(ERR_FANOUT_UNEXPECTED);
    expect(merged([[[0], `*2\r\n${bulk('a')}$5\r\nab`]])).toBe(ERR_FANOUT_UNEXPECTED);
  });
});
