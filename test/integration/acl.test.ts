/**
 * Users and permissions through keymux (src/security/acl.ts, the session's check, auth-guard.ts), against real
 * redis-servers. The oracle is a real redis-server given the same users with ACL SETUSER: for a corpus of
 * commands per user, keymux refuses exactly what Redis refuses, with the same NOPERM bytes (commands, keys with
 * %R/%W, channels, EVAL's declared keys, local commands such as PING), and lets through what Redis lets through.
 * Then real clients: ioredis and redis-cli with a user name, HELLO 2 AUTH, ACL WHOAMI/CAT; pipelined and inline
 * forms; password rotation with two passwords and a reload; queued commands checked again at EXEC after a reload
 * (bytes compared with Redis's); nopass; the server-administration commands that stay
 * refused for every user (operator included) in every form; commands.scripts: deny; and AUTH guessing (AUTHs held
 * per client address before their password is checked, a correct one included, inside EXEC too; the connection
 * closed, counted in /metrics).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis, redisCommand, redisCommands, type RedisProcess } from '../support/redis.js';
import { configFrom, startKeymux, slotsConfig, RawClient, type ConfigObject } from '../support/keymux.js';
import { replyCount, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

const run = promisify(execFile);

/** The users, as keymux's config gives them and as ACL SETUSER gives them to the oracle. */
const USERS = [
  {
    name: 'app',
    passwords: ['s3cret', 'n3w-s3cret'],
    rules: '+@all -@dangerous %R~ro:* %W~wo:* ~app:* &news:*',
  },
  { name: 'reader', password: 'rpw', rules: '-@all +@read ~*' },
  { name: 'noscript', password: 'npw', rules: '+@all -@scripting ~* &*' },
  { name: 'chan', password: 'cpw', rules: '+@all allkeys &news:* &sports:?' },
];
const PASSWORD: Record<string, string> = { app: 's3cret', reader: 'rpw', noscript: 'npw', chan: 'cpw' };

let shards: RedisProcess[] = [];
let oracle: RedisProcess;
let proxy: Proxy;
const clients: Array<{ close(): void } | { disconnect(): void }> = [];

function baseConfig(extra: ConfigObject = {}): ConfigObject {
  return slotsConfig(
    shards.map((s) => s.port),
    {
      admin: '127.0.0.1:0',
      clients: {
        users: [
          ...USERS,
          { name: 'any', nopass: true },
          { name: 'ops', password: 'opw', operator: true },
          { name: 'disabled', password: 'dpw', rules: 'off +@all ~*' },
        ],
        auth_failures: { delay_after: 1000, delay_ms: 0 },
      },
      ...extra,
    },
  );
}

beforeAll(async () => {
  [oracle, ...shards] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  for (const u of USERS) {
    const pws = u.passwords ?? [u.password as string];
    await redisCommand(oracle.port, 'ACL', 'SETUSER', u.name, 'on', ...pws.map((p) => `>${p}`), ...u.rules.split(' '));
  }
  proxy = await startKeymux(baseConfig());
});

afterAll(async () => {
  for (const c of clients) {
    if ('close' in c) c.close();
    else c.disconnect();
  }
  await proxy?.close();
  await Promise.all([oracle, ...shards].map((s) => s?.stop()));
});

async function raw(port = proxy.port): Promise<RawClient> {
  const c = await RawClient.connect(port);
  clients.push(c);
  return c;
}

