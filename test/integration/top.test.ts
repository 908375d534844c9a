/**
 * `keymux top`, used the way a person uses it: the real binary runs in a tmux pane (its own tmux server, -L with a
 * unique name, killed at the end) against a live keymux with client traffic, and the test reads the screen with
 * `tmux capture-pane -p`: the shards with their state, ops/s, hit ratio and p99, the client count, the hot key,
 * and a migration shown running with a partial progress bar (its target shard paused with CLIENT PAUSE) and then
 * done at 100%; q quits. `--once` prints one plain frame without escape codes. `keymux plan` shows progress on
 * stderr when stderr is a terminal, and none otherwise.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import { run as planRun } from '../../src/cli/plan.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import { freePort } from '../support/ports.js';
import '../support/keymux.js'; // silences keymux's logs in this process
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const exec = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
let dir: string;
let redis: RedisProcess[] = [];
let proxy: Proxy;
let admin: string;
let configFile: string;
/** The admin token (top shows hot key names only to its holder). */
const TOKEN = 'top-test-admin-token-0123456789';
let tokenFile: string;

function configText(shards: number): string {
  return stringify({
    listen: '127.0.0.1:0',
    admin: { address: '127.0.0.1:0', token_file: tokenFile },
    mode: 'ring',
    ring: { hash: 'fnv1a_64' },
    shards: redis.slice(0, shards).map((r, i) => ({ name: `shard-${'abc'[i]}`, address: r.address })),
    metrics: { hot_keys: { sample_rate: 1 } },
    backend: { timeout_ms: 30000, connect_timeout_ms: 10000 }, // a busy shared machine must not time shards out
    log: { level: 'silent' },
  });
}

/** Client traffic until stopped: a hot key read over and over, other keys read and written (hits and misses). */
function traffic(port: number): { stop: () => Promise<void> } {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
  client.on('error', () => undefined); // reported through the commands' own failures
  let running = true;
  const loop = (async () => {
    for (let round = 0; running; round++) {
      const p = client.pipeline();
      for (let i = 0; i < 40; i++) {
        p.get('hot:key');
        p.set(`warm:${(round * 40 + i) % 500}`, 'x');
        p.get(`warm:${(round * 40 + i + 250) % 1000}`); // half of these were never written: misses
      }
      await p.exec().catch(() => undefined);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      client.disconnect();
    },
  };
}

class Tmux {
  readonly socket = `keymux-top-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  private started = false;

  async start(command: string[], width = 130, height = 46): Promise<void> {
    const line = command.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    await exec('tmux', ['-L', this.socket, 'new-session', '-d', '-x', String(width), '-y', String(height), line], {
      env: { ...process.env, TERM: 'xterm-256color' },
    });
    this.started = true;
  }

  async screen(): Promise<string> {
    const { stdout } = await exec('tmux', ['-L', this.socket, 'capture-pane', '-p']);
    return stdout;
  }

  /** Captures the pane until `pred` holds (a screen refreshes on its own; there is nothing to await but it). */
  async until(pred: (screen: string) => boolean, what: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      last = await this.screen();
      if (pred(last)) return last;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the screen never showed ${what}; last screen:\n${last}`);
  }

  async keys(...keys: string[]): Promise<void> {
    await exec('tmux', ['-L', this.socket, 'send-keys', ...keys]);
  }

  async alive(): Promise<boolean> {
    return exec('tmux', ['-L', this.socket, 'has-session']).then(
      () => true,
      () => false,
    );
  }

  async kill(): Promise<void> {
    if (this.started) await exec('tmux', ['-L', this.socket, 'kill-server']).catch(() => undefined);
  }
}

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  dir = makeTempDir('keymux-top-');
  redis = await Promise.all([0, 1, 2].map(() => startRedis()));
  configFile = path.join(dir, 'keymux.yaml');
  tokenFile = path.join(dir, 'admin-token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`);
  fs.writeFileSync(configFile, configText(2));
  proxy = await Proxy.start(parseConfigText(fs.readFileSync(configFile, 'utf8'), configFile).config!, {
    configPath: configFile,
    watchConfig: false,
    builtinCommandTable: true,
  });
  admin = `http://127.0.0.1:${proxy.adminPort}`;
});
afterAll(async () => {
  await proxy?.close();
  await Promise.all(redis.map((r) => r.stop()));
  removeTempDir(dir);
});

