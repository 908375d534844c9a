/**
 * INFO as keymux answers it, sections in Redis's order: Server (keymux's version and the backends' redis_version),
 * Clients, a Keymux section (mode, every shard's state), CPU (keymux's own process), Replication (role:master: the
 * one server its clients see), and sections aggregated over all shards: Memory (byte counts summed,
 * number_of_cached_scripts the smallest: see addMemoryLine), Persistence and Replication fields (FLEET_FIELDS),
 * Stats (every counter summed), Errorstats (counts summed per error prefix), Commandstats (calls, usec, rejected and
 * failed calls summed per command, usec_per_call recomputed) and Keyspace (keys and expires summed per db, avg_ttl
 * weighted by expires). keymux sends "INFO <the shard sections asked for>" to every shard and builds the text
 * here. A shard that does not answer is shown as down rather than failing INFO, so client libraries that run INFO
 * on connect (ioredis's ready check) still connect while one shard is out. The reply is a bulk string
 * in RESP2 and a verbatim string (`=len`, `txt:` format) in RESP3, as Redis writes it; a RESP3 client's shards
 * answer in that form too, and their `txt:` prefix is dropped before the text is read.
 */
import type { Request } from '../core/request.js';
import type { Fragment } from '../core/fragment.js';
import type { Topology } from '../routing/topology.js';
import type { ProxyContext } from '../server/context.js';
import { commandFrame, textReply } from '../resp/writer.js';
import { errorText, isErrorFrame, readBulk } from '../resp/reply-reader.js';

/** Sections made from the shards' own INFO (the others are keymux's). */
const SHARD_SECTIONS = [
  'clients',
  'memory',
  'persistence',
  'stats',
  'replication',
  'errorstats',
  'commandstats',
  'keyspace',
];
/** INFO with no argument or `default` (as Redis: everything but commandstats and latencystats). */
const DEFAULT_SECTIONS = [
  'server',
  'clients',
  'keymux',
  'memory',
  'persistence',
  'stats',
  'replication',
  'cpu',
  'errorstats',
  'keyspace',
];
/** Every section, in Redis 7's order (commandstats before errorstats). */
const ALL_SECTIONS = [...DEFAULT_SECTIONS.slice(0, -2), 'commandstats', 'errorstats', 'keyspace'];

/** The sections an INFO invocation asks for, lowercase, in Redis's order. */
function wantedSections(args: Buffer[]): string[] {
  const asked = args.slice(1).map((a) => a.toString('latin1').toLowerCase());
  if (asked.length === 0) return DEFAULT_SECTIONS;
  if (asked.some((w) => w === 'all' || w === 'everything')) return ALL_SECTIONS;
  const out = new Set<string>();
  for (const w of asked) {
    if (w === 'default') for (const d of DEFAULT_SECTIONS) out.add(d);
    else out.add(w);
  }
  // In the order Redis writes them, whatever the order asked (unknown sections are empty: dropped).
  return ALL_SECTIONS.filter((name) => out.has(name));
}

const shardFrames = new Map<string, Buffer>();

/**
 * What each shard is asked for an INFO: its sections among SHARD_SECTIONS (keyspace at least: the reply also says
 * the shard is up). Control plane; one frame per distinct set, kept.
 */
export function infoShardFrame(args: Buffer[]): Buffer {
  const wanted = wantedSections(args);
  const sections = SHARD_SECTIONS.filter((s) => s === 'keyspace' || wanted.includes(s));
  const key = sections.join(' ');
  let frame = shardFrames.get(key);
  if (frame === undefined) {
    frame = commandFrame(['INFO', ...sections]);
    shardFrames.set(key, frame);
  }
  return frame;
}

/** Sums of one aggregated section: field -> numbers in the order they were first seen. */
type Summed = Map<string, Map<string, number>>;

/** Adds `name:a=1,b=2` (or `name:3`, as field '') to `into`. Non-numeric values are left out. */
function addFields(into: Summed, line: string): void {
  const colon = line.indexOf(':');
  if (colon <= 0) return;
  const name = line.slice(0, colon);
  const value = line.slice(colon + 1);
  let fields = into.get(name);
  if (fields === undefined) {
    fields = new Map();
    into.set(name, fields);
  }
  const parts = value.includes('=') ? value.split(',') : [`=${value}`];
  for (const part of parts) {
    const eq = part.indexOf('=');
    const n = Number(part.slice(eq + 1));
    if (eq < 0 || part.length === eq + 1 || !Number.isFinite(n)) continue;
    const field = part.slice(0, eq);
    if (name.endsWith('_perc')) return; // a percentage summed over shards means nothing
    fields.set(field, (fields.get(field) ?? 0) + n);
  }
}

