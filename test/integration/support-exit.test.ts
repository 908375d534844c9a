/**
 * The test support's exit handler (test/support/redis.ts) kills the redis-servers a test process leaves running,
 * and only those: a server that already exited on its own has a PID the system may have handed to another process
 * (PIDs wrap at 32768 on these machines), possibly another test file's server. A child node process (with tsx, as
 * vitest runs TypeScript) starts two servers, shuts one down with SHUTDOWN NOSAVE, and exits while recording every
 * process.kill and ChildProcess kill it makes; the running one must be killed, the exited one never signalled.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/fake-backend.js';

const support = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/redis.ts');

describe('test support: leftover redis-servers at exit', () => {
  it('are killed when still running, and an exited one is never signalled', async () => {
    const code = `
      import { startRedis, redisCommand } from ${JSON.stringify(support)};
      const signalled = [];
      const realKill = process.kill.bind(process);
      process.kill = (pid, sig) => { signalled.push(pid); return realKill(pid, sig); };
      const cp = await import('node:child_process');
      const proto = Object.getPrototypeOf(cp.spawn(process.execPath, ['-e', '']));
      const realChildKill = proto.kill;
      proto.kill = function (sig) { signalled.push(this.pid); return realChildKill.call(this, sig); };
      const [running, gone] = await Promise.all([startRedis(), startRedis()]);
      const exited = new Promise((r) => gone.process.once('exit', r));
      await redisCommand(gone.port, 'SHUTDOWN', 'NOSAVE').catch(() => undefined);
      await exited;
      process.on('exit', () => process.stdout.write(JSON.stringify({ running: running.pid, gone: gone.pid, signalled }) + '\\n'));
      process.exit(0);
    `;
    const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const result = JSON.parse(out.trim()) as { running: number; gone: number; signalled: number[] };
    expect(result.signalled).toContain(result.running);
    expect(result.signalled).not.toContain(result.gone);
    // The running one is gone too (killed by the handler; it dies, and init reaps it, a moment later).
    const gone = (): boolean => {
      try {
        process.kill(result.running, 0);
        return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${result.running}/status`, 'utf8'));
      } catch {
        return true;
      }
    };
    await waitFor(gone, 'the running server to be killed', 5000);
  }, 30_000);
});
