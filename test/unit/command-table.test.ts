/**
 * The command table without a server: byte lookup (case-insensitive, no strings), subcommand resolution, keymux's
 * overrides and generic rules, the deny list, parsing of COMMAND replies (Redis 7 and older shapes), the compact
 * key-spec form of the built-in table, and key-index vectors for findKeyIndexes with its error codes.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  builtinRows,
  COMMAND_OVERRIDES,
  CommandTable,
  formatKeySpec,
  parseKeySpec,
  resolveSubcommand,
  specsFromCommandReply,
  subcommandErrorReply,
  type RawCommandRow,
} from '../../src/commands/table.js';
import {
  findKeyIndexes,
  keysErrorReply,
  parseInteger,
  KEYS_ERROR_ARITY,
  KEYS_ERROR_NO_KEYS,
  KEYS_ERROR_NUMKEYS_NEGATIVE,
  KEYS_ERROR_NUMKEYS_NOT_INTEGER,
  KEYS_ERROR_NUMKEYS_TOO_LARGE,
  KEYS_ERROR_OPTION_REFUSED,
  KEYS_ERROR_SYNTAX,
  KEYS_ERROR_UNKNOWN_SPEC,
} from '../../src/commands/keys.js';
import type { CommandSpec } from '../../src/commands/spec.js';

const table = CommandTable.builtin();

function all(t: CommandTable): CommandSpec[] {
  return t.names().flatMap((n) => {
    const s = t.get(n) as CommandSpec;
    return [s, ...(s.subcommands?.values() ?? [])];
  });
}

function spec(name: string, t = table): CommandSpec {
  const s = t.get(name);
  if (!s) throw new Error(`no ${name}`);
  return s;
}

const reason = (s: CommandSpec): string | undefined => s.refuseReason?.toString();

describe('lookup', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('matches the name bytes case-insensitively at any offset', () => {
    const buf = Buffer.from('*2\r\n$3\r\ngEt\r\n$1\r\nk\r\n');
    expect(table.lookup(buf, 8, 11)?.name).toBe('get');
    for (const n of ['GET', 'get', 'Get', 'gET']) expect(table.lookup(Buffer.from(n), 0, 3)?.name).toBe('get');
    expect(table.lookup(Buffer.from('xxZUNIONSTOREyy'), 2, 13)?.name).toBe('zunionstore');
  });

  it('finds every command under lower and upper case, names with _ and -', () => {
    for (const n of table.names()) {
      expect(table.lookup(Buffer.from(n), 0, n.length)?.name).toBe(n);
      expect(table.lookup(Buffer.from(n.toUpperCase()), 0, n.length)?.name).toBe(n);
    }
    expect(table.lookup(Buffer.from('SORT_RO'), 0, 7)?.name).toBe('sort_ro');
    expect(table.lookup(Buffer.from('Restore-Asking'), 0, 14)?.name).toBe('restore-asking');
  });

  it('does not match prefixes, extensions, empty names, non-ASCII case folds or long arguments', () => {
    for (const n of ['ge', 'gets', 'getx', '', 'g\u00c9t', 'get ', ' get', 'nosuchcommand', 'x'.repeat(100000)]) {
      const b = Buffer.from(n, 'latin1');
      expect(table.lookup(b, 0, b.length), n.slice(0, 20)).toBeUndefined();
    }
    // '@' (0x40) and '[' (0x5b) sit next to 'A'..'Z': they must not fold.
    expect(table.lookup(Buffer.from('@et'), 0, 3)).toBeUndefined();
    expect(table.lookup(Buffer.from('get'), 1, 3)).toBeUndefined();
  });

  it('does not create strings', () => {
    const buf = Buffer.from('HGETALL');
    const toString = vi.spyOn(Buffer.prototype, 'toString');
    const latin1 = vi.spyOn(Buffer.prototype, 'latin1Slice' as never);
    for (let i = 0; i < 1000; i++) table.lookup(buf, 0, buf.length);
    expect(toString).not.toHaveBeenCalled();
    expect(latin1).not.toHaveBeenCalled();
  });

  it('get() takes names and container|sub names; names() and size list top-level commands', () => {
    expect(table.get('OBJECT|Encoding')?.name).toBe('object|encoding');
    expect(table.get('object|nosuch')).toBeUndefined();
    expect(table.get('nosuch')).toBeUndefined();
    expect(table.names()).toEqual([...table.names()].sort());
    expect(table.size).toBe(table.names().length);
    expect(table.names().some((n) => n.includes('|'))).toBe(false);
    expect(table.size).toBeGreaterThan(200);
  });
});

describe('subcommands', () => {
  const args = (...a: string[]): Buffer[] => a.map((s) => Buffer.from(s));

  it('resolves the subcommand case-insensitively', () => {
    const object = spec('object');
    expect(resolveSubcommand(object, args('OBJECT', 'ENCODING', 'k'))?.name).toBe('object|encoding');
    expect(resolveSubcommand(object, args('object', 'eNcOdInG', 'k'))?.name).toBe('object|encoding');
    expect(resolveSubcommand(spec('client'), args('client', 'SETNAME', 'x'))?.dispatch).toBe('local');
  });

  it('returns the command itself when it has no subcommands or none is given', () => {
    const get = spec('get');
    expect(resolveSubcommand(get, args('get', 'k'))).toBe(get);
    const object = spec('object');
    expect(resolveSubcommand(object, args('object'))).toBe(object);
    expect(reason(object)).toBe("-ERR wrong number of arguments for 'object' command\r\n");
    expect(spec('command').dispatch).toBe('local'); // bare COMMAND is valid
  });

  it("returns undefined for an unknown subcommand, with Redis's error reply", () => {
    const object = spec('object');
    const a = args('object', 'nosuch\r\nx', 'k');
    expect(resolveSubcommand(object, a)).toBeUndefined();
    expect(subcommandErrorReply(object, a).toString()).toBe(
      "-ERR unknown subcommand 'nosuch  x'. Try OBJECT HELP.\r\n",
    );
  });

  it('builds an index lazily for hand-built container specs', () => {
    const sub = { ...spec('object|encoding') };
    const hand: CommandSpec = { ...spec('object'), subcommands: new Map([['encoding', sub]]) };
    expect(resolveSubcommand(hand, args('OBJECT', 'Encoding', 'k'))).toBe(sub);
    expect(resolveSubcommand(hand, args('OBJECT', 'freq', 'k'))).toBeUndefined();
  });
});

describe('overrides', () => {
  it('answers connection and introspection commands locally', () => {
    for (const n of [
      'ping',
      'echo',
      'quit',
      'select',
      'auth',
      'hello',
      'command',
      'command|count',
      'command|info',
      'command|docs',
      'command|list',
      'client|setname',
      'client|getname',
      'client|setinfo',
      'client|id',
      'client|list',
      'client|info',
      'client|kill',
    ]) {
      expect(spec(n).dispatch, n).toBe('local');
      expect(spec(n).refuseReason).toBeNull();
    }
  });

  it('client|setinfo exists even though the generating server (7.0) lacks it', () => {
    expect(builtinRows().some((r) => r.name === 'client|setinfo')).toBe(false);
    expect(spec('client|setinfo').arity).toBe(-4);
  });

  it('refuses the other CLIENT and COMMAND subcommands', () => {
    expect(reason(spec('client|no-evict'))).toBe(
      "-ERR keymux: command 'client|no-evict' is not supported (of CLIENT, keymux supports SETNAME, GETNAME, SETINFO, ID, INFO, LIST, KILL, REPLY, UNBLOCK and HELP)\r\n",
    );
    expect(spec('client|pause').dispatch).toBe('refused');
    expect(spec('command|help').dispatch).toBe('one-shard');
    expect(spec('client|help').dispatch).toBe('one-shard');
  });

  it('sends INFO, DBSIZE, FLUSHALL, FLUSHDB to every shard with the right merge', () => {
    expect([spec('info').dispatch, spec('info').merge]).toEqual(['all-shards', 'info']);
    expect([spec('dbsize').dispatch, spec('dbsize').merge]).toEqual(['all-shards', 'sum']);
    expect([spec('flushall').dispatch, spec('flushall').merge]).toEqual(['all-shards', 'all-ok']);
    expect([spec('flushdb').dispatch, spec('flushdb').merge]).toEqual(['all-shards', 'all-ok']);
  });

  it('splits MGET, MSET, DEL, UNLINK, EXISTS, TOUCH', () => {
    const f = (n: string): unknown[] => [spec(n).dispatch, spec(n).merge, spec(n).fanoutShape];
    expect(f('mget')).toEqual(['fanout', 'mget', 'keys']);
    expect(f('mset')).toEqual(['fanout', 'all-ok', 'key-value']);
    for (const n of ['del', 'unlink', 'exists', 'touch']) expect(f(n)).toEqual(['fanout', 'sum', 'keys']);
    expect(f('msetnx')).toEqual(['keyed', null, null]); // atomic: must stay on one shard
  });

  it('refuses with a clear message naming the command and why', () => {
    // Transactions and blocking commands have a dispatch kind of their own (issue 10).
    for (const n of ['multi', 'exec', 'discard', 'watch', 'unwatch', 'blpop', 'bzmpop', 'blmove', 'client|unblock'])
      expect((n.includes('|') ? spec('client').subcommands?.get('unblock') : spec(n))?.dispatch, n).toBe('session');
    expect(reason(spec('config|rewrite'))).toBe(
      "-ERR keymux: command 'config|rewrite' is not supported: rewrite the configuration file of each shard directly\r\n",
    );
    expect(reason(spec('script|debug'))).toContain('debug scripts on a shard directly');
    expect(reason(spec('migrate'))).toContain('does not move keys');
    expect(reason(spec('move'))).toContain('database 0');
    expect(spec('wait').dispatch).toBe('wait'); // server/dispatch/wait.ts
    expect(reason(spec('memory|doctor'))).toContain('each shard');
    for (const n of [
      'config',
      'shutdown',
      'debug',
      'monitor',
      'replicaof',
      'slaveof',
      'cluster',
      'cluster|slots',
      'readonly',
      'readwrite',
      'asking',
      'sync',
      'psync',
      'failover',
      'swapdb',
      'save',
      'bgsave',
      'bgrewriteaof',
      'acl|setuser',
      'latency|latest',
      'slowlog|get',
      'module|list',
      'role',
    ]) {
      expect(spec(n).dispatch, n).toBe('refused');
    }
  });

  it('sends scripts, functions, keyspace walks and keyless reads where they belong', () => {
    const f = (n: string) => [spec(n).dispatch, spec(n).merge];
    expect(f('keys')).toEqual(['all-shards', 'keys']);
    expect(f('randomkey')).toEqual(['all-shards', 'random']);
    expect(f('scan')).toEqual(['scan', null]);
    expect(f('script|load')).toEqual(['all-shards', 'script-load']);
    expect(f('script|exists')).toEqual(['all-shards', 'and']);
    expect(f('script|flush')).toEqual(['all-shards', 'script-flush']);
    expect(f('script|kill')).toEqual(['kill', null]);
    expect(f('function|kill')).toEqual(['kill', null]);
    expect(f('function|load')).toEqual(['all-shards', 'function-load']);
    expect(f('function|delete')).toEqual(['all-shards', 'function-delete']);
    expect(f('function|flush')).toEqual(['all-shards', 'function-flush']);
    expect(f('function|restore')).toEqual(['all-shards', 'function-restore']);
    for (const n of ['time', 'lastsave', 'lolwut', 'function|list', 'function|dump', 'function|stats', 'object|help'])
      expect(spec(n).dispatch, n).toBe('one-shard');
    expect(f('config|get')).toEqual(['config', null]);
    expect(f('config|set')).toEqual(['config', 'all-ok']);
    expect(f('config|resetstat')).toEqual(['config', 'all-ok']);
    for (const n of ['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'])
      expect(spec(n).dispatch, n).toBe('keyed');
  });

  it('serves pub/sub commands with the pubsub kind, RESET and CLIENT REPLY locally', () => {
    for (const n of [
      'subscribe',
      'psubscribe',
      'ssubscribe',
      'unsubscribe',
      'punsubscribe',
      'sunsubscribe',
      'publish',
      'spublish',
      'pubsub|channels',
      'pubsub|numsub',
      'pubsub|numpat',
      'pubsub|shardchannels',
      'pubsub|shardnumsub',
      'pubsub|help',
    ]) {
      expect(spec(n).dispatch, n).toBe('pubsub');
    }
    expect(spec('reset').dispatch).toBe('local');
    expect(spec('client|reply').dispatch).toBe('local');
  });

  it('routes keyed subcommands and keyed scripting', () => {
    for (const n of [
      'memory|usage',
      'object|encoding',
      'object|freq',
      'xinfo|stream',
      'xgroup|create',
      'eval',
      'evalsha',
      'fcall',
      'fcall_ro',
      'eval_ro',
      'get',
      'set',
      'zunionstore',
      'georadius',
      'lmpop',
      'sintercard',
    ]) {
      expect(spec(n).dispatch, n).toBe('keyed');
    }
  });

  it('keeps SORT, COPY keyed and XREAD, XREADGROUP session (BLOCK leases a connection) with run-time option checks', () => {
    for (const n of ['xread', 'xreadgroup', 'sort', 'sort_ro', 'copy']) {
      expect(spec(n).dispatch, n).toBe(n.startsWith('xread') ? 'session' : 'keyed');
      expect(spec(n).options, n).toBeTruthy();
    }
  });

  it('generic rules hold over the whole table', () => {
    for (const s of all(table)) {
      if (s.dispatch === 'refused') {
        expect(s.refuseReason?.toString(), s.name).toMatch(
          /^-ERR (keymux: command '[^']+' |wrong number of arguments for )[^\r\n]+\r\n$/,
        );
      } else {
        expect(s.refuseReason, s.name).toBeNull();
      }
      if (s.flags.includes('blocking')) expect(s.dispatch, s.name).toBe('session');
      if (s.flags.includes('pubsub')) expect(['pubsub', 'refused'], s.name).toContain(s.dispatch);
      if (s.dispatch === 'keyed' || s.dispatch === 'fanout') {
        expect(s.keyFinder?.mayHaveKeys, s.name).toBe(true);
        expect(s.keyFinder?.error, s.name).toBe(0);
      }
      if (s.keySpecs.length === 0 && s.subcommands === null)
        expect(
          ['local', 'all-shards', 'refused', 'pubsub', 'session', 'one-shard', 'scan', 'kill', 'config', 'wait'],
          s.name,
        ).toContain(s.dispatch);
      expect(s.readonly).toBe(s.flags.includes('readonly'));
      expect(s.write).toBe(s.flags.includes('write'));
      if (s.dispatch !== 'config')
        expect((s.merge !== null) === (s.dispatch === 'fanout' || s.dispatch === 'all-shards'), s.name).toBe(true);
    }
  });

  it('every override names a command, subcommand or container in the table', () => {
    for (const name of Object.keys(COMMAND_OVERRIDES)) {
      const base = name.endsWith('|*') ? name.slice(0, -2) : name;
      expect(table.get(base), name).toBeDefined();
    }
  });
});

describe('deny list', () => {
  const t = CommandTable.builtin({ deny: ['GET', 'client|kill', 'config', 'flushall', 'ping', 'nosuch'] });
  const disabled = (n: string): string => `-ERR keymux: command '${n}' is disabled by configuration\r\n`;

  it('refuses denied commands, subcommands and whole containers', () => {
    for (const n of ['get', 'client|kill', 'config', 'config|get', 'config|set', 'flushall', 'ping']) {
      expect(spec(n, t).dispatch, n).toBe('refused');
      expect(reason(spec(n, t))).toBe(disabled(n));
    }
    expect(spec('client|setname', t).dispatch).toBe('local');
    expect(spec('set', t).dispatch).toBe('keyed');
    expect(t.lookup(Buffer.from('GET'), 0, 3)?.dispatch).toBe('refused');
  });

  it('reports entries that name nothing', () => {
    expect(t.unknownDenied).toEqual(['nosuch']);
  });
});

describe('commands.scripts: isolated', () => {
  it('runs the script calls on session connections; SCRIPT, FUNCTION and the deny list are as before', () => {
    const t = CommandTable.builtin({ deny: ['fcall_ro'], scripts: 'isolated' });
    for (const n of ['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall'])
      expect(spec(n, t).dispatch, n).toBe('session');
    expect(spec('fcall_ro', t).dispatch).toBe('refused');
    expect(spec('script|load', t).dispatch).toBe(spec('script|load').dispatch);
    expect(spec('function|load', t).dispatch).toBe(spec('function|load').dispatch);
    expect(t.lookup(Buffer.from('EVALSHA'), 0, 7)?.dispatch).toBe('session');
    expect(spec('eval').dispatch).toBe('keyed'); // the default, 'allow'
  });
});

describe('rows', () => {
  const row = (name: string, keySpecs: unknown[] = [], extra: Partial<Record<string, unknown>> = {}): unknown[] => [
    name,
    extra.arity ?? -2,
    extra.flags ?? ['write'],
    1,
    1,
    1,
    ['@write'],
    [],
    keySpecs,
    extra.subs ?? [],
  ];
  const ks = (begin: unknown[], find: unknown[], flags = ['RW']): unknown[] => [
    'flags',
    flags,
    'begin_search',
    begin,
    'find_keys',
    find,
  ];

  it('adding a command means adding a row', () => {
    const rows = specsFromCommandReply([
      row('ping', [], { arity: -1, flags: ['fast'] }),
      row(
        'json.set',
        [
          ks(
            ['type', 'index', 'spec', ['index', 1]],
            ['type', 'range', 'spec', ['lastkey', 0, 'keystep', 1, 'limit', 0]],
          ),
        ],
        { arity: -4 },
      ),
    ]);
    const t = CommandTable.fromRows(rows, { deny: [] });
    const s = spec('json.set', t);
    expect(s.dispatch).toBe('keyed');
    const out: number[] = [];
    expect(
      findKeyIndexes(
        s,
        ['JSON.SET', 'doc', '$', '1'].map((a) => Buffer.from(a)),
        out,
      ),
    ).toBe(1);
    expect(out[0]).toBe(1);
  });

  it('parses RESP3-style maps, Buffers and older servers without key specs', () => {
    const rows = specsFromCommandReply([
      [
        Buffer.from('GET'),
        2,
        ['readonly', 'fast'],
        1,
        1,
        1,
        ['@read'],
        [],
        [
          new Map<string, unknown>([
            ['flags', ['RO']],
            ['begin_search', { type: 'index', spec: { index: 1 } }],
            ['find_keys', { type: 'range', spec: { lastkey: 0, keystep: 1, limit: 0 } }],
          ]),
        ],
        [],
      ],
      ['mset', -3, ['write'], 1, -1, 2], // Redis 6 shape
      ['zunionstore', -4, ['write', 'movablekeys'], 0, 0, 0],
    ]);
    expect(rows.map((r) => r.name)).toEqual(['get', 'mset', 'zunionstore']);
    expect(rows[0].keySpecs[0]).toEqual({
      notes: null,
      flags: ['RO'],
      begin: { kind: 'index', pos: 1 },
      find: { kind: 'range', lastKey: 0, step: 1, limit: 0 },
    });
    expect(rows[1].keySpecs[0].find).toEqual({ kind: 'range', lastKey: -1, step: 2, limit: 0 });
    const t = CommandTable.fromRows(
      [...rows, ...builtinRows().filter((r) => r.name === 'client' || r.name.startsWith('client|'))],
      { deny: [] },
    );
    expect(spec('mset', t).dispatch).toBe('fanout');
    expect(reason(spec('zunionstore', t))).toBe(
      "-ERR keymux: command 'zunionstore' has key positions keymux cannot determine (refusing rather than guessing)\r\n",
    );
  });

  it('rejects malformed replies and orphan subcommands', () => {
    expect(() => specsFromCommandReply([['get', 'two', [], 1, 1, 1]])).toThrow(/arity is not an integer/);
    expect(() => specsFromCommandReply([row('object', [], { subs: [row('client|x')] })])).toThrow(
      /not named after its container/,
    );
    const orphan: RawCommandRow = { ...builtinRows()[0], name: 'nosuch|sub' };
    expect(() => CommandTable.fromRows([orphan], { deny: [] })).toThrow(/no container row 'nosuch'/);
  });

  it('round-trips the compact key-spec form', () => {
    for (const r of builtinRows()) for (const k of r.keySpecs) expect(parseKeySpec(formatKeySpec(k))).toEqual(k);
    const georadius = builtinRows().find((r) => r.name === 'georadius') as RawCommandRow;
    expect(formatKeySpec(georadius.keySpecs[1])).toBe('OW update; keyword STORE 6; range 0 1 0');
    expect(() => parseKeySpec('RW; index x; range 0 1 0')).toThrow(/malformed/);
    expect(() => parseKeySpec('RW; index 1')).toThrow(/malformed/);
    expect(() => parseKeySpec('RW; index 1; range 0 1 0; note x')).toThrow(/malformed/);
  });
});

describe('findKeyIndexes vectors', () => {
  const V: Array<[string, number[] | number]> = [
    ['GET k', [1]],
    ['SET k v EX 1', [1]],
    ['MGET a b c', [1, 2, 3]],
    ['MSET a 1 b 2', [1, 3]],
    ['MSET a 1 b', KEYS_ERROR_ARITY],
    ['RENAME a b', [1, 2]],
    ['ZUNIONSTORE d 2 a b WEIGHTS 1 2', [1, 3, 4]],
    ['ZUNIONSTORE d 0 a', [1]],
    ['ZUNIONSTORE d 3 a b', KEYS_ERROR_NUMKEYS_TOO_LARGE],
    ['ZUNIONSTORE d x a', KEYS_ERROR_NUMKEYS_NOT_INTEGER],
    ['ZUNIONSTORE d -1 a', KEYS_ERROR_NUMKEYS_NEGATIVE],
    ['EVAL s 2 a b x', [3, 4]],
    ['EVAL s 0 x', KEYS_ERROR_NO_KEYS],
    ['XREAD COUNT 1 STREAMS a b 0 0', [4, 5]],
    ['XREAD STREAMS a 0', [2]],
    ['XREAD BLOCK 0 STREAMS a 0', [4]],
    ['XREAD FOO 1 STREAMS a 0', KEYS_ERROR_SYNTAX],
    ['XREAD COUNT 1', KEYS_ERROR_ARITY],
    ['XREADGROUP GROUP g c STREAMS a >', [5]],
    // A group or consumer named "streams" is not the keyword (Redis's key spec would take it; xreadGetKeys does not).
    ['XREADGROUP NOACK GROUP g streams STREAMS q >', [6]],
    ['XREADGROUP COUNT 1 GROUP streams c STREAMS q r > >', [7, 8]],
    ['XREADGROUP GROUP streams streams STREAMS streams >', [5]],
    ['XREADGROUP GROUP g streams', KEYS_ERROR_ARITY],
    ['GEORADIUS g 1 2 3 km STORE d', [1, 7]],
    ['GEORADIUS g 1 2 3 km STOREDIST d STORE e', [1, 9, 7]],
    ['SORT k ALPHA STORE d', [1, 4]],
    ['SORT k BY nosort GET # LIMIT 0 1', [1]],
    ['SORT k BY w_*', KEYS_ERROR_OPTION_REFUSED],
    ['SORT k GET # GET o_*->f', KEYS_ERROR_OPTION_REFUSED],
    ['SORT_RO k BY nosort', [1]],
    ['COPY a b db 2', KEYS_ERROR_OPTION_REFUSED],
    ['COPY a b DB 0 REPLACE', [1, 2]],
    ['COPY a b DB x', KEYS_ERROR_NUMKEYS_NOT_INTEGER],
    ['COPY a b REPLACE', [1, 2]],
    ['PFMERGE d', [1]],
    ['OBJECT ENCODING k', [2]],
    ['MIGRATE h 1 k 0 10', KEYS_ERROR_UNKNOWN_SPEC],
    ['GET', KEYS_ERROR_ARITY],
  ];
  it.each(V)('%s -> %j', (cmd, expected) => {
    const args = cmd.split(' ').map((a) => Buffer.from(a));
    const s = resolveSubcommand(table.lookup(args[0], 0, args[0].length) as CommandSpec, args) as CommandSpec;
    const out: number[] = [99, 99, 99, 99, 99, 99, 99, 99];
    const n = findKeyIndexes(s, args, out);
    if (typeof expected === 'number') expect(n).toBe(expected);
    else expect(out.slice(0, n)).toEqual(expected);
  });

  it('works on hand-built specs (compiled on first use)', () => {
    const s: CommandSpec = { ...spec('zunionstore') };
    delete (s as { keyFinder?: unknown }).keyFinder;
    const out: number[] = [];
    expect(
      findKeyIndexes(
        s,
        'ZUNIONSTORE d 2 a b'.split(' ').map((a) => Buffer.from(a)),
        out,
      ),
    ).toBe(3);
    expect(out).toEqual([1, 3, 4]);
  });

  it('key specs with negative index and backward keyword searches', () => {
    const s: CommandSpec = {
      ...spec('get'),
      arity: -2,
      keySpecs: [
        { begin: { kind: 'index', pos: -1 }, find: { kind: 'range', lastKey: 0, step: 1, limit: 0 }, flags: ['ro'] },
        {
          begin: { kind: 'keyword', keyword: 'KEYS', startFrom: -2 },
          find: { kind: 'range', lastKey: -2, step: 1, limit: 0 },
          flags: ['rw'],
        },
        {
          begin: { kind: 'index', pos: 1 },
          find: { kind: 'range', lastKey: 0, step: 1, limit: 0 },
          flags: ['not_key'],
        },
      ],
      keyFinder: undefined,
      options: null,
    };
    delete (s as { keyFinder?: unknown }).keyFinder;
    const out: number[] = [];
    const args = 'X keys a KEYS b c last'.split(' ').map((a) => Buffer.from(a));
    expect(findKeyIndexes(s, args, out)).toBe(3);
    expect(out.slice(0, 3)).toEqual([6, 4, 5]); // last arg; after the last KEYS up to argc-2
  });

  it('error replies are Redis-like and name the command', () => {
    const get = spec('get');
    expect(keysErrorReply(KEYS_ERROR_ARITY, get).toString()).toBe(
      "-ERR wrong number of arguments for 'get' command\r\n",
    );
    expect(keysErrorReply(KEYS_ERROR_NO_KEYS, spec('eval')).toString()).toBe(
      "-ERR keymux: command 'eval' has no key to route by\r\n",
    );
    expect(keysErrorReply(KEYS_ERROR_NUMKEYS_TOO_LARGE).toString()).toBe(
      "-ERR Number of keys can't be greater than number of args\r\n",
    );
    expect(keysErrorReply(KEYS_ERROR_NUMKEYS_NEGATIVE).toString()).toBe("-ERR Number of keys can't be negative\r\n");
    expect(keysErrorReply(KEYS_ERROR_NUMKEYS_NOT_INTEGER).toString()).toBe(
      '-ERR value is not an integer or out of range\r\n',
    );
    expect(keysErrorReply(KEYS_ERROR_SYNTAX).toString()).toBe('-ERR syntax error\r\n');
    expect(keysErrorReply(KEYS_ERROR_OPTION_REFUSED, spec('sort')).toString()).toBe(
      "-ERR keymux: command 'sort' with a BY or GET pattern containing '*' is not supported in cluster mode or inside MULTI: " +
        'it names keys on any shard (keymux runs it itself in slots and ring mode)\r\n',
    );
    expect(keysErrorReply(KEYS_ERROR_ARITY, get)).toBe(keysErrorReply(KEYS_ERROR_ARITY, get)); // built once
    expect(keysErrorReply(-999).toString()).toMatch(/^-ERR .*\r\n$/);
  });

  it('parses integers like Redis string2ll', () => {
    const p = (s: string): number => parseInteger(Buffer.from(s));
    expect(p('0')).toBe(0);
    expect(p('12')).toBe(12);
    expect(p('-3')).toBe(-3);
    for (const bad of [
      '',
      '-',
      '01',
      '-0',
      '+1',
      ' 1',
      '1 ',
      '1a',
      '1.0',
      '99999999999999999999',
      '123456789012345678901',
      '9223372036854775808',
      '-9223372036854775809',
      '9999999999999999999',
    ]) {
      expect(p(bad), bad).toBeNaN();
    }
    // The 64-bit bounds themselves, and values near them that round to 2^63 as doubles (exact check on digits).
    for (const good of ['9223372036854775807', '9223372036854774784', '-9223372036854775808', '1000000000000000000'])
      expect(p(good), good).not.toBeNaN();
    expect(p('9223372036854775807')).toBe(2 ** 63);
  });
});
