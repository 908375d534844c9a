/**
 * A real Redis Cluster for tests: redis-server processes with cluster mode on, on free loopback ports (the
 * cluster bus port, port + 10000, free too), joined with `redis-cli --cluster create`, then awaited until the
 * cluster is stable. Owns every process it starts and stops them by PID (SIGKILL: no data is persisted).
 *
 * "Stable" means, for every live node: cluster_state:ok, no slot open for migration, the same CLUSTER SLOTS
 * (slot ranges, master ids, replica ids) as every other live node, every live replica with
 * master_link_status:up, and every live node "online" in every live node's CLUSTER SHARDS. There is no event
 * for any of this, so it is polled, always with a bound; a timeout error says which condition was still false.
 * Every operation (reshard, add-node, rebalance, failover) waits for stability before it starts (redis-cli
 * refuses to work on a cluster whose nodes disagree) and after it ends, then refreshes the nodes' roles from
 * CLUSTER NODES. Durations are recorded in `timings`.
 *
 * Long redis-cli operations run asynchronously (execFile) with a timeout, so a test's workload keeps running
 * while a reshard or rebalance is under way.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startRedis, redisCommand, redisCommands, type RedisProcess, type RedisTls } from './redis.js';
import { removeTempDir } from './tmpdirs.js';

export type ClusterRole = 'master' | 'replica';

export interface ClusterNode {
  id: string;
  host: string;
  port: number;
  address: string;
  pid: number;
  /** As of the last stability check (roles change on failover). */
  role: ClusterRole;
  /** A replica's master id; null for a master. */
  masterId: string | null;
  /** False once killed (until restartNode). */
  alive: boolean;
  redis: RedisProcess;
}

export interface StartClusterOptions {
  masters?: number;
  replicasPerMaster?: number;
  /** cluster-node-timeout: how long before a silent node is failed over. Default 1000. */
  nodeTimeoutMs?: number;
  /** Extra redis-server arguments for every node. */
  args?: string[];
  /** Bound on creation (start, create, stabilise). Default 60000. */
  timeoutMs?: number;
  /**
   * TLS only: every node listens for TLS on its port (`--port 0`), with `tls-cluster` (the bus, MIGRATE) and
   * `tls-replication` on; redis-cli and the harness's own commands use TLS with `client`.
   */
  tls?: RedisTls & { client: { cert: string; key: string } };
}

export interface ClusterOpOptions {
  /** --cluster-pipeline: keys moved per MIGRATE (redis-cli default 10). */
  pipeline?: number;
  timeoutMs?: number;
}

export interface Timing {
  op: string;
  ms: number;
}

export interface RedisCluster {
  /** Every node started, in start order (killed nodes included, with alive false). */
  readonly nodes: ClusterNode[];
  readonly nodeTimeoutMs: number;
  /** Durations of create, reshard, add-node, rebalance, failover... in the order they ran. */
  readonly timings: Timing[];
  masters(): ClusterNode[];
  replicas(): ClusterNode[];
  replicasOf(masterId: string): ClusterNode[];
  node(idOrPort: string | number): ClusterNode;
  /** "host:port" of every live node: seeds for keymux. */
  seeds(): string[];
  /** Slot ranges per master id, as CLUSTER SLOTS on a live node reports them now. */
  slotRanges(): Promise<Map<string, Array<[number, number]>>>;
  /** Moves `slotCount` slots (and their keys) from one master to another with `redis-cli --cluster reshard`. */
  reshard(fromNodeId: string, toNodeId: string, slotCount: number, opts?: ClusterOpOptions): Promise<Timing>;
  /** Starts a new node and adds it as an empty master (`redis-cli --cluster add-node`). */
  addMaster(): Promise<ClusterNode>;
  /** Starts a new node and adds it as a replica of `masterId`. */
  addReplica(masterId: string): Promise<ClusterNode>;
  /** `redis-cli --cluster rebalance --cluster-use-empty-masters`. */
  rebalance(opts?: ClusterOpOptions): Promise<Timing>;
  /** SIGKILLs a live master (its slots and replicas are remembered for waitForFailover). */
  killMaster(nodeId: string): Promise<void>;
  /** SIGKILLs any live node (e.g. a replica); no waiting. */
  killNode(nodeId: string): Promise<void>;
  /** Waits until a former replica of `oldMasterId` owns its slots and the survivors are stable. */
  waitForFailover(oldMasterId: string, timeoutMs?: number): Promise<{ newMaster: ClusterNode; ms: number }>;
  /** Restarts a killed node on its port and directory (it rejoins; after a failover, as a replica). */
  restartNode(nodeId: string): Promise<void>;
  /** Waits until the live nodes are stable (see the file comment). */
  waitStable(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const SLOTS = 16384;
/** Cluster ports are drawn from [PORT_MIN, PORT_MAX) so that port + 10000 stays below the ephemeral range
 * (32768 on Linux) where freePort() and outgoing connections take theirs. */
const PORT_MIN = 10000;
const PORT_MAX = 22700;
const BUS_OFFSET = 10000;

const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));

