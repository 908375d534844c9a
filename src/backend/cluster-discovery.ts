/**
 * Redis Cluster discovery: asks a seed node for the cluster's layout (CLUSTER SHARDS on Redis 7+, CLUSTER SLOTS
 * before that) and turns the decoded reply into a ClusterView: which master owns each of the 16384 slots, the
 * masters, and each master's replicas. Control plane only: async, one short-lived connection per question
 * (control.ts), never on the data path.
 *
 * Invariants:
 * - A ClusterView is an immutable snapshot (objects and arrays frozen; `slotOwner` is a typed array, which
 *   cannot be frozen: never write to it). A refresh builds a new view; `signature` is equal for two views exactly
 *   when they describe the same slot owners, nodes (id, address, role) and replicas, so a caller compares
 *   signatures to know whether anything changed.
 * - Every value in a reply is checked (slot ranges, ports, hosts, roles, two masters claiming a slot); a reply
 *   that does not make sense is an error for that seed, and the next seed is tried. Never a partial guess.
 * - Masters are ordered by their lowest slot (masters without slots last, by address); replicas by address. A
 *   master index is only meaningful within its view.
 *
 * Which nodes count (CLUSTER SHARDS gives each node a `health`):
 * - "online" (and anything unknown to this file): kept.
 * - "fail"/"failed" (Redis 7.0 writes "fail") and "loading": skipped, listed in `skipped`. A shard whose master is
 *   skipped has no master in the view: its slots are unassigned (0xffff) and its replicas are dropped with it,
 *   which is the truth during a failover window until a replica is promoted. Note Redis 7.0 reports a replica
 *   whose replication offset is still 0 as "loading", e.g. in a new cluster before the master's first
 *   replication PING (repl-ping-replica-period, 10 s by default); such replicas appear once they move.
 * - CLUSTER SLOTS has no health: Redis already leaves failed replicas out of it; health is null there.
 *
 * Which host to connect to (cluster-preferred-endpoint-type):
 * - SHARDS `endpoint` when it is a real name or address; "?" (hostname preferred but the node has none) falls
 *   back to `ip`; "" or null (unknown-endpoint) means "the host you asked", i.e. the seed's host.
 * - SLOTS: the first element of each node likewise: a host, "?" (then the metadata's `ip`), or null (the seed).
 */

import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { controlCommands } from './control.js';
import { parseHostPort } from '../config/schema.js';
import type { BackendTlsSettings } from '../security/tls.js';

export const SLOT_COUNT = 16384;
/** slotOwner value of a slot no master serves. */
export const UNASSIGNED = 0xffff;

export type NodeRole = 'master' | 'replica';

export interface NodeInfo {
  readonly id: string;
  /** IPv6 without brackets. */
  readonly host: string;
  readonly port: number;
  /** "host:port", IPv6 as "[v6]:port": the same form as redirect.ts addresses; use it as the pool key. */
  readonly address: string;
  readonly role: NodeRole;
  /** CLUSTER SHARDS health ("online", ...); null when discovered with CLUSTER SLOTS. */
  readonly health: string | null;
}

export interface ClusterView {
  /** 16384 entries: index into `masters`, or UNASSIGNED. Do not write. */
  readonly slotOwner: Uint16Array;
  readonly masters: readonly NodeInfo[];
  /** Replicas of masters[i] at index i (healthy ones only). */
  readonly replicasOf: readonly (readonly NodeInfo[])[];
  /** Inclusive slot ranges of masters[i] at index i, sorted. */
  readonly slotRanges: readonly (readonly (readonly [number, number])[])[];
  /** How many slots have an owner (16384 when the cluster is fully covered). */
  readonly assignedSlots: number;
  /** Nodes the reply listed but the view leaves out (failed, loading, or replicas of such a master). */
  readonly skipped: readonly NodeInfo[];
  /** Equal for equal layouts; a hex digest. */
  readonly signature: string;
  /** The seed that answered ("host:port") and the command it answered. */
  readonly seed: string;
  readonly via: 'shards' | 'slots';
}

