/**
 * Bad and hostile client input, as exact bytes (RawClient) and through redis-cli: malformed RESP, oversized
 * bulks and argument counts, unknown and refused commands, wrong arity, cross-shard commands that cannot be
 * split, client authentication, QUIT, the client limit, and a client that pipelines without reading. Where Redis
 * has a wording, the real redis-server is the oracle: the same bytes sent to it directly give the same reply.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, slotsConfig, RawClient } from '../support/keymux.js';
import { keyOn, parseReplies, replyCount, waitFor } from '../support/fake-backend.js';
import type { Proxy } from '../../src/proxy.js';

const run = promisify(execFile);
const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
}) => { execute(b: Buffer): void };

let backends: RedisProcess[] = [];
let proxy: Proxy;
const raws: RawClient[] = [];

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      { limits: { max_bulk_bytes: 1024, max_args: 10 } },
    ),
  );
});

afterAll(async () => {
  for (const c of raws) c.close();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

async function raw(port = proxy.port): Promise<RawClient> {
  const c = await RawClient.connect(port);
  raws.push(c);
  return c;
}

function cmd(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Sends `bytes` on a fresh connection and resolves with the first `n` replies' bytes (exactly). */
async function exchange(port: number, bytes: string, n = 1): Promise<string> {
  const c = await raw(port);
  c.write(bytes);
  await c.until((d) => replyCount(d) >= n);
  c.close();
  return c.data.toString('latin1');
}

/** The backend that owns `key` (through keymux's own router). */
function owner(key: string): RedisProcess {
  return backends[proxy.topology.router.shardFor(Buffer.from(key))];
}

describe('malformed RESP', () => {
  const cases: Array<{ name: string; bytes: string; reply: string; redisAgrees: boolean }> = [
    {
      name: 'non-numeric multibulk length',
      bytes: '*abc\r\n',
      reply: '-ERR Protocol error: invalid multibulk length\r\n',
      redisAgrees: true,
    },
    {
      name: 'an element that is not a bulk',
      bytes: '*1\r\n+x\r\n',
      reply: "-ERR Protocol error: expected '$', got '+'\r\n",
      redisAgrees: true,
    },
    {
      name: 'a negative bulk length',
      bytes: '*1\r\n$-5\r\n',
      reply: '-ERR Protocol error: invalid bulk length\r\n',
      redisAgrees: true,
    },
    {
      name: 'an inline command with unbalanced quotes',
      bytes: 'SET "a b\r\n',
      reply: '-ERR Protocol error: unbalanced quotes in request\r\n',
      redisAgrees: true,
    },
    {
      name: 'bulk data without its CRLF',
      bytes: '*1\r\n$3\r\nfooXY',
      reply: '-ERR Protocol error: bulk data does not end with CRLF\r\n',
      redisAgrees: false,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: -ERR Protocol error, then close; another client keeps being served`, async () => {
      const key = `malformed:${c.name}`;
      const bystander = await raw();
      bystander.write(cmd('SET', key, 'before'));
      await bystander.untilText('+OK\r\n');

      const bad = await raw();
      // A good command before the bad bytes is answered first, in order.
      bad.write(cmd('GET', key) + c.bytes);
      expect(await bad.untilClosed()).toBe(`$6\r\nbefore\r\n${c.reply}`);
      if (c.redisAgrees) {
        const direct = await raw(backends[0].port);
        direct.write(c.bytes);
        expect(await direct.untilClosed()).toBe(c.reply);
      }

      // The client connected at the same time is still served, and so is a new one.
      bystander.data = Buffer.alloc(0);
      bystander.write(cmd('SET', key, 'after') + cmd('GET', key));
      await bystander.untilText('+OK\r\n$5\r\nafter\r\n');
      expect(await exchange(proxy.port, cmd('GET', key))).toBe('$5\r\nafter\r\n');
      expect(bystander.closed).toBe(false);
    });
  }

  it('a multibulk split byte by byte still parses; garbage after a protocol error is never executed', async () => {
    const c = await raw();
    const bytes =
      cmd('SET', 'malformed:split', 'ok') + '*2\r\n$3\r\nSET\r\n$x\r\n' + cmd('SET', 'malformed:after-error', 'bad');
    for (const b of Buffer.from(bytes)) c.write(Buffer.from([b]));
    expect(await c.untilClosed()).toBe('+OK\r\n-ERR Protocol error: invalid bulk length\r\n');
    expect(await redisCommand(owner('malformed:split').port, 'GET', 'malformed:split')).toBe('ok');
    expect(await exchange(proxy.port, cmd('EXISTS', 'malformed:after-error'))).toBe(':0\r\n');
  });
});

describe('limits', () => {
  it('a bulk over limits.max_bulk_bytes: Redis-style error, then close; nothing is written', async () => {
    const key = 'limits:big';
    const c = await raw();
    c.write(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$2000\r\n${'x'.repeat(2000)}\r\n`);
    expect(await c.untilClosed()).toBe(
      '-ERR Protocol error: invalid bulk length (2000 bytes exceed limits.max_bulk_bytes 1024)\r\n',
    );
    expect(await redisCommand(owner(key).port, 'EXISTS', key)).toBe(0);
    // At the limit is fine.
    expect(await exchange(proxy.port, cmd('SET', key, 'y'.repeat(1024)) + cmd('STRLEN', key), 2)).toBe(
      '+OK\r\n:1024\r\n',
    );
  });

  it('more arguments than limits.max_args: Redis-style error, then close', async () => {
    const c = await raw();
    c.write(cmd('MGET', ...Array.from({ length: 10 }, (_, i) => `limits:arg${i}`))); // 11 arguments
    expect(await c.untilClosed()).toBe(
      '-ERR Protocol error: invalid multibulk length (11 arguments exceed limits.max_args 10)\r\n',
    );
    // Exactly 10 arguments are served.
    const nine = Array.from({ length: 9 }, (_, i) => `limits:arg${i}`);
    expect(await exchange(proxy.port, cmd('MGET', ...nine))).toBe(`*9\r\n${'$-1\r\n'.repeat(9)}`);
  });
});

