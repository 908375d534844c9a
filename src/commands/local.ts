/**
 * Commands keymux answers itself, without a backend: PING, ECHO, QUIT, RESET, SELECT 0, AUTH, HELLO [2|3], CLIENT
 * SETNAME/GETNAME/SETINFO/ID and COMMAND (COUNT, INFO, DOCS, LIST, GETKEYS). One handler per command name in a
 * table (data, not a switch); each answers synchronously with req.deliver(). Authentication checks the
 * client credentials from the config (`clients.password` for the default user, `clients.users` for ACL-style
 * AUTH user pass) and compares them in constant time.
 *
 * Replies are in the client's protocol, byte for byte as Redis 7 writes them: HELLO's reply is a map in RESP3, a
 * flat array in RESP2; a null is `_` in RESP3 and `$-1` in RESP2; COMMAND's flag lists are sets in RESP3 and
 * COMMAND DOCS a map. HELLO 3 switches the client to RESP3, HELLO 2 and RESET back (session.switchProtocol).
 */
import crypto from 'node:crypto';
import type { Request } from '../core/request.js';
import type { ProxyContext } from '../server/context.js';
import type { CommandSpec } from './spec.js';
import type { CommandTable } from './table.js';
import { resolveSubcommand } from './table.js';
import { findKeyIndexes, keysErrorReply } from './keys.js';
import {
  ERR_AUTH_NOT_CONFIGURED,
  ERR_NOAUTH,
  ERR_NOPROTO,
  ERR_SELECT_DB,
  ERR_SELECT_INVALID,
  ERR_SYNTAX,
  ERR_WRONGPASS,
  errorReply,
  unknownCommand,
  unknownSubcommand,
  wrongArity,
} from '../errors.js';
import {
  EMPTY_ARRAY,
  NIL_BULK,
  OK,
  PONG,
  arrayHeader,
  arrayReply,
  bulkReply,
  integerReply,
  simpleReply,
} from '../resp/writer.js';

/** The session surface local commands use. */
export interface LocalSession {
  readonly id: number;
  name: Buffer | null;
  authenticated: boolean;
  user: string | null;
  libName: Buffer | null;
  libVersion: Buffer | null;
  stopReading(): void;
  /** CLIENT REPLY: REPLY_ON, REPLY_OFF or REPLY_SKIP_NEXT (the session silences replies accordingly). */
  replyMode: number;
  /** RESET: the connection's state back to a new connection's (subscriptions, name, authentication...). */
  reset(): void;
  /** RESP version the client speaks: 2, or 3 after HELLO 3. */
  readonly protocol: number;
  /** HELLO 2|3: the client speaks `protocol` from its next command on. */
  switchProtocol(protocol: number): void;
}

export type LocalHandler = (session: LocalSession, req: Request, ctx: ProxyContext) => void;

const NULL3 = Buffer.from('_\r\n', 'latin1');
const EMPTY_MAP = Buffer.from('%0\r\n', 'latin1');
const EMPTY_SET = Buffer.from('~0\r\n', 'latin1');

/** The null reply in `protocol`: `$-1` (RESP2) or `_` (RESP3). */
export function nullReply(protocol: number): Buffer {
  return protocol === 3 ? NULL3 : NIL_BULK;
}

/** A map of already-encoded keys and values (alternating): `%n` in RESP3, a flat `*2n` array in RESP2. */
export function mapReply(pairs: Buffer[], protocol: number): Buffer {
  return protocol === 3
    ? Buffer.concat([Buffer.from(`%${pairs.length >> 1}\r\n`, 'latin1'), ...pairs])
    : arrayReply(pairs);
}

/** A set of already-encoded elements: `~n` in RESP3, an array in RESP2. */
function setReply(elements: Buffer[], protocol: number): Buffer {
  if (protocol !== 3) return arrayReply(elements);
  return elements.length === 0
    ? EMPTY_SET
    : Buffer.concat([Buffer.from(`~${elements.length}\r\n`, 'latin1'), ...elements]);
}