export interface DiscoverOptions {
  password?: string | null;
  username?: string | null;
  /** Per seed and command. Default 2000. */
  timeoutMs?: number;
  /** backend.tls: seeds are asked over TLS, and nodes are reached on their `tls-port` when SHARDS gives one. */
  tls?: BackendTlsSettings | null;
}

/** Thrown by discoverCluster when no seed gives a usable layout; `failures` holds one entry per seed. */
export class ClusterDiscoveryError extends Error {
  readonly code = 'ERR_KEYMUX_CLUSTER_DISCOVERY';
  readonly failures: ReadonlyArray<{ seed: string; error: string }>;
  constructor(failures: ReadonlyArray<{ seed: string; error: string }>) {
    super(
      failures.length === 0
        ? 'cluster discovery: no seeds given'
        : `cluster discovery: no seed gave a usable slot map: ${failures.map((f) => `${f.seed} (${f.error})`).join('; ')}`,
    );
    this.name = 'ClusterDiscoveryError';
    this.failures = Object.freeze(failures.map((f) => Object.freeze({ ...f })));
  }
}

/**
 * Asks each seed in turn ("host:port") for the layout: CLUSTER SHARDS, or CLUSTER SLOTS when the node does not
 * know SHARDS (Redis < 7). The first seed that answers with a view assigning at least one slot wins. Throws
 * ClusterDiscoveryError listing every seed's failure otherwise.
 */
export async function discoverCluster(seeds: readonly string[], opts: DiscoverOptions = {}): Promise<ClusterView> {
  const failures: Array<{ seed: string; error: string }> = [];
  for (const seed of seeds) {
    try {
      return await discoverFrom(seed, opts);
    } catch (err) {
      failures.push({ seed, error: (err as Error).message });
    }
  }
  throw new ClusterDiscoveryError(failures);
}

async function discoverFrom(seed: string, opts: DiscoverOptions): Promise<ClusterView> {
  const hp = parseHostPort(seed);
  if (typeof hp === 'string') throw new Error(hp);
  const target = {
    host: hp.host,
    port: hp.port,
    password: opts.password ?? null,
    username: opts.username ?? null,
    timeoutMs: opts.timeoutMs ?? 2000,
    tls: opts.tls ?? null,
  };
  const [shards] = await controlCommands(target, [['CLUSTER', 'SHARDS']]);
  let view: ClusterView;
  if (!(shards instanceof Error)) {
    view = parseClusterShards(shards, hp, { tls: opts.tls?.enabled === true });
  } else if (/unknown (sub)?command/i.test(shards.message)) {
    const [slots] = await controlCommands(target, [['CLUSTER', 'SLOTS']]);
    if (slots instanceof Error) throw new Error(`CLUSTER SLOTS: ${slots.message}`);
    view = parseClusterSlots(slots, hp);
  } else {
    throw new Error(`CLUSTER SHARDS: ${shards.message}`);
  }
  if (view.assignedSlots === 0) throw new Error('the node knows no slot owner (not part of a cluster yet?)');
  return view;
}

// ---------------------------------------------------------------------------------------------------------------
// Reply parsing

/** The node a reply came from: resolves "same host" endpoints, and names the view's seed. */
export interface ReplySource {
  host: string;
  port: number;
}

/**
 * Builds a view from a decoded CLUSTER SHARDS reply (RESP2 flat key/value arrays; Maps and objects work too).
 * With `tls`, each node is reached on the `tls-port` it reports (Redis reports one with tls-cluster on), else on
 * its `port`; without, a node that reports only a `tls-port` is an error that says to turn backend.tls on.
 */
