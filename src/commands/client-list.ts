/**
 * CLIENT LIST, CLIENT INFO and CLIENT KILL, answered for keymux's own client connections: the connections an
 * operator wants to see or end are the ones to keymux (the shards' clients are keymux's pooled connections, which
 * these never show or touch). Lines are in Redis 7.2's CLIENT LIST format, field for field, with keymux's values:
 * `qbuf` the bytes of its commands not answered yet (as Redis's query buffer holds the command it runs), `omem`
 * the replies not yet taken, `multi-mem` a transaction's queued commands, `cmd` the last command; fields without a
 * keymux meaning (`qbuf-free`, `argv-mem`, `rbs`, `rbp`, `obl`) are 0 and `redir` is -1, as Redis shows them for an
 * idle client. With `workers`, LIST and KILL reach every
 * worker's clients through the primary (ClientDirectory; src/workers/), and the caller's own connection, which only
 * its worker has, is matched and ended here.
 */
import type { Request } from '../core/request.js';
import { ERR_SYNTAX, errorReply } from '../errors.js';
import { OK, integerReply, textReply } from '../resp/writer.js';

/** What CLIENT LIST shows of one connection (ClientSession.listing). */
export interface ClientListing {
  id: number;
  addr: string;
  laddr: string;
  fd: number;
  name: string;
  ageS: number;
  idleS: number;
  /** Redis's flag letters: P subscribed, x in MULTI, b blocked, c closing after its reply; N none. */
  flags: string;
  sub: number;
  psub: number;
  ssub: number;
  /** Commands queued in MULTI, or -1 outside one. */
  multi: number;
  qbuf: number;
  multiMem: number;
  oll: number;
  omem: number;
  /** 'r' while its commands are read, '' while reading is paused, 'w' added while its replies wait for the socket. */
  events: string;
  cmd: string;
  user: string;
  resp: number;
  libName: string;
  libVer: string;
}

/** A client connection as these commands see it. */
export interface ListedClient {
  readonly id: number;
  listing(): ClientListing;
  /** Ends the connection at once (CLIENT KILL of another client), logging `reason`. */
  kill(reason: string): void;
}

/** The caller, as these commands need it. */
export interface ClientListCaller {
  readonly id: number;
  listing(): ClientListing;
  stopReading(): void;
}

/** CLIENT KILL's filters (null: any); plain data, so a worker can hand it to the others (src/workers/). */
export interface KillFilter {
  id: number | null;
  type: string | null;
  user: string | null;
  addr: string | null;
  laddr: string | null;
  skipMe: boolean;
}

/**
 * Every client connection of the process (ProxyContext.clients): this one's, or with `workers` every worker's,
 * gathered through the primary, hence the callbacks.
 */
export interface ClientDirectory {
  /** Every connection's listing; `failed` (why) when the other workers could not be asked. */
  list(done: (listings: ClientListing[]) => void, failed: (why: string) => void): void;
  /** Kills the connections `filter` matches, but never `callerId`'s (its worker ends it after its reply). */
  kill(filter: KillFilter, callerId: number, done: (killed: number) => void, failed: (why: string) => void): void;
  /** CLIENT KILL USER: the user is defined (clients.users, or the default user). */
  userExists(name: string): boolean;
}

/** Kills what `filter` matches among `conns` (not `callerId`); returns how many. The local half of a directory. */
export function killMatching(conns: Iterable<ListedClient>, filter: KillFilter, callerId: number): number {
  const victims: ListedClient[] = [];
  for (const c of conns) {
    if (c.id === callerId) continue;
    if (filter.id !== null && c.id !== filter.id) continue;
    if (killMatches(filter, c.listing())) victims.push(c);
  }
  for (const c of victims) c.kill(`CLIENT KILL by client ${callerId}`);
  return victims.length;
}

function killMatches(filter: KillFilter, l: ClientListing): boolean {
  if (filter.id !== null && l.id !== filter.id) return false;
  if (filter.addr !== null && l.addr !== filter.addr) return false;
  if (filter.laddr !== null && l.laddr !== filter.laddr) return false;
  if (filter.user !== null && l.user !== filter.user) return false;
  if (filter.type !== null && typeOf(l) !== filter.type) return false;
  return true;
}

/** Every listing of `conns`. The local half of a directory. */
export function listingsOf(conns: Iterable<ListedClient>): ClientListing[] {
  const out: ClientListing[] = [];
  for (const c of conns) out.push(c.listing());
  return out;
}

/** One connection's line, without its newline. */
export function clientLine(c: ClientListing): string {
  const totMem = c.qbuf + c.multiMem + c.omem;
  return (
    `id=${c.id} addr=${c.addr} laddr=${c.laddr} fd=${c.fd} name=${c.name} age=${c.ageS} idle=${c.idleS} ` +
    `flags=${c.flags} db=0 sub=${c.sub} psub=${c.psub} ssub=${c.ssub} multi=${c.multi} qbuf=${c.qbuf} ` +
    `qbuf-free=0 argv-mem=0 multi-mem=${c.multiMem} rbs=0 rbp=0 obl=0 oll=${c.oll} omem=${c.omem} ` +
    `tot-mem=${totMem} events=${c.events} cmd=${c.cmd} user=${c.user} redir=-1 resp=${c.resp} ` +
    `lib-name=${c.libName} lib-ver=${c.libVer}`
  );
}

