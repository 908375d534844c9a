/**
 * Pub/sub frames: the three kinds of subscription (channel, pattern, shard channel) and their verbs; the frames
 * keymux writes to clients itself (subscribe and unsubscribe confirmations with the client's own counts, PING's
 * reply in subscribed mode); and a reader for what a subscriber connection receives from a backend (confirmations,
 * message / pmessage / smessage pushes, pong), which finds the verb and the channel and pattern bytes without
 * decoding anything else.
 *
 * Protocol: every frame a client gets here is built for the client's protocol at delivery time. RESP2 uses an
 * array header; a RESP3 client gets the same elements under a push header ('>'), so a message forwarded
 * from a backend (which always speaks RESP2 to keymux's subscriber connections) needs only its first byte
 * changed (`forProtocol`).
 */
import { CRLF, arrayHeader, bulkHeader, integerReply } from '../resp/writer.js';
import { parseLength } from '../resp/reply-scanner.js';

export const KIND_CHANNEL = 0;
export const KIND_PATTERN = 1;
export const KIND_SHARD = 2;
export type SubKind = typeof KIND_CHANNEL | typeof KIND_PATTERN | typeof KIND_SHARD;
export const KIND_NAMES = ['channel', 'pattern', 'shard'] as const;

/** The subscribe / unsubscribe verbs of each kind, as commands (upper case) and as reply words. */
export const SUBSCRIBE_VERB = ['subscribe', 'psubscribe', 'ssubscribe'] as const;
export const UNSUBSCRIBE_VERB = ['unsubscribe', 'punsubscribe', 'sunsubscribe'] as const;

const SUBSCRIBE_WORD = SUBSCRIBE_VERB.map((v) => Buffer.from(`$${v.length}\r\n${v}\r\n`, 'latin1'));
const UNSUBSCRIBE_WORD = UNSUBSCRIBE_VERB.map((v) => Buffer.from(`$${v.length}\r\n${v}\r\n`, 'latin1'));
const NIL = [Buffer.from('$-1\r\n', 'latin1'), Buffer.from('_\r\n', 'latin1')];
const HEADER3 = [arrayHeader(3), Buffer.from('>3\r\n', 'latin1')];
const PONG_WORD = Buffer.from('$4\r\npong\r\n', 'latin1');
const EMPTY_BULK = Buffer.from('$0\r\n\r\n', 'latin1');

/** The header of a 3- or 4-element pub/sub frame for protocol 2 (array) or 3 (push). */
function header3(protocol: number): Buffer {
  return HEADER3[protocol === 3 ? 1 : 0];
}

function bulk(parts: Buffer[], b: Buffer): void {
  parts.push(bulkHeader(b.length), b, CRLF);
}

/** `subscribe <name> <count>` (psubscribe, ssubscribe) as Redis writes it after each subscribed name. */
export function subscribedFrame(kind: SubKind, name: Buffer, count: number, protocol = 2): Buffer {
  const parts: Buffer[] = [header3(protocol), SUBSCRIBE_WORD[kind]];
  bulk(parts, name);
  parts.push(integerReply(count));
  return Buffer.concat(parts);
}

/** `unsubscribe <name|nil> <count>`: nil when an UNSUBSCRIBE without arguments found nothing to drop. */
export function unsubscribedFrame(kind: SubKind, name: Buffer | null, count: number, protocol = 2): Buffer {
  const parts: Buffer[] = [header3(protocol), UNSUBSCRIBE_WORD[kind]];
  if (name === null) parts.push(NIL[protocol === 3 ? 1 : 0]);
  else bulk(parts, name);
  parts.push(integerReply(count));
  return Buffer.concat(parts);
}

/** PING while subscribed (RESP2): `*2 pong <argument or empty>`; a RESP3 client gets the plain reply instead. */
export function subscribedPong(arg: Buffer | null): Buffer {
  const parts: Buffer[] = [arrayHeader(2), PONG_WORD];
  if (arg === null) parts.push(EMPTY_BULK);
  else bulk(parts, arg);
  return Buffer.concat(parts);
}

/** A message frame (as received from a backend, RESP2) for a client speaking `protocol`. */
export function forProtocol(frame: Buffer, protocol: number): Buffer {
  if (protocol !== 3) return frame;
  const push = Buffer.from(frame);
  push[0] = 62; /* > */
  return push;
}

/** A command frame `VERB name...` for a subscriber connection. */
export function subscriberCommand(verb: string, names: readonly Buffer[]): Buffer {
  const v = Buffer.from(verb, 'latin1');
  const parts: Buffer[] = [arrayHeader(1 + names.length), bulkHeader(v.length), v, CRLF];
  for (const n of names) bulk(parts, n);
  return Buffer.concat(parts);
}