describe('commands keymux does not run', () => {
  it('unknown command: the Redis error, and the connection stays open', async () => {
    const bytes = cmd('FOO', 'a', 'b');
    const expected = "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n";
    expect(await exchange(backends[0].port, bytes)).toBe(expected); // what Redis says
    const c = await raw();
    c.write(bytes + cmd('PING'));
    await c.until((d) => replyCount(d) === 2);
    expect(c.data.toString('latin1')).toBe(`${expected}+PONG\r\n`);
    expect(c.closed).toBe(false);
  });

  it('unknown command and subcommand errors are byte for byte what Redis writes, at its cuts and with CR/LF', async () => {
    for (const bytes of [
      cmd('FOO', 'a'.repeat(200), 'b'),
      cmd('FOO', 'a'.repeat(60), 'b'.repeat(60), 'c'.repeat(60), 'd'),
      cmd('F'.repeat(200)),
      cmd('FOO', 'x\r\ny', 'é\u0001'),
      cmd('OBJECT', 'x\ny'.repeat(50), 'k'),
    ]) {
      expect(await exchange(proxy.port, bytes)).toBe(await exchange(backends[0].port, bytes));
    }
  });

  it('SELECT, HELLO versions and CLIENT REPLY then RESET: byte for byte what Redis writes', async () => {
    const sent: string[] = [];
    for (const index of ['0', '00', '-0', '01', '+1', ' 1', '', 'x', '99999999999999999999', '9999999999']) {
      sent.push(cmd('SELECT', index));
    }
    for (const index of ['2147483648', '-2147483649', '9223372036854775807', '-9223372036854775808']) {
      sent.push(cmd('SELECT', index));
    }
    sent.push(cmd('SELECT', '9223372036854775808'), cmd('SELECT', '-9223372036854775809'));
    for (const ver of ['03', '-0', '00', '+3', '', '1', '4', '-1', '9223372036854775807', '99999999999999999999']) {
      sent.push(cmd('HELLO', ver));
    }
    for (const bytes of sent) {
      expect(await exchange(proxy.port, bytes), JSON.stringify(bytes)).toBe(await exchange(backends[0].port, bytes));
    }
    // A database other than 0: Redis's error, with keymux's reason after it.
    for (const index of ['1', '-1', '16', '2147483647']) {
      expect(await exchange(proxy.port, cmd('SELECT', index))).toMatch(/^-ERR DB index is out of range \(keymux: /);
    }
    // SKIP then RESET: RESET's reply is the one skipped; OFF then RESET: RESET turns replies on, its own included.
    for (const [bytes, n] of [
      [cmd('CLIENT', 'REPLY', 'SKIP') + cmd('RESET') + cmd('PING'), 1],
      [cmd('CLIENT', 'REPLY', 'OFF') + cmd('RESET') + cmd('PING'), 2],
      [cmd('CLIENT', 'REPLY', 'OFF') + cmd('CLIENT', 'REPLY', 'SKIP') + cmd('RESET') + cmd('PING'), 2],
      [cmd('CLIENT', 'REPLY', 'SKIP') + cmd('CLIENT', 'REPLY', 'SKIP') + cmd('RESET') + cmd('PING'), 1],
    ] as const) {
      const expected = await exchange(backends[0].port, bytes, n);
      expect(await exchange(proxy.port, bytes, n), JSON.stringify(bytes)).toBe(expected);
    }
  });

  it('wrong number of arguments: the Redis error, and the connection stays open', async () => {
    for (const [name, bytes] of [
      ['get', cmd('GET')],
      ['get', cmd('GET', 'a', 'b')],
      ['set', cmd('SET', 'a')],
    ]) {
      const expected = `-ERR wrong number of arguments for '${name}' command\r\n`;
      expect(await exchange(backends[0].port, bytes)).toBe(expected);
      expect(await exchange(proxy.port, bytes + cmd('PING'), 2)).toBe(`${expected}+PONG\r\n`);
    }
  });

  it('refused commands get -ERR keymux: ... and the connection stays usable', async () => {
    const refused = [
      ['MONITOR'],
      ['CONFIG', 'GET', 'maxmemory'], // refused unless commands.config_broadcast is on
      ['CONFIG', 'REWRITE'],
      ['SCRIPT', 'DEBUG', 'YES'],
    ];
    const c = await raw();
    c.write(refused.map((a) => cmd(...a)).join('') + cmd('SET', 'refused:k', 'v') + cmd('GET', 'refused:k'));
    await c.until((d) => replyCount(d) === refused.length + 2);
    const replies = parseReplies(c.data);
    refused.forEach((args, i) => {
      expect(replies[i], args.join(' ')).toBeInstanceOf(Error);
      expect((replies[i] as Error).message, args.join(' ')).toMatch(
        new RegExp(`^ERR keymux: command '${args[0].toLowerCase()}(\\|\\w+)?' `),
      );
    });
    expect(replies.slice(-2)).toEqual(['OK', 'v']);
    expect(c.closed).toBe(false);
    // None of them reached a backend.
    expect(await redisCommand(owner('refused:k').port, 'GET', 'refused:k')).toBe('v');
  });

  it('commands.deny refuses FLUSHALL with a clear error and the data stays', async () => {
    const denying = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { commands: { deny: ['FLUSHALL'] } },
      ),
    );
    try {
      await redisCommand(owner('deny:k').port, 'SET', 'deny:k', 'kept');
      expect(await exchange(denying.port, cmd('FLUSHALL') + cmd('GET', 'deny:k'), 2)).toBe(
        "-ERR keymux: command 'flushall' is disabled by configuration\r\n$4\r\nkept\r\n",
      );
      const { stdout } = await run('redis-cli', ['-p', String(denying.port), 'FLUSHALL']);
      expect(stdout.trim()).toBe("ERR keymux: command 'flushall' is disabled by configuration");
      expect(await redisCommand(owner('deny:k').port, 'GET', 'deny:k')).toBe('kept');
    } finally {
      await denying.close();
    }
  });
});

