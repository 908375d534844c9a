/**
 * The cluster rows of `npm run bench` (test/bench/run.ts, section "cluster"): a real Redis Cluster of 3 masters
 * without replicas (test/support/cluster.ts, `redis-cli --cluster create`) on free loopback ports, and keymux in
 * `mode: cluster` in front of it (the built CLI, bin/keymux.js, with seeds = the 3 nodes). redis-benchmark runs
 * against both: "cluster-direct" is `redis-benchmark --cluster`, which reads the slot map and sends each request
 * straight to the master that owns its key (one thread per master, its default); "keymux" is a plain
 * redis-benchmark (one thread, no cluster support) talking to keymux's one port. Rows: SET and GET at pipeline 1
 * and 16, and MGET of 10 random keys, which fall in (nearly always) 10 different slots spread over the masters:
 * through keymux only, since a cluster node answers a cross-slot MGET with CROSSSLOT and `redis-benchmark
 * --cluster` cannot split one; its direct cell is "n/a".
 *
 * Keys. `redis-benchmark --cluster` puts a hash tag in every key, `key:{TAG}:NNNNNNNNNNNN`, where TAG is the
 * shortest alphanumeric string that hashes to a slot of the connection's master (redis' crc16_slottable.h),
 * drawn afresh for every request batch; NNN is the usual -r random number. So its key space is 16384 tags times
 * -r. With -r 6 that is 98,304 keys, 6 per slot, and this module preloads every one of them (the tag table is
 * rebuilt here: for each slot, the first of the 1-, 2- then 3-character strings over 0-9a-zA-Z, in that order,
 * whose CRC16 lands in it) by sending each SET straight to the slot's master. keymux's side uses the plain
 * `key:NNNNNNNNNNNN` with -r 98,304, preloaded through keymux, so both sides read a key space of the same size,
 * spread evenly over the slots. Every GET / MGET run is checked against the masters' INFO keyspace_hits and
 * keyspace_misses: the share of reads that found a value is shown per cell, and below 99% is a failure.
 *
 * Rounds: like the ring rows, each row runs in `rounds` short rounds with the two targets back to back in
 * alternating order; each cell is the median of its rounds. cluster-direct's runs are sized to last ~5 s (see
 * DIRECT_RUN_S: a threaded redis-benchmark rounds its run time up to a 250 ms tick); keymux's keep the ring rows'
 * counts. Everything this starts is registered with the
 * caller (ctx.own, ctx.startKeymux) so that it is stopped by PID on exit, on errors and on Ctrl-C, and is stopped
 * here when the section ends. Load only ever goes to 127.0.0.1.
 */
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { redisCommands } from '../support/redis.js';

export interface BenchResult {
  rps: number;
  p50: number;
  p99: number;
  /** CPU time the proxy process spent per request during the run, in microseconds (ring section's proxies). */
  cpuUs?: number;
}
export type BenchCell = { ok: BenchResult } | { error: string };

export interface ClusterBenchContext {
  /** Where keymux's config and log go. */
  workDir: string;
  /** Multiplies request counts (BENCH_SCALE). */
  scale: number;
  /** Interleaved rounds per row (BENCH_ROUNDS). */
  rounds: number;
  clients: number;
  valueSize: number;
  log(line: string): void;
  /** Registers something to stop on exit, errors and Ctrl-C; returns a function that unregisters it. */
  own(resource: { stop(): Promise<void> }): () => void;
  /** Writes `listen: 127.0.0.1:<free port>` and these YAML lines to a file in workDir, spawns `node bin/keymux.js
   * --config FILE` (tracked, stopped by PID) and waits until it answers PING. */
  startKeymux(name: string, yaml: string[]): Promise<{ port: number; child: ChildProcess; log: string }>;
  /** SIGTERM by PID, SIGKILL after a grace period; resolves when the process has exited. */
  stopProcess(child: ChildProcess): Promise<void>;
  /** `redis-benchmark -h 127.0.0.1 -p PORT -c clients -n N -r KEYSPACE -d valueSize --csv ...args`, bounded in time. */
  redisBenchmark(port: number, n: number, keyspace: number, args: string[]): Promise<BenchCell>;
  /** True once the process is stopping (Ctrl-C): nothing new should start. */
  stopping(): boolean;
}

