/**
 * SORT and SORT_RO that keymux runs itself, because the shard of the sorted key cannot: a BY or GET pattern
 * containing `*` (it names keys on any shard), or a STORE destination on another shard. Slots and ring modes, outside
 * transactions (cluster mode and MULTI refuse them, as Redis Cluster does). Everything else about SORT is
 * forwarded to the key's shard untouched (server/dispatch/keyed.ts).
 *
 * As Redis does it (sort.c), in steps, each a batch of commands on the shared connections, alone in its client's
 * order (the client's earlier commands are answered first, its later ones wait: session.runAlone):
 * 1. the elements: `SORT key BY nosort` when keymux sorts by a BY pattern; otherwise the shard sorts and limits
 *    them itself (`SORT key [BY constant] [LIMIT] [DESC] [ALPHA]`), so native orders and LIMIT rules stay the
 *    server's own (a set stored without sorting is sorted ALPHA first, as Redis does; TYPE tells);
 * 2. BY: the weight of each element, `GET` or `HGET` (`pattern->field`) on the shard of the key the pattern names
 *    (the first `*` replaced by the element); a missing key, or one of another type, weighs nothing (score 0, or
 *    first in ALPHA order); numeric weights are parsed as strtod parses them, and one that is not a double fails
 *    the command with Redis's error; ties are broken by the elements' bytes; DESC reverses; LIMIT as Redis clamps it;
 * 3. GET: each pattern's value for each element of the result (`#` the element itself, a pattern without `*` nil);
 * 4. the reply, or STORE: MULTI, DEL dst, RPUSH dst values..., EXEC on the destination's shard (nil values stored as
 *    empty strings; an empty result deletes dst), answered with the number of values.
 * Not atomic across shards: each step sees the shards as they are then (Redis's own SORT is one atomic read).
 * A shard's error other than WRONGTYPE (unreachable, busy) fails the whole command with that error.
 */
import { CallbackOp } from '../backend/callback-op.js';
import type { BackendConnection } from '../backend/backend-connection.js';
import { equalsLower, parseInteger } from '../commands/keys.js';
import type { Request } from '../core/request.js';
import { errorReply } from '../errors.js';
import { isErrorFrame, readArrayElements, readBulk } from '../resp/reply-reader.js';
import { arrayHeader, bulkReply, commandFrame, integerReply } from '../resp/writer.js';
import type { Topology } from '../routing/topology.js';
import type { DispatchSession } from '../server/dispatch/types.js';

const ERR_SYNTAX = errorReply('ERR syntax error');
const ERR_NOT_INTEGER = errorReply('ERR value is not an integer or out of range');
const ERR_NOT_DOUBLE = errorReply("ERR One or more scores can't be converted into double");
const ERR_MIGRATING = errorReply(
  "ERR keymux: SORT with a BY/GET pattern or a STORE on another shard can't run while keys are migrating between " +
    'shards (a reload moved them); retry when the migration is done',
);
const ERR_UNEXPECTED = errorReply('ERR keymux: unexpected reply from a shard to SORT');
const NIL2 = Buffer.from('$-1\r\n');
const NIL3 = Buffer.from('_\r\n');
const HASH = Buffer.from('#');
const ARROW = Buffer.from('->');
const WRONGTYPE = Buffer.from('-WRONGTYPE');

const KW = {
  asc: Buffer.from('asc'),
  desc: Buffer.from('desc'),
  alpha: Buffer.from('alpha'),
  limit: Buffer.from('limit'),
  store: Buffer.from('store'),
  by: Buffer.from('by'),
  get: Buffer.from('get'),
};

/** One SORT invocation's options, parsed as sort.c parses them. */
export interface SortPlan {
  key: Buffer;
  /** The BY pattern, or null. */
  by: Buffer | null;
  /** BY names a pattern with `*`: keymux sorts by the weights it names. */
  byPattern: boolean;
  /** BY without `*` (BY nosort): no sorting, native order. */
  dontsort: boolean;
  limit: { start: number; count: number } | null;
  desc: boolean;
  alpha: boolean;
  gets: Buffer[];
  /** The STORE destination (the last one given), or null. */
  store: Buffer | null;
  /** Its index in the arguments (for the near cache). */
  storeIndex: number;
}

