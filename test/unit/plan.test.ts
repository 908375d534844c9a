// routing/plan.ts, the diff of two configs behind `keymux plan` and `POST /reload?dry_run=1`: slot moves by address,
// ring shares and moving arcs (checked against where random ring positions land in both continuums), rehash,
// renames, and the changes a reload refuses.
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import type { KeymuxConfig } from '../../src/config/schema.js';
import { planTopology } from '../../src/routing/plan.js';
import { HASHERS } from '../../src/routing/hashers.js';
import { KetamaContinuum, ketamaKey } from '../../src/routing/ketama.js';

function config(body: Record<string, unknown>, source = 'x.yaml'): KeymuxConfig {
  const r = parseConfigText(stringify({ listen: '127.0.0.1:6380', ...body }), source);
  if (r.errors) throw new Error(r.errors.join('\n'));
  return r.config;
}

const ring = (weights: number[], extra: Record<string, unknown> = {}): KeymuxConfig =>
  config({
    mode: 'ring',
    shards: weights.map((weight, i) => ({ name: `s${i}`, address: `10.0.0.${i + 1}:6379`, weight })),
    ...extra,
  });

const slots = (shards: Array<[string, string, string[]]>, extra: Record<string, unknown> = {}): KeymuxConfig =>
  config({ mode: 'slots', shards: shards.map(([name, address, s]) => ({ name, address, slots: s })), ...extra });

/** The fraction of ring positions whose owner address differs, by sampling positions evenly. */
function sampledMovingShare(a: KeymuxConfig, b: KeymuxConfig, samples = 200_000): number {
  const c = (x: KeymuxConfig) =>
    new KetamaContinuum(
      x.shards.map((s) => ({ key: ketamaKey(s), weight: s.weight })),
      HASHERS[x.ring.hash],
    );
  const [ca, cb] = [c(a), c(b)];
  let moving = 0;
  for (let i = 0; i < samples; i++) {
    const h = Math.floor(((i + 0.5) / samples) * 2 ** 32);
    if (a.shards[ca.ownerOf(h)].address !== b.shards[cb.ownerOf(h)].address) moving++;
  }
  return moving / samples;
}

