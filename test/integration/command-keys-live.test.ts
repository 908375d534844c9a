/**
 * Key finding against the real server: for a corpus of ~200 command invocations across every data type (and the
 * movable-key commands: numkeys, keywords, STORE options, streams), findKeyIndexes must name exactly the keys a
 * real redis-server names in COMMAND GETKEYS, in the same order. Where keymux deliberately differs (it refuses an
 * option, or a form the server accepts but keymux cannot route) the case says so with the expected KEYS_ERROR_*.
 * The spec is taken from a table built from the server's own COMMAND reply, and from the built-in table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisCommand, redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import { CommandTable, resolveSubcommand, specsFromCommandReply } from '../../src/commands/table.js';
import {
  findKeyIndexes,
  KEYS_ERROR_ARITY,
  KEYS_ERROR_NO_KEYS,
  KEYS_ERROR_NUMKEYS_NEGATIVE,
  KEYS_ERROR_NUMKEYS_NOT_INTEGER,
  KEYS_ERROR_NUMKEYS_TOO_LARGE,
  KEYS_ERROR_OPTION_REFUSED,
  KEYS_ERROR_SYNTAX,
  KEYS_ERROR_UNKNOWN_SPEC,
} from '../../src/commands/keys.js';

interface Case {
  cmd: string;
  /** keymux's deliberate answer where it differs from GETKEYS: a KEYS_ERROR_* code, or the keys. */
  keymux?: number | string[];
}

const w = (s: string): string[] => s.split(' ');