// ---- reading what a subscriber connection receives -------------------------------------------------------

/** What a frame from a subscriber connection is. */
export const IN_OTHER = 0;
export const IN_MESSAGE = 1; // message / pmessage / smessage: `kind` tells which
export const IN_SUBSCRIBED = 2; // subscribe / psubscribe / ssubscribe confirmation
export const IN_UNSUBSCRIBED = 3; // unsubscribe / punsubscribe / sunsubscribe (asked for, or a server's own)
export const IN_PONG = 4;

/**
 * The parts of one pub/sub frame, as offsets into it (reused for every frame: one reader per connection).
 * For a message: `name` is the channel, `pattern` the pattern (pmessage only). For a confirmation: `name` is the
 * channel or pattern (nameStart = -1 for a nil name).
 */
export class PubSubFrameReader {
  type = IN_OTHER;
  kind: SubKind = KIND_CHANNEL;
  nameStart = 0;
  nameEnd = 0;
  patternStart = 0;
  patternEnd = 0;
  private readonly starts = new Int32Array(4);
  private readonly ends = new Int32Array(4);

  /** Reads `frame`; false (type IN_OTHER) when it is not a pub/sub array of bulk strings keymux knows. */
  read(frame: Buffer): boolean {
    this.type = IN_OTHER;
    if (frame[0] !== 42 /* * */ && frame[0] !== 62 /* > */) return false;
    let eol = frame.indexOf(13, 1);
    const n = parseLength(frame, 1, eol);
    if (n < 2 || n > 4) return false;
    let pos = eol + 2;
    for (let i = 0; i < n; i++) {
      const t = frame[pos];
      eol = frame.indexOf(13, pos + 1);
      if (eol < 0) return false;
      if (t === 36 /* $ */) {
        const len = parseLength(frame, pos + 1, eol);
        if (len === -1) {
          this.starts[i] = -1;
          this.ends[i] = -1;
          pos = eol + 2;
          continue;
        }
        if (len < 0) return false;
        this.starts[i] = eol + 2;
        this.ends[i] = eol + 2 + len;
        pos = eol + 4 + len;
      } else if (t === 58 /* : */) {
        this.starts[i] = pos + 1;
        this.ends[i] = eol;
        pos = eol + 2;
      } else {
        return false;
      }
    }
    const vs = this.starts[0];
    const vlen = this.ends[0] - vs;
    if (vs < 0) return false;
    const first = frame[vs];
    if (n === 2) {
      if (vlen === 4 && first === 112 /* p */ && frame[vs + 1] === 111 /* o */) {
        this.type = IN_PONG;
        return true;
      }
      return false;
    }
    if (n === 4) {
      // pmessage pattern channel payload
      if (vlen !== 8 || first !== 112 || frame[vs + 1] !== 109 /* m */) return false;
      this.type = IN_MESSAGE;
      this.kind = KIND_PATTERN;
      this.patternStart = this.starts[1];
      this.patternEnd = this.ends[1];
      this.nameStart = this.starts[2];
      this.nameEnd = this.ends[2];
      return this.patternStart >= 0 && this.nameStart >= 0;
    }
    this.nameStart = this.starts[1];
    this.nameEnd = this.ends[1];
    switch (vlen) {
      case 7: // message
        if (first !== 109 /* m */) return false;
        this.type = IN_MESSAGE;
        this.kind = KIND_CHANNEL;
        return this.nameStart >= 0;
      case 8: // smessage
        if (first !== 115 /* s */ || frame[vs + 1] !== 109) return false;
        this.type = IN_MESSAGE;
        this.kind = KIND_SHARD;
        return this.nameStart >= 0;
      case 9: // subscribe
        if (first !== 115) return false;
        this.type = IN_SUBSCRIBED;
        this.kind = KIND_CHANNEL;
        return true;
      case 10: // psubscribe / ssubscribe
        this.type = IN_SUBSCRIBED;
        this.kind = first === 112 ? KIND_PATTERN : KIND_SHARD;
        return first === 112 || first === 115;
      case 11: // unsubscribe
        if (first !== 117 /* u */) return false;
        this.type = IN_UNSUBSCRIBED;
        this.kind = KIND_CHANNEL;
        return true;
      case 12: // punsubscribe / sunsubscribe
        this.type = IN_UNSUBSCRIBED;
        this.kind = first === 112 ? KIND_PATTERN : KIND_SHARD;
        return first === 112 || first === 115;
      default:
        return false;
    }
  }
}
