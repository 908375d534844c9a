// Memory across reloads that move keys: starts two redis-servers on free loopback ports and keymux (in this
// process) over them, writes 100 keys, then reloads N times (default 800), each reload swapping the two shards'
// slot halves so every key moves; waits for each migration to finish and prints the heap after a full GC every
// N/4 reloads. Stops the redis-servers it started (by PID).
// Run: node --expose-gc --import tsx scripts/reload-memory.ts [N]
import { spawn } from 'node:child_process';
import net from 'node:net';
import { stringify } from 'yaml';
import { pino } from 'pino';
import { Proxy } from '../src/proxy.js';
import { parseConfigText } from '../src/config/load.js';
import { setRootLogger } from '../src/log.js';
import type { KeymuxConfig } from '../src/config/schema.js';

setRootLogger(pino({ level: 'silent' }));
const reloads = Number(process.argv[2] ?? 800);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });

const ports = [await freePort(), await freePort()];
const shards = ports.map((p) =>
  spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  }),
);

function config(flipped: boolean): KeymuxConfig {
  const result = parseConfigText(
    stringify({
      listen: '127.0.0.1:0',
      log: { level: 'silent' },
      mode: 'slots',
      shards: [
        { name: 'a', address: `127.0.0.1:${ports[0]}`, slots: [flipped ? '8192-16383' : '0-8191'] },
        { name: 'b', address: `127.0.0.1:${ports[1]}`, slots: [flipped ? '0-8191' : '8192-16383'] },
      ],
    }),
    '<reload-memory>',
  );
  if (result.errors) throw new Error(result.errors.join('\n'));
  return result.config;
}

/** Writes `count` keys through keymux and resolves once every SET is acknowledged. */
function writeKeys(port: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let ok = 0;
    c.on('data', (d: Buffer) => {
      ok += d.toString('latin1').split('+OK').length - 1;
      if (ok === count) {
        c.destroy();
        resolve();
      }
    });
    c.on('error', reject);
    for (let i = 0; i < count; i++) {
      const key = `k:${i}`;
      c.write(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$1\r\nv\r\n`);
    }
  });
}

function heap(): string {
  gc!();
  const m = process.memoryUsage();
  return `heap ${(m.heapUsed / 1e6).toFixed(1)} MB, rss ${(m.rss / 1e6).toFixed(1)} MB`;
}

try {
  for (const p of ports) {
    // A redis-server that starts listening sends no event: poll, bounded.
    for (let i = 0; !(await accepts(p)); i++) {
      if (i > 200) throw new Error(`redis-server on ${p} did not start`);
      await sleep(25);
    }
  }
  const proxy = await Proxy.start(config(false), {});
  await writeKeys(proxy.port, 100);
  console.log(`start: ${heap()}`);
  const every = Math.max(1, Math.floor(reloads / 4));
  for (let i = 1; i <= reloads; i++) {
    const errors = proxy.reload(config(i % 2 === 1));
    if (errors) throw new Error(errors);
    while (!proxy.migrationProgress().every((m) => m.state === 'done' || m.state === 'aborted')) await sleep(5);
    if (i % every === 0) console.log(`${i} reloads: ${heap()}`);
  }
  await proxy.close();
} finally {
  for (const s of shards) s.kill('SIGKILL');
}
