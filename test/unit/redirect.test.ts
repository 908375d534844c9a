/**
 * src/backend/redirect.ts: MOVED/ASK parsing from raw reply bytes, in every form Redis sends (IPv4, host names,
 * bracketed and bare IPv6, the empty "same host" form), every malformed or out-of-range case, and the byte-prefix
 * checks for TRYAGAIN, CLUSTERDOWN, LOADING and MASTERDOWN. Real MOVED and ASK replies of a live cluster node
 * are parsed in test/integration/cluster-harness.test.ts.
 */
import { describe, it, expect } from 'vitest';
import {
  parseRedirect,
  isRedirect,
  withHost,
  formatAddress,
  isTryAgain,
  isClusterDown,
  isLoading,
  isMasterDown,
  retryableError,
  MAX_REDIRECT_LINE,
  type Redirect,
} from '../../src/backend/redirect.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const parse = (s: string): Redirect | null => parseRedirect(b(s));
const invalid = (of: 'moved' | 'ask', reason: string): Redirect => ({ kind: 'invalid', of, reason });

describe('parseRedirect: valid targets', () => {
  it('reads MOVED and ASK with an IPv4 target', () => {
    expect(parse('-MOVED 3999 127.0.0.1:6381\r\n')).toEqual({
      kind: 'moved',
      slot: 3999,
      host: '127.0.0.1',
      port: 6381,
      address: '127.0.0.1:6381',
      sameHost: false,
    });
    expect(parse('-ASK 3999 127.0.0.1:6381\r\n')).toEqual({
      kind: 'ask',
      slot: 3999,
      host: '127.0.0.1',
      port: 6381,
      address: '127.0.0.1:6381',
      sameHost: false,
    });
  });

  it('accepts the slot and port bounds', () => {
    expect(parse('-MOVED 0 10.0.0.1:1\r\n')).toMatchObject({ kind: 'moved', slot: 0, port: 1, address: '10.0.0.1:1' });
    expect(parse('-MOVED 16383 10.0.0.1:65535\r\n')).toMatchObject({ slot: 16383, port: 65535 });
  });

  it('reads host names (announced with cluster-announce-hostname)', () => {
    expect(parse('-MOVED 12 redis-0.redis.default.svc.cluster.local:6379\r\n')).toEqual({
      kind: 'moved',
      slot: 12,
      host: 'redis-0.redis.default.svc.cluster.local',
      port: 6379,
      address: 'redis-0.redis.default.svc.cluster.local:6379',
      sameHost: false,
    });
    expect(parse('-ASK 1 node_a:7000\r\n')).toMatchObject({ host: 'node_a', address: 'node_a:7000' });
    expect(parse('-ASK 1 example.com.:7000\r\n')).toMatchObject({ host: 'example.com.' });
  });

  it('reads IPv6 targets bare, as Redis writes them, and in brackets', () => {
    expect(parse('-MOVED 3999 ::1:6381\r\n')).toEqual({
      kind: 'moved',
      slot: 3999,
      host: '::1',
      port: 6381,
      address: '[::1]:6381',
      sameHost: false,
    });
    expect(parse('-MOVED 3999 [::1]:6381\r\n')).toEqual({
      kind: 'moved',
      slot: 3999,
      host: '::1',
      port: 6381,
      address: '[::1]:6381',
      sameHost: false,
    });
    expect(parse('-ASK 7 2001:db8::7:7000\r\n')).toMatchObject({
      host: '2001:db8::7',
      port: 7000,
      address: '[2001:db8::7]:7000',
    });
    expect(parse('-ASK 7 fe80::1%eth0:7000\r\n')).toMatchObject({
      host: 'fe80::1%eth0',
      address: '[fe80::1%eth0]:7000',
    });
    expect(parse('-ASK 7 ::ffff:10.0.0.1:7000\r\n')).toMatchObject({ host: '::ffff:10.0.0.1', port: 7000 });
  });

  it('reads the empty-host form as "same host as the node that answered"', () => {
    const r = parse('-MOVED 3999 :6381\r\n');
    expect(r).toEqual({ kind: 'moved', slot: 3999, host: '', port: 6381, address: ':6381', sameHost: true });
    expect(parse('-ASK 5 :7000\r\n')).toMatchObject({ kind: 'ask', sameHost: true, address: ':7000' });
    if (r === null || r.kind === 'invalid') throw new Error('expected a target');
    expect(withHost(r, '10.1.2.3')).toEqual({
      kind: 'moved',
      slot: 3999,
      host: '10.1.2.3',
      port: 6381,
      address: '10.1.2.3:6381',
      sameHost: false,
    });
    expect(withHost(r, '::1').address).toBe('[::1]:6381');
    const plain = parse('-MOVED 1 h:2\r\n');
    if (plain === null || plain.kind === 'invalid') throw new Error('expected a target');
    expect(withHost(plain, 'other')).toBe(plain);
  });

  it('reads a frame without its CRLF and stops at the first line', () => {
    expect(parse('-MOVED 1 h:2')).toMatchObject({ kind: 'moved', address: 'h:2' });
    expect(parse('-MOVED 1 h:2\n')).toMatchObject({ kind: 'moved', address: 'h:2' });
    expect(parse('-MOVED 1 h:2\r\n+OK\r\n')).toMatchObject({ kind: 'moved', address: 'h:2' });
    // A subarray of a larger buffer, as the reply scanner hands out.
    const big = b('+OK\r\n-ASK 9 h:3\r\n:1\r\n');
    expect(parseRedirect(big.subarray(5, 16))).toMatchObject({ kind: 'ask', slot: 9, address: 'h:3' });
  });

  it('formats addresses like the discovery does', () => {
    expect(formatAddress('10.0.0.1', 1)).toBe('10.0.0.1:1');
    expect(formatAddress('::1', 1)).toBe('[::1]:1');
  });
});

