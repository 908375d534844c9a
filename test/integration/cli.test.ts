// The keymux binary: `keymux --config FILE --check` validates and exits 0 or non-zero with file:line errors;
// `keymux --config FILE` serves clients; SIGTERM drains and exits 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const run = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
let dir: string;
let backend: RedisProcess;

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js')))
    throw new Error('dist/ is missing: run `npm run build` (scripts/test.sh does)');
  dir = makeTempDir('keymux-cli-');
  backend = await startRedis();
});
afterAll(async () => {
  await backend?.stop();
  removeTempDir(dir);
});

describe('keymux --check', () => {
  it('accepts every shipped config', async () => {
    for (const f of fs.readdirSync('config').filter((n) => n.endsWith('.yaml'))) {
      const { stdout } = await run('node', [BIN, '--config', path.join('config', f), '--check']);
      expect(stdout).toContain('configuration is valid');
    }
  });

  it('rejects a bad config with file, line and reason, exit code 1', async () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(
      file,
      'mode: slots\nshards:\n  - name: a\n    address: 127.0.0.1:7001\n    slots: [0-100]\n  - name: a\n    address: 127.0.0.1:7002\n    slots: [50-16383]\n',
    );
    const err = await run('node', [BIN, '--config', file, '--check']).then(
      () => null,
      (e) => e as { code: number; stderr: string },
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain(`${file}:6: shards[1].name: duplicate shard name "a"`);
    expect(err?.stderr).toMatch(/overlaps shard "a"/);
  });
});

describe('two ring shards with the same ketama key', () => {
  it('are refused with file:line by --check and by keymux plan (nutcracker -t refuses them too)', async () => {
    // An unnamed shard on port 11211 hashes as its host alone: the same points as the shard named after that host.
    const ok = path.join(dir, 'ring-ok.yaml');
    const dup = path.join(dir, 'ring-dup.yaml');
    const shards = 'mode: ring\nshards:\n  - address: 127.0.0.1:7001\n  - address: 127.0.0.1:11211\n';
    fs.writeFileSync(ok, shards);
    fs.writeFileSync(dup, `${shards}  - name: "127.0.0.1"\n    address: 127.0.0.1:7003\n`);
    const expected =
      `${dup}:5: shards[2].name: shard "127.0.0.1" hashes on the ring as "127.0.0.1", as does shard ` +
      '"127.0.0.1:11211" (shards[1] at line 4)';
    for (const args of [
      ['--config', dup, '--check'],
      ['plan', '--config', dup, '--current', ok],
    ]) {
      const err = await run('node', [BIN, ...args]).then(
        () => null,
        (e) => e as { code: number; stderr: string },
      );
      expect(err?.code).toBe(1);
      expect(err?.stderr).toContain(expected);
      expect(err?.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
  });
});

describe('keymux --config', () => {
  it('serves clients, reloads on SIGHUP, and drains on SIGTERM with exit code 0', async () => {
    const port = await freePort();
    const file = path.join(dir, 'ring.yaml');
    fs.writeFileSync(
      file,
      `listen: 127.0.0.1:${port}\nmode: ring\nshards:\n  - address: ${backend.address}\nlog: { level: warn }\n`,
    );
    // --no-watch: only the SIGHUP below may reload.
    const child = spawn('node', [BIN, '--config', file, '--no-watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    let up = false;
    for (let i = 0; i < 200 && !up; i++) {
      up = await redisCommand(port, 'PING').then(
        () => true,
        () => false,
      );
      if (!up) await new Promise((r) => setTimeout(r, 25)); // no event tells us the port is open; poll, bounded
    }
    expect(up).toBe(true);
    expect(await redisCommand(port, 'SET', 'cli:x', '1')).toBe('OK');
    expect(await redisCommand(backend.port, 'GET', 'cli:x')).toBe('1');
    // SIGHUP re-reads the file: the deny list changes without a restart.
    fs.writeFileSync(
      file,
      `listen: 127.0.0.1:${port}\nmode: ring\nshards:\n  - address: ${backend.address}\nlog: { level: warn }\ncommands: { deny: [get] }\n`,
    );
    child.kill('SIGHUP');
    let denied = false;
    for (let i = 0; i < 200 && !denied; i++) {
      denied = await redisCommand(port, 'GET', 'cli:x').then(
        () => false,
        (e: Error) => /disabled by configuration/.test(e.message),
      );
      if (!denied) await new Promise((r) => setTimeout(r, 25)); // the reload is asynchronous and has no event here
    }
    expect(denied).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
