/**
 * A real twemproxy (nutcracker) process for tests: one redis pool with the given hash, ketama distribution,
 * hash tag and servers, listening on a free loopback port (stats on another), with its config and log in a
 * throwaway directory. Start waits until the listener accepts connections; stop kills by PID only the process
 * this module started. The oracle that keymux's ring routing is compared against.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './ports.js';
import { makeTempDir, removeTempDir } from './tmpdirs.js';

export interface NutcrackerServer {
  host: string;
  port: number;
  weight: number;
  /** Optional server name (twemproxy then hashes the name instead of "host:port"). */
  name?: string;
}

export interface StartNutcrackerOptions {
  hash: string;
  /** Two characters such as "{}", or null for none. */
  hashTag?: string | null;
  distribution?: 'ketama' | 'modula' | 'random';
  servers: NutcrackerServer[];
  /** A whole nutcracker.yml of the test's own instead of the generated one (it must listen on `port`). */
  config?: (port: number) => string;
}

export interface NutcrackerProcess {
  host: string;
  port: number;
  statsPort: number;
  pid: number;
  dir: string;
  configText: string;
  stop(): Promise<void>;
  /** The nutcracker log so far (for failure messages; gone after stop, which removes the directory). */
  log(): string;
}

const BINARY = fs.existsSync('/usr/sbin/nutcracker') ? '/usr/sbin/nutcracker' : 'nutcracker';

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export function nutcrackerConfig(port: number, opts: StartNutcrackerOptions): string {
  const lines = [
    'keymux_test:',
    `  listen: 127.0.0.1:${port}`,
    `  hash: ${opts.hash}`,
    `  distribution: ${opts.distribution ?? 'ketama'}`,
    ...(opts.hashTag ? [`  hash_tag: ${JSON.stringify(opts.hashTag)}`] : []),
    '  redis: true',
    '  auto_eject_hosts: false',
    '  preconnect: false',
    // Generous: these tests pipeline thousands of commands through one nutcracker connection on a shared, busy
    // machine, and nutcracker answers "Connection timed out" for a request older than this.
    '  timeout: 30000',
    '  servers:',
    ...opts.servers.map((s) => `    - ${s.host}:${s.port}:${s.weight}${s.name ? ` ${s.name}` : ''}`),
  ];
  return lines.join('\n') + '\n';
}

export async function startNutcracker(opts: StartNutcrackerOptions): Promise<NutcrackerProcess> {
  for (let attempt = 0; ; attempt++) {
    try {
      const port = await freePort();
      let statsPort = await freePort();
      while (statsPort === port) statsPort = await freePort();
      return await startOnce(port, statsPort, opts);
    } catch (err) {
      if (attempt >= 4) throw err;
    }
  }
}

async function startOnce(port: number, statsPort: number, opts: StartNutcrackerOptions): Promise<NutcrackerProcess> {
  // First: a config function may refuse a port (one its other pools listen on), and startNutcracker then tries another.
  const configText = opts.config?.(port) ?? nutcrackerConfig(port, opts);
  const dir = makeTempDir(`keymux-nutcracker-${port}-`);
  const conf = path.join(dir, 'nutcracker.yml');
  const logFile = path.join(dir, 'nutcracker.log');
  fs.writeFileSync(conf, configText);
  const child = spawn(
    BINARY,
    ['-c', conf, '-o', logFile, '-s', String(statsPort), '-a', '127.0.0.1', '-p', path.join(dir, 'nutcracker.pid')],
    { stdio: 'ignore' },
  );
  live.add(child);
  let exited = false;
  child.once('exit', () => {
    exited = true;
    live.delete(child);
  });
  const readLog = (): string => {
    try {
      return fs.readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const n: NutcrackerProcess = {
    host: '127.0.0.1',
    port,
    statsPort,
    pid: child.pid ?? -1,
    dir,
    configText,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const done = new Promise<void>((res) => child.once('exit', () => res()));
        child.kill('SIGTERM');
        await done;
      }
      live.delete(child);
      removeTempDir(dir);
    },
    log: readLog,
  };
  for (let i = 0; i < 200; i++) {
    if (exited) {
      const log = readLog();
      await n.stop();
      throw new Error(`nutcracker exited at start (port ${port}):\n${log}`);
    }
    if (await canConnect(port)) return n;
    await new Promise((res) => setTimeout(res, 25)); // polling a port has no event to await
  }
  const log = readLog();
  await n.stop();
  throw new Error(`nutcracker on ${port} did not start accepting:\n${log}`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      s.destroy();
      resolve(false);
    });
  });
}
