/**
 * workers > 1 (src/workers/): which reloads the primary refuses because they would start a key migration that
 * the workers cannot coordinate (placement changes with migration.enabled), and how `workers: auto` is counted.
 */
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import type { KeymuxConfig } from '../../src/config/schema.js';
import { refusedMigration } from '../../src/workers/primary.js';
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

describe('refusedMigration', () => {
  it('refuses a reload that moves keys while migration is enabled, saying what to do', () => {
    const moved = refusedMigration(slots('10.0.0.1:6379', '10.0.0.2:6379'), slots('10.0.0.3:6379', '10.0.0.2:6379'), 2);
    expect(moved).toMatch(/^k\.yaml: this reload changes which shard owns some keys/);
    expect(moved).toContain('run keymux with workers: 1 to reshard with migration');
    expect(moved).toContain('migration.enabled: false');
  });

  it('lets through reloads that move no key, and key moves with migration disabled', () => {
    const before = slots('10.0.0.1:6379', '10.0.0.2:6379');
    expect(refusedMigration(before, slots('10.0.0.1:6379', '10.0.0.2:6379', { backend: { timeout_ms: 900 } }), 2)).toBe(
      null,
    );
    const off = { migration: { enabled: false } };
    expect(refusedMigration(before, slots('10.0.0.3:6379', '10.0.0.2:6379', off), 2)).toBe(null);
  });

  it('sees ring changes (a shard added) and ignores cluster mode', () => {
    const ring = (n: number) =>
      config({ mode: 'ring', shards: Array.from({ length: n }, (_, i) => ({ address: `10.0.0.${i + 1}:6379` })) });
    expect(refusedMigration(ring(2), ring(3), 2)).not.toBe(null);
    expect(refusedMigration(ring(2), ring(2), 2)).toBe(null);
    const cluster = config({ mode: 'cluster', cluster: { seeds: ['10.0.0.1:7000'] } });
    expect(refusedMigration(cluster, cluster, 2)).toBe(null);
  });
});

describe('workerCount', () => {
  it('is the number given, or one per CPU for auto', () => {
    expect(workerCount(3, () => 8)).toBe(3);
    expect(workerCount('auto', () => 8)).toBe(8);
    expect(workerCount('auto', () => 0)).toBe(1);
  });
});