function cmd(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Sends AUTH user pass then `command` on a fresh connection; the second reply as text ('ERR...' for errors). */
async function asUser(port: number, user: string, command: string[]): Promise<string> {
  const [auth, reply] = await redisCommands(port, [['AUTH', user, PASSWORD[user]], command]);
  if (auth instanceof Error) throw auth;
  return reply instanceof Error ? `-${reply.message}` : JSON.stringify(reply);
}

const SHA = 'e0e1f9fabfc9d4800c877a703b823ac0578ff8db'; // sha1 of "return 1"

/** Commands keymux forwards (or answers), each tried as every user on keymux and on the oracle. */
const CORPUS: string[][] = [
  ['GET', 'app:1'],
  ['GET', 'other'],
  ['SET', 'app:1', 'v'],
  ['SET', 'ro:1', 'v'],
  ['GET', 'ro:1'],
  ['SET', 'wo:1', 'v'],
  ['GET', 'wo:1'],
  ['SET', 'wo:1', 'v', 'GET'],
  ['COPY', 'ro:1', 'wo:{ro:1}'],
  ['COPY', 'wo:1', 'ro:{wo:1}'],
  ['EXISTS', 'wo:1'],
  ['TYPE', 'wo:1'],
  ['INCR', 'app:n'],
  ['HSET', 'app:h', 'f', 'v'],
  ['XADD', 'other', '*', 'a', 'b'],
  ['BITFIELD', 'ro:1', 'GET', 'u8', '0'],
  ['BITFIELD', 'ro:1', 'SET', 'u8', '0', '1'],
  ['MGET', 'app:1', 'app:2'],
  ['MGET', 'app:1', 'other'],
  ['MSET', 'app:1', 'a', 'app:2', 'b'],
  ['DEL', 'app:x', 'other'],
  ['EVAL', 'return 1', '1', 'app:x'],
  ['EVAL', 'return 1', '1', 'other'],
  ['EVALSHA', SHA, '1', 'other'],
  ['FCALL', 'nosuch', '1', 'other'],
  ['PUBLISH', 'news:1', 'x'],
  ['PUBLISH', 'other', 'x'],
  ['SPUBLISH', 'other', 'x'],
  ['SUBSCRIBE', 'news:1'],
  ['SUBSCRIBE', 'sports:1'],
  ['SUBSCRIBE', 'sports:10'],
  ['PSUBSCRIBE', 'news:*'],
  ['PSUBSCRIBE', 'news:a*'],
  ['FLUSHALL'],
  ['KEYS', '*'],
  ['CONFIG', 'GET', 'maxmemory'],
  ['SORT', 'app:l'],
  ['PING'],
  ['ECHO', 'x'],
  ['ACL', 'WHOAMI'],
  ['CLIENT', 'SETNAME', 'n'],
];

const isNoPerm = (r: string): boolean => r.startsWith('-NOPERM');

describe('permissions: keymux refuses what a real redis-server with the same ACL refuses, in its words', () => {
  for (const user of Object.keys(PASSWORD)) {
    it(`user ${user}`, async () => {
      const mismatches: string[] = [];
      let denied = 0;
      for (const command of CORPUS) {
        const [want, got] = await Promise.all([asUser(oracle.port, user, command), asUser(proxy.port, user, command)]);
        if (isNoPerm(want)) denied++;
        if (isNoPerm(want) ? got !== want : isNoPerm(got)) {
          mismatches.push(`${command.join(' ')}: redis ${want}, keymux ${got}`);
        }
      }
      expect(mismatches).toEqual([]);
      expect(denied).toBeGreaterThan(0); // every user is refused something: the corpus exercises the check
    });
  }
});

describe('clients with a user name', () => {
  it('ioredis: username/password, allowed and refused commands, ACL WHOAMI', async () => {
    const r = new Redis({ port: proxy.port, username: 'app', password: 'n3w-s3cret', lazyConnect: true });
    clients.push(r);
    await r.connect();
    expect(await r.set('app:io', 'v')).toBe('OK');
    expect(await r.get('app:io')).toBe('v');
    await expect(r.get('other')).rejects.toThrow(
      'NOPERM this user has no permissions to access one of the keys used as arguments',
    );
    await expect(r.flushall()).rejects.toThrow("NOPERM this user has no permissions to run the 'flushall' command");
    expect(await r.call('ACL', 'WHOAMI')).toBe('app');
    const cats = (await r.call('ACL', 'CAT')) as string[];
    expect(cats).toContain('dangerous');
    expect((await r.call('ACL', 'CAT', 'scripting')) as string[]).toEqual(
      expect.arrayContaining(['eval', 'fcall', 'script|load']),
    );
  });

  it('a NOPERM inside MULTI aborts the transaction (EXECABORT, nothing applied), as on Redis', async () => {
    const batch: string[][] = [
      ['AUTH', 'app', 's3cret'],
      ['MULTI'],
      ['SET', 'app:tx', 'applied'],
      ['GET', 'other:tx'],
      ['EXEC'],
      ['GET', 'app:tx'],
    ];
    const text = (replies: unknown[]): string[] =>
      replies.map((r) => (r instanceof Error ? `-${r.message.split(' ')[0]}` : JSON.stringify(r)));
    const viaKeymux = text(await redisCommands(proxy.port, batch));
    const viaRedis = text(await redisCommands(oracle.port, batch));
    expect(viaKeymux).toEqual(['"OK"', '"OK"', '"QUEUED"', '-NOPERM', '-EXECABORT', 'null']);
    expect(viaKeymux).toEqual(viaRedis);
  });

  it('redis-cli --user --pass: the NOPERM text, and the value when allowed', async () => {
    const cli = (...args: string[]): Promise<string> =>
      run('redis-cli', [
        '-p',
        String(proxy.port),
        '--user',
        'app',
        '--pass',
        's3cret',
        '--no-auth-warning',
        ...args,
      ]).then((o) => o.stdout.trim());
    expect(await cli('SET', 'app:cli', 'hello')).toBe('OK');
    expect(await cli('GET', 'app:cli')).toBe('hello');
    expect(await cli('GET', 'other')).toBe(
      'NOPERM this user has no permissions to access one of the keys used as arguments',
    );
    expect(await cli('CONFIG', 'SET', 'maxmemory', '1')).toBe(
      "NOPERM this user has no permissions to run the 'config|set' command",
    );
  });

  it('HELLO 2 AUTH user pass, then the user is checked; a failing HELLO AUTH is WRONGPASS', async () => {
    const c = await raw();
    c.write(
      cmd('HELLO', '2', 'AUTH', 'reader', 'nope') +
        cmd('HELLO', '2', 'AUTH', 'reader', 'rpw') +
        cmd('ACL', 'WHOAMI') +
        cmd('SET', 'k', 'v') +
        cmd('GET', 'app:1'),
    );
    await c.until((d) => replyCount(d) === 5);
    const text = c.data.toString('latin1');
    expect(text.startsWith('-WRONGPASS invalid username-password pair or user is disabled.\r\n*14\r\n')).toBe(true);
    // The reader may only read: even ACL WHOAMI is refused, as Redis refuses it to this user.
    expect(text).toMatch(
      new RegExp(
        "\\r\\n-NOPERM this user has no permissions to run the 'acl\\|whoami' command\\r\\n" +
          "-NOPERM this user has no permissions to run the 'set' command\\r\\n(\\$-1|\\$\\d+\\r\\n\\w+)\\r\\n$",
      ),
    );
  });

  it('pipelined and inline forms are checked the same way', async () => {
    const c = await raw();
    c.write(
      cmd('AUTH', 'app', 's3cret') +
        'get other\r\n' +
        'FlUsHaLl\r\n' +
        cmd('gEt', 'other') +
        'set app:inline 1\r\n' +
        cmd('PUBLISH', 'other', 'x'),
    );
    await c.until((d) => replyCount(d) === 6);
    expect(c.data.toString('latin1')).toBe(
      [
        '+OK',
        '-NOPERM this user has no permissions to access one of the keys used as arguments',
        "-NOPERM this user has no permissions to run the 'flushall' command",
        '-NOPERM this user has no permissions to access one of the keys used as arguments',
        '+OK',
        '-NOPERM this user has no permissions to access one of the channels used as arguments',
        '',
      ].join('\r\n'),
    );
  });

  it('rotation: both passwords work; a reload dropping the old one refuses it, connected clients stay', async () => {
    const connected = await raw();
    connected.write(cmd('AUTH', 'app', 's3cret'));
    await connected.until((d) => replyCount(d) === 1);
    expect(await asUser(proxy.port, 'app', ['GET', 'app:1'])).not.toMatch(/^-/);
    const users = (baseConfig().clients as { users: Array<Record<string, unknown>> }).users.map((u) =>
      u.name === 'app' ? { ...u, passwords: ['n3w-s3cret'] } : u,
    );
    expect(proxy.reload(configFrom(baseConfig({ clients: { users } })))).toBeNull();
    try {
      const [old, fresh] = await Promise.all([
        redisCommands(proxy.port, [['AUTH', 'app', 's3cret']]),
        redisCommands(proxy.port, [
          ['AUTH', 'app', 'n3w-s3cret'],
          ['GET', 'other'],
        ]),
      ]);
      expect((old[0] as Error).message).toBe('WRONGPASS invalid username-password pair or user is disabled.');
      expect(fresh[0]).toBe('OK');
      expect((fresh[1] as Error).message).toMatch(/^NOPERM .*keys/); // the rules still apply
      connected.write(cmd('SET', 'app:still', 'here') + cmd('GET', 'other'));
      await connected.until((d) => replyCount(d) === 3);
      expect(connected.data.toString('latin1')).toBe(
        '+OK\r\n+OK\r\n-NOPERM this user has no permissions to access one of the keys used as arguments\r\n',
      );
    } finally {
      expect(proxy.reload(configFrom(baseConfig()))).toBeNull();
    }
  });

  it('a reload that narrows the rules between MULTI and EXEC: the queued commands are checked again at EXEC, as Redis', async () => {
    const withTx = (rules: string): ConfigObject => {
      const users = (baseConfig().clients as { users: Array<Record<string, unknown>> }).users;
      return baseConfig({ clients: { users: [...users, { name: 'tx', password: 'txpw', rules }] } });
    };
    const wide = '+@all ~{tx}*';
    const narrow = '-@all +@read +exec +multi +ping ~{tx}b*'; // no SET, no {tx}a
    expect(proxy.reload(configFrom(withTx(wide)))).toBeNull();
    await redisCommand(oracle.port, 'ACL', 'SETUSER', 'tx', 'reset', 'on', '>txpw', ...wide.split(' '));
    try {
      const queue =
        cmd('AUTH', 'tx', 'txpw') +
        cmd('MULTI') +
        cmd('SET', '{tx}a', 'v') + // refused at EXEC: the command
        cmd('GET', '{tx}a') + // refused at EXEC: the key
        cmd('GET', '{tx}b') + // still allowed: runs
        cmd('PING') +
        cmd('SET', '{tx}b', 'v'); // refused at EXEC: the command
      const [viaKeymux, direct] = [await raw(), await raw(oracle.port)];
      await Promise.all([viaKeymux.exchange(queue, 7), direct.exchange(queue, 7)]);
      expect(viaKeymux.data.toString('latin1')).toBe(`+OK\r\n+OK\r\n${'+QUEUED\r\n'.repeat(5)}`);
      expect(proxy.reload(configFrom(withTx(narrow)))).toBeNull();
      await redisCommand(oracle.port, 'ACL', 'SETUSER', 'tx', 'reset', 'on', '>txpw', ...narrow.split(' '));
      const before = [viaKeymux.data.length, direct.data.length];
      await Promise.all([viaKeymux.exchange(cmd('EXEC'), 1), direct.exchange(cmd('EXEC'), 1)]);
      const exec = viaKeymux.data.subarray(before[0]).toString('latin1');
      expect(exec).toBe(direct.data.subarray(before[1]).toString('latin1'));
      expect(exec).toContain(
        '-NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This ' +
          'command is no longer allowed for the following reason: no permission to touch the specified keys\r\n',
      );
      // Nothing refused reached a shard.
      for (const s of shards) {
        expect(await redisCommand(s.port, 'EXISTS', '{tx}a', '{tx}b')).toBe(0);
      }
    } finally {
      expect(proxy.reload(configFrom(baseConfig()))).toBeNull();
      await redisCommand(oracle.port, 'ACL', 'DELUSER', 'tx');
      await redisCommand(oracle.port, 'DEL', '{tx}a', '{tx}b');
    }
  });

  it('a reload that removes a user disconnects its clients at their next command', async () => {
    const c = await raw();
    c.write(cmd('AUTH', 'reader', 'rpw'));
    await c.until((d) => replyCount(d) === 1);
    const users = (baseConfig().clients as { users: Array<Record<string, unknown>> }).users.filter(
      (u) => u.name !== 'reader',
    );
    expect(proxy.reload(configFrom(baseConfig({ clients: { users } })))).toBeNull();
    try {
      c.write(cmd('GET', 'x') + cmd('GET', 'y'));
      const text = await c.untilClosed();
      expect(text).toBe(
        "+OK\r\n-ERR keymux: user 'reader' no longer exists (a config reload removed it); connect again and AUTH\r\n",
      );
    } finally {
      expect(proxy.reload(configFrom(baseConfig()))).toBeNull();
    }
  });

  it('a reload that takes a channel away disconnects the clients subscribed to it, and only them', async () => {
    const both = await raw();
    const newsOnly = await raw();
    both.write(cmd('AUTH', 'chan', 'cpw') + cmd('SUBSCRIBE', 'news:1', 'sports:1'));
    newsOnly.write(cmd('AUTH', 'chan', 'cpw') + cmd('SUBSCRIBE', 'news:1'));
    await both.until((d) => replyCount(d) === 3);
    await newsOnly.until((d) => replyCount(d) === 2);
    const users = (baseConfig().clients as { users: Array<Record<string, unknown>> }).users.map((u) =>
      u.name === 'chan' ? { ...u, rules: '+@all allkeys &news:*' } : u,
    );
    expect(proxy.reload(configFrom(baseConfig({ clients: { users } })))).toBeNull();
    try {
      await both.untilClosed();
      expect(both.closed).toBe(true);
      const [, receivers] = await redisCommands(proxy.port, [
        ['AUTH', 'any', 'x'],
        ['PUBLISH', 'news:1', 'still here'],
      ]);
      expect(receivers).toBe(1);
      await newsOnly.untilText('still here');
      expect(newsOnly.closed).toBe(false);
    } finally {
      expect(proxy.reload(configFrom(baseConfig()))).toBeNull();
    }
  });

  it('nopass accepts any password; an off user is refused; AUTH with an unknown user is WRONGPASS', async () => {
    const r = await redisCommands(proxy.port, [
      ['AUTH', 'disabled', 'dpw'],
      ['AUTH', 'nobody', 'x'],
      ['AUTH', 'any', 'whatever'],
      ['ACL', 'WHOAMI'],
      ['FLUSHDB'],
    ]);
    expect((r[0] as Error).message).toBe('WRONGPASS invalid username-password pair or user is disabled.');
    expect((r[1] as Error).message).toBe('WRONGPASS invalid username-password pair or user is disabled.');
    expect(r.slice(2)).toEqual(['OK', 'any', 'OK']);
  });

  it('ACL subcommands other than WHOAMI and CAT are refused', async () => {
    const r = await redisCommands(proxy.port, [
      ['AUTH', 'ops', 'opw'],
      ['ACL', 'SETUSER', 'x', 'on'],
      ['ACL', 'LIST'],
    ]);
    expect((r[1] as Error).message).toMatch(/^ERR keymux: command 'acl\|setuser' is not supported: keymux's users/);
    expect((r[2] as Error).message).toMatch(/^ERR keymux: command 'acl\|list' is not supported/);
  });
});

describe('server administration stays refused, for every user and in every form', () => {
  it('CONFIG, DEBUG, SHUTDOWN, MODULE, ACL SETUSER, REPLICAOF, MIGRATE, CLUSTER: RESP, inline, mixed case, pipelined, in MULTI', async () => {
    const before = await Promise.all(shards.map((s) => redisCommand(s.port, 'CONFIG', 'GET', 'maxmemory')));
    for (const user of ['ops', 'any', 'noscript']) {
      const c = await raw();
      const pw = user === 'ops' ? 'opw' : user === 'any' ? 'x' : 'npw';
      c.write(
        cmd('AUTH', user, pw) +
          cmd('CONFIG', 'SET', 'maxmemory', '1') +
          'config set maxmemory 1\r\n' +
          cmd('cOnFiG', 'sEt', 'maxmemory', '1') +
          cmd('DEBUG', 'SLEEP', '0') +
          'shutdown nosave\r\n' +
          cmd('MODULE', 'LIST') +
          cmd('ACL', 'SETUSER', 'evil', 'on', 'nopass', '+@all', '~*') +
          cmd('REPLICAOF', '127.0.0.1', String(oracle.port)) +
          cmd('MIGRATE', '127.0.0.1', String(oracle.port), 'k', '0', '1000') +
          cmd('CLUSTER', 'RESET') +
          cmd('MULTI') +
          cmd('CONFIG', 'SET', 'maxmemory', '1') +
          cmd('EXEC') +
          cmd('PING'),
      );
      await c.until((d) => replyCount(d) === 15);
      const lines = c.data.toString('latin1').split('\r\n').slice(0, 15);
      expect(lines[0]).toBe('+OK');
      expect(lines[14]).toBe('+PONG');
      // Every administration command got an error (a keymux refusal, or NOPERM for a user without it); MULTI itself
      // is accepted, the refused CONFIG inside it aborts the transaction.
      expect(lines[11]).toBe('+OK');
      for (const l of [...lines.slice(1, 11), lines[12]]) expect(l).toMatch(/^-(ERR keymux|NOPERM|ERR)/);
      expect(lines[13]).toMatch(/^-EXECABORT/);
    }
    const after = await Promise.all(shards.map((s) => redisCommand(s.port, 'CONFIG', 'GET', 'maxmemory')));
    expect(after).toEqual(before);
    expect(await redisCommand(oracle.port, 'ACL', 'USERS')).not.toContain('evil');
    for (const s of shards) expect(await redisCommand(s.port, 'ROLE')).toEqual(expect.arrayContaining(['master']));
  });
});

describe('scripts', () => {
  it('per user: -@scripting refuses EVAL, EVALSHA, FCALL with NOPERM (as Redis)', async () => {
    expect(await asUser(proxy.port, 'noscript', ['EVAL', 'return 1', '1', 'k'])).toBe(
      "-NOPERM this user has no permissions to run the 'eval' command",
    );
    expect(await asUser(proxy.port, 'noscript', ['FCALL_RO', 'f', '1', 'k'])).toBe(
      "-NOPERM this user has no permissions to run the 'fcall_ro' command",
    );
  });

  it('commands.scripts: deny refuses every scripting command for everyone', async () => {
    const denying = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        { commands: { scripts: 'deny' } },
      ),
    );
    try {
      const r = await redisCommands(denying.port, [
        ['EVAL', 'return 1', '1', 'k'],
        ['evalsha', SHA, '1', 'k'],
        ['EVAL_RO', 'return 1', '1', 'k'],
        ['FCALL', 'f', '1', 'k'],
        ['SCRIPT', 'LOAD', 'return 1'],
        ['FUNCTION', 'LIST'],
        ['GET', 'k'],
      ]);
      const why = 'is disabled by configuration (commands.scripts: deny): a script can touch any key of its shard';
      expect(r.slice(0, 6).map((e) => (e as Error).message)).toEqual([
        `ERR keymux: command 'eval' ${why}`,
        `ERR keymux: command 'evalsha' ${why}`,
        `ERR keymux: command 'eval_ro' ${why}`,
        `ERR keymux: command 'fcall' ${why}`,
        `ERR keymux: command 'script|load' ${why}`,
        `ERR keymux: command 'function|list' ${why}`,
      ]);
      expect(r[6]).toBeNull();
      // Allowed by default (today's behaviour): EVAL with a key is routed.
      const [, one] = await redisCommands(proxy.port, [
        ['AUTH', 'any', 'x'],
        ['EVAL', 'return 1', '1', 'k'],
      ]);
      expect(one).toBe(1);
    } finally {
      await denying.close();
    }
  });
});

