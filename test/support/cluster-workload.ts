/**
 * A checked mixed workload for cluster tests: several ioredis clients through keymux, each owning its own keys,
 * each sending pipelined batches of SET, GET, MGET (keys in many slots), DEL (several keys) and INCR, and checking
 * every reply against its own model of the data.
 *
 * The model keeps, per key, the set of values the key may have: one value after an acknowledged write; more
 * after a write that failed (a write in flight when a node died may or may not have been applied), until a read
 * settles it. A reply that no possible value explains is a "mismatch" (a wrong value: always a bug); an error
 * reply is an "error" (recorded with its time and text; whether errors are allowed is the test's call).
 *
 * Within one batch every key appears at most once, so the replies do not depend on the order in which keymux
 * executes the batch's commands on the nodes (a retried command may be overtaken by later commands of the same
 * pipeline on other keys; per-key order across batches is what the model relies on).
 *
 * Each client has `groups` hash-tagged groups of 3 keys ("w<c>:{g<c>.<i>}:a/b/c"), read with single-slot MGET
 * (TRYAGAIN during a migration of their slot), besides its plain keys (spread over all slots). About a third
 * of the keys are absent at any time, so writes and reads of missing keys in a migrating slot draw ASK.
 */
import { Redis } from 'ioredis';
import { redisCommands } from './redis.js';
import { keySlot } from '../../src/routing/crc16.js';

export interface WorkloadOptions {
  port: number;
  clients?: number;
  /** Plain keys per client (value keys; a tenth more are INCR counters). */
  keysPerClient?: number;
  /** Hash-tagged 3-key groups per client. */
  groups?: number;
  /** Commands per pipelined batch. */
  batch?: number;
  /** ioredis commandTimeout: a command with no reply after this long is a hang. */
  commandTimeoutMs?: number;
  /** Hard bound on the run, whatever happens. */
  maxRunMs?: number;
  /** Seed of the deterministic random generator. */
  seed?: number;
  /**
   * Also give each client a group "w<c>:{hot}:a/b/c": every client's hot group is in the one slot of "{hot}",
   * and about one command in five goes to it (one-slot MGET or MSET), so a migration of that slot is sure to
   * be hit (ASK, TRYAGAIN).
   */
  hotGroup?: boolean;
}

export interface WorkloadError {
  t: number;
  client: number;
  command: string;
  message: string;
}
export interface Mismatch {
  client: number;
  command: string;
  expected: string;
  got: string;
}

type Value = string | null;

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    // xorshift32
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x / 0x1_0000_0000;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

const show = (v: unknown): string => (v instanceof Error ? `error ${v.message}` : JSON.stringify(v));

/** One client's model: key -> possible values (size 1 when certain). */
class Model {
  readonly keys: string[] = [];
  readonly counters: string[] = [];
  readonly groups: string[][] = [];
  hot: string[] = [];
  readonly possible = new Map<string, Set<Value>>();

  certain(key: string): Value | undefined {
    const p = this.possible.get(key)!;
    return p.size === 1 ? [...p][0] : undefined;
  }
  set(key: string, v: Value): void {
    this.possible.set(key, new Set([v]));
  }
  maybe(key: string, v: Value): void {
    this.possible.get(key)!.add(v);
  }
  /** A read saw `v`: true when it was possible (the key is then certain). */
  observe(key: string, v: Value): boolean {
    const p = this.possible.get(key)!;
    if (!p.has(v)) return false;
    if (p.size > 1) this.set(key, v);
    return true;
  }
  expected(key: string): string {
    return [...this.possible.get(key)!].map((v) => JSON.stringify(v)).join(' | ');
  }
}

interface Op {
  cmd: string[];
  /** Checks the reply (or Error); returns a mismatch description or null. Updates the model. */
  check(reply: unknown): string | null;
  /** The command failed: its effect is uncertain. */
  failed(): void;
}