describe('cross-shard commands that cannot be split', () => {
  it('RENAME, SUNIONSTORE, MSETNX across shards: -CROSSSLOT; hash-tagged versions work', async () => {
    const a = keyOn(proxy, 0, 'xs');
    const b = keyOn(proxy, 1, 'xs');
    await redisCommand(owner(a).port, 'SET', a, 'va');
    await redisCommand(owner(a).port, 'SADD', a + 's', '1');
    const crossslot = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";
    const sa = keyOn(proxy, 0, 'xs-set');
    const sb = keyOn(proxy, 1, 'xs-set');
    const c = await raw();
    c.write(cmd('RENAME', a, b) + cmd('SUNIONSTORE', sa, sa, sb) + cmd('MSETNX', a, '1', b, '2') + cmd('PING'));
    await c.until((d) => replyCount(d) === 4);
    expect(c.data.toString('latin1')).toBe(`${crossslot}${crossslot}${crossslot}+PONG\r\n`);
    expect(await redisCommand(owner(a).port, 'GET', a)).toBe('va'); // nothing was renamed or overwritten
    expect(await redisCommand(owner(b).port, 'EXISTS', b)).toBe(0);

    // Same shard through a hash tag: served, and the effect is on the tag's shard.
    const t = (k: string) => `{xs-tag}${k}`;
    const home = owner(t(''));
    const replies = await exchange(
      proxy.port,
      cmd('SET', t('a'), 'v') +
        cmd('RENAME', t('a'), t('b')) +
        cmd('SADD', t('s1'), 'x') +
        cmd('SADD', t('s2'), 'y') +
        cmd('SUNIONSTORE', t('u'), t('s1'), t('s2')) +
        cmd('MSETNX', t('m1'), '1', t('m2'), '2'),
      6,
    );
    expect(replies).toBe('+OK\r\n+OK\r\n:1\r\n:1\r\n:2\r\n:1\r\n');
    expect(await redisCommand(home.port, 'GET', t('b'))).toBe('v');
    expect(await redisCommand(home.port, 'SCARD', t('u'))).toBe(2);
    expect(await redisCommand(home.port, 'MGET', t('m1'), t('m2'))).toEqual(['1', '2']);
  });
});

