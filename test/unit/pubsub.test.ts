/**
 * Pub/sub pieces without a server: the frames keymux writes (confirmations with counts, nil names, PING's
 * subscribed form, RESP3 push headers for later), the reader of what a subscriber connection receives, the
 * glob matcher on cases Redis documents, and a client's message holding (a message never overtakes the
 * confirmation of its subscription, and messages keep their arrival order).
 */
import { describe, expect, it } from 'vitest';
import {
  IN_MESSAGE,
  IN_OTHER,
  IN_PONG,
  IN_SUBSCRIBED,
  IN_UNSUBSCRIBED,
  KIND_CHANNEL,
  KIND_PATTERN,
  KIND_SHARD,
  PubSubFrameReader,
  forProtocol,
  subscribedFrame,
  subscribedPong,
  subscriberCommand,
  unsubscribedFrame,
} from '../../src/pubsub/frames.js';
import { PubSubClient, type PubSubSession } from '../../src/pubsub/client.js';
import { globMatch } from '../../src/pubsub/glob.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('frames keymux writes', () => {
  it('confirmations are Redis RESP2 arrays; a RESP3 client would get pushes', () => {
    expect(subscribedFrame(KIND_CHANNEL, b('news'), 1).toString()).toBe(
      '*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n',
    );
    expect(subscribedFrame(KIND_PATTERN, b('n*'), 2).toString()).toBe('*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n');
    expect(subscribedFrame(KIND_SHARD, b('s'), 3, 3).toString()).toBe('>3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:3\r\n');
    expect(unsubscribedFrame(KIND_CHANNEL, null, 0).toString()).toBe('*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n');
    expect(unsubscribedFrame(KIND_PATTERN, null, 0, 3).toString()).toBe('>3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n');
    expect(unsubscribedFrame(KIND_SHARD, b('s'), 0).toString()).toBe('*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n');
    expect(subscribedPong(null).toString()).toBe('*2\r\n$4\r\npong\r\n$0\r\n\r\n');
    expect(subscribedPong(b('hi')).toString()).toBe('*2\r\n$4\r\npong\r\n$2\r\nhi\r\n');
    expect(subscriberCommand('SSUBSCRIBE', [b('a'), b('bc')]).toString()).toBe(
      '*3\r\n$10\r\nSSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n',
    );
  });

  it('a message keeps its bytes for RESP2 and changes only its header for RESP3', () => {
    const frame = b('*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n');
    expect(forProtocol(frame, 2)).toBe(frame);
    expect(forProtocol(frame, 3).toString()).toBe('>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n');
    expect(frame[0]).toBe(42); // the shared frame is not modified
  });
});

describe('reading what a subscriber connection receives', () => {
  const r = new PubSubFrameReader();
  const read = (s: string) => {
    const f = b(s);
    const ok = r.read(f);
    return {
      ok,
      type: r.type,
      kind: r.kind,
      name: r.nameStart >= 0 ? f.toString('latin1', r.nameStart, r.nameEnd) : null,
      pattern:
        r.type === IN_MESSAGE && r.kind === KIND_PATTERN ? f.toString('latin1', r.patternStart, r.patternEnd) : null,
    };
  };

  it('finds verb, channel and pattern', () => {
    expect(read('*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\r\n!\r\n')).toEqual({
      ok: true,
      type: IN_MESSAGE,
      kind: KIND_CHANNEL,
      name: 'ch',
      pattern: null,
    });
    expect(read('*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$0\r\n\r\n')).toMatchObject({
      type: IN_MESSAGE,
      kind: KIND_PATTERN,
      name: 'ch',
      pattern: 'c*',
    });
    expect(read('*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nx\r\n')).toMatchObject({
      type: IN_MESSAGE,
      kind: KIND_SHARD,
      name: 's',
    });
    expect(read('*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n')).toMatchObject({
      type: IN_SUBSCRIBED,
      kind: KIND_CHANNEL,
      name: 'a',
    });
    expect(read('*3\r\n$10\r\npsubscribe\r\n$1\r\na\r\n:1\r\n')).toMatchObject({
      type: IN_SUBSCRIBED,
      kind: KIND_PATTERN,
    });
    expect(read('*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n')).toMatchObject({
      type: IN_SUBSCRIBED,
      kind: KIND_SHARD,
    });
    expect(read('*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n')).toMatchObject({ type: IN_UNSUBSCRIBED, name: null });
    expect(read('*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n')).toMatchObject({
      type: IN_UNSUBSCRIBED,
      kind: KIND_SHARD,
      name: 's',
    });
    expect(read('*2\r\n$4\r\npong\r\n$0\r\n\r\n')).toMatchObject({ type: IN_PONG });
  });

  it('reports anything else as not a pub/sub frame', () => {
    for (const s of [
      '+OK\r\n',
      '-ERR x\r\n',
      ':1\r\n',
      '*3\r\n$3\r\nfoo\r\n$1\r\na\r\n:1\r\n',
      '*1\r\n$7\r\nmessage\r\n',
      '*3\r\n:1\r\n:2\r\n:3\r\n',
    ]) {
      expect(read(s).type, s).toBe(IN_OTHER);
    }
  });
});