export function parseClusterShards(reply: unknown, from: ReplySource, opts: { tls?: boolean } = {}): ClusterView {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SHARDS: expected an array of shards, got ${describe(reply)}`);
  const b = new ViewBuilder(from, 'shards');
  reply.forEach((shardValue, si) => {
    const where = `CLUSTER SHARDS: shard ${si}`;
    const shard = fields(shardValue, where);
    const ranges = slotPairs(shard.get('slots'), where);
    const nodesValue = shard.get('nodes');
    if (!Array.isArray(nodesValue))
      throw new Error(`${where}: expected "nodes" to be an array, got ${describe(nodesValue)}`);
    const nodes = nodesValue.map((n, ni) => shardNode(n, `${where} node ${ni}`, from.host, opts.tls === true));
    const masters = nodes.filter((n) => n.role === 'master');
    const usable = masters.filter((n) => healthy(n.health));
    if (usable.length > 1)
      throw new Error(`${where}: ${usable.length} healthy masters (${usable.map((n) => n.address).join(', ')})`);
    const master = usable[0];
    for (const n of nodes) {
      if (n === master) continue;
      if (master === undefined || n.role === 'master' || !healthy(n.health)) b.skip(n);
    }
    if (master === undefined) return; // its slots stay unassigned
    const mi = b.addMaster(master, where);
    for (const [a, z] of ranges) b.assign(mi, a, z, where);
    for (const n of nodes) if (n.role === 'replica' && healthy(n.health)) b.addReplica(mi, n);
  });
  return b.build();
}

/** Builds a view from a decoded CLUSTER SLOTS reply. */
export function parseClusterSlots(reply: unknown, from: ReplySource): ClusterView {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: expected an array of slot ranges, got ${describe(reply)}`);
  const b = new ViewBuilder(from, 'slots');
  reply.forEach((entry, ei) => {
    const where = `CLUSTER SLOTS: entry ${ei}`;
    if (!Array.isArray(entry) || entry.length < 3)
      throw new Error(`${where}: expected [start, end, master, ...replicas], got ${describe(entry)}`);
    const a = slotNumber(entry[0], `${where} start`);
    const z = slotNumber(entry[1], `${where} end`);
    if (a > z) throw new Error(`${where}: range ${a}-${z} is reversed`);
    const master = slotsNode(entry[2], 'master', `${where} master`, from.host);
    const mi = b.addMaster(master, where);
    b.assign(mi, a, z, where);
    for (let i = 3; i < entry.length; i++)
      b.addReplica(mi, slotsNode(entry[i], 'replica', `${where} replica ${i - 3}`, from.host));
  });
  return b.build();
}

function healthy(health: string | null): boolean {
  return health !== 'fail' && health !== 'failed' && health !== 'loading';
}

/** One node of a SHARDS reply. */
function shardNode(value: unknown, where: string, seedHost: string, tls: boolean): NodeInfo {
  const f = fields(value, where);
  const id = stringField(f, 'id', where);
  const tlsPort = f.get('tls-port');
  if (!tls && !f.has('port') && tlsPort !== undefined) {
    throw new Error(
      `${where}: the node listens for TLS only (tls-port ${String(tlsPort)}): set backend.tls.enabled to reach it`,
    );
  }
  const port = portNumber(tls && tlsPort !== undefined ? tlsPort : f.get('port'), where);
  const roleText = stringField(f, 'role', where);
  if (roleText !== 'master' && roleText !== 'replica')
    throw new Error(`${where}: unknown role ${JSON.stringify(roleText)}`);
  const endpoint = f.get('endpoint');
  const ip = optionalString(f.get('ip'));
  const hostname = optionalString(f.get('hostname'));
  let host: string;
  if (typeof endpoint === 'string' && endpoint !== '' && endpoint !== '?') host = endpoint;
  else if (endpoint === '?') host = ip ?? seedHost;
  else if (endpoint === '' || endpoint === null) host = seedHost;
  else host = ip ?? hostname ?? seedHost; // no endpoint field at all
  const health = f.has('health') ? stringField(f, 'health', where) : null;
  return node(id, host, port, roleText, health, where);
}

/** One node of a SLOTS entry: [host, port, id?, metadata?]. */
function slotsNode(value: unknown, role: NodeRole, where: string, seedHost: string): NodeInfo {
  if (!Array.isArray(value) || value.length < 2)
    throw new Error(`${where}: expected [host, port, id], got ${describe(value)}`);
  const port = portNumber(value[1], where);
  const meta = value[3] === undefined ? new Map<string, unknown>() : fields(value[3], `${where} metadata`);
  let host: string;
  if (value[0] === null || value[0] === '') host = seedHost;
  else if (value[0] === '?') host = optionalString(meta.get('ip')) ?? seedHost;
  else if (typeof value[0] === 'string') host = value[0];
  else throw new Error(`${where}: expected a host, got ${describe(value[0])}`);
  const id = value[2] === undefined ? '' : value[2];
  if (typeof id !== 'string') throw new Error(`${where}: expected a node id, got ${describe(id)}`);
  return node(id, host, port, role, null, where);
}