describe('client authentication', () => {
  let authed: Proxy;
  beforeAll(async () => {
    authed = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { clients: { password: 'pw', users: [{ name: 'alice', password: 'apw' }] } },
      ),
    );
  });
  afterAll(async () => {
    await authed?.close();
  });

  it('NOAUTH before AUTH, WRONGPASS for a wrong password, OK for the right one', async () => {
    const c = await raw(authed.port);
    c.write(
      cmd('SET', 'auth:k', 'v') +
        cmd('PING') +
        cmd('AUTH', 'nope') +
        cmd('AUTH', 'alice', 'pw') +
        cmd('GET', 'auth:k') +
        cmd('AUTH', 'pw') +
        cmd('SET', 'auth:k', 'v') +
        cmd('GET', 'auth:k'),
    );
    await c.until((d) => replyCount(d) === 8);
    expect(c.data.toString('latin1')).toBe(
      [
        '-NOAUTH Authentication required.',
        '-NOAUTH Authentication required.',
        '-WRONGPASS invalid username-password pair or user is disabled.',
        '-WRONGPASS invalid username-password pair or user is disabled.',
        '-NOAUTH Authentication required.',
        '+OK',
        '+OK',
        '$1',
        'v',
        '',
      ].join('\r\n'),
    );
    expect(await redisCommand(owner('auth:k').port, 'GET', 'auth:k')).toBe('v');
  });

  it('AUTH user pass for a configured user; HELLO 4 is NOPROTO; HELLO 2 AUTH user pass works', async () => {
    expect(await exchange(authed.port, cmd('AUTH', 'alice', 'apw') + cmd('GET', 'auth:k'), 2)).toBe(
      '+OK\r\n$1\r\nv\r\n',
    );
    const hello4 = await exchange(authed.port, cmd('HELLO', '4', 'AUTH', 'alice', 'apw') + cmd('GET', 'auth:k'), 2);
    expect(hello4).toBe('-NOPROTO unsupported protocol version\r\n-NOAUTH Authentication required.\r\n');

    const c = await raw(authed.port);
    c.write(cmd('HELLO', '2', 'AUTH', 'alice', 'apw') + cmd('GET', 'auth:k'));
    await c.until((d) => replyCount(d) === 2);
    const [hello, value] = parseReplies(c.data) as [unknown[], string];
    const fields = new Map<unknown, unknown>();
    for (let i = 0; i < hello.length; i += 2) fields.set(hello[i], hello[i + 1]);
    expect(fields.get('proto')).toBe(2);
    expect(value).toBe('v');
    expect(await exchange(authed.port, cmd('HELLO', '2', 'AUTH', 'alice', 'wrong'))).toBe(
      '-WRONGPASS invalid username-password pair or user is disabled.\r\n',
    );
  });

  it("HELLO before AUTH: NOAUTH in HELLO's own words, byte for byte what a redis-server with a password writes", async () => {
    const direct = await startRedis({ password: 'pw' });
    try {
      for (const bytes of [
        cmd('HELLO'),
        cmd('HELLO', '3'),
        cmd('HELLO', '2', 'SETNAME', 'x'),
        cmd('HELLO', '4'),
        cmd('HELLO', '3', 'AUTH', 'default', 'bad'),
        cmd('HELLO', '3', 'FOO'),
      ]) {
        const expected = await exchange(direct.port, bytes);
        expect(await exchange(authed.port, bytes), JSON.stringify(bytes)).toBe(expected);
      }
      expect(await exchange(authed.port, cmd('HELLO', '3'))).toMatch(/^-NOAUTH HELLO must be called with the client/);
    } finally {
      await direct.stop();
    }
  });

  it('redis-cli: without -a it gets NOAUTH, with -a it is served', async () => {
    const port = String(authed.port);
    const noauth = await run('redis-cli', ['-p', port, 'GET', 'auth:k']);
    expect(noauth.stdout.trim()).toBe('NOAUTH Authentication required.');
    const ok = await run('redis-cli', ['-p', port, '--no-auth-warning', '-a', 'pw', 'GET', 'auth:k']);
    expect(ok.stdout.trim()).toBe('v');
    const user = await run('redis-cli', [
      '-p',
      port,
      '--no-auth-warning',
      '--user',
      'alice',
      '--pass',
      'apw',
      'GET',
      'auth:k',
    ]);
    expect(user.stdout.trim()).toBe('v');
  });
});

