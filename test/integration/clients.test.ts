// Real client libraries and tools through keymux: node-redis (v5, which sends CLIENT SETINFO on connect) and
// redis-cli (one-shot commands, and --pipe mass insertion), in ring mode so both routers are covered end to end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createClient } from 'redis';
import { startRedis, redisCommand, type RedisProcess } from '../support/redis.js';
import { startKeymux, ringConfig, configFrom } from '../support/keymux.js';
import { RingRouter } from '../../src/routing/ketama.js';
import type { Proxy } from '../../src/proxy.js';

const run = promisify(execFile);
let backends: RedisProcess[];
let proxy: Proxy;
let router: RingRouter;

beforeAll(async () => {
  backends = await Promise.all([startRedis(), startRedis(), startRedis(), startRedis()]);
  const cfg = ringConfig(backends.map((b) => b.port));
  proxy = await startKeymux(cfg);
  const config = configFrom(cfg);
  router = new RingRouter(config.shards, config.ring.hash, config.hashTag);
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all(backends.map((b) => b.stop()));
});

function owner(key: string): RedisProcess {
  const b = Buffer.from(key);
  return backends[router.shardFor(b, 0, b.length)];
}

describe('node-redis', () => {
  it('connects, runs every dispatch kind, and the ring places keys where the router says', async () => {
    const c = createClient({ socket: { port: proxy.port, host: '127.0.0.1' } });
    await c.connect();
    expect(await c.ping()).toBe('PONG');
    expect(await c.set('nr:a', '1')).toBe('OK');
    expect(await c.mSet({ 'nr:b': '2', 'nr:c': '3', 'nr:d': '4' })).toBe('OK');
    expect(await c.mGet(['nr:d', 'nr:a', 'nr:x', 'nr:b'])).toEqual(['4', '1', null, '2']);
    expect(await c.hSet('nr:h', { f: 'v' })).toBe(1);
    expect(await c.hGet('nr:h', 'f')).toBe('v');
    expect(await c.del(['nr:a', 'nr:b', 'nr:c', 'nr:d'])).toBe(4);
    for (const k of ['nr:h']) expect(await redisCommand(owner(k).port, 'EXISTS', k)).toBe(1);
    await expect(c.sendCommand(['CONFIG', 'GET', 'maxmemory'])).rejects.toThrow(/ERR keymux/);
    expect(await c.ping()).toBe('PONG'); // still usable after a refusal
    await c.quit();
  });
});

describe('redis-cli', () => {
  const cli = (...args: string[]) => run('redis-cli', ['-p', String(proxy.port), ...args]).then((r) => r.stdout);

  it('runs one-shot commands', async () => {
    expect(await cli('SET', 'cli:k', 'hello')).toBe('OK\n');
    expect(await cli('GET', 'cli:k')).toBe('hello\n');
    expect(await cli('MGET', 'cli:k', 'cli:none')).toBe('hello\n\n');
    expect(await cli('--no-raw', 'MGET', 'cli:k', 'cli:none')).toBe('1) "hello"\n2) (nil)\n');
    expect(await cli('DBSIZE')).toMatch(/^\d+\n$/);
    expect(await redisCommand(owner('cli:k').port, 'GET', 'cli:k')).toBe('hello');
    expect(await cli('FOO', 'bar')).toMatch(/ERR unknown command 'FOO'/);
  });

  it('mass-inserts 5,000 keys with --pipe and every key is on its ring owner', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 5000; i++) lines.push(`SET pipe:${i} v${i}`);
    const child = execFile('redis-cli', ['-p', String(proxy.port), '--pipe']);
    const out = new Promise<string>((resolve, reject) => {
      let text = '';
      child.stdout?.on('data', (d) => {
        text += d;
      });
      child.on('exit', (code) =>
        code === 0 ? resolve(text) : reject(new Error(`redis-cli --pipe exited ${code}: ${text}`)),
      );
    });
    child.stdin?.end(`${lines.join('\r\n')}\r\n`);
    expect(await out).toMatch(/errors: 0, replies: 5000/);
    let misplaced = 0;
    for (let i = 0; i < 5000; i += 97)
      if ((await redisCommand(owner(`pipe:${i}`).port, 'GET', `pipe:${i}`)) !== `v${i}`) misplaced++;
    expect(misplaced).toBe(0);
  });
});