function lower(b: Buffer): string {
  return b.toString('latin1').toLowerCase();
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/** Checks credentials; user null means the default user. */
function checkCredentials(
  ctx: ProxyContext,
  user: string | null,
  password: string,
): 'ok' | 'wrong' | 'none-configured' {
  const clients = ctx.topology.config.clients;
  if (clients.password === null && clients.users.length === 0) return 'none-configured';
  if (user === null || user === 'default') {
    if (clients.password !== null && safeEqual(password, clients.password)) return 'ok';
    if (user === null) return 'wrong';
  }
  for (const u of clients.users) if (u.name === user && safeEqual(password, u.password)) return 'ok';
  return 'wrong';
}

const ping: LocalHandler = (_s, req) => {
  const a = req.args;
  if (a.length > 2) return req.deliver(wrongArity('ping'));
  req.deliver(a.length === 2 ? bulkReply(a[1]) : PONG);
};

const echo: LocalHandler = (_s, req) => req.deliver(bulkReply(req.args[1]));

const quit: LocalHandler = (s, req) => {
  req.closeAfter = true;
  s.stopReading();
  req.deliver(OK);
};

const RESET_REPLY = simpleReply('RESET');

const reset: LocalHandler = (s, req) => {
  s.reset();
  req.silent = false; // RESET turns CLIENT REPLY back on, for its own reply too
  req.deliver(RESET_REPLY);
};

/** CLIENT REPLY modes (LocalSession.replyMode). */
export const REPLY_ON = 0;
export const REPLY_OFF = 1;
export const REPLY_SKIP_NEXT = 2;

/** CLIENT REPLY ON|OFF|SKIP: OFF and SKIP are not answered (Redis adds no reply for them). */
const clientReply: LocalHandler = (s, req) => {
  const mode = lower(req.args[2]);
  if (mode === 'on') {
    s.replyMode = REPLY_ON;
    req.silent = false;
    return req.deliver(OK);
  }
  if (mode === 'off') s.replyMode = REPLY_OFF;
  else if (mode === 'skip') {
    if (s.replyMode !== REPLY_OFF) s.replyMode = REPLY_SKIP_NEXT;
  } else {
    return req.deliver(ERR_SYNTAX);
  }
  req.silent = true;
  req.deliver(OK);
};

const select: LocalHandler = (_s, req) => {
  const text = req.args[1].toString('latin1');
  if (!/^-?\d+$/.test(text)) return req.deliver(ERR_SELECT_INVALID);
  req.deliver(Number(text) === 0 ? OK : ERR_SELECT_DB);
};

const auth: LocalHandler = (s, req, ctx) => {
  const a = req.args;
  if (a.length > 3) return req.deliver(ERR_SYNTAX);
  const user = a.length === 3 ? a[1].toString('utf8') : null;
  const result = checkCredentials(ctx, user, a[a.length - 1].toString('utf8'));
  if (result === 'none-configured') return req.deliver(a.length === 2 ? ERR_AUTH_NOT_CONFIGURED : ERR_WRONGPASS);
  if (result === 'wrong') return req.deliver(ERR_WRONGPASS);
  s.authenticated = true;
  s.user = user ?? 'default';
  req.deliver(OK);
};

function helloReply(s: LocalSession, ctx: ProxyContext): Buffer {
  const pairs: Buffer[] = [
    bulkReply('server'),
    bulkReply('redis'),
    bulkReply('version'),
    bulkReply(ctx.backendVersion),
    bulkReply('proto'),
    integerReply(s.protocol),
    bulkReply('id'),
    integerReply(s.id),
    bulkReply('mode'),
    bulkReply('standalone'),
    bulkReply('role'),
    bulkReply('master'),
    bulkReply('modules'),
    EMPTY_ARRAY,
  ];
  return mapReply(pairs, s.protocol);
}

/** Major version of the backends' Redis (from INFO at start), or null when not known. */
function backendMajor(ctx: ProxyContext): number | null {
  const m = /^(\d+)\./.exec(ctx.backendVersion);
  return m === null ? null : Number(m[1]);
}

const hello: LocalHandler = (s, req, ctx) => {
  const a = req.args;
  let i = 1;
  /** The protocol asked for; 0: HELLO without a version keeps the current one. */
  let protocol = 0;
  if (a.length > 1) {
    const ver = a[1].toString('latin1');
    if (!/^-?\d{1,18}$/.test(ver))
      return req.deliver(errorReply('ERR Protocol version is not an integer or out of range'));
    if (ver !== '2' && ver !== '3') return req.deliver(ERR_NOPROTO);
    protocol = Number(ver);
    // RESP3 replies come from the backends themselves (HELLO 3 on keymux's RESP3 connections): Redis 6 or later.
    const major = backendMajor(ctx);
    if (protocol === 3 && major !== null && major < 6) return req.deliver(noResp3Backends(ctx.backendVersion));
    i = 2;
  }
  let newName: Buffer | null = null;
  let authed = false;
  let user: string | null = null;
  for (; i < a.length; i++) {
    const opt = lower(a[i]);
    if (opt === 'auth' && i + 2 < a.length) {
      user = a[i + 1].toString('utf8');
      const result = checkCredentials(ctx, user, a[i + 2].toString('utf8'));
      if (result !== 'ok') return req.deliver(ERR_WRONGPASS);
      authed = true;
      i += 2;
    } else if (opt === 'setname' && i + 1 < a.length) {
      newName = a[++i];
      if (!validName(newName)) return req.deliver(ERR_CLIENT_NAME);
    } else {
      return req.deliver(errorReply(`ERR Syntax error in HELLO option '${a[i].toString('latin1')}'`));
    }
  }
  if (authed) {
    s.authenticated = true;
    s.user = user;
  }
  if (!s.authenticated) return req.deliver(ERR_NOAUTH);
  if (newName !== null) s.name = newName.length === 0 ? null : Buffer.from(newName);
  if (protocol !== 0) s.switchProtocol(protocol);
  req.deliver(helloReply(s, ctx));
};

function noResp3Backends(version: string): Buffer {
  return errorReply(
    `NOPROTO unsupported protocol version: keymux's backends run Redis ${version}, which has no RESP3; use HELLO 2`,
  );
}

const ERR_CLIENT_NAME = errorReply('ERR Client names cannot contain spaces, newlines or special characters.');

function validName(name: Buffer): boolean {
  for (const c of name) if (c < 33 || c > 126) return false;
  return true;
}

const clientSetname: LocalHandler = (s, req) => {
  const name = req.args[2];
  if (!validName(name)) return req.deliver(ERR_CLIENT_NAME);
  s.name = name.length === 0 ? null : Buffer.from(name);
  req.deliver(OK);
};

const clientGetname: LocalHandler = (s, req) =>
  req.deliver(s.name === null ? nullReply(s.protocol) : bulkReply(s.name));

const clientId: LocalHandler = (s, req) => req.deliver(integerReply(s.id));

const clientSetinfo: LocalHandler = (s, req) => {
  const attr = lower(req.args[2]);
  const value = Buffer.from(req.args[3]);
  if (attr === 'lib-name') s.libName = value;
  else if (attr === 'lib-ver') s.libVersion = value;
  else return req.deliver(errorReply(`ERR Unrecognized option '${req.args[2].toString('latin1')}'`));
  req.deliver(OK);
};

// ---- COMMAND ----------------------------------------------------------------------------------------------

/** COMMAND's whole reply, per table, in RESP2 [0] and RESP3 [1]. */
const commandReplyCache = new WeakMap<CommandTable, [Buffer | null, Buffer | null]>();

/**
 * One command's entry as Redis 7 writes it: name, arity, flags, first key, last key, step, then ACL categories,
 * tips, key specs and subcommands (keymux lists none of those). Flags and the lists are sets in RESP3.
 */
function encodeSpec(spec: CommandSpec, protocol: number): Buffer {
  const flags = spec.flags.map((f) => simpleReply(f));
  const empty = protocol === 3 ? EMPTY_SET : EMPTY_ARRAY;
  return arrayReply([
    bulkReply(spec.name),
    integerReply(spec.arity),
    setReply(flags, protocol),
    integerReply(spec.firstKey),
    integerReply(spec.lastKey),
    integerReply(spec.step),
    empty,
    empty,
    empty,
    empty,
  ]);
}

const command: LocalHandler = (s, req, ctx) => {
  const table = ctx.topology.table;
  let cached = commandReplyCache.get(table);
  if (cached === undefined) commandReplyCache.set(table, (cached = [null, null]));
  const which = s.protocol === 3 ? 1 : 0;
  let reply = cached[which];
  if (reply === null) {
    const names = table.names().filter((n) => !n.includes('|'));
    reply = cached[which] = arrayReply(names.map((n) => encodeSpec(table.get(n) as CommandSpec, s.protocol)));
  }
  req.deliver(reply);
};

const commandCount: LocalHandler = (_s, req, ctx) =>
  req.deliver(integerReply(ctx.topology.table.names().filter((n) => !n.includes('|')).length));

const commandInfo: LocalHandler = (s, req, ctx) => {
  const table = ctx.topology.table;
  const out: Buffer[] = [];
  for (let i = 2; i < req.args.length; i++) {
    const spec = table.get(lower(req.args[i]));
    out.push(spec === undefined ? nullReply(s.protocol) : encodeSpec(spec, s.protocol));
  }
  req.deliver(arrayReply(out));
};

// keymux has no command documentation to offer; an empty reply (an empty map) makes clients (redis-cli) use
// their own help.
const commandDocs: LocalHandler = (s, req) => req.deliver(s.protocol === 3 ? EMPTY_MAP : EMPTY_ARRAY);

const commandList: LocalHandler = (_s, req, ctx) =>
  req.deliver(
    arrayReply(
      ctx.topology.table
        .names()
        .filter((n) => !n.includes('|'))
        .map((n) => bulkReply(n)),
    ),
  );

const commandGetkeys: LocalHandler = (_s, req, ctx) => {
  const inner = req.args.slice(2);
  let spec = ctx.topology.table.lookup(inner[0], 0, inner[0].length);
  if (spec === undefined) return req.deliver(unknownCommand(inner[0], inner));
  if (spec.subcommands !== null && inner.length > 1) {
    const sub = resolveSubcommand(spec, inner);
    if (sub === undefined) return req.deliver(unknownSubcommand(spec.name, inner[1]));
    spec = sub;
  }
  if (spec.arity > 0 ? inner.length !== spec.arity : inner.length < -spec.arity) {
    return req.deliver(errorReply('ERR Invalid number of arguments specified for command'));
  }
  const idx: number[] = [];
  const n = findKeyIndexes(spec, inner, idx);
  if (n < 0) return req.deliver(keysErrorReply(n));
  if (n === 0) return req.deliver(errorReply('ERR The command has no key arguments'));
  const parts: Buffer[] = [arrayHeader(n)];
  for (let i = 0; i < n; i++) parts.push(bulkReply(inner[idx[i]]));
  req.deliver(Buffer.concat(parts));
};

export const LOCAL_HANDLERS: Record<string, LocalHandler> = {
  ping,
  echo,
  quit,
  reset,
  select,
  auth,
  hello,
  'client|setname': clientSetname,
  'client|getname': clientGetname,
  'client|id': clientId,
  'client|reply': clientReply,
  'client|setinfo': clientSetinfo,
  command,
  'command|count': commandCount,
  'command|info': commandInfo,
  'command|docs': commandDocs,
  'command|list': commandList,
  'command|getkeys': commandGetkeys,
  'command|getkeysandflags': commandGetkeys,
};
