/**
 * Unit tests of keymux's ACL subset (src/security/acl.ts): the rule parser (operations and Redis's error
 * wording), users compiled against the built-in command table (commands, categories, subcommands, key patterns
 * with %R/%W, channel patterns), the permission check's NOPERM replies, authentication (several passwords,
 * nopass, #hash, off), and the AuthGuard's holds and closing (src/security/auth-guard.ts).
 */
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CommandTable, resolveSubcommand } from '../../src/commands/table.js';
import type { CommandSpec } from '../../src/commands/spec.js';
import {
  AUTH_NONE_CONFIGURED,
  AUTH_WRONG,
  AccessControl,
  AclUser,
  checkPermission,
  parseAclRules,
  type UserDefinition,
} from '../../src/security/acl.js';
import { AuthGuard } from '../../src/security/auth-guard.js';
import { maskSecrets } from '../../src/config/endpoints.js';

const table = CommandTable.builtin();

function user(rules: string | null, extra: Partial<UserDefinition> = {}): AclUser {
  return new AclUser({ name: 'u', passwords: ['pw'], nopass: false, rules, operator: false, ...extra }, table);
}

/** The reply text of checkPermission for a command line, or 'ok'. */
function check(u: AclUser, ...words: string[]): string {
  const args = words.map((w) => Buffer.from(w));
  let spec = table.get(words[0]) as CommandSpec;
  if (spec.subcommands !== null && args.length > 1) spec = resolveSubcommand(spec, args) as CommandSpec;
  const denied = checkPermission(u, spec, args, []);
  return denied === null ? 'ok' : denied.toString().trimEnd();
}

const NOPERM_KEY = '-NOPERM this user has no permissions to access one of the keys used as arguments';
const NOPERM_CHANNEL = '-NOPERM this user has no permissions to access one of the channels used as arguments';
const noPerm = (name: string): string => `-NOPERM this user has no permissions to run the '${name}' command`;

describe('parseAclRules', () => {
  it('reads every supported rule into operations', () => {
    const { ops, errors } = parseAclRules(
      'on off nopass resetpass reset allcommands nocommands +@all -@all +GET -set +config|get -@Dangerous ' +
        '~app:* %R~ro:* %W~wo:* %RW~rw:* resetkeys allkeys resetchannels &news:* allchannels >pw <pw',
    );
    expect(errors).toEqual([]);
    expect(ops.map((o) => o.op)).toEqual([
      'on',
      'off',
      'nopass',
      'resetpass',
      'reset',
      'allcommands',
      'nocommands',
      'allcommands',
      'nocommands',
      'command',
      'command',
      'command',
      'category',
      'key',
      'key',
      'key',
      'key',
      'resetkeys',
      'allkeys',
      'resetchannels',
      'channel',
      'allchannels',
      'password',
      'password',
    ]);
    expect(ops[9]).toEqual({ op: 'command', allow: true, name: 'get' });
    expect(ops[12]).toEqual({ op: 'category', allow: false, category: 'dangerous' });
    expect(ops[14]).toEqual({ op: 'key', pattern: 'ro:*', perms: 1 });
    expect(ops[15]).toEqual({ op: 'key', pattern: 'wo:*', perms: 2 });
    expect(ops[16]).toEqual({ op: 'key', pattern: 'rw:*', perms: 3 });
  });

  it('reads ~* and &* as allkeys and allchannels, and refuses a pattern after them as Redis does', () => {
    expect(parseAclRules('~* &*').ops).toEqual([{ op: 'allkeys' }, { op: 'allchannels' }]);
    expect(parseAclRules('allkeys %R~x').errors).toEqual([
      "Error in ACL SETUSER modifier '%R~x': Adding a pattern after the * pattern (or the 'allkeys' flag) is not " +
        "valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns",
    ]);
    expect(parseAclRules('allkeys resetkeys ~x allchannels resetchannels &y').errors).toEqual([]);
    expect(parseAclRules('&* &x').errors).toHaveLength(1);
  });

  it('words errors as Redis and names what keymux does not support', () => {
    expect(parseAclRules('+nosuch -@nosuch bogus %~x %Q~x #abc (~x +get) +get|x').errors).toEqual([
      "Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL",
      "Error in ACL SETUSER modifier '-@nosuch': Unknown command or category name in ACL",
      "Error in ACL SETUSER modifier 'bogus': Syntax error",
      "Error in ACL SETUSER modifier '%~x': Syntax error",
      "Error in ACL SETUSER modifier '%Q~x': Syntax error",
      "Error in ACL SETUSER modifier '#abc': The password hash must be exactly 64 characters and contain only " +
        'lowercase hexadecimal characters',
      "Error in ACL SETUSER modifier '(~x': keymux does not support selectors",
      "Error in ACL SETUSER modifier '+get)': Unknown command or category name in ACL",
      "Error in ACL SETUSER modifier '+get|x': keymux does not support allowing a command's first argument " +
        '(e.g. +select|0)',
    ]);
  });
});

