/**
 * Merges of the commands that concern every shard's keyspace or script cache: the one reply a client expects
 * from the replies of each shard (see fanout/merge.ts for the data-command merges). As there: refuse rather than
 * guess: a shard's error is the client's error, and shards that disagree where they must agree give a clear
 * error, never one shard's answer passed off as everyone's.
 * - same: every shard gave the same reply -> that reply (SCRIPT LOAD's SHA1, FUNCTION LOAD's library name).
 * - and: SCRIPT EXISTS: 1 at a position only where every shard answered 1.
 * - keys: KEYS: the shards' arrays concatenated (a key seen twice, possible while a migration moves it, once).
 * - random: RANDOMKEY: the key of a random shard that had one (nil only when every shard is empty).
 * The script/function variants also keep ScriptMemory up to date once every shard succeeded.
 */
import type { Request } from '../core/request.js';
import type { Fragment } from '../core/fragment.js';
import type { ProxyContext } from '../server/context.js';
import { ERR_FANOUT_UNEXPECTED, errorReply } from '../errors.js';
import { isErrorFrame, isOkFrame, readArrayElements, readBulk, readInteger } from '../resp/reply-reader.js';
import { arrayHeader, integerReply, NIL_BULK, OK } from '../resp/writer.js';

/** What broadcast dispatch records for these merges. */
export interface BroadcastContext {
  args: Buffer[];
  ctx: ProxyContext;
}

const ERR_DISAGREE = errorReply(
  'ERR keymux: the shards answered differently (run it on each shard directly to see which one differs)',
);

function firstError(fragments: Fragment[]): Buffer | null {
  for (const f of fragments) if (isErrorFrame(f.reply as Buffer)) return f.reply;
  return null;
}

export function mergeSame(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const first = fragments[0].reply as Buffer;
  for (let i = 1; i < fragments.length; i++) if (!first.equals(fragments[i].reply as Buffer)) return ERR_DISAGREE;
  return first;
}

export function mergeAnd(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  let all: number[] | null = null;
  for (const f of fragments) {
    const elements = readArrayElements(f.reply as Buffer);
    if (elements === null || (all !== null && elements.length !== all.length)) return ERR_FANOUT_UNEXPECTED;
    const values = elements.map(readInteger);
    if (values.some((v) => v === null)) return ERR_FANOUT_UNEXPECTED;
    if (all === null) all = values as number[];
    else for (let i = 0; i < all.length; i++) all[i] = all[i] !== 0 && values[i] !== 0 ? 1 : 0;
  }
  const out = all ?? [];
  return Buffer.concat([arrayHeader(out.length), ...out.map(integerReply)]);
}

export function mergeKeys(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const f of fragments) {
    const elements = readArrayElements(f.reply as Buffer);
    if (elements === null) return ERR_FANOUT_UNEXPECTED;
    for (const e of elements) {
      const key = readBulk(e);
      if (key === null) return ERR_FANOUT_UNEXPECTED;
      const name = key.toString('latin1');
      if (seen.has(name)) continue;
      seen.add(name);
      out.push(e);
    }
  }
  return Buffer.concat([arrayHeader(out.length), ...out]);
}

export function mergeRandom(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const found: Buffer[] = [];
  for (const f of fragments) if (readBulk(f.reply as Buffer) !== null) found.push(f.reply as Buffer);
  // No key anywhere: a shard's own null, in the client's protocol (`$-1` in RESP2, `_` in RESP3).
  if (found.length === 0) return fragments.length > 0 ? (fragments[0].reply as Buffer) : NIL_BULK;
  return found[Math.floor(Math.random() * found.length)];
}

function allOk(parent: Request): Buffer {
  const fragments = parent.fragments as Fragment[];
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  for (const f of fragments) if (!isOkFrame(f.reply as Buffer)) return ERR_FANOUT_UNEXPECTED;
  return OK;
}

function context(parent: Request): BroadcastContext {
  return parent.mergeContext as BroadcastContext;
}

/** SCRIPT LOAD: the SHA1 every shard answered; the body is remembered for shards added later. */
export function mergeScriptLoad(parent: Request): Buffer {
  const reply = mergeSame(parent);
  const sha = readBulk(reply);
  if (sha !== null) {
    const { args, ctx } = context(parent);
    ctx.scripts.rememberScript(sha.toString('latin1'), args[2]);
  }
  return reply;
}

export function mergeScriptFlush(parent: Request): Buffer {
  const reply = allOk(parent);
  if (reply === OK) context(parent).ctx.scripts.forgetScripts();
  return reply;
}

/** FUNCTION LOAD: the library name every shard answered; the command is remembered for shards added later. */
export function mergeFunctionLoad(parent: Request): Buffer {
  const reply = mergeSame(parent);
  const lib = readBulk(reply);
  if (lib !== null) {
    const { args, ctx } = context(parent);
    ctx.scripts.rememberFunctionLoad(lib.toString('latin1'), args);
  }
  return reply;
}

export function mergeFunctionDelete(parent: Request): Buffer {
  const reply = allOk(parent);
  if (reply === OK) {
    const { args, ctx } = context(parent);
    ctx.scripts.forgetLibrary(args[2].toString('latin1'));
  }
  return reply;
}

export function mergeFunctionFlush(parent: Request): Buffer {
  const reply = allOk(parent);
  if (reply === OK) context(parent).ctx.scripts.forgetFunctions();
  return reply;
}

export function mergeFunctionRestore(parent: Request): Buffer {
  const reply = allOk(parent);
  if (reply === OK) {
    const { args, ctx } = context(parent);
    ctx.scripts.rememberFunctionRestore(args);
  }
  return reply;
}
