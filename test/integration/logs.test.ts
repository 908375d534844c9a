/**
 * keymux's logs: JSON lines when stdout is a pipe or a file (for machines), human-readable lines when stdout is a
 * terminal (the real binary under tmux, read back with capture-pane), and either forced by `--log-format` or
 * KEYMUX_LOG_FORMAT. Each case runs the real `keymux --config` and reads its start-up lines.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import { defaultLogFormat } from '../../src/log.js';

const exec = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
let dir: string;
let backend: RedisProcess;

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  dir = makeTempDir('keymux-logs-');
  backend = await startRedis();
});
afterAll(async () => {
  await backend?.stop();
  removeTempDir(dir);
});

async function configFile(): Promise<string> {
  const file = path.join(dir, `keymux-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(
    file,
    `listen: 127.0.0.1:${await freePort()}\nmode: ring\nshards:\n  - address: ${backend.address}\n`,
  );
  return file;
}

/** Runs keymux with stdout on a pipe until it logs "keymux listening"; returns what it printed, then stops it. */
async function pipedStartup(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const child = spawn(process.execPath, [BIN, '--config', await configFile(), '--no-watch', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KEYMUX_LOG_FORMAT: '', ...env },
  });
  let out = '';
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('keymux listening')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`keymux exited (${code}) before listening:\n${out}`)));
  });
  child.kill('SIGTERM');
  await exited;
  return out;
}

describe('log format', () => {
  it('stdout on a pipe: one JSON object per line', async () => {
    const out = await pipedStartup([]);
    const lines = out.trim().split('\n');
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const listening = records.find((r) => r.msg === 'keymux listening')!;
    expect(listening).toMatchObject({ level: 30, app: 'keymux', component: 'proxy', mode: 'ring', shards: 1 });
    expect(typeof listening.time).toBe('number');
  });

  it('--log-format pretty (and KEYMUX_LOG_FORMAT=pretty) give readable lines, without colour on a pipe', async () => {
    for (const out of [
      await pipedStartup(['--log-format', 'pretty']),
      await pipedStartup([], { KEYMUX_LOG_FORMAT: 'pretty' }),
    ]) {
      expect(out).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \[proxy\] keymux listening \{"listen":"127\.0\.0\.1:\d+"/m);
      expect(out).not.toMatch(/\x1b\[/);
      expect(out).not.toMatch(/^\{"level"/m);
    }
  });

  it('an unknown --log-format is refused with exit code 2', async () => {
    const r = await exec(process.execPath, [BIN, '--config', await configFile(), '--log-format', 'xml']).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(r?.code).toBe(2);
    expect(r?.stderr).toContain('--log-format must be json or pretty, got "xml"');
  });

  it('stdout on a terminal (tmux): readable by default; KEYMUX_LOG_FORMAT=json forces JSON', async () => {
    const socket = `keymux-logs-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const tmux = (...args: string[]) =>
      exec('tmux', ['-L', socket, ...args], { env: { ...process.env, TERM: 'xterm' } });
    // keymux reloads on SIGHUP, which is what killing a tmux server sends: stop each keymux by its PID (`exec`
    // makes the pane's process keymux itself) before the server goes.
    const pids: number[] = [];
    try {
      const screens: string[] = [];
      for (const [i, format] of ['', 'json'].entries()) {
        const cmd = `KEYMUX_LOG_FORMAT=${format} exec '${process.execPath}' '${BIN}' --config '${await configFile()}' --no-watch`;
        await tmux(i === 0 ? 'new-session' : 'new-window', '-d', ...(i === 0 ? ['-x', '200', '-y', '20'] : []), cmd);
        pids.push(Number((await tmux('display-message', '-p', '-t', `:${i}`, '#{pane_pid}')).stdout.trim()));
        let screen = '';
        for (let n = 0; n < 200 && !screen.includes('keymux listening'); n++) {
          await new Promise((r) => setTimeout(r, 50)); // the pane has no event to await
          screen = (await tmux('capture-pane', '-p', '-t', `:${i}`)).stdout;
        }
        screens.push(screen);
      }
      expect(screens[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \[proxy\] keymux listening/m);
      expect(screens[1]).toMatch(/^\{"level":30,.*"msg":"keymux listening"\}/m);
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
      }
      await tmux('kill-server').catch(() => undefined);
    }
  });

  it('with its stdout gone (the reading end of the pipe closed), SIGTERM still stops keymux, exit 0', async () => {
    const child = spawn(process.execPath, [BIN, '--config', await configFile(), '--no-watch'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, KEYMUX_LOG_FORMAT: 'json' },
    });
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    let out = '';
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('keymux listening')) resolve();
      });
    });
    child.stdout.destroy(); // every later log line fails with EPIPE
    child.kill('SIGTERM');
    // Before the fix the drain's own log lines threw, the drain never ended and keymux ignored SIGTERM for good.
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    expect(await exited).toBe(0);
    clearTimeout(timer);
  }, 30_000);

  it('defaultLogFormat: the environment wins, then whether stdout is a terminal', () => {
    expect(defaultLogFormat({}, true)).toBe('pretty');
    expect(defaultLogFormat({}, false)).toBe('json');
    expect(defaultLogFormat({ KEYMUX_LOG_FORMAT: 'json' }, true)).toBe('json');
    expect(defaultLogFormat({ KEYMUX_LOG_FORMAT: 'PRETTY' }, false)).toBe('pretty');
    expect(defaultLogFormat({ KEYMUX_LOG_FORMAT: 'nonsense' }, false)).toBe('json');
  });
});
