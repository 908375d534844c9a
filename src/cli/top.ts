/**
 * `keymux top [--admin ADDRESS] [--token-file FILE] [--once]`: a live view of a running keymux, like top or `redis-cli --stat`,
 * built only on its admin endpoints (GET /shards, /metrics, /hotkeys, fetched with undici). Every second it
 * shows, per shard: state, ops/s, hit ratio and p99 latency over the last interval, requests in flight,
 * errors/s and the state of keymux's pub/sub subscriber connection to it (a line per one not ready: why, since
 * when); the clients connected and total ops/s; the hottest keys; and the migrations in progress with a
 * progress bar. Rates come from the difference between two fetches, so the first frame appears after one
 * interval.
 *
 * On a terminal it takes the whole screen (the alternate screen, as top does; q or Ctrl-C quits and restores
 * it). `--once` prints one plain frame (no escape codes) and exits, for scripts; when stdout is not a terminal,
 * frames are printed one after another the same way.
 */
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { adminToken, adminUrl, authHeaders, count, processIo, TOKEN_HINT, type Io } from './common.js';

const USAGE = `usage: keymux top [--admin ADDRESS] [--token-file FILE] [--once] [--interval MS]

A live view of a running keymux from its admin endpoints: shards (state, ops/s, hit ratio, p99, in flight,
errors, pub/sub subscriber connection), clients, hot keys and migrations. q or Ctrl-C quits.

  -a, --admin ADDRESS   keymux's admin address (default http://127.0.0.1:9121, or KEYMUX_ADMIN); https://...
                        for an admin port with TLS (a private CA: NODE_EXTRA_CA_CERTS=ca.pem)
      --token-file FILE the admin token (admin.token_file), also KEYMUX_ADMIN_TOKEN_FILE or KEYMUX_ADMIN_TOKEN;
                        without it, hot keys are shown hashed
      --once            print one plain frame and exit (for scripts)
      --interval MS     refresh interval (default 1000)
  -h, --help            this help
`;

// ---------------------------------------------------------------------------------------------------------------
// What the admin endpoints answer (the fields top uses)

/** keymux's pub/sub subscriber connection to a node (with workers, one per worker, each with its `worker`). */
interface PubSubConnectionJson {
  worker?: number;
  address: string;
  state: string;
  subscriptions: number;
  last_error: string | null;
  down_since: string | null;
}

interface ShardJson {
  name: string;
  address: string;
  state: string;
  inflight: number;
  commands: number;
  errors: number;
  hits: number;
  misses: number;
  weight: number | null;
  slots: string[] | null;
  /** Absent from a keymux older than this field. */
  pubsub_connections?: PubSubConnectionJson[];
}

interface MigrationJson {
  id: number;
  state: string;
  sources: string[];
  keysScanned: number;
  keysMoved: number;
  keysLeft: number;
  startedAt: number;
  finishedAt?: number | null;
  errors: number;
}

interface ShardsJson {
  mode: string;
  version: number;
  shards: ShardJson[];
  other_pubsub_connections?: Array<PubSubConnectionJson & { shard: string }>;
  migrations: MigrationJson[];
}

interface HotKeysJson {
  enabled: boolean;
  window_s: number;
  keys: Array<{ rank: number; key: string; shard: string; requests: number; rate: number }>;
}

/** One fetch of everything a frame needs. */
export interface Snapshot {
  at: number;
  shards: ShardsJson;
  hotkeys: HotKeysJson;
  metrics: Metric[];
}