describe('a compiled user', () => {
  it('without rules may do everything: the session skips the check', () => {
    const u = user(null);
    expect(u.unrestricted).toBe(true);
    expect(check(u, 'flushall')).toBe('ok');
  });

  it('checks commands, categories and subcommands, in order, with the full name in NOPERM', () => {
    const u = user('+@all -@dangerous +config|get ~*');
    expect(u.unrestricted).toBe(false);
    expect(check(u, 'get', 'k')).toBe('ok');
    expect(check(u, 'keys', '*')).toBe(noPerm('keys'));
    expect(check(u, 'flushall')).toBe(noPerm('flushall'));
    expect(check(u, 'config', 'get', 'x')).toBe('ok');
    expect(check(u, 'config', 'set', 'x', 'y')).toBe(noPerm('config|set'));
    const ro = user('-@all +@read +config ~*');
    expect(check(ro, 'get', 'k')).toBe('ok');
    expect(check(ro, 'set', 'k', 'v')).toBe(noPerm('set'));
    expect(check(ro, 'config', 'set', 'x', 'y')).toBe('ok');
    const minus = user('allcommands -config|set -get allkeys');
    expect(check(minus, 'config', 'get', 'x')).toBe('ok');
    expect(check(minus, 'config', 'set', 'x', 'y')).toBe(noPerm('config|set'));
    expect(check(minus, 'get', 'x')).toBe(noPerm('get'));
  });

  it('always allows AUTH, HELLO, QUIT and RESET (no_auth), as Redis', () => {
    const none = user('nocommands');
    for (const c of [['auth', 'x'], ['hello'], ['quit'], ['reset']]) expect(check(none, ...c)).toBe('ok');
    expect(check(none, 'ping')).toBe(noPerm('ping'));
  });

  it('checks keys against glob patterns, every key of a multi-key command, and the declared keys of EVAL', () => {
    const u = user('+@all ~app:* ~{t}[ab]?');
    expect(check(u, 'get', 'app:1')).toBe('ok');
    expect(check(u, 'get', 'other')).toBe(NOPERM_KEY);
    expect(check(u, 'mget', 'app:1', 'app:2')).toBe('ok');
    expect(check(u, 'mget', 'app:1', 'other')).toBe(NOPERM_KEY);
    expect(check(u, 'mset', 'app:1', 'other', 'app:2', 'x')).toBe('ok'); // values are not keys
    expect(check(u, 'get', '{t}a1')).toBe('ok');
    expect(check(u, 'get', '{t}c1')).toBe(NOPERM_KEY);
    expect(check(u, 'eval', 'return 1', '1', 'app:x', 'other')).toBe('ok'); // ARGV is not a key
    expect(check(u, 'eval', 'return 1', '2', 'app:x', 'other')).toBe(NOPERM_KEY);
    expect(check(u, 'fcall', 'f', '1', 'other')).toBe(NOPERM_KEY);
  });

  it('checks %R~ and %W~ patterns with the permission each key spec needs (Redis ACLSelectorCheckKey)', () => {
    const u = user('+@all %R~ro:* %W~wo:* ~rw:*');
    expect(check(u, 'get', 'ro:1')).toBe('ok');
    expect(check(u, 'set', 'ro:1', 'v')).toBe(NOPERM_KEY);
    expect(check(u, 'get', 'wo:1')).toBe(NOPERM_KEY);
    expect(check(u, 'set', 'wo:1', 'v')).toBe('ok');
    expect(check(u, 'set', 'wo:1', 'v', 'GET')).toBe(NOPERM_KEY); // SET ... GET reads too (variable_flags)
    expect(check(u, 'bitfield', 'ro:1', 'get', 'u8', '0')).toBe('ok');
    expect(check(u, 'bitfield', 'ro:1', 'set', 'u8', '0', '1')).toBe(NOPERM_KEY);
    expect(check(u, 'copy', 'ro:1', 'wo:1')).toBe('ok');
    expect(check(u, 'copy', 'wo:1', 'ro:1')).toBe(NOPERM_KEY);
    expect(check(u, 'exists', 'wo:1')).toBe('ok'); // EXISTS neither reads nor writes the value
    expect(check(u, 'incr', 'rw:1')).toBe('ok');
    expect(check(u, 'sort', 'ro:1', 'store', 'wo:1')).toBe('ok');
    expect(check(u, 'sort', 'ro:1', 'store', 'ro:2')).toBe(NOPERM_KEY);
  });

  it('checks channels: glob for SUBSCRIBE and PUBLISH, literal patterns for PSUBSCRIBE', () => {
    const u = user('+@all ~* &news:*');
    expect(check(u, 'subscribe', 'news:1', 'news:2')).toBe('ok');
    expect(check(u, 'subscribe', 'news:1', 'other')).toBe(NOPERM_CHANNEL);
    expect(check(u, 'publish', 'news:1', 'other')).toBe('ok'); // the message is not a channel
    expect(check(u, 'publish', 'other', 'x')).toBe(NOPERM_CHANNEL);
    expect(check(u, 'spublish', 'other', 'x')).toBe(NOPERM_CHANNEL);
    expect(check(u, 'ssubscribe', 'news:x')).toBe('ok');
    expect(check(u, 'psubscribe', 'news:*')).toBe('ok');
    expect(check(u, 'psubscribe', 'news:a*')).toBe(NOPERM_CHANNEL);
    expect(check(u, 'unsubscribe', 'other')).toBe('ok');
    expect(check(user('+@all ~*'), 'subscribe', 'x')).toBe(NOPERM_CHANNEL); // rules start with no channel (Redis 7)
  });

  it('starts from nothing when rules are given (no command, key or channel), enabled unless off', () => {
    const u = user('');
    expect(u.enabled).toBe(true);
    expect(check(u, 'get', 'k')).toBe(noPerm('get'));
    expect(user('off').enabled).toBe(false);
    expect(user('+get ~* reset').enabled).toBe(false);
  });
});