describe('connection lifecycle', () => {
  it('QUIT: +OK then close; commands pipelined after it are not executed', async () => {
    const c = await raw();
    c.write(cmd('SET', 'quit:before', '1') + cmd('QUIT') + cmd('SET', 'quit:after', '1') + cmd('GET', 'quit:before'));
    expect(await c.untilClosed()).toBe('+OK\r\n+OK\r\n');
    // Read through keymux too: it uses the same backend connection, so an already-sent SET would be seen.
    expect(await exchange(proxy.port, cmd('EXISTS', 'quit:before') + cmd('EXISTS', 'quit:after'), 2)).toBe(
      ':1\r\n:0\r\n',
    );
    expect(await redisCommand(owner('quit:after').port, 'EXISTS', 'quit:after')).toBe(0);
  });

  it('QUIT then malformed bytes: +OK only, as from Redis, and no protocol error counted', async () => {
    // Redis parses nothing after QUIT; keymux answered the bytes after it with a protocol error (after +OK) and
    // counted it in keymux_protocol_errors_total.
    const bytes = cmd('QUIT') + '*1x\r\n';
    const direct = await RawClient.connect(backends[0].port);
    raws.push(direct);
    direct.write(bytes);
    expect(await direct.untilClosed()).toBe('+OK\r\n');
    const before = proxy.stats.protocolErrors;
    const c = await raw();
    c.write(bytes);
    expect(await c.untilClosed()).toBe('+OK\r\n');
    expect(proxy.stats.protocolErrors).toBe(before);
  });

  it('QUIT behind a command that holds the later ones (BLPOP, WAIT, EXEC): nothing after it runs, as in Redis', async () => {
    // keymux parses ahead of a command that runs alone, and QUIT waited its turn with the commands after it: once
    // it ran, the held commands behind it were dispatched too (their writes applied, their replies never sent), and
    // malformed bytes after it counted a protocol error. Redis runs nothing after QUIT.
    const cases: Array<[string, string]> = [
      ['BLPOP quit:nolist 0.1', '*-1\r\n'],
      ['WAIT 0 100', ':0\r\n'],
      ['MULTI\r\nGET quit:nokey\r\nEXEC', '+OK\r\n+QUEUED\r\n*1\r\n$-1\r\n'],
    ];
    for (const [i, [before, replies]] of cases.entries()) {
      const key = `quit:held:${i}`;
      const bytes = `${before}\r\n${cmd('QUIT')}${cmd('SET', key, '1')}*1x\r\n`;
      const direct = await RawClient.connect(owner(key).port);
      raws.push(direct);
      direct.write(bytes);
      expect(await direct.untilClosed()).toBe(`${replies}+OK\r\n`);
      expect(await redisCommand(owner(key).port, 'EXISTS', key)).toBe(0); // the oracle: SET not run
      const errors = proxy.stats.protocolErrors;
      const c = await raw();
      c.write(bytes);
      expect(await c.untilClosed()).toBe(`${replies}+OK\r\n`);
      await new Promise((r) => setTimeout(r, 100));
      expect(await redisCommand(owner(key).port, 'EXISTS', key)).toBe(0);
      expect(proxy.stats.protocolErrors).toBe(errors);
    }
  });

  it('a client that half-closes after its commands still gets every reply, then keymux closes', async () => {
    await redisCommand(owner('halfclose:k').port, 'SET', 'halfclose:k', 'v');
    const payload =
      cmd('PING') + cmd('GET', 'halfclose:k') + cmd('MGET', 'halfclose:k', 'halfclose:other') + 'GET halfclose:k\r\n';
    const expected = '+PONG\r\n$1\r\nv\r\n*2\r\n$1\r\nv\r\n$-1\r\n$1\r\nv\r\n';
    for (const port of [backends[0].port, proxy.port]) {
      if (port === backends[0].port) await redisCommand(port, 'SET', 'halfclose:k', 'v');
      const received = await new Promise<string>((resolve, reject) => {
        let data = '';
        const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(payload)); // write, then FIN
        s.on('data', (d: Buffer) => {
          data += d.toString('latin1');
        });
        s.on('error', reject);
        s.on('close', () => resolve(data));
        setTimeout(() => {
          s.destroy();
          reject(new Error(`not closed; received ${JSON.stringify(data)}`));
        }, 5000).unref();
      });
      expect(received, port === proxy.port ? 'keymux' : 'redis').toBe(expected);
    }
  });

  it('clients.max: a connection over the limit gets the Redis error and is closed; a freed slot is reusable', async () => {
    const limited = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { clients: { max: 2 } },
      ),
    );
    try {
      const c1 = await raw(limited.port);
      const c2 = await raw(limited.port);
      c1.write(cmd('PING'));
      c2.write(cmd('PING'));
      await c1.untilText('+PONG\r\n');
      await c2.untilText('+PONG\r\n');
      const c3 = await raw(limited.port);
      expect(await c3.untilClosed()).toBe('-ERR max number of clients reached\r\n');
      c1.close();
      await waitFor(() => limited.clientCount() === 1, 'keymux to notice the closed client');
      expect(await exchange(limited.port, cmd('PING'))).toBe('+PONG\r\n');
      expect(c2.closed).toBe(false);
      // Closing keymux does not wait for connected clients to leave on their own: it closes them.
      await limited.close();
      await c2.untilClosed(2000);
    } finally {
      await limited.close();
    }
  });
});