const num = (v: number): string => (Number.isInteger(v) ? String(v) : v.toFixed(2));

/** Memory fields that count something every shard holds a copy of: the fleet has what every shard has (smallest). */
const MEMORY_MIN_FIELDS = new Set(['number_of_cached_scripts']);

/** One Memory field over the shards: summed (or the smallest), or the first shard's text. */
interface MemoryField {
  sum: number;
  min: number;
  text: string | null;
  /** The shards also wrote a `<name>_human` form: recomputed from the sum. */
  human: boolean;
}

/**
 * Memory, aggregated: byte counts summed (the fleet's memory), their `_human` forms recomputed as Redis writes them,
 * ratios and percentages left out (a sum of ratios means nothing), number_of_cached_scripts the smallest (scripts
 * usable on every shard), text fields (maxmemory_policy, mem_allocator) as the first shard reports them.
 */
function addMemoryLine(into: Map<string, MemoryField>, line: string): void {
  const colon = line.indexOf(':');
  if (colon <= 0) return;
  const name = line.slice(0, colon);
  const value = line.slice(colon + 1);
  if (name.endsWith('_ratio') || name.endsWith('_perc')) return;
  if (name.endsWith('_human')) {
    const base = into.get(name.slice(0, -6));
    if (base !== undefined) base.human = true;
    return;
  }
  const n = Number(value);
  let f = into.get(name);
  if (f === undefined) {
    f = { sum: 0, min: Number.POSITIVE_INFINITY, text: null, human: false };
    into.set(name, f);
  }
  if (value === '' || !Number.isFinite(n)) f.text ??= value;
  else {
    f.sum += n;
    if (n < f.min) f.min = n;
  }
}

/**
 * How Persistence and Replication fields combine over the shards (fields not named are left out: a sum or a pick
 * of them would describe no server): counters summed, "something is under way" flags the largest (1 when any shard
 * is loading or saving), the last save the oldest (every shard saved since), a status "ok" only when every shard's is.
 */
const FLEET_FIELDS = new Map<string, 'sum' | 'max' | 'min' | 'status'>([
  ['loading', 'max'],
  ['async_loading', 'max'],
  ['rdb_changes_since_last_save', 'sum'],
  ['rdb_bgsave_in_progress', 'max'],
  ['rdb_last_save_time', 'min'],
  ['rdb_last_bgsave_status', 'status'],
  ['rdb_saves', 'sum'],
  ['aof_enabled', 'max'],
  ['aof_rewrite_in_progress', 'max'],
  ['aof_last_bgrewrite_status', 'status'],
  ['aof_last_write_status', 'status'],
  ['master_repl_offset', 'sum'],
]);

/** One Persistence or Replication line of a shard into `into` (field -> value so far). */
function addFleetLine(into: Map<string, number | string>, line: string): void {
  const colon = line.indexOf(':');
  if (colon <= 0) return;
  const name = line.slice(0, colon);
  const rule = FLEET_FIELDS.get(name);
  if (rule === undefined) return;
  const value = line.slice(colon + 1);
  const had = into.get(name);
  if (rule === 'status') {
    into.set(name, had === undefined || had === 'ok' ? value : had);
    return;
  }
  const n = Number(value);
  if (value === '' || !Number.isFinite(n)) return;
  if (had === undefined) into.set(name, n);
  else if (rule === 'sum') into.set(name, (had as number) + n);
  else if (rule === 'max') into.set(name, Math.max(had as number, n));
  else into.set(name, Math.min(had as number, n));
}

/** process.cpuUsage() microseconds as Redis writes CPU seconds (%ld.%06ld). */
function cpuSeconds(micros: number): string {
  return `${Math.floor(micros / 1e6)}.${String(micros % 1e6).padStart(6, '0')}`;
}

