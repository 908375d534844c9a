/**
 * OrderWorkload: clients that check keymux's ordering promise exactly (issue 9). Each client owns its keys and sends
 * pipelined batches of 10-50 commands (SET, GET, INCR, DEL of one or several keys, MGET of one hash tag and MGET
 * across slots) over one raw RESP connection, and checks every reply against the ONLY value an in-order execution of
 * its own commands allows: keys repeat inside a batch, so a command that overtook an earlier one of the same client
 * shows as a wrong answer (not "some value written at some time").
 *
 * Keys: hash-tag groups of 8 keys in one slot ("{c3g7}:m0".."m7"), binary groups whose keys hold NUL, 0xff, CR and LF
 * bytes, keys with an empty tag ("{}c3e5": the whole key is hashed), and plain keys. Values are integers, so INCR
 * always applies and every reply is predictable.
 *
 * Uncertainty is explicit and narrow: a command answered with an error may or may not have been applied (a write in
 * flight to a node that died), so its keys may hold either value until a read settles them; after a failover
 * (`allowLoss`), acknowledged writes that asynchronous replication lost may be missing, so those keys may hold any
 * value they held or an errored write may have set before (never one the client has not written yet). A reply outside the allowed set is a wrong
 * answer, recorded with the client, the batch and the command.
 */
import net from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

export interface OrderWorkloadOptions {
  port: number;
  host?: string;
  clients?: number;
  seed?: number;
  /** Hash-tag groups of 8 keys per client (a quarter of them binary). */
  groups?: number;
  /** Plain and empty-tag keys per client (each). */
  singles?: number;
  batchMin?: number;
  batchMax?: number;
  /** A batch with no reply after this long is a hang (recorded, the client stops). */
  batchTimeoutMs?: number;
  /**
   * Also give each client a group "{hot}:c<i>:m0..7": every client's hot group is in the one slot of "{hot}", and
   * `hotShare` of the commands use only it, so a migration of that slot is sure to be met (ASK, TRYAGAIN) by
   * pipelines that read and write the same keys around it.
   */
  hotGroup?: boolean;
  /** With hotGroup: the share of commands (0..1) that use only hot keys. Default 0.2. */
  hotShare?: number;
}

export interface WrongAnswer {
  client: number;
  batch: number;
  command: string;
  allowed: string;
  got: string;
  /** The recent history of the keys concerned (batch.index command -> reply), to tell a model gap from a bug. */
  trace?: string[];
}

export interface ErrorReply {
  t: number;
  client: number;
  command: string;
  message: string;
}

type Value = string | null; // integers as decimal strings; null: no key

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
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

/** What one key may hold now (one value when certain), and every value it was acknowledged to hold. */
class KeyState {
  possible: Set<Value> = new Set([null]);
  readonly history: Value[] = [null];
  /**
   * In a loss window (a failover of the key's master): acknowledged writes may have been lost, so the key may hold
   * any value it held before; a value the client has not written yet is still a wrong answer.
   */
  lenient = false;
  /** Reads that returned an older value than the last acknowledged one (writes lost by a failover). */
  rolledBack = 0;
  /** The last events on this key ("b12.3 SET 5000 -> OK"), for the report of a wrong answer. */
  readonly trace: string[] = [];
  note(event: string): void {
    if (this.trace.length === 12) this.trace.shift();
    this.trace.push(event);
  }
  certain(): boolean {
    return this.possible.size === 1;
  }
  private record(v: Value): void {
    if (this.history[this.history.length - 1] !== v) this.history.push(v);
  }
  set(v: Value, acked: boolean): void {
    if (this.lenient) {
      // Only grows: the key may hold any value it held before, including one an errored write may have set (a
      // write the dying master applied and replicated before its reply was lost), whatever came after it.
      if (acked) this.record(v);
      for (const h of this.history) this.possible.add(h);
      this.possible.add(v);
    } else if (acked) {
      this.possible = new Set([v]);
      this.record(v);
    } else {
      this.possible.add(v);
    }
  }
  observe(v: Value): boolean {
    if (!this.possible.has(v)) return false;
    const last = this.history[this.history.length - 1];
    if (v !== last && this.history.includes(v)) this.rolledBack++;
    if (this.lenient) return true;
    this.possible = new Set([v]);
    this.record(v);
    return true;
  }
  allowed(): string {
    return [...this.possible].map((v) => (v === null ? 'nil' : v)).join('|');
  }
}

