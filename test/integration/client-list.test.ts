/**
 * CLIENT LIST, CLIENT INFO and CLIENT KILL answered for keymux's own client connections (commands/client-list.ts),
 * over real redis-server shards, through ioredis, raw RESP2/RESP3 sockets and redis-cli: every client listed once
 * with its address, name, last command, subscriptions and transaction; the filters; the kills (another client's
 * connection closed at once while the others go on being served, the caller's own after its reply); the errors in
 * Redis's words; and an ACL user without @admin refused CLIENT LIST and KILL but not CLIENT INFO.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { RawClient, slotsConfig, startKeymux } from '../support/keymux.js';
import type { Proxy } from '../../src/proxy.js';

const run = promisify(execFile);
let backends: RedisProcess[];
let proxy: Proxy;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      {
        clients: {
          users: [
            { name: 'default', nopass: true },
            { name: 'app', password: 'apw', rules: '+@all -@admin ~*' },
          ],
        },
      },
    ),
  );
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

type Fields = Record<string, string>;

function parseLines(text: string): Fields[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((line) =>
      Object.fromEntries(line.split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    );
}

async function list(r: Redis, ...args: string[]): Promise<Fields[]> {
  return parseLines((await r.call('CLIENT', 'LIST', ...args)) as string);
}

function client(name?: string): Redis {
  return new Redis({ port: proxy.port, connectionName: name, maxRetriesPerRequest: 0, retryStrategy: () => null });
}

describe('CLIENT LIST and CLIENT INFO', () => {
  it("lists keymux's clients, each once, with Redis 7.2's fields and keymux's values", async () => {
    const a = client('alpha');
    const b = client('beta');
    try {
      await a.set('cl:k', 'v');
      await b.get('cl:k');
      const lines = await list(a);
      // Only keymux's clients: not the shards' connections (keymux's pools), and no one twice.
      expect(lines.length).toBe(proxy.clientCount());
      expect(new Set(lines.map((l) => l.id)).size).toBe(lines.length);
      const alpha = lines.find((l) => l.name === 'alpha') as Fields;
      const beta = lines.find((l) => l.name === 'beta') as Fields;
      expect(Object.keys(alpha)).toEqual(
        'id addr laddr fd name age idle flags db sub psub ssub multi qbuf qbuf-free argv-mem multi-mem rbs rbp obl oll omem tot-mem events cmd user redir resp lib-name lib-ver'.split(
          ' ',
        ),
      );
      expect(alpha.addr).toBe(`127.0.0.1:${a.stream.localPort}`);
      expect(alpha.laddr).toBe(`127.0.0.1:${proxy.port}`);
      expect(Number(alpha.fd)).toBeGreaterThan(0);
      expect(alpha.id).toBe(String(await a.client('ID')));
      expect(alpha.cmd).toBe('client|list');
      expect(beta.cmd).toBe('get');
      expect(alpha).toMatchObject({ flags: 'N', db: '0', sub: '0', multi: '-1', user: 'default', resp: '2' });
      // As Redis counts its query buffer: the command being run (*2 $6 CLIENT $4 LIST: 26 bytes), nothing else.
      expect(alpha.qbuf).toBe('26');
      expect(beta.qbuf).toBe('0');
      expect(Number(alpha.age)).toBeGreaterThanOrEqual(0);
      expect(Number(beta.idle)).toBeGreaterThanOrEqual(0);
    } finally {
      a.disconnect();
      b.disconnect();
    }
  });

  it('shows subscriptions, a transaction being queued, and filters by TYPE and ID', async () => {
    const sub = client('sub');
    const tx = await RawClient.connect(proxy.port);
    const r = client('asker');
    try {
      await sub.subscribe('cl:ch1', 'cl:ch2');
      await sub.psubscribe('cl:p*');
      expect(await tx.exchange('CLIENT SETNAME tx\r\nMULTI\r\nSET {cl}a 1\r\nINCR {cl}b\r\n', 4)).toEqual([
        'OK',
        'OK',
        'QUEUED',
        'QUEUED',
      ]);
      const lines = await list(r);
      const s = lines.find((l) => l.name === 'sub') as Fields;
      expect(s).toMatchObject({ flags: 'P', sub: '2', psub: '1', ssub: '0', cmd: 'psubscribe' });
      const t = lines.find((l) => l.name === 'tx') as Fields;
      expect(t.flags).toBe('x');
      expect(t.multi).toBe('2');
      expect(Number(t['multi-mem'])).toBeGreaterThan(0);
      expect((await list(r, 'TYPE', 'pubsub')).map((l) => l.name)).toEqual(['sub']);
      const normal = (await list(r, 'TYPE', 'normal')).map((l) => l.name);
      expect(normal).toContain('tx');
      expect(normal).not.toContain('sub');
      expect(await list(r, 'TYPE', 'master')).toEqual([]);
      expect(await list(r, 'TYPE', 'replica')).toEqual([]);
      const subId = (lines.find((l) => l.name === 'sub') as Fields).id;
      const txId = t.id;
      expect((await list(r, 'ID', txId, subId, '999999')).map((l) => l.name).sort()).toEqual(['sub', 'tx']);
    } finally {
      sub.disconnect();
      tx.close();
      r.disconnect();
    }
  });

  it("CLIENT INFO is the caller's own line, as a bulk string in RESP2 and a verbatim string in RESP3", async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      const [id] = (await raw.exchange('CLIENT ID\r\n', 1)) as number[];
      const before = raw.data.length;
      raw.write('CLIENT INFO\r\n');
      const text = (await raw.until((d) => d.subarray(before).includes('\n\r\n'))).subarray(before).toString('latin1');
      expect(text).toMatch(/^\$\d+\r\nid=\d+ addr=/);
      expect(text).toContain(`id=${id} `);
      expect(text).toContain(' cmd=client|info ');
      const hello = raw.data.length;
      raw.write('HELLO 3\r\n');
      await raw.until((d) => d.subarray(hello).includes('modules\r\n*0\r\n'));
      const at = raw.data.length;
      raw.write('CLIENT INFO\r\n');
      const v = (await raw.until((d) => d.subarray(at).includes('\n\r\n'))).subarray(at).toString('latin1');
      const body = v.slice(v.indexOf('\r\n') + 2, -2);
      expect(v.startsWith(`=${body.length}\r\ntxt:id=${id} `)).toBe(true);
      expect(body).toContain(' resp=3 ');
    } finally {
      raw.close();
    }
  });

  it("redis-cli's CLIENT LIST shows its own connection", async () => {
    const out = (await run('redis-cli', ['-p', String(proxy.port), 'CLIENT', 'LIST'])).stdout;
    const lines = parseLines(out);
    expect(lines.some((l) => l.cmd === 'client|list' && l.addr.startsWith('127.0.0.1:'))).toBe(true);
  });

  it('CLIENT SETINFO refuses values that would break a line, as Redis 7.2 does; accepted ones are listed', async () => {
    const r = client();
    try {
      await expect(r.call('CLIENT', 'SETINFO', 'LIB-NAME', 'my lib')).rejects.toThrow(
        'ERR lib-name cannot contain spaces, newlines or special characters.',
      );
      await expect(r.call('CLIENT', 'SETINFO', 'LIB-VER', '1.0\nid=1')).rejects.toThrow(
        'ERR lib-ver cannot contain spaces, newlines or special characters.',
      );
      expect(await r.call('CLIENT', 'SETINFO', 'LIB-NAME', 'mylib')).toBe('OK');
      expect(await r.call('CLIENT', 'SETINFO', 'LIB-VER', '1.2.3')).toBe('OK');
      expect(await r.call('CLIENT', 'INFO')).toMatch(/ lib-name=mylib lib-ver=1\.2\.3\n$/);
    } finally {
      r.disconnect();
    }
  });

  it("answers Redis's errors for bad arguments", async () => {
    const r = client();
    try {
      await expect(r.call('CLIENT', 'LIST', 'TYPE', 'bogus')).rejects.toThrow("ERR Unknown client type 'bogus'");
      await expect(r.call('CLIENT', 'LIST', 'ID', '0')).rejects.toThrow('ERR Invalid client ID');
      await expect(r.call('CLIENT', 'LIST', 'ID', 'abc')).rejects.toThrow('ERR Invalid client ID');
      await expect(r.call('CLIENT', 'LIST', 'FOO')).rejects.toThrow('ERR syntax error');
      await expect(r.call('CLIENT', 'KILL', 'ID', '0')).rejects.toThrow('ERR client-id should be greater than 0');
      await expect(r.call('CLIENT', 'KILL', 'USER', 'nobody')).rejects.toThrow("ERR No such user 'nobody'");
      await expect(r.call('CLIENT', 'KILL', 'ID', '1', 'SKIPME', 'maybe')).rejects.toThrow('ERR syntax error');
      await expect(r.call('CLIENT', 'KILL', 'ID', '1', 'ADDR')).rejects.toThrow('ERR syntax error');
      await expect(r.call('CLIENT', 'KILL', 'FLAVOR', 'x')).rejects.toThrow('ERR syntax error');
      await expect(r.call('CLIENT', 'KILL', '10.9.8.7:6543')).rejects.toThrow('ERR No such client');
      expect(await r.ping()).toBe('PONG'); // errors, not a closed connection
    } finally {
      r.disconnect();
    }
  });
});

describe('CLIENT KILL', () => {
  it("closes another client's connection at once; the others go on being served", async () => {
    const victim = await RawClient.connect(proxy.port);
    const bystander = client();
    const r = client();
    try {
      const [victimId] = (await victim.exchange('CLIENT ID\r\n', 1)) as number[];
      // A command of the victim's still at a shard when it is killed: answered there, dropped here.
      victim.write('SET cl:kill 1\r\n');
      expect(await r.call('CLIENT', 'KILL', 'ID', String(victimId))).toBe(1);
      await victim.untilClosed();
      expect(await bystander.set('cl:after', 'x')).toBe('OK');
      expect(await r.get('cl:after')).toBe('x');
      expect((await list(r)).some((l) => l.id === String(victimId))).toBe(false);
      expect(await r.call('CLIENT', 'KILL', 'ID', String(victimId))).toBe(0);
    } finally {
      victim.close();
      bystander.disconnect();
      r.disconnect();
    }
  });

  it('the old form kills by address (+OK); ADDR, LADDR, TYPE and USER filters count what they kill', async () => {
    const a = await RawClient.connect(proxy.port);
    const b = await RawClient.connect(proxy.port);
    const subscriber = await RawClient.connect(proxy.port);
    const r = client();
    try {
      await subscriber.exchange('SUBSCRIBE cl:news\r\n', 1);
      expect(await r.call('CLIENT', 'KILL', `127.0.0.1:${a.socket.localPort}`)).toBe('OK');
      await a.untilClosed();
      expect(await r.call('CLIENT', 'KILL', 'TYPE', 'pubsub')).toBe(1);
      await subscriber.untilClosed();
      expect(b.closed).toBe(false);
      expect(await r.call('CLIENT', 'KILL', 'ADDR', `127.0.0.1:${b.socket.localPort}`, 'LADDR', '127.0.0.1:1')).toBe(0);
      expect(await r.call('CLIENT', 'KILL', 'ADDR', `127.0.0.1:${b.socket.localPort}`, 'USER', 'app')).toBe(0);
      expect(
        await r.call('CLIENT', 'KILL', 'ADDR', `127.0.0.1:${b.socket.localPort}`, 'LADDR', `127.0.0.1:${proxy.port}`),
      ).toBe(1);
      await b.untilClosed();
    } finally {
      for (const c of [a, b, subscriber]) c.close();
      r.disconnect();
    }
  });

  it('skips the caller by default; with SKIPME no it answers, then closes its own connection', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      const [id] = (await raw.exchange('CLIENT ID\r\n', 1)) as number[];
      expect(await raw.exchange(`CLIENT KILL ID ${id}\r\n`, 1)).toEqual([0]);
      const before = raw.data.length;
      raw.write(`CLIENT KILL ID ${id} SKIPME no\r\nPING\r\n`);
      const all = await raw.untilClosed();
      expect(all.slice(before)).toBe(':1\r\n'); // answered, then closed: the PING after it is not run
    } finally {
      raw.close();
    }
  });

  it('a user without @admin may read its own CLIENT INFO, not list or kill others', async () => {
    const app = new Redis({ port: proxy.port, username: 'app', password: 'apw', maxRetriesPerRequest: 0 });
    try {
      expect(await app.call('CLIENT', 'INFO')).toContain(' user=app ');
      await expect(app.call('CLIENT', 'LIST')).rejects.toThrow(/NOPERM/);
      await expect(app.call('CLIENT', 'KILL', 'ID', '1')).rejects.toThrow(/NOPERM/);
    } finally {
      app.disconnect();
    }
  });
});
