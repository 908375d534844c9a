/**
 * Configuration loading and validation: every rule of src/config/schema.ts and every YAML failure of
 * src/config/load.ts, each checked against the exact error lines (file:line: path: message), plus the example
 * files under config/ and the JSON schema's agreement with the validator's keys, enums, ranges and defaults.
 * YAML is written as arrays of lines so that line numbers can be read straight off the test.
 */

import { describe, it, expect } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText, loadConfigFile, readConfigFile, ConfigError } from '../../src/config/load.js';
import {
  validateConfig, formatPath, parseHostPort, suggest, deepFreeze,
  DEFAULTS, KNOWN_KEYS, HASH_NAMES, LOG_LEVELS, MODES, INT_RANGES, SLOT_COUNT,
  type KeymuxConfig,
} from '../../src/config/schema.js';

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
const ring = (...extra: string[]): string => y(
  'mode: ring',
  'shards:',
  '  - address: 127.0.0.1:7001',
  '  - name: b',
  '    address: 127.0.0.1:7002',
  ...extra,
);

describe('valid configurations', () => {
  it('applies every default to a minimal slots config', () => {
    const c = configOf(slots());
    expect(c).toEqual({
      source: SRC,
      listen: { host: '127.0.0.1', port: 6380 },
      admin: null,
      mode: 'slots',
      hashTag: '{}',
      shards: [
        { name: 'a', named: true, address: '127.0.0.1:7001', host: '127.0.0.1', port: 7001, slots: [[0, 5460]], weight: 1 },
        { name: 'b', named: true, address: '127.0.0.1:7002', host: '127.0.0.1', port: 7002, slots: [[5461, 10922]], weight: 1 },
        { name: 'c', named: true, address: '127.0.0.1:7003', host: '127.0.0.1', port: 7003, slots: [[10923, 16383]], weight: 1 },
      ],
      ring: { hash: 'fnv1a_64', distribution: 'ketama' },
      backend: { connections: 1, connectTimeoutMs: 1000, timeoutMs: 2000, password: null, username: null },
      clients: { max: 10000, idleTimeoutS: 0, password: null, users: [], maxInflight: 1024 },
      limits: { maxBulkBytes: 536870912, maxArgs: 1048576, maxInlineBytes: 65536 },
      log: { level: 'info' },
      commands: { deny: [] },
    });
  });

  it('reads every option, converting snake_case to camelCase', () => {
    const c = configOf(slots(
      'listen: "[::1]:6390"',
      'admin: 0.0.0.0:0',
      'hash_tag: "<>"',
      'backend: { connections: 4, connect_timeout_ms: 0, timeout_ms: 0, password: s3cret, username: proxy }',
      'clients:',
      '  max: 1',
      '  idle_timeout_s: 60',
      '  password: pw',
      '  users: [{ name: app, password: "123" }, { name: ops, password: x }]',
      '  max_inflight: 1',
      'limits: { max_bulk_bytes: 4294967296, max_args: 3, max_inline_bytes: 1 }',
      'log: { level: silent }',
      'commands: { deny: [KEYS, FlushAll, keys, " debug "] }',
    ));
    expect(c.listen).toEqual({ host: '::1', port: 6390 });
    expect(c.admin).toEqual({ host: '0.0.0.0', port: 0 });
    expect(c.hashTag).toBe('<>');
    expect(c.backend).toEqual({ connections: 4, connectTimeoutMs: 0, timeoutMs: 0, password: 's3cret', username: 'proxy' });
    expect(c.clients).toEqual({
      max: 1, idleTimeoutS: 60, password: 'pw', maxInflight: 1,
      users: [{ name: 'app', password: '123' }, { name: 'ops', password: 'x' }],
    });
    expect(c.limits).toEqual({ maxBulkBytes: 2 ** 32, maxArgs: 3, maxInlineBytes: 1 });
    expect(c.log.level).toBe('silent');
    expect(c.commands.deny).toEqual(['keys', 'flushall', 'debug']);
  });

  it('reads ring mode: weights, hash, unnamed shards named by their address', () => {
    const c = configOf(y(
      'mode: ring',
      'ring: { hash: md5 }',
      'shards:',
      '  - address: 10.0.0.1:6379',
      '    weight: 3',
      '  - name: b',
      '    address: "[fe80::1]:6379"',
    ));
    expect(c.ring).toEqual({ hash: 'md5', distribution: 'ketama' });
    expect(c.shards).toEqual([
      { name: '10.0.0.1:6379', named: false, address: '10.0.0.1:6379', host: '10.0.0.1', port: 6379, slots: null, weight: 3 },
      { name: 'b', named: true, address: '[fe80::1]:6379', host: 'fe80::1', port: 6379, slots: null, weight: 1 },
    ]);
  });

  it('accepts slots as integers, "A-B" and "N" strings, sorts them and merges adjacent ranges', () => {
    const c = configOf(y(
      'mode: slots',
      'shards:',
      '  - address: h1:1',
      '    slots: [100-5460, 0 - 98, "99"]',
      '  - address: h2:1',
      '    slots:',
      '      - 16383',
      '      - 5461-16382',
    ));
    expect(c.shards[0]!.slots).toEqual([[0, 5460]]);
    expect(c.shards[1]!.slots).toEqual([[5461, 16383]]);
  });

  it('turns hash tags off with "" or null', () => {
    expect(configOf(slots('hash_tag: ""')).hashTag).toBeNull();
    expect(configOf(slots('hash_tag: null')).hashTag).toBeNull();
    expect(configOf(slots('hash_tag: "{}"')).hashTag).toBe('{}');
  });

  it('treats empty sections as all defaults', () => {
    const c = configOf(slots('backend:', 'clients:', '  users:', 'limits: null', 'log: {}', 'commands:', '  deny:', 'admin:'));
    expect(c.backend).toEqual(DEFAULTS.backend);
    expect(c.clients.users).toEqual([]);
    expect(c.limits).toEqual(DEFAULTS.limits);
    expect(c.commands.deny).toEqual([]);
    expect(c.admin).toBeNull();
  });

  it('follows YAML anchors and aliases', () => {
    const c = configOf(y(
      'mode: slots',
      'shards:',
      '  - address: h1:1',
      '    slots: &all [0-16383]',
      'backend: &b { connections: 2 }',
    ));
    expect(c.shards[0]!.slots).toEqual([[0, 16383]]);
    expect(c.backend.connections).toBe(2);
  });

  it('returns a deeply frozen snapshot', () => {
    const c = configOf(slots('clients: { users: [{ name: a, password: b }] }', 'commands: { deny: [keys] }'));
    for (const o of [c, c.listen, c.shards, c.shards[0], c.shards[0]!.slots, c.shards[0]!.slots![0], c.ring, c.backend,
      c.clients, c.clients.users, c.clients.users[0], c.limits, c.log, c.commands, c.commands.deny]) {
      expect(Object.isFrozen(o)).toBe(true);
    }
    expect(() => { (c as { mode: string }).mode = 'ring'; }).toThrow(TypeError);
    expect(() => { c.shards[0]!.slots!.push([1, 2]); }).toThrow(TypeError);
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
    const expected = ['config/test.yaml: the configuration is empty; expected a mapping with at least "mode" and "shards"'];
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
      'config/test.yaml:2: mode: required (one of: slots, ring)',
      'config/test.yaml:2: shards: required: a list of shards, e.g. [{ address: "127.0.0.1:7001" }]',
    ]);
  });

  it('rejects an unknown mode with a suggestion', () => {
    expect(errorsOf(y('mode: slot', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring; got "slot" (did you mean "slots"?)',
    ]);
    expect(errorsOf(y('mode: RING', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring; got "RING" (did you mean "ring"?)',
    ]);
    expect(errorsOf(y('mode: cluster', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring; got "cluster"',
    ]);
    expect(errorsOf(y('mode: 1', 'shards: [{ address: "h:1" }]'))).toEqual([
      'config/test.yaml:1: mode: expected one of: slots, ring; got an integer (1)',
    ]);
  });

  it('rejects unknown top-level keys, suggesting the nearest known key', () => {
    expect(errorsOf(slots('admn: 127.0.0.1:9121', 'hashTag: "{}"', 'backends: {}', 'color: blue'))).toEqual([
      'config/test.yaml:12: admn: unknown key (did you mean "admin"?)',
      'config/test.yaml:13: hashTag: unknown key (did you mean "hash_tag"?)',
      'config/test.yaml:14: backends: unknown key (did you mean "backend"?)',
      'config/test.yaml:15: color: unknown key; expected one of: listen, admin, mode, hash_tag, shards, ring, ' +
        'backend, clients, limits, log, commands',
    ]);
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

  it('reports ALL errors at once, in line order', () => {
    expect(errorsOf(y(
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
    ))).toEqual([
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
    expect(errorsOf(slots(
      'listen: localhost',
      'admin: ":9121"',
    ))).toEqual([
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
      'config/test.yaml:12: listen: expected "host:port" (a string), got null',
    ]);
  });

  it('rejects an admin address equal to listen', () => {
    expect(errorsOf(slots('listen: 127.0.0.1:6380', 'admin: 127.0.0.1:6380'))).toEqual([
      'config/test.yaml:13: admin: same address as listen (127.0.0.1:6380)',
    ]);
    expect(configOf(slots('listen: 127.0.0.1:0', 'admin: 127.0.0.1:0')).admin).toEqual({ host: '127.0.0.1', port: 0 });
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
    expect(errorsOf(y('mode: slots', 'shards: []'))).toEqual(['config/test.yaml:2: shards: must list at least one shard']);
    expect(errorsOf(y('mode: ring', 'shards:', '  - 127.0.0.1:7001', '  - address: 127.0.0.1:7002'))).toEqual([
      'config/test.yaml:3: shards[0]: expected a mapping with "address", got a string ("127.0.0.1:7001")',
    ]);
  });

  it('rejects unknown shard keys with a suggestion', () => {
    expect(errorsOf(ring('    adress: 127.0.0.1:7003', '    wieght: 2', '    role: primary'))).toEqual([
      'config/test.yaml:6: shards[1].adress: unknown key (did you mean "address"?)',
      'config/test.yaml:7: shards[1].wieght: unknown key (did you mean "weight"?)',
      'config/test.yaml:8: shards[1].role: unknown key; expected one of: name, address, slots, weight',
    ]);
  });

  it('requires an address, reporting it at the shard', () => {
    expect(errorsOf(ring('  - name: c'))).toEqual([
      'config/test.yaml:6: shards[2].address: required (e.g. "127.0.0.1:7001")',
    ]);
  });

  it('rejects bad addresses, including port 0', () => {
    expect(errorsOf(y(
      'mode: ring',
      'shards:',
      '  - address: 127.0.0.1:0',
      '  - address: 7001',
      '  - address: "[::1]"',
      '  - address: 10.0.0.1:99999',
    ))).toEqual([
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
    expect(errorsOf(y(
      'mode: ring',
      'shards:',
      '  - name: a',
      '    address: 127.0.0.1:7001',
      '  - name: b',
      '    address: LOCALHOST:7002',
      '  - name: a',
      '    address: localhost:7002',
    ))).toEqual([
      'config/test.yaml:7: shards[2].name: duplicate shard name "a", already used by shards[0] at line 3',
      'config/test.yaml:8: shards[2].address: duplicate address localhost:7002, already used by shards[1] at line 6',
    ]);
  });

  it('rejects an unnamed shard whose address is another shard\'s name', () => {
    expect(errorsOf(y(
      'mode: ring',
      'shards:',
      '  - name: 127.0.0.1:7002',
      '    address: 127.0.0.1:7001',
      '  - address: 127.0.0.1:7002',
    ))).toEqual([
      'config/test.yaml:5: shards[1].address: duplicate shard name "127.0.0.1:7002" (a shard without a name is named ' +
        'by its address), already used by shards[0] at line 3',
    ]);
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
      'config/test.yaml:1: mode: expected one of: slots, ring; got "slotz" (did you mean "slots"?)',
      'config/test.yaml:4: shards[0].slots[0]: range 0-99999: slot 99999 is out of range (0..16383)',
      'config/test.yaml:5: shards[0].weight: must be between 1 and 1000000, got 0',
    ]);
  });
});

describe('slots mode', () => {
  it('requires slots on every shard', () => {
    expect(errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '  - address: h:2'))).toEqual([
      'config/test.yaml:5: shards[1].slots: required when mode is slots',
    ]);
  });

  it('rejects slots that are not a non-empty list', () => {
    expect(errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: 0-16383'))).toEqual([
      'config/test.yaml:4: shards[0].slots: expected a list of slots and ranges like [0-5460], got a string ("0-16383")',
    ]);
    expect(errorsOf(y('mode: slots', 'shards:', '  - address: h:1', '    slots: [0-16383]', '  - address: h:2',
      '    slots: []'))).toEqual([
      'config/test.yaml:6: shards[1].slots: must list at least one slot or range',
    ]);
  });

  it('rejects malformed, out-of-range and reversed items, one error per item, without coverage noise', () => {
    expect(errorsOf(y(
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
    ))).toEqual([
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
    expect(errorsOf(y(
      'mode: slots',
      'shards:',
      '  - name: a',
      '    address: h:1',
      '    slots: [0-5460]',
      '  - name: b',
      '    address: h:2',
      '    slots: [5000-6000, 6001-16383]',
    ))).toEqual([
      'config/test.yaml:8: shards[1].slots[0]: range 5000-6000 overlaps shard "a" (0-5460)',
    ]);
  });

  it('reports one overlap per earlier range hit, single slots and overlaps within one shard', () => {
    expect(errorsOf(y(
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
    ))).toEqual([
      'config/test.yaml:8: shards[1].slots[0]: range 100-999 overlaps shard "a" (200-299)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps shard "a" (0-99)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps shard "a" (200-299)',
      'config/test.yaml:9: shards[1].slots[1]: range 50-250 overlaps range 100-999 of the same shard',
      'config/test.yaml:10: shards[1].slots[2]: slot 1000 overlaps shard "a" (1000-16383)',
      'config/test.yaml:11: shards[1].slots[3]: range 900-950 overlaps range 100-999 of the same shard',
    ]);
  });

  it('reports slots assigned to no shard, as ranges and single slots', () => {
    expect(errorsOf(y(
      'mode: slots',
      'shards:',
      '  - name: a',
      '    address: h:1',
      '    slots: [0-5460, 5471-9999, 10001-16382]',
    ))).toEqual([
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
    expect(errorsOf(ring('    weight: 0', '  - address: h:3', '    weight: 1.5', '  - address: h:4', '    weight: "2"',
      '  - address: h:5', '    weight: 1000001'))).toEqual([
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

describe('backend', () => {
  it('checks integer types and ranges', () => {
    expect(errorsOf(slots(
      'backend:',
      '  connections: 65',
      '  connect_timeout_ms: 1.5',
      '  timeout_ms: "2000"',
    ))).toEqual([
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
      'config/test.yaml:13: backend.username: requires backend.password (Redis ACL AUTH needs both)',
    ]);
    expect(errorsOf(slots('backend:', '  username: proxy', '  password: null'))).toEqual([
      'config/test.yaml:13: backend.username: requires backend.password (Redis ACL AUTH needs both)',
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
        'password, username',
    ]);
  });
});

describe('clients', () => {
  it('checks integer ranges', () => {
    expect(errorsOf(slots('clients:', '  max: 1000001', '  idle_timeout_s: -1', '  max_inflight: 0'))).toEqual([
      'config/test.yaml:13: clients.max: must be between 1 and 1000000, got 1000001',
      'config/test.yaml:14: clients.idle_timeout_s: must be between 0 and 2147483, got -1',
      'config/test.yaml:15: clients.max_inflight: must be between 1 and 1000000, got 0',
    ]);
  });

  it('requires name and password on every user', () => {
    expect(errorsOf(slots(
      'clients:',
      '  password: ""',
      '  users:',
      '    - name: app',
      '    - password: x',
      '    - name: ""',
      '      password: 123',
      '    - ops',
      '    - { name: b, password: c, role: admin }',
    ))).toEqual([
      'config/test.yaml:13: clients.password: must not be empty (use null, or leave it out, for none)',
      'config/test.yaml:15: clients.users[0].password: required',
      'config/test.yaml:16: clients.users[1].name: required',
      'config/test.yaml:17: clients.users[2].name: must not be empty',
      'config/test.yaml:18: clients.users[2].password: expected a string, got an integer (123); quote it to make it a string',
      'config/test.yaml:19: clients.users[3]: expected a mapping with "name" and "password", got a string ("ops")',
      'config/test.yaml:20: clients.users[4].role: unknown key; expected one of: name, password',
    ]);
  });

  it('rejects duplicate users, naming both lines, and a users value that is not a list', () => {
    expect(errorsOf(slots(
      'clients:',
      '  users:',
      '    - name: app',
      '      password: a',
      '    - name: app',
      '      password: b',
    ))).toEqual([
      'config/test.yaml:16: clients.users[1].name: duplicate user "app", already defined by clients.users[0] at line 14',
    ]);
    expect(errorsOf(slots('clients: { users: { app: pw } }'))).toEqual([
      'config/test.yaml:12: clients.users: expected a list of { name, password }, got a mapping',
    ]);
  });
});

describe('limits, log and commands', () => {
  it('checks limits', () => {
    expect(errorsOf(slots('limits:', '  max_bulk_bytes: 4294967297', '  max_args: 0', '  max_inline_bytes: "64k"'))).toEqual([
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
    expect(errorsOf(slots('commands:', '  deny:', '    - KEYS', '    - 42', '    - ""', '    - CONFIG SET', '  allow: []'))).toEqual([
      'config/test.yaml:15: commands.deny[1]: expected a command name, got an integer (42)',
      'config/test.yaml:16: commands.deny[2]: command name must not be empty',
      'config/test.yaml:17: commands.deny[3]: command name "CONFIG SET" must not contain spaces',
      'config/test.yaml:18: commands.allow: unknown key; expected one of: deny',
    ]);
    expect(errorsOf(slots('commands: { deny: KEYS }'))).toEqual([
      'config/test.yaml:12: commands.deny: expected a list of command names, got a string ("KEYS")',
    ]);
  });
});

describe('validateConfig without a source text', () => {
  it('reports errors without line numbers when the locator knows none', () => {
    const r = validateConfig({ mode: 'ring', shards: [{ address: 'h:1', slots: [1] }], backend: { connections: 0 } },
      () => null, '<inline>');
    expect(r.errors).toEqual([
      '<inline>: shards[0].slots: only allowed when mode is slots (mode is ring)',
      '<inline>: backend.connections: must be between 1 and 64, got 0',
    ]);
  });

  it('builds a config from plain objects', () => {
    const r = validateConfig({ mode: 'ring', shards: [{ address: 'h:1' }] }, () => null, '<inline>');
    expect(r.config?.source).toBe('<inline>');
    expect(r.config?.shards[0]).toEqual(
      { name: 'h:1', named: false, address: 'h:1', host: 'h', port: 1, slots: null, weight: 1 });
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
  const dir = mkdtempSync(join(tmpdir(), 'keymux-config-'));

  it('loadConfigFile returns the config and names the file in it', () => {
    const path = join(dir, 'ok.yaml');
    writeFileSync(path, slots());
    expect(loadConfigFile(path).source).toBe(path);
  });

  it('loadConfigFile throws ConfigError with every error, joined in the message', () => {
    const path = join(dir, 'bad.yaml');
    writeFileSync(path, slots('backend: { connections: 0 }', 'log: { level: loud }'));
    let caught: unknown;
    try { loadConfigFile(path); } catch (err) { caught = err; }
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
    expect(c.admin).toEqual({ host: '127.0.0.1', port: 9121 });
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

describe('config/keymux.schema.json agrees with the validator', () => {
  type JsonSchema = { properties?: Record<string, JsonSchema>; items?: JsonSchema; enum?: unknown[];
    minimum?: number; maximum?: number; default?: unknown; $ref?: string; [k: string]: unknown };
  const schema = JSON.parse(readFileSync('config/keymux.schema.json', 'utf8')) as JsonSchema & { $defs: Record<string, JsonSchema> };
  const props = schema.properties!;
  const keys = (s: JsonSchema | undefined): string[] => Object.keys(s?.properties ?? {});

  it('is draft 2020-12', () => {
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it('has exactly the top-level keys the validator knows', () => {
    expect(keys(schema)).toEqual([...KNOWN_KEYS.root]);
  });

  it('has exactly the keys of every section', () => {
    expect(keys(props.ring)).toEqual([...KNOWN_KEYS.ring]);
    expect(keys(props.backend)).toEqual([...KNOWN_KEYS.backend]);
    expect(keys(props.clients)).toEqual([...KNOWN_KEYS.clients]);
    expect(keys(props.clients!.properties!.users!.items)).toEqual([...KNOWN_KEYS.user]);
    expect(keys(props.limits)).toEqual([...KNOWN_KEYS.limits]);
    expect(keys(props.log)).toEqual([...KNOWN_KEYS.log]);
    expect(keys(props.commands)).toEqual([...KNOWN_KEYS.commands]);
    expect(keys(schema.$defs.shard)).toEqual([...KNOWN_KEYS.shard]);
  });

  it('has the same enums', () => {
    expect(props.mode!.enum).toEqual([...MODES]);
    expect(props.ring!.properties!.hash!.enum).toEqual([...HASH_NAMES]);
    expect(props.log!.properties!.level!.enum).toEqual([...LOG_LEVELS]);
    expect(schema.$defs.slot!.maximum).toBe(SLOT_COUNT - 1);
  });

  it('has the same integer ranges and defaults', () => {
    for (const [name, [min, max]] of Object.entries(INT_RANGES)) {
      const [sectionName, key] = name.split('.') as [string, string];
      const prop = sectionName === 'shards[]' ? schema.$defs.shard!.properties![key]! : props[sectionName]!.properties![key]!;
      expect([prop.minimum, prop.maximum], name).toEqual([min, max]);
    }
    const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    for (const sectionName of ['backend', 'clients', 'limits', 'log'] as const) {
      const defaults = DEFAULTS[sectionName] as Record<string, unknown>;
      for (const key of KNOWN_KEYS[sectionName]) {
        const prop = props[sectionName]!.properties![key]!;
        const declared = prop.default ?? (prop.$ref ? schema.$defs[prop.$ref.split('/').pop()!]!.default : undefined);
        expect(declared, `${sectionName}.${key}`).toEqual(defaults[camel(key)]);
      }
    }
    expect(props.hash_tag!.default).toBe(DEFAULTS.hashTag);
    expect(props.ring!.properties!.hash!.default).toBe(DEFAULTS.ring.hash);
  });
});