export class ClusterWorkload {
  readonly opts: Required<WorkloadOptions>;
  readonly errors: WorkloadError[] = [];
  readonly mismatches: Mismatch[] = [];
  /** Replies checked (successful commands). */
  ok = 0;
  batches = 0;
  readonly models: Model[] = [];
  private readonly redis: Redis[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private t0 = 0;
  private seq = 0;
  /** Per client: batches that ended with no error reply. */
  private readonly clean: number[] = [];

  constructor(opts: WorkloadOptions) {
    this.opts = {
      clients: 8,
      keysPerClient: 400,
      groups: 20,
      batch: 16,
      commandTimeoutMs: 5000,
      maxRunMs: 120_000,
      seed: 1,
      hotGroup: false,
      ...opts,
    };
  }

  /** Connects the clients and writes every key (through keymux): about two thirds present, the rest absent. */
  async start(): Promise<void> {
    const o = this.opts;
    for (let c = 0; c < o.clients; c++) {
      const r = new Redis({
        port: o.port,
        host: '127.0.0.1',
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: false,
        commandTimeout: o.commandTimeoutMs,
        retryStrategy: () => null,
        autoResendUnfulfilledCommands: false,
        reconnectOnError: () => false,
      });
      r.on('error', () => undefined);
      await r.connect();
      this.redis.push(r);
      this.clean.push(0);
      const m = new Model();
      for (let i = 0; i < o.keysPerClient; i++) m.keys.push(`w${c}:k${i}`);
      for (let i = 0; i < Math.ceil(o.keysPerClient / 10); i++) m.counters.push(`w${c}:n${i}`);
      for (let i = 0; i < o.groups; i++) m.groups.push(['a', 'b', 'c'].map((s) => `w${c}:{g${c}.${i}}:${s}`));
      if (o.hotGroup) m.hot = ['a', 'b', 'c'].map((s) => `w${c}:{hot}:${s}`);
      this.models.push(m);
      const rng = new Rng(o.seed * 1000 + c);
      const msetArgs: string[] = [];
      for (const k of [...m.keys, ...m.groups.flat(), ...m.hot]) {
        if (rng.next() < 0.66) {
          const v = `init:${k}`;
          msetArgs.push(k, v);
          m.set(k, v);
        } else m.set(k, null);
      }
      for (const k of m.counters) {
        msetArgs.push(k, '0');
        m.set(k, '0');
      }
      // Clean slate for this client's keys (a rerun on the same cluster), then one MSET across every slot.
      const all = [...m.keys, ...m.counters, ...m.groups.flat(), ...m.hot];
      for (let i = 0; i < all.length; i += 500) await r.del(...all.slice(i, i + 500));
      for (let i = 0; i < msetArgs.length; i += 1000) {
        const res = await r.mset(...msetArgs.slice(i, i + 1000));
        if (res !== 'OK') throw new Error(`MSET: ${String(res)}`);
      }
    }
  }

  /** Starts the client loops (returns at once). */
  run(): void {
    this.running = true;
    this.t0 = Date.now();
    this.loops = this.redis.map((_, c) => this.loop(c));
  }

  /** Stops the loops after their current batch; resolves once every loop has returned. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  close(): void {
    for (const r of this.redis) r.disconnect();
  }

  /** Waits until every client has completed `n` more batches with no error (bounded). */
  async cleanBatches(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const start = [...this.clean];
    const behind = (): number[] => this.clean.map((_, c) => c).filter((c) => this.clean[c]! - start[c]! < n);
    while (behind().length > 0) {
      if (Date.now() > deadline)
        throw new Error(`clients ${behind().join(', ')} did not complete ${n} clean batches within ${timeoutMs} ms`);
      if (!this.running) throw new Error('workload stopped');
      await new Promise((r) => setTimeout(r, 20)); // batches finish on the clients' own schedule: poll the counts
    }
  }

  private async loop(c: number): Promise<void> {
    const r = this.redis[c]!;
    const m = this.models[c]!;
    const rng = new Rng(this.opts.seed * 7919 + c);
    while (this.running && Date.now() - this.t0 < this.opts.maxRunMs) {
      const ops = this.makeBatch(c, m, rng);
      const p = r.pipeline();
      for (const op of ops) p.call(op.cmd[0]!, ...op.cmd.slice(1));
      let results: Array<[Error | null, unknown]>;
      try {
        results = (await p.exec()) as Array<[Error | null, unknown]>;
      } catch (err) {
        results = ops.map(() => [err as Error, null]);
      }
      let clean = true;
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i]!;
        const [err, reply] = results[i] ?? [new Error('no reply'), null];
        if (err !== null) {
          clean = false;
          op.failed();
          this.errors.push({ t: Date.now(), client: c, command: op.cmd.slice(0, 4).join(' '), message: err.message });
          continue;
        }
        this.ok++;
        const bad = op.check(reply);
        if (bad !== null)
          this.mismatches.push({ client: c, command: op.cmd.slice(0, 6).join(' '), expected: bad, got: show(reply) });
      }
      this.batches++;
      if (clean) this.clean[c]!++;
    }
  }

  private makeBatch(c: number, m: Model, rng: Rng): Op[] {
    const used = new Set<string>();
    const pick = (list: string[]): string | null => {
      for (let tries = 0; tries < 8; tries++) {
        const k = list[rng.int(list.length)]!;
        if (!used.has(k)) {
          used.add(k);
          return k;
        }
      }
      return null;
    };
    const ops: Op[] = [];
    for (let n = 0; n < this.opts.batch; n++) {
      const roll = rng.next();
      if (roll < 0.25) {
        const k = pick(m.keys);
        if (k === null) continue;
        const v = `v${c}.${++this.seq}`;
        ops.push({
          cmd: ['SET', k, v],
          check: (rep) => {
            m.set(k, v);
            return rep === 'OK' ? null : '"OK"';
          },
          failed: () => m.maybe(k, v),
        });
      } else if (roll < 0.5) {
        const k = pick(m.keys);
        if (k === null) continue;
        ops.push({
          cmd: ['GET', k],
          check: (rep) => (m.observe(k, rep as Value) ? null : m.expected(k)),
          failed: () => undefined,
        });
      } else if (roll < 0.65) {
        const keys: string[] = [];
        for (let i = 0; i < 6; i++) {
          const k = pick(m.keys);
          if (k !== null) keys.push(k);
        }
        if (keys.length === 0) continue;
        ops.push({
          cmd: ['MGET', ...keys],
          check: (rep) => {
            if (!Array.isArray(rep) || rep.length !== keys.length) return `an array of ${keys.length}`;
            const wrong = keys.filter((k, i) => !m.observe(k, rep[i] as Value));
            return wrong.length === 0 ? null : wrong.map((k) => `${k}=${m.expected(k)}`).join(', ');
          },
          failed: () => undefined,
        });
      } else if (roll < 0.72 || (roll >= 0.8 && roll < 0.9 && m.hot.length > 0)) {
        const g = roll >= 0.8 ? m.hot : m.groups[rng.int(m.groups.length)]!;
        if (g.some((k) => used.has(k))) continue;
        for (const k of g) used.add(k);
        if (rng.next() < 0.5) {
          ops.push({
            cmd: ['MGET', ...g],
            check: (rep) => {
              if (!Array.isArray(rep) || rep.length !== g.length) return `an array of ${g.length}`;
              const wrong = g.filter((k, i) => !m.observe(k, rep[i] as Value));
              return wrong.length === 0 ? null : wrong.map((k) => `${k}=${m.expected(k)}`).join(', ');
            },
            failed: () => undefined,
          });
        } else {
          // One-slot MSET of the group: a multi-key write (TRYAGAIN while the slot is half migrated).
          const vs = g.map(() => `g${c}.${++this.seq}`);
          ops.push({
            cmd: ['MSET', ...g.flatMap((k, i) => [k, vs[i]!])],
            check: (rep) => {
              g.forEach((k, i) => m.set(k, vs[i]!));
              return rep === 'OK' ? null : '"OK"';
            },
            failed: () => g.forEach((k, i) => m.maybe(k, vs[i]!)),
          });
        }
      } else if (roll < 0.8) {
        const keys: string[] = [];
        const count = 1 + rng.int(3);
        for (let i = 0; i < count; i++) {
          const k = pick(m.keys);
          if (k !== null) keys.push(k);
        }
        if (keys.length === 0) continue;
        ops.push({
          cmd: ['DEL', ...keys],
          check: (rep) => {
            let min = 0;
            let max = 0;
            for (const k of keys) {
              const p = m.possible.get(k)!;
              if (!p.has(null)) min++;
              if ([...p].some((v) => v !== null)) max++;
            }
            for (const k of keys) m.set(k, null);
            return typeof rep === 'number' && rep >= min && rep <= max
              ? null
              : min === max
                ? String(min)
                : `${min}..${max}`;
          },
          failed: () => {
            for (const k of keys) m.maybe(k, null);
          },
        });
      } else {
        const k = pick(m.counters);
        if (k === null) continue;
        ops.push({
          cmd: ['INCR', k],
          check: (rep) => {
            const p = [...m.possible.get(k)!];
            const ok = p.some((v) => Number(v) + 1 === rep);
            if (ok) m.set(k, String(rep));
            return ok ? null : p.map((v) => String(Number(v) + 1)).join(' | ');
          },
          failed: () => {
            for (const v of [...m.possible.get(k)!]) m.maybe(k, String(Number(v) + 1));
          },
        });
      }
    }
    return ops;
  }

  /**
   * Reads every key back through keymux (MGET, split per slot) and directly from the node owning its slot
   * (`ownerPort(slot)`), and compares with the model. Keys left uncertain by failed writes accept any of their
   * possible values. Returns the problems found (empty when fine)
   * and how many keys were checked.
   */
  async verify(
    ownerPort: (slot: number) => number,
  ): Promise<{ checked: number; uncertain: number; problems: string[] }> {
    const problems: string[] = [];
    let checked = 0;
    let uncertain = 0;
    const byPort = new Map<number, string[]>();
    for (let c = 0; c < this.models.length; c++) {
      const m = this.models[c]!;
      const all = [...m.possible.keys()];
      for (let i = 0; i < all.length; i += 200) {
        const keys = all.slice(i, i + 200);
        const got = await this.redis[c]!.mget(...keys);
        keys.forEach((k, j) => {
          checked++;
          if (m.certain(k) === undefined) uncertain++;
          if (!m.possible.get(k)!.has(got[j] ?? null))
            problems.push(`via keymux ${k}: expected ${m.expected(k)}, got ${show(got[j])}`);
        });
      }
      for (const k of all) {
        const port = ownerPort(keySlot(Buffer.from(k)));
        let list = byPort.get(port);
        if (list === undefined) byPort.set(port, (list = []));
        list.push(k);
      }
    }
    const modelOf = (k: string): Model => this.models[Number(/^w(\d+):/.exec(k)![1])]!;
    for (const [port, keys] of byPort) {
      for (let i = 0; i < keys.length; i += 500) {
        const part = keys.slice(i, i + 500);
        const replies = await redisCommands(
          port,
          part.map((k) => ['GET', k]),
        );
        part.forEach((k, j) => {
          const rep = replies[j];
          if (
            !modelOf(k)
              .possible.get(k)!
              .has((rep ?? null) as Value)
          ) {
            problems.push(`on node :${port} ${k}: expected ${modelOf(k).expected(k)}, got ${show(rep)}`);
          }
        });
      }
    }
    return { checked, uncertain, problems };
  }
}

/** A slot -> master port lookup from the cluster's current CLUSTER SLOTS (via the harness). */
export async function slotOwnerPorts(cluster: {
  slotRanges(): Promise<Map<string, Array<[number, number]>>>;
  node(id: string): { port: number };
}): Promise<(slot: number) => number> {
  const owner = new Int32Array(16384).fill(-1);
  for (const [id, ranges] of await cluster.slotRanges()) {
    const port = cluster.node(id).port;
    for (const [a, z] of ranges) owner.fill(port, a, z + 1);
  }
  return (slot: number) => {
    const p = owner[slot]!;
    if (p < 0) throw new Error(`slot ${slot} has no owner`);
    return p;
  };
}
