/**
 * `keymux import-twemproxy nutcracker.yml [--pool NAME] > keymux.yaml`: turns one pool of a twemproxy
 * (nutcracker 0.5) config into a commented keymux config in ring mode that puts every key on the same server:
 * same hash, hash tag, server names, weights and server order, so keymux's ketama continuum (routing/ketama.ts) is
 * twemproxy's, point for point. The generated text is validated with keymux's own loader and its continuum is
 * compared with the one twemproxy builds from the pool before anything is printed.
 *
 * What keymux cannot do the same way is never dropped silently. Settings that would put keys elsewhere or make
 * clients fail (distribution modula/random, a memcached pool, unix-socket servers, redis_db other than 0, an
 * unknown directive, a server keymux cannot address) are errors: printed on stderr as `file:line: pool NAME: ...`,
 * nothing on stdout, exit code 1. Settings with only a loose equivalent (auto_eject_hosts, preconnect, backlog,
 * client_connections, ...) are mapped or noted with a comment in the output and a note on stderr. String
 * directives and pool names are read as written (nutcracker's libyaml types nothing): `redis_auth: 0123` is "0123".
 *
 * `--verify` also asks the servers: it SCANs a sample of keys on each (with redis_auth) and checks that the new
 * config routes every sampled key to the server it was found on (progress on stderr when it is a terminal).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { LineCounter, parseDocument, isMap, isScalar, isSeq, type Node } from 'yaml';
import { parseConfigText } from '../config/load.js';
import type { KeymuxConfig } from '../config/schema.js';
import { HASHERS } from '../routing/hashers.js';
import { KetamaContinuum, ketamaKey } from '../routing/ketama.js';
import { accessOf, estimateMoves, migrationRate } from '../migration/estimate.js';
import { count, processIo, Progress, type Io } from './common.js';

type HashName = KeymuxConfig['ring']['hash'];

const USAGE = `usage: keymux import-twemproxy NUTCRACKER.YML [--pool NAME] [options] > keymux.yaml

Writes a keymux config (ring mode) that places every key on the same server as the twemproxy pool does.
What keymux cannot express is reported on stderr; if it would change where keys are, nothing is written and the
exit code is 1.

  -p, --pool NAME       the pool to import (required when the file has several)
      --listen ADDR     where keymux listens on TCP (default: the pool's listen; with a unix-socket listen,
                        which becomes listen_unix, a TCP port besides it)
      --admin ADDR      keymux's admin HTTP address (default 127.0.0.1:9121; "none" for no admin server)
      --verify          sample keys on every server and check the new config routes each where it is
      --sample N        keys sampled per server by --verify (default 1000)
  -h, --help            this help
`;

/** twemproxy 0.5.0's hash names (all of which keymux implements bit for bit). */
const TWEMPROXY_HASHES: readonly string[] = Object.keys(HASHERS);
const DIRECTIVES = [
  'listen',
  'hash',
  'hash_tag',
  'distribution',
  'timeout',
  'backlog',
  'client_connections',
  'redis',
  'redis_auth',
  'redis_db',
  'preconnect',
  'auto_eject_hosts',
  'tcpkeepalive',
  'server_connections',
  'server_retry_timeout',
  'server_failure_limit',
  'servers',
] as const;
type Directive = (typeof DIRECTIVES)[number];

/** One server line of a pool, parsed the way twemproxy's conf_add_server does (from the end). */
export interface TwemServer {
  line: number;
  text: string;
  host: string;
  port: number;
  weight: number;
  /** The name given after the weight, or null. */
  name: string | null;
  /** The string twemproxy puts on the ketama ring: the name, else "host:port" ("host" on port 11211). */
  ketamaKey: string;
}

export interface TwemPool {
  name: string;
  line: number;
  /** directive -> { value as written (scalar), line } */
  /**
   * Each directive: `value` as YAML types it (booleans and integers are read so), `text` as written (a scalar's
   * source, unquoted; null for an empty value or a list/mapping): what nutcracker reads for a string directive.
   */
  values: Map<string, { value: unknown; text: string | null; line: number }>;
  servers: TwemServer[];
  /** Problems with this pool's server lines, as `file:line: pool NAME: ...` (reported when it is imported). */
  problems: string[];
}