/** The plan, or Redis's error reply (syntax error, LIMIT not an integer). */
export function parseSort(args: Buffer[], readonly: boolean): SortPlan | Buffer {
  const plan: SortPlan = {
    key: args[1],
    by: null,
    byPattern: false,
    dontsort: false,
    limit: null,
    desc: false,
    alpha: false,
    gets: [],
    store: null,
    storeIndex: -1,
  };
  for (let j = 2; j < args.length; j++) {
    const a = args[j];
    const left = args.length - j - 1;
    if (equalsLower(a, KW.asc)) plan.desc = false;
    else if (equalsLower(a, KW.desc)) plan.desc = true;
    else if (equalsLower(a, KW.alpha)) plan.alpha = true;
    else if (equalsLower(a, KW.limit) && left >= 2) {
      const start = parseInteger(args[j + 1]);
      const count = parseInteger(args[j + 2]);
      if (Number.isNaN(start) || Number.isNaN(count)) return ERR_NOT_INTEGER;
      plan.limit = { start, count };
      j += 2;
    } else if (!readonly && equalsLower(a, KW.store) && left >= 1) {
      plan.store = args[j + 1];
      plan.storeIndex = j + 1;
      j++;
    } else if (equalsLower(a, KW.by) && left >= 1) {
      plan.by = args[j + 1];
      plan.byPattern = plan.by.includes(42 /* * */);
      plan.dontsort = !plan.byPattern;
      j++;
    } else if (equalsLower(a, KW.get) && left >= 1) {
      plan.gets.push(args[j + 1]);
      j++;
    } else return ERR_SYNTAX;
  }
  return plan;
}

/** Where a pattern points for one element: a string key, or a hash field; null when it names no key. */
export interface PatternTarget {
  key: Buffer;
  field: Buffer | null;
}

/** sort.c lookupKeyByPattern's naming: the first `*` replaced by the element; `->field` (non-empty) reads a hash. */
export function patternTarget(pattern: Buffer, element: Buffer): PatternTarget | null {
  const star = pattern.indexOf(42 /* * */);
  if (star < 0) return null;
  const arrow = pattern.indexOf(ARROW, star + 1);
  const hasField = arrow >= 0 && arrow + 2 < pattern.length;
  const end = hasField ? arrow : pattern.length;
  const key = Buffer.concat([pattern.subarray(0, star), element, pattern.subarray(star + 1, end)]);
  return { key, field: hasField ? pattern.subarray(arrow + 2) : null };
}

const DOUBLE = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+|inf(?:inity)?)$/i;

/** A weight as strtod reads it (leading spaces allowed, nothing after; overflow and NaN refused): null when not. */
export function parseWeight(text: Buffer): number | null {
  const s = text.toString('latin1').replace(/^[ \t\n\v\f\r]+/, '');
  if (s === '') return 0; // strtod("") consumes nothing and stops at the terminator: Redis takes it as 0
  if (!DOUBLE.test(s)) return null;
  const body = s.replace(/^[+-]/, '').toLowerCase();
  if (body.startsWith('inf')) return s.startsWith('-') ? -Infinity : Infinity;
  const v = body.startsWith('0x') ? parseInt(body, 16) * (s.startsWith('-') ? -1 : 1) : Number(s);
  return Number.isFinite(v) ? v : null; // 1e400: ERANGE
}

interface Item {
  element: Buffer;
  score: number;
  weight: Buffer | null;
}