export async function startCluster(opts: StartClusterOptions = {}): Promise<RedisCluster> {
  const mastersWanted = opts.masters ?? 3;
  const replicasPerMaster = opts.replicasPerMaster ?? 1;
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 1000;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  if (mastersWanted < 3) throw new Error('redis-cli --cluster create needs at least 3 masters');
  const t0 = Date.now();
  const nodeArgs = [
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    'nodes.conf',
    '--cluster-node-timeout',
    String(nodeTimeoutMs),
    '--appendonly',
    'no',
    '--save',
    '',
    // A killed master is always failed over, however long its replica was (not) in touch.
    '--cluster-replica-validity-factor',
    '0',
    // Replicas sync at once instead of waiting 5 s for more replicas to share a diskless transfer.
    '--repl-diskless-sync-delay',
    '0',
    // CLUSTER SHARDS reports a replica with replication offset 0 as "loading"; the master's replication PING
    // moves the offset, so a fresh cluster's replicas turn "online" within a second instead of ten.
    '--repl-ping-replica-period',
    '1',
    ...(opts.args ?? []),
  ];
  if (opts.tls !== undefined) nodeArgs.push('--tls-cluster', 'yes', '--tls-replication', 'yes');
  const cluster = new Cluster(nodeArgs, nodeTimeoutMs, opts.tls);
  try {
    await Promise.all(Array.from({ length: mastersWanted * (1 + replicasPerMaster) }, () => cluster.startNode()));
    await cluster.redisCli(
      [
        '--cluster',
        'create',
        ...cluster.nodes.map((n) => n.address),
        '--cluster-replicas',
        String(replicasPerMaster),
        '--cluster-yes',
      ],
      timeoutMs,
    );
    await cluster.waitStable(Math.max(1000, timeoutMs - (Date.now() - t0)));
    const masters = cluster.masters().length;
    if (masters !== mastersWanted) throw new Error(`expected ${mastersWanted} masters after create, got ${masters}`);
  } catch (err) {
    const logs = cluster.logTails();
    await cluster.stop();
    (err as Error).message += logs;
    throw err;
  }
  cluster.timings.push({ op: `create ${mastersWanted}+${mastersWanted * replicasPerMaster}`, ms: Date.now() - t0 });
  return cluster;
}

// ---------------------------------------------------------------------------------------------------------------

class Cluster implements RedisCluster {
  readonly nodes: ClusterNode[] = [];
  readonly timings: Timing[] = [];
  /** Slots a killed master owned, by its id. */
  private readonly killedSlots = new Map<string, Array<[number, number]>>();
  /** Replica ids of a killed master at the time it was killed. */
  private readonly killedReplicas = new Map<string, string[]>();
  private stopped = false;

  constructor(
    private readonly nodeArgs: string[],
    readonly nodeTimeoutMs: number,
    private readonly tls?: StartClusterOptions['tls'],
  ) {}