export interface ImportResult {
  /** The keymux YAML (null when there are errors). */
  yaml: string | null;
  errors: string[];
  notes: string[];
  config: KeymuxConfig | null;
  pool: TwemPool;
}

/** Parses a nutcracker.yml into its pools; YAML or structure errors as `file:line: ...`. */
export function parseTwemproxy(text: string, source: string): { pools: TwemPool[]; errors: string[] } {
  const lineCounter = new LineCounter();
  // Keys compare as written (nutcracker's pools "007" and "7" are two pools; YAML 1.2 would read both as 7).
  const uniqueKeys = (a: unknown, b: unknown): boolean => a === b || (scalarText(a) ?? a) === (scalarText(b) ?? b);
  const doc = parseDocument(text, { lineCounter, uniqueKeys, prettyErrors: false });
  const lineOf = (node: unknown): number => {
    const range = (node as Node | null)?.range;
    return range ? lineCounter.linePos(range[0]).line : 1;
  };
  const errors = [...doc.errors, ...doc.warnings].map(
    (e) => `${source}:${lineCounter.linePos(e.pos[0]).line}: invalid YAML: ${e.message.split('\n')[0]}`,
  );
  if (errors.length > 0) return { pools: [], errors };
  const pools: TwemPool[] = [];
  if (!isMap(doc.contents)) {
    return { pools, errors: [`${source}:1: a twemproxy config is a mapping of pool names to pools`] };
  }
  for (const item of doc.contents.items) {
    const name = scalarText(item.key) ?? String(item.key);
    const line = lineOf(item.key);
    const pool: TwemPool = { name, line, values: new Map(), servers: [], problems: [] };
    pools.push(pool);
    if (!isMap(item.value)) {
      pool.problems.push(`${source}:${line}: pool ${name}: expected a mapping of directives`);
      continue;
    }
    for (const d of item.value.items) {
      const key = scalarText(d.key) ?? String(d.key);
      const dline = lineOf(d.key);
      if (key === 'servers') {
        if (!isSeq(d.value)) {
          pool.problems.push(`${source}:${dline}: pool ${name}: servers must be a list of "host:port:weight [name]"`);
          continue;
        }
        for (const s of d.value.items) {
          const sline = lineOf(s);
          const raw = isScalar(s) ? s.value : null;
          if (typeof raw !== 'string') {
            pool.problems.push(`${source}:${sline}: pool ${name}: a server must be a string "host:port:weight [name]"`);
            continue;
          }
          const parsed = parseServer(raw);
          if (typeof parsed === 'string')
            pool.problems.push(`${source}:${sline}: pool ${name}: server "${raw}": ${parsed}`);
          else pool.servers.push({ ...parsed, line: sline, text: raw });
        }
        pool.values.set(key, { value: null, text: null, line: dline });
        continue;
      }
      const value = isScalar(d.value) ? d.value.value : d.value;
      pool.values.set(key, { value, text: scalarText(d.value), line: dline });
    }
  }
  if (pools.length === 0) errors.push(`${source}:1: no pools`);
  return { pools, errors };
}

/**
 * A scalar's text as written (quotes removed), which is what nutcracker (libyaml, no typing) reads: `0123`, `1e3`
 * or `0x1F` as a password, `00` as a hash tag, not the integers YAML 1.2 makes of them. Null when empty or not a
 * scalar.
 */
function scalarText(node: unknown): string | null {
  if (!isScalar(node)) return null;
  const text = node.source ?? (node.value === null ? '' : String(node.value));
  return text === '' ? null : text;
}