interface Cmd {
  args: Buffer[];
  text: string;
  check(reply: unknown, w: WorkloadClient): string | null;
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const SET = b('SET');
const printable = (k: Buffer): string =>
  k.toString('latin1').replace(/[^\x21-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
const asValue = (r: unknown): Value | undefined =>
  r === null ? null : Buffer.isBuffer(r) ? r.toString('latin1') : typeof r === 'string' ? r : undefined;

function encode(args: Buffer[]): Buffer {
  const parts: Buffer[] = [b(`*${args.length}\r\n`)];
  for (const a of args) parts.push(b(`$${a.length}\r\n`), a, b('\r\n'));
  return Buffer.concat(parts);
}

class WorkloadClient {
  readonly index: number;
  readonly keys: Buffer[] = [];
  readonly groups: Buffer[][] = [];
  readonly state = new Map<string, KeyState>();
  readonly rng: Rng;
  private sock: net.Socket | null = null;
  private parser: { execute(b: Buffer): void } | null = null;
  private replies: unknown[] = [];
  private want = 0;
  private wake: (() => void) | null = null;
  private closedWith: Error | null = null;
  private nextValue = 1;
  /** Batches this client completed (replies checked). */
  batchesDone = 0;

  hot: Buffer[] | null = null;

  constructor(index: number, seed: number, groups: number, singles: number, hotGroup = false) {
    this.index = index;
    this.rng = new Rng(seed * 7919 + index * 104729 + 1);
    if (hotGroup) {
      this.hot = [];
      for (let i = 0; i < 8; i++) {
        const key = b(`{hot}:c${index}:m${i}`);
        this.hot.push(key);
        this.add(key);
      }
    }
    for (let g = 0; g < groups; g++) {
      const binary = g % 4 === 3;
      const group: Buffer[] = [];
      for (let i = 0; i < 8; i++) {
        const key = binary
          ? Buffer.concat([b(`{c${index}b${g}}:`), Buffer.from([0, 255, 13, 10, i])])
          : b(`{c${index}g${g}}:m${i}`);
        group.push(key);
        this.add(key);
      }
      this.groups.push(group);
    }
    for (let i = 0; i < singles; i++) {
      this.add(b(`{}c${index}e${i}`));
      this.add(b(`c${index}:p${i}`));
    }
  }

  private add(key: Buffer): void {
    this.keys.push(key);
    this.state.set(key.toString('latin1'), new KeyState());
  }

  st(key: Buffer): KeyState {
    return this.state.get(key.toString('latin1'))!;
  }

  async connect(port: number, host: string): Promise<void> {
    const sock = net.connect(port, host);
    sock.setNoDelay(true);
    this.parser = new RedisParser({
      returnBuffers: true,
      returnReply: (r) => this.push(r),
      returnError: (e) => this.push(e),
      returnFatalError: (e) => this.fail(e),
    });
    sock.on('data', (d: Buffer) => this.parser!.execute(d));
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('connection closed')));
    await new Promise<void>((res, rej) => {
      sock.once('connect', res);
      sock.once('error', rej);
    });
    this.sock = sock;
  }

  private push(r: unknown): void {
    this.replies.push(r);
    if (this.replies.length >= this.want && this.wake !== null) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }

  private fail(e: Error): void {
    if (this.closedWith === null) this.closedWith = e;
    if (this.wake !== null) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }

  /** Sends the commands as one write and resolves with their replies, in order. */
  async exchange(cmds: Cmd[], timeoutMs: number): Promise<unknown[]> {
    if (this.closedWith !== null) throw this.closedWith;
    this.replies = [];
    this.want = cmds.length;
    const done = new Promise<void>((res) => (this.wake = res));
    this.sock!.write(Buffer.concat(cmds.map((c) => encode(c.args))));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((res) => (timer = setTimeout(res, timeoutMs)));
    await Promise.race([done, timeout]);
    clearTimeout(timer);
    if (this.replies.length < cmds.length) {
      throw (
        this.closedWith ??
        new Error(`no reply to ${cmds.length - this.replies.length} of ${cmds.length} commands within ${timeoutMs} ms`)
      );
    }
    return this.replies;
  }

  close(): void {
    this.closedWith ??= new Error('closed by the workload');
    this.sock?.destroy();
  }

  value(): string {
    return String(this.nextValue++ * 1000 + this.index);
  }

  /** Set for the command being generated: it uses only hot keys. */
  hotNow = false;

  pick(): Buffer {
    if (this.hotNow && this.hot !== null) return this.hot[this.rng.int(8)]!;
    return this.keys[this.rng.int(this.keys.length)]!;
  }

  /** Distinct keys from different places (several slots). */
  pickSpread(n: number): Buffer[] {
    const out = new Map<string, Buffer>();
    while (out.size < n) {
      const k = this.pick();
      out.set(k.toString('latin1'), k);
    }
    return [...out.values()];
  }

  /** Distinct keys of one hash-tag group (one slot). */
  pickGroup(n: number): Buffer[] {
    const g = this.hot !== null && this.hotNow ? this.hot : this.groups[this.rng.int(this.groups.length)]!;
    const start = this.rng.int(8);
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) out.push(g[(start + i * 3) % 8]!);
    return out;
  }
}