describe('planTopology', () => {
  it('the same config: nothing moves', () => {
    const p = planTopology(ring([1, 1, 1]), ring([1, 1, 1]));
    expect(p.unchanged).toBe(true);
    expect(p.moves).toEqual([]);
    expect(p.movingShare).toBe(0);
    expect(p.refused).toBeNull();
  });

  it('ring shares add up to 1, and a weight change moves what the continuums say', () => {
    const before = ring([1, 1, 1]);
    const after = ring([1, 2, 1]);
    const p = planTopology(before, after);
    const total = (k: 'before' | 'after') => p.shares.reduce((a, s) => a + (s[k] ?? 0), 0);
    expect(total('before')).toBeCloseTo(1, 9);
    expect(total('after')).toBeCloseTo(1, 9);
    expect(p.movingShare!).toBeCloseTo(sampledMovingShare(before, after), 2);
    const sumMoves = p.moves.reduce((a, m) => a + m.share!, 0);
    expect(sumMoves).toBeCloseTo(p.movingShare!, 9);
  });

  it('ring: with equal weights, adding a member moves keys only to it', () => {
    const p = planTopology(ring([1, 1, 1]), ring([1, 1, 1, 1]));
    expect(p.added.map((s) => s.name)).toEqual(['s3']);
    expect(new Set(p.moves.map((m) => m.to.name))).toEqual(new Set(['s3']));
    const newShare = p.shares.find((s) => s.name === 's3')!.after!;
    expect(p.movingShare!).toBeCloseTo(newShare, 9);
    expect(p.movingShare!).toBeCloseTo(sampledMovingShare(ring([1, 1, 1]), ring([1, 1, 1, 1])), 2);
  });

  it('slots: moves are by address; a rename at the same address moves nothing, a new address moves everything', () => {
    const base = slots([
      ['a', '10.0.0.1:6379', ['0-8191']],
      ['b', '10.0.0.2:6379', ['8192-16383']],
    ]);
    const renamed = planTopology(
      base,
      slots([
        ['alpha', '10.0.0.1:6379', ['0-8191']],
        ['b', '10.0.0.2:6379', ['8192-16383']],
      ]),
    );
    expect(renamed.unchanged).toBe(true);
    expect(renamed.added.map((s) => s.name)).toEqual(['alpha']);
    expect(renamed.removed.map((s) => s.name)).toEqual(['a']);
    const moved = planTopology(
      base,
      slots([
        ['a', '10.0.0.9:6379', ['0-8191']],
        ['b', '10.0.0.2:6379', ['8192-16383']],
      ]),
    );
    expect(moved.changed).toEqual([
      { name: 'a', address: '10.0.0.9:6379', changes: ['address 10.0.0.1:6379 -> 10.0.0.9:6379'] },
    ]);
    expect(moved.moves.map((m) => [m.from.address, m.to.address, m.slots, m.ranges])).toEqual([
      ['10.0.0.1:6379', '10.0.0.9:6379', 8192, ['0-8191']],
    ]);
  });

  it('slots: interleaved ranges are reported per pair, in order', () => {
    const p = planTopology(
      slots([
        ['a', '10.0.0.1:6379', ['0-8191']],
        ['b', '10.0.0.2:6379', ['8192-16383']],
      ]),
      slots([
        ['a', '10.0.0.1:6379', ['0-99', '200-8191', '8192-8291']],
        ['b', '10.0.0.2:6379', ['100-199', '8292-16383']],
      ]),
    );
    expect(p.moves.map((m) => [m.from.name, m.to.name, m.slots, m.ranges])).toEqual([
      ['a', 'b', 100, ['100-199']],
      ['b', 'a', 100, ['8192-8291']],
    ]);
  });

  it('a new hash or hash tag re-places every key (rehash, no positional share)', () => {
    const p = planTopology(ring([1, 1]), ring([1, 1], { ring: { hash: 'murmur' } }));
    expect(p.rehash).toBe(true);
    expect(p.movingShare).toBeNull();
    expect(p.unchanged).toBe(false);
    const t = planTopology(
      slots([['a', '10.0.0.1:6379', ['0-16383']]]),
      slots([['a', '10.0.0.1:6379', ['0-16383']]], { hash_tag: null }),
    );
    expect(t.rehash).toBe(true);
  });

  it('listen, admin and mode changes are refused, as the reload refuses them', () => {
    const a = ring([1]);
    const moved = config({ mode: 'ring', listen: '127.0.0.1:7000', shards: [{ address: '10.0.0.1:6379' }] }, 'y.yaml');
    expect(planTopology(a, moved).refused).toBe('y.yaml: listen cannot change without a restart');
    const other = slots([['a', '10.0.0.1:6379', ['0-16383']]]);
    expect(planTopology(a, other).refused).toBe('x.yaml: mode cannot change without a restart');
  });

  it('a listen_unix change (added, its path or its mode) is refused too', () => {
    const unix = (value: unknown) => ring([1], { listen_unix: value });
    const refused = 'x.yaml: listen_unix (its path or mode) cannot change without a restart';
    expect(planTopology(ring([1]), unix('/run/a.sock')).refused).toBe(refused);
    expect(planTopology(unix('/run/a.sock'), unix('/run/b.sock')).refused).toBe(refused);
    expect(planTopology(unix('/run/a.sock'), unix({ path: '/run/a.sock', mode: '0600' })).refused).toBe(refused);
    expect(planTopology(unix('/run/a.sock'), unix({ path: '/run/a.sock' })).refused).toBeNull();
  });

  it('names the other sections that change', () => {
    const p = planTopology(ring([1]), ring([1], { backend: { timeout_ms: 5 }, commands: { deny: ['keys'] } }));
    expect(p.otherChanges).toEqual(['backend', 'commands']);
    expect(p.unchanged).toBe(true);
  });
});