const HOST_NAME_RE = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$/;

function node(id: string, host: string, port: number, role: NodeRole, health: string | null, where: string): NodeInfo {
  if (!isIPv6(host) && (host.length > 255 || !HOST_NAME_RE.test(host))) {
    throw new Error(`${where}: ${JSON.stringify(host)} is not a valid host name or IP address`);
  }
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  // Pre-Redis-4 SLOTS replies have no id; the address is unique within a view.
  return Object.freeze({ id: id === '' ? address : id, host, port, address, role, health });
}

/** Slots of a SHARDS shard: a flat list [start, end, start, end, ...]. */
function slotPairs(value: unknown, where: string): Array<[number, number]> {
  if (!Array.isArray(value)) throw new Error(`${where}: expected "slots" to be an array, got ${describe(value)}`);
  if (value.length % 2 !== 0) throw new Error(`${where}: "slots" has an odd number of bounds (${value.length})`);
  const out: Array<[number, number]> = [];
  for (let i = 0; i < value.length; i += 2) {
    const a = slotNumber(value[i], `${where} slots[${i}]`);
    const z = slotNumber(value[i + 1], `${where} slots[${i + 1}]`);
    if (a > z) throw new Error(`${where}: range ${a}-${z} is reversed`);
    out.push([a, z]);
  }
  return out;
}

/** An integer 0..16383 (integers, or decimal strings as some versions send them). */
function slotNumber(v: unknown, where: string): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 0 || n >= SLOT_COUNT) {
    throw new Error(`${where}: expected a slot 0..${SLOT_COUNT - 1}, got ${describe(v)}`);
  }
  return n;
}

function portNumber(v: unknown, where: string): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new Error(`${where}: expected a port 1..65535, got ${describe(v)}`);
  }
  return n;
}

/** A RESP2 flat [key, value, ...] array, a Map or a plain object, as a Map with string keys. */
function fields(v: unknown, where: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (Array.isArray(v)) {
    if (v.length % 2 !== 0) throw new Error(`${where}: expected key/value pairs, got ${v.length} elements`);
    for (let i = 0; i < v.length; i += 2) out.set(String(v[i]), v[i + 1]);
  } else if (v instanceof Map) {
    for (const [k, val] of v) out.set(String(k), val);
  } else if (v !== null && typeof v === 'object') {
    for (const [k, val] of Object.entries(v)) out.set(k, val);
  } else {
    throw new Error(`${where}: expected key/value pairs, got ${describe(v)}`);
  }
  return out;
}

function stringField(f: Map<string, unknown>, key: string, where: string): string {
  const v = f.get(key);
  if (typeof v !== 'string' || v === '') throw new Error(`${where}: expected a non-empty "${key}", got ${describe(v)}`);
  return v;
}

