/**
 * Hot-key tracking (src/metrics/hotkeys.ts and the sampling in observer.ts) without a server and without the
 * wall clock: exact counts for a few keys, the hot key of a skewed 10,000-key workload first with a bounded
 * over-estimate and at most K results, the sliding window driven by a fake clock, scaling by the sampling rate,
 * the Observer's sampler (seeded, so the run is reproducible), and how keys are shown (text, escapes, hashes).
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { BUCKETS, HotKeys, keyHash, keyText } from '../../src/metrics/hotkeys.js';
import { Observer } from '../../src/metrics/observer.js';
import { StatsRegistry } from '../../src/metrics/stats.js';
import { DEFAULTS, type MetricsConfig } from '../../src/config/schema.js';
import { Rng } from '../support/resp-gen.js';

function fakeClock(): { now: number; clock: () => number } {
  const c = { now: 1000, clock: () => c.now };
  return c;
}

const b = (s: string): Buffer => Buffer.from(s);

describe('HotKeys', () => {
  it('counts a few keys exactly and orders them', () => {
    const c = fakeClock();
    const hk = new HotKeys({ k: 3, windowS: 60, sampleRate: 1, clock: c.clock });
    for (let i = 0; i < 30; i++) hk.record(b('alpha'));
    for (let i = 0; i < 20; i++) hk.record(b('beta'));
    for (let i = 0; i < 10; i++) hk.record(b('gamma'));
    for (let i = 0; i < 5; i++) hk.record(b('delta'));
    c.now += 10_000;
    const top = hk.top();
    expect(top.keys.map((k) => [k.key.toString(), k.count])).toEqual([
      ['alpha', 30],
      ['beta', 20],
      ['gamma', 10],
    ]);
    expect(top.samples).toBe(65);
    expect(top.seconds).toBe(10);
    expect(top.keys[0].rate).toBe(3);
  });

  it('puts the hot key of a skewed workload first (30% of 20,000 over 10,000 keys) and reports at most K', () => {
    const rng = new Rng(7);
    const hk = new HotKeys({ k: 10, windowS: 60, sampleRate: 1, clock: fakeClock().clock });
    let hot = 0;
    for (let i = 0; i < 20_000; i++) {
      if (i % 10 < 3) {
        hk.record(b('user:hot'));
        hot++;
      } else hk.record(b(`user:${rng.u32() % 10_000}`));
    }
    const top = hk.top();
    expect(top.keys.length).toBe(10);
    expect(top.keys[0].key.toString()).toBe('user:hot');
    expect(top.keys[0].count).toBeGreaterThanOrEqual(hot); // count-min never under-counts a sampled key
    expect(top.keys[0].count).toBeLessThan(hot * 1.02);
    expect(top.keys[1].count).toBeLessThan(hot / 50);
  });

  it('copies keys, so later changes to the client buffer do not change them', () => {
    const hk = new HotKeys({ k: 1, windowS: 60, sampleRate: 1, clock: fakeClock().clock });
    const buf = b('mutable');
    hk.record(buf);
    buf.write('XXXXXXX');
    expect(hk.top().keys[0].key.toString()).toBe('mutable');
  });

  it('slides: counts leave the window after BUCKETS rotations, and rates use the time covered', () => {
    const c = fakeClock();
    const hk = new HotKeys({ k: 5, windowS: 60, sampleRate: 1, clock: c.clock });
    for (let i = 0; i < 100; i++) hk.record(b('old'));
    for (let r = 1; r < BUCKETS; r++) {
      c.now += 10_000;
      hk.rotate();
      hk.record(b('new'));
      expect(hk.top().keys.find((k) => k.key.toString() === 'old')?.count).toBe(100);
    }
    c.now += 10_000;
    expect(hk.top().seconds).toBe(60);
    expect(hk.top().keys[0]).toMatchObject({ count: 100, rate: 100 / 60 });
    hk.rotate(); // the sub-window holding "old" is reused
    c.now += 5_000;
    const top = hk.top();
    expect(top.keys.map((k) => k.key.toString())).toEqual(['new']);
    expect(top.keys[0].count).toBe(BUCKETS - 1);
    expect(top.seconds).toBe(55);
  });

  it('scales counts by the sampling rate', () => {
    const c = fakeClock();
    const hk = new HotKeys({ k: 1, windowS: 60, sampleRate: 0.25, clock: c.clock });
    for (let i = 0; i < 10; i++) hk.record(b('k'));
    c.now += 2000;
    expect(hk.top().keys[0]).toMatchObject({ count: 40, rate: 20 });
  });

  it('an empty tracker reports nothing', () => {
    const hk = new HotKeys({ k: 5, windowS: 60, sampleRate: 1, clock: fakeClock().clock });
    expect(hk.top()).toMatchObject({ samples: 0, keys: [] });
  });
});

describe('Observer sampling', () => {
  const config = (sampleRate: number): MetricsConfig => ({
    ...DEFAULTS.metrics,
    hotKeys: { ...DEFAULTS.metrics.hotKeys, sampleRate },
  });

  it('at the default rate, finds the 30% key and estimates its count within 10%', () => {
    const obs = new Observer(new StatsRegistry(), config(DEFAULTS.metrics.hotKeys.sampleRate));
    const rng = new Rng(11);
    const total = 80_000;
    for (let i = 0; i < total; i++) obs.onKeyRouted(i % 10 < 3 ? b('hot') : b(`cold:${rng.u32() % 10_000}`));
    const top = obs.hotKeys!.top();
    obs.close();
    expect(top.keys[0].key.toString()).toBe('hot');
    expect(Math.abs(top.keys[0].count - 0.3 * total) / (0.3 * total)).toBeLessThan(0.1);
    expect(
      Math.abs(top.samples - total * DEFAULTS.metrics.hotKeys.sampleRate) /
        (total * DEFAULTS.metrics.hotKeys.sampleRate),
    ).toBeLessThan(0.05);
  });

  it('with sample_rate 1 records every key, and with hot keys or metrics off records none', () => {
    const all = new Observer(new StatsRegistry(), config(1));
    for (let i = 0; i < 1000; i++) all.onKeyRouted(b('k'));
    expect(all.hotKeys!.top().samples).toBe(1000);
    all.close();
    const off = new Observer(new StatsRegistry(), {
      ...DEFAULTS.metrics,
      hotKeys: { ...DEFAULTS.metrics.hotKeys, enabled: false },
    });
    expect(off.hotKeys).toBeNull();
    off.onKeyRouted(b('k'));
    const disabled = new Observer(new StatsRegistry(), { ...DEFAULTS.metrics, enabled: false });
    expect(disabled.hotKeys).toBeNull();
  });

  it('keeps its counts across a reconfigure that does not change k, window or rate; restarts them otherwise', () => {
    const obs = new Observer(new StatsRegistry(), config(1));
    obs.onKeyRouted(b('k'));
    const before = obs.hotKeys;
    obs.configure({ ...config(1), slowlog: { thresholdMs: 1, maxEntries: 1, logKeys: true } });
    expect(obs.hotKeys).toBe(before);
    obs.configure({ ...config(1), hotKeys: { ...config(1).hotKeys, k: 3 } });
    expect(obs.hotKeys).not.toBe(before);
    expect(obs.hotKeys!.top().samples).toBe(0);
    obs.close();
  });
});

describe('how keys are shown', () => {
  it('shows UTF-8 keys as they are', () => {
    expect(keyText(b('user:42'), 'key')).toBe('user:42');
    expect(keyText(b('ключ:é'), 'key')).toBe('ключ:é');
  });

  it('escapes binary keys, control characters and backslashes byte by byte', () => {
    expect(keyText(Buffer.from([0x61, 0xff, 0x00, 0x62]), 'key')).toBe('a\\xff\\x00b');
    expect(keyText(b('a\nb'), 'key')).toBe('a\\x0ab');
    expect(keyText(b('a\\x0ab'), 'key')).toBe('a\\x5cx0ab'); // not confused with the escaped newline
  });

  it('cuts long keys and keeps them distinct with a hash', () => {
    const k1 = b(`${'x'.repeat(300)}1`);
    const k2 = b(`${'x'.repeat(300)}2`);
    expect(keyText(k1, 'key').length).toBeLessThan(230);
    expect(keyText(k1, 'key')).not.toBe(keyText(k2, 'key'));
  });

  it('hash export: the first 16 hex digits of SHA-256', () => {
    const want = createHash('sha256').update('user:42').digest('hex').slice(0, 16);
    expect(keyText(b('user:42'), 'hash')).toBe(want);
    expect(keyHash(b('user:42'))).toBe(want);
  });
});
