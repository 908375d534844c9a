/**
 * Commands keymux answers itself, without a backend: PING, ECHO, QUIT, RESET, SELECT 0, AUTH, HELLO [2|3], CLIENT
 * SETNAME/GETNAME/SETINFO/ID, COMMAND (COUNT, INFO, DOCS, LIST; GETKEYS and
 * GETKEYSANDFLAGS are a shard's to answer: commands/table.ts) and ACL WHOAMI / CAT. One handler per
 * command name in a table (data, not a switch); each answers synchronously with req.deliver(), except AUTH and
 * HELLO ... AUTH, whose password check the session may hold (security/auth-guard.ts). Authentication asks the topology's
 * AccessControl (security/acl.ts: `clients.password` for the default user, `clients.users` for AUTH user pass,
 * passwords compared as SHA-256 digests in constant time).
 *
 * Replies are in the client's protocol, byte for byte as Redis 7 writes them: HELLO's reply is a map in RESP3, a
 * flat array in RESP2; a null is `_` in RESP3 and `$-1` in RESP2; COMMAND's flag lists are sets in RESP3 and
 * COMMAND DOCS a map. HELLO 3 switches the client to RESP3, HELLO 2 and RESET back (session.switchProtocol).
 */
import type { Request } from '../core/request.js';
import { ACL_CATEGORIES, AUTH_NONE_CONFIGURED, type AccessControl, type AclUser } from '../security/acl.js';
import type { ProxyContext } from '../server/context.js';
import type { CommandSpec } from './spec.js';
import type { CommandTable } from './table.js';
import { globMatch } from '../pubsub/glob.js';
import {
  ERR_AUTH_NOT_CONFIGURED,
  ERR_NOPROTO,
  ERR_SELECT_DB,
  ERR_SELECT_INVALID,
  ERR_SYNTAX,
  errorReply,
  wrongArity,
} from '../errors.js';
import { clientInfo, clientKill, clientList, type ClientListing } from './client-list.js';
import { EMPTY_ARRAY, NIL_BULK, OK, PONG, arrayReply, bulkReply, integerReply, simpleReply } from '../resp/writer.js';

/** The session surface local commands use. */
export interface LocalSession {
  readonly id: number;
  /** CLIENT INFO's and CLIENT KILL's view of this connection. */
  listing(): ClientListing;
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
  /** AUTH or HELLO AUTH succeeded: the connection is `user`'s from now on. */
  signIn(user: AclUser, acl: AccessControl): void;
  /**
   * AUTH or HELLO AUTH: runs `check` (the password check, which answers `req`) once the client's address has waited
   * what the AuthGuard holds it for, perhaps at once; inside EXEC at once, EXEC's reply waiting instead.
   */
  checkAuthWhenDue(req: Request, check: () => void): void;
  /** AUTH or HELLO AUTH failed: answers `req` with WRONGPASS, perhaps closing the connection (AuthGuard). */
  authFailed(req: Request, user: Buffer | null): void;
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
  // RESET turns CLIENT REPLY back on, for its own reply too after OFF; after SKIP its reply is the one skipped (the
  // session already took the skip: the mode is ON again and the request silent), as Redis does.
  if (s.replyMode === REPLY_OFF) req.silent = false;
  s.reset();
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

/**
 * A 64-bit integer argument as Redis's string2ll reads it (an optional '-', no '+', no leading zeros, no spaces,
 * within a signed 64-bit range: "00", "-0", "+1" are not integers); null when it is not one.
 */
function longLongArg(b: Buffer): bigint | null {
  const text = b.toString('latin1');
  if (text.length > 20 || !/^(0|-?[1-9][0-9]*)$/.test(text)) return null;
  const v = BigInt(text);
  return v >= LLONG_MIN && v <= LLONG_MAX ? v : null;
}
const LLONG_MIN = -(BigInt(2) ** BigInt(63));
const LLONG_MAX = BigInt(2) ** BigInt(63) - BigInt(1);
const INT_MIN = -(BigInt(2) ** BigInt(31));
const INT_MAX = BigInt(2) ** BigInt(31) - BigInt(1);
const ERR_SELECT_INT_RANGE = errorReply('ERR value is out of range, value must between -2147483648 and 2147483647');

/** SELECT: the index read as Redis reads it (a 64-bit integer, then an int's range); only 0 exists here. */
const select: LocalHandler = (_s, req) => {
  const index = longLongArg(req.args[1]);
  if (index === null) return req.deliver(ERR_SELECT_INVALID);
  if (index < INT_MIN || index > INT_MAX) return req.deliver(ERR_SELECT_INT_RANGE);
  req.deliver(index === BigInt(0) ? OK : ERR_SELECT_DB);
};

const auth: LocalHandler = (s, req, ctx) => {
  const a = req.args;
  if (a.length > 3) return req.deliver(ERR_SYNTAX);
  s.checkAuthWhenDue(req, () => {
    const user = a.length === 3 ? a[1] : null;
    const acl = ctx.topology.acl;
    const result = acl.authenticate(user, a[a.length - 1]);
    if (result === AUTH_NONE_CONFIGURED) return req.deliver(ERR_AUTH_NOT_CONFIGURED);
    if (typeof result === 'number') return s.authFailed(req, user);
    s.signIn(result, acl);
    req.deliver(OK);
  });
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
    const ver = longLongArg(a[1]);
    if (ver === null) return req.deliver(ERR_HELLO_PROTOCOL);
    if (ver !== BigInt(2) && ver !== BigInt(3)) return req.deliver(ERR_NOPROTO);
    protocol = Number(ver);
    // RESP3 replies come from the backends themselves (HELLO 3 on keymux's RESP3 connections): Redis 6 or later.
    const major = backendMajor(ctx);
    if (protocol === 3 && major !== null && major < 6) return req.deliver(noResp3Backends(ctx.backendVersion));
    i = 2;
  }
  // Positions, not views: the arguments may get bytes of their own while an AUTH waits (checkAuthWhenDue).
  let nameAt = -1;
  /** The AUTH option's user name and password (the last one given, as in Redis), checked after the options. */
  let authAt = -1;
  for (; i < a.length; i++) {
    const opt = lower(a[i]);
    if (opt === 'auth' && i + 2 < a.length) {
      authAt = i + 1;
      i += 2;
    } else if (opt === 'setname' && i + 1 < a.length) {
      nameAt = ++i;
      if (!validName(a[nameAt])) return req.deliver(ERR_CLIENT_NAME);
    } else {
      return req.deliver(errorReply(`ERR Syntax error in HELLO option '${a[i].toString('latin1')}'`));
    }
  }
  const answer = (): void => {
    if (!s.authenticated) return req.deliver(ERR_HELLO_NOAUTH);
    if (nameAt >= 0) s.name = a[nameAt].length === 0 ? null : Buffer.from(a[nameAt]);
    if (protocol !== 0) s.switchProtocol(protocol);
    req.deliver(helloReply(s, ctx));
  };
  if (authAt < 0) return answer();
  s.checkAuthWhenDue(req, () => {
    const acl = ctx.topology.acl;
    const user = acl.authenticate(a[authAt], a[authAt + 1]);
    if (typeof user === 'number') return s.authFailed(req, a[authAt]);
    s.signIn(user, acl);
    answer();
  });
};