describe('AccessControl', () => {
  const defs: UserDefinition[] = [
    { name: 'app', passwords: ['old', 'new'], nopass: false, rules: '+@all ~app:*', operator: false },
    { name: 'any', passwords: [], nopass: true, rules: null, operator: true },
    { name: 'gone', passwords: ['x'], nopass: false, rules: 'off', operator: false },
    {
      name: 'hashed',
      passwords: [],
      nopass: false,
      rules: `#${crypto.createHash('sha256').update('h4sh').digest('hex')} +@all allkeys allchannels`,
      operator: false,
    },
  ];
  const b = (s: string): Buffer => Buffer.from(s);

  it('accepts each of several passwords, nopass, a #hash, and refuses an off user', () => {
    const acl = new AccessControl(defs, 'pw', table);
    expect((acl.authenticate(b('app'), b('old')) as AclUser).name).toBe('app');
    expect((acl.authenticate(b('app'), b('new')) as AclUser).name).toBe('app');
    expect(acl.authenticate(b('app'), b('neither'))).toBe(AUTH_WRONG);
    expect((acl.authenticate(b('any'), b('whatever')) as AclUser).name).toBe('any');
    expect(acl.authenticate(b('gone'), b('x'))).toBe(AUTH_WRONG);
    expect(acl.authenticate(b('nobody'), b('x'))).toBe(AUTH_WRONG);
    expect((acl.authenticate(b('hashed'), b('h4sh')) as AclUser).name).toBe('hashed');
    expect((acl.authenticate(null, b('pw')) as AclUser).name).toBe('default');
    expect((acl.authenticate(b('default'), b('pw')) as AclUser).name).toBe('default');
    expect(acl.authenticate(null, b('nope'))).toBe(AUTH_WRONG);
    expect(acl.restricted).toBe(true);
    expect(acl.connectUser).toBeNull();
    expect(acl.users.get('default')?.operator).toBe(false); // users exist: only those marked operator
    expect(acl.users.get('any')?.operator).toBe(true);
  });

  it('with nothing configured: every connection is the unrestricted default user; AUTH pass is not configured', () => {
    const acl = new AccessControl([], null, table);
    expect(acl.restricted).toBe(false);
    expect(acl.connectUser?.name).toBe('default');
    expect(acl.connectUser?.operator).toBe(true);
    expect(acl.authenticate(null, b('x'))).toBe(AUTH_NONE_CONFIGURED);
    expect(new AccessControl([], 'pw', table).restricted).toBe(false);
  });

  it('a default user with nopass and rules: connections start as it, limited', () => {
    const acl = new AccessControl(
      [{ name: 'default', passwords: [], nopass: true, rules: '+ping', operator: false }],
      null,
      table,
    );
    expect(acl.connectUser?.name).toBe('default');
    expect(acl.restricted).toBe(true);
  });
});

