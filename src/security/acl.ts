/**
 * Users and their permissions (Redis ACL, the subset keymux enforces): the rule parser, each user compiled once
 * per config and command table, and the permission check a session runs before a command is forwarded, queued
 * or answered. It owns
 * - parseAclRules: "+@all -@dangerous ~app:* &news:*" -> a list of operations, with Redis's own error wording
 *   for what Redis rejects and a clear keymux error for what keymux does not support (selectors, first-arg rules);
 * - AclUser: one user compiled against a command table: a Set of allowed command names ("get", "config|get"), a
 *   flag for "all commands", key patterns (with %R/%W), channel patterns, passwords as SHA-256 digests;
 * - AccessControl: every user of one config (the default user included), authentication (constant time), and
 *   `restricted`, false when no user has a limit: then sessions skip the check entirely (the default costs one
 *   boolean test per command);
 * - checkPermission: command, then keys (by the command's key specs, as Redis), then channels; the NOPERM
 *   replies are worded exactly as Redis 7.0 words them; recheckAtExec, the same check again at EXEC for a command
 *   queued before a reload changed the rules, with Redis's words for that.
 * Invariants: a compiled user is immutable; a new config or a new command table compiles new users (sessions
 * find theirs again by name, see ClientSession); nothing here allocates on an allowed command of an
 * unrestricted user.
 */
import crypto from 'node:crypto';
import type { CommandSpec } from '../commands/spec.js';
import type { CommandTable } from '../commands/table.js';
import { KEYS_ERROR_OPTION_REFUSED, compileKeyFinder, findKeyIndexes } from '../commands/keys.js';
import { BUILTIN_COMMANDS } from '../commands/builtin-table.js';
import { globMatch } from '../pubsub/glob.js';
import { errorReply } from '../errors.js';

/** The ACL categories of Redis 7.0 (ACL CAT), in its order. */
export const ACL_CATEGORIES: readonly string[] = Object.freeze([
  'keyspace',
  'read',
  'write',
  'set',
  'sortedset',
  'list',
  'hash',
  'string',
  'bitmap',
  'hyperloglog',
  'geo',
  'stream',
  'pubsub',
  'admin',
  'fast',
  'slow',
  'blocking',
  'dangerous',
  'connection',
  'transaction',
  'scripting',
]);

/** Permission bits of a key pattern (%R~, %W~, ~ = both), and what a key spec needs. */
export const KEY_READ = 1;
export const KEY_WRITE = 2;

export type AclOp =
  | { readonly op: 'on' | 'off' | 'nopass' | 'resetpass' | 'reset' }
  | { readonly op: 'allcommands' | 'nocommands' }
  | { readonly op: 'allkeys' | 'resetkeys' | 'allchannels' | 'resetchannels' }
  | { readonly op: 'command'; readonly allow: boolean; readonly name: string }
  | { readonly op: 'category'; readonly allow: boolean; readonly category: string }
  | { readonly op: 'key'; readonly pattern: string; readonly perms: number }
  | { readonly op: 'channel'; readonly pattern: string }
  | { readonly op: 'password'; readonly add: boolean; readonly digest: string };

/** Names of the built-in table ("get", "config|get"), and the containers among them. */
let knownNames: Set<string> | null = null;
let containers: Set<string> | null = null;

function known(): { names: Set<string>; containers: Set<string> } {
  if (knownNames === null || containers === null) {
    knownNames = new Set(BUILTIN_COMMANDS.map((r) => r[0]));
    knownNames.add('client|setinfo'); // EXTRA_ROWS (Redis 7.2), which keymux answers itself
    containers = new Set(BUILTIN_COMMANDS.filter((r) => r[0].includes('|')).map((r) => r[0].split('|')[0]));
  }
  return { names: knownNames, containers };
}

