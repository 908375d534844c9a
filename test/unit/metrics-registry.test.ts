/**
 * The metric list and its publishing (src/metrics/metrics.ts), and the admin server's route table
 * (src/metrics/admin-server.ts), without redis: a real Topology (pools built, never connected) and plain stats
 * set by hand. Checks the naming rules of the one list, exact published values (counters re-published, not
 * accumulated, at each scrape; cumulative histogram buckets from the data path's arrays), bounded hot-key series,
 * prom-client's default process metrics and how they merge across worker processes, and routing: 404, 405 with
 * Allow, HEAD, 500 on a failing handler.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { AggregatorRegistry, Registry, collectDefaultMetrics } from 'prom-client';
import { Metrics, METRICS, withProcessAggregators, type MetricsSource } from '../../src/metrics/metrics.js';
import { AdminServer, sendJson } from '../../src/metrics/admin-server.js';
import { addObservabilityRoutes } from '../../src/metrics/endpoints.js';
import { Observer } from '../../src/metrics/observer.js';
import { LATENCY_BUCKETS } from '../../src/metrics/stats.js';
import { keyHash } from '../../src/metrics/hotkeys.js';
import { Topology } from '../../src/routing/topology.js';
import { CommandTable } from '../../src/commands/table.js';
import { newProxyStats } from '../../src/server/context.js';
import { configFrom } from '../support/keymux.js';
import { httpGet, parseExposition, samplesOf, valueOf, type Sample } from '../support/metrics.js';

function source(metrics: Record<string, unknown> = {}): MetricsSource & { close(): void } {
  const config = configFrom({
    mode: 'slots',
    shards: [
      { name: 'a', address: '127.0.0.1:1', slots: ['0-8191'] },
      { name: 'b', address: '127.0.0.1:2', slots: ['8192-16383'] },
    ],
    backend: { connections: 2 },
    metrics: { hot_keys: { sample_rate: 1, k: 3 }, ...metrics },
  });
  const topology = new Topology(config, CommandTable.builtin(), 1, null);
  const observer = new Observer(topology.stats, config.metrics);
  return {
    topology,
    observer,
    stats: newProxyStats(),
    version: '9.9.9',
    clientCount: () => 5,
    clientBufferedBytes: () => 0,
    readiness: () => ({ ok: false, reason: 'test' }),
    close: () => {
      observer.close();
      topology.close();
    },
  };
}

describe('the metric list', () => {
  it('follows the naming rules', () => {
    const names = METRICS.map((m) => m.name);
    expect(new Set(names).size).toBe(names.length);
    for (const m of METRICS) {
      expect(m.name, m.name).toMatch(/^keymux_[a-z][a-z0-9_]*[a-z0-9]$/);
      expect(m.help.length, m.name).toBeGreaterThan(10);
      if (m.type === 'counter') expect(m.name).toMatch(/_total$/);
      else expect(m.name).not.toMatch(/_total$/);
      if (m.type === 'histogram') expect(m.name).toMatch(/_seconds$/);
      for (const l of m.labels) expect(l).toMatch(/^[a-z][a-z_]*$/);
      expect(m.labels).not.toContain('le');
    }
  });

  it('declares what the issue asks for', () => {
    const names = new Set(METRICS.map((m) => m.name));
    for (const n of [
      'keymux_shard_hits_total',
      'keymux_shard_misses_total',
      'keymux_shard_commands_total',
      'keymux_shard_errors_total',
      'keymux_shard_duration_seconds',
      'keymux_shard_connections',
      'keymux_shard_reconnects_total',
      'keymux_shard_inflight',
      'keymux_commands_total',
      'keymux_command_duration_seconds',
      'keymux_client_connections',
      'keymux_client_connections_total',
      'keymux_client_connections_rejected_total',
      'keymux_client_received_bytes_total',
      'keymux_client_sent_bytes_total',
      'keymux_redirections_total',
      'keymux_retries_total',
      'keymux_protocol_errors_total',
      'keymux_config_reloads_total',
      'keymux_hot_key_requests_per_second',
    ])
      expect(names.has(n), n).toBe(true);
  });
});

describe('publishing', () => {
  const src = source();
  const metrics = new Metrics(src);
  afterAll(() => src.close());

  it('publishes the plain numbers exactly, every scrape', async () => {
    const a = src.topology.stats.shard('a', '127.0.0.1:1');
    a.hits = 7;
    a.misses = 3;
    a.commands = 10;
    src.stats.bytesIn = 123;
    src.stats.clientsRejected = 2;
    src.stats.moved = 4;
    src.stats.reloadsFailed = 1;
    const get = src.topology.stats.command('get');
    get.count = 11;
    for (let i = 0; i < 2; i++) {
      const s = parseExposition(await metrics.text());
      expect(valueOf(s, 'keymux_shard_hits_total', { shard: 'a' })).toBe(7);
      expect(valueOf(s, 'keymux_shard_misses_total', { shard: 'a' })).toBe(3);
      expect(valueOf(s, 'keymux_shard_hits_total', { shard: 'b' })).toBe(0);
      expect(valueOf(s, 'keymux_client_received_bytes_total')).toBe(123);
      expect(valueOf(s, 'keymux_client_connections_rejected_total')).toBe(2);
      expect(valueOf(s, 'keymux_client_connections')).toBe(5);
      expect(valueOf(s, 'keymux_redirections_total', { type: 'moved' })).toBe(4);
      expect(valueOf(s, 'keymux_redirections_total', { type: 'ask' })).toBe(0);
      expect(valueOf(s, 'keymux_config_reloads_total', { result: 'failed' })).toBe(1);
      expect(valueOf(s, 'keymux_config_reloads_total', { result: 'ok' })).toBe(0);
      expect(valueOf(s, 'keymux_commands_total', { command: 'get' })).toBe(11);
      expect(valueOf(s, 'keymux_ready')).toBe(0);
      expect(valueOf(s, 'keymux_info', { version: '9.9.9', mode: 'slots' })).toBe(1);
    }
    a.hits = 8;
    expect(valueOf(parseExposition(await metrics.text()), 'keymux_shard_hits_total', { shard: 'a' })).toBe(8);
  });

  it('publishes histograms as cumulative buckets from the data path arrays', async () => {
    const h = src.topology.stats.command('hget').latency;
    for (const v of [0.00004, 0.0003, 0.0003, 2, 10]) h.observe(v);
    const s = parseExposition(await metrics.text());
    const bucket = (le: string): number =>
      valueOf(s, 'keymux_command_duration_seconds_bucket', { command: 'hget', le });
    expect(samplesOf(s, 'keymux_command_duration_seconds_bucket', { command: 'hget' }).length).toBe(
      LATENCY_BUCKETS.length + 1,
    );
    expect(bucket('0.00005')).toBe(1);
    expect(bucket('0.0002')).toBe(1);
    expect(bucket('0.0005')).toBe(3);
    expect(bucket('2.5')).toBe(4);
    expect(bucket('5')).toBe(4);
    expect(bucket('+Inf')).toBe(5);
    expect(valueOf(s, 'keymux_command_duration_seconds_count', { command: 'hget' })).toBe(5);
    expect(valueOf(s, 'keymux_command_duration_seconds_sum', { command: 'hget' })).toBeCloseTo(12.00064, 9);
    const json = await metrics.registry.getMetricsAsJSON();
    const hist = json.find((m) => m.name === 'keymux_command_duration_seconds')!;
    expect(hist.values).toContainEqual(
      expect.objectContaining({
        metricName: 'keymux_command_duration_seconds_bucket',
        labels: { command: 'hget', le: '+Inf' },
        value: 5,
      }),
    );
  });

  it('publishes every connection state of every shard', async () => {
    const s = parseExposition(await metrics.text());
    for (const shard of ['a', 'b']) {
      expect(
        samplesOf(s, 'keymux_shard_connections', { shard })
          .map((x) => x.labels.state)
          .sort(),
      ).toEqual(['closed', 'connecting', 'down', 'handshake', 'ready']);
      expect(valueOf(s, 'keymux_shard_connections', { shard, state: 'down' })).toBe(2); // built, never connected
      expect(valueOf(s, 'keymux_shard_up', { shard })).toBe(0);
      expect(valueOf(s, 'keymux_shard_inflight', { shard })).toBe(0);
    }
    expect(valueOf(s, 'keymux_shard_info', { shard: 'b' })).toBe(1);
    expect(samplesOf(s, 'keymux_shard_info', { shard: 'b' })[0].labels).toEqual({
      shard: 'b',
      address: '127.0.0.1:2',
      role: 'master',
    });
  });

  it('publishes at most K hot keys, with their owning shard and escaped keys', async () => {
    for (let i = 0; i < 50; i++) src.observer.onKeyRouted(Buffer.from('hot"key'));
    for (let i = 0; i < 10; i++) for (let k = 0; k < 20; k++) src.observer.onKeyRouted(Buffer.from(`k${k}`));
    const s = parseExposition(await metrics.text());
    const hot = samplesOf(s, 'keymux_hot_key_requests_per_second');
    expect(hot.length).toBe(3);
    const top = hot.reduce((x, y) => (y.value > x.value ? y : x));
    const shard = src.topology.shards[src.topology.router.shardFor(Buffer.from('hot"key'))].name;
    expect(top.labels).toEqual({ key: 'hot"key', shard });
  });

  it('includes prom-client default process metrics', async () => {
    const s = parseExposition(await metrics.text());
    expect(samplesOf(s, 'process_cpu_user_seconds_total').length).toBe(1);
    expect(samplesOf(s, 'nodejs_eventloop_lag_seconds').length).toBe(1);
    expect(samplesOf(s, 'process_start_time_seconds').length).toBe(1);
  });

  it('exports a hash of hot keys with export: hash', async () => {
    const hsrc = source({ hot_keys: { sample_rate: 1, k: 2, export: 'hash' } });
    const hm = new Metrics(hsrc, { processMetrics: false });
    hsrc.observer.onKeyRouted(Buffer.from('user:42'));
    const s = parseExposition(await hm.text());
    expect(samplesOf(s, 'keymux_hot_key_requests_per_second').map((x) => x.labels.key)).toEqual([
      keyHash(Buffer.from('user:42')),
    ]);
    expect(s.some((x) => x.name.startsWith('process_'))).toBe(false);
    hsrc.close();
  });
});

describe('admin server routes', () => {
  const admin = new AdminServer({ ready: () => ({ ok: true, reason: 'fine' }) });
  let port = 0;
  afterAll(() => admin.close());

  it('answers built-in and added routes; 404, 405 with Allow, HEAD and 500', async () => {
    admin
      .addRoute('GET', '/json', (_req, res, url) => sendJson(res, 200, { q: url.searchParams.get('q') }))
      .addRoute('post', '/json', (_req, res) => sendJson(res, 201, { posted: true }))
      .addRoute('GET', '/boom', () => {
        throw new Error('kaput');
      })
      .addRoute('GET', '/async-boom', async () => {
        throw new Error('later');
      });
    const errors: string[] = [];
    admin.setErrorHandler((err, method, path) => errors.push(`${method} ${path}: ${(err as Error).message}`));
    port = (await admin.listen('127.0.0.1', 0)).port;
    expect(await httpGet(port, '/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await httpGet(port, '/readyz')).toMatchObject({ status: 200, body: 'ready: fine\n' });
    expect(JSON.parse((await httpGet(port, '/json?q=x')).body)).toEqual({ q: 'x' });
    expect(await httpGet(port, '/json', 'POST')).toMatchObject({ status: 201 });
    const head = await httpGet(port, '/json', 'HEAD');
    expect(head).toMatchObject({ status: 200, body: '' });
    expect(head.headers['content-type']).toMatch(/application\/json/);
    const wrong = await httpGet(port, '/json', 'DELETE');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.allow).toBe('GET, POST, HEAD');
    expect((await httpGet(port, '/nope')).status).toBe(404);
    expect(await httpGet(port, '/boom')).toMatchObject({ status: 500, body: 'internal error: kaput\n' });
    expect(await httpGet(port, '/async-boom')).toMatchObject({ status: 500, body: 'internal error: later\n' });
    expect(errors).toEqual(['GET /boom: kaput', 'GET /async-boom: later']);
    expect(admin.paths).toEqual(['/async-boom', '/boom', '/healthz', '/json', '/readyz']);
  });

  it('serves the observability endpoints', async () => {
    const src = source();
    const a2 = new AdminServer({ ready: () => src.readiness() });
    addObservabilityRoutes(a2, src, new Metrics(src, { processMetrics: false }));
    const p = (await a2.listen('127.0.0.1', 0)).port;
    try {
      const m = await httpGet(p, '/metrics');
      expect(m.status).toBe(200);
      expect(m.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
      const shards = JSON.parse((await httpGet(p, '/shards')).body);
      expect(
        shards.shards.map((s: { name: string; slots: string[]; connections: unknown[] }) => [
          s.name,
          s.slots,
          s.connections.length,
        ]),
      ).toEqual([
        ['a', ['0-8191'], 2],
        ['b', ['8192-16383'], 2],
      ]);
      expect(JSON.parse((await httpGet(p, '/hotkeys')).body)).toMatchObject({ enabled: true, k: 3, keys: [] });
      expect(JSON.parse((await httpGet(p, '/slowlog')).body)).toMatchObject({ threshold_ms: 10, entries: [] });
      expect((await httpGet(p, '/slowlog?limit=-1')).status).toBe(400);
      expect(await httpGet(p, '/readyz')).toMatchObject({ status: 503, body: 'not ready: test\n' });
    } finally {
      await a2.close();
      src.close();
    }
  });
});

describe("prom-client's default metrics merged across worker processes (workers > 1)", () => {
  type Json = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
  /** One process's real default metrics (prom-client's own aggregators), with some values set as `values` says. */
  async function processMetrics(values: Record<string, number>): Promise<Json> {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const json = await registry.getMetricsAsJSON();
    return json.map((m) =>
      m.name in values ? { ...m, values: m.values.map((v) => ({ ...v, value: values[m.name]! })) } : m,
    ) as Json;
  }
  /** The merge the primary answers /metrics with: every process's metrics by withProcessAggregators. */
  async function merged(processes: Array<Record<string, number>>): Promise<Sample[]> {
    const parts = await Promise.all(processes.map(processMetrics));
    const registry = AggregatorRegistry.aggregate(parts.map((json) => withProcessAggregators(json)));
    return parseExposition(await registry.metrics());
  }

  it('gives per-process limits and their use per process, the earliest start, the worst lag; sums the rest', async () => {
    // The primary, an idle worker and a worker near its file descriptor and heap limits with a stalled event loop.
    const samples = await merged([
      {
        process_max_fds: 1024,
        process_open_fds: 20,
        process_start_time_seconds: 1000,
        nodejs_eventloop_lag_seconds: 0.001,
        nodejs_eventloop_lag_p99_seconds: 0.002,
        nodejs_heap_space_size_available_bytes: 50_000_000,
        process_resident_memory_bytes: 60_000_000,
      },
      {
        process_max_fds: 1024,
        process_open_fds: 100,
        process_start_time_seconds: 1001,
        nodejs_eventloop_lag_seconds: 0.001,
        nodejs_eventloop_lag_p99_seconds: 0.002,
        nodejs_heap_space_size_available_bytes: 40_000_000,
        process_resident_memory_bytes: 80_000_000,
      },
      {
        process_max_fds: 1024,
        process_open_fds: 1000,
        process_start_time_seconds: 1500,
        nodejs_eventloop_lag_seconds: 2.5,
        nodejs_eventloop_lag_p99_seconds: 3,
        nodejs_heap_space_size_available_bytes: 1_000,
        process_resident_memory_bytes: 90_000_000,
      },
    ]);
    expect(valueOf(samples, 'process_max_fds')).toBe(1024);
    expect(valueOf(samples, 'process_open_fds')).toBe(1000);
    expect(valueOf(samples, 'process_start_time_seconds')).toBe(1000);
    expect(valueOf(samples, 'nodejs_eventloop_lag_seconds')).toBe(2.5);
    expect(valueOf(samples, 'nodejs_eventloop_lag_p99_seconds')).toBe(3);
    expect(valueOf(samples, 'nodejs_heap_space_size_available_bytes', { space: 'old' })).toBe(1_000);
    // The pod's memory is every process's together.
    expect(valueOf(samples, 'process_resident_memory_bytes')).toBe(230_000_000);
  });
});