function setCmd(key: Buffer, value: string): Cmd {
  return {
    args: [b('SET'), key, b(value)],
    text: `SET ${printable(key)} ${value}`,
    check(reply, w) {
      const s = w.st(key);
      if (reply instanceof Error) {
        s.set(value, false);
        return null;
      }
      if (asValue(reply) !== 'OK') return `expected OK`;
      s.set(value, true);
      return null;
    },
  };
}

function getCmd(key: Buffer): Cmd {
  return {
    args: [b('GET'), key],
    text: `GET ${printable(key)}`,
    check(reply, w) {
      if (reply instanceof Error) return null;
      const s = w.st(key);
      const v = asValue(reply);
      if (v === undefined || !s.observe(v)) return s.allowed();
      return null;
    },
  };
}

function incrCmd(key: Buffer): Cmd {
  return {
    args: [b('INCR'), key],
    text: `INCR ${printable(key)}`,
    check(reply, w) {
      const s = w.st(key);
      if (reply instanceof Error) {
        for (const p of [...s.possible]) s.possible.add(String(Number(p ?? '0') + 1));
        return null;
      }
      if (typeof reply !== 'number') return `an integer`;
      const before = reply - 1;
      const prev = [...s.possible].find((p) => Number(p ?? '0') === before);
      if (prev === undefined) return [...s.possible].map((p) => String(Number(p ?? '0') + 1)).join('|');
      s.observe(prev);
      s.set(String(reply), true);
      return null;
    },
  };
}

function delCmd(keys: Buffer[]): Cmd {
  return {
    args: [b('DEL'), ...keys],
    text: `DEL ${keys.map(printable).join(' ')}`,
    check(reply, w) {
      const states = keys.map((k) => w.st(k));
      if (reply instanceof Error) {
        for (const s of states) s.set(null, false);
        return null;
      }
      if (typeof reply !== 'number') return 'an integer';
      let min = 0;
      let max = 0;
      for (const s of states) {
        const hasNull = s.possible.has(null);
        const hasValue = [...s.possible].some((v) => v !== null);
        if (!hasNull) min++;
        if (hasValue) max++;
      }
      if (reply < min || reply > max) return `${min}..${max} deleted`;
      for (const s of states) s.set(null, true);
      return null;
    },
  };
}

function mgetCmd(keys: Buffer[]): Cmd {
  return {
    args: [b('MGET'), ...keys],
    text: `MGET ${keys.map(printable).join(' ')}`,
    check(reply, w) {
      if (reply instanceof Error) return null;
      if (!Array.isArray(reply) || reply.length !== keys.length) return `an array of ${keys.length}`;
      const wrong: string[] = [];
      keys.forEach((k, i) => {
        const s = w.st(k);
        const allowed = s.allowed();
        const v = asValue(reply[i]);
        if (v === undefined || !s.observe(v)) wrong.push(`#${i}: ${allowed}`);
      });
      return wrong.length > 0 ? wrong.join(', ') : null;
    },
  };
}

const show = (r: unknown): string =>
  r instanceof Error
    ? `error ${r.message}`
    : Array.isArray(r)
      ? `[${r.map(show).join(', ')}]`
      : r === null
        ? 'nil'
        : Buffer.isBuffer(r)
          ? r.toString('latin1')
          : String(r);

export class OrderWorkload {
  readonly opts: Required<Omit<OrderWorkloadOptions, 'host'>> & { host: string };
  readonly clients: WorkloadClient[] = [];
  readonly wrong: WrongAnswer[] = [];
  readonly errors: ErrorReply[] = [];
  /** Commands whose replies were checked, and batches done. */
  commands = 0;
  batches = 0;
  private running = false;
  private loops: Array<Promise<void>> = [];
  private waiters: Array<() => void> = [];

