/**
 * Configuration of high availability (src/config/schema.ts): the top-level sentinel section, shards named by
 * sentinel_master instead of address, static replicas, read_from (top level and per shard), replica_checks and
 * metrics.hot_keys.read_from_replicas. Each rule is checked against its exact error line.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import type { KeymuxConfig } from '../../src/config/schema.js';

const SRC = 'config/test.yaml';
const y = (...lines: string[]): string => lines.join('\n') + '\n';

function configOf(text: string): KeymuxConfig {
  const r = parseConfigText(text, SRC);
  if (r.errors) throw new Error(r.errors.join('\n'));
  return r.config;
}

function errorsOf(text: string): string[] {
  return parseConfigText(text, SRC).errors ?? [];
}

const SENTINELS = 'sentinel: { sentinels: [127.0.0.1:26379, 127.0.0.1:26380] }';

describe('sentinel shards', () => {
  it('reads a sentinel shard: named by its master name, no fixed address, sentinels with their defaults', () => {
    const c = configOf(
      y(
        'mode: slots',
        SENTINELS,
        'read_from: prefer-replica',
        'shards:',
        '  - sentinel_master: cache-a',
        '    slots: [0-8191]',
        '    read_from: replica',
        '  - address: 127.0.0.1:7002',
        '    replicas: [127.0.0.1:7012, 127.0.0.1:7022]',
        '    slots: [8192-16383]',
      ),
    );
    expect(c.sentinel).toEqual({
      sentinels: [
        { address: '127.0.0.1:26379', host: '127.0.0.1', port: 26379 },
        { address: '127.0.0.1:26380', host: '127.0.0.1', port: 26380 },
      ],
      password: null,
      passwordFile: null,
      username: null,
      refreshIntervalMs: 5000,
      failoverWaitMs: 5000,
      timeoutMs: 1000,
    });
    expect(c.readFrom).toBe('prefer-replica');
    expect(c.replicaChecks).toEqual({ intervalMs: 1000, maxLagBytes: 1_048_576 });
    expect(c.shards[0]).toEqual({
      name: 'cache-a',
      named: true,
      address: 'sentinel:cache-a',
      host: '',
      port: 0,
      slots: [[0, 8191]],
      weight: 1,
      sentinelMaster: 'cache-a',
      replicas: [],
      readFrom: 'replica',
    });
    expect(c.shards[1]!.replicas).toEqual([
      { address: '127.0.0.1:7012', host: '127.0.0.1', port: 7012 },
      { address: '127.0.0.1:7022', host: '127.0.0.1', port: 7022 },
    ]);
    expect(c.shards[1]!.readFrom).toBeNull();
  });

  it('keeps a given name as the ring identity of a sentinel shard', () => {
    const c = configOf(
      y('mode: ring', SENTINELS, 'shards:', '  - name: 127.0.0.1:7001', '    sentinel_master: cache-a'),
    );
    expect(c.shards[0]).toMatchObject({ name: '127.0.0.1:7001', named: true, sentinelMaster: 'cache-a' });
  });

  it('needs a sentinel section for sentinel_master, and exactly one of address and sentinel_master', () => {
    expect(errorsOf(y('mode: ring', 'shards:', '  - sentinel_master: cache-a'))).toEqual([
      'config/test.yaml:3: shards[0].sentinel_master: needs a top-level sentinel section ' +
        '(sentinel: { sentinels: [host:port, ...] })',
    ]);
    expect(
      errorsOf(y('mode: ring', SENTINELS, 'shards:', '  - address: 127.0.0.1:7001', '    sentinel_master: cache-a')),
    ).toEqual(['config/test.yaml:5: shards[0].sentinel_master: give address or sentinel_master, not both']);
    expect(errorsOf(y('mode: ring', SENTINELS, 'shards:', '  - name: a'))).toEqual([
      'config/test.yaml:4: shards[0].address: required (e.g. "127.0.0.1:7001"), or sentinel_master with a ' +
        'sentinel section',
    ]);
  });

  it('refuses static replicas on a sentinel shard, duplicate masters, and replicas that are another node', () => {
    expect(
      errorsOf(y('mode: ring', SENTINELS, 'shards:', '  - sentinel_master: cache-a', '    replicas: [127.0.0.1:7011]')),
    ).toEqual([
      'config/test.yaml:5: shards[0].replicas: a sentinel_master shard learns its replicas from the sentinels; ' +
        'leave replicas out',
    ]);
    expect(
      errorsOf(
        y('mode: ring', SENTINELS, 'shards:', '  - sentinel_master: m', '  - name: b', '    sentinel_master: m'),
      ),
    ).toEqual([
      'config/test.yaml:6: shards[1].sentinel_master: duplicate sentinel_master "m", already used by shards[0] at line 4',
    ]);
    expect(
      errorsOf(
        y(
          'mode: ring',
          'shards:',
          '  - address: 127.0.0.1:7001',
          '    replicas: [127.0.0.1:7002]',
          '  - address: 127.0.0.1:7002',
        ),
      ),
    ).toEqual([
      'config/test.yaml:5: shards[1].address: duplicate address 127.0.0.1:7002, already used by ' +
        'shards[0].replicas[0] at line 4',
    ]);
  });

  it('checks the sentinel section: sentinels required and unique, username needs password, bounds', () => {
    expect(errorsOf(y('mode: ring', 'sentinel: {}', 'shards: [{ sentinel_master: m }]'))).toEqual([
      'config/test.yaml:2: sentinel.sentinels: required: the sentinels to ask, e.g. ' +
        '[127.0.0.1:26379, 127.0.0.1:26380, 127.0.0.1:26381]',
    ]);
    expect(
      errorsOf(
        y(
          'mode: ring',
          'sentinel:',
          '  sentinels: [127.0.0.1:26379, 127.0.0.1:26379]',
          '  username: keymux',
          '  failover_wait_ms: -1',
          'shards: [{ sentinel_master: m }]',
        ),
      ),
    ).toEqual([
      'config/test.yaml:3: sentinel.sentinels[1]: duplicate sentinel 127.0.0.1:26379, already listed as ' +
        'sentinel.sentinels[0] at line 3',
      'config/test.yaml:4: sentinel.username: requires sentinel.password or sentinel.password_file (Redis ACL AUTH ' +
        'needs both)',
      'config/test.yaml:5: sentinel.failover_wait_ms: must be between 0 and 600000, got -1',
    ]);
  });

  it('reads sentinel.password_file: one of password and password_file; username with either', () => {
    const c = configOf(
      y(
        'mode: ring',
        'sentinel:',
        '  sentinels: [127.0.0.1:26379]',
        '  password_file: /s/pw',
        '  username: km',
        'shards: [{ sentinel_master: m }]',
      ),
    );
    expect(c.sentinel).toMatchObject({ password: null, passwordFile: '/s/pw', username: 'km' });
    expect(
      errorsOf(
        y(
          'mode: ring',
          'sentinel:',
          '  sentinels: [127.0.0.1:26379]',
          '  password: x',
          '  password_file: /s/pw',
          'shards: [{ sentinel_master: m }]',
        ),
      ),
    ).toEqual(['config/test.yaml:5: sentinel.password_file: give password or password_file, not both']);
  });

  it('allows sentinel, read_from and replica_checks in slots and ring modes only', () => {
    expect(
      errorsOf(y('mode: cluster', 'cluster: { seeds: [127.0.0.1:7000] }', 'read_from: replica', SENTINELS)),
    ).toEqual([
      'config/test.yaml:3: read_from: only allowed when mode is slots or ring (mode is cluster)',
      'config/test.yaml:4: sentinel: only allowed when mode is slots or ring (mode is cluster)',
    ]);
    expect(errorsOf(y('mode: ring', 'read_from: replicas', 'shards: [{ address: 127.0.0.1:7001 }]'))).toEqual([
      'config/test.yaml:2: read_from: expected one of: master, replica, prefer-replica; got "replicas" ' +
        '(did you mean "replica"?)',
    ]);
  });

  it('reads replica_checks and hot_keys.read_from_replicas', () => {
    const c = configOf(
      y(
        'mode: ring',
        'shards: [{ address: 127.0.0.1:7001 }]',
        'replica_checks: { interval_ms: 200, max_lag_bytes: null }',
        'metrics: { hot_keys: { read_from_replicas: true } }',
      ),
    );
    expect(c.replicaChecks).toEqual({ intervalMs: 200, maxLagBytes: null });
    expect(c.metrics.hotKeys.readFromReplicas).toBe(true);
  });
});
