/**
 * Request: one client command from parse to reply. A fixed-shape object (every field set in the constructor)
 * with a slot for its reply: whoever answers it (a backend connection, the fan-out merger, a local handler)
 * calls `deliver(frame)`, and the owning session writes completed requests out in arrival order. No Promise and
 * no closure per request. A fan-out request owns its fragments and a countdown of those still outstanding.
 */
import type { CommandSpec } from '../commands/spec.js';
import type { Fragment } from './fragment.js';
import type { ShardStats } from '../metrics/stats.js';

/** What a backend connection queues and answers: a Request, a Fragment, or a control-plane operation. */
export interface BackendOp {
  /** When the op's frame was written to the socket (performance.now()), for the timeout check and shard latency. */
  sentAt: number;
  /** The bytes sent for this op (re-sent as they are after a cluster redirection). */
  readonly frame: Buffer;
  /** Cluster redirections and retries this op has taken (bounded by cluster.max_redirections). */
  redirects: number;
  /** The client session's id: picks the connection of a pool, so one client's commands stay in order. */
  readonly sessionId: number;
  deliver(frame: Buffer): void;
}

/** The session side of a request: told when a request has its reply, and when a connection it sent to is full. */
export interface RequestOwner {
  readonly id: number;
  onRequestDone(req: Request): void;
  /** A backend connection this owner sent to holds its bound of operations: stop sending until backendDrained(). */
  backendFull(): void;
  /** That connection drained (called once per backendFull()). */
  backendDrained(): void;
}

export class Request implements BackendOp {
  owner: RequestOwner;
  /** The client's frame bytes (forwarded unchanged for single-shard commands). */
  frame: Buffer;
  /** Argument views into `frame`; args[0] is the command name. */
  args: Buffer[];
  spec: CommandSpec | null;
  /** The reply frame once known. */
  reply: Buffer | null;
  done: boolean;
  /** Close the client connection after this reply is written (QUIT, protocol error). */
  closeAfter: boolean;
  startedAt: number;
  sentAt: number;
  /** Index of the shard the request went to (-1: local, fan-out, or not routed). */
  shard: number;
  /** Counters of that shard (kept here so a reload in between cannot misattribute the reply). */
  shardStats: ShardStats | null;
  fragments: Fragment[] | null;
  remaining: number;
  /** Opaque context for merges that need it (INFO, DBSIZE): set by the dispatcher. */
  mergeContext: unknown;
  redirects: number;

  constructor(owner: RequestOwner, frame: Buffer, args: Buffer[], startedAt: number) {
    this.owner = owner;
    this.frame = frame;
    this.args = args;
    this.spec = null;
    this.reply = null;
    this.done = false;
    this.closeAfter = false;
    this.startedAt = startedAt;
    this.sentAt = 0;
    this.shard = -1;
    this.shardStats = null;
    this.fragments = null;
    this.remaining = 0;
    this.mergeContext = null;
    this.redirects = 0;
  }

  get sessionId(): number {
    return this.owner.id;
  }

  deliver(frame: Buffer): void {
    if (this.done) return; // a late answer after a timeout or reset is dropped, never misdelivered
    this.reply = frame;
    this.done = true;
    this.owner.onRequestDone(this);
  }
}
