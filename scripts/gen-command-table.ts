/**
 * Generates src/commands/builtin-table.ts, keymux's built-in command table: starts a throwaway redis-server on a
 * free port, sends COMMAND, parses the reply with the same code the proxy uses at run time
 * (specsFromCommandReply), and writes one compact row per command and subcommand in canonical order. The output
 * depends only on the server version, so regenerating with the same redis-server gives the same file.
 * Run: npx tsx scripts/gen-command-table.ts   (or: npm run gen:commands). Needs redis-server on PATH.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis, redisCommand } from '../test/support/redis.js';
import { builtinFromRow, specsFromCommandReply } from '../src/commands/table.js';
import type { BuiltinRow } from '../src/commands/builtin-table.js';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/commands/builtin-table.ts');

function quote(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function formatRow(r: BuiltinRow): string {
  const [name, arity, flags, first, last, step, acl, tips, keySpecs] = r;
  const head = `[${quote(name)}, ${arity}, ${quote(flags)}, ${first}, ${last}, ${step}, ${quote(acl)}, ${quote(tips)}, `;
  if (keySpecs.length === 0) return `  ${head}[]],`;
  if (keySpecs.length === 1 && head.length + keySpecs[0].length < 150) return `  ${head}[${quote(keySpecs[0])}]],`;
  return `  ${head}[\n${keySpecs.map((k) => `    ${quote(k)},`).join('\n')}\n  ]],`;
}

export function render(version: string, rows: readonly BuiltinRow[]): string {
  return `/**
 * GENERATED FILE: do not edit. The built-in command table: what redis-server ${version} says in its COMMAND
 * reply, one row per command and subcommand ("container|sub" follows its container), used when no live server
 * is asked. Regenerate with \`npx tsx scripts/gen-command-table.ts\` (npm run gen:commands); the live test
 * (test/integration/command-table-live.test.ts) proves it matches the installed server. keymux's own policy is
 * not here: it is COMMAND_OVERRIDES in table.ts.
 *
 * Row: [name, arity, flags, firstKey, lastKey, step, aclCategories, tips, keySpecs]. Flags, ACL categories and
 * tips are space-separated. A key spec is "FLAGS; BEGIN; FIND[; notes TEXT]": BEGIN is "index POS",
 * "keyword KEYWORD STARTFROM" or "unknown"; FIND is "range LASTKEY STEP LIMIT", "keynum KEYNUMIDX FIRSTKEY STEP"
 * or "unknown" (Redis 7 key specs; see parseKeySpec in table.ts).
 */

export type BuiltinRow = readonly [name: string, arity: number, flags: string, firstKey: number, lastKey: number,
  step: number, aclCategories: string, tips: string, keySpecs: readonly string[]];

/** The server the rows came from. */
export const BUILTIN_SOURCE = ${quote(`redis ${version}`)};

export const BUILTIN_COMMANDS: readonly BuiltinRow[] = [
${rows.map(formatRow).join('\n')}
];
`;
}

async function main(): Promise<void> {
  const redis = await startRedis();
  try {
    const info = String(await redisCommand(redis.port, 'INFO', 'server'));
    const version = /redis_version:([^\r\n]+)/.exec(info)?.[1];
    if (!version) throw new Error('INFO server has no redis_version');
    const reply = await redisCommand(redis.port, 'COMMAND');
    if (!Array.isArray(reply)) throw new Error('COMMAND did not reply with an array');
    const rows = specsFromCommandReply(reply).map(builtinFromRow);
    fs.writeFileSync(OUT, render(version, rows));
    console.log(`wrote ${path.relative(process.cwd(), OUT)}: ${rows.length} rows from redis ${version}`);
  } finally {
    await redis.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