const HOST = '127.0.0.1';
const MASTERS = 3;
const SLOTS = 16384;
/** -r for `redis-benchmark --cluster`: keys per slot, since its keys carry one of 16384 slot tags. */
const PER_SLOT = 6;
const KEYSPACE = SLOTS * PER_SLOT;
const MGET_KEYS = 10;
/** Reads that must find a preloaded value for a GET / MGET cell to count. */
const MIN_HIT_RATE = 0.99;
/** cluster-node-timeout: well above any stall a saturated 2-core machine causes, so no node is ever marked
 * failed mid-run (without replicas that would take the cluster down). */
const NODE_TIMEOUT_MS = 15_000;
/**
 * `redis-benchmark --cluster` always runs threaded (one thread per master unless --threads says otherwise), and a
 * threaded run does not end at its last reply but at the next tick of its 250 ms progress timer, so its elapsed
 * time (hence rps) is rounded up to the next 250 ms. Short runs would understate the cluster's rps badly (a 0.3 s
 * run counts as 0.5 s). So cluster-direct's runs are sized to last about this long (times BENCH_SCALE), which keeps
 * the rounding under 5% (2.5% on average); a sizing run before each row measures its rate. keymux's runs use a
 * plain, single-threaded redis-benchmark, which ends at the last reply: they keep the ring rows' request counts.
 */
const DIRECT_RUN_S = 5;
const TICK_S = 0.25;

type TargetName = 'direct' | 'keymux';
const LABEL: Record<TargetName, string> = { direct: 'cluster-direct', keymux: 'keymux' };

interface Target {
  name: TargetName;
  port: number;
  keyspace: number;
  extra: string[];
}
interface Row {
  name: string;
  base: number;
  args: string[];
  reads?: boolean;
  keymuxOnly?: boolean;
}

const ROWS: Row[] = [
  { name: 'SET, pipeline 1', base: 200_000, args: ['-t', 'set', '-P', '1'] },
  { name: 'GET, pipeline 1', base: 200_000, args: ['-t', 'get', '-P', '1'], reads: true },
  { name: 'SET, pipeline 16', base: 2_000_000, args: ['-t', 'set', '-P', '16'] },
  { name: 'GET, pipeline 16', base: 2_000_000, args: ['-t', 'get', '-P', '16'], reads: true },
  {
    name: `MGET ${MGET_KEYS} keys in ${MGET_KEYS} slots, pipeline 1`,
    base: 100_000,
    args: ['mget', ...Array<string>(MGET_KEYS).fill('key:__rand_int__')],
    reads: true,
    keymuxOnly: true,
  },
];

// ---------------------------------------------------------------------------------------------------------------
// Slots, independent of keymux's own implementation (src/routing/crc16.ts is what is being measured).

const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** CRC16-XMODEM, as Redis Cluster uses it. */
function crc16(s: string): number {
  let c = 0;
  for (const b of Buffer.from(s)) c = ((c << 8) & 0xffff) ^ CRC_TABLE[((c >> 8) ^ b) & 0xff];
  return c;
}

/** The slot of a key: the text between the first "{" and the next "}" if that is not empty, else the whole key. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return crc16(key.slice(open + 1, close)) % SLOTS;
  }
  return crc16(key) % SLOTS;
}

/** redis-benchmark's crc16_slot_table: for every slot, the shortest alphanumeric string in that slot. */
function slotTags(): string[] {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const tags = new Array<string>(SLOTS);
  let found = 0;
  const offer = (s: string): void => {
    const slot = crc16(s) % SLOTS;
    if (tags[slot] === undefined) {
      tags[slot] = s;
      found++;
    }
  };
  for (const a of alphabet) offer(a);
  for (const a of alphabet) for (const b of alphabet) offer(a + b);
  for (const a of alphabet) for (const b of alphabet) for (const c of alphabet) offer(a + b + c);
  if (found !== SLOTS) throw new Error(`slot tag table incomplete: ${found} of ${SLOTS} slots`);
  return tags;
}

const num = (i: number): string => String(i).padStart(12, '0');
/** The key `redis-benchmark --cluster` sends for slot tag `tag` and random number i: it overwrites the 3
 * characters of "{tag}" with the tag, padding a shorter one with "}". */
const directKey = (tag: string, i: number): string => `key:{${tag.padEnd(3, '}')}}:${num(i)}`;
const keymuxKey = (i: number): string => `key:${num(i)}`;

// ---------------------------------------------------------------------------------------------------------------

