/**
 * Configuration loading and validation: every rule of src/config/schema.ts and every YAML failure of
 * src/config/load.ts, each checked against the exact error lines (file:line: path: message), plus the example
 * files under config/ and config/keymux.schema.json: generated from the same declaration (the committed file must
 * be what `npm run gen:schema` writes), checked with a real JSON Schema validator (ajv) to accept what keymux
 * accepts and reject what it rejects wherever JSON Schema can say it, with the same bounds, keys and defaults.
 * YAML is written as arrays of lines so that line numbers can be read straight off the test.
 */

import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import YAML from 'yaml';
import { parseConfigText, loadConfigFile, readConfigFile, ConfigError } from '../../src/config/load.js';
import {
  validateConfig,
  configJsonSchema,
  formatPath,
  parseHostPort,
  suggest,
  deepFreeze,
  DEFAULTS,
  KNOWN_KEYS,
  KEYS_BY_PATH,
  HASH_NAMES,
  LOG_LEVELS,
  INT_RANGES,
  NUMBER_RANGES,
  type ConfigPath,
  type KeymuxConfig,
} from '../../src/config/schema.js';
import { makeTempDir } from '../support/tmpdirs.js';

const SRC = 'config/test.yaml';

/** Joins lines into a YAML text: line N of the file is lines[N - 1]. */
const y = (...lines: string[]): string => lines.join('\n') + '\n';

function errorsOf(text: string): string[] {
  const r = parseConfigText(text, SRC);
  expect(r.config).toBeUndefined();
  return r.errors!;
}

function configOf(text: string): KeymuxConfig {
  const r = parseConfigText(text, SRC);
  expect(r.errors).toBeUndefined();
  return r.config!;
}

/** TLS sections as the defaults leave them. */
const SERVER_TLS_OFF = { enabled: false, certFile: null, keyFile: null, caFile: null, minVersion: 'TLSv1.2' };
const BACKEND_TLS_OFF = {
  enabled: false,
  caFile: null,
  certFile: null,
  keyFile: null,
  servername: null,
  verify: true,
  minVersion: 'TLSv1.2',
};

/** What a shard with a fixed address and no replicas resolves to beyond its address, slots and weight. */
const PLAIN_SHARD = { sentinelMaster: null, replicas: [], readFrom: null };

/** Three shards a/b/c covering all slots; lines 3..11 when preceded by `mode` and `shards:` lines. */
const SHARDS = [
  '  - name: a',
  '    address: 127.0.0.1:7001',
  '    slots: [0-5460]',
  '  - name: b',
  '    address: 127.0.0.1:7002',
  '    slots: [5461-10922]',
  '  - name: c',
  '    address: 127.0.0.1:7003',
  '    slots: [10923-16383]',
];

/** A valid slots-mode document followed by `extra` lines (starting at line 12). */
const slots = (...extra: string[]): string => y('mode: slots', 'shards:', ...SHARDS, ...extra);

/** A valid ring-mode document (lines 1..5) followed by `extra` lines (starting at line 6). */
const ring = (...extra: string[]): string =>
  y('mode: ring', 'shards:', '  - address: 127.0.0.1:7001', '  - name: b', '    address: 127.0.0.1:7002', ...extra);

describe('valid configurations', () => {
  it('applies every default to a minimal slots config', () => {
    const c = configOf(slots());
    expect(c).toEqual({
      source: SRC,
      listen: { host: '127.0.0.1', port: 6380 },
      listenUnix: null,
      admin: null,
      tls: { ...SERVER_TLS_OFF, listen: null },
      mode: 'slots',
      hashTag: '{}',
      shards: [
        {
          name: 'a',
          named: true,
          address: '127.0.0.1:7001',
          host: '127.0.0.1',
          port: 7001,
          slots: [[0, 5460]],
          weight: 1,
          ...PLAIN_SHARD,
        },
        {
          name: 'b',
          named: true,
          address: '127.0.0.1:7002',
          host: '127.0.0.1',
          port: 7002,
          slots: [[5461, 10922]],
          weight: 1,
          ...PLAIN_SHARD,
        },
        {
          name: 'c',
          named: true,
          address: '127.0.0.1:7003',
          host: '127.0.0.1',
          port: 7003,
          slots: [[10923, 16383]],
          weight: 1,
          ...PLAIN_SHARD,
        },
      ],
      ring: { hash: 'fnv1a_64', distribution: 'ketama' },
      routing: [],
      cluster: null,
      sentinel: null,
      readFrom: 'master',
      replicaChecks: { intervalMs: 1000, maxLagBytes: 1_048_576 },
      backend: {
        connections: 1,
        connectTimeoutMs: 1000,
        timeoutMs: 2000,
        busyReplyThresholdMs: 5000,
        password: null,
        passwordFile: null,
        username: null,
        maxPending: 8192,
        sessionConnections: { max: 1024, maxIdle: 64, idleTimeoutS: 60 },
        tls: BACKEND_TLS_OFF,
      },
      clients: {
        max: 10000,
        idleTimeoutS: 0,
        password: null,
        passwordFile: null,
        users: [],
        authFailures: { delayAfter: 3, delayMs: 100, maxDelayMs: 5000, closeAfter: 10, delayCorrect: false },
        maxInflight: 1024,
        maxOutputBytes: 67108864,
        partialCommandTimeoutS: 30,
        maxNewConnectionsPerS: 0,
      },
      limits: { maxBulkBytes: 536870912, maxArgs: 1048576, maxInlineBytes: 65536, maxBufferedBytes: 1073741824 },
      log: { level: 'info' },
      commands: { deny: [], scripts: 'allow', ping: 'local', configBroadcast: false },
      metrics: {
        enabled: true,
        hotKeys: { enabled: true, k: 20, windowS: 60, sampleRate: 0.0625, export: 'key', readFromReplicas: false },
        slowlog: { thresholdMs: 10, maxEntries: 128, logKeys: false },
      },
      nearCache: {
        enabled: false,
        maxBytes: 67_108_864,
        maxEntryBytes: 65_536,
        admit: 'hot',
        ttlMs: 0,
        commands: ['GET', 'MGET', 'HGET', 'HGETALL', 'EXISTS'],
        coalesce: true,
      },
      migration: { enabled: true, stateFile: null },
      drain: { graceS: 10 },
      workers: 1,
      workersHeartbeatTimeoutMs: 5000,
    });
  });

  it('reads the near_cache section, and refuses admit: hot without hot-key tracking', () => {
    const c = configOf(
      slots('near_cache: { enabled: true, max_bytes: 1048576, admit: all, ttl_ms: 500, commands: [GET, HGET] }'),
    );
    expect(c.nearCache).toEqual({
      enabled: true,
      maxBytes: 1_048_576,
      maxEntryBytes: 65_536,
      admit: 'all',
      ttlMs: 500,
      commands: ['GET', 'HGET'],
      coalesce: true,
    });
    expect(errorsOf(slots('near_cache: { enabled: true }', 'metrics: { hot_keys: { enabled: false } }'))).toEqual([
      'config/test.yaml:12: near_cache.admit: hot needs hot-key tracking (metrics.enabled and metrics.hot_keys.enabled true); or use admit: all',
    ]);
    expect(errorsOf(slots('near_cache: { commands: [SET] }'))[0]).toMatch(
      /near_cache\.commands\[0\]: expected one of: GET, MGET, HGET, HGETALL, EXISTS; got "SET"/,
    );
  });

  it('reads the migration and drain sections', () => {
    const c = configOf(
      slots('migration: { enabled: false, state_file: /var/lib/keymux/migration.json }', 'drain: { grace_s: 25 }'),
    );
    expect(c.migration).toEqual({ enabled: false, stateFile: '/var/lib/keymux/migration.json' });
    expect(c.drain).toEqual({ graceS: 25 });
    expect(errorsOf(slots('drain: { grace_s: -1, grace: 3 }'))).toEqual([
      'config/test.yaml:12: drain.grace: unknown key (did you mean "grace_s"?)',
      'config/test.yaml:12: drain.grace_s: must be between 0 and 3600, got -1',
    ]);
  });

  it('reads every option, converting snake_case to camelCase', () => {
    const c = configOf(
      slots(
        'listen: "[::1]:6390"',
        'admin: 0.0.0.0:0',
        'hash_tag: "<>"',
        'backend: { connections: 4, connect_timeout_ms: 0, timeout_ms: 0, password: s3cret, username: proxy, max_pending: 7 }',
        'clients:',
        '  max: 1',
        '  idle_timeout_s: 60',
        '  password: pw',
        '  users: [{ name: app, password: "123" }, { name: ops, password: x }]',
        '  max_inflight: 1',
        '  max_output_bytes: 0',
        '  partial_command_timeout_s: 0',
        '  max_new_connections_per_s: 500',
        'limits: { max_bulk_bytes: 4294967296, max_args: 3, max_inline_bytes: 1, max_buffered_bytes: 0 }',
        'log: { level: silent }',
        'commands: { deny: [KEYS, FlushAll, keys, " debug "] }',
      ),
    );
    expect(c.listen).toEqual({ host: '::1', port: 6390 });
    expect(c.admin).toEqual({ host: '0.0.0.0', port: 0, tokenFile: null, publicMetrics: true, tls: SERVER_TLS_OFF });
    expect(c.hashTag).toBe('<>');
    expect(c.backend).toEqual({
      connections: 4,
      connectTimeoutMs: 0,
      timeoutMs: 0,
      busyReplyThresholdMs: 5000,
      password: 's3cret',
      passwordFile: null,
      username: 'proxy',
      maxPending: 7,
      sessionConnections: { max: 1024, maxIdle: 64, idleTimeoutS: 60 },
      tls: BACKEND_TLS_OFF,
    });
    expect(c.clients).toEqual({
      max: 1,
      idleTimeoutS: 60,
      password: 'pw',
      passwordFile: null,
      maxInflight: 1,
      maxOutputBytes: 0,
      authFailures: { delayAfter: 3, delayMs: 100, maxDelayMs: 5000, closeAfter: 10, delayCorrect: false },
      partialCommandTimeoutS: 0,
      maxNewConnectionsPerS: 500,
      users: [
        { name: 'app', password: '123', passwords: [], nopass: false, rules: null, operator: false },
        { name: 'ops', password: 'x', passwords: [], nopass: false, rules: null, operator: false },
      ],
    });
    expect(c.limits).toEqual({ maxBulkBytes: 2 ** 32, maxArgs: 3, maxInlineBytes: 1, maxBufferedBytes: 0 });
    expect(c.log.level).toBe('silent');
    expect(c.commands.deny).toEqual(['keys', 'flushall', 'debug']);
  });

  it('reads ring mode: weights, hash, unnamed shards named by their address', () => {
    const c = configOf(
      y(
        'mode: ring',
        'ring: { hash: md5 }',
        'shards:',
        '  - address: 10.0.0.1:6379',
        '    weight: 3',
        '  - name: b',
        '    address: "[fe80::1]:6379"',
      ),
    );
    expect(c.ring).toEqual({ hash: 'md5', distribution: 'ketama' });
    expect(c.shards).toEqual([
      {
        name: '10.0.0.1:6379',
        named: false,
        address: '10.0.0.1:6379',
        host: '10.0.0.1',
        port: 6379,
        slots: null,
        weight: 3,
        ...PLAIN_SHARD,
      },
      {
        name: 'b',
        named: true,
        address: '[fe80::1]:6379',
        host: 'fe80::1',
        port: 6379,
        slots: null,
        weight: 1,
        ...PLAIN_SHARD,
      },
    ]);
  });

  it('accepts slots as integers, "A-B" and "N" strings, sorts them and merges adjacent ranges', () => {
    const c = configOf(
      y(
        'mode: slots',
        'shards:',
        '  - address: h1:1',
        '    slots: [100-5460, 0 - 98, "99"]',
        '  - address: h2:1',
        '    slots:',
        '      - 16383',
        '      - 5461-16382',
      ),
    );
    expect(c.shards[0]!.slots).toEqual([[0, 5460]]);
    expect(c.shards[1]!.slots).toEqual([[5461, 16383]]);
  });

  it('turns hash tags off with "" or null', () => {
    expect(configOf(slots('hash_tag: ""')).hashTag).toBeNull();
    expect(configOf(slots('hash_tag: null')).hashTag).toBeNull();
    expect(configOf(slots('hash_tag: "{}"')).hashTag).toBe('{}');
  });

  it('treats empty sections as all defaults', () => {
    const c = configOf(
      slots('backend:', 'clients:', '  users:', 'limits: null', 'log: {}', 'commands:', '  deny:', 'admin:'),
    );
    expect(c.backend).toEqual(DEFAULTS.backend);
    expect(c.clients.users).toEqual([]);
    expect(c.limits).toEqual(DEFAULTS.limits);
    expect(c.commands.deny).toEqual([]);
    expect(c.admin).toBeNull();
  });

  it('follows YAML anchors and aliases', () => {
    const c = configOf(
      y('mode: slots', 'shards:', '  - address: h1:1', '    slots: &all [0-16383]', 'backend: &b { connections: 2 }'),
    );
    expect(c.shards[0]!.slots).toEqual([[0, 16383]]);
    expect(c.backend.connections).toBe(2);
  });

  it('returns a deeply frozen snapshot', () => {
    const c = configOf(slots('clients: { users: [{ name: a, password: b }] }', 'commands: { deny: [keys] }'));
    for (const o of [
      c,
      c.listen,
      c.shards,
      c.shards[0],
      c.shards[0]!.slots,
      c.shards[0]!.slots![0],
      c.ring,
      c.backend,
      c.clients,
      c.clients.users,
      c.clients.users[0],
      c.limits,
      c.log,
      c.commands,
      c.commands.deny,
    ]) {
      expect(Object.isFrozen(o)).toBe(true);
    }
    expect(() => {
      (c as { mode: string }).mode = 'ring';
    }).toThrow(TypeError);
    expect(() => {
      c.shards[0]!.slots!.push([1, 2]);
    }).toThrow(TypeError);
    expect(Object.isFrozen(DEFAULTS.backend)).toBe(true);
  });
});

