/**
 * Replies of PUBLISH / SPUBLISH and PUBSUB that keymux rewrites from what nodes answered, so that they count
 * keymux's clients rather than keymux: a node counts keymux's shared subscriber connection as one receiver per
 * subscription, and keymux knows how many of its own clients that subscription reaches (hub.ts). Other
 * subscribers of the node (direct clients, other keymux instances) are counted as the node counts them.
 * - PUBLISH / SPUBLISH: the one node's count, keymux's subscriptions there replaced by its subscribers.
 * - PUBSUB NUMSUB / SHARDNUMSUB: per channel, the sum over every node, the same replacement.
 * - PUBSUB NUMPAT: unique patterns. keymux subscribes a pattern on every shard in slots and ring modes (the
 *   largest count of other patterns on one shard, plus keymux's own), and on one node in cluster mode (the sum
 *   of other patterns over the nodes, plus keymux's own).
 * - PUBSUB CHANNELS / SHARDCHANNELS [pattern]: the union over every node and keymux's own subscriptions,
 *   without names a node lists only because keymux's unsubscription has not reached it yet.
 * Refuse rather than guess: if a node answered an error, the client gets that error.
 */
import type { Request } from '../core/request.js';
import type { Fragment } from '../core/fragment.js';
import { ERR_FANOUT_UNEXPECTED } from '../errors.js';
import { isErrorFrame, readArrayElements, readBulk, readInteger } from '../resp/reply-reader.js';
import { arrayHeader, bulkReply, integerReply } from '../resp/writer.js';
import { KIND_PATTERN, type SubKind } from './frames.js';
import { globMatch } from './glob.js';
import type { PubSubHub } from './hub.js';

/** What a PUBLISH / SPUBLISH carries in its mergeContext. */
export interface PublishContext {
  readonly hub: PubSubHub;
  readonly kind: SubKind;
  readonly channel: Buffer;
  readonly key: string;
  /** The node it was sent to (null: not routed yet). */
  address: string | null;
  /** It has waited at the publish gate once (it never waits twice). */
  gated: boolean;
}

/** What a PUBSUB introspection command carries in its mergeContext. */
export interface IntrospectionContext {
  readonly hub: PubSubHub;
  readonly kind: SubKind;
  /** Address of each shard, by fragment shard index. */
  readonly addresses: readonly string[];
  /** Patterns are subscribed on one node (cluster mode) rather than on every shard. */
  readonly cluster: boolean;
}

function fragmentsOf(parent: Request): Fragment[] {
  return parent.fragments as Fragment[];
}

function firstError(fragments: Fragment[]): Buffer | null {
  for (const f of fragments) if (isErrorFrame(f.reply as Buffer)) return f.reply;
  return null;
}

export function mergePublish(parent: Request): Buffer {
  const reply = fragmentsOf(parent)[0].reply as Buffer;
  const n = readInteger(reply);
  const ctx = parent.mergeContext as PublishContext;
  if (n === null || ctx.address === null) return reply;
  const count = ctx.hub.receivers(ctx.kind, ctx.channel, ctx.key, ctx.address, n);
  return count === n ? reply : integerReply(count);
}

export function mergeNumsub(parent: Request): Buffer {
  const fragments = fragmentsOf(parent);
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const ctx = parent.mergeContext as IntrospectionContext;
  const names = parent.args.slice(2);
  const keys = names.map((n) => n.toString('latin1'));
  const sums = new Array<number>(names.length).fill(0);
  for (const f of fragments) {
    const elements = readArrayElements(f.reply as Buffer);
    if (elements === null || elements.length !== names.length * 2) return ERR_FANOUT_UNEXPECTED;
    const address = ctx.addresses[f.shard];
    for (let i = 0; i < names.length; i++) {
      const n = readInteger(elements[2 * i + 1]);
      if (n === null) return ERR_FANOUT_UNEXPECTED;
      sums[i] += Math.max(0, n - ctx.hub.presentOn(ctx.kind, keys[i], address));
    }
  }
  const parts: Buffer[] = [arrayHeader(names.length * 2)];
  for (let i = 0; i < names.length; i++) {
    parts.push(bulkReply(names[i]), integerReply(sums[i] + ctx.hub.localCount(ctx.kind, keys[i])));
  }
  return Buffer.concat(parts);
}

export function mergeNumpat(parent: Request): Buffer {
  const fragments = fragmentsOf(parent);
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const ctx = parent.mergeContext as IntrospectionContext;
  let others = 0;
  for (const f of fragments) {
    const n = readInteger(f.reply as Buffer);
    if (n === null) return ERR_FANOUT_UNEXPECTED;
    const theirs = Math.max(0, n - ctx.hub.patternsOn(ctx.addresses[f.shard]));
    others = ctx.cluster ? others + theirs : Math.max(others, theirs);
  }
  return integerReply(others + ctx.hub.entryCount(KIND_PATTERN));
}

export function mergeChannels(parent: Request): Buffer {
  const fragments = fragmentsOf(parent);
  const failed = firstError(fragments);
  if (failed !== null) return failed;
  const ctx = parent.mergeContext as IntrospectionContext;
  const pattern = parent.args.length > 2 ? parent.args[2] : null;
  const seen = new Map<string, Buffer>();
  for (const f of fragments) {
    const elements = readArrayElements(f.reply as Buffer);
    if (elements === null) return ERR_FANOUT_UNEXPECTED;
    const address = ctx.addresses[f.shard];
    for (const e of elements) {
      const name = readBulk(e);
      if (name === null) return ERR_FANOUT_UNEXPECTED;
      const key = name.toString('latin1');
      if (!seen.has(key) && !ctx.hub.leavingOnly(ctx.kind, key, address)) seen.set(key, e);
    }
  }
  for (const entry of ctx.hub.names(ctx.kind)) {
    if (seen.has(entry.key)) continue;
    if (pattern === null || globMatch(pattern, entry.name)) seen.set(entry.key, bulkReply(entry.name));
  }
  return Buffer.concat([arrayHeader(seen.size), ...seen.values()]);
}
