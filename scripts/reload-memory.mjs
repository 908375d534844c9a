// Memory across reloads that move keys: starts two redis-servers on free loopback ports and keymux (the build in
// dist/) over them, then reloads N times (default 800), each reload swapping the two shards' slot halves so every
// key moves (100 keys, written first); waits for each migration to finish and prints the heap after a full GC every N/4 reloads. Stops the
// redis-servers it started (by PID). Run: npm run build && node --expose-gc scripts/reload-memory.mjs [N]
import { spawn } from 'node:child_process';
import net from 'node:net';
import { stringify } from 'yaml';
import { Proxy } from '../dist/proxy.js';
import { parseConfigText } from '../dist/config/load.js';
import { setRootLogger } from '../dist/log.js';
import pino from 'pino';

setRootLogger(pino({ level: 'silent' }));
const reloads = Number(process.argv[2] ?? 800);
const free = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
const ports = [await free(), await free()];
const shards = ports.map((p) =>
  spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  }),
);
const config = (flipped) =>
  parseConfigText(
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
  ).config;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  for (const p of ports) {
    for (let i = 0; ; i++) {
      const up = await new Promise((resolve) => {
        const c = net.connect(p, '127.0.0.1', () => (c.destroy(), resolve(true))).on('error', () => resolve(false));
      });
      if (up) break;
      if (i > 200) throw new Error(`redis-server on ${p} did not start`);
      await sleep(25); // no event for a port that starts listening: poll, bounded
    }
  }
  const proxy = await Proxy.start(config(false), {});
  await new Promise((resolve, reject) => {
    const c = net.connect(proxy.port, '127.0.0.1');
    let ok = 0;
    c.on('data', (d) => {
      ok += d.toString('latin1').split('+OK').length - 1;
      if (ok === 100) (c.destroy(), resolve());
    }).on('error', reject);
    for (let i = 0; i < 100; i++) c.write(`*3\r\n$3\r\nSET\r\n$${String(i).length + 2}\r\nk:${i}\r\n$1\r\nv\r\n`);
  });
  const mb = (n) => (n / 1e6).toFixed(1);
  const heap = () => {
    globalThis.gc();
    const m = process.memoryUsage();
    return `heap ${mb(m.heapUsed)} MB, rss ${mb(m.rss)} MB`;
  };
  console.log(`start: ${heap()}`);
  for (let i = 1; i <= reloads; i++) {
    const errors = proxy.reload(config(i % 2 === 1));
    if (errors) throw new Error(errors);
    while (!proxy.migrationProgress().every((m) => m.state === 'done' || m.state === 'aborted')) await sleep(5);
    if (i % Math.max(1, Math.floor(reloads / 4)) === 0) console.log(`${i} reloads: ${heap()}`);
  }
  await proxy.close();
} finally {
  for (const s of shards) s.kill('SIGKILL');
}