/** Redis's sortCompare: numeric scores (ties by the elements' bytes), or ALPHA on the weights (missing first). */
function comparator(alpha: boolean, desc: boolean): (a: Item, b: Item) => number {
  const sign = desc ? -1 : 1;
  if (!alpha) {
    return (a, b) => sign * (a.score > b.score ? 1 : a.score < b.score ? -1 : Buffer.compare(a.element, b.element));
  }
  return (a, b) => {
    const x = a.weight;
    const y = b.weight;
    if (x === null || y === null) return sign * (x === y ? 0 : x === null ? -1 : 1);
    return sign * Buffer.compare(x, y);
  };
}

/** LIMIT as sort.c clamps it: the [start, end] (inclusive) slice of `n` sorted elements. */
export function limitRange(limit: SortPlan['limit'], n: number): [number, number] {
  const ls = limit?.start ?? 0;
  const lc = limit?.count ?? -1;
  let start = ls < 0 ? 0 : ls;
  let end = lc < 0 ? n - 1 : start + lc - 1;
  if (start >= n) {
    start = n - 1;
    end = n - 2;
  }
  if (end >= n) end = n - 1;
  return [start, end];
}

/** Runs one planned SORT and answers `req`. */
export function runSort(session: DispatchSession, req: Request, topo: Topology, plan: SortPlan): void {
  if (topo.migration !== null && topo.migration.active) {
    req.deliver(ERR_MIGRATING);
    return;
  }
  if (!session.runAlone(req)) return;
  const nc = session.ctx.nearCache;
  if (nc !== null && plan.store !== null) nc.write(req, [plan.storeIndex], 1, 1);
  new SortRun(session, req, topo, plan).start();
}

class SortRun {
  private readonly session: DispatchSession;
  private readonly req: Request;
  private readonly topo: Topology;
  private readonly plan: SortPlan;

  constructor(session: DispatchSession, req: Request, topo: Topology, plan: SortPlan) {
    this.session = session;
    this.req = req;
    this.topo = topo;
    this.plan = plan;
  }

  /** The shared connection of the shard holding `key`, the one this client's commands to it use. */
  private conn(key: Buffer): BackendConnection | null {
    const topo = this.topo;
    const shard = topo.shards[topo.router.shardFor(key)];
    return shard === undefined ? null : shard.pool.pick(this.session.id);
  }

  private call(key: Buffer, args: Array<Buffer | string>, done: (reply: Buffer) => void): void {
    const conn = this.conn(key);
    if (conn === null) {
      done(errorReply('CLUSTERDOWN Hash slot not served'));
      return;
    }
    const frame = commandFrame(args);
    conn.send(new CallbackOp(frame, done, this.session.id), frame);
  }

  start(): void {
    const p = this.plan;
    if (p.byPattern) {
      this.call(p.key, ['SORT', p.key, 'BY', 'nosort'], (reply) => this.gotElements(reply, true));
      return;
    }
    if (p.store !== null && p.dontsort) {
      // sort.c: a set stored without sorting is sorted ALPHA (its native order is not deterministic).
      this.call(p.key, ['TYPE', p.key], (reply) => {
        if (isErrorFrame(reply)) this.req.deliver(reply);
        else this.fetchSorted(reply.toString('latin1', 1, 4) === 'set');
      });
      return;
    }
    this.fetchSorted(false);
  }

  /** The shard sorts (or keeps the native order) and limits; keymux adds GET and STORE. */
  private fetchSorted(setToAlpha: boolean): void {
    const p = this.plan;
    const args: Array<Buffer | string> = ['SORT', p.key];
    if (p.by !== null && !setToAlpha) args.push('BY', p.by);
    if (p.limit !== null) args.push('LIMIT', String(p.limit.start), String(p.limit.count));
    if (p.desc) args.push('DESC');
    if (p.alpha || setToAlpha) args.push('ALPHA');
    this.call(p.key, args, (reply) => this.gotElements(reply, false));
  }

