/**
 * Pub/sub test clients: a raw RESP connection that decodes everything it receives (redis-parser) into a list of
 * values, in arrival order, so a test can await a frame, count messages per channel, and check the order of
 * confirmations, replies and messages exactly; plus `cmd` (encode a command) and helpers to read keymux's
 * subscriptions off a backend directly (PUBSUB on the backend itself).
 */
import net from 'node:net';
import { createRequire } from 'node:module';
import { encodeCommand, redisCommand } from './redis.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
}) => { execute(b: Buffer): void };

export function cmd(...args: Array<string | number | Buffer>): Buffer {
  return encodeCommand(args);
}

/** A decoded frame: strings, integers, nulls, nested arrays, or an Error. */
export type Frame = unknown;

export class PubSubSocket {
  readonly socket: net.Socket;
  readonly frames: Frame[] = [];
  closed = false;
  /** Messages received per channel (message and smessage by channel; pmessage by "pattern|channel"). */
  readonly counts = new Map<string, number>();
  private waiters: Array<() => void> = [];
  private readonly parser: { execute(b: Buffer): void };

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.parser = new RedisParser({
      returnReply: (r) => this.push(r),
      returnError: (e) => this.push(e),
      returnFatalError: (e) => {
        this.push(e);
        socket.destroy();
      },
    });
    socket.on('data', (d: Buffer) => this.parser.execute(d));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number): Promise<PubSubSocket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new PubSubSocket(s)));
      s.once('error', reject);
    });
  }

  send(...commands: Buffer[]): void {
    this.socket.write(Buffer.concat(commands));
  }

  /** Resolves once `pred(frames)` holds (rejects if the socket closes first or after `timeoutMs`). */
  async until(pred: (frames: Frame[]) => boolean, what = 'frames', timeoutMs = 10_000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.frames)) {
      if (this.closed) throw new Error(`closed while waiting for ${what}; got ${JSON.stringify(this.printable())}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${what}; got ${JSON.stringify(this.printable())}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
    return this.frames;
  }

  /** Waits for at least `n` frames. */
  untilCount(n: number, timeoutMs?: number): Promise<Frame[]> {
    return this.until((f) => f.length >= n, `${n} frames`, timeoutMs);
  }

  /** Waits until `n` messages arrived on `key` (a channel, or "pattern|channel" for pmessages). */
  untilMessages(key: string, n: number, timeoutMs?: number): Promise<Frame[]> {
    return this.until(() => (this.counts.get(key) ?? 0) >= n, `${n} messages on ${key}`, timeoutMs);
  }

  /** Waits for the socket to close. */
  async untilClosed(timeoutMs = 10_000): Promise<void> {
    await this.until(() => this.closed, 'close', timeoutMs).catch((e: unknown) => {
      if (!this.closed) throw e;
    });
  }

  close(): void {
    this.socket.destroy();
  }

  printable(): unknown[] {
    return this.frames.map((f) => (f instanceof Error ? `ERR: ${f.message}` : f));
  }

  private push(r: Frame): void {
    this.frames.push(r);
    if (Array.isArray(r)) {
      if ((r[0] === 'message' || r[0] === 'smessage') && r.length === 3) this.bump(String(r[1]));
      else if (r[0] === 'pmessage' && r.length === 4) this.bump(`${String(r[1])}|${String(r[2])}`);
    }
    this.wake();
  }

  private bump(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** Is the frame a message / pmessage / smessage? */
export function isMessage(f: Frame): boolean {
  return Array.isArray(f) && (f[0] === 'message' || f[0] === 'pmessage' || f[0] === 'smessage');
}

/** Channels a backend has subscribers for (its own PUBSUB CHANNELS), sorted. */
export async function backendChannels(port: number, shard = false): Promise<string[]> {
  const r = (await redisCommand(port, 'PUBSUB', shard ? 'SHARDCHANNELS' : 'CHANNELS')) as string[];
  return [...r].sort();
}

/** A backend's own PUBSUB NUMSUB for one channel. */
export async function backendNumsub(port: number, channel: string, shard = false): Promise<number> {
  const r = (await redisCommand(port, 'PUBSUB', shard ? 'SHARDNUMSUB' : 'NUMSUB', channel)) as Array<string | number>;
  return Number(r[1]);
}

/** A backend's own PUBSUB NUMPAT. */
export async function backendNumpat(port: number): Promise<number> {
  return Number(await redisCommand(port, 'PUBSUB', 'NUMPAT'));
}
