/**
 * Commands keymux answers itself, without a backend: PING, ECHO, QUIT, RESET, SELECT 0, AUTH, HELLO 2, CLIENT
 * SETNAME/GETNAME/SETINFO/ID and COMMAND (COUNT, INFO, DOCS, LIST, GETKEYS). One handler per command name in a
 * table (data, not a switch); each answers synchronously with req.deliver(). Authentication checks the
 * client credentials from the config (`clients.password` for the default user, `clients.users` for ACL-style
 * AUTH user pass) and compares them in constant time.
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
}

export type LocalHandler = (session: LocalSession, req: Request, ctx: ProxyContext) => void;

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
  const fields: Buffer[] = [
    bulkReply('server'),
    bulkReply('redis'),
    bulkReply('version'),
    bulkReply(ctx.backendVersion),
    bulkReply('proto'),
    integerReply(2),
    bulkReply('id'),
    integerReply(s.id),
    bulkReply('mode'),
    bulkReply('standalone'),
    bulkReply('role'),
    bulkReply('master'),
    bulkReply('modules'),
    EMPTY_ARRAY,
  ];
  return arrayReply(fields);
}

const hello: LocalHandler = (s, req, ctx) => {
  const a = req.args;
  let i = 1;
  if (a.length > 1) {
    const ver = a[1].toString('latin1');
    if (!/^\d+$/.test(ver)) return req.deliver(errorReply('ERR Protocol version is not an integer or out of range'));
    if (ver !== '2') return req.deliver(ERR_NOPROTO);
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
  req.deliver(helloReply(s, ctx));
};

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

const clientGetname: LocalHandler = (s, req) => req.deliver(s.name === null ? NIL_BULK : bulkReply(s.name));

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

const commandReplyCache = new WeakMap<CommandTable, Buffer>();

function encodeSpec(spec: CommandSpec): Buffer {
  const flags = spec.flags.map((f) => simpleReply(f));
  return arrayReply([
    bulkReply(spec.name),
    integerReply(spec.arity),
    arrayReply(flags),
    integerReply(spec.firstKey),
    integerReply(spec.lastKey),
    integerReply(spec.step),
    EMPTY_ARRAY,
    EMPTY_ARRAY,
    EMPTY_ARRAY,
    EMPTY_ARRAY,
  ]);
}

const command: LocalHandler = (_s, req, ctx) => {
  const table = ctx.topology.table;
  let cached = commandReplyCache.get(table);
  if (cached === undefined) {
    const names = table.names().filter((n) => !n.includes('|'));
    cached = arrayReply(names.map((n) => encodeSpec(table.get(n) as CommandSpec)));
    commandReplyCache.set(table, cached);
  }
  req.deliver(cached);
};

const commandCount: LocalHandler = (_s, req, ctx) =>
  req.deliver(integerReply(ctx.topology.table.names().filter((n) => !n.includes('|')).length));

const commandInfo: LocalHandler = (_s, req, ctx) => {
  const table = ctx.topology.table;
  const out: Buffer[] = [];
  for (let i = 2; i < req.args.length; i++) {
    const spec = table.get(lower(req.args[i]));
    out.push(spec === undefined ? NIL_BULK : encodeSpec(spec));
  }
  req.deliver(arrayReply(out));
};

// keymux has no command documentation to offer; an empty reply makes clients (redis-cli) use their own help.
const commandDocs: LocalHandler = (_s, req) => req.deliver(EMPTY_ARRAY);

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