describe('AuthGuard', () => {
  const config = { delayAfter: 3, delayMs: 100, maxDelayMs: 1000, closeAfter: 5, delayCorrect: false };

  it('holds no AUTH for the first failures, then every AUTH for a delay doubling up to the bound, per address', () => {
    const g = new AuthGuard();
    const open = { ...config, closeAfter: 0 };
    const holds: number[] = [];
    for (let n = 1; n <= 8; n++) {
      const held = g.holdMs(open, 'h1'); // what an AUTH from h1 would wait (with delay_correct, before its check)
      holds.push(held);
      g.onFailure(open, 'h1', n, null, 'c', held);
    }
    expect(holds).toEqual([0, 0, 0, 100, 200, 400, 800, 1000]);
    expect(g.holdMs(open, 'h1')).toBe(1000); // the next AUTH from h1: a failure's reply waits this long
    expect(g.holdMs(config, 'h2')).toBe(0); // another address starts from zero
    g.onFailure(config, 'h2', 1, 'app', 'c', 0);
    expect(g.failures).toBe(9);
    expect(g.failuresOf('h1')).toBe(8);
    expect(g.holdMs({ ...config, delayMs: 0 }, 'h1')).toBe(0); // delay_ms 0: no delay
  });

  it('closes the connection after close_after failures on it', () => {
    const g = new AuthGuard();
    const verdicts = [1, 2, 3, 4, 5].map((n) => g.onFailure(config, 'h', n, null, 'c', 0));
    expect(verdicts).toEqual([false, false, false, false, true]);
    expect(g.disconnects).toBe(1);
  });

  it('with workers: counts what the primary counted for the whole process plus its own failures not counted there yet', () => {
    const g = new AuthGuard();
    const reported: string[] = [];
    g.shareWith((host) => {
      reported.push(host);
      return true;
    });
    g.onFailure(config, 'h', 1, null, 'c', 0);
    g.onFailure(config, 'h', 2, null, 'c', 0);
    expect(reported).toEqual(['h', 'h']); // each failure reported, none waited for
    expect(g.failuresOf('h')).toBe(2);
    g.onShared('h', 3, 0, false); // another worker's failure counted first: 3 in all, and 2 of ours still coming
    expect(g.failuresOf('h')).toBe(5);
    g.onShared('h', 4, 0, true); // our first counted
    expect(g.failuresOf('h')).toBe(5);
    g.onShared('h', 5, 0, true); // our second counted: the primary's count alone from here on
    expect(g.failuresOf('h')).toBe(5);
    expect(g.holdMs(config, 'h')).toBe(400); // the 6th failure: three past delay_after, as in one process
    g.onShared('other', 3, 0, false); // an address only other workers saw: held here too
    expect(g.holdMs(config, 'other')).toBe(100);
    g.onShared('old', 9, 61_000, false); // last failed longer ago than a minute: forgotten
    expect(g.holdMs(config, 'old')).toBe(0);
    expect(g.failures).toBe(2); // keymux_auth_failures_total counts this process's own (the primary sums workers)
  });

  it('with workers and no primary to report to: counts its own failures alone', () => {
    const g = new AuthGuard();
    g.shareWith(() => false);
    for (let n = 1; n <= 4; n++) g.onFailure({ ...config, closeAfter: 0 }, 'h', n, null, 'c', 0);
    expect(g.failuresOf('h')).toBe(4);
    expect(g.holdMs(config, 'h')).toBe(200);
  });
});

describe('/config masking', () => {
  it('masks passwords, every item of passwords, and passwords and hashes inside rules', () => {
    expect(
      maskSecrets({
        users: [{ name: 'a', password: 'x', passwords: ['y', 'z'], rules: '>secret +@all #abc ~k:* <old' }],
      }),
    ).toEqual({
      users: [
        {
          name: 'a',
          password: '********',
          passwords: ['********', '********'],
          rules: '>******** +@all #******** ~k:* <********',
        },
      ],
    });
  });
});
