/**
 * The built-in command table matches the server: start a real redis-server, derive rows from its live COMMAND
 * reply with specsFromCommandReply, and compare them with the generated built-in rows one by one (names, arity,
 * flags, legacy key positions, ACL categories, tips, key specs). If this fails after a redis-server upgrade,
 * regenerate with `npx tsx scripts/gen-command-table.ts` and review the diff. Also checks that a table built
 * from the live rows makes the same dispatch decisions as the built-in one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisCommand, redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import { builtinRows, CommandTable, specsFromCommandReply, type RawCommandRow } from '../../src/commands/table.js';
import { BUILTIN_SOURCE } from '../../src/commands/builtin-table.js';
import type { CommandSpec } from '../../src/commands/spec.js';

let redis: RedisProcess;
let liveRows: RawCommandRow[];
let version: string;
let commandCount: number;
const builtin = builtinRows();

beforeAll(async () => {
  redis = await startRedis();
  const info = String(await redisCommand(redis.port, 'INFO', 'server'));
  version = /redis_version:([^\r\n]+)/.exec(info)?.[1] ?? '?';
  liveRows = specsFromCommandReply((await redisCommand(redis.port, 'COMMAND')) as unknown[]);
  commandCount = Number(await redisCommand(redis.port, 'COMMAND', 'COUNT'));
});

afterAll(async () => {
  await redis?.stop();
});

describe('built-in command table vs the live server', () => {
  it('was generated from this server version', () => {
    expect(BUILTIN_SOURCE).toBe(`redis ${version}`);
  });

  it('has the same command and subcommand names', () => {
    expect(builtin.map((r) => r.name)).toEqual(liveRows.map((r) => r.name));
    expect(liveRows.length).toBeGreaterThan(300);
    expect(liveRows.filter((r) => !r.name.includes('|')).length).toBe(commandCount);
  });

  it('matches row by row: arity, flags, first/last/step, ACL categories, tips, key specs', () => {
    const byName = new Map(builtin.map((r) => [r.name, r]));
    const mismatches: string[] = [];
    for (const live of liveRows) {
      const b = byName.get(live.name);
      if (!b) {
        mismatches.push(`${live.name}: missing from the built-in table`);
        continue;
      }
      for (const field of [
        'arity',
        'flags',
        'firstKey',
        'lastKey',
        'step',
        'aclCategories',
        'tips',
        'keySpecs',
      ] as const) {
        if (JSON.stringify(b[field]) !== JSON.stringify(live[field])) {
          mismatches.push(
            `${live.name}.${field}: built-in ${JSON.stringify(b[field])} live ${JSON.stringify(live[field])}`,
          );
        }
      }
    }
    expect(mismatches).toEqual([]);
  });

  it('the built-in rows equal the live rows exactly', () => {
    expect(builtin).toEqual(liveRows);
  });

  it('tables built from either make the same dispatch decisions', () => {
    const a = CommandTable.fromRows(liveRows, { deny: ['config'] });
    const b = CommandTable.builtin({ deny: ['config'] });
    const summary = (s: CommandSpec): string =>
      [
        s.name,
        s.dispatch,
        s.merge,
        s.fanoutShape,
        s.refuseReason?.toString() ?? '',
        s.readonly,
        s.write,
        s.options ? 'options' : '',
      ].join(' ');
    const all = (t: CommandTable): string[] =>
      t.names().flatMap((n) => {
        const s = t.get(n) as CommandSpec;
        return [summary(s), ...[...(s.subcommands?.values() ?? [])].map(summary)];
      });
    expect(a.size).toBe(b.size);
    expect(all(a)).toEqual(all(b));
  });

  it('parses the live reply with Buffers (returnBuffers) to the same rows', async () => {
    const [reply] = await redisCommands(redis.port, [['COMMAND']], { buffers: true });
    expect(specsFromCommandReply(reply as unknown[])).toEqual(liveRows);
  });
});
