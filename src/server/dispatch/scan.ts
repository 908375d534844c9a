/**
 * SCAN across shards: one client cursor (keyspace/scan-cursor.ts) walks the shards one after the other, each with
 * its own SCAN cursor; MATCH, COUNT and TYPE go to the shard unchanged (so does any error in them). A page
 * comes from one shard; moving on to the next shard may give an empty page with a non-zero cursor, which Redis's
 * own SCAN also does.
 *
 * Keys in motion. Redis promises that a key present for the whole walk is returned at least once. A reload that
 * moves slots (or ring positions) while a walk is under way moves keys between shards behind its back: a key
 * going from a shard not walked yet to one already walked would be missed. So the walk is over the *logical*
 * shards of the routing it began with (its epoch): logical shard i is every key that routing put on shard i.
 * While nothing has moved since the walk began (same routing, no migration running) logical shard i is exactly
 * physical shard i and the walk is plain SCAN. Otherwise logical shard i is walked in 2S - 1 phases: every other
 * shard, keeping only keys the epoch routing puts on i (keys still on their way to i); then shard i itself
 * (everything: a key that is there is returned); then every other shard again, filtered the same way (keys that
 * left i while it was walked). A key that moves once during its logical shard's walk is on a shard walked after
 * the move in each case: moving into i, before i's own phase, which is walked later; moving out of i during or
 * before that phase, to a shard walked again afterwards; moving between two other shards, to one walked again in
 * the last phases. So every key present for the whole walk that moves at most once meanwhile is returned (a key
 * may be returned more than once, as Redis allows). The price, S x (2S - 1) shard walks instead of S, is paid only
 * by walks that overlap a reload. Limits (README): a walk spanning a reload that changes the shard list itself
 * (count or order of addresses) restarts its guarantee, as the shard indexes in its cursor then name other shards.
 */
import { ERR_FANOUT_UNEXPECTED, errorReply } from '../../errors.js';
import { Fragment } from '../../core/fragment.js';
import type { Request } from '../../core/request.js';
import { readArrayElements, readBulk, isErrorFrame } from '../../resp/reply-reader.js';
import { arrayHeader, bulkHeader, bulkReply, CRLF } from '../../resp/writer.js';
import {
  decodeCursor,
  encodeCursor,
  ownPhase,
  phaseCount,
  phaseShard,
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
const SCAN = Buffer.from('SCAN');

interface ScanContext {
  ctx: ProxyContext;
  start: ScanEpoch;
  pos: ScanPosition;
  shards: number;
  filter: boolean;
}

/** True when keys may have moved since the walk began: another routing now, or a migration under way. */
function moving(ctx: ProxyContext, start: ScanEpoch, topo: Topology): boolean {
  return ctx.scanEpochs.of(topo).signature !== start.signature || (topo.migration !== null && topo.migration.active);
}

export const dispatchScan: DispatchHandler = (session, req, spec, topo) => {
  const ctx = session.ctx;
  const shards = topo.shards.length;
  const current = ctx.scanEpochs.of(topo);
  const pos = decodeCursor(req.args[1], shards);
  if (pos === null || shards === 0) {
    req.deliver(ERR_INVALID_CURSOR);
    return;
  }
  let start = current;
  if (pos.epoch === 0 && pos.shard === 0 && pos.phase === 0 && pos.cursor === 0n) {
    pos.epoch = current.epoch; // a new walk
  } else {
    const recorded = ctx.scanEpochs.get(pos.epoch);
    if (recorded !== undefined && recorded.addresses === current.addresses) start = recorded;
    else pos.epoch = current.epoch;
  }
  if (pos.phase === 0 && pos.cursor === 0n && !moving(ctx, start, topo)) pos.phase = ownPhase(shards);
  const physical = phaseShard(pos.shard, pos.phase, shards);
  const args = req.args;
  const parts: Buffer[] = [arrayHeader(args.length), bulkHeader(SCAN.length), SCAN, CRLF];
  const cursor = Buffer.from(pos.cursor.toString(), 'latin1');
  parts.push(bulkHeader(cursor.length), cursor, CRLF);
  for (let i = 2; i < args.length; i++) parts.push(bulkHeader(args[i].length), args[i], CRLF);
  const context: ScanContext = { ctx, start, pos, shards, filter: pos.phase !== ownPhase(shards) };
  req.mergeContext = context;
  const fragment = new Fragment(req, physical, [], Buffer.concat(parts), mergeScan, -1);
  req.fragments = [fragment];
  req.remaining = 1;
  sendFragments(session, [fragment], topo, spec.readonly);
};

function mergeScan(parent: Request): Buffer {
  const { ctx, start, pos, shards, filter } = parent.mergeContext as ScanContext;
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
  const next: ScanPosition = { ...pos };
  const shardCursor = BigInt(nextText.toString('latin1'));
  if (shardCursor !== 0n) {
    next.cursor = shardCursor;
  } else {
    next.cursor = 0n;
    const lastPhase =
      next.phase === phaseCount(shards) - 1 || (next.phase === ownPhase(shards) && !moving(ctx, start, ctx.topology));
    if (lastPhase) {
      next.shard++;
      next.phase = 0;
    } else {
      next.phase++;
    }
  }
  const text = next.shard >= shards ? '0' : encodeCursor(next, shards);
  if (text === null) return ERR_CURSOR_TOO_LARGE;
  return Buffer.concat([arrayHeader(2), bulkReply(text), arrayHeader(kept.length), ...kept]);
}
