/**
 * Splits a multi-key command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) into one sub-command per group (per shard
 * for YAML slot maps and rings, per slot on a Redis Cluster: see Router), keeping the client's key order inside
 * each fragment and recording each key's position for the merge. When every key lands in one group the caller
 * forwards the client's own bytes instead (no split, no merge).
 * Broadcast commands (FLUSHALL, DBSIZE...) get one identical fragment per shard.
 */
import { argAt, type Request } from '../core/request.js';
import { Fragment, type MergeFn } from '../core/fragment.js';
import type { FanoutShape } from '../commands/spec.js';
import type { Router } from '../routing/router.js';
import { arrayHeader } from '../resp/writer.js';

/** The groups a command's keys fall in, in first-seen order, and the key ordinals of each, in the client's order. */
export interface KeyGroups {
  groups: number[];
  ordinals: number[][];
}

/**
 * groupKeys' table from a group to its position in KeyGroups.groups (-1: not seen), indexed by group: a shard index,
 * or a slot on a Redis Cluster (below 16384). Left all -1 after each call. A Map did the same at several times the
 * cost (a split of 10 keys spent most of its time hashing the Map's keys).
 */
const positionOfGroup = new Int32Array(16384).fill(-1);

/**
 * Groups the keys of `req`. For shape 'keys' the keys are args[1..]; for 'key-value' they are args[1], args[3],
 * ... Returns the group of the first key when all keys share it (groups null), or -1 and the groups otherwise.
 */
export function groupKeys(
  req: Request,
  shape: FanoutShape,
  router: Router,
): { single: number; groups: KeyGroups | null } {
  const args = req.args;
  const stride = shape === 'key-value' ? 2 : 1;
  const keyCount = (args.length - 1) / stride;
  const first = router.groupFor(args[1]);
  let k = 1;
  for (; k < keyCount; k++) if (router.groupFor(args[1 + k * stride]) !== first) break;
  if (k === keyCount) return { single: first, groups: null };
  const firsts: number[] = [];
  for (let i = 0; i < k; i++) firsts.push(i);
  const groups = [first];
  const ordinals = [firsts];
  const position = positionOfGroup;
  if (first < position.length) position[first] = 0;
  for (let i = k; i < keyCount; i++) {
    const g = router.groupFor(args[1 + i * stride]);
    const at = g < position.length ? position[g] : groups.indexOf(g);
    if (at >= 0) ordinals[at].push(i);
    else {
      if (g < position.length) position[g] = groups.length;
      groups.push(g);
      ordinals.push([i]);
    }
  }
  for (let i = 0; i < groups.length; i++) if (groups[i] < position.length) position[groups[i]] = -1;
  return { single: -1, groups: { groups, ordinals } };
}

/** True when the keys of `req` fall in more than one group (stops at the first key that differs). */
export function spansGroups(req: Request, shape: FanoutShape, router: Router): boolean {
  const n = req.args.length;
  const stride = shape === 'key-value' ? 2 : 1;
  const first = router.groupFor(argAt(req, 1));
  for (let i = 1 + stride; i < n; i += stride) if (router.groupFor(argAt(req, i)) !== first) return true;
  return false;
}

/** Builds the fragments for the groups; sets req.fragments and req.remaining (before anything is sent). */
export function buildFragments(
  req: Request,
  shape: FanoutShape,
  keyGroups: KeyGroups,
  router: Router,
  merge: MergeFn,
): Fragment[] {
  const args = req.args;
  const stride = shape === 'key-value' ? 2 : 1;
  const fragments: Fragment[] = [];
  const { groups, ordinals } = keyGroups;
  for (let i = 0; i < groups.length; i++) {
    const frame = fragmentFrame(args, ordinals[i], stride);
    fragments.push(new Fragment(req, router.shardOfGroup(groups[i]), ordinals[i], frame, merge, groups[i]));
  }
  req.fragments = fragments;
  req.remaining = fragments.length;
  return fragments;
}

/** Decimal digits of a non-negative integer below 2^31. */
function digitCount(n: number): number {
  let d = 1;
  while (n >= 10) {
    n = (n / 10) | 0;
    d++;
  }
  return d;
}

/** Writes `$n\r\n` at `p` of `out`; returns the position after it. */
function putBulkHeader(out: Buffer, p: number, n: number): number {
  out[p] = 36; // $
  const end = p + 1 + digitCount(n);
  let q = end;
  do {
    out[--q] = 48 + (n % 10);
    n = (n / 10) | 0;
  } while (n > 0);
  out[end] = 13;
  out[end + 1] = 10;
  return end + 2;
}

/**
 * The sub-command frame of one fragment: the command name and, for each key ordinal, its key (and value, stride
 * 2), encoded straight into one buffer of the exact size (no header strings, no list of parts to concatenate).
 */
function fragmentFrame(args: Buffer[], ordinals: number[], stride: number): Buffer {
  const name = args[0];
  const count = 1 + ordinals.length * stride;
  const header = arrayHeader(count);
  let size = header.length + 1 + digitCount(name.length) + 2 + name.length + 2;
  for (let i = 0; i < ordinals.length; i++) {
    for (let j = 0; j < stride; j++) {
      const n = args[1 + ordinals[i] * stride + j].length;
      size += 1 + digitCount(n) + 2 + n + 2;
    }
  }
  const out = Buffer.allocUnsafe(size);
  out.set(header, 0);
  let p = putBulkHeader(out, header.length, name.length);
  out.set(name, p);
  p += name.length;
  out[p++] = 13;
  out[p++] = 10;
  for (let i = 0; i < ordinals.length; i++) {
    for (let j = 0; j < stride; j++) {
      const a = args[1 + ordinals[i] * stride + j];
      p = putBulkHeader(out, p, a.length);
      out.set(a, p);
      p += a.length;
      out[p++] = 13;
      out[p++] = 10;
    }
  }
  return out;
}

/** One fragment per shard, each carrying `frame` unchanged (FLUSHALL, DBSIZE, INFO keyspace...). */
export function broadcastFragments(req: Request, shardCount: number, frame: Buffer, merge: MergeFn): Fragment[] {
  const fragments: Fragment[] = [];
  for (let shard = 0; shard < shardCount; shard++) fragments.push(new Fragment(req, shard, [], frame, merge, -1));
  req.fragments = fragments;
  req.remaining = fragments.length;
  return fragments;
}