/** Invocations written as space-separated words (no argument has a space). */
const CORPUS: Case[] = [
  // strings
  { cmd: 'GET k' },
  { cmd: 'get k' },
  { cmd: 'SET k v' },
  { cmd: 'SET k v EX 10 NX GET' },
  { cmd: 'SETNX k v' },
  { cmd: 'SETEX k 10 v' },
  { cmd: 'PSETEX k 100 v' },
  { cmd: 'GETSET k v' },
  { cmd: 'GETDEL k' },
  { cmd: 'GETEX k PERSIST' },
  { cmd: 'GETRANGE k 0 -1' },
  { cmd: 'SETRANGE k 1 v' },
  { cmd: 'APPEND k v' },
  { cmd: 'STRLEN k' },
  { cmd: 'INCR k' },
  { cmd: 'INCRBY k 3' },
  { cmd: 'INCRBYFLOAT k 1.5' },
  { cmd: 'DECR k' },
  { cmd: 'DECRBY k 2' },
  { cmd: 'MGET a' },
  { cmd: 'MGET a b c d' },
  { cmd: 'MSET a 1' },
  { cmd: 'MSET a 1 b 2 c 3' },
  { cmd: 'MSETNX a 1 b 2' },
  { cmd: 'LCS a b' },
  { cmd: 'LCS a b LEN' },
  { cmd: 'SUBSTR k 0 1' },
  // MSET with a dangling key: the server would refuse the command; keymux must not split it.
  { cmd: 'MSET a 1 b', keymux: KEYS_ERROR_ARITY },
  // bitmaps
  { cmd: 'SETBIT k 7 1' },
  { cmd: 'GETBIT k 7' },
  { cmd: 'BITCOUNT k' },
  { cmd: 'BITCOUNT k 0 -1 BIT' },
  { cmd: 'BITPOS k 1' },
  { cmd: 'BITOP AND dst a b c' },
  { cmd: 'BITOP NOT dst a' },
  { cmd: 'BITFIELD k GET u8 0 SET u8 0 1' },
  { cmd: 'BITFIELD_RO k GET u8 0' },
  // keyspace
  { cmd: 'DEL a' },
  { cmd: 'DEL a b c' },
  { cmd: 'UNLINK a b' },
  { cmd: 'EXISTS a b a' },
  { cmd: 'TOUCH a b' },
  { cmd: 'TYPE k' },
  { cmd: 'TTL k' },
  { cmd: 'PTTL k' },
  { cmd: 'EXPIRE k 10' },
  { cmd: 'EXPIRE k 10 NX' },
  { cmd: 'PEXPIRE k 100' },
  { cmd: 'EXPIREAT k 100' },
  { cmd: 'PEXPIREAT k 100' },
  { cmd: 'EXPIRETIME k' },
  { cmd: 'PEXPIRETIME k' },
  { cmd: 'PERSIST k' },
  { cmd: 'RENAME a b' },
  { cmd: 'RENAMENX a b' },
  { cmd: 'COPY a b' },
  { cmd: 'COPY a b REPLACE' },
  { cmd: 'COPY a b DB 1', keymux: KEYS_ERROR_OPTION_REFUSED },
  { cmd: 'COPY a b DB 0' },
  { cmd: 'DUMP k' },
  { cmd: 'RESTORE k 0 payload' },
  { cmd: 'RESTORE k 0 payload REPLACE ABSTTL' },
  { cmd: 'MOVE k 1' },
  { cmd: 'OBJECT ENCODING k' },
  { cmd: 'OBJECT FREQ k' },
  { cmd: 'OBJECT IDLETIME k' },
  { cmd: 'OBJECT REFCOUNT k' },
  { cmd: 'MEMORY USAGE k' },
  { cmd: 'MEMORY USAGE k SAMPLES 5' },
  // lists
  { cmd: 'LPUSH l a b' },
  { cmd: 'RPUSH l a' },
  { cmd: 'LPUSHX l a' },
  { cmd: 'RPUSHX l a b' },
  { cmd: 'LPOP l' },
  { cmd: 'RPOP l 2' },
  { cmd: 'LLEN l' },
  { cmd: 'LRANGE l 0 -1' },
  { cmd: 'LINDEX l 0' },
  { cmd: 'LSET l 0 v' },
  { cmd: 'LINSERT l BEFORE a b' },
  { cmd: 'LREM l 0 a' },
  { cmd: 'LTRIM l 0 1' },
  { cmd: 'LPOS l a RANK 1' },
  { cmd: 'RPOPLPUSH src dst' },
  { cmd: 'LMOVE src dst LEFT RIGHT' },
  { cmd: 'BLMOVE src dst LEFT RIGHT 0' },
  { cmd: 'BLPOP a b 0' },
  { cmd: 'BRPOP a 0' },
  { cmd: 'BRPOPLPUSH src dst 0' },
  { cmd: 'LMPOP 1 l LEFT' },
  { cmd: 'LMPOP 3 a b c RIGHT COUNT 2' },
  { cmd: 'BLMPOP 0 2 a b LEFT' },
  { cmd: 'LMPOP 0 l LEFT', keymux: KEYS_ERROR_NO_KEYS },
  { cmd: 'LMPOP x l LEFT', keymux: KEYS_ERROR_NUMKEYS_NOT_INTEGER },
  { cmd: 'LMPOP -1 l LEFT', keymux: KEYS_ERROR_NUMKEYS_NEGATIVE },
  { cmd: 'LMPOP 5 a b LEFT', keymux: KEYS_ERROR_NUMKEYS_TOO_LARGE },
  // hashes
  { cmd: 'HSET h f v' },
  { cmd: 'HSET h f v g w' },
  { cmd: 'HSETNX h f v' },
  { cmd: 'HGET h f' },
  { cmd: 'HMGET h f g' },
  { cmd: 'HMSET h f v' },
  { cmd: 'HDEL h f g' },
  { cmd: 'HEXISTS h f' },
  { cmd: 'HLEN h' },
  { cmd: 'HKEYS h' },
  { cmd: 'HVALS h' },
  { cmd: 'HGETALL h' },
  { cmd: 'HINCRBY h f 1' },
  { cmd: 'HINCRBYFLOAT h f 1.5' },
  { cmd: 'HSTRLEN h f' },
  { cmd: 'HRANDFIELD h 2 WITHVALUES' },
  { cmd: 'HSCAN h 0 MATCH * COUNT 10' },
  // sets
  { cmd: 'SADD s a b' },
  { cmd: 'SREM s a' },
  { cmd: 'SMEMBERS s' },
  { cmd: 'SISMEMBER s a' },
  { cmd: 'SMISMEMBER s a b' },
  { cmd: 'SCARD s' },
  { cmd: 'SPOP s 2' },
  { cmd: 'SRANDMEMBER s 2' },
  { cmd: 'SMOVE src dst m' },
  { cmd: 'SINTER a b c' },
  { cmd: 'SUNION a' },
  { cmd: 'SDIFF a b' },
  { cmd: 'SINTERSTORE dst a b' },
  { cmd: 'SUNIONSTORE dst a' },
  { cmd: 'SDIFFSTORE dst a b c' },
  { cmd: 'SINTERCARD 2 a b' },
  { cmd: 'SINTERCARD 3 a b c LIMIT 5' },
  { cmd: 'SSCAN s 0' },
  { cmd: 'SINTERCARD 0 a', keymux: KEYS_ERROR_NO_KEYS },
  // sorted sets
  { cmd: 'ZADD z 1 a 2 b' },
  { cmd: 'ZADD z NX GT CH 1 a' },
  { cmd: 'ZINCRBY z 1 a' },
  { cmd: 'ZREM z a b' },
  { cmd: 'ZCARD z' },
  { cmd: 'ZCOUNT z 0 10' },
  { cmd: 'ZLEXCOUNT z - +' },
  { cmd: 'ZSCORE z a' },
  { cmd: 'ZMSCORE z a b' },
  { cmd: 'ZRANK z a' },
  { cmd: 'ZREVRANK z a' },
  { cmd: 'ZRANGE z 0 -1 WITHSCORES' },
  { cmd: 'ZRANGE z 0 10 BYSCORE REV LIMIT 0 5' },
  { cmd: 'ZRANGESTORE dst z 0 -1' },
  { cmd: 'ZRANGEBYSCORE z 0 10' },
  { cmd: 'ZREVRANGEBYLEX z + -' },
  { cmd: 'ZREMRANGEBYRANK z 0 1' },
  { cmd: 'ZREMRANGEBYSCORE z 0 1' },
  { cmd: 'ZREMRANGEBYLEX z - +' },
  { cmd: 'ZPOPMIN z' },
  { cmd: 'ZPOPMAX z 2' },
  { cmd: 'BZPOPMIN a b 0' },
  { cmd: 'BZPOPMAX a 0' },
  { cmd: 'ZRANDMEMBER z 2' },
  { cmd: 'ZUNIONSTORE dst 2 a b' },
  { cmd: 'ZUNIONSTORE dst 2 a b WEIGHTS 1 2 AGGREGATE MAX' },
  { cmd: 'ZINTERSTORE dst 3 a b c' },
  { cmd: 'ZDIFFSTORE dst 2 a b' },
  { cmd: 'ZUNION 2 a b WITHSCORES' },
  { cmd: 'ZINTER 1 a' },
  { cmd: 'ZDIFF 2 a b' },
  { cmd: 'ZINTERCARD 2 a b LIMIT 1' },
  { cmd: 'ZMPOP 2 a b MIN' },
  { cmd: 'ZMPOP 1 a MAX COUNT 3' },
  { cmd: 'BZMPOP 0 2 a b MIN' },
  { cmd: 'ZSCAN z 0' },
  { cmd: 'ZUNIONSTORE dst 3 a b', keymux: KEYS_ERROR_NUMKEYS_TOO_LARGE },
  { cmd: 'ZUNION x a', keymux: KEYS_ERROR_NUMKEYS_NOT_INTEGER },
  // hyperloglog
  { cmd: 'PFADD p a b' },
  { cmd: 'PFCOUNT p' },
  { cmd: 'PFCOUNT p q r' },
  { cmd: 'PFMERGE dst a b' },
  // GETKEYS calls this invalid, yet the server runs it (merging nothing into dst): keymux routes it by dst.
  { cmd: 'PFMERGE dst', keymux: ['dst'] },
  // geo
  { cmd: 'GEOADD g 13.3 38.1 a' },
  { cmd: 'GEODIST g a b km' },
  { cmd: 'GEOHASH g a b' },
  { cmd: 'GEOPOS g a' },
  { cmd: 'GEORADIUS g 15 37 200 km' },
  { cmd: 'GEORADIUS g 15 37 200 km WITHDIST COUNT 5 ASC' },
  { cmd: 'GEORADIUS g 15 37 200 km STORE dst' },
  { cmd: 'GEORADIUS g 15 37 200 km STOREDIST dst' },
  { cmd: 'GEORADIUS g 15 37 200 km COUNT 3 STORE d1 STOREDIST d2' },
  { cmd: 'GEORADIUS_RO g 15 37 200 km' },
  { cmd: 'GEORADIUSBYMEMBER g a 100 km' },
  { cmd: 'GEORADIUSBYMEMBER g a 100 km STORE dst' },
  { cmd: 'GEORADIUSBYMEMBER_RO g a 100 km' },
  { cmd: 'GEOSEARCH g FROMMEMBER a BYRADIUS 10 km' },
  { cmd: 'GEOSEARCHSTORE dst g FROMLONLAT 1 2 BYBOX 1 1 km' },
  // streams
  { cmd: 'XADD s * f v' },
  { cmd: 'XADD s MAXLEN ~ 10 * f v' },
  { cmd: 'XLEN s' },
  { cmd: 'XRANGE s - +' },
  { cmd: 'XREVRANGE s + - COUNT 1' },
  { cmd: 'XDEL s 1-1' },
  { cmd: 'XTRIM s MAXLEN 10' },
  { cmd: 'XREAD STREAMS s 0' },
  { cmd: 'XREAD COUNT 2 STREAMS a b 0 0' },
  { cmd: 'xread streams a b c 0 0 0' },
  { cmd: 'XREAD STREAMS streams 0' },
  { cmd: 'XREAD COUNT 1 STREAMS block 0' },
  { cmd: 'XREAD BLOCK 0 STREAMS s $' },
  { cmd: 'XREAD COUNT 5 BLOCK 100 STREAMS a b $ $' },
  { cmd: 'XREADGROUP GROUP g c STREAMS s >' },
  { cmd: 'XREADGROUP GROUP g c COUNT 1 NOACK STREAMS a b > >' },
  { cmd: 'XREADGROUP GROUP block streams STREAMS s >' },
  { cmd: 'XREADGROUP GROUP g c BLOCK 10 STREAMS s >' },
  // Redis 7.0's key spec searches for STREAMS from argument 4, where a group or consumer named "streams" may be;
  // the server itself reads the options first (xreadGetKeys), and so does keymux: the stream is the key.
  { cmd: 'XREADGROUP NOACK GROUP g streams STREAMS q0 >', keymux: ['q0'] },
  { cmd: 'XREADGROUP COUNT 1 GROUP streams c STREAMS q0 >', keymux: ['q0'] },
  { cmd: 'XGROUP CREATE s g $ MKSTREAM' },
  { cmd: 'XGROUP DESTROY s g' },
  { cmd: 'XGROUP CREATECONSUMER s g c' },
  { cmd: 'XGROUP DELCONSUMER s g c' },
  { cmd: 'XGROUP SETID s g 0' },
  { cmd: 'XACK s g 1-1 2-2' },
  { cmd: 'XPENDING s g' },
  { cmd: 'XPENDING s g - + 10 c' },
  { cmd: 'XCLAIM s g c 10 1-1' },
  { cmd: 'XAUTOCLAIM s g c 10 0' },
  { cmd: 'XINFO STREAM s' },
  { cmd: 'XINFO STREAM s FULL COUNT 2' },
  { cmd: 'XINFO GROUPS s' },
  { cmd: 'XINFO CONSUMERS s g' },
  { cmd: 'XSETID s 5-5' },
  // sort
  { cmd: 'SORT k' },
  { cmd: 'SORT k DESC ALPHA LIMIT 0 10' },
  { cmd: 'SORT k STORE dst' },
  { cmd: 'SORT k LIMIT 0 5 ALPHA STORE dst' },
  { cmd: 'sort k store dst' },
  { cmd: 'SORT_RO k ALPHA' },
  { cmd: 'SORT k BY nosort GET # STORE dst' },
  { cmd: 'SORT k BY w_* STORE dst', keymux: KEYS_ERROR_OPTION_REFUSED },
  { cmd: 'SORT k GET # GET o_*', keymux: KEYS_ERROR_OPTION_REFUSED },
  { cmd: 'SORT_RO k BY nosort' },
  { cmd: 'SORT_RO k BY w_*', keymux: KEYS_ERROR_OPTION_REFUSED },
  // scripting
  { cmd: 'EVAL return 1 1 k' },
  { cmd: 'EVAL return 2 a b arg1 arg2' },
  { cmd: 'EVAL return 3 a b c' },
  { cmd: 'EVALSHA 0123456789abcdef0123456789abcdef01234567 1 k' },
  { cmd: 'EVAL_RO return 1 a b' },
  { cmd: 'EVALSHA_RO 0123456789abcdef0123456789abcdef01234567 1 k v' },
  { cmd: 'FCALL f 2 a b x' },
  { cmd: 'FCALL_RO f 1 k' },
  { cmd: 'EVAL return 0', keymux: KEYS_ERROR_NO_KEYS },
  { cmd: 'FCALL f 0 x y', keymux: KEYS_ERROR_NO_KEYS },
  { cmd: 'EVAL return 3 a b', keymux: KEYS_ERROR_NUMKEYS_TOO_LARGE },
  { cmd: 'EVAL return -1 a', keymux: KEYS_ERROR_NUMKEYS_NEGATIVE },
  { cmd: 'EVAL return one a', keymux: KEYS_ERROR_NUMKEYS_NOT_INTEGER },
  { cmd: 'EVAL return 01 a', keymux: KEYS_ERROR_NUMKEYS_NOT_INTEGER },
  // blocking, pub/sub and other refused commands still have well-defined keys
  { cmd: 'WATCH a b' },
  { cmd: 'PFDEBUG GETREG p' },
  { cmd: 'MIGRATE host 6379 k 0 1000', keymux: KEYS_ERROR_UNKNOWN_SPEC },
  { cmd: 'MIGRATE host 6379 "" 0 1000 KEYS a b', keymux: KEYS_ERROR_UNKNOWN_SPEC },
  // arity
  { cmd: 'GET', keymux: KEYS_ERROR_ARITY },
  { cmd: 'GET a b', keymux: KEYS_ERROR_ARITY },
  { cmd: 'SET k', keymux: KEYS_ERROR_ARITY },
  { cmd: 'RENAME a', keymux: KEYS_ERROR_ARITY },
  { cmd: 'OBJECT ENCODING', keymux: KEYS_ERROR_ARITY },
  // As in Redis, a keyword search never looks at the last argument: a trailing STORE names no key.
  { cmd: 'GEORADIUS g 15 37 200 km STORE' },
  { cmd: 'ZUNIONSTORE dst 2 a', keymux: KEYS_ERROR_NUMKEYS_TOO_LARGE },
  { cmd: 'SORT k LIMIT 0', keymux: KEYS_ERROR_SYNTAX },
  { cmd: 'SORT k STORE', keymux: KEYS_ERROR_SYNTAX },
  { cmd: 'SORT k FOO', keymux: KEYS_ERROR_SYNTAX },
];

