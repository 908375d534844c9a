/**
 * The canary: a client that runs beside a test case for its whole length and checks every reply it gets. It
 * pipelines batches of SET, GET, INCR and MGET on keys of its own (pass keys on every shard, e.g. from keyOn, so
 * each shard is watched), computes the exact bytes each batch must be answered with from a model of what it
 * wrote, and compares the received bytes with them. Any error reply (a timeout, a shard reset), any wrong or
 * misdelivered value, a closed connection, or a batch not answered within `replyDeadlineMs` is recorded in
 * `errors`, and the canary stops. Latency is the round trip of each batch.
 *
 * Usage: `const canary = await startCanary({ port, keys })`; run the case; `await canary.batchesAfter(3)` to be
 * sure it was answered while the case ran; `const report = await canary.stop()`; expect(report.errors).toEqual([]).
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface CanaryOptions {
  port: number;
  host?: string;
  /** Keys the canary owns (each gets SET/GET; the first two also MGET). Default: canary:<n>:0..11. */
  keys?: string[];
  /** Key of the INCR counter. Default: `{first key}:n` (hash-tagged: on the first key's shard). */
  counterKey?: string;
  /** Rounds (SET+GET per key, one INCR, one MGET) per pipelined batch. Default 2. */
  rounds?: number;
  /** Bytes per value. Default 64. */
  valueBytes?: number;
  /** Pause between batches, so the canary watches without adding much load. Default 2 ms. */
  pauseMs?: number;
  /** A batch not answered in full after this long is recorded as lost. Default 60 s. */
  replyDeadlineMs?: number;
}

export interface CanaryReport {
  /** Batches answered and checked. */
  batches: number;
  /** Commands answered and checked. */
  commands: number;
  /** What went wrong (empty when every reply was exact and arrived). */
  errors: string[];
  /** Batch round trips in milliseconds. */
  latencyMs: { p50: number; p99: number; max: number };
}

let canaries = 0;

