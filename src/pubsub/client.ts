/**
 * PubSubClient: one client's pub/sub state, held by its session once it first subscribes. It owns
 * - the client's own subscriptions (channels, patterns, shard channels, each mapped to the hub's entry), which
 *   give the counts Redis reports in confirmations (channels + patterns; shard channels apart) and decide
 *   whether the client is in subscribed mode;
 * - message delivery with the ordering rules: a message reaches the client only after the confirmation of the
 *   subscription it came through has been queued for writing (a subscription records the sequence number of the
 *   request that made it; the session says which request it last queued for writing). A message that arrives
 *   before then waits in `held`, in arrival order, and leaves right after that confirmation; messages behind a
 *   held one wait too, so the client sees messages in the order keymux received them. An unsubscription takes
 *   effect when the command is dispatched (in client order), so nothing of a channel follows its unsubscribe
 *   confirmation;
 * - the bound: held messages count against clients.max_output_bytes like written ones.
 * Message frames are shared Buffers (the backend's own frame, one per message for every subscriber); the
 * session encodes them for the client's protocol (frames.ts forProtocol) when it writes them.
 */
import { RingQueue } from '../core/ring-queue.js';
import { KIND_SHARD, type SubKind } from './frames.js';

/** What a client's pub/sub state needs from its session. */
export interface PubSubSession {
  readonly id: number;
  /** Sequence number of the last request whose reply was queued for writing (-1: none yet). */
  readonly writtenSeq: number;
  /** Queues a message (a whole frame) for writing now, after what is already queued; false once closed. */
  writeMessage(frame: Buffer): boolean;
  /** `heldBytes` of messages wait behind a confirmation: true when that passes the client's output bound. */
  overOutputBound(heldBytes: number): boolean;
  /** Ends the client's connection (its subscriptions could not be kept: the client is told by the close). */
  kill(reason: string): void;
}

/** The hub's side of one subscription (hub.ts Entry): what a client's map points to. */
export interface SubscriptionEntry {
  readonly kind: SubKind;
  readonly key: string;
  readonly name: Buffer;
}

interface HeldMessage {
  readonly frame: Buffer;
  readonly since: number;
}

export class PubSubClient<E extends SubscriptionEntry = SubscriptionEntry> {
  readonly session: PubSubSession;
  /** By kind (frames.ts KIND_*): key (the name as latin1) -> the hub's entry. Insertion order = subscription order. */
  readonly subs: readonly [Map<string, E>, Map<string, E>, Map<string, E>];
  private held: RingQueue<HeldMessage> | null;
  private heldBytes: number;

  constructor(session: PubSubSession) {
    this.session = session;
    this.subs = [new Map<string, E>(), new Map<string, E>(), new Map<string, E>()];
    this.held = null;
    this.heldBytes = 0;
  }

  /** The count Redis reports after a (un)subscription of `kind`: channels + patterns, or shard channels. */
  count(kind: SubKind): number {
    return kind === KIND_SHARD ? this.subs[2].size : this.subs[0].size + this.subs[1].size;
  }

  /** Subscriptions of every kind: subscribed mode while above 0. */
  get total(): number {
    return this.subs[0].size + this.subs[1].size + this.subs[2].size;
  }

  /** Messages are waiting behind a confirmation not yet queued for writing. */
  get holding(): boolean {
    return this.held !== null && this.held.length > 0;
  }

  /** A message of a subscription made by request `since`. */
  deliver(frame: Buffer, since: number): boolean {
    const session = this.session;
    if (since <= session.writtenSeq && !this.holding) return session.writeMessage(frame);
    (this.held ??= new RingQueue<HeldMessage>(8)).push({ frame, since });
    this.heldBytes += frame.length;
    return !session.overOutputBound(this.heldBytes);
  }

  /** The session queued the reply of request `writtenSeq`: messages that waited for it (and only those) follow. */
  release(writtenSeq: number): void {
    const held = this.held;
    if (held === null) return;
    let head = held.peek();
    while (head !== undefined && head.since <= writtenSeq) {
      held.shift();
      this.heldBytes -= head.frame.length;
      this.session.writeMessage(head.frame);
      head = held.peek();
    }
  }

  /** Drops held messages (the session closed). */
  dropHeld(): void {
    if (this.held !== null) this.held.drain();
    this.heldBytes = 0;
  }
}