  private gotElements(reply: Buffer, sortHere: boolean): void {
    if (isErrorFrame(reply)) {
      this.req.deliver(reply);
      return;
    }
    const frames = readArrayElements(reply);
    const elements = frames?.map(readBulk);
    if (elements === undefined || elements.some((e) => e === null)) {
      this.req.deliver(ERR_UNEXPECTED);
      return;
    }
    const list = elements as Buffer[];
    if (!sortHere) {
      this.withOutput(list);
      return;
    }
    const by = this.plan.by as Buffer;
    this.lookup(
      list.map((e) => patternTarget(by, e)),
      (weights) => {
        const p = this.plan;
        const items: Item[] = new Array<Item>(list.length);
        for (let i = 0; i < list.length; i++) {
          const w = weights[i];
          let score = 0;
          if (!p.alpha && w !== null) {
            const v = parseWeight(w);
            if (v === null) {
              this.req.deliver(ERR_NOT_DOUBLE);
              return;
            }
            score = v;
          }
          items[i] = { element: list[i], score, weight: w };
        }
        items.sort(comparator(p.alpha, p.desc));
        const [start, end] = limitRange(p.limit, items.length);
        const out: Buffer[] = [];
        for (let i = start; i <= end; i++) out.push(items[i].element);
        this.withOutput(out);
      },
    );
  }

  /** GET patterns applied to the result, then the reply or STORE. */
  private withOutput(elements: Buffer[]): void {
    const gets = this.plan.gets;
    if (gets.length === 0) {
      this.finish(elements);
      return;
    }
    const targets: Array<PatternTarget | null> = [];
    const literal: Array<Buffer | null> = []; // GET #: the element itself, no lookup
    for (const e of elements) {
      for (const g of gets) {
        const isHash = g.equals(HASH);
        literal.push(isHash ? e : null);
        targets.push(isHash ? null : patternTarget(g, e));
      }
    }
    this.lookup(targets, (values) => this.finish(values.map((v, i) => literal[i] ?? v)));
  }

  /** Reads every target (GET, or HGET for a field) on its shard; a missing key or another type is null. */
  private lookup(targets: Array<PatternTarget | null>, done: (values: Array<Buffer | null>) => void): void {
    const values = new Array<Buffer | null>(targets.length).fill(null);
    let left = 1; // one for the loop below, so a batch of synchronous answers cannot finish early
    let failed: Buffer | null = null;
    const settle = (): void => {
      if (--left > 0) return;
      if (failed !== null) this.req.deliver(failed);
      else done(values);
    };
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i];
      if (t === null) continue;
      left++;
      const args = t.field === null ? ['GET', t.key] : ['HGET', t.key, t.field];
      this.call(t.key, args, (reply) => {
        if (isErrorFrame(reply)) {
          if (failed === null && !startsWith(reply, WRONGTYPE)) failed = reply;
        } else values[i] = readBulk(reply);
        settle();
      });
    }
    settle();
  }

  private finish(values: Array<Buffer | null>): void {
    const p = this.plan;
    const req = this.req;
    if (p.store === null) {
      const nil = req.protocol === 3 ? NIL3 : NIL2;
      req.deliver(Buffer.concat([arrayHeader(values.length), ...values.map((v) => (v === null ? nil : bulkReply(v)))]));
      return;
    }
    const dst = p.store;
    const stored = values.map((v) => v ?? Buffer.alloc(0));
    // One transaction on the destination's shard, written as one batch on one connection: nothing interleaves.
    const replies: Buffer[] = [];
    const collect = (reply: Buffer): void => {
      replies.push(reply);
      if (replies.length < (stored.length > 0 ? 4 : 3)) return;
      const exec = replies[replies.length - 1];
      const failed = replies.find(isErrorFrame);
      if (failed !== undefined) req.deliver(failed);
      else if (readArrayElements(exec) === null) req.deliver(ERR_UNEXPECTED);
      else req.deliver(integerReply(stored.length));
    };
    this.call(dst, ['MULTI'], collect);
    this.call(dst, ['DEL', dst], collect);
    if (stored.length > 0) this.call(dst, ['RPUSH', dst, ...stored], collect);
    this.call(dst, ['EXEC'], collect);
  }
}

function startsWith(frame: Buffer, prefix: Buffer): boolean {
  return frame.length >= prefix.length && frame.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}
