/**
 * workers > 1 (src/workers/): which reloads the primary treats as key moves (placement changes with
 * migration.enabled: it then coordinates a migration across the workers), how `workers: auto` is counted, and
 * that a reload a worker fails to apply is a refusal (answered, the worker keeps serving), never a worker the
 * primary kills: only one that does not answer is replaced; how /shards merges the workers' replica rows.
 */
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import type { KeymuxConfig } from '../../src/config/schema.js';
import {
  WorkerAnsweredError,
  mergeReplicaRows,
  movesKeys,
  replicaCountsKey,
  sortReloadAnswers,
  type ReplicaReportRow,
} from '../../src/workers/primary.js';
import { applyReload } from '../../src/workers/worker.js';
import { workerCount } from '../../src/workers/protocol.js';

function config(doc: Record<string, unknown>): KeymuxConfig {
  const result = parseConfigText(stringify({ listen: '127.0.0.1:0', workers: 2, ...doc }), 'k.yaml');
  if (result.errors !== undefined) throw new Error(result.errors.join('\n'));
  return result.config;
}

const slots = (a: string, b: string, extra: Record<string, unknown> = {}) =>
  config({
    mode: 'slots',
    shards: [
      { name: 'a', address: a, slots: ['0-8191'] },
      { name: 'b', address: b, slots: ['8192-16383'] },
    ],
    ...extra,
  });

describe('movesKeys', () => {
  it('is true for a reload that gives slots to another address while migration is enabled', () => {
    expect(movesKeys(slots('10.0.0.1:6379', '10.0.0.2:6379'), slots('10.0.0.3:6379', '10.0.0.2:6379'))).toBe(true);
    const swapped = config({
      mode: 'slots',
      shards: [
        { name: 'a', address: '10.0.0.1:6379', slots: ['0-4095'] },
        { name: 'b', address: '10.0.0.2:6379', slots: ['4096-16383'] },
      ],
    });
    expect(movesKeys(slots('10.0.0.1:6379', '10.0.0.2:6379'), swapped)).toBe(true);
  });

  it('is false for reloads that move no key, and for key moves with migration disabled', () => {
    const before = slots('10.0.0.1:6379', '10.0.0.2:6379');
    expect(movesKeys(before, slots('10.0.0.1:6379', '10.0.0.2:6379', { backend: { timeout_ms: 900 } }))).toBe(false);
    const off = { migration: { enabled: false } };
    expect(movesKeys(before, slots('10.0.0.3:6379', '10.0.0.2:6379', off))).toBe(false);
  });

  it('sees ring changes (a shard added, a hash tag) and ignores cluster mode', () => {
    const ring = (n: number, extra: Record<string, unknown> = {}) =>
      config({
        mode: 'ring',
        shards: Array.from({ length: n }, (_, i) => ({ address: `10.0.0.${i + 1}:6379` })),
        ...extra,
      });
    expect(movesKeys(ring(2), ring(3))).toBe(true);
    expect(movesKeys(ring(2), ring(2))).toBe(false);
    expect(movesKeys(ring(2), ring(2, { hash_tag: '' }))).toBe(true);
    const cluster = config({ mode: 'cluster', cluster: { seeds: ['10.0.0.1:7000'] } });
    expect(movesKeys(cluster, cluster)).toBe(false);
  });
});

describe('workerCount', () => {
  it('is the number given, or one per CPU for auto', () => {
    expect(workerCount(3, () => 8)).toBe(3);
    expect(workerCount('auto', () => 8)).toBe(8);
    expect(workerCount('auto', () => 0)).toBe(1);
  });
});