function sha256Hex(text: string): string {
  return crypto.createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * Parses an ACL rule string (space-separated, as ACL SETUSER takes them). Errors are worded as Redis words them
 * ("Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"), or name what keymux does
 * not support.
 */
export function parseAclRules(text: string): { ops: AclOp[]; errors: string[] } {
  const ops: AclOp[] = [];
  const errors: string[] = [];
  const { names, containers: cont } = known();
  const fail = (tok: string, why: string): void => {
    errors.push(`Error in ACL SETUSER modifier '${tok}': ${why}`);
  };
  let allKeys = false;
  let allChannels = false;
  for (const tok of text.split(/\s+/).filter((t) => t !== '')) {
    const lower = tok.toLowerCase();
    switch (lower) {
      case 'on':
      case 'off':
      case 'nopass':
      case 'resetpass':
        ops.push({ op: lower });
        continue;
      case 'reset':
        allKeys = false;
        allChannels = false;
        ops.push({ op: 'reset' });
        continue;
      case 'allcommands':
        ops.push({ op: 'allcommands' });
        continue;
      case 'nocommands':
        ops.push({ op: 'nocommands' });
        continue;
      case 'allkeys':
        allKeys = true;
        ops.push({ op: 'allkeys' });
        continue;
      case 'resetkeys':
        allKeys = false;
        ops.push({ op: 'resetkeys' });
        continue;
      case 'allchannels':
        allChannels = true;
        ops.push({ op: 'allchannels' });
        continue;
      case 'resetchannels':
        allChannels = false;
        ops.push({ op: 'resetchannels' });
        continue;
      case 'clearselectors':
        continue; // keymux has no selectors: nothing to clear
    }
    const c = tok[0];
    if (c === '>' || c === '<') {
      ops.push({ op: 'password', add: c === '>', digest: sha256Hex(tok.slice(1)) });
    } else if (c === '#' || c === '!') {
      const hash = tok.slice(1);
      if (!/^[0-9a-f]{64}$/.test(hash)) {
        fail(tok, 'The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters');
      } else ops.push({ op: 'password', add: c === '#', digest: hash });
    } else if (c === '~' || c === '%') {
      let perms = KEY_READ | KEY_WRITE;
      let pattern: string;
      if (c === '%') {
        const tilde = tok.indexOf('~');
        const flags = tilde < 0 ? '' : tok.slice(1, tilde).toUpperCase();
        if (tilde < 0 || flags === '' || !/^[RW]+$/.test(flags)) {
          fail(tok, 'Syntax error');
          continue;
        }
        perms = (flags.includes('R') ? KEY_READ : 0) | (flags.includes('W') ? KEY_WRITE : 0);
        pattern = tok.slice(tilde + 1);
      } else pattern = tok.slice(1);
      if (allKeys) {
        fail(
          tok,
          "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. " +
            "Try 'resetkeys' to start with an empty list of patterns",
        );
        continue;
      }
      if (pattern === '*' && perms === (KEY_READ | KEY_WRITE)) {
        allKeys = true;
        ops.push({ op: 'allkeys' });
      } else ops.push({ op: 'key', pattern, perms });
    } else if (c === '&') {
      const pattern = tok.slice(1);
      if (allChannels) {
        fail(
          tok,
          "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any " +
            "effect. Try 'resetchannels' to start with an empty list of channels",
        );
        continue;
      }
      if (pattern === '*') {
        allChannels = true;
        ops.push({ op: 'allchannels' });
      } else ops.push({ op: 'channel', pattern });
    } else if (c === '+' || c === '-') {
      const allow = c === '+';
      const what = lower.slice(1);
      if (what.startsWith('@')) {
        const category = what.slice(1);
        if (category === 'all') ops.push({ op: allow ? 'allcommands' : 'nocommands' });
        else if (ACL_CATEGORIES.includes(category)) ops.push({ op: 'category', allow, category });
        else fail(tok, 'Unknown command or category name in ACL');
      } else if (names.has(what)) {
        ops.push({ op: 'command', allow, name: what });
      } else {
        const bar = what.indexOf('|');
        if (bar > 0 && names.has(what.slice(0, bar)) && !cont.has(what.slice(0, bar))) {
          fail(tok, "keymux does not support allowing a command's first argument (e.g. +select|0)");
        } else fail(tok, 'Unknown command or category name in ACL');
      }
    } else if (c === '(') {
      fail(tok, 'keymux does not support selectors');
    } else {
      fail(tok, 'Syntax error');
    }
  }
  return { ops, errors };
}

/** What the config says about one user (clients.users[], or the default user of clients.password). */
export interface UserDefinition {
  readonly name: string;
  readonly passwords: readonly string[];
  readonly nopass: boolean;
  /** null: every command, key and channel (what a user without rules has always had). */
  readonly rules: string | null;
  readonly operator: boolean;
}

interface KeyPattern {
  readonly pattern: Buffer;
  readonly perms: number;
}

/** One user compiled against one command table. Immutable. */
export class AclUser {
  readonly name: string;
  readonly enabled: boolean;
  readonly nopass: boolean;
  /** SHA-256 digests (32 bytes) of the passwords. */
  readonly digests: readonly Buffer[];
  /** May use the operator forms the config grants (commands.config_broadcast). */
  readonly operator: boolean;
  readonly allCommands: boolean;
  /** Allowed commands and subcommands by full name ("get", "config|get"); unused when allCommands. */
  readonly commands: ReadonlySet<string>;
  readonly allKeys: boolean;
  readonly keyPatterns: readonly KeyPattern[];
  /** Some pattern is read-only or write-only: keys are checked with the permission each key spec needs. */
  readonly keyPermsMatter: boolean;
  readonly allChannels: boolean;
  readonly channelPatterns: readonly Buffer[];
  /** Every command, key and channel: the session skips the check. */
  readonly unrestricted: boolean;

  constructor(def: UserDefinition, table: CommandTable) {
    let enabled = true;
    let nopass = def.nopass;
    const digests = new Set(def.passwords.map(sha256Hex));
    let allCommands = false;
    const commands = new Set<string>();
    let allKeys = false;
    let keys: KeyPattern[] = [];
    let allChannels = false;
    let channels: Buffer[] = [];
    const ops = def.rules === null ? ALL : parseAclRules(def.rules).ops;
    const everySpec = def.rules === null ? [] : specsOf(table);
    for (const o of ops) {
      switch (o.op) {
        case 'on':
          enabled = true;
          break;
        case 'off':
          enabled = false;
          break;
        case 'nopass':
          nopass = true;
          digests.clear();
          break;
        case 'resetpass':
          nopass = false;
          digests.clear();
          break;
        case 'password':
          if (o.add) {
            digests.add(o.digest);
            nopass = false;
          } else digests.delete(o.digest);
          break;
        case 'reset':
          enabled = false;
          nopass = false;
          digests.clear();
          allCommands = false;
          commands.clear();
          allKeys = false;
          keys = [];
          allChannels = false;
          channels = [];
          break;
        case 'allcommands':
          allCommands = true;
          // The names matter only if a later rule takes some away; a user without rules has none.
          if (def.rules !== null) for (const s of everySpec) commands.add(s.name);
          break;
        case 'nocommands':
          allCommands = false;
          commands.clear();
          break;
        case 'command': {
          const spec = table.get(o.name);
          const names = spec === undefined ? [o.name] : namesUnder(spec);
          for (const n of names) {
            if (o.allow) commands.add(n);
            else commands.delete(n);
          }
          if (!o.allow) allCommands = false;
          break;
        }
        case 'category': {
          const cat = `@${o.category}`;
          for (const s of everySpec) {
            if (s.aclCategories?.includes(cat) !== true) continue;
            if (o.allow) commands.add(s.name);
            else commands.delete(s.name);
          }
          if (!o.allow) allCommands = false;
          break;
        }
        case 'allkeys':
          allKeys = true;
          keys = [{ pattern: Buffer.from('*'), perms: KEY_READ | KEY_WRITE }];
          break;
        case 'resetkeys':
          allKeys = false;
          keys = [];
          break;
        case 'key':
          keys.push({ pattern: Buffer.from(o.pattern, 'utf8'), perms: o.perms });
          break;
        case 'allchannels':
          allChannels = true;
          channels = [Buffer.from('*')];
          break;
        case 'resetchannels':
          allChannels = false;
          channels = [];
          break;
        case 'channel':
          channels.push(Buffer.from(o.pattern, 'utf8'));
          break;
      }
    }
    this.name = def.name;
    this.enabled = enabled;
    this.nopass = nopass;
    this.digests = [...digests].map((d) => Buffer.from(d, 'hex'));
    this.operator = def.operator;
    this.allCommands = allCommands;
    this.commands = commands;
    this.allKeys = allKeys;
    this.keyPatterns = keys;
    this.keyPermsMatter = keys.some((k) => k.perms !== (KEY_READ | KEY_WRITE));
    this.allChannels = allChannels;
    this.channelPatterns = channels;
    this.unrestricted = allCommands && allKeys && allChannels;
  }

  /** True when `password` is one of the user's (or the user has nopass); constant time per password. */
  accepts(password: Buffer): boolean {
    if (this.nopass) return true;
    const digest = crypto.createHash('sha256').update(password).digest();
    let ok = false;
    for (const d of this.digests) if (crypto.timingSafeEqual(d, digest)) ok = true;
    return ok;
  }
}

/** A user without rules: every command, key and channel. */
const ALL: readonly AclOp[] = [{ op: 'allcommands' }, { op: 'allkeys' }, { op: 'allchannels' }];

/** Every spec of a table, subcommands included. */
const specCache = new WeakMap<CommandTable, CommandSpec[]>();

function specsOf(table: CommandTable): CommandSpec[] {
  let all = specCache.get(table);
  if (all === undefined) {
    all = [];
    for (const n of table.names()) {
      const spec = table.get(n) as CommandSpec;
      all.push(spec);
      if (spec.subcommands !== null) all.push(...spec.subcommands.values());
    }
    specCache.set(table, all);
  }
  return all;
}

/** A command's name and, for a container, every subcommand's (what +config allows). */
function namesUnder(spec: CommandSpec): string[] {
  const names = [spec.name];
  if (spec.subcommands !== null) for (const s of spec.subcommands.values()) names.push(s.name);
  return names;
}

/** What authentication found: a user, or why not. */
export const AUTH_WRONG = 0;
export const AUTH_NONE_CONFIGURED = 1;

/** Every user of one config compiled against one command table. */
export class AccessControl {
  readonly users: ReadonlyMap<string, AclUser>;
  /** Some user has a limit: sessions check permissions. */
  readonly restricted: boolean;
  /** clients.users is not empty: operator forms need a user marked operator. */
  readonly hasUsers: boolean;
  /** Who a new connection is before any AUTH: the default user when it needs no password, else null. */
  readonly connectUser: AclUser | null;
  private readonly defaultUser: AclUser;

  constructor(defs: readonly UserDefinition[], clientPassword: string | null, table: CommandTable) {
    const users = new Map<string, AclUser>();
    for (const d of defs) users.set(d.name, new AclUser(d, table));
    let def = users.get('default');
    if (def === undefined) {
      const open = clientPassword === null && defs.length === 0;
      def = new AclUser(
        {
          name: 'default',
          passwords: clientPassword === null ? [] : [clientPassword],
          nopass: open,
          rules: null,
          operator: defs.length === 0,
        },
        table,
      );
      users.set('default', def);
    }
    this.users = users;
    this.defaultUser = def;
    this.hasUsers = defs.length > 0;
    this.connectUser = def.nopass && def.enabled ? def : null;
    this.restricted = [...users.values()].some((u) => !u.unrestricted);
  }

  /** AUTH [user] password: the user, AUTH_WRONG, or AUTH_NONE_CONFIGURED (AUTH pass with a nopass default user). */
  authenticate(name: Buffer | null, password: Buffer): AclUser | number {
    if (name === null) {
      if (this.defaultUser.nopass) return AUTH_NONE_CONFIGURED;
      return this.defaultUser.enabled && this.defaultUser.accepts(password) ? this.defaultUser : AUTH_WRONG;
    }
    const user = this.users.get(name.toString('utf8'));
    if (user === undefined || !user.enabled) {
      sha256Hex(password.toString('latin1')); // the same work as for a known user
      return AUTH_WRONG;
    }
    return user.accepts(password) ? user : AUTH_WRONG;
  }
}

// ---- the check ----------------------------------------------------------------------------------------------

const ERR_NOPERM_KEY = errorReply('NOPERM this user has no permissions to access one of the keys used as arguments');
const ERR_NOPERM_CHANNEL = errorReply(
  'NOPERM this user has no permissions to access one of the channels used as arguments',
);
const nopermCommand = new Map<string, Buffer>();

/** -NOPERM for a command, as Redis 7.0 words it (with the full name, "config|get"). */
export function noPermCommand(name: string): Buffer {
  let reply = nopermCommand.get(name);
  if (reply === undefined) {
    reply = errorReply(`NOPERM this user has no permissions to run the '${name}' command`);
    if (nopermCommand.size < 1024) nopermCommand.set(name, reply);
  }
  return reply;
}

const ACL_CHANGED =
  'NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. ' +
  'This command is no longer allowed for the following reason: ';
const ERR_CHANGED_COMMAND = errorReply(`${ACL_CHANGED}no permission to execute the command or subcommand`);
const ERR_CHANGED_KEY = errorReply(`${ACL_CHANGED}no permission to touch the specified keys`);
const ERR_CHANGED_CHANNEL = errorReply(`${ACL_CHANGED}no permission to access one of the channels used as arguments`);

const CHANNELS_SUBSCRIBE = 1;
const CHANNELS_PATTERN = 2;
const CHANNELS_PUBLISH = 3;
/** Commands whose channels Redis checks (getChannelsFromCommand), and how. */
const CHANNEL_COMMANDS: ReadonlyMap<string, number> = new Map([
  ['subscribe', CHANNELS_SUBSCRIBE],
  ['ssubscribe', CHANNELS_SUBSCRIBE],
  ['psubscribe', CHANNELS_PATTERN],
  ['publish', CHANNELS_PUBLISH],
  ['spublish', CHANNELS_PUBLISH],
]);

/**
 * The permission check of one command (spec resolved to its subcommand) for a restricted user: null when
 * allowed, else the NOPERM reply. `scratch` receives key indexes (the session's reused array).
 */
export function checkPermission(user: AclUser, spec: CommandSpec, args: Buffer[], scratch: number[]): Buffer | null {
  if (!user.allCommands && !user.commands.has(spec.name) && !spec.flags.includes('no_auth')) {
    return noPermCommand(spec.name);
  }
  if (!user.allKeys && !keysAllowed(user, spec, args, scratch)) return ERR_NOPERM_KEY;
  if (!user.allChannels) {
    const kind = CHANNEL_COMMANDS.get(spec.name);
    if (kind !== undefined && !channelsAllowed(user, kind, args)) return ERR_NOPERM_CHANNEL;
  }
  return null;
}

function keyMatches(user: AclUser, key: Buffer, need: number): boolean {
  for (const p of user.keyPatterns) if ((p.perms & need) === need && globMatch(p.pattern, key)) return true;
  return false;
}

function keysAllowed(user: AclUser, spec: CommandSpec, args: Buffer[], idx: number[]): boolean {
  if (CHANNEL_COMMANDS.has(spec.name)) return true; // their "keys" are channels (not_key in Redis)
  // SORT with a `*` BY/GET pattern reads keys no argument names (keymux runs it: keyspace/sort.ts); as Redis
  // (sort.c), only a user with access to all keys may use one.
  if (
    (spec.name === 'sort' || spec.name === 'sort_ro') &&
    findKeyIndexes(spec, args, idx) === KEYS_ERROR_OPTION_REFUSED
  )
    return false;
  if (!user.keyPermsMatter) {
    const n = findKeyIndexes(spec, args, idx);
    for (let i = 0; i < n; i++) if (!keyMatches(user, args[idx[i]], 0)) return false;
    return true;
  }
  for (const part of keyParts(spec)) {
    const n = findKeyIndexes(part.spec, args, idx);
    const need = part.variable ? variableNeed(spec.name, args, part.need) : part.need;
    for (let i = 0; i < n; i++) if (!keyMatches(user, args[idx[i]], need)) return false;
  }
  return true;
}

function argIs(arg: Buffer, lower: string): boolean {
  return arg.length === lower.length && arg.toString('latin1').toLowerCase() === lower;
}

/**
 * The permission a key spec flagged variable_flags needs for this invocation, as Redis's setGetKeys and
 * bitfieldGetKeys decide it: SET writes only (reads too with GET); BITFIELD with only GET (and OVERFLOW) reads.
 */
function variableNeed(name: string, args: Buffer[], declared: number): number {
  if (name === 'set') {
    for (let i = 3; i < args.length; i++) if (argIs(args[i], 'get')) return KEY_READ | KEY_WRITE;
    return KEY_WRITE;
  }
  if (name === 'bitfield') {
    for (let i = 2; i < args.length; i++) {
      const left = args.length - i - 1;
      if (argIs(args[i], 'get') && left >= 2) i += 2;
      else if (argIs(args[i], 'overflow') && left >= 1) i += 1;
      else return KEY_READ | KEY_WRITE;
    }
    return KEY_READ;
  }
  return declared;
}

/** One key spec of a command as a spec of its own, with the permission its keys need (Redis ACLSelectorCheckKey). */
interface KeyPart {
  readonly spec: CommandSpec;
  readonly need: number;
  /** variable_flags: the invocation decides (variableNeed). */
  readonly variable: boolean;
}

const keyPartCache = new WeakMap<CommandSpec, KeyPart[]>();

function needOf(flags: readonly string[]): number {
  let need = 0;
  if (flags.includes('access')) need |= KEY_READ;
  if (flags.includes('insert') || flags.includes('delete') || flags.includes('update')) need |= KEY_WRITE;
  return need;
}

function keyParts(spec: CommandSpec): KeyPart[] {
  let parts = keyPartCache.get(spec);
  if (parts !== undefined) return parts;
  parts = [];
  for (const ks of spec.keySpecs) {
    if (ks.flags.includes('not_key') || ks.flags.includes('incomplete')) continue;
    if (ks.begin.kind === 'unknown' || ks.find.kind === 'unknown') continue;
    parts.push({
      spec: { ...spec, keySpecs: [ks], options: null, keyFinder: compileKeyFinder([ks], null) },
      need: needOf(ks.flags),
      variable: ks.flags.includes('variable_flags'),
    });
  }
  const options = spec.options;
  if (
    options !== null &&
    options !== undefined &&
    options.rules.some((r) => r.action === 'key' || r.action === 'last-key')
  ) {
    // Keys named by an option (SORT ... STORE dst) are written.
    parts.push({
      spec: { ...spec, keySpecs: [], keyFinder: compileKeyFinder([], options) },
      need: KEY_WRITE,
      variable: false,
    });
  }
  keyPartCache.set(spec, parts);
  return parts;
}

function channelsAllowed(user: AclUser, kind: number, args: Buffer[]): boolean {
  const last = kind === CHANNELS_PUBLISH ? Math.min(2, args.length) : args.length;
  for (let i = 1; i < last; i++) {
    const ch = args[i];
    let ok = false;
    for (const p of user.channelPatterns) {
      if (kind === CHANNELS_PATTERN ? p.equals(ch) : globMatch(p, ch)) {
        ok = true;
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

/**
 * May `user` hold this subscription (kind 0 channel, 1 pattern, 2 shard channel; pubsub/frames.ts)? Asked after
 * a reload for subscriptions made under older rules.
 */
export function subscriptionAllowed(user: AclUser, kind: number, name: Buffer): boolean {
  if (user.allChannels) return true;
  for (const p of user.channelPatterns) if (kind === 1 ? p.equals(name) : globMatch(p, name)) return true;
  return false;
}

/**
 * A command queued in MULTI, checked again at EXEC because a reload changed the rules since it was queued (as
 * Redis checks queued commands at EXEC): null when `user` (null: removed) may still run it, else the NOPERM that
 * takes its place in EXEC's reply, worded as Redis 7.0 words it for the check that failed.
 */
export function recheckAtExec(
  user: AclUser | null,
  spec: CommandSpec,
  args: Buffer[],
  scratch: number[],
): Buffer | null {
  if (user === null) return ERR_CHANGED_COMMAND;
  if (user.unrestricted) return null;
  const denied = checkPermission(user, spec, args, scratch);
  if (denied === null) return null;
  return denied === ERR_NOPERM_KEY
    ? ERR_CHANGED_KEY
    : denied === ERR_NOPERM_CHANNEL
      ? ERR_CHANGED_CHANNEL
      : ERR_CHANGED_COMMAND;
}