  masters(): ClusterNode[] {
    return this.nodes.filter((n) => n.alive && n.role === 'master');
  }
  replicas(): ClusterNode[] {
    return this.nodes.filter((n) => n.alive && n.role === 'replica');
  }
  replicasOf(masterId: string): ClusterNode[] {
    return this.replicas().filter((n) => n.masterId === masterId);
  }
  seeds(): string[] {
    return this.nodes.filter((n) => n.alive).map((n) => n.address);
  }

  node(idOrPort: string | number): ClusterNode {
    const n = this.nodes.find((x) => x.id === idOrPort || x.port === idOrPort);
    if (!n) throw new Error(`no cluster node ${idOrPort}`);
    return n;
  }

  private live(): ClusterNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  /** Starts one cluster-enabled redis-server whose port and bus port are both free; retries on a lost race. */
  async startNode(): Promise<ClusterNode> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < 8; attempt++) {
      const port = await pickClusterPort();
      let redis: RedisProcess;
      try {
        redis = await startRedis({ port, args: this.nodeArgs, tls: this.tls });
      } catch (err) {
        lastErr = err;
        continue;
      }
      const id = String(await redisCommand(port, 'CLUSTER', 'MYID'));
      const node: ClusterNode = {
        id,
        host: redis.host,
        port,
        address: redis.address,
        pid: redis.pid,
        role: 'master',
        masterId: null,
        alive: true,
        redis,
      };
      this.nodes.push(node);
      return node;
    }
    throw new Error(`could not start a cluster node: ${(lastErr as Error)?.message}`);
  }

  async slotRanges(): Promise<Map<string, Array<[number, number]>>> {
    const out = new Map<string, Array<[number, number]>>();
    for (const e of await this.clusterSlots(this.anyLive())) {
      const ranges = out.get(e.master) ?? [];
      ranges.push([e.from, e.to]);
      out.set(e.master, ranges);
    }
    for (const r of out.values()) r.sort((a, b) => a[0] - b[0]);
    return out;
  }

  async reshard(fromNodeId: string, toNodeId: string, slotCount: number, opts: ClusterOpOptions = {}): Promise<Timing> {
    const from = this.node(fromNodeId);
    this.node(toNodeId);
    await this.waitStable();
    const t0 = Date.now();
    await this.redisCli(
      [
        '--cluster',
        'reshard',
        from.address,
        '--cluster-from',
        fromNodeId,
        '--cluster-to',
        toNodeId,
        '--cluster-slots',
        String(slotCount),
        '--cluster-yes',
        ...(opts.pipeline !== undefined ? ['--cluster-pipeline', String(opts.pipeline)] : []),
      ],
      opts.timeoutMs ?? 60_000 + slotCount * 25,
    );
    await this.waitStable();
    return this.record(`reshard ${slotCount} slots`, t0);
  }

  async addMaster(): Promise<ClusterNode> {
    return this.addNode([]);
  }

  async addReplica(masterId: string): Promise<ClusterNode> {
    this.node(masterId);
    return this.addNode(['--cluster-slave', '--cluster-master-id', masterId]);
  }

  private async addNode(extra: string[]): Promise<ClusterNode> {
    await this.waitStable();
    const t0 = Date.now();
    const existing = this.anyLive();
    const node = await this.startNode();
    try {
      await this.redisCli(['--cluster', 'add-node', node.address, existing.address, ...extra], 30_000);
    } catch (err) {
      node.alive = false;
      await node.redis.stop('SIGKILL');
      throw err;
    }
    // Known: every live node lists the new one, and the new one lists every live node.
    const ids = this.live().map((n) => n.id);
    await waitFor(`node ${node.address} known to the cluster`, 30_000, async () => {
      for (const n of this.live()) {
        const known = parseClusterNodes(String(await redisCommand(n.port, 'CLUSTER', 'NODES'))).map((l) => l.id);
        const missing = n === node ? ids.filter((id) => !known.includes(id)) : known.includes(node.id) ? [] : [node.id];
        if (missing.length > 0) return `${n.address} does not know ${missing.join(', ')}`;
      }
      return true;
    });
    await this.waitStable();
    this.record(`add-node ${extra.length > 0 ? 'replica' : 'master'}`, t0);
    return node;
  }

  async rebalance(opts: ClusterOpOptions = {}): Promise<Timing> {
    await this.waitStable();
    const t0 = Date.now();
    await this.redisCli(
      [
        '--cluster',
        'rebalance',
        this.masters()[0]!.address,
        '--cluster-use-empty-masters',
        '--cluster-yes',
        ...(opts.pipeline !== undefined ? ['--cluster-pipeline', String(opts.pipeline)] : []),
      ],
      opts.timeoutMs ?? 180_000,
    );
    await this.waitStable();
    return this.record('rebalance', t0);
  }

  async killMaster(nodeId: string): Promise<void> {
    const node = this.node(nodeId);
    if (!node.alive || node.role !== 'master') throw new Error(`${node.address} is not a live master`);
    this.killedSlots.set(nodeId, (await this.slotRanges()).get(nodeId) ?? []);
    this.killedReplicas.set(
      nodeId,
      this.replicasOf(nodeId).map((r) => r.id),
    );
    await this.killNode(nodeId);
  }

  async killNode(nodeId: string): Promise<void> {
    const node = this.node(nodeId);
    if (!node.alive) throw new Error(`${node.address} is not running`);
    node.alive = false;
    await node.redis.stop('SIGKILL');
  }

  async waitForFailover(
    oldMasterId: string,
    timeoutMs = Math.max(30_000, this.nodeTimeoutMs * 30),
  ): Promise<{ newMaster: ClusterNode; ms: number }> {
    const slots = this.killedSlots.get(oldMasterId);
    const candidates = this.killedReplicas.get(oldMasterId);
    if (!slots || !candidates) throw new Error(`${oldMasterId} was not killed with killMaster()`);
    if (slots.length === 0) throw new Error(`${oldMasterId} owned no slots; there is nothing to fail over`);
    if (candidates.length === 0) throw new Error(`${oldMasterId} had no replica to promote`);
    const t0 = Date.now();
    let newMasterId = '';
    await waitFor(
      `failover of ${oldMasterId}`,
      timeoutMs,
      async () => {
        const owners = new Map<number, string>();
        for (const e of await this.clusterSlots(this.anyLive()))
          for (const [a] of slots) if (e.from <= a && a <= e.to) owners.set(a, e.master);
        const owner = owners.get(slots[0]![0]);
        if (owner === undefined || owner === oldMasterId || !candidates.includes(owner)) {
          return `slot ${slots[0]![0]} is owned by ${owner ?? 'nobody'}`;
        }
        if ([...owners.values()].some((o) => o !== owner)) return 'the old slots are split between owners';
        newMasterId = owner;
        return (await this.stableProblem()) ?? true;
      },
      100,
    );
    await this.refreshRoles();
    const ms = Date.now() - t0;
    this.timings.push({ op: 'failover', ms });
    return { newMaster: this.node(newMasterId), ms };
  }

  async restartNode(nodeId: string): Promise<void> {
    const node = this.node(nodeId);
    if (node.alive) throw new Error(`${node.address} is running`);
    const t0 = Date.now();
    await node.redis.restart();
    node.pid = node.redis.pid;
    node.alive = true;
    await this.waitStable();
    this.record('restart node', t0);
  }

  async waitStable(timeoutMs = 30_000): Promise<void> {
    await waitFor('a stable cluster', timeoutMs, async () => (await this.stableProblem()) ?? true);
    await this.refreshRoles();
  }

  /** What keeps the live nodes from being stable, or null when they are. */
  private async stableProblem(): Promise<string | null> {
    let reference: string | null = null;
    let referenceNode = '';
    const liveIds = new Set(this.live().map((n) => n.id));
    for (const n of this.live()) {
      const [info, nodes, slots, repl, shards] = await redisCommands(
        n.port,
        [
          ['CLUSTER', 'INFO'],
          ['CLUSTER', 'NODES'],
          ['CLUSTER', 'SLOTS'],
          ['INFO', 'replication'],
          ['CLUSTER', 'SHARDS'],
        ],
        { timeoutMs: 2000 },
      );
      if (!/^cluster_state:ok\r?$/m.test(String(info))) return `${n.address}: cluster_state is not ok`;
      const self = parseClusterNodes(String(nodes)).find((l) => l.flags.includes('myself'));
      if (!self) return `${n.address}: no "myself" line in CLUSTER NODES`;
      if (self.slots.some((s) => s.startsWith('[')))
        return `${n.address}: slots open for migration: ${self.slots.filter((s) => s.startsWith('[')).join(' ')}`;
      const view = normaliseSlots(slots);
      if (reference === null) {
        reference = view;
        referenceNode = n.address;
      } else if (view !== reference) {
        return `${n.address} and ${referenceNode} disagree on CLUSTER SLOTS`;
      }
      if (/^role:slave\r?$/m.test(String(repl)) && !/^master_link_status:up\r?$/m.test(String(repl))) {
        return `${n.address}: replica link to its master is not up`;
      }
      const unhealthy = shardsHealth(shards).filter((h) => liveIds.has(h.id) && h.health !== 'online');
      if (unhealthy.length > 0) {
        return `${n.address}: CLUSTER SHARDS says ${unhealthy.map((h) => `${h.id.slice(0, 8)} ${h.health}`).join(', ')}`;
      }
    }
    return reference === null ? 'no live node' : null;
  }

  private async refreshRoles(): Promise<void> {
    const lines = parseClusterNodes(String(await redisCommand(this.anyLive().port, 'CLUSTER', 'NODES')));
    for (const l of lines) {
      const n = this.nodes.find((x) => x.id === l.id);
      if (!n || !n.alive) continue;
      n.role = l.flags.includes('master') ? 'master' : 'replica';
      n.masterId = n.role === 'replica' && l.master !== '-' ? l.master : null;
    }
  }

  private async clusterSlots(n: ClusterNode): Promise<SlotsEntry[]> {
    return slotsEntries(await redisCommand(n.port, 'CLUSTER', 'SLOTS'));
  }

  private anyLive(): ClusterNode {
    const n = this.nodes.find((x) => x.alive && x.role === 'master') ?? this.nodes.find((x) => x.alive);
    if (!n) throw new Error('no live cluster node');
    return n;
  }

  private record(op: string, t0: number): Timing {
    const t = { op, ms: Date.now() - t0 };
    this.timings.push(t);
    return t;
  }

  /** Runs redis-cli with a timeout; resolves with its output, rejects with the tail of it on failure. */
  redisCli(args: string[], timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const tlsArgs =
        this.tls === undefined
          ? []
          : ['--tls', '--cacert', this.tls.ca, '--cert', this.tls.client.cert, '--key', this.tls.client.key];
      execFile(
        'redis-cli',
        [...tlsArgs, ...args],
        { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          // redis-cli --cluster reports some failures ("[ERR] ...") with exit status 0.
          const failed = err !== null || /^\[ERR\]/m.test(stdout);
          if (!failed) {
            resolve(stdout);
            return;
          }
          const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-15).join('\n');
          const why =
            err && (err as { killed?: boolean }).killed
              ? `timed out after ${timeoutMs} ms`
              : (err?.message.split('\n')[0] ?? '[ERR] in output');
          reject(new Error(`redis-cli ${args.slice(0, 3).join(' ')} failed: ${why}\n${tail}`));
        },
      );
    });
  }

  logTails(): string {
    return this.nodes
      .map((n) => {
        try {
          const log = fs
            .readFileSync(path.join(n.redis.dir, 'redis.log'), 'utf8')
            .trim()
            .split('\n')
            .slice(-5)
            .join('\n');
          return `\n--- ${n.address} redis.log\n${log}`;
        } catch {
          return '';
        }
      })
      .join('');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(
      this.nodes.map(async (n) => {
        n.alive = false;
        await n.redis.stop('SIGKILL').catch(() => undefined);
        removeTempDir(n.redis.dir);
      }),
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** Ports (client and bus) handed out by this process, so that nodes started at once do not collide. */
const reserved = new Set<number>();

async function pickClusterPort(): Promise<number> {
  for (let i = 0; i < 500; i++) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN));
    if (reserved.has(port) || reserved.has(port + BUS_OFFSET)) continue;
    if ((await canBind(port)) && (await canBind(port + BUS_OFFSET))) {
      if (reserved.has(port) || reserved.has(port + BUS_OFFSET)) continue; // taken while we checked
      reserved.add(port);
      reserved.add(port + BUS_OFFSET);
      return port;
    }
  }
  throw new Error(`no free port pair (p, p + ${BUS_OFFSET}) in ${PORT_MIN}..${PORT_MAX}`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * Polls `probe` until it returns true, at most `timeoutMs`; a string return says what is still wrong and ends up
 * in the timeout error, as does a thrown error (a node that does not answer yet is not a failure).
 */
async function waitFor(
  what: string,
  timeoutMs: number,
  probe: () => Promise<true | string>,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'not checked';
  for (;;) {
    try {
      const r = await probe();
      if (r === true) return;
      last = r;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms (last: ${last})`);
    await sleep(intervalMs);
  }
}

export interface ClusterNodesLine {
  id: string;
  address: string;
  flags: string[];
  master: string;
  slots: string[];
}

/** Parses CLUSTER NODES text. */
export function parseClusterNodes(text: string): ClusterNodesLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const f = l.trim().split(' ');
      return { id: f[0]!, address: f[1]!.split('@')[0]!, flags: f[2]!.split(','), master: f[3]!, slots: f.slice(8) };
    });
}

/** Every node's id and health in a CLUSTER SHARDS reply (RESP2: flat key/value arrays). */
function shardsHealth(reply: unknown): Array<{ id: string; health: string }> {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SHARDS: expected an array, got ${String(reply)}`);
  const field = (flat: unknown[], key: string): unknown => flat[flat.indexOf(key) + 1];
  return reply.flatMap((shard: unknown[]) =>
    (field(shard, 'nodes') as unknown[][]).map((node) => ({
      id: String(field(node, 'id')),
      health: String(field(node, 'health')),
    })),
  );
}

interface SlotsEntry {
  from: number;
  to: number;
  master: string;
  replicas: string[];
}

function slotsEntries(reply: unknown): SlotsEntry[] {
  if (!Array.isArray(reply)) throw new Error(`CLUSTER SLOTS: expected an array, got ${String(reply)}`);
  return reply
    .map((e: unknown[]) => ({
      from: Number(e[0]),
      to: Number(e[1]),
      master: String((e[2] as unknown[])[2]),
      replicas: (e.slice(3) as unknown[][]).map((r) => String(r[2])).sort(),
    }))
    .sort((a, b) => a.from - b.from);
}

/** CLUSTER SLOTS as one comparable string; also checks that the ranges cover every slot once. */
function normaliseSlots(reply: unknown): string {
  const entries = slotsEntries(reply);
  let next = 0;
  for (const e of entries) {
    if (e.from !== next) throw new Error(`CLUSTER SLOTS: gap or overlap at slot ${next}`);
    next = e.to + 1;
  }
  if (next !== SLOTS) throw new Error(`CLUSTER SLOTS: slots ${next}..${SLOTS - 1} unassigned`);
  return entries.map((e) => `${e.from}-${e.to}:${e.master}:${e.replicas.join(',')}`).join(' ');
}