describe('YAML syntax errors carry their line', () => {
  it('reports an unclosed quote', () => {
    expect(errorsOf(y('mode: slots', 'listen: "127.0.0.1:6380'))).toEqual([
      'config/test.yaml:3: invalid YAML: Missing closing "quote',
    ]);
  });

  it('reports bad indentation', () => {
    expect(errorsOf(y('mode: slots', 'backend:', '  connections: 1', ' timeout_ms: 2'))).toEqual([
      'config/test.yaml:4: invalid YAML: All mapping items must start at the same column',
    ]);
  });

  it('reports an unterminated flow sequence', () => {
    expect(errorsOf(y('mode: slots', 'shards: [1, 2', 'log: {}'))).toEqual([
      'config/test.yaml:3: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ]);
  });

  it('reports duplicate keys with the key', () => {
    expect(errorsOf(slots('backend:', '  connections: 1', '  connections: 2'))).toEqual([
      'config/test.yaml:14: duplicate key "connections" in the same mapping',
    ]);
  });

  it('reports several documents in one file', () => {
    expect(errorsOf(y('mode: slots', '---', 'mode: ring'))).toEqual([
      'config/test.yaml:2: invalid YAML: Source contains multiple documents; please use YAML.parseAllDocuments()',
    ]);
  });

  it('reports unknown tags', () => {
    expect(errorsOf(slots('log: { level: !env LOG_LEVEL }'))).toEqual([
      'config/test.yaml:12: invalid YAML: Unresolved tag: !env',
    ]);
  });

  it('reports aliases without an anchor', () => {
    expect(errorsOf(slots('backend: *defaults'))).toEqual([
      'config/test.yaml:12: invalid YAML: alias *defaults has no anchor &defaults before it',
    ]);
  });

  it('reports a file without a trailing newline on the right line', () => {
    expect(errorsOf('mode: slots\nlisten: "x')).toEqual(['config/test.yaml:2: invalid YAML: Missing closing "quote']);
  });
});

describe('document shape', () => {
  it('rejects an empty document', () => {
    const expected = [
      'config/test.yaml: the configuration is empty; expected a mapping with at least "mode" and "shards"',
    ];
    expect(errorsOf('')).toEqual(expected);
    expect(errorsOf('# only a comment\n')).toEqual(expected);
  });

  it('rejects a top level that is not a mapping', () => {
    expect(errorsOf(y('# comment', '- mode: slots'))).toEqual([
      'config/test.yaml:2: expected a mapping at the top level, got a list',
    ]);
    expect(errorsOf('slots\n')).toEqual([
      'config/test.yaml:1: expected a mapping at the top level, got a string ("slots")',
    ]);
  });

  it('requires mode and shards, reporting them at the mapping that lacks them', () => {
    expect(errorsOf(y('# comment', 'listen: 127.0.0.1:6380'))).toEqual([
      'config/test.yaml:2: mode: required (one of: slots, ring, cluster)',
      'config/test.yaml:2: shards: required: a list of shards, e.g. [{ address: "127.0.0.1:7001" }]',
    ]);
  });

  it('rejects an unknown mode with a suggestion', () => {
    expect(errorsOf(y('mode: slot', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "slot" (did you mean "slots"?)',
    ]);
    expect(errorsOf(y('mode: RING', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "RING" (did you mean "ring"?)',
    ]);
    expect(errorsOf(y('mode: redis-cluster', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "redis-cluster"',
    ]);
    expect(errorsOf(y('mode: 1', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got an integer (1)',
    ]);
  });

  it('rejects unknown top-level keys, suggesting the nearest known key', () => {
    expect(errorsOf(slots('admn: 127.0.0.1:9121', 'hashTag: "{}"', 'backends: {}', 'color: blue'))).toEqual([
      'config/test.yaml:12: admn: unknown key (did you mean "admin"?)',
      'config/test.yaml:13: hashTag: unknown key (did you mean "hash_tag"?)',
      'config/test.yaml:14: backends: unknown key (did you mean "backend"?)',
      'config/test.yaml:15: color: unknown key; expected one of: listen, listen_unix, admin, tls, mode, hash_tag, shards, ring, ' +
        'routing, cluster, sentinel, read_from, replica_checks, backend, clients, limits, log, commands, metrics, near_cache, migration, drain, workers, workers_heartbeat_timeout_ms',
    ]);
  });

  it('rejects __proto__ keys as unknown, wherever they are, without touching any prototype', () => {
    expect(
      errorsOf(ring('    __proto__: 2', 'backend:', '  __proto__: { connections: 9 }', '__proto__: { polluted: 1 }')),
    ).toEqual([
      'config/test.yaml:6: shards[1].__proto__: unknown key; expected one of: name, address, sentinel_master, replicas, read_from, slots, weight',
      `config/test.yaml:8: backend.__proto__: unknown key; expected one of: ${KNOWN_KEYS.backend.join(', ')}`,
      `config/test.yaml:9: __proto__: unknown key; expected one of: ${KNOWN_KEYS.root.join(', ')}`,
    ]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('rejects sections of the wrong type', () => {
    expect(errorsOf(slots('backend: 5', 'clients: [a]', 'limits: "x"', 'log: true', 'commands: [keys]'))).toEqual([
      'config/test.yaml:12: backend: expected a mapping, got an integer (5)',
      'config/test.yaml:13: clients: expected a mapping, got a list',
      'config/test.yaml:14: limits: expected a mapping, got a string ("x")',
      'config/test.yaml:15: log: expected a mapping, got a boolean (true)',
      'config/test.yaml:16: commands: expected a mapping, got a list',
    ]);
  });

  it('reports cross-field errors together with any other error, wherever it is', () => {
    // An integer that is not one (1.5) must not silence the rules that compare several values.
    expect(
      errorsOf(
        y(
          'mode: slots',
          'listen: 127.0.0.1:7001',
          'shards:',
          '  - name: a',
          '    address: 127.0.0.1:7001',
          '    slots: [0-100]',
          '  - name: a',
          '    address: 127.0.0.1:7002',
          '    slots: [50-16383]',
          'backend: { timeout_ms: 1.5, username: u }',
          'metrics: { hot_keys: { k: 2.5 } }',
        ),
      ),
    ).toEqual([
      'config/test.yaml:5: shards[0].address: same as listen (127.0.0.1:7001); keymux would forward to itself',
      'config/test.yaml:7: shards[1].name: duplicate shard name "a", already used by shards[0] at line 4',
      'config/test.yaml:9: shards[1].slots[0]: range 50-16383 overlaps shard "a" (0-100)',
      'config/test.yaml:10: backend.timeout_ms: expected an integer, got a number (1.5)',
      'config/test.yaml:10: backend.username: requires backend.password or backend.password_file (Redis ACL AUTH needs both)',
      'config/test.yaml:11: metrics.hot_keys.k: expected an integer, got a number (2.5)',
    ]);
  });

  it('reports ALL errors at once, in line order', () => {
    expect(
      errorsOf(
        y(
          'listen: 6380',
          'mode: slots',
          'hash_tag: "{"',
          'shards:',
          '  - name: a',
          '    address: 127.0.0.1:7001',
          '    slots: [0-16383]',
          '    weight: 2',
          'backend:',
          '  conections: 2',
          '  timeout_ms: -1',
          'clients: { max: 0 }',
          'log: { level: warning }',
        ),
      ),
    ).toEqual([
      'config/test.yaml:1: listen: expected "host:port" (a string), got an integer (6380); write e.g. "127.0.0.1:6380"',
      'config/test.yaml:3: hash_tag: expected two printable ASCII characters like "{}", got "{"',
      'config/test.yaml:8: shards[0].weight: only allowed when mode is ring (mode is slots)',
      'config/test.yaml:10: backend.conections: unknown key (did you mean "connections"?)',
      'config/test.yaml:11: backend.timeout_ms: must be between 0 and 2147483647, got -1',
      'config/test.yaml:12: clients.max: must be between 1 and 1000000, got 0',
      'config/test.yaml:13: log.level: expected one of: trace, debug, info, warn, error, fatal, silent; got "warning" ' +
        '(did you mean "warn"?)',
    ]);
  });
});

describe('listen and admin', () => {
  it('rejects malformed addresses', () => {
    expect(errorsOf(slots('listen: localhost', 'admin: ":9121"'))).toEqual([
      'config/test.yaml:12: listen: expected "host:port", got "localhost" (missing ":port")',
      'config/test.yaml:13: admin: missing host in ":9121" (e.g. "127.0.0.1:6380")',
    ]);
    expect(errorsOf(slots('listen: ::1:6380', 'admin: "[localhost]:9121"'))).toEqual([
      'config/test.yaml:12: listen: IPv6 addresses must be in brackets, e.g. "[::1]:6380", got "::1:6380"',
      'config/test.yaml:13: admin: "localhost" in brackets is not an IPv6 address',
    ]);
    expect(errorsOf(slots('listen: 127.0.0.1:65536', 'admin: 127.0.0.1:http'))).toEqual([
      'config/test.yaml:12: listen: port 65536 is out of range (0..65535)',
      'config/test.yaml:13: admin: port "http" is not a number',
    ]);
    expect(errorsOf(slots('listen: "bad host:1"', 'admin: null'))).toEqual([
      'config/test.yaml:12: listen: "bad host" is not a valid host name or IP address',
    ]);
    expect(errorsOf(slots('listen: null'))).toEqual([
      'config/test.yaml:12: listen: null (no plain-text port) needs tls.enabled: true or listen_unix, or clients could not connect at all',
    ]);
  });

  it('reads listen_unix: an absolute path, or { path, mode } with the mode an octal string', () => {
    expect(configOf(slots('listen_unix: /run/keymux/keymux.sock')).listenUnix).toEqual({
      path: '/run/keymux/keymux.sock',
      mode: null,
    });
    const both = configOf(slots('listen: null', 'listen_unix: { path: /run/k.sock, mode: "0660" }'));
    expect(both.listen).toBeNull();
    expect(both.listenUnix).toEqual({ path: '/run/k.sock', mode: 0o660 });
    for (const [written, mode] of [
      ['"777"', 0o777],
      ['"0o600"', 0o600],
      ['"0"', 0],
    ] as const) {
      expect(configOf(slots(`listen_unix: { path: /k.sock, mode: ${written} }`)).listenUnix?.mode, written).toBe(mode);
    }
    expect(configOf(slots()).listenUnix).toBeNull();
  });

  it('rejects a relative or too long listen_unix path, and a mode that is a number or not octal up to 0777', () => {
    expect(errorsOf(slots('listen_unix: keymux.sock'))).toEqual([
      'config/test.yaml:12: listen_unix: must be an absolute path, got "keymux.sock"',
    ]);
    expect(errorsOf(slots(`listen_unix: /${'x'.repeat(107)}`))).toEqual([
      'config/test.yaml:12: listen_unix: too long for a Unix socket (108 bytes; at most 107)',
    ]);
    expect(errorsOf(slots('listen_unix: { path: /k.sock, mode: 0660 }'))).toEqual([
      'config/test.yaml:12: listen_unix.mode: expected an octal mode as a quoted string (e.g. "0660"), got an integer ' +
        '(660); quote it (YAML reads an unquoted 0660 as the decimal number 660)',
    ]);
    for (const mode of ['"0800"', '"1777"', '"rw-rw----"', '""']) {
      expect(errorsOf(slots(`listen_unix: { path: /k.sock, mode: ${mode} }`)), mode).toEqual([
        `config/test.yaml:12: listen_unix.mode: expected an octal mode 0..0777 (e.g. "0660"), got ${mode}`,
      ]);
    }
    expect(errorsOf(slots('listen_unix: { mode: "0660" }'))).toEqual([
      'config/test.yaml:12: listen_unix.path: required',
    ]);
  });

  it('rejects an admin address equal to listen', () => {
    expect(errorsOf(slots('listen: 127.0.0.1:6380', 'admin: 127.0.0.1:6380'))).toEqual([
      'config/test.yaml:13: admin: same address as listen (127.0.0.1:6380)',
    ]);
    expect(configOf(slots('listen: 127.0.0.1:0', 'admin: 127.0.0.1:0')).admin).toMatchObject({
      host: '127.0.0.1',
      port: 0,
    });
  });
});

describe('hash_tag', () => {
  it('explains the unquoted {} trap', () => {
    expect(errorsOf(slots('hash_tag: {}'))).toEqual([
      'config/test.yaml:12: hash_tag: an unquoted {} is an empty YAML mapping; write "{}" in quotes',
    ]);
  });

  it('requires exactly two printable ASCII characters', () => {
    expect(errorsOf(slots('hash_tag: "{{}"'))).toEqual([
      'config/test.yaml:12: hash_tag: expected two printable ASCII characters like "{}", got "{{}"',
    ]);
    expect(errorsOf(slots('hash_tag: "«»"'))).toEqual([
      'config/test.yaml:12: hash_tag: expected two printable ASCII characters like "{}", got "«»"',
    ]);
    expect(errorsOf(slots('hash_tag: 12'))).toEqual([
      'config/test.yaml:12: hash_tag: expected a two-character string like "{}", got an integer (12)',
    ]);
  });
});

describe('shards', () => {
  it('must be a non-empty list of mappings', () => {
    expect(errorsOf(y('mode: slots', 'shards: 127.0.0.1:7001'))).toEqual([
      'config/test.yaml:2: shards: expected a list of shards, got a string ("127.0.0.1:7001")',
    ]);
    expect(errorsOf(y('mode: slots', 'shards: []'))).toEqual([
      'config/test.yaml:2: shards: must list at least one shard',
    ]);
    expect(errorsOf(y('mode: ring', 'shards:', '  - 127.0.0.1:7001', '  - address: 127.0.0.1:7002'))).toEqual([
      'config/test.yaml:3: shards[0]: expected a mapping with "address", got a string ("127.0.0.1:7001")',
    ]);
  });

  it('rejects unknown shard keys with a suggestion', () => {
    expect(errorsOf(ring('    adress: 127.0.0.1:7003', '    wieght: 2', '    role: primary'))).toEqual([
      'config/test.yaml:6: shards[1].adress: unknown key (did you mean "address"?)',
      'config/test.yaml:7: shards[1].wieght: unknown key (did you mean "weight"?)',
      'config/test.yaml:8: shards[1].role: unknown key; expected one of: name, address, sentinel_master, replicas, read_from, slots, weight',
    ]);
  });

  it('requires an address, reporting it at the shard', () => {
    expect(errorsOf(ring('  - name: c'))).toEqual([
      'config/test.yaml:6: shards[2].address: required (e.g. "127.0.0.1:7001"), or sentinel_master with a sentinel section',
    ]);
  });

  it('rejects bad addresses, including port 0', () => {
    expect(
      errorsOf(
        y(
          'mode: ring',
          'shards:',
          '  - address: 127.0.0.1:0',
          '  - address: 7001',
          '  - address: "[::1]"',
          '  - address: 10.0.0.1:99999',
        ),
      ),
    ).toEqual([
      'config/test.yaml:3: shards[0].address: port 0 is out of range (1..65535)',
      'config/test.yaml:4: shards[1].address: expected "host:port" (a string), got an integer (7001); write e.g. "127.0.0.1:7001"',
      'config/test.yaml:5: shards[2].address: expected "host:port", got "[::1]" (missing ":port")',
      'config/test.yaml:6: shards[3].address: port 99999 is out of range (1..65535)',
    ]);
  });

  it('rejects a shard at the listen address', () => {
    expect(errorsOf(ring('listen: 127.0.0.1:7002'))).toEqual([
      'config/test.yaml:5: shards[1].address: same as listen (127.0.0.1:7002); keymux would forward to itself',
    ]);
  });

  it('rejects duplicate names and addresses, naming both lines', () => {
    expect(
      errorsOf(
        y(
          'mode: ring',
          'shards:',
          '  - name: a',
          '    address: 127.0.0.1:7001',
          '  - name: b',
          '    address: LOCALHOST:7002',
          '  - name: a',
          '    address: localhost:7002',
        ),
      ),
    ).toEqual([
      'config/test.yaml:7: shards[2].name: duplicate shard name "a", already used by shards[0] at line 3',
      'config/test.yaml:8: shards[2].address: duplicate address localhost:7002, already used by shards[1] at line 6',
    ]);
  });

  it("rejects an unnamed shard whose address is another shard's name", () => {
    expect(
      errorsOf(
        y(
          'mode: ring',
          'shards:',
          '  - name: 127.0.0.1:7002',
          '    address: 127.0.0.1:7001',
          '  - address: 127.0.0.1:7002',
        ),
      ),
    ).toEqual([
      'config/test.yaml:5: shards[1].address: duplicate shard name "127.0.0.1:7002" (a shard without a name is named ' +
        'by its address or sentinel_master), already used by shards[0] at line 3',
    ]);
  });

  it('rejects, in ring mode, two shards that hash as the same ketama key (as nutcracker -t does)', () => {
    // An unnamed shard on port 11211 hashes as its host alone (twemproxy's libmemcached rule): the same points as a
    // shard named after that host. The names differ ("127.0.0.1:11211", "127.0.0.1"); the ring cannot hold both.
    const shards = ['shards:', '  - address: 127.0.0.1:7001', '  - address: 127.0.0.1:11211', '  - name: "127.0.0.1"'];
    expect(errorsOf(y('mode: ring', ...shards, '    address: 127.0.0.1:7003'))).toEqual([
      'config/test.yaml:5: shards[2].name: shard "127.0.0.1" hashes on the ring as "127.0.0.1", as does shard ' +
        '"127.0.0.1:11211" (shards[1] at line 4); give one of them another name (an unnamed shard hashes as its ' +
        'host:port, on port 11211 as its host alone, as in twemproxy)',
    ]);
    // Slots mode does not hash names: the same shards are fine there.
    const inSlots = y(
      'mode: slots',
      'shards:',
      '  - { address: 127.0.0.1:7001, slots: [0-5000] }',
      '  - { address: 127.0.0.1:11211, slots: [5001-10000] }',
      '  - { name: "127.0.0.1", address: 127.0.0.1:7003, slots: [10001-16383] }',
    );
    expect(configOf(inSlots).shards.map((s) => s.name)).toEqual(['127.0.0.1:7001', '127.0.0.1:11211', '127.0.0.1']);
  });

  it('rejects empty or non-string names', () => {
    expect(errorsOf(ring('  - name: ""', '    address: h:3', '  - name: 4', '    address: h:4'))).toEqual([
      'config/test.yaml:6: shards[2].name: must not be empty',
      'config/test.yaml:8: shards[3].name: expected a string, got an integer (4); quote it to make it a string',
    ]);
  });

  it('accepts keys only in the modes that use them', () => {
    expect(errorsOf(ring('    slots: [0-16383]', 'ring: { hash: md5 }'))).toEqual([
      'config/test.yaml:6: shards[1].slots: only allowed when mode is slots (mode is ring)',
    ]);
    expect(errorsOf(slots('ring: { hash: md5 }'))).toEqual([
      'config/test.yaml:12: ring: only allowed when mode is ring (mode is slots)',
    ]);
  });

  it('still checks slots and weights when the mode itself is wrong', () => {
    expect(errorsOf(y('mode: slotz', 'shards:', '  - address: h:1', '    slots: [0-99999]', '    weight: 0'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "slotz" (did you mean "slots"?)',
      'config/test.yaml:4: shards[0].slots[0]: range 0-99999: slot 99999 is out of range (0..16383)',
      'config/test.yaml:5: shards[0].weight: must be between 1 and 1000000, got 0',
    ]);
  });
});

describe('slots mode', () => {
  it('requires slots on every shard', () => {
    expect(
      errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '  - address: h:2')),
    ).toEqual(['config/test.yaml:5: shards[1].slots: required when mode is slots']);
  });

  it('rejects slots that are not a non-empty list', () => {
    expect(errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: 0-16383'))).toEqual([
      'config/test.yaml:4: shards[0].slots: expected a list of slots and ranges like [0-5460], got a string ("0-16383")',
    ]);
    expect(
      errorsOf(
        y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '  - address: h:2', '    slots: []'),
      ),
    ).toEqual(['config/test.yaml:6: shards[1].slots: must list at least one slot or range']);
  });

  it('rejects malformed, out-of-range and reversed items, one error per item, without coverage noise', () => {
    expect(
      errorsOf(
        y(
          'mode: slots',
          'shards:',
          '  - address: h:1',
          '    slots:',
          '      - 0-100',
          '      - abc',
          '      - 16384',
          '      - 200-16384',
          '      - 300-250',
          '      - 1.5',
          '      - -1',
          '      - "5-"',
          '      - [1, 2]',
        ),
      ),
    ).toEqual([
      'config/test.yaml:6: shards[0].slots[1]: expected a slot number or a range "A-B" (0..16383), got a string ("abc")',
      'config/test.yaml:7: shards[0].slots[2]: slot 16384 is out of range (0..16383)',
      'config/test.yaml:8: shards[0].slots[3]: range 200-16384: slot 16384 is out of range (0..16383)',
      'config/test.yaml:9: shards[0].slots[4]: range 300-250 is reversed; write 250-300',
      'config/test.yaml:10: shards[0].slots[5]: expected a slot number or a range "A-B" (0..16383), got a number (1.5)',
      'config/test.yaml:11: shards[0].slots[6]: slot -1 is out of range (0..16383)',
      'config/test.yaml:12: shards[0].slots[7]: expected a slot number or a range "A-B" (0..16383), got a string ("5-")',
      'config/test.yaml:13: shards[0].slots[8]: expected a slot number or a range "A-B" (0..16383), got a list',
    ]);
  });

  it('reports overlaps between shards, naming both shards and the earlier range', () => {
    expect(
      errorsOf(
        y(
          'mode: slots',
          'shards:',
          '  - name: a',
          '    address: h:1',
          '    slots: [0-5460]',
          '  - name: b',
          '    address: h:2',
          '    slots: [5000-6000, 6001-16383]',
        ),
      ),
    ).toEqual(['config/test.yaml:8: shards[1].slots[0]: range 5000-6000 overlaps shard "a" (0-5460)']);
  });

  it('reports one overlap per earlier range hit, single slots and overlaps within one shard', () => {
    expect(
      errorsOf(
        y(
          'mode: slots',
          'shards:',
          '  - name: a',
          '    address: h:1',
          '    slots: [0-99, 200-299, 1000-16383]',
          '  - address: h:2',
          '    slots:',
          '      - 100-999',
          '      - 50-250',
          '      - 1000',
          '      - 900-950',
        ),
      ),
    ).toEqual([
      'config/test.yaml:8: shards[1].slots[0]: range 100-999 overlaps shard "a" (200-299)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps shard "a" (0-99)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps shard "a" (200-299)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps range 100-999 of the same shard',
      'config/test.yaml:10: shards[1].slots[2]: slot 1000 overlaps shard "a" (1000-16383)',
      'config/test.yaml:11: shards[1].slots[3]: range 900-950 overlaps range 100-999 of the same shard',
    ]);
  });

  it('reports slots assigned to no shard, as ranges and single slots', () => {
    expect(
      errorsOf(
        y('mode: slots', 'shards:', '  - name: a', '    address: h:1', '    slots: [0-5460, 5471-9999, 10001-16382]'),
      ),
    ).toEqual([
      'config/test.yaml:2: shards: slots 5461-5470 are not assigned to any shard',
      'config/test.yaml:2: shards: slot 10000 is not assigned to any shard',
      'config/test.yaml:2: shards: slot 16383 is not assigned to any shard',
    ]);
  });

  it('summarises gaps beyond the first ten', () => {
    const items = Array.from({ length: 20 }, (_, i) => i * 2); // 0, 2, ..., 38: gaps 1, 3, ..., 37 and 39-16383
    const errors = errorsOf(y('mode: slots', 'shards:', '  - address: h:1', `    slots: [${items.join(', ')}]`));
    expect(errors).toHaveLength(11);
    expect(errors[0]).toBe('config/test.yaml:2: shards: slot 1 is not assigned to any shard');
    expect(errors[9]).toBe('config/test.yaml:2: shards: slot 19 is not assigned to any shard');
    expect(errors[10]).toBe('config/test.yaml:2: shards: and 10 more unassigned ranges (16354 slots)');
  });

  it('rejects weight in slots mode', () => {
    expect(errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '    weight: 2'))).toEqual([
      'config/test.yaml:5: shards[0].weight: only allowed when mode is ring (mode is slots)',
    ]);
  });
});

describe('ring mode', () => {
  it('validates weights', () => {
    expect(
      errorsOf(
        ring(
          '    weight: 0',
          '  - address: h:3',
          '    weight: 1.5',
          '  - address: h:4',
          '    weight: "2"',
          '  - address: h:5',
          '    weight: 1000001',
        ),
      ),
    ).toEqual([
      'config/test.yaml:6: shards[1].weight: must be between 1 and 1000000, got 0',
      'config/test.yaml:8: shards[2].weight: expected an integer, got a number (1.5)',
      'config/test.yaml:10: shards[3].weight: expected an integer, got a string ("2")',
      'config/test.yaml:12: shards[4].weight: must be between 1 and 1000000, got 1000001',
    ]);
  });

  it('validates the ring section', () => {
    expect(errorsOf(ring('ring:', '  hash: fnv1a64', '  distribution: modula', '  points: 160'))).toEqual([
      'config/test.yaml:7: ring.hash: expected one of: one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, ' +
        'fnv1_32, fnv1a_32, hsieh, murmur, jenkins; got "fnv1a64" (did you mean "fnv1a_64"?)',
      'config/test.yaml:8: ring.distribution: expected one of: ketama; got "modula"',
      'config/test.yaml:9: ring.points: unknown key; expected one of: hash, distribution',
    ]);
    expect(errorsOf(ring('ring: { hash: MD5 }'))).toEqual([
      'config/test.yaml:6: ring.hash: expected one of: one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, ' +
        'fnv1_32, fnv1a_32, hsieh, murmur, jenkins; got "MD5" (did you mean "md5"?)',
    ]);
    expect(errorsOf(ring('ring: fnv1a_64'))).toEqual([
      'config/test.yaml:6: ring: expected a mapping, got a string ("fnv1a_64")',
    ]);
  });

  it('defaults the ring section', () => {
    expect(configOf(ring()).ring).toEqual({ hash: 'fnv1a_64', distribution: 'ketama' });
    expect(configOf(ring('ring:')).ring).toEqual({ hash: 'fnv1a_64', distribution: 'ketama' });
  });
});

describe('cluster mode', () => {
  const CLUSTER_DEFAULTS = {
    readFrom: 'master',
    refreshIntervalMs: 5000,
    maxRedirections: 5,
    retry: { attempts: 8, baseDelayMs: 20, maxDelayMs: 500 },
  };
  /** A valid cluster-mode document (lines 1..3) followed by `extra` lines (starting at line 4). */
  const cluster = (...extra: string[]): string => y('mode: cluster', 'cluster:', '  seeds: [127.0.0.1:7000]', ...extra);

  it('reads seeds and applies the defaults; there are no shards', () => {
    const c = configOf(y('mode: cluster', 'cluster:', '  seeds: [127.0.0.1:7000, "[::1]:7001", redis-0.redis:6379]'));
    expect(c.mode).toBe('cluster');
    expect(c.shards).toEqual([]);
    expect(c.cluster).toEqual({
      seeds: [
        { address: '127.0.0.1:7000', host: '127.0.0.1', port: 7000 },
        { address: '[::1]:7001', host: '::1', port: 7001 },
        { address: 'redis-0.redis:6379', host: 'redis-0.redis', port: 6379 },
      ],
      ...CLUSTER_DEFAULTS,
    });
    expect(Object.isFrozen(c.cluster)).toBe(true);
    expect(Object.isFrozen(c.cluster!.seeds[0])).toBe(true);
    expect(Object.isFrozen(c.cluster!.retry)).toBe(true);
    expect(DEFAULTS.cluster).toEqual(CLUSTER_DEFAULTS);
  });

  it('reads every option, converting snake_case to camelCase', () => {
    const c = configOf(
      y(
        'mode: cluster',
        'cluster:',
        '  seeds:',
        '    - 10.0.0.1:7000',
        '    - " 10.0.0.2:7000 "',
        '  read_from: prefer-replica',
        '  refresh_interval_ms: 100',
        '  max_redirections: 100',
        '  retry: { attempts: 0, base_delay_ms: 60000, max_delay_ms: 60000 }',
        'backend: { password: pw }',
      ),
    );
    expect(c.cluster).toEqual({
      seeds: [
        { address: '10.0.0.1:7000', host: '10.0.0.1', port: 7000 },
        { address: '10.0.0.2:7000', host: '10.0.0.2', port: 7000 },
      ],
      readFrom: 'prefer-replica',
      refreshIntervalMs: 100,
      maxRedirections: 100,
      retry: { attempts: 0, baseDelayMs: 60000, maxDelayMs: 60000 },
    });
    expect(c.backend.password).toBe('pw');
    expect(configOf(cluster('  read_from: replica')).cluster!.readFrom).toBe('replica');
    expect(configOf(cluster('  retry:')).cluster!.retry).toEqual(CLUSTER_DEFAULTS.retry);
    expect(configOf(cluster('  retry: { max_delay_ms: 20 }')).cluster!.retry).toEqual({
      attempts: 8,
      baseDelayMs: 20,
      maxDelayMs: 20,
    });
  });

  it('requires the cluster section', () => {
    expect(errorsOf(y('mode: cluster'))).toEqual([
      'config/test.yaml:1: cluster: required when mode is cluster: a mapping with "seeds", e.g. { seeds: [127.0.0.1:7000] }',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster:'))).toEqual([
      'config/test.yaml:2: cluster: required when mode is cluster: a mapping with "seeds", e.g. { seeds: [127.0.0.1:7000] }',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster: 127.0.0.1:7000'))).toEqual([
      'config/test.yaml:2: cluster: expected a mapping with "seeds", got a string ("127.0.0.1:7000")',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster: [127.0.0.1:7000]'))).toEqual([
      'config/test.yaml:2: cluster: expected a mapping with "seeds", got a list',
    ]);
  });

  it('refuses shards and ring in cluster mode', () => {
    expect(errorsOf(cluster('shards:', '  - address: 127.0.0.1:7001', 'ring: { hash: md5 }'))).toEqual([
      'config/test.yaml:4: shards: only allowed when mode is slots or ring (mode is cluster)',
      'config/test.yaml:6: ring: only allowed when mode is ring (mode is cluster)',
    ]);
  });

  it('refuses a cluster section in the other modes, which still require shards', () => {
    expect(errorsOf(slots('cluster: { seeds: [127.0.0.1:7000] }'))).toEqual([
      'config/test.yaml:12: cluster: only allowed when mode is cluster (mode is slots)',
    ]);
    expect(errorsOf(ring('cluster:', '  seeds: [127.0.0.1:7000]'))).toEqual([
      'config/test.yaml:6: cluster: only allowed when mode is cluster (mode is ring)',
    ]);
    expect(errorsOf(y('mode: ring', 'cluster: { seeds: [127.0.0.1:7000] }'))).toEqual([
      'config/test.yaml:1: shards: required: a list of shards, e.g. [{ address: "127.0.0.1:7001" }]',
      'config/test.yaml:2: cluster: only allowed when mode is cluster (mode is ring)',
    ]);
  });

  it('with a misspelt mode, suggests cluster and still checks the cluster section, without asking for shards', () => {
    expect(errorsOf(y('mode: clustr', 'cluster: { seeds: [127.0.0.1:7000] }'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "clustr" (did you mean "cluster"?)',
    ]);
    expect(errorsOf(y('mode: Cluster', 'cluster:', '  seeds: []'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring, cluster; got "Cluster" (did you mean "cluster"?)',
      'config/test.yaml:3: cluster.seeds: must list at least one seed node',
    ]);
  });

  it('requires seeds as a non-empty list', () => {
    expect(errorsOf(y('mode: cluster', 'cluster:', '  read_from: master'))).toEqual([
      'config/test.yaml:2: cluster.seeds: required: a list of cluster nodes to discover the cluster from, e.g. [127.0.0.1:7000]',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster:', '  seeds:'))).toEqual([
      'config/test.yaml:3: cluster.seeds: required: a list of cluster nodes to discover the cluster from, e.g. [127.0.0.1:7000]',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster:', '  seeds: []'))).toEqual([
      'config/test.yaml:3: cluster.seeds: must list at least one seed node',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster:', '  seeds: 127.0.0.1:7000'))).toEqual([
      'config/test.yaml:3: cluster.seeds: expected a list of "host:port" addresses, got a string ("127.0.0.1:7000"); ' +
        'write [127.0.0.1:7000]',
    ]);
    expect(errorsOf(y('mode: cluster', 'cluster:', '  seeds: { a: 1 }'))).toEqual([
      'config/test.yaml:3: cluster.seeds: expected a list of "host:port" addresses, got a mapping',
    ]);
  });

  it('checks every seed: form, port, uniqueness, not keymux itself', () => {
    expect(
      errorsOf(
        y(
          'mode: cluster',
          'listen: 127.0.0.1:6380',
          'cluster:',
          '  seeds:',
          '    - 7000',
          '    - 127.0.0.1',
          '    - ::1:7000',
          '    - 127.0.0.1:0',
          '    - 127.0.0.1:7000',
          '    - 127.0.0.1:7000',
          '    - 127.0.0.1:6380',
          '    - { address: 127.0.0.1:7001 }',
          '    - "[localhost]:7002"',
        ),
      ),
    ).toEqual([
      'config/test.yaml:5: cluster.seeds[0]: expected "host:port" (a string), got an integer (7000); write e.g. "127.0.0.1:7000"',
      'config/test.yaml:6: cluster.seeds[1]: expected "host:port", got "127.0.0.1" (missing ":port")',
      'config/test.yaml:7: cluster.seeds[2]: IPv6 addresses must be in brackets, e.g. "[::1]:6380", got "::1:7000"',
      'config/test.yaml:8: cluster.seeds[3]: port 0 is out of range (1..65535)',
      'config/test.yaml:10: cluster.seeds[5]: duplicate seed 127.0.0.1:7000, already listed as cluster.seeds[4] at line 9',
      'config/test.yaml:11: cluster.seeds[6]: same as listen (127.0.0.1:6380); keymux would discover itself',
      'config/test.yaml:12: cluster.seeds[7]: expected "host:port" (a string), got a mapping',
      'config/test.yaml:13: cluster.seeds[8]: "localhost" in brackets is not an IPv6 address',
    ]);
  });

  it('checks read_from, intervals, redirections and the retry section', () => {
    expect(
      errorsOf(
        cluster(
          '  read_from: replicas',
          '  refresh_interval_ms: 99',
          '  max_redirections: 0',
          '  retry:',
          '    attempts: -1',
          '    base_delay_ms: 0',
          '    max_delay_ms: 60001',
          '    jitter: true',
        ),
      ),
    ).toEqual([
      'config/test.yaml:4: cluster.read_from: expected one of: master, replica, prefer-replica; got "replicas" ' +
        '(did you mean "replica"?)',
      'config/test.yaml:5: cluster.refresh_interval_ms: must be between 100 and 2147483647, got 99',
      'config/test.yaml:6: cluster.max_redirections: must be between 1 and 100, got 0',
      'config/test.yaml:8: cluster.retry.attempts: must be between 0 and 100, got -1',
      'config/test.yaml:9: cluster.retry.base_delay_ms: must be between 1 and 60000, got 0',
      'config/test.yaml:10: cluster.retry.max_delay_ms: must be between 1 and 60000, got 60001',
      'config/test.yaml:11: cluster.retry.jitter: unknown key; expected one of: attempts, base_delay_ms, max_delay_ms',
    ]);
    expect(errorsOf(cluster('  read_from: 1', '  max_redirections: "5"', '  retry: 3'))).toEqual([
      'config/test.yaml:4: cluster.read_from: expected one of: master, replica, prefer-replica; got an integer (1)',
      'config/test.yaml:5: cluster.max_redirections: expected an integer, got a string ("5")',
      'config/test.yaml:6: cluster.retry: expected a mapping, got an integer (3)',
    ]);
  });

  it('requires max_delay_ms >= base_delay_ms, reported on the key that was written', () => {
    expect(errorsOf(cluster('  retry: { base_delay_ms: 100, max_delay_ms: 50 }'))).toEqual([
      'config/test.yaml:4: cluster.retry.max_delay_ms: max_delay_ms (50) must not be less than base_delay_ms (100)',
    ]);
    expect(errorsOf(cluster('  retry:', '    base_delay_ms: 1000'))).toEqual([
      'config/test.yaml:5: cluster.retry.base_delay_ms: max_delay_ms (500) must not be less than base_delay_ms (1000)',
    ]);
  });

  it('rejects unknown cluster keys with suggestions', () => {
    expect(
      errorsOf(y('mode: cluster', 'cluster:', '  seed: [127.0.0.1:7000]', '  readFrom: replica', '  nodes: []')),
    ).toEqual([
      'config/test.yaml:2: cluster.seeds: required: a list of cluster nodes to discover the cluster from, e.g. [127.0.0.1:7000]',
      'config/test.yaml:3: cluster.seed: unknown key (did you mean "seeds"?)',
      'config/test.yaml:4: cluster.readFrom: unknown key (did you mean "read_from"?)',
      'config/test.yaml:5: cluster.nodes: unknown key; expected one of: seeds, read_from, refresh_interval_ms, ' +
        'max_redirections, retry',
    ]);
  });

  it('config/cluster.yaml is a commented cluster example', () => {
    const c = loadConfigFile('config/cluster.yaml');
    expect(c.mode).toBe('cluster');
    expect(c.shards).toEqual([]);
    expect(c.cluster!.seeds.map((s) => s.address)).toEqual(['10.0.0.21:7000', '10.0.0.22:7000', '10.0.0.23:7000']);
    expect({ ...c.cluster!, seeds: undefined }).toEqual({ ...DEFAULTS.cluster, seeds: undefined });
  });
});

describe('backend', () => {
  it('checks integer types and ranges', () => {
    expect(
      errorsOf(slots('backend:', '  connections: 65', '  connect_timeout_ms: 1.5', '  timeout_ms: "2000"')),
    ).toEqual([
      'config/test.yaml:13: backend.connections: must be between 1 and 64, got 65',
      'config/test.yaml:14: backend.connect_timeout_ms: expected an integer, got a number (1.5)',
      'config/test.yaml:15: backend.timeout_ms: expected an integer, got a string ("2000")',
    ]);
    expect(errorsOf(slots('backend: { connections: 0, connect_timeout_ms: 2147483648, timeout_ms: null }'))).toEqual([
      'config/test.yaml:12: backend.connections: must be between 1 and 64, got 0',
      'config/test.yaml:12: backend.connect_timeout_ms: must be between 0 and 2147483647, got 2147483648',
      'config/test.yaml:12: backend.timeout_ms: expected an integer, got null',
    ]);
  });

  it('requires password with username, and non-empty strings for secrets', () => {
    expect(errorsOf(slots('backend:', '  username: proxy'))).toEqual([
      'config/test.yaml:13: backend.username: requires backend.password or backend.password_file (Redis ACL AUTH needs both)',
    ]);
    expect(errorsOf(slots('backend:', '  username: proxy', '  password: null'))).toEqual([
      'config/test.yaml:13: backend.username: requires backend.password or backend.password_file (Redis ACL AUTH needs both)',
    ]);
    expect(errorsOf(slots('backend:', '  password: ""', '  username: 12345'))).toEqual([
      'config/test.yaml:13: backend.password: must not be empty (use null, or leave it out, for none)',
      'config/test.yaml:14: backend.username: expected a string or null, got an integer (12345); quote it to make it a string',
    ]);
    expect(errorsOf(slots('backend: { password: true }'))).toEqual([
      'config/test.yaml:12: backend.password: expected a string or null, got a boolean (true); quote it to make it a string',
    ]);
  });

  it('rejects unknown keys with camelCase and typo suggestions', () => {
    expect(errorsOf(slots('backend:', '  connectTimeoutMs: 5', '  timeout: 5', '  pool: 3'))).toEqual([
      'config/test.yaml:13: backend.connectTimeoutMs: unknown key (did you mean "connect_timeout_ms"?)',
      'config/test.yaml:14: backend.timeout: unknown key (did you mean "timeout_ms"?)',
      'config/test.yaml:15: backend.pool: unknown key; expected one of: connections, connect_timeout_ms, timeout_ms, ' +
        'busy_reply_threshold_ms, password, password_file, username, max_pending, session_connections, tls',
    ]);
  });
});

describe('clients', () => {
  it('checks integer ranges', () => {
    expect(
      errorsOf(
        slots('clients:', '  max: 1000001', '  idle_timeout_s: -1', '  max_inflight: 0', '  max_output_bytes: -1'),
      ),
    ).toEqual([
      'config/test.yaml:13: clients.max: must be between 1 and 1000000, got 1000001',
      'config/test.yaml:14: clients.idle_timeout_s: must be between 0 and 2147483, got -1',
      'config/test.yaml:15: clients.max_inflight: must be between 1 and 1000000, got 0',
      'config/test.yaml:16: clients.max_output_bytes: must be between 0 and 1099511627776, got -1',
    ]);
    expect(errorsOf(slots('backend: { max_pending: 0 }'))).toEqual([
      'config/test.yaml:12: backend.max_pending: must be between 1 and 100000000, got 0',
    ]);
  });

  it('requires name and password on every user', () => {
    expect(
      errorsOf(
        slots(
          'clients:',
          '  password: ""',
          '  users:',
          '    - name: app',
          '    - password: x',
          '    - name: ""',
          '      password: 123',
          '    - ops',
          '    - { name: b, password: c, role: admin }',
        ),
      ),
    ).toEqual([
      'config/test.yaml:13: clients.password: must not be empty (use null, or leave it out, for none)',
      'config/test.yaml:15: clients.users[0].password: required (or passwords: [...], or nopass: true)',
      'config/test.yaml:16: clients.users[1].name: required',
      'config/test.yaml:17: clients.users[2].name: must not be empty',
      'config/test.yaml:18: clients.users[2].password: expected a string or null, got an integer (123); quote it to make it a string',
      'config/test.yaml:19: clients.users[3]: expected a mapping with "name" and "password", got a string ("ops")',
      'config/test.yaml:20: clients.users[4].role: unknown key (did you mean "rules"?)',
    ]);
  });

  it('reads users with several passwords, nopass, ACL rules and the operator flag, and words rule errors as Redis', () => {
    const c = configOf(
      slots(
        'clients:',
        '  users:',
        '    - { name: app, passwords: [a, b], rules: "+@all -@dangerous ~app:* &news:*" }',
        '    - { name: default, nopass: true, rules: "+ping ~nothing" }',
        '    - { name: ops, password: x, operator: true }',
        '    - { name: hashed, rules: "on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 allkeys" }',
      ),
    );
    expect(c.clients.users.map((u) => [u.name, u.password, u.passwords, u.nopass, u.rules, u.operator])).toEqual([
      ['app', null, ['a', 'b'], false, '+@all -@dangerous ~app:* &news:*', false],
      ['default', null, [], true, '+ping ~nothing', false],
      ['ops', 'x', [], false, null, true],
      [
        'hashed',
        null,
        [],
        false,
        'on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 allkeys',
        false,
      ],
    ]);
    expect(
      errorsOf(
        slots(
          'clients:',
          '  password: pw',
          '  users:',
          '    - { name: a, password: x, rules: "+nosuch +@nosuch foo %X~k allkeys ~more (+get) +select|0" }',
          '    - { name: b, password: x, nopass: true }',
          '    - { name: default, password: y }',
        ),
      ),
    ).toEqual([
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '+@nosuch': Unknown command or category name in ACL",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier 'foo': Syntax error",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '%X~k': Syntax error",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '~more': Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '(+get)': keymux does not support selectors",
      "config/test.yaml:15: clients.users[0].rules: Error in ACL SETUSER modifier '+select|0': keymux does not support allowing a command's first argument (e.g. +select|0)",
      'config/test.yaml:16: clients.users[1].nopass: nopass: true takes no password; remove password(s)',
      'config/test.yaml:17: clients.users[2].name: the default user is already defined by clients.password(_file); give its password in one place',
    ]);
  });

  it('rejects duplicate users, naming both lines, and a users value that is not a list', () => {
    expect(
      errorsOf(
        slots('clients:', '  users:', '    - name: app', '      password: a', '    - name: app', '      password: b'),
      ),
    ).toEqual([
      'config/test.yaml:16: clients.users[1].name: duplicate user "app", already defined by clients.users[0] at line 14',
    ]);
    expect(errorsOf(slots('clients: { users: { app: pw } }'))).toEqual([
      'config/test.yaml:12: clients.users: expected a list of { name, password }, got a mapping',
    ]);
  });
});

describe('limits, log and commands', () => {
  it('checks limits', () => {
    expect(
      errorsOf(slots('limits:', '  max_bulk_bytes: 4294967297', '  max_args: 0', '  max_inline_bytes: "64k"')),
    ).toEqual([
      'config/test.yaml:13: limits.max_bulk_bytes: must be between 1 and 4294967296, got 4294967297',
      'config/test.yaml:14: limits.max_args: must be between 1 and 2147483647, got 0',
      'config/test.yaml:15: limits.max_inline_bytes: expected an integer, got a string ("64k")',
    ]);
  });

  it('checks the log level', () => {
    expect(errorsOf(slots('log:', '  level: INFO', '  format: json'))).toEqual([
      'config/test.yaml:13: log.level: expected one of: trace, debug, info, warn, error, fatal, silent; got "INFO" ' +
        '(did you mean "info"?)',
      'config/test.yaml:14: log.format: unknown key; expected one of: level',
    ]);
    expect(errorsOf(slots('log: { level: 3 }'))).toEqual([
      'config/test.yaml:12: log.level: expected one of: trace, debug, info, warn, error, fatal, silent; got an integer (3)',
    ]);
  });

  it('checks denied command names', () => {
    expect(
      errorsOf(slots('commands:', '  deny:', '    - KEYS', '    - 42', '    - ""', '    - CONFIG SET', '  allow: []')),
    ).toEqual([
      'config/test.yaml:15: commands.deny[1]: expected a command name, got an integer (42)',
      'config/test.yaml:16: commands.deny[2]: command name must not be empty',
      'config/test.yaml:17: commands.deny[3]: command name "CONFIG SET" must not contain spaces',
      'config/test.yaml:18: commands.allow: unknown key; expected one of: deny, scripts, ping, config_broadcast',
    ]);
    expect(errorsOf(slots('commands: { deny: KEYS }'))).toEqual([
      'config/test.yaml:12: commands.deny: expected a list of command names, got a string ("KEYS")',
    ]);
  });
});

describe('metrics', () => {
  it('reads every metrics option', () => {
    const c = configOf(
      slots(
        'metrics:',
        '  enabled: false',
        '  hot_keys: { enabled: false, k: 5, window_s: 30, sample_rate: 1, export: hash }',
        '  slowlog:',
        '    threshold_ms: 0.25',
        '    max_entries: 0',
        '    log_keys: true',
      ),
    );
    expect(c.metrics).toEqual({
      enabled: false,
      hotKeys: { enabled: false, k: 5, windowS: 30, sampleRate: 1, export: 'hash', readFromReplicas: false },
      slowlog: { thresholdMs: 0.25, maxEntries: 0, logKeys: true },
    });
  });

  it('treats empty metrics sections as all defaults', () => {
    expect(configOf(slots('metrics:')).metrics).toEqual(DEFAULTS.metrics);
    expect(configOf(slots('metrics: { hot_keys: null, slowlog: {} }')).metrics).toEqual(DEFAULTS.metrics);
  });

  it('checks types, ranges and keys, with lines', () => {
    expect(
      errorsOf(
        slots(
          'metrics:',
          '  enabled: yes',
          '  hot_keys:',
          '    k: 0',
          '    window_s: 5',
          '    sample_rate: 0',
          '    export: sha256',
          '    top: 10',
          '  slowlog:',
          '    threshold_ms: -1',
          '    max_entries: 1.5',
          '    log_keys: 1',
          '    thresholdMs: 3',
          '  hotkeys: {}',
        ),
      ),
    ).toEqual([
      'config/test.yaml:13: metrics.enabled: expected true or false, got a string ("yes")',
      'config/test.yaml:15: metrics.hot_keys.k: must be between 1 and 1000, got 0',
      'config/test.yaml:16: metrics.hot_keys.window_s: must be between 6 and 86400, got 5',
      'config/test.yaml:17: metrics.hot_keys.sample_rate: must be greater than 0 and at most 1, got 0',
      'config/test.yaml:18: metrics.hot_keys.export: expected one of: key, hash; got "sha256"',
      'config/test.yaml:19: metrics.hot_keys.top: unknown key; expected one of: enabled, k, window_s, sample_rate, export, read_from_replicas',
      'config/test.yaml:21: metrics.slowlog.threshold_ms: must be between 0 and 3600000, got -1',
      'config/test.yaml:22: metrics.slowlog.max_entries: expected an integer, got a number (1.5)',
      'config/test.yaml:23: metrics.slowlog.log_keys: expected true or false, got an integer (1)',
      'config/test.yaml:24: metrics.slowlog.thresholdMs: unknown key (did you mean "threshold_ms"?)',
      'config/test.yaml:25: metrics.hotkeys: unknown key (did you mean "hot_keys"?)',
    ]);
    expect(errorsOf(slots('metrics: { hot_keys: { sample_rate: 1.5 }, slowlog: { threshold_ms: "10ms" } }'))).toEqual([
      'config/test.yaml:12: metrics.hot_keys.sample_rate: must be greater than 0 and at most 1, got 1.5',
      'config/test.yaml:12: metrics.slowlog.threshold_ms: expected a number, got a string ("10ms")',
    ]);
    expect(errorsOf(slots('metrics: true'))).toEqual([
      'config/test.yaml:12: metrics: expected a mapping, got a boolean (true)',
    ]);
  });
});

describe('validateConfig without a source text', () => {
  it('reports errors without line numbers when the locator knows none', () => {
    const r = validateConfig(
      { mode: 'ring', shards: [{ address: 'h:1', slots: [1] }], backend: { connections: 0 } },
      () => null,
      '<inline>',
    );
    expect(r.errors).toEqual([
      '<inline>: shards[0].slots: only allowed when mode is slots (mode is ring)',
      '<inline>: backend.connections: must be between 1 and 64, got 0',
    ]);
  });

  it('builds a config from plain objects', () => {
    const r = validateConfig({ mode: 'ring', shards: [{ address: 'h:1' }] }, () => null, '<inline>');
    expect(r.config?.source).toBe('<inline>');
    expect(r.config?.shards[0]).toEqual({
      name: 'h:1',
      named: false,
      address: 'h:1',
      host: 'h',
      port: 1,
      slots: null,
      weight: 1,
      ...PLAIN_SHARD,
    });
  });

  it('rejects objects that are not plain mappings', () => {
    const r = validateConfig({ mode: 'ring', shards: [new Map()] }, () => null, '<inline>');
    expect(r.errors).toEqual(['<inline>: shards[0]: expected a mapping with "address", got a Map value']);
  });
});

describe('helpers', () => {
  it('formats paths', () => {
    expect(formatPath([])).toBe('');
    expect(formatPath(['shards', 1, 'slots', 0])).toBe('shards[1].slots[0]');
    expect(formatPath(['backend', 'odd key'])).toBe('backend["odd key"]');
  });

  it('parses host:port', () => {
    expect(parseHostPort('redis-1.svc.cluster.local:6379')).toEqual({ host: 'redis-1.svc.cluster.local', port: 6379 });
    expect(parseHostPort(' 10.1.2.3:1 ')).toEqual({ host: '10.1.2.3', port: 1 });
    expect(parseHostPort('[::ffff:10.0.0.1]:6379')).toEqual({ host: '::ffff:10.0.0.1', port: 6379 });
    expect(parseHostPort('h:0', 0)).toEqual({ host: 'h', port: 0 });
    expect(parseHostPort('h:0')).toBe('port 0 is out of range (1..65535)');
    expect(parseHostPort('-h:1')).toBe('"-h" is not a valid host name or IP address');
  });

  it('suggests within edit distance 2 and snake_cases camelCase', () => {
    expect(suggest('conections', KNOWN_KEYS.backend)).toBe('connections');
    expect(suggest('maxInflight', KNOWN_KEYS.clients)).toBe('max_inflight');
    expect(suggest('idle-timeout-s', KNOWN_KEYS.clients)).toBe('idle_timeout_s');
    expect(suggest('fnv1a64', HASH_NAMES)).toBe('fnv1a_64');
    expect(suggest('Jenkins', HASH_NAMES)).toBe('jenkins');
    expect(suggest('timeout', KNOWN_KEYS.backend)).toBe('timeout_ms');
    expect(suggest('warning', LOG_LEVELS)).toBe('warn');
    expect(suggest('zzz', KNOWN_KEYS.clients)).toBeNull();
    expect(suggest('m', KNOWN_KEYS.clients)).toBeNull();
  });

  it('deep-freezes', () => {
    const o = deepFreeze({ a: [{ b: 1 }] });
    expect(Object.isFrozen(o.a[0])).toBe(true);
  });
});

describe('files', () => {
  const dir = makeTempDir('keymux-config-');

  it('loadConfigFile returns the config and names the file in it', () => {
    const path = join(dir, 'ok.yaml');
    writeFileSync(path, slots());
    expect(loadConfigFile(path).source).toBe(path);
  });

  it('loadConfigFile throws ConfigError with every error, joined in the message', () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, slots('backend: { connections: 0 }', 'log: { level: loud }'));
    let caught: unknown;
    try {
      loadConfigFile(path);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    const e = caught as ConfigError;
    expect(e.code).toBe('ERR_KEYMUX_CONFIG');
    expect(e.errors).toEqual([
      `${path}:12: backend.connections: must be between 1 and 64, got 0`,
      `${path}:13: log.level: expected one of: trace, debug, info, warn, error, fatal, silent; got "loud"`,
    ]);
    expect(e.message).toBe(e.errors.join('\n'));
  });

  it('loadConfigFile reports a missing file', () => {
    const path = join(dir, 'missing.yaml');
    expect(() => loadConfigFile(path)).toThrow(ConfigError);
    expect(() => loadConfigFile(path)).toThrow(`${path}: cannot read the file: ENOENT`);
  });

  it('readConfigFile never throws', async () => {
    expect((await readConfigFile(join(dir, 'ok.yaml'))).config?.mode).toBe('slots');
    const r = await readConfigFile(join(dir, 'missing.yaml'));
    expect(r.errors?.[0]).toMatch(/missing\.yaml: cannot read the file: ENOENT/);
  });

  it('every example under config/ is valid', () => {
    const files = readdirSync('config').filter((f) => /\.ya?ml$/.test(f));
    expect(files).toEqual(expect.arrayContaining(['default.yaml', 'slots.yaml', 'ring.yaml']));
    for (const f of files) {
      const r = parseConfigText(readFileSync(join('config', f), 'utf8'), `config/${f}`);
      expect(r.errors, f).toBeUndefined();
    }
  });

  it('config/default.yaml is the local demo', () => {
    const c = loadConfigFile('config/default.yaml');
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 6380 });
    expect(c.admin).toMatchObject({ host: '127.0.0.1', port: 9121, tokenFile: null });
    expect(c.mode).toBe('slots');
    expect(c.shards.map((s) => [s.name, s.address, s.slots])).toEqual([
      ['a', '127.0.0.1:7001', [[0, 5460]]],
      ['b', '127.0.0.1:7002', [[5461, 10922]]],
      ['c', '127.0.0.1:7003', [[10923, 16383]]],
    ]);
  });

  it('config/ring.yaml uses ring mode with weights and fnv1a_64', () => {
    const c = loadConfigFile('config/ring.yaml');
    expect(c.mode).toBe('ring');
    expect(c.ring.hash).toBe('fnv1a_64');
    expect(c.shards.some((s) => s.weight > 1)).toBe(true);
  });
});

describe('config/keymux.schema.json, generated from the declaration for editors', () => {
  type Json = Record<string, unknown>;
  const committed = JSON.parse(readFileSync('config/keymux.schema.json', 'utf8')) as Json;
  const ajv = new Ajv2020({ allErrors: true });
  const editorAccepts = ajv.compile(committed);
  const keymuxAccepts = (doc: unknown): boolean => validateConfig(doc, () => null, '<t>').errors === undefined;

  /** Every property of every mapping in the schema, by path ("backend.connections", "shards[].weight"). */
  const properties = (node: Json, path = '', out: Array<[string, Json]> = []): Array<[string, Json]> => {
    for (const [key, child] of Object.entries((node.properties ?? {}) as Record<string, Json>)) {
      const childPath = path === '' ? key : `${path}.${key}`;
      out.push([childPath, child]);
      properties(child, childPath, out);
    }
    if (node.items) properties(node.items as Json, `${path}[]`, out);
    for (const branch of (node.anyOf ?? []) as Json[]) properties(branch, path, out);
    return out;
  };

  /** A valid document of the mode the path belongs to, with the value at `path` set (parents created). */
  const withValue = (path: string, value: unknown): Json => {
    const doc: Json = path.startsWith('cluster')
      ? { mode: 'cluster', cluster: { seeds: ['127.0.0.1:7000'], retry: { base_delay_ms: 1, max_delay_ms: 60_000 } } }
      : path.startsWith('ring') || path === 'shards[].weight'
        ? { mode: 'ring', shards: [{ address: '127.0.0.1:7001' }] }
        : path.startsWith('listen_unix')
          ? {
              mode: 'slots',
              shards: [{ name: 'a', address: '127.0.0.1:7001', slots: ['0-16383'] }],
              listen_unix: { path: '/run/keymux.sock' },
            }
          : path.startsWith('sentinel')
            ? {
                mode: 'slots',
                sentinel: { sentinels: ['127.0.0.1:26379'] },
                shards: [{ sentinel_master: 'a', slots: ['0-16383'] }],
              }
            : { mode: 'slots', shards: [{ name: 'a', address: '127.0.0.1:7001', slots: ['0-16383'] }] };
    const parts = path.split('.');
    let node = doc;
    parts.forEach((part, i) => {
      const key = part.replace('[]', '');
      if (i === parts.length - 1) node[key] = value;
      else if (part.endsWith('[]')) node = ((node[key] ??= [{ ...LIST_ITEM[key] }]) as Json[])[0]!;
      else node = (node[key] = isPlainObject(node[key]) ? node[key] : {}) as Json;
    });
    return doc;
  };
  /** A valid item for a list the base documents do not have. */
  const LIST_ITEM: Record<string, Json> = {
    users: { name: 'u', password: 'p', passwords: ['q'] },
    // 99 capture groups: `by` may then take every value its range allows.
    routing: { match: `^${'(.?)'.repeat(99)}`, by: 1 },
  };
  /** "clients.users[].name" -> ['clients', 'users', 0, 'name'] */
  const toPath = (path: string): ConfigPath =>
    path === '' ? [] : path.split('.').flatMap((p) => (p.endsWith('[]') ? [p.slice(0, -2), 0] : [p]));
  const isPlainObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

  it('is exactly what `npm run gen:schema` writes from the declaration (run it after changing the schema)', () => {
    expect(committed).toEqual(configJsonSchema());
    expect(committed.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(committed.required).toEqual(['mode']);
  });

  it('accepts every example config, each of which points editors at it on its first line', () => {
    const files = readdirSync('config').filter((f) => /\.ya?ml$/.test(f));
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      const text = readFileSync(join('config', f), 'utf8');
      expect(text.split('\n')[0], f).toBe('# yaml-language-server: $schema=./keymux.schema.json');
      expect(editorAccepts(YAML.parse(text)), `${f}: ${ajv.errorsText(editorAccepts.errors)}`).toBe(true);
    }
  });

  it('accepts the valid documents keymux accepts', () => {
    for (const text of [
      slots(),
      ring('ring: { hash: md5, distribution: ketama }', 'hash_tag: ""', 'admin: null'),
      y('mode: cluster', 'cluster:', '  seeds: [127.0.0.1:7000, "[::1]:7001"]', '  retry:'),
      slots('backend:', 'clients:', '  users:', 'limits: null', 'log: {}', 'commands:', '  deny:', 'admin:'),
      slots('clients: { password: pw, users: [{ name: app, password: "123" }] }', 'commands: { deny: [" debug "] }'),
      slots('metrics: { hot_keys: { sample_rate: 1, export: hash }, slowlog: { threshold_ms: 0.25 } }'),
      slots('migration: { enabled: false, state_file: /var/lib/keymux/m.json }', 'drain: { grace_s: 0 }'),
    ]) {
      const doc = YAML.parse(text) as unknown;
      expect(keymuxAccepts(doc), text).toBe(true);
      expect(editorAccepts(doc), `${text}${ajv.errorsText(editorAccepts.errors)}`).toBe(true);
    }
  });

  it('rejects what keymux rejects wherever JSON Schema can say it', () => {
    for (const text of [
      y('listen: 127.0.0.1:6380'), // no mode
      y('mode: slot', 'shards: [{ address: "h:1" }]'),
      y('mode: slots'), // no shards
      y('mode: slots', 'shards: []'),
      y('mode: slots', 'shards:', '  - address: h:1'), // no slots
      y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '    weight: 2'),
      y('mode: slots', 'shards:', '  - address: h:1', '    slots: [16384]'),
      y('mode: slots', 'shards:', '  - address: h:1', '    slots: [abc]'),
      y('mode: slots', 'shards:', '  - address: h:1', '    slots: 0-16383'),
      ring('    slots: [0-16383]'),
      ring('    wieght: 2'),
      ring('  - address: 7001'),
      ring('  - name: ""', '    address: h:3'),
      slots('ring: { hash: md5 }'),
      slots('cluster: { seeds: [127.0.0.1:7000] }'),
      y('mode: cluster'),
      y('mode: cluster', 'cluster:'),
      y('mode: cluster', 'cluster:', '  seeds: []'),
      y('mode: cluster', 'cluster:', '  seeds: [127.0.0.1:7000, 127.0.0.1:7000]'),
      y('mode: cluster', 'cluster: { seeds: [127.0.0.1:7000] }', 'shards: [{ address: "h:1" }]'),
      y('mode: cluster', 'cluster: { seeds: [127.0.0.1:7000], read_from: replicas }'),
      y('mode: cluster', 'cluster: { seeds: [127.0.0.1:7000], retry: { jitter: true } }'),
      slots('admn: 127.0.0.1:9121'),
      slots('listen: localhost'),
      slots('admin: "[localhost]:9121"'),
      slots('hash_tag: "{{}"'),
      slots('hash_tag: {}'),
      slots('backend: 5'),
      slots('backend:', '  conections: 2'),
      slots('backend: { connections: 65 }'),
      slots('backend: { timeout_ms: "2000" }'),
      slots('backend: { password: "" }'),
      slots('backend: { username: proxy }'),
      slots('clients: { max: 0 }'),
      slots('clients: { users: [{ name: app }] }'),
      slots('clients: { users: { app: pw } }'),
      slots('limits: { max_bulk_bytes: 4294967297 }'),
      slots('log: { level: warning }'),
      slots('commands: { deny: ["CONFIG SET"] }'),
      slots('metrics: { enabled: yes }'),
      slots('metrics: { hot_keys: { sample_rate: 0 } }'),
      slots('metrics: { slowlog: { max_entries: 1.5 } }'),
      slots('drain: { grace_s: -1 }'),
    ]) {
      const doc = YAML.parse(text) as unknown;
      expect(keymuxAccepts(doc), text).toBe(false);
      expect(editorAccepts(doc), text).toBe(false);
    }
  });

  it('leaves to keymux what JSON Schema cannot say (coverage, uniqueness, address details, cross-field rules)', () => {
    const shard = (name: string, address: string, slotList: string): string[] => [
      `  - name: ${name}`,
      `    address: ${address}`,
      `    slots: [${slotList}]`,
    ];
    for (const text of [
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '0-100'), ...shard('b', 'h:2', '50-16383')), // overlap
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '0-100')), // gap
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '300-250, 0-16383')), // reversed
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '0-16384')), // out of range inside a range
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '0-100'), ...shard('a', 'h:2', '101-16383')),
      y('mode: slots', 'shards:', ...shard('a', 'h:1', '0-100'), ...shard('b', 'H:1', '101-16383')),
      ring('listen: 127.0.0.1:7002'),
      slots('listen: 127.0.0.1:6380', 'admin: 127.0.0.1:6380'),
      slots('listen: 127.0.0.1:99999'),
      slots('backend: { username: proxy, password: null }'),
      slots('clients: { users: [{ name: a, password: x }, { name: a, password: y }] }'),
      y('mode: cluster', 'cluster: { seeds: [127.0.0.1:7000], retry: { base_delay_ms: 100, max_delay_ms: 50 } }'),
    ]) {
      const doc = YAML.parse(text) as unknown;
      expect(keymuxAccepts(doc), text).toBe(false);
      expect(editorAccepts(doc), text).toBe(true);
    }
  });

  it('has the bounds keymux enforces for every number option', () => {
    const ranges = { ...INT_RANGES, ...NUMBER_RANGES };
    expect(Object.keys(INT_RANGES)).toEqual(expect.arrayContaining(['backend.connections', 'shards[].weight']));
    expect(NUMBER_RANGES['metrics.hot_keys.sample_rate']).toEqual([0, 1, 'exclusive-min']);
    for (const [path, range] of Object.entries(ranges)) {
      const [min, max] = range;
      const step = path in INT_RANGES ? 1 : 0.5;
      const exclusive = range.length === 3;
      const cases: Array<[number, boolean]> = [
        [max, true],
        [max + step, false],
        [exclusive ? min : min - step, false],
        [exclusive ? (min + max) / 2 : min, true],
      ];
      if (step === 1) cases.push([min + 0.5, false]);
      for (const [value, valid] of cases) {
        const doc = withValue(path, value);
        expect(keymuxAccepts(doc), `${path}: ${value}`).toBe(valid);
        expect(editorAccepts(doc), `${path}: ${value} (JSON Schema)`).toBe(valid);
      }
    }
  });

  it('shows the defaults keymux applies: writing a default changes nothing', () => {
    const withDefaults = properties(committed).filter(([, node]) => 'default' in node);
    expect(withDefaults.map(([path]) => path)).toEqual(
      expect.arrayContaining(['listen', 'admin', 'hash_tag', 'backend.connections', 'cluster.retry.max_delay_ms']),
    );
    for (const [path, node] of withDefaults) {
      const written = validateConfig(withValue(path, node.default), () => null, '<t>');
      const omitted = validateConfig(withValue(path, undefined), () => null, '<t>');
      expect(written.errors, path).toBeUndefined();
      expect(written.config, path).toEqual(omitted.config);
    }
  });

  it('knows exactly the keys keymux knows, and keymux words every wrong value itself', () => {
    for (const [path, keys] of Object.entries(KEYS_BY_PATH)) {
      for (const key of keys) {
        const doc = withValue(path === '' ? key : `${path}.${key}`, 'nonsense value');
        const errors = validateConfig(doc, () => null, '<t>').errors ?? [];
        for (const e of errors) {
          expect(e, path).toMatch(/^<t>: \S+: /);
          // zod's own wording ("Invalid input: expected number, received string") never reaches the reader.
          expect(e, path).not.toMatch(/Invalid (input|option|string|element)|Too (small|big)|Unrecognized|nonoptional/);
        }
      }
      const unknownPath = path === '' ? 'zzz_unknown' : `${path}.zzz_unknown`;
      expect(validateConfig(withValue(unknownPath, 1), () => null, '<t>').errors, path).toEqual([
        `<t>: ${formatPath(toPath(unknownPath))}: unknown key; expected one of: ${keys.join(', ')}`,
      ]);
      expect(editorAccepts(withValue(unknownPath, 1)), path).toBe(false);
    }
    for (const value of [true, 2.5, -1, [], [1], { a: 1 }, null, '']) {
      for (const [path] of properties(committed)) {
        for (const e of validateConfig(withValue(path, value), () => null, '<t>').errors ?? []) {
          expect(e, `${path}: ${JSON.stringify(value)}`).not.toMatch(
            /Invalid (input|option|string|element)|Too (small|big)|Unrecognized|nonoptional/,
          );
        }
      }
    }
  });
});
