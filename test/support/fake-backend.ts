/**
 * Scripted fake backends for fault tests: a net.Server on a free loopback port that reads the multibulk commands
 * keymux sends and lets the test decide, per command, what to do: answer with exact bytes (RESP or garbage),
 * say nothing (stall), or close the connection. Every accepted connection is kept (with the commands it
 * received and whether it closed), so a test can answer late on an old socket or check that keymux reset it.
 * Also: `parseReplies` (redis-parser over raw bytes) and `waitFor` (a bounded poll for conditions that have no
 * event to await).
 * keymux's connection handshake PING (the first command on a shard pool's connection that has no AUTH, HELLO,
 * READONLY or ROLE to send, and on a pub/sub subscriber connection that has no AUTH: such a connection is ready only
 * once the server answered something) is answered +PONG here, as any live
 * server would, and is neither given to the script nor recorded in `commands`: scripts see what keymux sends once
 * the connection is up. A test that wants to script that PING sets `scriptHandshakePing`.
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
}) => { execute(b: Buffer): void };

/** What the script answers to one command: bytes to write, null to stay silent, 'close' to end the socket. */
export type ScriptAnswer = Buffer | string | null | 'close' | 'destroy';

export type Script = (cmd: string[], conn: FakeConnection, backend: FakeBackend) => ScriptAnswer;

export class FakeConnection {
  readonly index: number;
  readonly socket: net.Socket;
  readonly commands: string[][] = [];
  closed = false;
  /** The handshake PING was answered by the fake (see the file comment). */
  handshakePinged = false;
  private pending: Buffer = Buffer.alloc(0);

  constructor(index: number, socket: net.Socket) {
    this.index = index;
    this.socket = socket;
  }

  /** Writes bytes unless the socket is already gone; returns whether they were handed to the socket. */
  write(bytes: Buffer | string): boolean {
    if (this.closed || this.socket.destroyed) return false;
    this.socket.write(bytes);
    return true;
  }

  /** Feeds received bytes; returns the complete commands now available. */
  feed(chunk: Buffer): string[][] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: string[][] = [];
    for (;;) {
      const parsed = parseMultibulk(this.pending);
      if (parsed === null) break;
      out.push(parsed.args);
      this.pending = this.pending.subarray(parsed.end);
    }
    return out;
  }
}

/** Parses one multibulk command at the start of buf; null when incomplete. Throws on anything else. */
function parseMultibulk(buf: Buffer): { args: string[]; end: number } | null {
  if (buf.length === 0) return null;
  if (buf[0] !== 0x2a)
    throw new Error(`fake backend: expected a multibulk command, got ${JSON.stringify(buf.toString('latin1'))}`);
  let eol = buf.indexOf('\r\n', 0);
  if (eol < 0) return null;
  const argc = Number(buf.toString('latin1', 1, eol));
  let pos = eol + 2;
  const args: string[] = [];
  for (let i = 0; i < argc; i++) {
    eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return null;
    const n = Number(buf.toString('latin1', pos + 1, eol));
    const start = eol + 2;
    if (start + n + 2 > buf.length) return null;
    args.push(buf.toString('utf8', start, start + n));
    pos = start + n + 2;
  }
  return { args, end: pos };
}

export class FakeBackend extends EventEmitter {
  readonly port: number;
  readonly host = '127.0.0.1';
  readonly connections: FakeConnection[] = [];
  script: Script;
  /** true: keymux's handshake PING goes to the script like any command (default: answered +PONG by the fake). */
  scriptHandshakePing = false;
  private readonly server: net.Server;

  private constructor(server: net.Server, port: number, script: Script) {
    super();
    this.server = server;
    this.port = port;
    this.script = script;
  }

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** All commands received, on every connection, in arrival order per connection. */
  get commands(): string[][] {
    return this.connections.flatMap((c) => c.commands);
  }

  static start(script: Script): Promise<FakeBackend> {
    return new Promise((resolve, reject) => {
      let fake: FakeBackend | null = null;
      const server = net.createServer((sock) => fake?.accept(sock));
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        fake = new FakeBackend(server, (server.address() as net.AddressInfo).port, script);
        resolve(fake);
      });
    });
  }

  private accept(sock: net.Socket): void {
    const conn = new FakeConnection(this.connections.length, sock);
    this.connections.push(conn);
    sock.on('error', () => undefined);
    sock.on('close', () => {
      conn.closed = true;
      this.emit('change');
    });
    sock.on('data', (chunk: Buffer) => {
      for (const cmd of conn.feed(chunk)) {
        if (isHandshakePing(conn, cmd) && !this.scriptHandshakePing) {
          conn.handshakePinged = true;
          conn.write('+PONG\r\n');
          continue;
        }
        conn.commands.push(cmd);
        const answer = this.script(cmd, conn, this);
        if (answer === 'close') sock.end();
        else if (answer === 'destroy') sock.destroy();
        else if (answer !== null) conn.write(answer);
      }
      this.emit('change');
    });
    this.emit('change');
  }

  /** Resolves once pred() holds, re-checked on every connection/command/close event. */
  async until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('change', check);
        reject(new Error(`fake backend: timed out waiting for ${what}`));
      }, timeoutMs);
      const check = () => {
        if (!pred()) return;
        clearTimeout(timer);
        this.off('change', check);
        resolve();
      };
      this.on('change', check);
    });
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** keymux's handshake PING: a PING that is the first command on its connection. */
function isHandshakePing(conn: FakeConnection, cmd: string[]): boolean {
  return conn.commands.length === 0 && !conn.handshakePinged && cmd.length === 1 && cmd[0].toUpperCase() === 'PING';
}

/** RESP bulk string bytes. */
export function bulk(s: string): string {
  return `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
}

/** Decodes a byte stream of complete RESP replies with redis-parser (errors become Error values). */
export function parseReplies(bytes: Buffer | string): unknown[] {
  const out: unknown[] = [];
  const parser = new RedisParser({
    returnReply: (r) => out.push(r),
    returnError: (e) => out.push(e),
    returnFatalError: (e) => {
      throw e;
    },
  });
  parser.execute(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'));
  return out;
}

/** Counts complete top-level RESP replies in bytes (for awaiting N replies on a RawClient). */
export function replyCount(bytes: Buffer): number {
  let n = 0;
  const parser = new RedisParser({
    returnReply: () => {
      n++;
    },
    returnError: () => {
      n++;
    },
  });
  parser.execute(bytes);
  return n;
}

/** Polls `pred` until it holds (bounded): for conditions that have no event to await. */
export async function waitFor(
  pred: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5000,
  stepMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** A key (prefix + counter) that the proxy's current router sends to shard `shard`. */
export function keyOn(
  proxy: { topology: { router: { shardFor(key: Buffer): number } } },
  shard: number,
  prefix: string,
): string {
  for (let i = 0; i < 100_000; i++) {
    const key = `${prefix}:${i}`;
    if (proxy.topology.router.shardFor(Buffer.from(key)) === shard) return key;
  }
  throw new Error(`no key with prefix ${prefix} routes to shard ${shard}`);
}