describe('AUTH guessing', () => {
  it('holds AUTHs per client address, holds later commands, closes after close_after, counts failures', async () => {
    const guarded = await startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        {
          admin: '127.0.0.1:0',
          clients: {
            password: 'right',
            auth_failures: { delay_after: 2, delay_ms: 40, max_delay_ms: 80, close_after: 5 },
          },
        },
      ),
    );
    try {
      // One connection: failures 1-2 at once, 3 waits 40 ms, 4 waits 80, 5 waits 80 and closes the connection.
      const c = await RawClient.connect(guarded.port);
      clients.push(c);
      const start = performance.now();
      c.write(
        cmd('AUTH', 'w1') + cmd('AUTH', 'w2') + cmd('AUTH', 'w3') + cmd('AUTH', 'w4') + cmd('AUTH', 'w5') + cmd('PING'),
      );
      const text = await c.untilClosed();
      const elapsed = performance.now() - start;
      expect(text).toBe('-WRONGPASS invalid username-password pair or user is disabled.\r\n'.repeat(5));
      // A timer never fires early (1 ms of rounding aside): the three delays ran one after the other.
      expect(elapsed).toBeGreaterThanOrEqual(40 + 80 + 80 - 3);

      // The address is remembered: a new connection's first failure waits too, and the right password behind it.
      const d = await RawClient.connect(guarded.port);
      clients.push(d);
      const again = performance.now();
      d.write(cmd('AUTH', 'wrong') + cmd('AUTH', 'right') + cmd('PING'));
      await d.until((b) => replyCount(b) === 3);
      expect(performance.now() - again).toBeGreaterThanOrEqual(80 - 2);
      expect(d.data.toString('latin1')).toBe(
        '-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+PONG\r\n',
      );
      expect(guarded.authGuard.failures).toBe(6);
      expect(guarded.authGuard.disconnects).toBe(1);
      const metrics = await (await request(`http://127.0.0.1:${guarded.adminPort}/metrics`)).body.text();
      expect(metrics).toMatch(/^keymux_auth_failures_total 6$/m);
      expect(metrics).toMatch(/^keymux_auth_failure_disconnects_total 1$/m);
    } finally {
      await guarded.close();
    }
  });

  /** A keymux of its own (its AuthGuard starts from zero) with users `low` and `ops`. */
  function guardedUsers(authFailures: ConfigObject): Promise<Proxy> {
    return startKeymux(
      slotsConfig(
        shards.map((s) => s.port),
        {
          clients: {
            users: [
              { name: 'low', password: 'lowpw', rules: '-@all +multi +exec +get ~low:*' },
              { name: 'ops', password: 'ops-right', rules: '+@all ~* &*' },
            ],
            auth_failures: authFailures,
          },
        },
      ),
    );
  }

  it('by default a correct AUTH from a penalised address is answered at once: a client with a stale password keeps no other waiting', async () => {
    const guarded = await guardedUsers({ delay_after: 1, delay_ms: 60_000, max_delay_ms: 60_000, close_after: 0 });
    try {
      const stale = await raw(guarded.port);
      await stale.exchange(cmd('AUTH', 'ops', 'stale'), 1); // the first failure: answered at once
      const first = stale.data.length;
      stale.write(cmd('AUTH', 'ops', 'stale')); // checked at once, its WRONGPASS held for 60 s
      await waitFor(() => guarded.authGuard.failures === 2, 'the stale password to be checked again');
      const healthy = await raw(guarded.port);
      const [ok] = await healthy.exchange(cmd('AUTH', 'ops', 'ops-right'), 1);
      expect(ok).toBe('OK');
      expect(stale.data.length).toBe(first); // the stale client's second answer still waits
    } finally {
      await guarded.close();
    }
  });

  it('with delay_correct a penalised address waits before its password is checked, a correct one included: a connection per guess learns nothing sooner', async () => {
    const guarded = await guardedUsers({
      delay_after: 2,
      delay_ms: 150,
      max_delay_ms: 150,
      close_after: 0,
      delay_correct: true,
    });
    try {
      const a = await raw(guarded.port);
      await a.exchange(cmd('AUTH', 'ops', 'w1') + cmd('AUTH', 'ops', 'w2'), 2); // not held yet: 2 failures
      expect(guarded.authGuard.failuresOf('127.0.0.1')).toBe(2);
      // Now every AUTH from the address waits 150 ms before the check, on a new connection as on this one.
      const b = await raw(guarded.port);
      const start = performance.now();
      const [ok] = await b.exchange(cmd('AUTH', 'ops', 'ops-right'), 1);
      expect(ok).toBe('OK');
      expect(performance.now() - start).toBeGreaterThanOrEqual(150 - 2);
      const c = await raw(guarded.port);
      const hello = performance.now();
      const [greeting] = await c.exchange(cmd('HELLO', '2', 'AUTH', 'ops', 'ops-right'), 1);
      expect(Array.isArray(greeting)).toBe(true);
      expect(performance.now() - hello).toBeGreaterThanOrEqual(150 - 2);
      expect(guarded.authGuard.failures).toBe(2);
    } finally {
      await guarded.close();
    }
  });

  it('AUTH inside EXEC: answered in place (WRONGPASS or +OK, as Redis), counted, EXEC held for the holds, close_after applies', async () => {
    // Not penalised: a correct AUTH inside EXEC signs the connection in, a wrong one (AUTH or HELLO) is WRONGPASS.
    const open = await guardedUsers({ delay_after: 100, delay_ms: 100, max_delay_ms: 100, close_after: 0 });
    try {
      const c = await raw(open.port);
      const r = await c.exchange(
        cmd('AUTH', 'low', 'lowpw') +
          cmd('MULTI') +
          cmd('HELLO', '2', 'AUTH', 'ops', 'wrong') +
          cmd('AUTH', 'ops', 'ops-right') +
          cmd('EXEC') +
          cmd('ACL', 'WHOAMI'),
        6,
      );
      expect(r.slice(0, 4)).toEqual(['OK', 'OK', 'QUEUED', 'QUEUED']);
      const [helloAuth, auth] = r[4] as [Error, string];
      expect(helloAuth.message).toBe('WRONGPASS invalid username-password pair or user is disabled.');
      expect(auth).toBe('OK');
      expect(r[5]).toBe('ops');
      expect(open.authGuard.failures).toBe(1);
    } finally {
      await open.close();
    }
    // Many guesses in one transaction: checked one by one, each failure counted and its hold added to EXEC's reply;
    // past close_after the rest are not checked (the right password among them included) and the connection closes.
    const guarded = await guardedUsers({ delay_after: 2, delay_ms: 100, max_delay_ms: 100, close_after: 3 });
    try {
      const c = await raw(guarded.port);
      await c.exchange(cmd('AUTH', 'low', 'lowpw'), 1);
      const start = performance.now();
      c.write(
        cmd('MULTI') +
          cmd('AUTH', 'ops', 'w1') +
          cmd('AUTH', 'ops', 'w2') +
          cmd('AUTH', 'ops', 'w3') +
          cmd('AUTH', 'ops', 'ops-right') +
          cmd('EXEC') +
          cmd('ACL', 'WHOAMI'),
      );
      const text = await c.untilClosed();
      const wrong = '-WRONGPASS invalid username-password pair or user is disabled.\r\n';
      expect(text).toBe(
        '+OK\r\n+OK\r\n' +
          '+QUEUED\r\n'.repeat(4) +
          '*4\r\n' +
          wrong.repeat(3) +
          '-ERR keymux: AUTH not checked: too many failed AUTHs on this connection, which closes after this reply\r\n',
      );
      // Holds 0, 0 and 100 ms (the third guess is past delay_after): EXEC waited for them.
      expect(performance.now() - start).toBeGreaterThanOrEqual(100 - 2);
      expect(guarded.authGuard.failures).toBe(3);
      expect(guarded.authGuard.disconnects).toBe(1);
    } finally {
      await guarded.close();
    }
  });
});