function encode(args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

const bulkReply = (v: Buffer): Buffer => Buffer.concat([Buffer.from(`$${v.length}\r\n`), v, Buffer.from('\r\n')]);

export class Canary {
  private readonly socket: net.Socket;
  private readonly opts: Required<Omit<CanaryOptions, 'host' | 'keys' | 'counterKey'>>;
  private readonly keys: string[];
  private readonly counterKey: string;
  /** A key nobody writes: MGET must answer nil for it. */
  private readonly missingKey: string;
  private readonly id: number;
  private counter = 0;
  private seq = 0;
  private expected: Buffer = Buffer.alloc(0);
  private received: Buffer[] = [];
  private sentAt = 0;
  private commandsInBatch = 0;
  private deadline: NodeJS.Timeout | null = null;
  private pause: NodeJS.Timeout | null = null;
  private stopping = false;
  private finished = false;
  private readonly latencies: number[] = [];
  private batchWaiters: Array<{ target: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private stopWaiters: Array<() => void> = [];
  readonly report: CanaryReport;

  private constructor(socket: net.Socket, options: CanaryOptions) {
    this.socket = socket;
    this.id = canaries++;
    this.opts = {
      port: options.port,
      rounds: options.rounds ?? 2,
      valueBytes: options.valueBytes ?? 64,
      pauseMs: options.pauseMs ?? 2,
      replyDeadlineMs: options.replyDeadlineMs ?? 60_000,
    };
    this.keys = options.keys ?? Array.from({ length: 12 }, (_, i) => `canary:${this.id}:${i}`);
    this.counterKey = options.counterKey ?? `{${this.keys[0]}}:n`;
    this.missingKey = `{${this.keys[0]}}:missing:${process.pid}:${this.id}:${Math.random()}`;
    this.report = { batches: 0, commands: 0, errors: [], latencyMs: { p50: 0, p99: 0, max: 0 } };
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(`connection error: ${e.message}`));
    socket.on('close', () => this.fail('connection closed by keymux'));
  }

  /** Connects, clears its own keys, and starts checking batches. */
  static start(options: CanaryOptions): Promise<Canary> {
    return new Promise((resolve, reject) => {
      const s = net.connect(options.port, options.host ?? '127.0.0.1', () => {
        s.off('error', reject);
        const c = new Canary(s, options);
        c.sendBatch(true);
        resolve(c);
      });
      s.once('error', reject);
    });
  }

  /** Resolves once `n` more batches have been answered and checked (rejects if the canary failed first). */
  batchesAfter(n: number): Promise<void> {
    const target = this.report.batches + n;
    return new Promise((resolve, reject) => {
      if (this.finished) return reject(new Error(`canary stopped: ${this.report.errors.join('; ')}`));
      this.batchWaiters.push({ target, resolve, reject });
    });
  }

  /** Finishes the batch in flight, closes, and returns the report. */
  async stop(): Promise<CanaryReport> {
    this.stopping = true;
    if (!this.finished && this.pause !== null) {
      clearTimeout(this.pause);
      this.pause = null;
      this.finish();
    }
    if (!this.finished) await new Promise<void>((res) => this.stopWaiters.push(res));
    return this.report;
  }

  private value(): Buffer {
    // Unique per write, binary bytes included, exact length.
    const head = Buffer.from(`${this.id}:${this.seq++}:\u0000\r\n\xff`, 'latin1');
    const v = Buffer.alloc(this.opts.valueBytes, 0x61 + (this.seq % 26));
    head.copy(v, 0, 0, Math.min(head.length, v.length));
    return v;
  }

  private sendBatch(first = false): void {
    const cmds: Buffer[] = [];
    const exp: Buffer[] = [];
    if (first) {
      cmds.push(encode(['SET', this.counterKey, '0']));
      exp.push(Buffer.from('+OK\r\n'));
    }
    for (let r = 0; r < this.opts.rounds; r++) {
      const values: Buffer[] = [];
      for (const k of this.keys) {
        const v = this.value();
        values.push(v);
        cmds.push(encode(['SET', k, v]), encode(['GET', k]));
        exp.push(Buffer.from('+OK\r\n'), bulkReply(v));
      }
      cmds.push(encode(['INCR', this.counterKey]));
      exp.push(Buffer.from(`:${++this.counter}\r\n`));
      if (this.keys.length >= 2) {
        cmds.push(encode(['MGET', this.keys[1], this.keys[0], this.missingKey]));
        exp.push(
          Buffer.concat([Buffer.from('*3\r\n'), bulkReply(values[1]), bulkReply(values[0]), Buffer.from('$-1\r\n')]),
        );
      }
    }
    this.commandsInBatch = cmds.length;
    this.expected = Buffer.concat(exp);
    this.received = [];
    this.sentAt = performance.now();
    this.deadline = setTimeout(
      () => this.fail(`batch ${this.report.batches} not answered within ${this.opts.replyDeadlineMs} ms`),
      this.opts.replyDeadlineMs,
    );
    this.socket.write(Buffer.concat(cmds));
  }

  private onData(d: Buffer): void {
    if (this.finished) return;
    this.received.push(d);
    const got = this.received.length === 1 ? d : Buffer.concat(this.received);
    this.received = [got];
    const exp = this.expected;
    const n = Math.min(got.length, exp.length);
    if (!got.subarray(0, n).equals(exp.subarray(0, n)) || got.length > exp.length) {
      let at = 0;
      while (at < n && got[at] === exp[at]) at++;
      return this.fail(
        `batch ${this.report.batches}: wrong reply at byte ${at}: got ${JSON.stringify(got.toString('latin1', at, at + 80))}, ` +
          `expected ${JSON.stringify(exp.toString('latin1', at, at + 80))}`,
      );
    }
    if (got.length < exp.length) return;
    // The whole batch arrived, exact.
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = null;
    this.latencies.push(performance.now() - this.sentAt);
    this.report.batches++;
    this.report.commands += this.commandsInBatch;
    this.received = [];
    this.batchWaiters = this.batchWaiters.filter((w) => {
      if (this.report.batches < w.target) return true;
      w.resolve();
      return false;
    });
    if (this.stopping) return this.finish();
    this.pause = setTimeout(() => {
      this.pause = null;
      this.sendBatch();
    }, this.opts.pauseMs);
  }

  private fail(reason: string): void {
    if (this.finished) return;
    this.report.errors.push(reason);
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.deadline !== null) clearTimeout(this.deadline);
    if (this.pause !== null) clearTimeout(this.pause);
    this.socket.destroy();
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q: number): number =>
      sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    this.report.latencyMs = { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? 0 };
    for (const w of this.batchWaiters) w.reject(new Error(`canary stopped: ${this.report.errors.join('; ')}`));
    this.batchWaiters = [];
    for (const w of this.stopWaiters.splice(0)) w();
  }
}

export function startCanary(options: CanaryOptions): Promise<Canary> {
  return Canary.start(options);
}
