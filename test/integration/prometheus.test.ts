/**
 * keymux under a real Prometheus (Debian's `prometheus` and `promtool`): the test writes a scrape config pointing
 * at keymux's admin port (scrape_interval 1s), starts Prometheus on a free port with its TSDB in a temporary
 * directory, drives a known hit/miss mix (shard a: 700 hits + 300 misses; shard b: 100 hits + 300 misses), waits
 * (bounded polls of Prometheus's own answers, no sleeps) until Prometheus has scraped the final counts, and asks its
 * HTTP API for the per-shard hit ratio, both from the raw counters and through the dashboard's own rate() query.
 * Every expression of dashboards/keymux.json must evaluate without error and return data. `promtool check
 * metrics` must accept the /metrics output. Prometheus is stopped by PID and its directory removed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { slotsConfig, startKeymux } from '../support/keymux.js';
import { freePort } from '../support/ports.js';
import { httpGet } from '../support/metrics.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import type { Proxy } from '../../src/proxy.js';

interface PromVector {
  metric: Record<string, string>;
  value: [number, string];
}

let backends: RedisProcess[] = [];
let proxy: Proxy;
let client: Redis;
let subscriber: Redis | null = null;
let prom: ChildProcess | null = null;
let promPort = 0;
let promDir = '';
let promLog = '';

/** Polls `check` until it returns a value other than undefined; fails with `what` after `timeoutMs`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = 'never checked';
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
      last = 'not yet';
    } catch (err) {
      last = (err as Error).message;
    }
    if (prom !== null && (prom.exitCode !== null || prom.signalCode !== null)) {
      throw new Error(`prometheus exited while waiting for ${what}:\n${promLog}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})\n${promLog}`);
    await new Promise((r) => setTimeout(r, 100)); // Prometheus's state is only visible by asking it again
  }
}

async function query(expr: string): Promise<PromVector[]> {
  const res = await request(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.body.json()) as {
    status: string;
    error?: string;
    data: { resultType: string; result: PromVector[] };
  };
  if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`);
  return body.data.result;
}

const byShard = (v: PromVector[]): Record<string, number> =>
  Object.fromEntries(v.map((r) => [r.metric.shard, Number(r.value[1])]));

async function startPrometheus(adminPort: number): Promise<void> {
  promDir = makeTempDir('keymux-prometheus-');
  const conf = path.join(promDir, 'prometheus.yml');
  fs.writeFileSync(
    conf,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: keymux',
      '    static_configs:',
      `      - targets: ["127.0.0.1:${adminPort}"]`,
      '',
    ].join('\n'),
  );
  for (let attempt = 0; ; attempt++) {
    promPort = await freePort();
    promLog = '';
    const child = spawn(
      'prometheus',
      [
        `--config.file=${conf}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        `--storage.tsdb.path=${path.join(promDir, `data-${attempt}`)}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr!.on('data', (d: Buffer) => {
      promLog += d.toString();
    });
    prom = child;
    try {
      await until('prometheus to be ready', async () =>
        (await httpGet(promPort, '/-/ready')).status === 200 ? true : undefined,
      );
      return;
    } catch (err) {
      await stopPrometheus();
      if (attempt >= 2) throw err; // a port taken between freePort() and the bind: try another
    }
  }
}

async function stopPrometheus(): Promise<void> {
  const p = prom;
  prom = null;
  if (p === null || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis()]);
  proxy = await startKeymux(
    slotsConfig(
      backends.map((b) => b.port),
      {
        admin: '127.0.0.1:0',
        metrics: { hot_keys: { sample_rate: 1, k: 5 } },
      },
    ),
  );
  client = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true });
  await client.connect();
  // A subscriber and one message delivered: the dashboard's pub/sub panels read per-node and message series.
  subscriber = new Redis({ port: proxy.port, host: '127.0.0.1', lazyConnect: true });
  await subscriber.connect();
  const delivered = new Promise<void>((resolve) => subscriber!.once('message', () => resolve()));
  await subscriber.subscribe('dashboard:news');
  expect(await client.publish('dashboard:news', 'hello')).toBe(1);
  await delivered;
  await startPrometheus(proxy.adminPort!);
});

afterAll(async () => {
  await stopPrometheus();
  if (promDir !== '') removeTempDir(promDir);
  client?.disconnect();
  subscriber?.disconnect();
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

describe('Prometheus scraping keymux', () => {
  it('computes the per-shard hit ratio of the traffic, from the counters and through the dashboard query', async () => {
    // Counters at 0 are in Prometheus before any traffic, so rate() sees the whole increase.
    await until('a first scrape', async () => {
      const up = await query('up{job="keymux"}');
      const hits = await query('keymux_shard_hits_total{job="keymux"}');
      return up.length === 1 && up[0].value[1] === '1' && hits.length === 2 ? true : undefined;
    });

    const shardOf = (k: string): number => proxy.topology.router.shardFor(Buffer.from(k));
    const keys = (shard: number, prefix: string, n: number): string[] => {
      const out: string[] = [];
      for (let i = 0; out.length < n; i++) if (shardOf(`${prefix}${i}`) === shard) out.push(`${prefix}${i}`);
      return out;
    };
    const aPresent = keys(0, 'p:a:', 7);
    const bPresent = keys(1, 'p:b:', 4);
    await client.mset(...[...aPresent, ...bPresent].flatMap((k) => [k, 'v']));
    const p = client.pipeline();
    for (const k of aPresent) for (let i = 0; i < 100; i++) p.get(k); // a: 700 hits
    for (const k of keys(0, 'p:a:miss:', 300)) p.get(k); // a: 300 misses
    for (const k of bPresent) for (let i = 0; i < 25; i++) p.get(k); // b: 100 hits
    for (const k of keys(1, 'p:b:miss:', 300)) p.get(k); // b: 300 misses
    await p.exec();

    await until('the final counts in Prometheus', async () => {
      const got = byShard(await query('sum by (shard) (keymux_shard_hits_total + keymux_shard_misses_total)'));
      return got.a === 1000 && got.b === 400 ? got : undefined;
    });
    const ratio = byShard(
      await query(
        'sum by (shard) (keymux_shard_hits_total) / (sum by (shard) (keymux_shard_hits_total) + sum by (shard) (keymux_shard_misses_total))',
      ),
    );
    expect(ratio).toEqual({ a: 0.7, b: 0.25 });

    const dash = JSON.parse(fs.readFileSync('dashboards/keymux.json', 'utf8'));
    const panel = dash.panels.find((x: { title: string }) => x.title === 'Hit ratio per shard');
    const viaDashboard = byShard(await query(substitute(panel.targets[0].expr)));
    expect(viaDashboard.a).toBeCloseTo(0.7, 9);
    expect(viaDashboard.b).toBeCloseTo(0.25, 9);
  });

  it('evaluates every expression of the dashboard, each returning data', async () => {
    const dash = JSON.parse(fs.readFileSync('dashboards/keymux.json', 'utf8'));
    const exprs: string[] = dash.panels.flatMap((x: { targets?: Array<{ expr: string }> }) =>
      (x.targets ?? []).map((t) => t.expr),
    );
    for (const e of exprs) {
      const result = await query(substitute(e));
      expect(result.length, e).toBeGreaterThan(0);
    }
  });

  it('promtool check metrics accepts /metrics', async () => {
    const text = (await httpGet(proxy.adminPort!, '/metrics')).body;
    const all = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    // Exit 3 is lint advice only; prom-client's default gauges nodejs_active_*_total draw it, and nothing else
    // does (README, Prometheus and Grafana, says so).
    expect([0, 3], all.stdout + all.stderr).toContain(all.status);
    expect(all.stdout + all.stderr).not.toMatch(/keymux_|error/i);
    const notes = (all.stdout + all.stderr).split('\n').filter((l) => l.trim() !== '');
    for (const note of notes)
      expect(note).toMatch(
        /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/,
      );
    const ours =
      text
        .split('\n')
        .filter((l) => /^(# (HELP|TYPE) )?keymux_/.test(l))
        .join('\n') + '\n';
    const strict = spawnSync('promtool', ['check', 'metrics'], { input: ours, encoding: 'utf8' });
    expect(strict.stdout + strict.stderr).toBe('');
    expect(strict.status).toBe(0);
  });
});

/** Grafana's variables as the dashboard would send them: all instances, a range covering the whole test. */
function substitute(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*');
}
