/**
 * SCAN across shards: one client cursor (keyspace/scan-cursor.ts) walks the shards one after the other, each with
 * its own SCAN cursor; MATCH, COUNT and TYPE go to the shard unchanged (so does any error in them). A page
 * comes from one shard; moving on to the next shard may give an empty page with a non-zero cursor, which Redis's
 * own SCAN also does.
 *
 * Keys in motion. Redis promises that a key present for the whole walk is returned at least once. A reload that
 * moves slots (or ring positions), adds shards or removes them while a walk is under way moves keys between shards
 * behind its back: a key going from a shard not walked yet to one already walked would be missed. So the walk is
 * over the *logical* shards of the routing it began with (its epoch, keyspace/scan-epochs.ts, which also records
 * that routing's shard list: the cursor is read with its shard count, and its shard numbers name that list's
 * shards, found in the current topology by address). Logical shard i is every key that routing put on shard i.
 * While nothing has moved since the walk began (same routing, no migration running) logical shard i is exactly
 * physical shard i and the walk is plain SCAN. Otherwise logical shard i is walked in 2S - 1 phases: every other
 * shard of the walk's routing, keeping only keys that routing puts on i (keys still on their way to i); then shard
 * i itself (everything: a key that is there is returned); then every other shard again, filtered the same way
 * (keys that left i while it was walked). After the last logical shard come the shards the current topology has
 * and the walk's routing had not (added during the walk), each scanned whole: a key moved onto one of them had
 * left a shard of the walk's routing, and unless that shard's own phase had returned it first, it moved before
 * these last scans began. A key that moves once during the walk is on a shard walked after the move in each case:
 * moving into i, before i's own phase, which is walked later; moving out of i during or before that phase, to a
 * shard walked again afterwards (one of the walk's routing, or an added one); moving between two other shards, to
 * one walked again in the last phases. So every key present for the whole walk that moves at most once meanwhile is
 * returned (a key may be returned more than once, as Redis allows). The price, S x (2S - 1) shard walks instead of
 * S, is paid only by walks that overlap a reload.
 *
 * A shard the walk's routing had and the current topology has not (removed by the reload) has no pool any more:
 * while a migration runs (its keys are being moved off it) it is read through the migration's connection to it;
 * once none runs it holds no key keymux serves (they were moved, or with migration off no client can reach them),
 * and its phases are skipped (an empty page).
 */
import { ERR_FANOUT_UNEXPECTED, errorReply } from '../../errors.js';
import { Fragment } from '../../core/fragment.js';
import { UNIT_AT_BACKEND, type Request } from '../../core/request.js';
import { readArrayElements, readBulk, isErrorFrame } from '../../resp/reply-reader.js';
import { arrayHeader, bulkHeader, bulkReply, CRLF } from '../../resp/writer.js';
import {
  ADDED_SHARDS,
  cursorEpoch,
  encodeCursor,
  ownPhase,
  phaseCount,
  phaseShard,
  readCursor,
  splitCursor,
  type ScanPosition,
} from '../../keyspace/scan-cursor.js';
import type { ScanEpoch } from '../../keyspace/scan-epochs.js';
import type { ProxyContext } from '../context.js';
import type { Topology } from '../../routing/topology.js';
import { sendFragments } from './fanout.js';
import type { DispatchHandler } from './types.js';

const ERR_INVALID_CURSOR = errorReply('ERR invalid cursor');
const ERR_CURSOR_TOO_LARGE = errorReply(
  "ERR keymux: a shard's SCAN cursor is too large to combine with the shard number in one 64-bit cursor",
);
const ERR_TOO_MANY_ADDED = errorReply(
  `ERR keymux: more than ${ADDED_SHARDS} shards were added during this SCAN walk; start it again`,
);
const SCAN = Buffer.from('SCAN');
/** SCAN's reply "0" and no keys: a shard's last page (what a skipped phase merges), or the end of a walk. */
const EMPTY_LAST_PAGE = Buffer.from('*2\r\n$1\r\n0\r\n*0\r\n');

interface ScanContext {
  ctx: ProxyContext;
  start: ScanEpoch;
  pos: ScanPosition;
  filter: boolean;
}

/** True when keys may have moved since the walk began: another routing now, or a migration under way. */
function moving(ctx: ProxyContext, start: ScanEpoch, topo: Topology): boolean {
  return ctx.scanEpochs.of(topo).signature !== start.signature || (topo.migration !== null && topo.migration.active);
}

/** Index in `current` of shard `index` of the walk's routing, or -1 when the current topology has no such shard. */
function physicalShard(start: ScanEpoch, current: ScanEpoch, index: number): number {
  if (start.shardList === current.shardList) return index;
  const id = start.shards[index].id;
  return current.shards.findIndex((s) => s.id === id);
}