const CODES = new Set([
  KEYS_ERROR_ARITY,
  KEYS_ERROR_SYNTAX,
  KEYS_ERROR_NUMKEYS_NOT_INTEGER,
  KEYS_ERROR_NUMKEYS_NEGATIVE,
  KEYS_ERROR_NUMKEYS_TOO_LARGE,
  KEYS_ERROR_NO_KEYS,
  KEYS_ERROR_UNKNOWN_SPEC,
  KEYS_ERROR_OPTION_REFUSED,
]);

let redis: RedisProcess;
let live: CommandTable;
let builtin: CommandTable;
let server: Array<string[] | Error>;

function keymuxKeys(table: CommandTable, words: string[]): string[] | number {
  const args = words.map((s) => Buffer.from(s));
  const container = table.lookup(args[0], 0, args[0].length);
  if (!container) throw new Error(`not in the table: ${words[0]}`);
  const spec = resolveSubcommand(container, args);
  if (!spec) throw new Error(`unknown subcommand: ${words.join(' ')}`);
  const out: number[] = [];
  const n = findKeyIndexes(spec, args, out);
  return n < 0 ? n : out.slice(0, n).map((i) => words[i]);
}

beforeAll(async () => {
  redis = await startRedis();
  live = CommandTable.fromRows(specsFromCommandReply((await redisCommand(redis.port, 'COMMAND')) as unknown[]), {
    deny: [],
  });
  builtin = CommandTable.builtin();
  const replies = await redisCommands(
    redis.port,
    CORPUS.map((c) => ['COMMAND', 'GETKEYS', ...w(c.cmd)]),
  );
  server = replies.map((r) => (r instanceof Error ? r : (r as unknown[]).map(String)));
});

afterAll(async () => {
  await redis?.stop();
});

describe('findKeyIndexes agrees with COMMAND GETKEYS of a real redis-server', () => {
  it('has a corpus of about 200 invocations', () => {
    expect(CORPUS.length).toBeGreaterThanOrEqual(200);
    expect(new Set(CORPUS.map((c) => c.cmd)).size).toBe(CORPUS.length);
  });

  it.each(CORPUS.map((c, i) => [c.cmd, i] as const))('%s', (_cmd, i) => {
    const c = CORPUS[i];
    const words = w(c.cmd);
    const got = keymuxKeys(live, words);
    expect(keymuxKeys(builtin, words)).toEqual(got);
    const theirs = server[i];
    if (c.keymux !== undefined) {
      expect(got).toEqual(c.keymux);
      return;
    }
    if (theirs instanceof Error) {
      // The server finds no keys or rejects the arguments: keymux must not route it either.
      expect(typeof got === 'number' && CODES.has(got), `server said ${theirs.message}; keymux ${String(got)}`).toBe(
        true,
      );
      return;
    }
    expect(got).toEqual(theirs);
  });
});