function memoryLines(fields: Map<string, MemoryField>): string[] {
  const lines: string[] = [];
  for (const [name, f] of fields) {
    if (f.text !== null) {
      lines.push(`${name}:${f.text}`);
      continue;
    }
    const v = MEMORY_MIN_FIELDS.has(name) ? f.min : f.sum;
    lines.push(`${name}:${num(v)}`);
    if (f.human) lines.push(`${name}_human:${bytesToHuman(v)}`);
  }
  return lines;
}

/** Redis's bytesToHuman: "123B", "1.50K", "2.00M"... */
function bytesToHuman(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T', 'P'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n}B` : `${v.toFixed(2)}${units[i]}`;
}

function summedLines(sums: Summed): string[] {
  const lines: string[] = [];
  for (const [name, fields] of sums) {
    if (fields.size === 0) continue;
    if (fields.size === 1 && fields.has('')) {
      lines.push(`${name}:${num(fields.get('') as number)}`);
      continue;
    }
    const calls = fields.get('calls') ?? 0;
    const parts = [...fields].map(([f, v]) =>
      // A sum of averages means nothing: the average of the summed calls instead.
      f === 'usec_per_call'
        ? `${f}=${(calls > 0 ? (fields.get('usec') ?? 0) / calls : 0).toFixed(2)}`
        : `${f}=${num(v)}`,
    );
    lines.push(`${name}:${parts.join(',')}`);
  }
  return lines;
}

export interface InfoContext {
  args: Buffer[];
  topology: Topology;
  ctx: ProxyContext;
}