const fmtInt = (v: number): string => Math.round(v).toLocaleString('en-US');
const fmtMs = (v: number): string => v.toFixed(3);
const pct = (v: number): string => `${(v * 100).toFixed(v >= 0.9995 ? 0 : 1)}%`;
const alive = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One cell from its rounds: the median rps, p50 and p99 (and CPU per request, when the rounds measured it). */
export function medianResult(rounds: BenchResult[]): BenchResult {
  const cell: BenchResult = {
    rps: median(rounds.map((r) => r.rps)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
  };
  if (rounds.some((r) => r.cpuUs !== undefined)) cell.cpuUs = median(rounds.map((r) => r.cpuUs ?? NaN));
  return cell;
}
/** A round's outcome for the progress lines: rps and latencies, or why it failed. */
export function cellText(cell: BenchCell): string {
  return 'ok' in cell
    ? `${fmtInt(cell.ok.rps)} rps, p50 ${fmtMs(cell.ok.p50)} ms, p99 ${fmtMs(cell.ok.p99)} ms`
    : `FAILED: ${cell.error}`;
}
const show = (r: unknown): string => (r instanceof Error ? `error '${r.message}'` : JSON.stringify(r));

/** SETs key i of `keys` in pipelined batches to `port`, checking every reply is OK. */
async function setAll(port: number, keys: string[], value: string, what: string): Promise<void> {
  const batch = 5000;
  for (let start = 0; start < keys.length; start += batch) {
    const part = keys.slice(start, start + batch);
    const replies = await redisCommands(
      port,
      part.map((k) => ['SET', k, value]),
      { timeoutMs: 60_000 },
    );
    const bad = replies.findIndex((r) => r !== 'OK');
    if (bad >= 0) throw new Error(`preload through ${what}: SET ${part[bad]} answered ${show(replies[bad])}`);
  }
}

async function keyspaceStats(ports: number[]): Promise<{ hits: number; misses: number }> {
  const infos = await Promise.all(
    ports.map(async (p) => String((await redisCommands(p, [['INFO', 'stats']], { timeoutMs: 5000 }))[0])),
  );
  const field = (text: string, name: string): number =>
    Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  return {
    hits: infos.reduce((a, t) => a + field(t, 'keyspace_hits'), 0),
    misses: infos.reduce((a, t) => a + field(t, 'keyspace_misses'), 0),
  };
}

/** Runs the cluster rows; returns the markdown section (heading, setup notes, table) and any failures. Throws
 * when the cluster or keymux cannot be set up. */
export async function benchCluster(ctx: ClusterBenchContext): Promise<{ markdown: string; failures: string[] }> {
  const rounds = ctx.rounds;
  const counts = ROWS.map((r) => Math.max(1000, Math.round((r.base * ctx.scale) / rounds)));
  const directSeconds = Math.max(2 * TICK_S, DIRECT_RUN_S * ctx.scale);
  const value = 'v'.repeat(ctx.valueSize);
  let cluster: RedisCluster | undefined;
  let disown = (): void => undefined;
  let keymux: { port: number; child: ChildProcess; log: string } | undefined;
  const notes: string[] = [];
  const failures: string[] = [];
  try {
    const t0 = Date.now();
    cluster = await startCluster({ masters: MASTERS, replicasPerMaster: 0, nodeTimeoutMs: NODE_TIMEOUT_MS });
    disown = ctx.own(cluster);
    const masters = cluster.masters();
    ctx.log(
      `bench: cluster of ${masters.length} masters on ${masters.map((m) => m.port).join(', ')} in ${((Date.now() - t0) / 1000).toFixed(1)}s`,
    );

    const owner = new Array<number>(SLOTS);
    for (const [id, ranges] of await cluster.slotRanges()) {
      const port = cluster.node(id).port;
      for (const [from, to] of ranges) for (let s = from; s <= to; s++) owner[s] = port;
    }
    const masterPorts = masters.map((m) => m.port);

    keymux = await ctx.startKeymux('keymux-cluster', [
      'mode: cluster',
      `cluster: { seeds: [${cluster.seeds().join(', ')}] }`,
      'log: { level: warn }',
    ]);
    ctx.log(`bench: keymux (mode cluster) answers PING on ${HOST}:${keymux.port}`);

    // Preload: redis-benchmark --cluster's keys straight to their masters, keymux's keys through keymux.
    let t1 = Date.now();
    const tags = slotTags();
    const perMaster = new Map<number, string[]>(masterPorts.map((p) => [p, []]));
    for (let slot = 0; slot < SLOTS; slot++) {
      for (let i = 0; i < PER_SLOT; i++) perMaster.get(owner[slot])!.push(directKey(tags[slot], i));
    }
    await Promise.all([...perMaster].map(([port, keys]) => setAll(port, keys, value, `cluster node ${HOST}:${port}`)));
    ctx.log(
      `bench: preloaded ${fmtInt(KEYSPACE)} keys (${SLOTS} slot tags × ${PER_SLOT}) straight to the masters in ${((Date.now() - t1) / 1000).toFixed(1)}s`,
    );
    t1 = Date.now();
    await setAll(
      keymux.port,
      Array.from({ length: KEYSPACE }, (_, i) => keymuxKey(i)),
      value,
      'keymux',
    );
    ctx.log(`bench: preloaded ${fmtInt(KEYSPACE)} keys through keymux in ${((Date.now() - t1) / 1000).toFixed(1)}s`);
    const sizes = await Promise.all(masterPorts.map(async (p) => Number((await redisCommands(p, [['DBSIZE']]))[0])));
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total !== 2 * KEYSPACE)
      throw new Error(
        `after the preloads the masters hold ${total} keys (${sizes.join(', ')}), expected ${2 * KEYSPACE}`,
      );

    // Reads through keymux return what was stored; the MGET of the row spans slots a node alone cannot serve.
    const picked: string[] = [];
    const slotsSeen = new Set<number>();
    for (let i = 0; picked.length < MGET_KEYS; i++) {
      const k = keymuxKey((i * 9973) % KEYSPACE);
      if (!slotsSeen.has(keySlot(k))) {
        slotsSeen.add(keySlot(k));
        picked.push(k);
      }
    }
    const mastersSpanned = new Set(picked.map((k) => owner[keySlot(k)])).size;
    const [viaKeymux] = await redisCommands(keymux.port, [['MGET', ...picked]], { timeoutMs: 5000 });
    const [viaNode] = await redisCommands(masterPorts[0], [['MGET', ...picked]], { timeoutMs: 5000 });
    const mgetOk =
      Array.isArray(viaKeymux) &&
      viaKeymux.length === MGET_KEYS &&
      viaKeymux.every((v) => typeof v === 'string' && v.length === ctx.valueSize);
    if (!mgetOk) throw new Error(`MGET of ${MGET_KEYS} preloaded keys through keymux answered ${show(viaKeymux)}`);
    if (!(viaNode instanceof Error && viaNode.message.startsWith('CROSSSLOT'))) {
      throw new Error(`a cluster node answered the cross-slot MGET with ${show(viaNode)}, expected a CROSSSLOT error`);
    }
    const probe = directKey(tags[12_345], 3);
    const [direct] = await redisCommands(owner[12_345], [['GET', probe]], { timeoutMs: 5000 });
    if (direct !== value) throw new Error(`GET ${probe} on its master answered ${show(direct)}`);

    notes.push(
      `setup: a Redis Cluster of ${MASTERS} masters, no replicas (\`redis-cli --cluster create\`, cluster-node-timeout ${NODE_TIMEOUT_MS / 1000}s), created in ${((cluster.timings[0]?.ms ?? 0) / 1000).toFixed(1)}s; keymux in \`mode: cluster\` with the ${MASTERS} nodes as seeds and otherwise default settings (read_from master, one connection per node, metrics on)`,
    );
    notes.push(
      `load: cluster-direct is \`redis-benchmark --cluster\` (it reads the slot map and connects to each master itself; ${MASTERS} threads, one per master, its default); keymux is a plain redis-benchmark (1 thread) against keymux's port; both ${ctx.clients} clients, ${ctx.valueSize}-byte values`,
    );
    notes.push(
      `keys: \`--cluster\` sends \`key:{TAG}:NNN\` with a slot tag drawn per request batch, so with -r ${PER_SLOT} its key space is ${fmtInt(SLOTS)} tags × ${PER_SLOT} = ${fmtInt(KEYSPACE)} keys, all preloaded straight to their masters; keymux's is \`key:NNN\` with -r ${fmtInt(KEYSPACE)}, preloaded through keymux`,
    );
    notes.push(
      `MGET: ${MGET_KEYS} random keys per request, in ${MGET_KEYS} different slots in 99.7% of requests and in several always; a check MGET of ${MGET_KEYS} preloaded keys in ${MGET_KEYS} slots on ${mastersSpanned} masters gets "${viaNode.message.split(' ').slice(0, 6).join(' ')}…" from a cluster node and all ${MGET_KEYS} values from keymux`,
    );

    // Rows, in interleaved rounds.
    const targets: Target[] = [
      { name: 'direct', port: masterPorts[0], keyspace: PER_SLOT, extra: ['--cluster'] },
      { name: 'keymux', port: keymux.port, keyspace: KEYSPACE, extra: [] },
    ];
    const results: Array<Map<TargetName, BenchCell>> = [];
    const hitRates: Array<Map<TargetName, number>> = [];
    const requests: Array<Map<TargetName, number>> = [];
    for (let i = 0; i < ROWS.length; i++) {
      const row = ROWS[i];
      const rowTargets = row.keymuxOnly ? targets.filter((t) => t.name === 'keymux') : targets;
      const samples = new Map<TargetName, BenchResult[]>(rowTargets.map((t) => [t.name, []]));
      const reads = new Map<TargetName, { hits: number; misses: number }>(
        rowTargets.map((t) => [t.name, { hits: 0, misses: 0 }]),
      );
      const cells = new Map<TargetName, BenchCell>();
      results.push(cells);
      const n = new Map<TargetName, number>(rowTargets.map((t) => [t.name, counts[i]]));
      requests.push(n);
      const direct = rowTargets.find((t) => t.name === 'direct');
      if (direct !== undefined) {
        const sized = await sizeDirectRuns(ctx, direct, row, counts[i], directSeconds);
        if ('error' in sized) cells.set('direct', sized);
        else {
          n.set('direct', sized.n);
          ctx.log(
            `bench: cluster ${row.name.padEnd(33)} cluster-direct runs sized to ${fmtInt(sized.n)} requests ` +
              `(~${directSeconds.toFixed(1)}s at the ${fmtInt(sized.rps)} rps of a sizing run)`,
          );
        }
      }
      for (let round = 0; round < rounds; round++) {
        for (let k = 0; k < rowTargets.length; k++) {
          const t = rowTargets[(i * rounds + round + k) % rowTargets.length];
          if (cells.has(t.name)) continue; // already failed
          if (ctx.stopping()) return { markdown: '', failures };
          let cell: BenchCell;
          if (!alive(keymux.child)) {
            cell = {
              error: `keymux is no longer running (exit ${keymux.child.exitCode ?? keymux.child.signalCode})${tail(keymux.log)}`,
            };
          } else {
            const before = row.reads ? await keyspaceStats(masterPorts) : undefined;
            cell = await ctx.redisBenchmark(t.port, n.get(t.name)!, t.keyspace, [...t.extra, ...row.args]);
            if (before !== undefined && 'ok' in cell) {
              const after = await keyspaceStats(masterPorts);
              const r = reads.get(t.name)!;
              r.hits += after.hits - before.hits;
              r.misses += after.misses - before.misses;
            }
          }
          if ('ok' in cell) samples.get(t.name)!.push(cell.ok);
          else cells.set(t.name, cell);
          const shown = cellText(cell);
          ctx.log(
            `bench: cluster ${row.name.padEnd(33)} round ${round + 1}/${rounds} ${LABEL[t.name].padEnd(14)} ${shown}`,
          );
        }
      }
      const rates = new Map<TargetName, number>();
      hitRates.push(rates);
      for (const t of rowTargets) {
        const got = samples.get(t.name)!;
        if (!cells.has(t.name)) cells.set(t.name, { ok: medianResult(got) });
        const r = reads.get(t.name)!;
        if (row.reads && r.hits + r.misses > 0) {
          const rate = r.hits / (r.hits + r.misses);
          rates.set(t.name, rate);
          if (rate < MIN_HIT_RATE) {
            failures.push(
              `cluster / ${row.name} / ${LABEL[t.name]}: only ${pct(rate)} of ${fmtInt(r.hits + r.misses)} reads found a preloaded value`,
            );
          }
        }
      }
      for (const [t, c] of cells) if ('error' in c) failures.push(`cluster / ${row.name} / ${LABEL[t]}: ${c.error}`);
    }
    if (!alive(keymux.child)) failures.push(`cluster: keymux exited during the run${tail(keymux.log)}`);

    // How long cluster-direct's runs took by redis-benchmark's own clock, and so how much its 250 ms rounding
    // can have cost at most.
    const directTimes = ROWS.flatMap((_, i) => {
      const c = results[i].get('direct');
      const n = requests[i].get('direct');
      return c !== undefined && 'ok' in c && n !== undefined ? [n / c.ok.rps] : [];
    });
    if (directTimes.length > 0) {
      const shortest = Math.min(...directTimes);
      notes.push(
        `run length: \`--cluster\` always runs threaded, and a threaded redis-benchmark ends a run on its next ` +
          `250 ms progress tick rather than at the last reply, so its time is rounded up; cluster-direct's runs are ` +
          `therefore sized (by a sizing run per row) to last ~${directSeconds.toFixed(1)}s: they took ` +
          `${shortest.toFixed(2)}–${Math.max(...directTimes).toFixed(2)}s, so the rounding understates its rps by at ` +
          `most ${pct(TICK_S / shortest)} (half that on average). keymux's single-threaded runs end at the last reply ` +
          "and keep the ring rows' request counts",
      );
    }

    const head = [
      'row',
      `requests per round × ${rounds} (direct / keymux)`,
      'cluster-direct rps',
      'cluster-direct p50 / p99 ms',
      'keymux rps',
      'keymux p50 / p99 ms',
      'keymux/cluster-direct rps',
      'reads that hit (direct / keymux)',
    ];
    const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, j) => (j < 2 ? ' --- ' : ' ---: ')).join('|')}|`];
    ROWS.forEach((row, i) => {
      const reqs = (t: TargetName): string => {
        const v = requests[i].get(t);
        return v === undefined ? 'n/a' : fmtInt(v);
      };
      const cells = [row.name, `${reqs('direct')} / ${reqs('keymux')}`];
      for (const t of ['direct', 'keymux'] as const) {
        const c = results[i].get(t);
        if (c === undefined) cells.push('n/a', 'n/a');
        else if ('ok' in c) cells.push(fmtInt(c.ok.rps), `${fmtMs(c.ok.p50)} / ${fmtMs(c.ok.p99)}`);
        else cells.push('failed', '—');
      }
      const d = results[i].get('direct');
      const k = results[i].get('keymux');
      cells.push(
        d !== undefined && k !== undefined && 'ok' in d && 'ok' in k && d.ok.rps > 0
          ? `${(k.ok.rps / d.ok.rps).toFixed(2)}×`
          : 'n/a',
      );
      const rate = (t: TargetName): string => {
        if (!row.reads) return '—';
        const v = hitRates[i].get(t);
        return v === undefined ? 'n/a' : pct(v);
      };
      cells.push(row.reads ? `${rate('direct')} / ${rate('keymux')}` : '—');
      lines.push(`| ${cells.join(' | ')} |`);
    });

    const markdown = [
      `## Cluster mode: keymux vs redis-benchmark --cluster straight to a ${MASTERS}-master Redis Cluster`,
      '',
      ...notes.map((n) => `- ${n}`),
      '',
      ...lines,
      '',
      "keymux/cluster-direct is keymux's rps divided by the cluster's own on the same row: the share of a " +
        "cluster-aware client's throughput keymux keeps while making the cluster look like one plain Redis (the " +
        'extra hop, slot lookup, and on MGET the split per slot and reassembly). The MGET row has no direct cell ' +
        'because a cluster refuses cross-slot MGET. "reads that hit" is the share of GET/MGET key lookups that found ' +
        "a preloaded value, from the masters' INFO keyspace_hits / keyspace_misses around each run.",
    ].join('\n');
    return { markdown, failures };
  } finally {
    if (keymux !== undefined) await ctx.stopProcess(keymux.child);
    if (cluster !== undefined) {
      await cluster.stop();
      disown();
    }
  }
}

/** Finds how many requests make one cluster-direct run last about `seconds`: runs the row with `count` requests,
 * then, while a run is too short to measure its rate well (its time is rounded up to a 250 ms tick), again with
 * more; the rate of the last run sets the size. */
async function sizeDirectRuns(
  ctx: ClusterBenchContext,
  t: Target,
  row: Row,
  count: number,
  seconds: number,
): Promise<{ n: number; rps: number } | { error: string }> {
  const enough = Math.max(2 * TICK_S, seconds / 3);
  let n = count;
  for (let step = 0; ; step++) {
    const c = await ctx.redisBenchmark(t.port, n, t.keyspace, [...t.extra, ...row.args]);
    if ('error' in c) return { error: `sizing run: ${c.error}` };
    if (n / c.ok.rps >= enough || step === 2)
      return { n: Math.max(count, Math.round(c.ok.rps * seconds)), rps: c.ok.rps };
    n = Math.round(c.ok.rps * enough * 2);
  }
}

function tail(log: string): string {
  if (!fs.existsSync(log)) return '';
  const lines = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-20);
  return lines.length > 0 && lines[0] !== '' ? `\n--- last lines of ${log} ---\n${lines.join('\n')}` : '';
}
