/**
 * A SIGTERM that arrives while keymux is still starting (Kubernetes stopping a pod that has just started): it is
 * kept and acted on once keymux has started, by a drain and exit 0, never by Node's default of ending the process
 * on the spot. With `workers` > 1 the primary does the same and its workers drain with it. keymux is held in its
 * start by a shard that accepts connections and answers nothing (a scripted backend: it is asked for the command
 * table first), and let go once the signal is in; the second shard is a real redis-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const KEPT = 'stop requested while starting';
let dir: string;
let backend: RedisProcess;

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  dir = makeTempDir('keymux-start-signals-');
  backend = await startRedis();
});
afterAll(async () => {
  await backend?.stop();
  removeTempDir(dir);
});

/** A shard that takes connections and never answers, until released (then it closes them and refuses more). */
async function silentShard(): Promise<{ port: number; connected: Promise<void>; release(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let onFirst!: () => void;
  const connected = new Promise<void>((res) => (onFirst = res));
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    onFirst();
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as net.AddressInfo).port;
  const release = async (): Promise<void> => {
    const closed = new Promise<void>((res) => server.close(() => res()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  return { port, connected, release };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('SIGTERM while keymux starts', () => {
  for (const workers of [1, 2]) {
    it(`workers: ${workers}: the signal is kept, keymux finishes starting, drains and exits 0`, async () => {
      const shard = await silentShard();
      const file = path.join(dir, `keymux-${workers}.yaml`);
      fs.writeFileSync(
        file,
        [
          `listen: 127.0.0.1:${await freePort()}`,
          'mode: ring',
          `workers: ${workers}`,
          'backend: { connect_timeout_ms: 30000 }',
          'drain: { grace_s: 2 }',
          'shards:',
          `  - { name: silent, address: 127.0.0.1:${shard.port} }`,
          `  - { name: real, address: ${backend.address} }`,
          '',
        ].join('\n'),
      );
      const child = spawn(process.execPath, [path.resolve('bin/keymux.js'), '--config', file, '--no-watch'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, KEYMUX_LOG_FORMAT: 'json' },
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<{ code: number | null; signal: string | null }>((res) =>
        child.once('exit', (code, signal) => res({ code, signal })),
      );
      try {
        // keymux (a worker of it, with workers: 2) asks the silent shard for its command table: it is starting.
        await Promise.race([
          shard.connected,
          exited.then(() => Promise.reject(new Error(`keymux exited before asking its shards:\n${output}`))),
        ]);
        expect(output).not.toContain('listening');
        child.kill('SIGTERM');
        // keymux says it keeps the signal; a process that did not keep it exits instead (awaited either way).
        const kept = await new Promise<boolean>((resolve) => {
          const check = (): void => {
            if (output.includes(KEPT)) resolve(true);
          };
          child.stdout.on('data', check);
          check();
          void exited.then(() => resolve(output.includes(KEPT)));
        });
        expect(kept, output).toBe(true);
        await shard.release();
        const { code, signal } = await exited;
        expect({ code, signal }, output).toEqual({ code: 0, signal: null });
        const lines = output
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { msg: string; pids?: number[]; signal?: string });
        const msgs = lines.map((l) => l.msg);
        const started = workers === 1 ? 'keymux listening' : 'keymux workers serving';
        const draining = workers === 1 ? 'draining' : 'draining every worker';
        expect(msgs).toContain(started);
        expect(msgs.indexOf(draining), output).toBeGreaterThan(msgs.indexOf(started));
        expect(lines.find((l) => l.msg === draining)?.signal).toBe('SIGTERM');
        expect(msgs).toContain('stopped');
        if (workers > 1) {
          const pids = lines.find((l) => l.msg === 'keymux workers serving')?.pids ?? [];
          expect(pids).toHaveLength(workers);
          // The primary exits once its workers have: none is left behind.
          for (const pid of pids) expect(alive(pid)).toBe(false);
        }
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
        await shard.release().catch(() => {});
      }
    });
  }
});
