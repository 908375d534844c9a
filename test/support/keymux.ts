/**
 * keymux for tests: builds a config (YAML text through the real loader, so tests exercise validation too) and
 * starts a Proxy in this process on a free port (listen port 0), or spawns the real CLI for tests of the binary.
 * Also opens raw client sockets that collect reply bytes, for exact-byte assertions, and spawns the real binary
 * (spawnKeymux) for what must be watched from outside the process, such as its open file descriptors, or on a
 * config file of the test's own (runBinary: workers, restarts).
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import type { KeymuxConfig } from '../../src/config/schema.js';
import { Proxy, type StartOptions } from '../../src/proxy.js';
import { pino } from 'pino';
import { parseReplies, replyCount } from './fake-backend.js';
import { setRootLogger } from '../../src/log.js';
import { freePort } from './ports.js';
import { makeTempDir, removeTempDir } from './tmpdirs.js';

setRootLogger(pino({ level: process.env.KEYMUX_TEST_LOG ?? 'silent' }));

export type ConfigObject = Record<string, unknown>;

export function configFrom(obj: ConfigObject): KeymuxConfig {
  const text = stringify({ listen: '127.0.0.1:0', ...obj });
  const result = parseConfigText(text, '<test>');
  if ('errors' in result && result.errors) throw new Error(`bad test config:\n${result.errors.join('\n')}`);
  return result.config;
}

/** A slots-mode config splitting 16384 slots evenly over the given backend ports. */
export function slotsConfig(ports: number[], extra: ConfigObject = {}): ConfigObject {
  const per = Math.floor(16384 / ports.length);
  return {
    mode: 'slots',
    shards: ports.map((port, i) => ({
      name: String.fromCharCode(97 + i),
      address: `127.0.0.1:${port}`,
      slots: [`${i * per}-${i === ports.length - 1 ? 16383 : (i + 1) * per - 1}`],
    })),
    ...extra,
  };
}

export function ringConfig(ports: number[], extra: ConfigObject = {}): ConfigObject {
  return {
    mode: 'ring',
    ring: { hash: 'fnv1a_64' },
    shards: ports.map((port) => ({ address: `127.0.0.1:${port}` })),
    ...extra,
  };
}

export async function startKeymux(obj: ConfigObject, options: StartOptions = {}): Promise<Proxy> {
  return Proxy.start(configFrom(obj), options);
}

/** A raw client socket: write bytes, await N replies' worth of bytes or the close. */
export class RawClient {
  readonly socket: net.Socket;
  data = Buffer.alloc(0);
  closed = false;
  private waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d) => {
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** `localAddress`: another loopback source (127.0.0.2...), for a client address of its own. */
  static connect(port: number, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  write(b: Buffer | string): void {
    this.socket.write(b);
  }

  /** Writes `bytes` and resolves with the next `replies` replies, parsed. */
  async exchange(bytes: Buffer | string, replies: number): Promise<unknown[]> {
    const before = this.data.length;
    this.write(bytes);
    await this.until((d) => replyCount(d.subarray(before)) >= replies);
    return parseReplies(this.data.subarray(before));
  }

  /** Resolves once the received bytes satisfy `pred` (or rejects when the socket closes first / times out). */
  async until(pred: (data: Buffer) => boolean, timeoutMs = 10000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.data)) {
      if (this.closed) throw new Error(`closed; received ${JSON.stringify(this.data.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout; received ${JSON.stringify(this.data.toString('latin1'))}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
    return this.data;
  }

  /** Waits for the text to have been received in full; returns everything received. */
  async untilText(text: string, timeoutMs?: number): Promise<string> {
    await this.until((d) => d.toString('latin1').includes(text), timeoutMs);
    return this.data.toString('latin1');
  }

  async untilClosed(timeoutMs = 10000): Promise<string> {
    await this.until(() => this.closed, timeoutMs).catch((e) => {
      if (!this.closed) throw e;
    });
    return this.data.toString('latin1');
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** keymux run as its own process (the real binary, dist/), for what must be observed from outside: its fds. */
export interface SpawnedKeymux {
  pid: number;
  port: number;
  adminPort: number;
  /** File descriptors the process holds now (/proc/PID/fd). */
  fdCount(): number;
  stop(): Promise<void>;
}

/** Spawns `node bin/keymux.js` on a config (listen and admin on free ports); resolves once it answers PING. */
export async function spawnKeymux(obj: ConfigObject): Promise<SpawnedKeymux> {
  if (!fs.existsSync(path.resolve('dist/main.js')))
    throw new Error('dist/ is missing: run `npm run build` (scripts/test.sh does)');
  const [port, adminPort] = [await freePort(), await freePort()];
  const dir = makeTempDir('keymux-spawned-');
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(
    file,
    stringify({ log: { level: 'warn' }, ...obj, listen: `127.0.0.1:${port}`, admin: `127.0.0.1:${adminPort}` }),
  );
  const child = spawn(process.execPath, [path.resolve('bin/keymux.js'), '--config', file, '--no-watch'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    removeTempDir(dir);
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`keymux exited at start (code ${child.exitCode})`);
    const up = await pingOnce(port);
    if (up) break;
    if (i >= 400) {
      await stop();
      throw new Error('spawned keymux did not answer PING');
    }
    await new Promise((r) => setTimeout(r, 25)); // no event tells us the port is open; poll, bounded
  }
  const pid = child.pid as number;
  return { pid, port, adminPort, fdCount: () => fs.readdirSync(`/proc/${pid}/fd`).length, stop };
}

function pingOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('error', () => resolve(false));
    s.once('connect', () => s.write('*1\r\n$4\r\nPING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString('latin1') === '+PONG\r\n');
    });
  });
}

/** The real binary on a config file, with its output (JSON log lines) collected. */
export interface RunningBinary {
  child: ChildProcess;
  /** Resolves with the exit code once the process exited. */
  exited: Promise<number | null>;
  /** Everything it wrote so far (stdout and stderr). */
  output(): string;
  /** SIGKILL unless it already exited; resolves once it has. */
  kill(): Promise<void>;
}

/**
 * Runs `node bin/keymux.js --config file --no-watch` (without `--no-watch` when `watch`: it then watches the config
 * and the certificate, key, token and password files); resolves once its output contains `ready`.
 */
export async function runBinary(
  file: string,
  ready: string,
  options: { watch?: boolean } = {},
): Promise<RunningBinary> {
  if (!fs.existsSync(path.resolve('dist/main.js')))
    throw new Error('dist/ is missing: run `npm run build` (scripts/test.sh does)');
  const args = [path.resolve('bin/keymux.js'), '--config', file, ...(options.watch === true ? [] : ['--no-watch'])];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KEYMUX_LOG_FORMAT: 'json' },
  });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      output += d.toString();
      if (output.includes(ready)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`keymux exited (${code}) before "${ready}":\n${output}`)));
  });
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  };
  return { child, exited, output: () => output, kill };
}
