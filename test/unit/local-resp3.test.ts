/**
 * Locally answered commands and the protocol: HELLO 3 switches (through session.switchProtocol) and answers a map,
 * HELLO 2 a flat array, HELLO alone keeps the protocol; a failed HELLO never switches; HELLO 3 is NOPROTO when the
 * shards are older than Redis 6 (no RESP3 to forward); nulls, COMMAND DOCS and COMMAND INFO flags in each form.
 */
import type { ClientListing } from '../../src/commands/client-list.js';
import { describe, expect, it } from 'vitest';
import { LOCAL_HANDLERS, type LocalSession } from '../../src/commands/local.js';
import { Request, type RequestOwner } from '../../src/core/request.js';
import { CommandTable, builtinRows } from '../../src/commands/table.js';
import type { ProxyContext } from '../../src/server/context.js';
import { AccessControl, type AclUser } from '../../src/security/acl.js';
import { ERR_WRONGPASS } from '../../src/errors.js';

class FakeSession implements LocalSession {
  readonly id = 7;
  name: Buffer | null = null;
  authenticated = true;
  user: string | null = 'default';
  libName: Buffer | null = null;
  libVersion: Buffer | null = null;
  replyMode = 0;
  protocol = 2;
  switches: number[] = [];
  stopReading(): void {}
  listing(): ClientListing {
    throw new Error('not used by these tests');
  }
  reset(): void {
    this.switchProtocol(2);
  }
  switchProtocol(protocol: number): void {
    this.switches.push(protocol);
    this.protocol = protocol;
  }
  signIn(user: AclUser): void {
    this.authenticated = true;
    this.user = user.name;
  }
  checkAuthWhenDue(_req: Request, check: () => void): void {
    check();
  }
  authFailed(req: Request): void {
    req.deliver(ERR_WRONGPASS);
  }
}

const table = CommandTable.fromRows(builtinRows(), { deny: [] });

function ctx(backendVersion = '7.0.15', password: string | null = null): ProxyContext {
  return {
    backendVersion,
    topology: { table, acl: new AccessControl([], password, table), config: { clients: { password, users: [] } } },
  } as unknown as ProxyContext;
}

/** Runs one local command; resolves with its reply as text. */
function call(session: FakeSession, c: ProxyContext, ...args: string[]): string {
  let reply = '';
  const owner = { id: session.id, onRequestDone: (r: Request) => (reply = (r.reply as Buffer).toString('latin1')) };
  const req = new Request(
    owner as unknown as RequestOwner,
    Buffer.alloc(0),
    args.map((a) => Buffer.from(a)),
    0,
    0,
  );
  const name =
    args.length > 1 && ['client', 'command'].includes(args[0].toLowerCase()) ? `${args[0]}|${args[1]}` : args[0];
  LOCAL_HANDLERS[name.toLowerCase()](session, req, c);
  return reply;
}

const HELLO_MAP =
  '%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n' +
  '$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n';

describe('HELLO and the protocol', () => {
  it('HELLO 3 switches and answers a map; HELLO keeps RESP3; HELLO 2 switches back and answers an array', () => {
    const s = new FakeSession();
    const c = ctx();
    expect(call(s, c, 'HELLO', '3')).toBe(HELLO_MAP);
    expect(s.switches).toEqual([3]);
    expect(call(s, c, 'HELLO')).toBe(HELLO_MAP);
    expect(s.switches).toEqual([3]);
    const two = call(s, c, 'HELLO', '2');
    expect(two).toMatch(/^\*14\r\n\$6\r\nserver\r\n/);
    expect(two).toContain('$5\r\nproto\r\n:2\r\n');
    expect(s.switches).toEqual([3, 2]);
  });

  it('a HELLO that fails never switches: bad version, wrong password, not authenticated, bad option', () => {
    const s = new FakeSession();
    expect(call(s, ctx(), 'HELLO', '4')).toBe('-NOPROTO unsupported protocol version\r\n');
    expect(call(s, ctx(), 'HELLO', '-1')).toBe('-NOPROTO unsupported protocol version\r\n');
    expect(call(s, ctx(), 'HELLO', 'three')).toBe('-ERR Protocol version is not an integer or out of range\r\n');
    expect(call(s, ctx(), 'HELLO', '3', 'BOGUS')).toBe("-ERR Syntax error in HELLO option 'BOGUS'\r\n");
    const locked = new FakeSession();
    locked.authenticated = false;
    expect(call(locked, ctx('7.0.15', 'pw'), 'HELLO', '3')).toMatch(/^-NOAUTH/);
    expect(call(locked, ctx('7.0.15', 'pw'), 'HELLO', '3', 'AUTH', 'default', 'nope')).toMatch(/^-WRONGPASS/);
    expect(s.switches).toEqual([]);
    expect(locked.switches).toEqual([]);
    expect(call(locked, ctx('7.0.15', 'pw'), 'HELLO', '3', 'AUTH', 'default', 'pw')).toMatch(/^%7\r\n/);
    expect(locked.switches).toEqual([3]);
  });

  it('HELLO 3 is NOPROTO when the shards run a Redis without RESP3 (before 6); fine when the version is unknown', () => {
    const s = new FakeSession();
    expect(call(s, ctx('5.0.14'), 'HELLO', '3')).toBe(
      "-NOPROTO unsupported protocol version: keymux's backends run Redis 5.0.14, which has no RESP3; use HELLO 2\r\n",
    );
    expect(s.switches).toEqual([]);
    expect(call(s, ctx('5.0.14'), 'HELLO', '2')).toMatch(/^\*14\r\n/);
    expect(call(s, ctx('unknown'), 'HELLO', '3')).toMatch(/^%7\r\n/);
  });
});

describe('local replies in both protocols', () => {
  it('nulls: CLIENT GETNAME and COMMAND INFO of an unknown command', () => {
    const s = new FakeSession();
    const c = ctx();
    expect(call(s, c, 'CLIENT', 'GETNAME')).toBe('$-1\r\n');
    expect(call(s, c, 'COMMAND', 'INFO', 'nosuch')).toBe('*1\r\n$-1\r\n');
    s.protocol = 3;
    expect(call(s, c, 'CLIENT', 'GETNAME')).toBe('_\r\n');
    expect(call(s, c, 'COMMAND', 'INFO', 'nosuch')).toBe('*1\r\n_\r\n');
  });

  it('COMMAND DOCS: an empty array or an empty map; COMMAND INFO flags: an array or a set', () => {
    const s = new FakeSession();
    const c = ctx();
    expect(call(s, c, 'COMMAND', 'DOCS')).toBe('*0\r\n');
    expect(call(s, c, 'COMMAND', 'INFO', 'get')).toBe(
      '*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*0\r\n*0\r\n',
    );
    const whole2 = call(s, c, 'COMMAND');
    s.protocol = 3;
    expect(call(s, c, 'COMMAND', 'DOCS')).toBe('%0\r\n');
    expect(call(s, c, 'COMMAND', 'INFO', 'get')).toBe(
      '*1\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n~0\r\n~0\r\n~0\r\n~0\r\n',
    );
    // COMMAND's whole reply is cached per table and protocol: each protocol gets its own.
    const whole3 = call(s, c, 'COMMAND');
    expect(whole3).not.toBe(whole2);
    expect(whole3).toContain('$3\r\nget\r\n:2\r\n~2\r\n');
    s.protocol = 2;
    expect(call(s, c, 'COMMAND')).toBe(whole2);
  });
});
