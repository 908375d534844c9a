/**
 * `keymux import-twemproxy`, used for real: for several real-looking nutcracker.yml pools (weights, names, no
 * names, several hashes, hash tags, redis_auth, auto_eject_hosts, several pools in one file) a real nutcracker
 * runs the original, the real CLI imports it, and a keymux runs the import over the same redis-servers. 10,000
 * keys written through nutcracker are all read back through keymux, and 10,000 written through keymux are all read
 * back through nutcracker, each with its value. A pool listening on a unix socket ("/path 0666") becomes
 * listen_unix, and keymux serves clients over that socket. Pools keymux cannot serve the same way (unix-socket
 * servers, modula, memcached, redis_db) are refused with a clear message, exit code 1 and nothing on stdout; a
 * file with several pools needs --pool. `--verify` finds a key that is not where the ring puts it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfigText } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import { Redis } from 'ioredis';
import { startNutcracker } from '../support/nutcracker.js';
import { freePort } from '../support/ports.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import '../support/keymux.js'; // silences keymux's logs in this process
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const run = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
const PASSWORD = 'tw-s3cret';
/** A password YAML 1.2 reads as the integer 123 when unquoted; nutcracker reads the text. */
const NUMERIC_PASSWORD = '0123';
let dir: string;
let plain: RedisProcess[] = [];
let secured: RedisProcess[] = [];
let numeric: RedisProcess[] = [];

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  dir = makeTempDir('keymux-import-');
  [plain, secured, numeric] = await Promise.all([
    Promise.all([0, 1, 2, 3].map(() => startRedis())),
    Promise.all([0, 1, 2].map(() => startRedis({ password: PASSWORD }))),
    Promise.all([0, 1].map(() => startRedis({ password: NUMERIC_PASSWORD }))),
  ]);
});
afterAll(async () => {
  await Promise.all([...plain, ...secured, ...numeric].map((r) => r.stop()));
  removeTempDir(dir);
});

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function importCli(text: string, args: string[] = []): Promise<CliResult> {
  const file = path.join(dir, `nutcracker-${Math.random().toString(36).slice(2)}.yml`);
  fs.writeFileSync(file, text);
  return run(process.execPath, [BIN, 'import-twemproxy', file, ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/** Keys of many shapes: plain, {tagged}, [tagged], empty tags, and random bytes. */
function keys(prefix: string, n: number): Buffer[] {
  let seed = 0x9e3779b9 ^ prefix.length;
  const rand = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out: Buffer[] = [];
  for (let i = 0; out.length < n; i++) {
    const kind = i % 6;
    if (kind === 0) out.push(Buffer.from(`${prefix}:user:${i}`));
    else if (kind === 1) out.push(Buffer.from(`${prefix}:{grp${i % 53}}:item:${i}`));
    else if (kind === 2) out.push(Buffer.from(`${prefix}:[grp${i % 31}]:${i}`));
    else if (kind === 3) out.push(Buffer.from(`${prefix}:{}:${i}`));
    else if (kind === 4) out.push(Buffer.from(`${prefix}:order:${i}:line`));
    else {
      const b = Buffer.alloc(4 + Math.floor(rand() * 20));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(rand() * 256);
      out.push(Buffer.concat([Buffer.from(`${prefix}:`), b]));
    }
  }
  return out;
}

async function writeAll(port: number, ks: Buffer[], password: string | null): Promise<void> {
  const auth = password === null ? [] : [['AUTH', password]];
  const replies = await redisCommands(port, [...auth, ...ks.map((k, i) => ['SET', k, `value-${i}`])], {
    timeoutMs: 30_000,
  });
  const bad = replies.slice(auth.length).filter((r) => r !== 'OK');
  expect(bad.slice(0, 3), `SETs through port ${port}`).toEqual([]);
}

/** Reads every key through `port`; returns the keys whose value is missing or wrong. */
async function missing(port: number, ks: Buffer[], password: string | null): Promise<string[]> {
  const auth = password === null ? [] : [['AUTH', password]];
  const replies = await redisCommands(port, [...auth, ...ks.map((k) => ['GET', k])], { timeoutMs: 30_000 });
  const out: string[] = [];
  replies.slice(auth.length).forEach((v, i) => {
    if (v !== `value-${i}`) out.push(`${ks[i].toString('hex')}: ${String(v)}`);
  });
  return out;
}

interface Scenario {
  title: string;
  servers: () => RedisProcess[];
  /** The pool's directives other than listen and servers. */
  directives: string[];
  /** Server lines (host:port:weight [name]) for the backends. */
  serverLines: (rs: RedisProcess[]) => string[];
  password: string | null;
  /** Extra pools written before and after the imported one ("keymux" is always the imported pool's name). */
  otherPools?: string;
}

const SCENARIOS: Scenario[] = [
  {
    title: 'fnv1a_64, hash_tag {}, named servers with weights 1,2,1,3, auto_eject_hosts, timeout',
    servers: () => plain,
    directives: [
      'hash: fnv1a_64',
      'hash_tag: "{}"',
      'distribution: ketama',
      'auto_eject_hosts: true',
      'server_retry_timeout: 2000',
      'server_failure_limit: 3',
      'timeout: 30000', // nutcracker's own reply timeout: generous, so a loaded machine cannot fail it
      'backlog: 1024',
      'preconnect: true',
      'redis: true',
      'server_connections: 2',
    ],
    serverLines: (rs) => rs.map((r, i) => `${r.address}:${[1, 2, 1, 3][i]} cache-${['d', 'alpha', 'b', 'c'][i]}`),
    password: null,
  },
  {
    title: 'murmur, no hash_tag, unnamed servers, equal weights, in a file with three pools',
    servers: () => plain,
    directives: ['hash: murmur', 'redis: true', 'client_connections: 0'],
    serverLines: (rs) => rs.map((r) => `${r.address}:1`),
    password: null,
    otherPools: 'sessions',
  },
  {
    title: 'md5, hash_tag [], unnamed servers with weights 3,1,2, redis_auth',
    servers: () => secured,
    directives: ['hash: md5', 'hash_tag: "[]"', 'redis: true', `redis_auth: ${PASSWORD}`, 'redis_db: 0'],
    serverLines: (rs) => rs.map((r, i) => `${r.address}:${[3, 1, 2][i]}`),
    password: PASSWORD,
  },
  {
    // Unquoted, both read as integers by YAML 1.2 (123 and 0); nutcracker uses the text as written.
    title: 'crc32a, redis_auth 0123 and hash_tag 00 unquoted (text as written, not numbers)',
    servers: () => numeric,
    directives: ['hash: crc32a', 'hash_tag: 00', 'redis: true', `redis_auth: ${NUMERIC_PASSWORD}`],
    serverLines: (rs) => rs.map((r) => `${r.address}:1`),
    password: NUMERIC_PASSWORD,
  },
  {
    title: 'jenkins (default distribution), hash_tag {}, names on some servers only, tcpkeepalive',
    servers: () => plain.slice(0, 3),
    directives: ['hash: jenkins', 'hash_tag: "{}"', 'redis: true', 'tcpkeepalive: true'],
    serverLines: (rs) => [`${rs[0].address}:1 primary-a`, `${rs[1].address}:2`, `${rs[2].address}:1 z`],
    password: null,
  },
];

function poolText(name: string, listen: string, directives: string[], servers: string[]): string {
  return [
    `${name}:`,
    `  listen: ${listen}`,
    ...directives.map((d) => `  ${d}`),
    '  servers:',
    ...servers.map((s) => `   - ${s}`),
    '',
  ].join('\n');
}

describe('keymux import-twemproxy places every key where nutcracker does', () => {
  for (const [n, sc] of SCENARIOS.entries()) {
    it(sc.title, async () => {
      const rs = sc.servers();
      await Promise.all(
        rs.map((r) => redisCommands(r.port, [...(sc.password ? [['AUTH', sc.password]] : []), ['FLUSHALL']])),
      );
      const serverLines = sc.serverLines(rs);
      const [otherPort, memcachePort] = [await freePort(), await freePort()];
      const fileFor = (port: number): string => {
        // A free port asked for later can be one of these (released when asked): startNutcracker then tries another.
        if (port === otherPort || port === memcachePort) throw new Error(`port ${port} is another pool's`);
        let text = poolText('keymux', `127.0.0.1:${port}`, sc.directives, serverLines);
        if (sc.otherPools !== undefined) {
          // Real files often hold a memcached pool and another redis pool: they must not get in the way.
          text =
            poolText(
              sc.otherPools,
              `127.0.0.1:${otherPort}`,
              ['hash: fnv1a_64', 'distribution: modula'],
              ['127.0.0.1:11211:1'],
            ) +
            text +
            poolText('memcache', `127.0.0.1:${memcachePort}`, ['hash: md5'], ['127.0.0.1:11212:1 mc1']);
        }
        return text;
      };
      const nc = await startNutcracker({ hash: 'unused', servers: [], config: fileFor });
      const proxyHolder: { proxy: Proxy | null } = { proxy: null };
      try {
        const args = ['--listen', '127.0.0.1:0', '--admin', 'none'];
        if (sc.otherPools !== undefined) {
          const ambiguous = await importCli(nc.configText, args);
          expect(ambiguous.code).toBe(2);
          expect(ambiguous.stdout).toBe('');
          expect(ambiguous.stderr).toMatch(/has 3 pools/);
          for (const p of [sc.otherPools, 'keymux', 'memcache']) expect(ambiguous.stderr).toContain(`  ${p} (line`);
          args.push('--pool', 'keymux');
        }
        const imported = await importCli(nc.configText, args);
        expect(imported.stderr).not.toMatch(/cannot be imported/);
        expect(imported.code).toBe(0);
        const parsed = parseConfigText(imported.stdout, `import ${n}`);
        expect(parsed.errors).toBeUndefined();
        const config = parsed.config!;
        expect(config.mode).toBe('ring');
        expect(config.shards.map((s) => s.weight)).toEqual(serverLines.map((l) => Number(/:(\d+)(?: |$)/.exec(l)![1])));
        const proxy = await Proxy.start(config, { builtinCommandTable: true });
        proxyHolder.proxy = proxy;
        for (let i = 0; i < 400 && !proxy.topology.shards.every((s) => s.pool.healthy); i++) {
          await new Promise((r) => setTimeout(r, 25)); // start-up connects asynchronously; nothing to await
        }

        const viaTwemproxy = keys(`tw${n}`, 10_000);
        const viaKeymux = keys(`km${n}`, 10_000);
        await writeAll(nc.port, viaTwemproxy, sc.password);
        expect(await missing(proxy.port, viaTwemproxy, sc.password), 'written via nutcracker, read via keymux').toEqual(
          [],
        );
        await writeAll(proxy.port, viaKeymux, sc.password);
        expect(await missing(nc.port, viaKeymux, sc.password), 'written via keymux, read via nutcracker').toEqual([]);
        // Not vacuous: the keys are spread over every server.
        const sizes = await Promise.all(
          rs.map(async (r) => {
            const replies = await redisCommands(r.port, [...(sc.password ? [['AUTH', sc.password]] : []), ['DBSIZE']]);
            return Number(replies[replies.length - 1]);
          }),
        );
        expect(sizes.reduce((a, b) => a + b, 0)).toBe(20_000);
        for (const s of sizes) expect(s).toBeGreaterThan(1000);
      } finally {
        await proxyHolder.proxy?.close();
        await nc.stop();
      }
    });
  }

  it('maps listen, hash, hash_tag, weights, names, redis_auth and timeouts, and says what it cannot carry over', async () => {
    const text = poolText(
      'web',
      '0.0.0.0:22121',
      [
        'hash: fnv1a_64',
        'redis: true',
        'redis_auth: pw',
        'timeout: 400',
        'auto_eject_hosts: true',
        'backlog: 2048',
        'client_connections: 500',
      ],
      ['10.0.0.1:6379:2 web-1', 'redis-2.internal:6379:1'],
    );
    const r = await importCli(text);
    expect(r.code).toBe(0);
    const c = parseConfigText(r.stdout, 'import').config!;
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 22121 });
    expect(c.admin).toMatchObject({ host: '127.0.0.1', port: 9121, tokenFile: null });
    expect(c.hashTag).toBeNull(); // twemproxy hashes the whole key without hash_tag; keymux's default is "{}"
    expect(c.ring.hash).toBe('fnv1a_64');
    expect(c.shards.map((s) => [s.name, s.named, s.address, s.weight])).toEqual([
      ['web-1', true, '10.0.0.1:6379', 2],
      ['redis-2.internal:6379', false, 'redis-2.internal:6379', 1],
    ]);
    expect(c.backend.password).toBe('pw');
    expect(c.clients.password).toBe('pw');
    expect(c.backend.timeoutMs).toBe(400);
    expect(c.backend.connectTimeoutMs).toBe(400);
    expect(c.clients.max).toBe(500);
    expect(r.stdout).toMatch(/# Not carried over[\s\S]*auto_eject_hosts: true/);
    expect(r.stdout).toMatch(/backlog: 2048/);
    expect(r.stderr).toMatch(/note: .*:\d+: pool web: auto_eject_hosts/);
    expect(r.stderr).toMatch(/note: .*:\d+: pool web: backlog 2048/);
  });

  it('maps a unix-socket listen "/path MODE" to listen_unix, and keymux serves the imported pool over it', async () => {
    const sock = path.join(dir, 'nutcracker.sock');
    const servers = plain.slice(0, 2).map((r) => `${r.address}:1`);
    const imported = await importCli(poolText('sock', `${sock} 0666`, ['redis: true'], servers));
    expect(imported.code).toBe(0);
    const c = parseConfigText(imported.stdout, 'import').config!;
    expect(c.listen).toBeNull(); // as nutcracker: the socket only
    expect(c.listenUnix).toEqual({ path: sock, mode: 0o666 });
    expect(imported.stdout).toContain(`listen_unix: { path: ${sock}, mode: "0666" }`);
    // No mode: as created; --listen adds a TCP port beside the socket.
    const both = await importCli(poolText('sock', sock, ['redis: true'], servers), ['--listen', '127.0.0.1:6390']);
    expect(both.code).toBe(0);
    const b = parseConfigText(both.stdout, 'import').config!;
    expect(b.listen).toEqual({ host: '127.0.0.1', port: 6390 });
    expect(b.listenUnix).toEqual({ path: sock, mode: null });

    const proxy = await Proxy.start({ ...c, admin: null }, { builtinCommandTable: true });
    const client = new Redis({ path: sock });
    try {
      expect(fs.statSync(sock).mode & 0o777).toBe(0o666);
      expect(await client.set('from-twemproxy', 'v')).toBe('OK');
      expect(await client.get('from-twemproxy')).toBe('v');
    } finally {
      client.disconnect();
      await proxy.close();
    }
    expect(fs.existsSync(sock)).toBe(false);
  });

  it('reads string directives as written: redis_auth 1e3 and 0x1F, a pool named 007', async () => {
    for (const auth of ['1e3', '0x1F', '0123', '"0123"', "'1e3'"]) {
      const r = await importCli(poolText('007', '127.0.0.1:22121', ['redis: true', `redis_auth: ${auth}`], ['h:1:1']));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const password = auth.replace(/^["']|["']$/g, '');
      expect(parseConfigText(r.stdout, 'import').config!.backend.password, auth).toBe(password);
    }
    const twoPools =
      poolText('007', '127.0.0.1:22121', ['redis: true'], ['h:1:1']) +
      poolText('7', '127.0.0.1:22122', ['redis: true'], ['h:2:1']);
    const both = await importCli(twoPools);
    expect(both.stderr).toContain('  007 (line 1');
    expect(both.stderr).toContain('  7 (line 6');
    const one = await importCli(twoPools, ['--pool', '007']);
    expect(one.code).toBe(0);
    expect(parseConfigText(one.stdout, 'import').config!.shards.map((sh) => sh.address)).toEqual(['h:1']);
  });

  it('refuses what would place keys differently or cannot be served, with file:line, exit 1 and no output', async () => {
    const cases: Array<[string, string, RegExp]> = [
      [
        'unix socket servers',
        poolText('a', '127.0.0.1:22121', ['redis: true'], ['/var/run/redis/redis.sock:1 s1', '127.0.0.1:7001:1 s2']),
        /:5: pool a: server "\/var\/run\/redis\/redis.sock:1 s1": a unix socket server: keymux connects to shards over TCP only/,
      ],
      [
        'unix socket listen with a mode that is not octal',
        poolText('a', '/var/run/nutcracker.sock 0866', ['redis: true'], ['127.0.0.1:7001:1']),
        /:2: pool a: listen "\/var\/run\/nutcracker.sock 0866": expected "\/path\/to.sock" or "\/path\/to.sock MODE" with an octal MODE up to 0777/,
      ],
      [
        'modula',
        poolText('a', '127.0.0.1:22121', ['redis: true', 'distribution: modula'], ['127.0.0.1:7001:1']),
        /:4: pool a: distribution modula: keymux places keys with ketama only/,
      ],
      [
        'random',
        poolText('a', '127.0.0.1:22121', ['redis: true', 'distribution: random'], ['127.0.0.1:7001:1']),
        /distribution random/,
      ],
      [
        'memcached pool',
        poolText('a', '127.0.0.1:22121', ['hash: fnv1a_64'], ['127.0.0.1:11211:1']),
        /:1: pool a: a memcached pool \(no "redis: true"; twemproxy defaults to memcached\): keymux speaks Redis only/,
      ],
      [
        'redis_db',
        poolText('a', '127.0.0.1:22121', ['redis: true', 'redis_db: 3'], ['127.0.0.1:7001:1']),
        /:4: pool a: redis_db 3: .*keymux always uses database 0/,
      ],
      [
        'unknown directive',
        poolText('a', '127.0.0.1:22121', ['redis: true', 'sentinels: x'], ['127.0.0.1:7001:1']),
        /:4: pool a: unknown directive "sentinels"/,
      ],
      [
        'same address twice under two names',
        poolText('a', '127.0.0.1:22121', ['redis: true'], ['127.0.0.1:7001:1 x', '127.0.0.1:7001:1 y']),
        /pool a: keymux cannot express this pool: .*duplicate/i,
      ],
    ];
    for (const [what, text, want] of cases) {
      const r = await importCli(text);
      expect(r.code, what).toBe(1);
      expect(r.stdout, what).toBe('');
      expect(r.stderr, what).toMatch(/cannot be imported as it is/);
      expect(r.stderr, what).toMatch(want);
    }
  });

  it('--verify samples the servers and finds a key that is not where the ring puts it', async () => {
    const rs = plain.slice(0, 2);
    await Promise.all(rs.map((r) => redisCommands(r.port, [['FLUSHALL']])));
    const text = poolText(
      'v',
      '127.0.0.1:22121',
      ['redis: true', 'hash: fnv1a_64'],
      rs.map((r) => `${r.address}:1`),
    );
    const first = await importCli(text, ['--verify']);
    expect(first.code).toBe(0);
    const config = parseConfigText(first.stdout, 'v').config!;
    const proxy = await Proxy.start(
      { ...config, listen: { host: '127.0.0.1', port: 0 }, admin: null },
      {
        builtinCommandTable: true,
      },
    );
    try {
      for (let i = 0; i < 400 && !proxy.topology.shards.every((s) => s.pool.healthy); i++) {
        await new Promise((r) => setTimeout(r, 25)); // start-up connects asynchronously; nothing to await
      }
      const ks = keys('verify', 3000);
      await writeAll(proxy.port, ks, null);
    } finally {
      await proxy.close();
    }
    const good = await importCli(text, ['--verify', '--sample', '100000']);
    expect(good.code).toBe(0);
    expect(good.stderr).toMatch(
      /verify: 3,000 sampled keys on 2 servers \(every key of every server\), every one on the server keymux routes it to/,
    );
    // A key written straight to a server the ring does not give it (what auto_eject_hosts leaves behind).
    // Candidates of many shapes (random bytes among them): similar keys such as "stray:0".."stray:49" can all hash
    // to one side of a two-server fnv1a_64 ring.
    const router = (await import('../../src/routing/router.js')).buildRouter(config);
    const wrong = keys('stray', 500).find((k) => router.shardFor(k) === 0);
    expect(wrong, 'a candidate key that the ring gives the first server').toBeDefined();
    await redisCommands(rs[1].port, [['SET', wrong!, 'x']]);
    const bad = await importCli(text, ['--verify', '--sample', '100000']);
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(new RegExp(`on ${rs[1].address}, routed to ${rs[0].address}: about 1\\b`));
  });
});