describe('parseRedirect: not a redirection', () => {
  it('returns null for other replies and other errors', () => {
    for (const s of [
      '+OK\r\n',
      ':1\r\n',
      '$5\r\nMOVED\r\n',
      '*1\r\n-MOVED 1 h:2\r\n',
      '-ERR MOVED 1 h:2\r\n',
      '-ASKING\r\n',
      '-MOVEDX 1 h:2\r\n',
      '-moved 1 h:2\r\n',
      '-TRYAGAIN x\r\n',
      '',
      '-',
      '-MOVE',
    ]) {
      expect(parse(s), JSON.stringify(s)).toBeNull();
      expect(isRedirect(b(s)), JSON.stringify(s)).toBe(false);
    }
    expect(isRedirect(b('-MOVED 1 h:2\r\n'))).toBe(true);
    expect(isRedirect(b('-ASK 1 h:2\r\n'))).toBe(true);
    expect(isRedirect(b('-ASK\r\n'))).toBe(true);
  });
});

describe('parseRedirect: invalid redirections', () => {
  it('reports missing parts', () => {
    expect(parse('-MOVED\r\n')).toEqual(invalid('moved', 'missing slot and address'));
    expect(parse('-ASK')).toEqual(invalid('ask', 'missing slot and address'));
    expect(parse('-MOVED \r\n')).toEqual(invalid('moved', 'missing slot and address'));
    expect(parse('-MOVED  127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'missing slot'));
    expect(parse('-MOVED 3999\r\n')).toEqual(invalid('moved', 'missing address'));
    expect(parse('-ASK 3999 \r\n')).toEqual(invalid('ask', 'missing address'));
    expect(parse('-MOVED 3999 127.0.0.1\r\n')).toEqual(invalid('moved', 'missing port in address "127.0.0.1"'));
    expect(parse('-MOVED 3999 127.0.0.1:\r\n')).toEqual(invalid('moved', 'missing port in address "127.0.0.1:"'));
    expect(parse('-MOVED 3999 :\r\n')).toEqual(invalid('moved', 'missing port in address ":"'));
  });

  it('reports slots that are not numbers or out of range', () => {
    expect(parse('-MOVED 16384 127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'slot 16384 is out of range (0..16383)'));
    expect(parse('-ASK 99999 127.0.0.1:6381\r\n')).toEqual(invalid('ask', 'slot 99999 is out of range (0..16383)'));
    expect(parse('-MOVED 123456789012345678901234567890 h:1\r\n')).toEqual(
      invalid('moved', 'slot 123456789012345678901234567890 is out of range (0..16383)'),
    );
    expect(parse('-MOVED -1 127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'slot "-1" is not a number'));
    expect(parse('-MOVED 12a 127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'slot "12a" is not a number'));
    expect(parse('-MOVED 1.5 127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'slot "1.5" is not a number'));
    expect(parse('-MOVED 127.0.0.1:6381\r\n')).toEqual(invalid('moved', 'slot "127.0.0.1:6381" is not a number'));
  });

  it('reports ports that are not numbers or out of range', () => {
    expect(parse('-MOVED 1 127.0.0.1:0\r\n')).toEqual(invalid('moved', 'port 0 is out of range (1..65535)'));
    expect(parse('-MOVED 1 127.0.0.1:65536\r\n')).toEqual(invalid('moved', 'port 65536 is out of range (1..65535)'));
    expect(parse('-MOVED 1 127.0.0.1:99999\r\n')).toEqual(invalid('moved', 'port 99999 is out of range (1..65535)'));
    expect(parse('-MOVED 1 127.0.0.1:123456\r\n')).toEqual(invalid('moved', 'port "123456" is not a number'));
    expect(parse('-MOVED 1 127.0.0.1:-1\r\n')).toEqual(invalid('moved', 'port "-1" is not a number'));
    expect(parse('-MOVED 1 127.0.0.1:80a\r\n')).toEqual(invalid('moved', 'port "80a" is not a number'));
    expect(parse('-ASK 1 [::1]\r\n')).toEqual(invalid('ask', 'port "1]" is not a number'));
  });

  it('reports hosts that are neither names nor addresses', () => {
    expect(parse('-MOVED 1 [::1:6381\r\n')).toEqual(invalid('moved', 'host "[::1" is not a valid IPv6 address'));
    expect(parse('-MOVED 1 [127.0.0.1]:6381\r\n')).toEqual(
      invalid('moved', 'host "[127.0.0.1]" is not a valid IPv6 address'),
    );
    expect(parse('-MOVED 1 []:6381\r\n')).toEqual(invalid('moved', 'host "[]" is not a valid IPv6 address'));
    expect(parse('-MOVED 1 :::1:6381\r\n')).toEqual(invalid('moved', 'host ":::1" is not a valid IPv6 address'));
    expect(parse('-MOVED 1 a:b:6381\r\n')).toEqual(invalid('moved', 'host "a:b" is not a valid IPv6 address'));
    expect(parse('-MOVED 1 -bad:6381\r\n')).toEqual(
      invalid('moved', 'host "-bad" is not a valid host name or IP address'),
    );
    expect(parse('-MOVED 1 bad-:6381\r\n')).toEqual(
      invalid('moved', 'host "bad-" is not a valid host name or IP address'),
    );
    expect(parse('-MOVED 1 h/x:6381\r\n')).toEqual(
      invalid('moved', 'host "h/x" is not a valid host name or IP address'),
    );
    expect(parse('-MOVED 1 h\x00:6381\r\n')).toEqual(
      invalid('moved', 'host "h\\u0000" is not a valid host name or IP address'),
    );
    expect(parse('-MOVED 1 h\xe9:6381\r\n')).toEqual(
      invalid('moved', 'host "h\u00e9" is not a valid host name or IP address'),
    );
    const long = 'a'.repeat(256);
    expect(parse(`-MOVED 1 ${long}:6381\r\n`)).toEqual(
      invalid('moved', `host "${long}" is not a valid host name or IP address`),
    );
  });

  it('reports extra text after the address', () => {
    expect(parse('-MOVED 1 127.0.0.1:6381 extra\r\n')).toEqual(
      invalid('moved', 'unexpected text after the address in "127.0.0.1:6381 extra"'),
    );
    expect(parse('-MOVED 1 127.0.0.1:6381 \r\n')).toEqual(
      invalid('moved', 'unexpected text after the address in "127.0.0.1:6381 "'),
    );
    expect(parse('-MOVED 1 127.0.0.1:6381\t\r\n')).toEqual(
      invalid('moved', 'unexpected text after the address in "127.0.0.1:6381\\t"'),
    );
  });

  it('refuses a first line longer than MAX_REDIRECT_LINE without decoding it', () => {
    const huge = Buffer.concat([b('-MOVED 1 '), Buffer.alloc(1 << 20, 0x61), b(':1\r\n')]);
    expect(parseRedirect(huge)).toEqual(invalid('moved', `longer than ${MAX_REDIRECT_LINE} bytes`));
    // The longest valid form fits: a 255-byte host name.
    const longest = `-MOVED 16383 ${'a'.repeat(255)}:65535\r\n`;
    expect(longest.length).toBeLessThan(MAX_REDIRECT_LINE);
    expect(parse(longest)).toMatchObject({ kind: 'moved', slot: 16383, port: 65535 });
  });

  it('never throws, whatever the bytes', () => {
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const alphabet = b('-MOVEDASK 0123456789:[]abc.\r\n\x00\xff');
    for (let i = 0; i < 5000; i++) {
      const prefix = ['-MOVED ', '-ASK ', '-MOVED', ''][rnd(4)]!;
      const body = Buffer.from(Array.from({ length: rnd(40) }, () => alphabet[rnd(alphabet.length)]!));
      const frame = Buffer.concat([b(prefix), body]);
      const r = parseRedirect(frame);
      if (r !== null && r.kind !== 'invalid') {
        expect(r.slot).toBeGreaterThanOrEqual(0);
        expect(r.slot).toBeLessThan(16384);
        expect(r.port).toBeGreaterThanOrEqual(1);
        expect(r.port).toBeLessThanOrEqual(65535);
      }
    }
  });
});

describe('retryable cluster errors', () => {
  it('recognises TRYAGAIN, CLUSTERDOWN, LOADING and MASTERDOWN by their first bytes', () => {
    const frames = {
      tryagain: '-TRYAGAIN Multiple keys request during rehashing of slot\r\n',
      clusterdown: '-CLUSTERDOWN The cluster is down\r\n',
      unserved: '-CLUSTERDOWN Hash slot not served\r\n',
      readonlyDown: '-CLUSTERDOWN The cluster is down and only accepts read commands\r\n',
      loading: '-LOADING Redis is loading the dataset in memory\r\n',
      masterdown: "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
    };
    expect(isTryAgain(b(frames.tryagain))).toBe(true);
    expect(isClusterDown(b(frames.clusterdown))).toBe(true);
    expect(isClusterDown(b(frames.unserved))).toBe(true);
    expect(isClusterDown(b(frames.readonlyDown))).toBe(true);
    expect(isLoading(b(frames.loading))).toBe(true);
    expect(isMasterDown(b(frames.masterdown))).toBe(true);
    // LOADING is a node condition, not a cluster one.
    expect(isClusterDown(b(frames.loading))).toBe(false);
    expect(retryableError(b(frames.tryagain))).toBe('tryagain');
    expect(retryableError(b(frames.clusterdown))).toBe('clusterdown');
    expect(retryableError(b(frames.unserved))).toBe('clusterdown');
    expect(retryableError(b(frames.loading))).toBe('loading');
    expect(retryableError(b(frames.masterdown))).toBeNull();
  });

  it('accepts the bare codes and refuses look-alikes', () => {
    expect(isTryAgain(b('-TRYAGAIN\r\n'))).toBe(true);
    expect(isTryAgain(b('-TRYAGAIN'))).toBe(true);
    for (const s of [
      '-TRYAGAINX\r\n',
      '+TRYAGAIN\r\n',
      '-ERR TRYAGAIN\r\n',
      '-tryagain x\r\n',
      '-TRYAGAI',
      '',
      '$8\r\nTRYAGAIN\r\n',
    ]) {
      expect(isTryAgain(b(s)), s).toBe(false);
      expect(retryableError(b(s)), s).toBeNull();
    }
    for (const s of ['-CLUSTERDOWNX\r\n', '-CLUSTER DOWN\r\n', '-ERR CLUSTERDOWN\r\n'])
      expect(isClusterDown(b(s)), s).toBe(false);
    expect(isLoading(b('-LOADINGS\r\n'))).toBe(false);
    expect(isMasterDown(b('-MASTERDOWNX\r\n'))).toBe(false);
  });
});
