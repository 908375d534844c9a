/**
 * Real redis-server processes for tests: started on free loopback ports with a throwaway directory, awaited
 * until they answer PING, and stopped by PID (only processes this module started). Also a tiny RESP client
 * (`redisCommand`) for reading backends directly, independent of keymux and of client libraries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { createRequire } from 'node:module';
import { freePort } from './ports.js';
import { makeTempDir } from './tmpdirs.js';

const require = createRequire(import.meta.url);
// redis-parser is the reference RESP decoder; tests use it to read real replies.
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnBuffers?: boolean;
}) => { execute(b: Buffer): void };

export interface RedisProcess {
  host: string;
  port: number;
  pid: number;
  dir: string;
  address: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Restart on the same port (after stop). */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** Extra redis.conf-style args, e.g. ['--cluster-enabled', 'yes']. */
  args?: string[];
  port?: number;
  password?: string;
  /**
   * TLS only: `--port 0 --tls-port PORT` with these files (PEM paths); clients must present a certificate signed
   * by `ca` unless authClients is false. redisCommands() then talks TLS to this port (with `client`).
   */
  tls?: RedisTls;
}

export interface RedisTls {
  cert: string;
  key: string;
  ca: string;
  /** tls-auth-clients (default true). */
  authClients?: boolean;
  /** The certificate this harness presents to the server (required when authClients is on). */
  client?: { cert: string; key: string };
}

/** Ports that speak TLS only, with the options the harness connects with (redisCommands looks them up). */
const tlsPorts = new Map<number, tls.ConnectionOptions>();

/** Makes redisCommands() use TLS towards `port` (e.g. a TLS port a test started itself). */
export function useTlsFor(port: number, options: tls.ConnectionOptions): void {
  tlsPorts.set(port, options);
}

function tlsArgs(port: number, t: RedisTls): string[] {
  tlsPorts.set(port, {
    // The harness checks the chain, not the name: tests give servers certificates for other names on purpose.
    checkServerIdentity: () => undefined,
    ca: fs.readFileSync(t.ca),
    ...(t.client !== undefined ? { cert: fs.readFileSync(t.client.cert), key: fs.readFileSync(t.client.key) } : {}),
  });
  return [
    '--port',
    '0',
    '--tls-port',
    String(port),
    '--tls-cert-file',
    t.cert,
    '--tls-key-file',
    t.key,
    '--tls-ca-cert-file',
    t.ca,
    '--tls-auth-clients',
    t.authClients === false ? 'no' : 'yes',
  ];
}

/** How long stop() waits for a signalled redis-server to exit before it sends SIGKILL. */
const STOP_GRACE_MS = 10_000;

const live = new Set<RedisProcess>();
// Servers still running when the test process ends are killed. Only those: a server that exited on its own (a
// test's SHUTDOWN, a crash) has a PID the system may have given to another process since (PIDs wrap at 32768
// here, and the suite starts thousands), possibly another test file's server. ChildProcess.kill signals only a
// child Node has not seen exit.
process.on('exit', () => {
  for (const r of live) {
    if (r.process.exitCode !== null || r.process.signalCode !== null) continue;
    try {
      r.process.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisProcess> {
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      return await startOn(port, opts);
    } catch (err) {
      if (opts.port !== undefined || attempt >= 4) throw err;
    }
  }
}

async function startOn(port: number, opts: StartRedisOptions): Promise<RedisProcess> {
  const dir = makeTempDir(`keymux-redis-${port}-`);
  const args = [
    ...(opts.tls !== undefined ? tlsArgs(port, opts.tls) : ['--port', String(port)]),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--protected-mode',
    'no',
    '--loglevel',
    'warning',
    '--logfile',
    path.join(dir, 'redis.log'),
    ...(opts.password ? ['--requirepass', opts.password] : []),
    ...(opts.args ?? []),
  ];
  const spawnIt = (): ChildProcess => spawn('redis-server', args, { stdio: 'ignore' });
  let child = spawnIt();
  const r: RedisProcess = {
    host: '127.0.0.1',
    port,
    pid: child.pid ?? -1,
    dir,
    address: `127.0.0.1:${port}`,
    process: child,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (r.process.exitCode !== null || r.process.signalCode !== null) {
        live.delete(r);
        return;
      }
      const proc = r.process;
      const exited = new Promise<void>((res) => proc.once('exit', () => res()));
      proc.kill(signal);
      // A server busy in a script a failed test left running does not act on SIGTERM until the script ends (which
      // may be never): after a grace period it is killed, so a test's clean-up never hangs on it.
      const grace = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(grace);
      live.delete(r);
    },
    async restart() {
      child = spawnIt();
      r.process = child;
      r.pid = child.pid ?? -1;
      live.add(r);
      await waitReady(port, child, opts.password);
    },
  };
  live.add(r);
  try {
    await waitReady(port, child, opts.password);
  } catch (err) {
    await r.stop('SIGKILL').catch(() => undefined);
    throw err;
  }
  return r;
}

async function waitReady(port: number, child: ChildProcess, password?: string): Promise<void> {
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  for (let i = 0; i < 200; i++) {
    if (exited) throw new Error(`redis-server on ${port} exited at start`);
    try {
      const args = password ? [['AUTH', password], ['PING']] : [['PING']];
      const replies = await redisCommands(port, args);
      if (String(replies[replies.length - 1]) === 'PONG') return;
    } catch {
      /* not up yet */
    }
    await new Promise((res) => setTimeout(res, 25)); // polling a port has no event to await
  }
  throw new Error(`redis-server on ${port} did not become ready`);
}

/** Sends commands on a fresh connection and resolves with their replies (errors as Error values). */
export function redisCommands(
  port: number,
  commands: Array<Array<string | Buffer | number>>,
  opts: { host?: string; buffers?: boolean; timeoutMs?: number } = {},
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const replies: unknown[] = [];
    const host = opts.host ?? '127.0.0.1';
    const secure = tlsPorts.get(port);
    const sock = secure !== undefined ? tls.connect({ ...secure, host, port }) : net.connect(port, host);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timeout talking to ${port}`));
    }, opts.timeoutMs ?? 10000);
    const parser = new RedisParser({
      returnBuffers: opts.buffers ?? false,
      returnReply: (rep) => {
        replies.push(rep);
        if (replies.length === commands.length) {
          clearTimeout(timer);
          sock.end();
          resolve(replies);
        }
      },
      returnError: (e) => {
        replies.push(e);
        if (replies.length === commands.length) {
          clearTimeout(timer);
          sock.end();
          resolve(replies);
        }
      },
    });
    sock.on('data', (d) => parser.execute(d));
    sock.on('error', (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      if (replies.length < commands.length) {
        clearTimeout(timer);
        reject(new Error(`connection to ${port} closed`));
      }
    });
    sock.write(Buffer.concat(commands.map(encodeCommand)));
  });
}

export async function redisCommand(port: number, ...args: Array<string | Buffer | number>): Promise<unknown> {
  const [r] = await redisCommands(port, [args]);
  if (r instanceof Error) throw r;
  return r;
}

export function encodeCommand(args: Array<string | Buffer | number>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}