/** Indexes in `current` of the shards the walk's routing did not have, in order. */
function addedShards(start: ScanEpoch, current: ScanEpoch): number[] {
  if (start.shardList === current.shardList) return [];
  const had = new Set(start.shards.map((s) => s.id));
  const added: number[] = [];
  current.shards.forEach((s, i) => {
    if (!had.has(s.id)) added.push(i);
  });
  return added;
}

export const dispatchScan: DispatchHandler = (session, req, spec, topo) => {
  const ctx = session.ctx;
  const current = ctx.scanEpochs.of(topo);
  const v = readCursor(req.args[1]);
  if (v === null || current.shards.length === 0) {
    req.deliver(ERR_INVALID_CURSOR);
    return;
  }
  // The epoch first: it says which routing, and so how many shards, the rest of the cursor counts in. An unknown
  // one (see scan-epochs.ts) is read against the current routing.
  let start = current;
  if (v !== 0n) {
    const recorded = ctx.scanEpochs.get(cursorEpoch(v));
    if (recorded !== undefined && recorded.shards.length > 0) start = recorded;
  }
  const shards = start.shards.length;
  const pos = splitCursor(v, shards);
  pos.epoch = start.epoch;
  let physical: number;
  let filter = false;
  let removed: string | null = null;
  if (pos.shard < shards) {
    if (pos.phase === 0 && pos.cursor === 0n && !moving(ctx, start, topo)) pos.phase = ownPhase(shards);
    const walked = phaseShard(pos.shard, pos.phase, shards);
    physical = physicalShard(start, current, walked);
    if (physical < 0) removed = start.shards[walked].address;
    filter = pos.phase !== ownPhase(shards);
  } else {
    physical = addedShards(start, current)[pos.phase] ?? -1;
    if (physical < 0) {
      req.deliver(EMPTY_LAST_PAGE); // a later reload took the rest of the added shards away again
      return;
    }
  }
  const args = req.args;
  const parts: Buffer[] = [arrayHeader(args.length), bulkHeader(SCAN.length), SCAN, CRLF];
  const cursor = Buffer.from(pos.cursor.toString(), 'latin1');
  parts.push(bulkHeader(cursor.length), cursor, CRLF);
  for (let i = 2; i < args.length; i++) parts.push(bulkHeader(args[i].length), args[i], CRLF);
  const context: ScanContext = { ctx, start, pos, filter };
  req.mergeContext = context;
  const fragment = new Fragment(req, Math.max(physical, 0), [], Buffer.concat(parts), mergeScan, -1);
  req.fragments = [fragment];
  req.remaining = 1;
  if (removed === null) {
    sendFragments(session, [fragment], topo, spec.readonly);
    return;
  }
  const conn = topo.migration?.connectionWhileActive(removed) ?? null;
  if (conn === null) {
    fragment.deliver(EMPTY_LAST_PAGE);
    return;
  }
  fragment.node = removed;
  fragment.state = UNIT_AT_BACKEND;
  conn.send(fragment, fragment.frame);
};

function mergeScan(parent: Request): Buffer {
  const { ctx, start, pos, filter } = parent.mergeContext as ScanContext;
  const reply = (parent.fragments as Fragment[])[0].reply as Buffer;
  if (isErrorFrame(reply)) return reply;
  const parts = readArrayElements(reply);
  const nextText = parts === null || parts.length !== 2 ? null : readBulk(parts[0]);
  const keys = parts === null || parts.length !== 2 ? null : readArrayElements(parts[1]);
  if (nextText === null || keys === null) return ERR_FANOUT_UNEXPECTED;
  let kept = keys;
  if (filter) {
    kept = [];
    for (const k of keys) {
      const key = readBulk(k);
      if (key !== null && start.router.shardFor(key) === pos.shard) kept.push(k);
    }
  }
  const shards = start.shards.length;
  const next: ScanPosition = { ...pos };
  const shardCursor = BigInt(nextText.toString('latin1'));
  if (shardCursor !== 0n) {
    next.cursor = shardCursor;
  } else {
    next.cursor = 0n;
    const lastPhase =
      next.shard < shards &&
      (next.phase === phaseCount(shards) - 1 || (next.phase === ownPhase(shards) && !moving(ctx, start, ctx.topology)));
    if (lastPhase) {
      next.shard++;
      next.phase = 0;
    } else {
      next.phase++;
    }
  }
  let done = false;
  if (next.shard === shards) {
    const added = addedShards(start, ctx.scanEpochs.of(ctx.topology)).length;
    if (next.phase >= added) done = true;
    else if (next.phase >= ADDED_SHARDS) return ERR_TOO_MANY_ADDED;
  }
  const text = done ? '0' : encodeCursor(next, shards);
  if (text === null) return ERR_CURSOR_TOO_LARGE;
  return Buffer.concat([arrayHeader(2), bulkReply(text), arrayHeader(kept.length), ...kept]);
}