describe('a client that pipelines without reading', () => {
  it('keymux stops reading it (bounded memory), then every reply arrives, in order and correct', async () => {
    const maxInflight = 64;
    const bp = await startKeymux(
      slotsConfig(
        backends.map((b) => b.port),
        { clients: { max_inflight: maxInflight } },
      ),
    );
    const sock = new net.Socket();
    try {
      // 100 keys with 1000-byte values that encode the key: 50,000 GETs ask for ~50 MB of replies.
      const keys = Array.from({ length: 100 }, (_, i) => `bp:${String(i).padStart(3, '0')}`);
      const valueOf = (k: string) => `${k}:`.padEnd(1000, '#');
      await exchange(bp.port, keys.map((k) => cmd('SET', k, valueOf(k))).join(''), keys.length);
      const N = 50_000;
      const requests = Buffer.from(Array.from({ length: N }, (_, i) => cmd('GET', keys[i % keys.length])).join(''));

      await new Promise<void>((res, rej) => {
        sock.once('error', rej);
        sock.connect(bp.port, '127.0.0.1', () => res());
      });
      await waitFor(() => bp.clientCount() === 1, 'keymux to accept the client');
      type SessionView = {
        pendingRequests: number;
        socket: net.Socket;
        onCommand(...a: unknown[]): void;
        flush(): void;
      };
      const session = [...(bp as unknown as { listener: { sessions: Set<SessionView> } }).listener.sessions][0];
      // Watch the session from inside: after every command it takes in and every flush it does, record how many
      // requests it holds and how many reply bytes wait in its socket's user-space buffer.
      let maxPending = 0;
      let maxWriteBuffer = 0;
      const observe = () => {
        maxPending = Math.max(maxPending, session.pendingRequests);
        maxWriteBuffer = Math.max(maxWriteBuffer, session.socket.writableLength);
      };
      const onCommand = session.onCommand.bind(session);
      const flush = session.flush.bind(session);
      session.onCommand = (...a: unknown[]) => {
        onCommand(...a);
        observe();
      };
      session.flush = () => {
        flush();
        observe();
      };

      sock.pause(); // not reading replies
      sock.write(requests);

      // The parser stops delivering commands at the limit, whatever is left of the read: the bound is exact.
      const bound = maxInflight;
      let last = -1;
      let stableFor = 0;
      // Wait until keymux has stopped taking bytes in (no event says "paused": poll the counter until it settles).
      await waitFor(
        () => {
          const now = bp.stats.bytesIn;
          stableFor = now === last ? stableFor + 1 : 0;
          last = now;
          return stableFor >= 10;
        },
        'keymux to stop reading the client',
        10_000,
        20,
      );
      expect(bp.stats.bytesIn).toBeLessThan(requests.length / 2); // it stopped reading well before the end
      expect(maxPending).toBeGreaterThanOrEqual(maxInflight); // the client did get ahead of keymux...
      expect(maxPending).toBeLessThanOrEqual(bound); // ...but never past clients.max_inflight
      // Replies waiting in keymux's memory: at most those of the requests it holds, plus one socket buffer.
      expect(maxWriteBuffer).toBeLessThanOrEqual(bound * 1010 + 65536);

      // Now read everything: all 50,000 replies, in order, each the value of its own key.
      let count = 0;
      let wrong = 0;
      const done = new Promise<void>((resolve, reject) => {
        const parser = new RedisParser({
          returnReply: (r) => {
            if (r !== valueOf(keys[count % keys.length])) wrong++;
            if (++count === N) resolve();
          },
          returnError: (e) => reject(e),
        });
        sock.on('data', (d: Buffer) => parser.execute(d));
        sock.on('close', () => reject(new Error(`closed after ${count} replies`)));
      });
      sock.resume();
      await done;
      expect(count).toBe(N);
      expect(wrong).toBe(0);
      expect(maxPending).toBeLessThanOrEqual(bound);
    } finally {
      sock.destroy();
      await bp.close();
    }
  });
});
