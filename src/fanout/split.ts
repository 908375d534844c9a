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
import { CRLF, arrayHeader, bulkHeader } from '../resp/writer.js';

/**
 * Groups the keys of `req`. For shape 'keys' the keys are args[1..]; for 'key-value' they are args[1], args[3],
 * ... Returns the group of the first key when all keys share it (groups null), or -1 and the groups
 * (group -> key ordinals, in first-seen order) otherwise.
 */
export function groupKeys(
  req: Request,
  shape: FanoutShape,
  router: Router,
): { single: number; groups: Map<number, number[]> | null } {
  const args = req.args;
  const stride = shape === 'key-value' ? 2 : 1;
  const keyCount = (args.length - 1) / stride;
  const first = router.groupFor(args[1]);
  let k = 1;
  for (; k < keyCount; k++) if (router.groupFor(args[1 + k * stride]) !== first) break;
  if (k === keyCount) return { single: first, groups: null };
  const groups = new Map<number, number[]>();
  const firsts: number[] = [];
  for (let i = 0; i < k; i++) firsts.push(i);
  groups.set(first, firsts);
  for (let i = k; i < keyCount; i++) {
    const g = router.groupFor(args[1 + i * stride]);
    const list = groups.get(g);
    if (list === undefined) groups.set(g, [i]);
    else list.push(i);
  }
  return { single: -1, groups };
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
  groups: Map<number, number[]>,
  router: Router,
  merge: MergeFn,
): Fragment[] {
  const args = req.args;
  const name = args[0];
  const stride = shape === 'key-value' ? 2 : 1;
  const fragments: Fragment[] = [];
  for (const [group, ordinals] of groups) {
    const parts: Buffer[] = [arrayHeader(1 + ordinals.length * stride), bulkHeader(name.length), name, CRLF];
    for (const ord of ordinals) {
      for (let j = 0; j < stride; j++) {
        const a = args[1 + ord * stride + j];
        parts.push(bulkHeader(a.length), a, CRLF);
      }
    }
    fragments.push(new Fragment(req, router.shardOfGroup(group), ordinals, Buffer.concat(parts), merge, group));
  }
  req.fragments = fragments;
  req.remaining = fragments.length;
  return fragments;
}

/** One fragment per shard, each carrying `frame` unchanged (FLUSHALL, DBSIZE, INFO keyspace...). */
export function broadcastFragments(req: Request, shardCount: number, frame: Buffer, merge: MergeFn): Fragment[] {
  const fragments: Fragment[] = [];
  for (let shard = 0; shard < shardCount; shard++) fragments.push(new Fragment(req, shard, [], frame, merge, -1));
  req.fragments = fragments;
  req.remaining = fragments.length;
  return fragments;
}