/** twemproxy's "hostname:port:weight [name]" parsed from the end, as conf_add_server does. */
function parseServer(text: string): Omit<TwemServer, 'line' | 'text'> | string {
  if (text.startsWith('/')) {
    return 'a unix socket server: keymux connects to shards over TCP only (give the server a TCP address in twemproxy first)';
  }
  let rest = text;
  let name: string | null = null;
  const space = rest.lastIndexOf(' ');
  if (space >= 0) {
    name = rest.slice(space + 1);
    rest = rest.slice(0, space);
  }
  const c2 = rest.lastIndexOf(':');
  const c1 = c2 > 0 ? rest.lastIndexOf(':', c2 - 1) : -1;
  if (c1 < 0) return 'expected "host:port:weight [name]"';
  const host = rest.slice(0, c1).replace(/^\[|\]$/g, '');
  const portText = rest.slice(c1 + 1, c2);
  const weightText = rest.slice(c2 + 1);
  if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) return `invalid port "${portText}"`;
  if (!/^\d+$/.test(weightText)) return `invalid weight "${weightText}"`;
  const weight = Number(weightText);
  if (weight === 0) return 'weight 0 (twemproxy refuses it too)';
  if (host === '') return 'missing host';
  const port = Number(portText);
  // conf_add_server: without a name, the ring key is the address text and the port, or the address alone on 11211.
  const key = name ?? (port === 11211 ? rest.slice(0, c1) : rest.slice(0, c2));
  return { host, port, weight, name, ketamaKey: key };
}

interface Emit {
  lines: string[];
  notes: string[];
  errors: string[];
}

/** A YAML scalar for a string (double-quoted JSON when plain text could be misread). */
function y(s: string): string {
  return /^[A-Za-z0-9_./-][A-Za-z0-9_.:/-]*$/.test(s) &&
    !/^(true|false|null|yes|no|on|off|~)$/i.test(s) &&
    !/^[\d.]+$/.test(s)
    ? s
    : JSON.stringify(s);
}