export interface Metric {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format -> samples (comments skipped). */
export function parsePrometheus(text: string): Metric[] {
  const out: Metric[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    if (m[2] !== undefined) {
      for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      }
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    out.push({ name: m[1], labels, value });
  }
  return out;
}

export async function fetchSnapshot(base: string, timeoutMs = 5000, token: string | null = null): Promise<Snapshot> {
  const get = async (path: string): Promise<string> => {
    const res = await request(`${base}${path}`, {
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      headers: authHeaders(token),
    });
    const body = await res.body.text();
    if (res.statusCode === 401) throw new Error(`GET ${path} answered 401: ${TOKEN_HINT}`);
    if (res.statusCode !== 200) throw new Error(`GET ${path} answered ${res.statusCode}: ${body.trim()}`);
    return body;
  };
  const [shards, hotkeys, metrics] = await Promise.all([get('/shards'), get('/hotkeys'), get('/metrics')]);
  return {
    at: Date.now(),
    shards: JSON.parse(shards) as ShardsJson,
    hotkeys: JSON.parse(hotkeys) as HotKeysJson,
    metrics: parsePrometheus(metrics),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Figures between two snapshots

/** Cumulative histogram buckets of `name` for the samples matching `match`: le -> count. */
function buckets(metrics: Metric[], name: string, match: (l: Record<string, string>) => boolean): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of metrics) {
    if (m.name !== `${name}_bucket` || !match(m.labels)) continue;
    const le = m.labels.le === '+Inf' ? Infinity : Number(m.labels.le);
    out.set(le, (out.get(le) ?? 0) + m.value);
  }
  return out;
}

/** The q-quantile of the observations between two cumulative bucket sets, interpolated as Prometheus does. */
export function quantile(q: number, now: Map<number, number>, before: Map<number, number> | null): number | null {
  const les = [...now.keys()].sort((a, b) => a - b);
  const cum = les.map((le) => (now.get(le) ?? 0) - (before?.get(le) ?? 0));
  const total = cum[cum.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < les.length; i++) {
    if (cum[i] >= rank) {
      if (les[i] === Infinity) return les[i - 1] ?? null; // above the last bound: the bound is all we know
      const lower = i === 0 ? 0 : les[i - 1];
      const below = i === 0 ? 0 : cum[i - 1];
      const inBucket = cum[i] - below;
      return inBucket > 0 ? lower + ((les[i] - lower) * (rank - below)) / inBucket : les[i];
    }
  }
  return null;
}

function sum(metrics: Metric[], name: string): number {
  let s = 0;
  for (const m of metrics) if (m.name === name) s += m.value;
  return s;
}

function ms(seconds: number | null): string {
  if (seconds === null) return '-';
  const v = seconds * 1000;
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}

function pad(s: string, w: number, right = false): string {
  if (s.length > w) return w > 1 ? `${s.slice(0, w - 1)}~` : s.slice(0, w);
  return right ? s.padStart(w) : s.padEnd(w);
}

/** A shard's PUBSUB cell: '-' without a subscriber connection, else ready only when every one (per worker) is. */
function pubsubState(conns: PubSubConnectionJson[]): string {
  if (conns.length === 0) return '-';
  return conns.find((c) => c.state !== 'ready')?.state ?? 'ready';
}

export function progressBar(fraction: number, width: number): string {
  const f = Math.max(0, Math.min(1, fraction));
  const filled = Math.round(f * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/** One frame as lines of at most `width` characters (and at most `height` lines). */
export function renderFrame(
  admin: string,
  now: Snapshot,
  before: Snapshot | null,
  width: number,
  height: number,
): string[] {
  const dt = before === null ? 0 : Math.max(0.001, (now.at - before.at) / 1000);
  const rate = (a: number, b: number | undefined): number | null => (before === null ? null : (a - (b ?? 0)) / dt);
  const lines: string[] = [];
  const info = now.metrics.find((m) => m.name === 'keymux_info');
  const time = new Date(now.at).toTimeString().slice(0, 8);
  lines.push(
    `keymux top - ${admin}  ${info?.labels.version !== undefined ? `v${info.labels.version} ` : ''}${now.shards.mode} mode, config v${now.shards.version}  ${time}`,
  );
  const clients = sum(now.metrics, 'keymux_client_connections');
  const cmds = sum(now.metrics, 'keymux_commands_total');
  const opsTotal = rate(cmds, before === null ? undefined : sum(before.metrics, 'keymux_commands_total'));
  const p99All = quantile(
    0.99,
    buckets(now.metrics, 'keymux_command_duration_seconds', () => true),
    before === null ? null : buckets(before.metrics, 'keymux_command_duration_seconds', () => true),
  );
  const up = now.shards.shards.filter((s) => s.state === 'ready').length;
  lines.push(
    `clients ${count(clients)}   ops/s ${opsTotal === null ? '-' : count(opsTotal)}   p99 ${ms(p99All)} ms   shards ${up}/${now.shards.shards.length} up`,
  );
  lines.push('');
  const cols: Array<[string, number, boolean]> = [
    ['SHARD', 14, false],
    ['ADDRESS', 21, false],
    ['STATE', 10, false],
    ['OPS/S', 9, true],
    ['HIT%', 7, true],
    ['P99 MS', 8, true],
    ['INFLIGHT', 9, true],
    ['ERR/S', 7, true],
    ['PUBSUB', 10, false],
  ];
  const row = (cells: string[]): string => cells.map((c, i) => pad(c, cols[i][1], cols[i][2])).join(' ');
  lines.push(row(cols.map((c) => c[0])));
  const prevShard = new Map((before?.shards.shards ?? []).map((s) => [s.name, s]));
  for (const s of now.shards.shards) {
    const p = prevShard.get(s.name);
    const ops = rate(s.commands, p?.commands);
    const hits = s.hits - (p?.hits ?? 0);
    const misses = s.misses - (p?.misses ?? 0);
    const hitRatio = before === null || hits + misses === 0 ? null : hits / (hits + misses);
    const match = (l: Record<string, string>): boolean => l.shard === s.name;
    const p99 = quantile(
      0.99,
      buckets(now.metrics, 'keymux_shard_duration_seconds', match),
      before === null ? null : buckets(before.metrics, 'keymux_shard_duration_seconds', match),
    );
    const errs = rate(s.errors, p?.errors);
    lines.push(
      row([
        s.name,
        s.address,
        s.state,
        ops === null ? '-' : count(ops),
        hitRatio === null ? '-' : `${(hitRatio * 100).toFixed(1)}%`,
        before === null ? '-' : ms(p99),
        count(s.inflight),
        errs === null ? '-' : count(errs),
        pubsubState(s.pubsub_connections ?? []),
      ]),
    );
  }
  // Why a subscriber connection is not ready, and for how long: subscribers of that node get no messages meanwhile.
  const notReady = [
    ...now.shards.shards.flatMap((s) => (s.pubsub_connections ?? []).map((c) => ({ shard: s.name, ...c }))),
    ...(now.shards.other_pubsub_connections ?? []),
  ].filter((c) => c.state !== 'ready');
  for (const c of notReady) {
    const since = c.down_since === null ? null : Math.max(0, (now.at - Date.parse(c.down_since)) / 1000);
    lines.push(
      `PUBSUB ${c.shard} ${c.address}${c.worker !== undefined ? ` worker ${c.worker}` : ''} ${c.state}` +
        `${since === null ? '' : ` for ${since.toFixed(0)} s`}, ${count(c.subscriptions)} subscriptions: ${c.last_error ?? ''}`,
    );
  }
  lines.push('');
  const migrations = now.shards.migrations;
  const active = migrations.filter((m) => m.state === 'fencing' || m.state === 'running');
  const shown = active.length > 0 ? active : migrations.slice(-1);
  lines.push(shown.length === 0 ? 'MIGRATIONS  none' : 'MIGRATIONS');
  for (const m of shown) {
    const total = m.keysScanned + m.keysLeft;
    const fraction = m.state === 'done' ? 1 : total === 0 ? 0 : m.keysScanned / total;
    const seconds = ((m.finishedAt ?? now.at) - m.startedAt) / 1000;
    lines.push(
      `#${m.id} ${pad(m.state, 10)} ${progressBar(fraction, 30)} ${pad(`${Math.floor(fraction * 100)}%`, 4, true)}  ` +
        `${count(m.keysScanned)}/${count(total)} scanned, ${count(m.keysMoved)} moved, ${m.errors} errors, ${seconds.toFixed(1)} s`,
    );
  }
  lines.push('');
  const hk = now.hotkeys;
  lines.push(hk.enabled ? `HOT KEYS (last ${hk.window_s} s)` : 'HOT KEYS  off (metrics.hot_keys.enabled: false)');
  if (hk.enabled) {
    const keyWidth = Math.max(20, Math.min(60, width - 30));
    lines.push(`${pad('#', 3)} ${pad('KEY', keyWidth)} ${pad('REQ/S', 10, true)}  SHARD`);
    if (hk.keys.length === 0) lines.push('    (no keys yet)');
    const room = Math.max(1, height - lines.length - 1);
    for (const k of hk.keys.slice(0, room)) {
      lines.push(`${pad(String(k.rank), 3)} ${pad(k.key, keyWidth)} ${pad(k.rate.toFixed(1), 10, true)}  ${k.shard}`);
    }
  }
  return lines.slice(0, height).map((l) => (l.length > width ? l.slice(0, width) : l));
}

// ---------------------------------------------------------------------------------------------------------------

export async function run(argv: string[], io: Io = processIo): Promise<number> {
  let values: { admin?: string; once?: boolean; interval?: string; help?: boolean; 'token-file'?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        admin: { type: 'string', short: 'a' },
        'token-file': { type: 'string' },
        once: { type: 'boolean' },
        interval: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.err(`keymux top: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const base = adminUrl(values.admin ?? process.env.KEYMUX_ADMIN ?? '127.0.0.1:9121');
  let token: string | null;
  try {
    token = adminToken(values['token-file']);
  } catch (err) {
    io.err(`keymux top: ${(err as Error).message}\n`);
    return 2;
  }
  const fetchNow = (): Promise<Snapshot> => fetchSnapshot(base, 5000, token);
  const interval = Number(values.interval ?? 1000);
  if (!Number.isInteger(interval) || interval < 100) {
    io.err('keymux top: --interval must be an integer >= 100 (milliseconds)\n');
    return 2;
  }
  const wait = (msDelay: number): Promise<void> => new Promise((r) => setTimeout(r, msDelay));
  if (values.once) {
    try {
      const first = await fetchNow();
      await wait(interval); // rates need two fetches
      const second = await fetchNow();
      io.out(`${renderFrame(base, second, first, 120, 1000).join('\n')}\n`);
      return 0;
    } catch (err) {
      io.err(`keymux top: cannot read ${base}: ${(err as Error).message}\n`);
      return 2;
    }
  }
  const tty = process.stdout.isTTY === true;
  return tty ? interactive(base, interval, fetchNow) : plainLoop(base, interval, io, wait, fetchNow);
}

/** Not a terminal: one plain frame per interval until killed. */
async function plainLoop(
  base: string,
  interval: number,
  io: Io,
  wait: (ms: number) => Promise<void>,
  fetchNow: () => Promise<Snapshot>,
): Promise<number> {
  let before: Snapshot | null = null;
  for (;;) {
    try {
      const now = await fetchNow();
      if (before !== null) io.out(`${renderFrame(base, now, before, 120, 1000).join('\n')}\n\n`);
      before = now;
    } catch (err) {
      io.err(`keymux top: cannot read ${base}: ${(err as Error).message}\n`);
    }
    await wait(interval);
  }
}

/** Full screen: the alternate screen buffer, redrawn in place every interval; q or Ctrl-C quits. */
function interactive(base: string, interval: number, fetchNow: () => Promise<Snapshot>): Promise<number> {
  const out = process.stdout;
  const stdin = process.stdin;
  return new Promise((resolve) => {
    let before: Snapshot | null = null;
    let last: string[] = [`keymux top - ${base}`, '', 'waiting for the first two samples...'];
    let timer: NodeJS.Timeout | null = null;
    let stopped = false;
    const draw = (): void => {
      const width = out.columns ?? 120;
      const height = out.rows ?? 40;
      const lines = last.slice(0, height - 1).map((l) => (l.length > width ? l.slice(0, width) : l));
      lines.push(pad('q: quit', width).slice(0, width));
      out.write(`\x1b[H${lines.map((l) => `${l}\x1b[K`).join('\r\n')}\x1b[J`);
    };
    const tick = async (): Promise<void> => {
      try {
        const now = await fetchNow();
        if (before !== null) last = renderFrame(base, now, before, out.columns ?? 120, (out.rows ?? 40) - 1);
        before = now;
      } catch (err) {
        last = [
          `keymux top - ${base}`,
          '',
          `cannot read ${base}: ${(err as Error).message}`,
          'retrying every interval',
        ];
        before = null;
      }
      if (stopped) return;
      draw();
      timer = setTimeout(() => void tick(), interval);
    };
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      out.write('\x1b[?25h\x1b[?1049l'); // cursor back, main screen back
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      resolve(0);
    };
    out.write('\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J'); // alternate screen, hide the cursor
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', (d: Buffer) => {
      const c = d.toString('latin1');
      if (c === 'q' || c === 'Q' || c === '\x03' || c === '\x1b') stop();
    });
    stdin.resume();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    out.on('resize', draw);
    draw();
    void tick();
  });
}