const TYPES = new Set(['normal', 'master', 'replica', 'slave', 'pubsub']);

/** Redis's client types: keymux's clients are `pubsub` while subscribed, else `normal` (never master or replica). */
function typeOf(c: ClientListing): string {
  return c.flags.includes('P') ? 'pubsub' : 'normal';
}

function wantedType(type: string): string {
  return type === 'slave' ? 'replica' : type;
}

function parseId(arg: Buffer): number | null {
  const text = arg.toString('latin1');
  if (!/^-?\d{1,19}$/.test(text)) return null;
  return Number(text);
}

const ERR_INVALID_ID = errorReply('ERR Invalid client ID');
const ERR_ID_NOT_POSITIVE = errorReply('ERR client-id should be greater than 0');
const ERR_NO_SUCH_CLIENT = errorReply('ERR No such client');

/** With workers: the primary did not answer (refused rather than answered for this worker's clients alone). */
function unreachable(sub: string, why: string): Buffer {
  return errorReply(`ERR keymux: CLIENT ${sub} needs every worker's clients, and ${why}`);
}

function unknownType(type: Buffer): Buffer {
  return errorReply(`ERR Unknown client type '${type.toString('latin1')}'`);
}

/** CLIENT INFO: the caller's own line. */
export function clientInfo(caller: ClientListCaller, req: Request, protocol: number): void {
  req.deliver(textReply(`${clientLine(caller.listing())}\n`, protocol));
}

/** CLIENT LIST [TYPE normal|master|replica|pubsub] | [ID id ...]. */
export function clientList(req: Request, dir: ClientDirectory, protocol: number): void {
  const args = req.args;
  let type: string | null = null;
  let ids: Set<number> | null = null;
  if (args.length === 4 && args[2].toString('latin1').toLowerCase() === 'type') {
    type = args[3].toString('latin1').toLowerCase();
    if (!TYPES.has(type)) return req.deliver(unknownType(args[3]));
    type = wantedType(type);
  } else if (args.length >= 4 && args[2].toString('latin1').toLowerCase() === 'id') {
    ids = new Set();
    for (let i = 3; i < args.length; i++) {
      const id = parseId(args[i]);
      if (id === null || id <= 0) return req.deliver(ERR_INVALID_ID);
      ids.add(id);
    }
  } else if (args.length !== 2) {
    return req.deliver(ERR_SYNTAX);
  }
  dir.list(
    (listings) => {
      listings.sort((a, b) => a.id - b.id);
      const lines: string[] = [];
      for (const l of listings) {
        if (ids !== null && !ids.has(l.id)) continue;
        if (type !== null && typeOf(l) !== type) continue;
        lines.push(`${clientLine(l)}\n`);
      }
      req.deliver(textReply(lines.join(''), protocol));
    },
    (why) => req.deliver(unreachable('LIST', why)),
  );
}

/**
 * CLIENT KILL ip:port (the old form: +OK, or an error when no client has that address) or CLIENT KILL with
 * filters ID, TYPE, USER, ADDR, LADDR, SKIPME (an integer: how many were killed). Another client's connection is
 * closed at once; the caller's own (SKIPME no) after this reply, as Redis does.
 */
export function clientKill(caller: ClientListCaller, req: Request, dir: ClientDirectory): void {
  const args = req.args;
  const old = args.length === 3;
  const filter: KillFilter = { id: null, type: null, user: null, addr: null, laddr: null, skipMe: !old };
  if (old) {
    filter.addr = args[2].toString('latin1');
  } else {
    if (args.length % 2 !== 0) return req.deliver(ERR_SYNTAX);
    for (let i = 2; i < args.length; i += 2) {
      const option = args[i].toString('latin1').toLowerCase();
      const value = args[i + 1];
      const text = value.toString('latin1');
      if (option === 'id') {
        const id = parseId(value);
        if (id === null || id <= 0) return req.deliver(ERR_ID_NOT_POSITIVE);
        filter.id = id;
      } else if (option === 'type') {
        const type = text.toLowerCase();
        if (!TYPES.has(type)) return req.deliver(unknownType(value));
        filter.type = wantedType(type);
      } else if (option === 'user') {
        if (!dir.userExists(text)) return req.deliver(errorReply(`ERR No such user '${text}'`));
        filter.user = text;
      } else if (option === 'addr') {
        filter.addr = text;
      } else if (option === 'laddr') {
        filter.laddr = text;
      } else if (option === 'skipme') {
        const yes = text.toLowerCase();
        if (yes !== 'yes' && yes !== 'no') return req.deliver(ERR_SYNTAX);
        filter.skipMe = yes === 'yes';
      } else {
        return req.deliver(ERR_SYNTAX);
      }
    }
  }
  // The caller is in this process: whether it goes too is known now, and it stops reading at once (nothing it
  // pipelined after this runs); it is ended after this reply, the others at once.
  const self = !filter.skipMe && killMatches(filter, caller.listing());
  if (self) {
    req.closeAfter = true;
    caller.stopReading();
  }
  dir.kill(
    filter,
    caller.id,
    (others) => {
      const killed = others + (self ? 1 : 0);
      if (old) req.deliver(killed === 0 ? ERR_NO_SUCH_CLIENT : OK);
      else req.deliver(integerReply(killed));
    },
    (why) => req.deliver(unreachable('KILL', why)),
  );
}