function addressOf(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Converts one pool. `source` names the file in messages. */
export function importPool(
  pool: TwemPool,
  source: string,
  options: { listen?: string; admin?: string | null } = {},
): ImportResult {
  const e: Emit = { lines: [], notes: [], errors: [...pool.problems] };
  const where = (d: string): string => `${source}:${pool.values.get(d)?.line ?? pool.line}: pool ${pool.name}`;
  const get = (d: Directive): unknown => pool.values.get(d)?.value;
  const bool = (d: Directive, fallback: boolean): boolean => {
    const v = get(d);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'boolean') return v;
    e.errors.push(`${where(d)}: ${d} must be true or false, got ${JSON.stringify(v)}`);
    return fallback;
  };
  const int = (d: Directive): number | null => {
    const v = get(d);
    if (v === undefined || v === null) return null;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    e.errors.push(`${where(d)}: ${d} must be an integer, got ${JSON.stringify(v)}`);
    return null;
  };
  // A string directive is its text as written (nutcracker types nothing): `redis_auth: 0123` is "0123", not 123.
  const str = (d: Directive): string | null => {
    const v = pool.values.get(d);
    return v === undefined ? null : (v.text ?? (v.value === null ? null : String(v.value)));
  };

  for (const key of pool.values.keys()) {
    if (!(DIRECTIVES as readonly string[]).includes(key)) {
      e.errors.push(
        `${where(key)}: unknown directive "${key}" (twemproxy 0.5 refuses it too; known: ${DIRECTIVES.join(', ')})`,
      );
    }
  }

  // --- what decides placement: these must match exactly, or the import fails
  const redis = bool('redis', false);
  if (!redis) {
    e.errors.push(
      `${where('redis')}: a memcached pool (${pool.values.has('redis') ? 'redis: false' : 'no "redis: true"; twemproxy defaults to memcached'}): keymux speaks Redis only`,
    );
  }
  const distribution = str('distribution') ?? 'ketama';
  if (distribution !== 'ketama') {
    e.errors.push(
      distribution === 'modula' || distribution === 'random'
        ? `${where('distribution')}: distribution ${distribution}: keymux places keys with ketama only, so ${distribution === 'modula' ? 'hash modulo the server count' : 'random placement'} cannot be reproduced and keys would be read from other servers than they were written to`
        : `${where('distribution')}: unknown distribution "${distribution}" (twemproxy knows ketama, modula, random)`,
    );
  }
  const hash = str('hash') ?? 'fnv1a_64';
  if (!TWEMPROXY_HASHES.includes(hash)) {
    e.errors.push(`${where('hash')}: unknown hash "${hash}" (twemproxy's: ${TWEMPROXY_HASHES.join(', ')})`);
  }
  const hashTag = str('hash_tag');
  if (hashTag !== null && Buffer.byteLength(hashTag) !== 2) {
    e.errors.push(`${where('hash_tag')}: hash_tag must be two characters, got ${JSON.stringify(hashTag)}`);
  }
  const db = int('redis_db');
  if (db !== null && db !== 0) {
    e.errors.push(
      `${where('redis_db')}: redis_db ${db}: twemproxy SELECTs database ${db} on every server; keymux always uses database 0, so none of these keys would be found`,
    );
  }
  if (pool.servers.length === 0 && pool.problems.length === 0) {
    e.errors.push(`${where('servers')}: no servers`);
  }
  const names = new Map<string, TwemServer>();
  for (const s of pool.servers) {
    const other = names.get(s.ketamaKey);
    if (other !== undefined)
      e.errors.push(
        `${source}:${s.line}: pool ${pool.name}: two servers named "${s.ketamaKey}" (twemproxy refuses it too)`,
      );
    names.set(s.ketamaKey, s);
    if (s.weight > 1_000_000)
      e.errors.push(`${source}:${s.line}: pool ${pool.name}: weight ${s.weight} is over keymux's largest (1000000)`);
  }

  // --- listen and admin
  const listenRaw = str('listen');
  let listen: string | null;
  // twemproxy's "/path/to.sock [mode]" (the mode in octal, as nutcracker reads it with strtol base 8).
  let listenUnix: { path: string; mode: string | null } | null = null;
  if (listenRaw !== null && listenRaw.startsWith('/')) {
    const [path, mode, ...rest] = listenRaw.trim().split(/\s+/);
    const bits = mode !== undefined && /^[0-7]+$/.test(mode) ? parseInt(mode, 8) : null;
    if (rest.length > 0 || (mode !== undefined && (bits === null || bits > 0o777))) {
      e.errors.push(
        `${where('listen')}: listen "${listenRaw}": expected "/path/to.sock" or "/path/to.sock MODE" with an octal MODE up to 0777 (e.g. 0666)`,
      );
    } else {
      listenUnix = { path: path!, mode: bits === null ? null : `0${bits.toString(8).padStart(3, '0')}` };
    }
  }
  if (options.listen !== undefined) {
    listen = options.listen;
  } else if (listenRaw === null) {
    e.errors.push(`${where('listen')}: no listen address (twemproxy requires one)`);
    listen = '127.0.0.1:6380';
  } else if (listenRaw.startsWith('/')) {
    listen = null; // clients connect over the unix socket only, as to nutcracker; --listen adds a TCP port
  } else {
    listen = listenRaw;
  }
  const admin = options.admin === undefined ? '127.0.0.1:9121' : options.admin;

  const out = e.lines;
  out.push(
    `# keymux configuration imported from twemproxy: pool "${pool.name}" of ${source} (line ${pool.line}),`,
    '# by `keymux import-twemproxy`. Ring mode with the same hash, hash tag, server names and weights: keymux puts',
    '# every key on the same server as twemproxy, so clients can switch without moving any data.',
    '# Check it with `keymux --config FILE --check`; see README.md, "Coming from twemproxy".',
    '',
    `# twemproxy: listen: ${listenRaw ?? '(none)'}${options.listen !== undefined ? (listenUnix !== null ? ' (and --listen)' : ' (replaced by --listen)') : ''}`,
    `listen: ${listen === null ? 'null' : y(listen)}`,
    ...(listenUnix === null
      ? []
      : [
          '# The unix socket (a stale file left by a crash is replaced at start; removed on a clean exit).',
          `listen_unix: { path: ${y(listenUnix.path)}${listenUnix.mode === null ? '' : `, mode: "${listenUnix.mode}"`} }`,
        ]),
    "# keymux's admin HTTP server: /metrics (Prometheus), /healthz, /readyz, /shards, /hotkeys, POST /reload.",
    "# (twemproxy's stats port is a command-line option, nutcracker -s, and has no place in its config.)",
    `admin: ${admin === null ? 'null' : y(admin)}`,
    'mode: ring',
  );
  if (hashTag === null) {
    out.push('# twemproxy: no hash_tag (the whole key is hashed); keymux would default to "{}", so it is turned off.');
    out.push('hash_tag: null');
  } else {
    out.push(`# twemproxy: hash_tag: ${JSON.stringify(hashTag)}`, `hash_tag: ${JSON.stringify(hashTag)}`);
  }
  out.push(
    'ring:',
    `  hash: ${hash}${pool.values.has('hash') ? '' : '  # twemproxy default'}`,
    `  distribution: ketama${pool.values.has('distribution') ? '' : '  # twemproxy default'}`,
    '',
    '# Servers in twemproxy order. A named server is placed on the ring by its name, an unnamed one by its',
    '# "host:port", as twemproxy does; weights are kept.',
    'shards:',
  );
  for (const s of pool.servers) {
    const address = addressOf(s.host, s.port);
    // keymux names an unnamed shard by its address and hashes host:port; give an explicit name whenever that
    // would not be the exact string twemproxy hashes (e.g. a host written differently).
    const unnamedKey = ketamaKey({ named: false, name: address, host: s.host, port: s.port });
    const name = s.name ?? (unnamedKey === s.ketamaKey ? null : s.ketamaKey);
    out.push(`  # twemproxy: ${s.text}`);
    if (name !== null) out.push(`  - name: ${y(name)}`, `    address: ${y(address)}`);
    else out.push(`  - address: ${y(address)}`);
    out.push(`    weight: ${s.weight}`);
  }

  // --- connections to the servers
  const timeout = int('timeout');
  const serverConnections = int('server_connections');
  const auth = str('redis_auth');
  out.push('', 'backend:');
  if (serverConnections !== null) {
    const n = Math.min(64, Math.max(1, serverConnections));
    out.push(`  connections: ${n}  # twemproxy: server_connections: ${serverConnections}`);
    if (n !== serverConnections)
      e.notes.push(
        `${where('server_connections')}: server_connections ${serverConnections} -> backend.connections ${n} (keymux allows 1..64)`,
      );
  } else {
    out.push('  connections: 1  # twemproxy default server_connections: 1');
  }
  if (timeout !== null && timeout > 0) {
    out.push(
      `  connect_timeout_ms: ${timeout}  # twemproxy: timeout: ${timeout} (one timeout for connecting and for replies)`,
      `  timeout_ms: ${timeout}`,
    );
  } else {
    out.push(
      "  # twemproxy: no timeout (it waits for a server forever); keymux's 0 means the same. Consider a bound.",
      '  timeout_ms: 0',
    );
  }
  if (auth !== null) {
    out.push(`  password: ${JSON.stringify(auth)}  # twemproxy: redis_auth`);
  }
  const clientConnections = int('client_connections');
  out.push('', 'clients:');
  if (auth !== null) {
    out.push(`  password: ${JSON.stringify(auth)}  # twemproxy: redis_auth also makes every client AUTH with it`);
  }
  if (clientConnections !== null && clientConnections > 0) {
    out.push(
      `  max: ${Math.min(clientConnections, 1_000_000)}  # twemproxy: client_connections: ${clientConnections} (loose: twemproxy 0.5 reads it but does not enforce it; keymux does)`,
    );
    e.notes.push(
      `${where('client_connections')}: client_connections ${clientConnections} -> clients.max (loose: twemproxy 0.5 does not enforce it, keymux does)`,
    );
  } else {
    out.push('  max: 100000  # twemproxy does not limit clients; keymux needs a bound (1..1000000)');
  }
  if (auth === null) out.push('  password: null');

  // --- no equivalent: noted, never dropped silently
  const loose: string[] = [];
  const autoEject = bool('auto_eject_hosts', false);
  if (autoEject) {
    const retry = int('server_retry_timeout') ?? 30000;
    const limit = int('server_failure_limit') ?? 2;
    loose.push(
      `auto_eject_hosts: true (server_failure_limit ${limit}, server_retry_timeout ${retry} ms): twemproxy takes a`,
      '  failing server out of the ring and sends its keys to the other servers until it is back; keymux never',
      "  does: while a shard is down its keys get an error, and no key is written where it doesn't belong.",
    );
    e.notes.push(
      `${where('auto_eject_hosts')}: auto_eject_hosts: keymux never ejects a shard from the ring (its keys get errors while it is down; twemproxy would send them to other servers)`,
    );
  } else {
    for (const d of ['server_retry_timeout', 'server_failure_limit'] as const) {
      if (pool.values.has(d)) loose.push(`${d}: ${String(get(d))}: only used with auto_eject_hosts, which is off.`);
    }
  }
  if (pool.values.has('server_retry_timeout') || pool.values.has('server_failure_limit') || autoEject) {
    loose.push('keymux reconnects to a failed shard by itself, backing off from 50 ms to 2 s.');
  }
  const preconnect = bool('preconnect', false);
  if (pool.values.has('preconnect'))
    loose.push(`preconnect: ${preconnect}: keymux always connects to every shard at start.`);
  if (pool.values.has('tcpkeepalive'))
    loose.push(`tcpkeepalive: ${String(get('tcpkeepalive'))}: keymux always enables TCP keepalive to shards (30 s).`);
  const backlog = int('backlog');
  if (backlog !== null) {
    loose.push(
      `backlog: ${backlog}: keymux listens with a backlog of 1024 (capped by net.core.somaxconn); no setting.`,
    );
    e.notes.push(
      `${where('backlog')}: backlog ${backlog} has no keymux setting (keymux's 1024, capped by net.core.somaxconn, is used)`,
    );
  }
  if (db === 0 && pool.values.has('redis_db')) loose.push('redis_db: 0: keymux always uses database 0.');
  if (loose.length > 0) {
    out.push('', '# Not carried over (no keymux setting; key placement is not affected):');
    for (const l of loose) out.push(`#   ${l}`);
  }

  const lineOfMessage = (m: string): number => Number(/^[^\n]*?:(\d+): /.exec(m)?.[1] ?? 0);
  e.errors.sort((a, b) => lineOfMessage(a) - lineOfMessage(b));
  const result: ImportResult = { yaml: null, errors: e.errors, notes: e.notes, config: null, pool };
  if (e.errors.length > 0) return result;
  const yaml = `${out.join('\n')}\n`;
  const parsed = parseConfigText(yaml, '<generated>');
  if (parsed.errors !== undefined) {
    for (const err of parsed.errors) {
      e.errors.push(
        `${source}:${pool.line}: pool ${pool.name}: keymux cannot express this pool: ${err.replace(/^<generated>:\d+: /, '')}`,
      );
    }
    return result;
  }
  const mismatch = compareContinuum(pool, parsed.config, hash as HashName);
  if (mismatch !== null) {
    e.errors.push(`${source}:${pool.line}: pool ${pool.name}: ${mismatch}`);
    return result;
  }
  result.yaml = yaml;
  result.config = parsed.config;
  return result;
}