describe('a reload a worker fails to apply', () => {
  const next = config({ mode: 'ring', shards: [{ address: '10.0.0.1:6379' }] });

  it('is answered by the worker as a refusal with its message when applying it throws', async () => {
    const proxy = {
      reloadAsync: () => Promise.reject(new Error('ketama: two servers hash as the same name "h"')),
      migrationFenced: () => Promise.resolve(),
    };
    await expect(applyReload(proxy, { op: 'reload', config: next })).resolves.toBe(
      'reload failed: ketama: two servers hash as the same name "h"',
    );
  });

  it('replaces only the workers that did not answer (timed out, exited), not those that refused or failed', () => {
    const serving = [1, 2, 3, 4].map((id) => ({ id, pid: 100 + id }));
    const sorted = sortReloadAnswers(serving, [
      { status: 'fulfilled', value: null },
      { status: 'fulfilled', value: 'k.yaml: refused' },
      { status: 'rejected', reason: new WorkerAnsweredError('reload failed: boom') },
      { status: 'rejected', reason: new Error('worker 4 (pid 104) did not answer reload in 30000 ms') },
    ]);
    expect(sorted.applied.map((s) => s.id)).toEqual([1]);
    expect(sorted.unanswered.map((s) => s.id)).toEqual([4]);
    expect(sorted.errors).toEqual([
      'worker 2 (pid 102): k.yaml: refused',
      'worker 3 (pid 103): reload failed: boom',
      'worker 4 (pid 104): worker 4 (pid 104) did not answer reload in 30000 ms',
    ]);
  });
});

describe("/shards' replica rows with workers", () => {
  const replica = (address: string, extra: Partial<ReplicaReportRow> = {}): ReplicaReportRow => ({
    address,
    role: 'replica',
    state: 'ready',
    inflight: 1,
    connections: [{ state: 'ready' }],
    resp3_connections: [],
    commands: 10,
    errors: 1,
    hits: 6,
    misses: 2,
    pubsub_connections: [],
    readable: true,
    readable_reason: 'ok',
    ...extra,
  });

  it('matches a replica by address, sums its counts and lists every worker connection with its worker', () => {
    const merged = mergeReplicaRows(
      's1',
      [
        { worker: 1, row: replica('10.0.0.2:6379') },
        { worker: 2, row: replica('10.0.0.2:6379', { commands: 5, hits: 4, misses: 1, errors: 0, inflight: 2 }) },
      ],
      new Map([[replicaCountsKey('s1', '10.0.0.2:6379'), { commands: 100, errors: 0, hits: 0, misses: 0 }]]),
    );
    expect(merged).toHaveLength(1);
    expect(merged[0]).toMatchObject({
      address: '10.0.0.2:6379',
      state: 'ready',
      commands: 115, // 10 + 5, and 100 from a worker that did not answer or was replaced
      errors: 1,
      hits: 10,
      misses: 3,
      inflight: 3,
      connections: [
        { worker: 1, state: 'ready' },
        { worker: 2, state: 'ready' },
      ],
    });
  });

  it('lists a replica only some workers know yet, with what they said', () => {
    const merged = mergeReplicaRows(
      's1',
      [
        { worker: 1, row: replica('10.0.0.2:6379') },
        { worker: 2, row: replica('10.0.0.2:6379') },
        { worker: 2, row: replica('10.0.0.3:6379', { state: 'connecting', connections: [{ state: 'connecting' }] }) },
      ],
      new Map(),
    );
    expect(merged.map((r) => r.address)).toEqual(['10.0.0.2:6379', '10.0.0.3:6379']);
    expect(merged[1]).toMatchObject({ state: 'connecting', commands: 10, connections: [{ worker: 2 }] });
  });

  it('is ready only when ready in every worker that knows it, and readable only when every worker may read from it', () => {
    const [row] = mergeReplicaRows(
      's1',
      [
        { worker: 1, row: replica('10.0.0.2:6379', { state: 'down', connections: [{ state: 'down' }] }) },
        { worker: 2, row: replica('10.0.0.2:6379', { readable: false, readable_reason: 'loading its data set' }) },
      ],
      new Map(),
    );
    expect(row).toMatchObject({ state: 'down', readable: false, readable_reason: 'loading its data set' });
    const [both] = mergeReplicaRows(
      's1',
      [1, 2].map((worker) => ({ worker, row: replica('10.0.0.2:6379') })),
      new Map(),
    );
    expect(both!.state).toBe('ready');
    const [closed] = mergeReplicaRows(
      's1',
      [1, 2].map((worker) => ({ worker, row: replica('10.0.0.2:6379', { state: 'closed', connections: [] }) })),
      new Map(),
    );
    expect(closed!.state).toBe('closed');
  });
});
