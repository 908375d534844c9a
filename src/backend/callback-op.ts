/**
 * CallbackOp: a command keymux sends to a shard on its own account (migration traffic, the lookups of a SORT that
 * keymux runs itself), answered to a callback instead of a client request. Never a client's request: it has no
 * session order, no routing group, no cluster retry; slots and ring mode only.
 */
import type { BackendOp } from '../core/request.js';

export class CallbackOp implements BackendOp {
  sentAt = 0;
  redirects = 0;
  readonly sessionId: number;
  readonly frame: Buffer;
  private readonly done: (reply: Buffer) => void;
  constructor(frame: Buffer, done: (reply: Buffer) => void, sessionId = 0) {
    this.frame = frame;
    this.done = done;
    this.sessionId = sessionId;
  }
  deliver(reply: Buffer): void {
    this.done(reply);
  }
}