/** Builds twemproxy's continuum from the pool and keymux's from the config: they must be the same, point for point. */
function compareContinuum(pool: TwemPool, config: KeymuxConfig, hash: HashName): string | null {
  const theirs = new KetamaContinuum(
    pool.servers.map((s) => ({ key: s.ketamaKey, weight: s.weight })),
    HASHERS[hash],
  );
  const ours = new KetamaContinuum(
    config.shards.map((s) => ({ key: ketamaKey(s), weight: s.weight })),
    HASHERS[config.ring.hash],
  );
  if (theirs.size !== ours.size) return `internal check failed: ring sizes differ (${theirs.size} vs ${ours.size})`;
  for (let i = 0; i < ours.size; i++) {
    if (theirs.points[i] !== ours.points[i] || theirs.owners[i] !== ours.owners[i]) {
      return `internal check failed: ring point ${i} differs; please report this pool`;
    }
  }
  return null;
}

export async function run(argv: string[], io: Io = processIo): Promise<number> {
  let values: { pool?: string; listen?: string; admin?: string; verify?: boolean; sample?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        pool: { type: 'string', short: 'p' },
        listen: { type: 'string' },
        admin: { type: 'string' },
        verify: { type: 'boolean' },
        sample: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    io.err(`keymux import-twemproxy: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    io.err(`keymux import-twemproxy: give one twemproxy config file\n${USAGE}`);
    return 2;
  }
  const file = positionals[0];
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    io.err(`keymux import-twemproxy: ${file}: cannot read the file: ${(err as Error).message}\n`);
    return 1;
  }
  const { pools, errors } = parseTwemproxy(text, file);
  if (errors.length > 0) {
    io.err(`keymux import-twemproxy: ${file} is not a valid twemproxy config:\n`);
    for (const m of errors) io.err(`  ${m}\n`);
    return 1;
  }
  let pool: TwemPool;
  if (values.pool !== undefined) {
    const found = pools.find((p) => p.name === values.pool);
    if (found === undefined) {
      io.err(
        `keymux import-twemproxy: ${file} has no pool "${values.pool}"; its pools: ${pools.map((p) => p.name).join(', ')}\n`,
      );
      return 2;
    }
    pool = found;
  } else if (pools.length > 1) {
    io.err(
      `keymux import-twemproxy: ${file} has ${pools.length} pools; one keymux serves one, so pick it with --pool NAME:\n` +
        pools.map((p) => `  ${p.name} (line ${p.line}, listen ${p.values.get('listen')?.text ?? '-'})\n`).join('') +
        '(run keymux once per pool, each with its own config)\n',
    );
    return 2;
  } else {
    pool = pools[0];
  }
  const admin = values.admin === undefined ? undefined : values.admin === 'none' ? null : values.admin;
  const result = importPool(pool, file, { listen: values.listen, admin });
  for (const n of result.notes) io.err(`note: ${n}\n`);
  if (result.yaml === null || result.config === null) {
    io.err(
      `keymux import-twemproxy: pool ${pool.name} cannot be imported as it is (${result.errors.length} problem${result.errors.length === 1 ? '' : 's'}; nothing was written):\n`,
    );
    for (const m of result.errors) io.err(`  ${m}\n`);
    return 1;
  }
  if (values.verify) {
    const ok = await verify(result.config, Number(values.sample ?? 1000), io);
    if (!ok) return 1;
  }
  io.out(result.yaml);
  return 0;
}

/**
 * Samples keys on every server and checks that the imported config routes each to the server it is on. Keys
 * that are elsewhere were written while twemproxy had ejected a server (auto_eject_hosts), or by something else.
 */
async function verify(config: KeymuxConfig, perServer: number, io: Io): Promise<boolean> {
  const progress = new Progress(io);
  progress.update('keymux import-twemproxy: sampling keys on the servers');
  const shards = config.shards.map((s) => ({ name: s.name, address: s.address }));
  const estimate = await estimateMoves(
    shards,
    config,
    accessOf(config),
    {
      keysPerShard: perServer,
      timeMs: 10_000,
      onProgress: (done, total, keys) =>
        progress.update(`keymux import-twemproxy: checked ${done}/${total} servers, ${count(keys)} keys`),
    },
    migrationRate([]),
    (address) => shards.find((s) => s.address === address) ?? { name: address, address },
  );
  progress.done();
  const failed = estimate.shards.filter((s) => s.error !== null);
  for (const s of failed) io.err(`verify: ${s.address}: ${s.error}\n`);
  const sampled = estimate.shards.reduce((a, s) => a + s.sampled, 0);
  const misplaced = estimate.moves.reduce((a, m) => a + m.keys, 0);
  if (failed.length > 0) return false;
  if (estimate.moves.length > 0) {
    io.err(
      `verify: about ${count(misplaced)} keys are not on the server this config (and twemproxy now) routes them to; ` +
        'they were probably written while a server was ejected (auto_eject_hosts). keymux would not find them:\n',
    );
    for (const m of estimate.moves)
      io.err(`  on ${m.from.address}, routed to ${m.to.address}: about ${count(m.keys)}\n`);
    return false;
  }
  const whole = estimate.shards.every((s) => s.exact);
  io.err(
    `verify: ${count(sampled)} sampled keys on ${shards.length} servers${whole ? ' (every key of every server)' : ''}, ` +
      'every one on the server keymux routes it to\n',
  );
  return true;
}