  constructor(opts: OrderWorkloadOptions) {
    this.opts = {
      host: opts.host ?? '127.0.0.1',
      port: opts.port,
      clients: opts.clients ?? 8,
      seed: opts.seed ?? 1,
      groups: opts.groups ?? 24,
      singles: opts.singles ?? 40,
      batchMin: opts.batchMin ?? 10,
      batchMax: opts.batchMax ?? 50,
      batchTimeoutMs: opts.batchTimeoutMs ?? 15_000,
      hotGroup: opts.hotGroup ?? false,
      hotShare: opts.hotShare ?? 0.2,
    };
    for (let i = 0; i < this.opts.clients; i++) {
      this.clients.push(new WorkloadClient(i, this.opts.seed, this.opts.groups, this.opts.singles, this.opts.hotGroup));
    }
  }

  async start(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.connect(this.opts.port, this.opts.host)));
    this.running = true;
    this.loops = this.clients.map((c) => this.loop(c));
  }

  /** Resolves once `n` more commands have been checked (or the clients stopped). */
  async runCommands(n: number): Promise<void> {
    const target = this.commands + n;
    while (this.running && this.commands < target) await new Promise<void>((res) => this.waiters.push(res));
  }

  /**
   * Resolves once every client has completed `n / clients` (rounded up) more batches, with no client error
   * anywhere in between; throws after timeoutMs. Per client on purpose: a client whose command is still being
   * retried completes no batch, so "recovered" is only declared when nobody is left waiting on the failure.
   */
  async cleanBatches(n: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const perClient = Math.ceil(n / this.clients.length);
    for (;;) {
      const errors = this.errors.length;
      const start = this.clients.map((c) => c.batchesDone);
      const behind = (): boolean => this.clients.some((c, i) => c.batchesDone - start[i]! < perClient);
      while (this.running && behind() && this.errors.length === errors) {
        await new Promise<void>((res) => this.waiters.push(res));
      }
      if (!this.running) throw new Error(`the workload stopped: ${this.errors[this.errors.length - 1]?.message}`);
      if (this.errors.length === errors) return;
      if (Date.now() > deadline) throw new Error(`no ${n} clean batches within ${timeoutMs} ms`);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.wakeWaiters();
  }

  close(): void {
    this.running = false;
    for (const c of this.clients) c.close();
  }

  /**
   * A failover of a master begins: acknowledged writes to keys `onLostNode(key)` says lived on it may be lost by
   * asynchronous replication, so until `endLossWindow` those keys may hold any value they held before (never one
   * the client has not written yet). Returns how many keys are concerned.
   */
  startLossWindow(onLostNode: (key: Buffer) => boolean): number {
    let n = 0;
    for (const c of this.clients) {
      for (const k of c.keys) {
        if (!onLostNode(k)) continue;
        const s = c.st(k);
        s.lenient = true;
        for (const v of s.history) s.possible.add(v);
        n++;
      }
    }
    return n;
  }

  /** The failover is over: the next read of each key settles it, and the model is exact again. */
  endLossWindow(): void {
    for (const c of this.clients) {
      for (const k of c.keys) {
        const s = c.st(k);
        if (!s.lenient) continue;
        s.lenient = false; // `possible` (history and errored writes of the window) stands until a read settles it
      }
    }
  }

  /** Reads that returned an older value than the last acknowledged write (lost by a failover). */
  get rolledBack(): number {
    let n = 0;
    for (const c of this.clients) for (const k of c.keys) n += c.st(k).rolledBack;
    return n;
  }

  private wakeWaiters(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private batch(c: WorkloadClient): Cmd[] {
    const { batchMin, batchMax } = this.opts;
    const n = batchMin + c.rng.int(batchMax - batchMin + 1);
    const cmds: Cmd[] = [];
    for (let i = 0; i < n; i++) {
      c.hotNow = c.hot !== null && c.rng.next() < this.opts.hotShare;
      const r = c.rng.int(100);
      if (r < 22) cmds.push(setCmd(c.pick(), c.value()));
      else if (r < 40) cmds.push(getCmd(c.pick()));
      else if (r < 58) cmds.push(incrCmd(c.pick()));
      else if (r < 64) cmds.push(delCmd([c.pick()]));
      else if (r < 68)
        cmds.push(
          delCmd(c.rng.int(2) === 0 || c.hotNow ? c.pickGroup(2 + c.rng.int(3)) : c.pickSpread(2 + c.rng.int(3))),
        );
      else if (r < 86) cmds.push(mgetCmd(c.pickGroup(2 + c.rng.int(4))));
      else cmds.push(mgetCmd(c.hotNow ? c.pickGroup(2 + c.rng.int(4)) : c.pickSpread(2 + c.rng.int(4))));
    }
    return cmds;
  }

  private async loop(c: WorkloadClient): Promise<void> {
    let batchNo = 0;
    while (this.running) {
      const cmds = this.batch(c);
      let replies: unknown[];
      try {
        replies = await c.exchange(cmds, this.opts.batchTimeoutMs);
      } catch (err) {
        this.errors.push({ t: Date.now(), client: c.index, command: 'batch', message: (err as Error).message });
        this.running = false;
        break;
      }
      batchNo++;
      cmds.forEach((cmd, i) => {
        const reply = replies[i];
        if (reply instanceof Error) {
          this.errors.push({ t: Date.now(), client: c.index, command: cmd.text, message: reply.message });
        }
        const problem = cmd.check(reply, c);
        const keys = cmd.args[0]!.equals(SET) ? cmd.args.slice(1, 2) : cmd.args.slice(1);
        if (problem !== null) {
          const trace = keys.flatMap((k) => [`${printable(k)}:`, ...c.st(k).trace]);
          this.wrong.push({
            client: c.index,
            batch: batchNo,
            command: cmd.text,
            allowed: problem,
            got: show(reply),
            trace,
          });
        }
        const event = `b${batchNo}.${i} ${cmd.text.slice(0, 60)} -> ${show(reply).slice(0, 80)} [${Date.now() % 100_000}]`;
        for (const k of keys) c.st(k).note(event);
      });
      this.commands += cmds.length;
      this.batches++;
      c.batchesDone++;
      this.wakeWaiters();
    }
  }

  /**
   * Reads every key back through `port` (keymux, or a direct read with `portOf`) and compares with the model.
   * Returns keys that differ (uncertain keys settle to what is read).
   */
  async verify(portOf: (key: Buffer) => number): Promise<{ checked: number; problems: string[] }> {
    const problems: string[] = [];
    let checked = 0;
    const byPort = new Map<number, Array<{ c: WorkloadClient; k: Buffer }>>();
    for (const c of this.clients) {
      for (const k of c.keys) {
        const p = portOf(k);
        if (!byPort.has(p)) byPort.set(p, []);
        byPort.get(p)!.push({ c, k });
      }
    }
    for (const [port, items] of byPort) {
      const reader = new WorkloadClient(-1, 1, 0, 0);
      await reader.connect(port, this.opts.host);
      try {
        for (let i = 0; i < items.length; i += 500) {
          const chunk = items.slice(i, i + 500);
          const replies = await reader.exchange(
            chunk.map(({ k }) => getCmd(k)),
            30_000,
          );
          chunk.forEach(({ c, k }, j) => {
            checked++;
            const s = c.st(k);
            const v = asValue(replies[j]);
            if (v === undefined || !s.observe(v))
              problems.push(`client ${c.index} ${printable(k)}: allowed ${s.allowed()}, read ${show(replies[j])}`);
          });
        }
      } finally {
        reader.close();
      }
    }
    return { checked, problems };
  }
}

/**
 * Writes `count` small ballast keys ("ballast:<i>") straight to the nodes that own them, pipelined, so slots carry
 * real weight when they move. `portOfSlotKey` maps a key to the port of its owner.
 */
export async function loadBallast(count: number, portOf: (key: Buffer) => number, host = '127.0.0.1'): Promise<void> {
  const byPort = new Map<number, Buffer[]>();
  for (let i = 0; i < count; i++) {
    const key = b(`ballast:${i}`);
    const p = portOf(key);
    let list = byPort.get(p);
    if (list === undefined) byPort.set(p, (list = []));
    list.push(encode([b('SET'), key, b('x')]));
  }
  await Promise.all(
    [...byPort].map(async ([port, frames]) => {
      const sock = net.connect(port, host);
      await new Promise<void>((res, rej) => {
        sock.once('connect', res);
        sock.once('error', rej);
      });
      let seen = 0;
      const done = new Promise<void>((res, rej) => {
        sock.on('data', (d: Buffer) => {
          for (const byte of d) if (byte === 10) seen++;
          if (seen >= frames.length) res();
        });
        sock.on('error', rej);
      });
      for (let i = 0; i < frames.length; i += 10_000) sock.write(Buffer.concat(frames.slice(i, i + 10_000)));
      await done;
      sock.destroy();
    }),
  );
}