describe('glob matching (Redis stringmatchlen)', () => {
  it.each([
    ['h?llo', 'hello', true],
    ['h*llo', 'heeeello', true],
    ['h[ae]llo', 'hallo', true],
    ['h[ae]llo', 'hillo', false],
    ['h[^e]llo', 'hallo', true],
    ['h[^e]llo', 'hello', false],
    ['h[a-b]llo', 'hbllo', true],
    ['h\\*llo', 'h*llo', true],
    ['h\\*llo', 'hello', false],
    ['*', '', false], // as Redis: PSUBSCRIBE * does not hear PUBLISH "" (checked against redis-server 7.0)
    ['a*', 'a', true],
    ['a[', 'a[', false],
    ['news.*', 'news.art.figurative', true],
  ])('%s against %s: %s', (pattern, subject, expected) => {
    expect(globMatch(b(pattern), b(subject))).toBe(expected);
  });

  it('gives up on abusive patterns instead of running for ever', () => {
    const pattern = b(`${'a*'.repeat(40)}b`);
    const subject = b('a'.repeat(60));
    const t0 = process.hrtime.bigint();
    expect(globMatch(pattern, subject)).toBe(false);
    expect(process.hrtime.bigint() - t0).toBeLessThan(5_000_000_000n); // seconds would mean exponential time
  });
});

/** A session that records what it writes; `written` plays writtenSeq. */
class FakeSession implements PubSubSession {
  readonly id = 1;
  writtenSeq = -1;
  readonly out: string[] = [];
  killed: string | null = null;
  bound = Infinity;
  writeMessage(frame: Buffer): boolean {
    this.out.push(frame.toString());
    return true;
  }
  overOutputBound(held: number): boolean {
    return held > this.bound;
  }
  kill(reason: string): void {
    this.killed = reason;
  }
}

describe('a client holding messages behind confirmations', () => {
  it('writes at once when confirmed, holds until its confirmation is queued, keeps arrival order', () => {
    const s = new FakeSession();
    const c = new PubSubClient(s);
    s.writtenSeq = 3;
    c.deliver(b('m1'), 2); // subscribed by request 2, already queued: written now
    expect(s.out).toEqual(['m1']);
    c.deliver(b('m2'), 5); // request 5's confirmation not queued yet
    c.deliver(b('m3'), 1); // confirmed, but behind m2: arrival order is kept
    expect(s.out).toEqual(['m1']);
    expect(c.holding).toBe(true);
    c.release(4); // request 4 queued: nothing waited for it
    expect(s.out).toEqual(['m1']);
    s.writtenSeq = 5;
    c.release(5);
    expect(s.out).toEqual(['m1', 'm2', 'm3']);
    expect(c.holding).toBe(false);
  });

  it('held bytes count against the output bound', () => {
    const s = new FakeSession();
    s.bound = 5;
    const c = new PubSubClient(s);
    expect(c.deliver(b('abc'), 0)).toBe(true);
    expect(c.deliver(b('def'), 0)).toBe(false); // 6 bytes held: past the bound
  });
});