const ERR_HELLO_PROTOCOL = errorReply('ERR Protocol version is not an integer or out of range');
// Redis 7.0's own words (its "HELLO AUTH <user> <pass>" has no <proto>).
const ERR_HELLO_NOAUTH = errorReply(
  'NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> ' +
    'option can be used to authenticate the client and select the RESP protocol version at the same time',
);

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

const clientListing: LocalHandler = (s, req, ctx) => clientList(req, ctx.clients, s.protocol);
const clientOwnInfo: LocalHandler = (s, req) => clientInfo(s, req, s.protocol);
const clientKilling: LocalHandler = (s, req, ctx) => clientKill(s, req, ctx.clients);

const clientSetinfo: LocalHandler = (s, req) => {
  const attr = lower(req.args[2]);
  const value = Buffer.from(req.args[3]);
  // As Redis 7.2: a space or newline in them would break CLIENT LIST's `field=value` line.
  if ((attr === 'lib-name' || attr === 'lib-ver') && !validName(value))
    return req.deliver(errorReply(`ERR ${attr} cannot contain spaces, newlines or special characters.`));
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

/**
 * COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]: every command and subcommand
 * ("container|sub") of the table, as Redis 7 lists them. A pattern matches full names without regard to case
 * (Redis's stringmatchlen nocase; the names are lowercase, so the pattern is lowercased); an unknown category and
 * any module give an empty list (keymux loads no modules).
 */
const commandList: LocalHandler = (_s, req, ctx) => {
  const a = req.args;
  if (a.length !== 2 && (a.length !== 5 || lower(a[2]) !== 'filterby')) return req.deliver(ERR_SYNTAX);
  let keep: (spec: CommandSpec) => boolean = () => true;
  if (a.length === 5) {
    const kind = lower(a[3]);
    if (kind === 'module') keep = () => false;
    else if (kind === 'aclcat') {
      const cat = `@${lower(a[4])}`;
      keep = (spec) => spec.aclCategories?.includes(cat) === true;
    } else if (kind === 'pattern') {
      const pattern = Buffer.from(lower(a[4]), 'latin1');
      keep = (spec) => globMatch(pattern, Buffer.from(spec.name, 'latin1'));
    } else return req.deliver(ERR_SYNTAX);
  }
  const table = ctx.topology.table;
  const out: Buffer[] = [];
  for (const name of table.names()) {
    if (name.includes('|')) continue; // listed under its container below
    const spec = table.get(name) as CommandSpec;
    if (keep(spec)) out.push(bulkReply(spec.name));
    if (spec.subcommands !== null)
      for (const sub of spec.subcommands.values()) if (keep(sub)) out.push(bulkReply(sub.name));
  }
  req.deliver(arrayReply(out));
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
  'client|list': clientListing,
  'client|info': clientOwnInfo,
  'client|kill': clientKilling,
  command,
  'command|count': commandCount,
  'command|info': commandInfo,
  'command|docs': commandDocs,
  'command|list': commandList,
  'acl|whoami': aclWhoami,
  'acl|cat': aclCat,
};