export function mergeInfo(parent: Request): Buffer {
  const { args, topology, ctx } = parent.mergeContext as InfoContext;
  const fragments = parent.fragments as Fragment[];
  const wanted = wantedSections(args);
  const summed = new Map<string, Summed>([
    ['stats', new Map()],
    ['errorstats', new Map()],
    ['commandstats', new Map()],
  ]);
  const memory = new Map<string, MemoryField>();
  const fleet = new Map<string, Map<string, number | string>>([
    ['persistence', new Map()],
    ['replication', new Map()],
  ]);
  const dbs = new Map<string, { keys: number; expires: number; ttlWeighted: number }>();
  const shardLines: string[] = [];
  // The shards' own blocked_clients, summed: a blocking call keymux has written may not have reached its shard yet.
  let shardsBlocked = 0;
  let up = 0;
  topology.shards.forEach((shard, i) => {
    const reply = fragments[i].reply as Buffer;
    if (isErrorFrame(reply)) {
      shardLines.push(
        `shard_${i}:name=${shard.name},address=${shard.address},status=down,error=${errorText(reply).replace(/[,\r\n]/g, ' ')}`,
      );
      return;
    }
    up++;
    shardLines.push(`shard_${i}:name=${shard.name},address=${shard.address},status=up`);
    const bulk = readBulk(reply);
    if (bulk === null) return;
    // A RESP3 shard's verbatim string starts with its format ("txt:"), before the first section's title: without
    // it dropped, that title was not seen and its section's fields were lost.
    const body = reply[0] === 61 /* = */ && bulk.length >= 4 && bulk[3] === 58 /* : */ ? bulk.subarray(4) : bulk;
    let section: Summed | undefined;
    let fleetSection: Map<string, number | string> | undefined;
    let inMemory = false;
    let inClients = false;
    for (const line of body.toString('latin1').split('\r\n')) {
      if (line.startsWith('# ')) {
        const title = line.slice(2).trim().toLowerCase();
        section = summed.get(title);
        fleetSection = fleet.get(title);
        inMemory = title === 'memory';
        inClients = title === 'clients';
        continue;
      }
      if (inClients) {
        if (line.startsWith('blocked_clients:')) shardsBlocked += Number(line.slice(16)) || 0;
        continue;
      }
      if (inMemory) {
        addMemoryLine(memory, line);
        continue;
      }
      if (fleetSection !== undefined) {
        addFleetLine(fleetSection, line);
        continue;
      }
      if (section !== undefined) {
        addFields(section, line);
        continue;
      }
      const m = /^(db\d+):keys=(\d+),expires=(\d+),avg_ttl=(\d+)/.exec(line);
      if (m === null) continue;
      const d = dbs.get(m[1]) ?? { keys: 0, expires: 0, ttlWeighted: 0 };
      d.keys += Number(m[2]);
      d.expires += Number(m[3]);
      d.ttlWeighted += Number(m[3]) * Number(m[4]);
      dbs.set(m[1], d);
    }
  });
  const config = topology.config;
  const sections: string[] = [];
  for (const name of wanted) {
    switch (name) {
      case 'server':
        sections.push(
          [
            '# Server',
            `redis_version:${ctx.backendVersion}`,
            `keymux_version:${ctx.version}`,
            'redis_mode:standalone',
            `os:${process.platform}`,
            `process_id:${process.pid}`,
            `tcp_port:${config.listen?.port ?? config.tls.listen?.port ?? 0}`,
            `uptime_in_seconds:${Math.floor((Date.now() - ctx.startedAt) / 1000)}`,
          ].join('\r\n'),
        );
        break;
      case 'clients':
        sections.push(
          [
            '# Clients',
            `connected_clients:${ctx.clientCount()}`,
            `maxclients:${config.clients.max}`,
            // keymux's own clients blocked in a blocking command sent to its shard (as one Redis server counts them),
            // at most what the shards say is blocked there: a call written to its shard's connection is not blocked
            // until the shard has read it, and a client that waits for blocked_clients before acting (Redis's own test
            // suite does) would otherwise act before the shard blocks the call (a write overtaking it on another
            // connection). Blocking calls go to primaries, which are the shards asked.
            `blocked_clients:${Math.min(ctx.sessions.blockedCount(), shardsBlocked)}`,
          ].join('\r\n'),
        );
        break;
      case 'keymux':
        sections.push(
          [
            '# Keymux',
            `mode:${config.mode}`,
            `config_version:${topology.version}`,
            `shards:${topology.shards.length}`,
            `shards_up:${up}`,
            ...shardLines,
          ].join('\r\n'),
        );
        break;
      case 'memory':
        // The shards' memory, aggregated (see addMemoryLine); keymux's own is in its metrics (process_*).
        sections.push(['# Memory', ...memoryLines(memory)].join('\r\n'));
        break;
      case 'persistence':
        // The shards' persistence, combined field by field (FLEET_FIELDS).
        sections.push(
          [
            '# Persistence',
            ...[...(fleet.get(name) as Map<string, number | string>)].map(([f, v]) => `${f}:${v}`),
          ].join('\r\n'),
        );
        break;
      case 'replication':
        // keymux is the one server its clients see, and it takes writes; its shards' replicas are its business
        // (Sentinel, replica reads), not theirs. The offset is the shards' summed: it grows as any shard writes.
        sections.push(
          [
            '# Replication',
            'role:master',
            'connected_slaves:0',
            ...[...(fleet.get(name) as Map<string, number | string>)].map(([f, v]) => `${f}:${v}`),
          ].join('\r\n'),
        );
        break;
      case 'cpu': {
        // keymux's own process (its shards' CPU is theirs: INFO on a shard, or the bench's per-request figures).
        const cpu = process.cpuUsage();
        sections.push(
          [
            '# CPU',
            `used_cpu_sys:${cpuSeconds(cpu.system)}`,
            `used_cpu_user:${cpuSeconds(cpu.user)}`,
            'used_cpu_sys_children:0.000000',
            'used_cpu_user_children:0.000000',
          ].join('\r\n'),
        );
        break;
      }
      case 'stats':
      case 'errorstats':
      case 'commandstats': {
        // What the shards ran, summed (keymux's own health checks and handshakes included).
        const title = name === 'stats' ? 'Stats' : name === 'errorstats' ? 'Errorstats' : 'Commandstats';
        sections.push([`# ${title}`, ...summedLines(summed.get(name) as Summed)].join('\r\n'));
        break;
      }
      case 'keyspace': {
        const lines = ['# Keyspace'];
        for (const [db, d] of [...dbs.entries()].sort()) {
          lines.push(
            `${db}:keys=${d.keys},expires=${d.expires},avg_ttl=${d.expires > 0 ? Math.round(d.ttlWeighted / d.expires) : 0}`,
          );
        }
        sections.push(lines.join('\r\n'));
        break;
      }
      default:
        break; // unknown sections are empty, as in Redis
    }
  }
  const text = sections.length > 0 ? `${sections.join('\r\n\r\n')}\r\n` : '';
  return textReply(text, parent.protocol);
}
