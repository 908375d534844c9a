/**
 * Commands keymux answers itself, without a backend: PING, ECHO, QUIT, RESET, SELECT 0, AUTH, HELLO 2, CLIENT
 * SETNAME/GETNAME/SETINFO/ID, COMMAND (COUNT, INFO, DOCS, LIST, GETKEYS) and ACL WHOAMI / CAT. One handler per
 * command name in a table (data, not a switch); each answers synchronously with req.deliver(), except a failed
 * AUTH, whose reply the session may delay (security/auth-guard.ts). Authentication asks the topology's
 * AccessControl (security/acl.ts: `clients.password` for the default user, `clients.users` for AUTH user pass,
 * passwords compared as SHA-256 digests in constant time).
 */
import type { Request } from '../core/request.js';
import { ACL_CATEGORIES, AUTH_NONE_CONFIGURED, type AccessControl, type AclUser } from '../security/acl.js';
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
  /** AUTH or HELLO AUTH succeeded: the connection is `user`'s from now on. */
  signIn(user: AclUser, acl: AccessControl): void;
  /** AUTH or HELLO AUTH failed: answers `req` with WRONGPASS, perhaps later, perhaps closing (AuthGuard). */
  authFailed(req: Request, user: Buffer | null): void;
}

export type LocalHandler = (session: LocalSession, req: Request, ctx: ProxyContext) => void;

function lower(b: Buffer): string {
  return b.toString('latin1').toLowerCase();
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
  const user = a.length === 3 ? a[1] : null;
  const acl = ctx.topology.acl;
  const result = acl.authenticate(user, a[a.length - 1]);
  if (result === AUTH_NONE_CONFIGURED) return req.deliver(ERR_AUTH_NOT_CONFIGURED);
  if (typeof result === 'number') return s.authFailed(req, user);
  s.signIn(result, acl);
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
  let user: AclUser | null = null;
  for (; i < a.length; i++) {
    const opt = lower(a[i]);
    if (opt === 'auth' && i + 2 < a.length) {
      const result = ctx.topology.acl.authenticate(a[i + 1], a[i + 2]);
      if (typeof result === 'number') return s.authFailed(req, a[i + 1]);
      user = result;
      i += 2;
    } else if (opt === 'setname' && i + 1 < a.length) {
      newName = a[++i];
      if (!validName(newName)) return req.deliver(ERR_CLIENT_NAME);
    } else {
      return req.deliver(errorReply(`ERR Syntax error in HELLO option '${a[i].toString('latin1')}'`));
    }
  }
  if (user !== null) s.signIn(user, ctx.topology.acl);
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

// ---- ACL (keymux's users are in its config: only WHOAMI and CAT are answered) -----------------------------------

const aclWhoami: LocalHandler = (s, req) => req.deliver(bulkReply(s.user ?? 'default'));

/** ACL CAT: the categories; ACL CAT category: the commands (and subcommands) in it, from the command table. */
const aclCat: LocalHandler = (_s, req, ctx) => {
  const a = req.args;
  if (a.length > 3) {
    return req.deliver(errorReply("ERR unknown subcommand or wrong number of arguments for 'cat'. Try ACL HELP."));
  }
  if (a.length === 2) return req.deliver(arrayReply(ACL_CATEGORIES.map((c) => bulkReply(c))));
  const category = lower(a[2]);
  if (!ACL_CATEGORIES.includes(category)) {
    return req.deliver(errorReply(`ERR Unknown category '${a[2].subarray(0, 128).toString('latin1')}'`));
  }
  const table = ctx.topology.table;
  const cat = `@${category}`;
  const out: Buffer[] = [];
  for (const name of table.names()) {
    const spec = table.get(name) as CommandSpec;
    if (spec.aclCategories?.includes(cat) === true) out.push(bulkReply(spec.name));
    if (spec.subcommands !== null) {
      for (const sub of spec.subcommands.values())
        if (sub.aclCategories?.includes(cat) === true) out.push(bulkReply(sub.name));
    }
  }
  req.deliver(arrayReply(out));
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
  'acl|whoami': aclWhoami,
  'acl|cat': aclCat,
};