describe('keymux top under tmux', () => {
  it('shows shards, traffic, clients, the hot key, and a migration with its progress bar; q quits', async () => {
    const tmux = new Tmux();
    const load = traffic(proxy.port);
    // Data to migrate when a third shard joins the ring.
    for (let i = 0; i < 6000; i += 2000) {
      await redisCommands(
        proxy.port,
        Array.from({ length: 2000 }, (_, j) => ['SET', `bulk:${i + j}`, 'v'.repeat(64)]),
        { timeoutMs: 30_000 },
      );
    }
    try {
      await tmux.start([
        process.execPath,
        BIN,
        'top',
        '--admin',
        admin,
        '--token-file',
        tokenFile,
        '--interval',
        '300',
      ]);
      const screen = await tmux.until(
        (s) => /shard-a .*ready\s+[\d,]+/.test(s) && /hot:key/.test(s) && /\d+\.\d%/.test(s),
        'both shards with traffic and the hot key',
      );
      expect(screen).toContain(`keymux top - ${admin}`);
      expect(screen).toMatch(/ring mode, config v1/);
      expect(screen).toMatch(/clients [1-9]\d*\s+ops\/s [\d,]+\s+p99 [\d.]+ ms\s+shards 2\/2 up/);
      expect(screen).toMatch(/SHARD\s+ADDRESS\s+STATE\s+OPS\/S\s+HIT%\s+P99 MS\s+INFLIGHT\s+ERR\/S/);
      for (const [i, name] of ['shard-a', 'shard-b'].entries()) {
        const row = screen.split('\n').find((l) => l.startsWith(name))!;
        expect(row, `${name} row`).toContain(redis[i].address);
        const cells = row.split(/\s+/);
        expect(cells[2]).toBe('ready');
        expect(Number(cells[3].replace(/,/g, '')), `${name} ops/s`).toBeGreaterThan(0);
        expect(cells[4]).toMatch(/^\d+\.\d%$/); // reads of written and never-written keys: a hit ratio
        expect(cells[5]).toMatch(/^\d+(\.\d+)?$/);
      }
      expect(screen).toMatch(/HOT KEYS \(last 60 s\)/);
      const hot = screen.split('\n').find((l) => /^1\s+hot:key\s/.test(l));
      expect(hot, 'hot:key ranked first').toBeDefined();
      expect(hot).toMatch(/hot:key\s+[\d.]+\s+shard-[ab]/);
      expect(screen).toContain('MIGRATIONS  none');

      // A third shard joins while its redis-server pauses writes: the migration stalls part-way and top shows it.
      await redisCommands(redis[2].port, [['CLIENT', 'PAUSE', '60000', 'WRITE']]);
      fs.writeFileSync(configFile, configText(3));
      const res = await request(`${admin}/reload`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      const running = await tmux.until(
        (s) => /#\d+ running\s+\[#+\.+\]\s+\d+%/.test(s),
        'a running migration with a partly filled bar',
      );
      const bar = /#\d+ running\s+\[(#+)(\.+)\]\s+(\d+)%\s+([\d,]+)\/([\d,]+) scanned/.exec(running)!;
      expect(Number(bar[3])).toBeGreaterThan(0);
      expect(Number(bar[3])).toBeLessThan(100);
      // scanned/total: the total is the old owners' DBSIZEs as they answer (migration.ts), so early on it can
      // still be missing a shard's; it is never below what has been scanned.
      const [scanned, total] = [Number(bar[4].replace(/,/g, '')), Number(bar[5].replace(/,/g, ''))];
      expect(scanned).toBeGreaterThan(0);
      expect(total).toBeGreaterThan(scanned);
      expect(running).toMatch(/shards 3\/3 up/);
      await redisCommands(redis[2].port, [['CLIENT', 'UNPAUSE']]);
      const done = await tmux.until((s) => /#\d+ done\s+\[#{30}\]\s+100%/.test(s), 'the migration done at 100%');
      expect(done).toMatch(/config v2/);

      await tmux.keys('q');
      for (let i = 0; i < 100 && (await tmux.alive()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await tmux.alive(), 'q ends keymux top (and with it the tmux session)').toBe(false);
    } finally {
      await redisCommands(redis[2].port, [['CLIENT', 'UNPAUSE']]).catch(() => undefined);
      await load.stop();
      await tmux.kill();
    }
  });

  it('--once prints one plain frame for scripts', async () => {
    const load = traffic(proxy.port);
    try {
      const { stdout } = await exec(process.execPath, [BIN, 'top', '--once', '--admin', admin, '--interval', '300'], {
        env: { ...process.env, KEYMUX_ADMIN_TOKEN: TOKEN },
      });
      expect(stdout).not.toMatch(/\x1b/); // no escape codes
      expect(stdout).toContain(`keymux top - ${admin}`);
      expect(stdout).toMatch(/^shard-a\s+\S+\s+ready\s+[\d,]+/m);
      expect(stdout).toMatch(/hot:key/);
    } finally {
      await load.stop();
    }
  });

  it('keymux top --once reports an admin address that does not answer, exit code 2', async () => {
    const closed = await freePort(); // bound and released: nothing listens there
    const r = await exec(process.execPath, [BIN, 'top', '--once', '--admin', `127.0.0.1:${closed}`]).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(r?.code).toBe(2);
    expect(r?.stderr).toContain(`keymux top: cannot read http://127.0.0.1:${closed}`);
  });
});

describe('progress on stderr', () => {
  it('keymux plan draws progress lines when stderr is a terminal, and nothing otherwise', async () => {
    const next = path.join(dir, 'plan-next.yaml');
    fs.writeFileSync(next, configText(2));
    const outputs: Array<{ out: string; err: string }> = [];
    for (const errIsTty of [true, false]) {
      const io = { out: '', err: '' };
      const code = await planRun(['--config', next, '--current', configFile], {
        out: (t) => (io.out += t),
        err: (t) => (io.err += t),
        errIsTty,
      });
      expect(code).toBe(0);
      outputs.push(io);
    }
    const [tty, pipe] = outputs;
    expect(tty.err).toMatch(/\r\x1b\[2Kkeymux plan: sampled 1\/3 shards, [\d,]+ keys \([\d.]+ s\)/);
    expect(tty.err).toMatch(/\r\x1b\[2Kkeymux plan: sampled 3\/3 shards/);
    expect(tty.err.endsWith('\r\x1b[2K')).toBe(true); // the line is cleared before the report
    expect(pipe.err).toBe('');
    expect(pipe.out).toMatch(/keymux plan: .* \(ring mode\)/);
  });
});