function optionalString(v: unknown): string | null {
  return typeof v === 'string' && v !== '' && v !== '?' ? v : null;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (v instanceof Error) return `the error ${JSON.stringify(v.message)}`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Building the view

class ViewBuilder {
  private readonly owner = new Uint16Array(SLOT_COUNT).fill(UNASSIGNED);
  private readonly masters: NodeInfo[] = [];
  private readonly replicas: NodeInfo[][] = [];
  private readonly skipped: NodeInfo[] = [];
  private readonly byId = new Map<string, number>();
  private readonly byAddress = new Map<string, string>();

  constructor(
    private readonly from: ReplySource,
    private readonly via: 'shards' | 'slots',
  ) {}

  /** Index of the master (added once; SLOTS repeats a master for each of its ranges). */
  addMaster(n: NodeInfo, where: string): number {
    const known = this.byId.get(n.id);
    if (known !== undefined) {
      if (this.masters[known]!.address !== n.address)
        throw new Error(`${where}: master ${n.id} listed at two addresses`);
      return known;
    }
    this.claimAddress(n, where);
    this.byId.set(n.id, this.masters.length);
    this.masters.push(n);
    this.replicas.push([]);
    return this.masters.length - 1;
  }

  addReplica(mi: number, n: NodeInfo): void {
    const list = this.replicas[mi]!;
    if (list.some((r) => r.id === n.id)) return;
    this.claimAddress(n, `replica ${n.id}`);
    list.push(n);
  }

  skip(n: NodeInfo): void {
    this.skipped.push(n);
  }

  assign(mi: number, a: number, z: number, where: string): void {
    for (let s = a; s <= z; s++) {
      const o = this.owner[s]!;
      if (o !== UNASSIGNED && o !== mi) {
        throw new Error(
          `${where}: slot ${s} claimed by both ${this.masters[o]!.address} and ${this.masters[mi]!.address}`,
        );
      }
      this.owner[s] = mi;
    }
  }

  private claimAddress(n: NodeInfo, where: string): void {
    const other = this.byAddress.get(n.address);
    if (other !== undefined && other !== n.id)
      throw new Error(`${where}: nodes ${other} and ${n.id} share the address ${n.address}`);
    this.byAddress.set(n.address, n.id);
  }

  build(): ClusterView {
    // Order masters by lowest slot, slotless ones last by address, and renumber the slot table.
    const ranges = this.masters.map(() => [] as Array<[number, number]>);
    let assigned = 0;
    for (let s = 0; s < SLOT_COUNT; s++) {
      const o = this.owner[s]!;
      if (o === UNASSIGNED) continue;
      assigned++;
      const list = ranges[o]!;
      const last = list[list.length - 1];
      if (last !== undefined && last[1] === s - 1) last[1] = s;
      else list.push([s, s]);
    }
    const order = this.masters
      .map((_, i) => i)
      .sort((x, y) => {
        const fx = ranges[x]![0]?.[0] ?? SLOT_COUNT;
        const fy = ranges[y]![0]?.[0] ?? SLOT_COUNT;
        return fx - fy || compare(this.masters[x]!.address, this.masters[y]!.address);
      });
    const newIndex = new Uint16Array(this.masters.length);
    order.forEach((old, i) => {
      newIndex[old] = i;
    });
    const slotOwner = new Uint16Array(SLOT_COUNT);
    for (let s = 0; s < SLOT_COUNT; s++) {
      const o = this.owner[s]!;
      slotOwner[s] = o === UNASSIGNED ? UNASSIGNED : newIndex[o]!;
    }
    const masters = order.map((i) => this.masters[i]!);
    const replicasOf = order.map((i) =>
      Object.freeze([...this.replicas[i]!].sort((p, q) => compare(p.address, q.address))),
    );
    const slotRanges = order.map((i) =>
      Object.freeze(ranges[i]!.map((r) => Object.freeze(r) as readonly [number, number])),
    );

    const canonical = masters
      .map(
        (m, i) =>
          `${m.id}@${m.address} ${slotRanges[i]!.map(([a, z]) => `${a}-${z}`).join(',')} ` +
          `[${replicasOf[i]!.map((r) => `${r.id}@${r.address}`).join(',')}]`,
      )
      .join('\n');
    return Object.freeze({
      slotOwner,
      masters: Object.freeze(masters),
      replicasOf: Object.freeze(replicasOf),
      slotRanges: Object.freeze(slotRanges),
      assignedSlots: assigned,
      skipped: Object.freeze([...this.skipped]),
      signature: createHash('sha1').update(canonical).digest('hex'),
      seed: this.from.host.includes(':')
        ? `[${this.from.host}]:${this.from.port}`
        : `${this.from.host}:${this.from.port}`,
      via: this.via,
    });
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The master serving `slot`, or null. */
export function masterForSlot(view: ClusterView, slot: number): NodeInfo | null {
  const o = view.slotOwner[slot];
  return o === undefined || o === UNASSIGNED ? null : view.masters[o]!;
}

/** Every node of the view (masters, then their replicas), e.g. to keep pools for exactly these addresses. */
export function viewNodes(view: ClusterView): NodeInfo[] {
  return [...view.masters, ...view.replicasOf.flat()];
}
