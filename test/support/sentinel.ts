/**
 * Real Redis Sentinel deployments for tests: per master a primary redis-server with replicas (`--replicaof`), and
 * N redis-sentinel processes monitoring every master (quorum 2), all on free loopback ports, started and stopped
 * by the test (processes of this module only, by PID). Small down-after-milliseconds and failover-timeout make a
 * failover take ~1-3 s; SENTINEL DEBUG shortens the INFO period (conversions of a returning old primary) and
 * lengthens the stall that puts a sentinel in TILT mode (see startSentinel). `ready()` waits until every sentinel sees every replica and the other sentinels (so a
 * failover can be elected), `killPrimary` sends SIGKILL, `waitForPrimary` polls the sentinels until they name
 * another primary. With `password` the sentinels require it (`requirepass`: clients and the sentinels among
 * themselves); the helpers AUTH with `setup.password`, which a test rotating the password changes (`command`
 * sends one command to one sentinel with it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from './ports.js';
import { redisCommands, startRedis, type RedisProcess } from './redis.js';
import { makeTempDir } from './tmpdirs.js';

export interface SentinelProcess {
  port: number;
  address: string;
  dir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export interface SentinelMaster {
  name: string;
  /** The nodes started for this master (the first started as primary). The current primary: primaryOf(). */
  nodes: RedisProcess[];
}

export interface SentinelSetup {
  sentinels: SentinelProcess[];
  masters: SentinelMaster[];
  /** "host:port" of every sentinel (for keymux's config). */
  addresses(): string[];
  /** The node the sentinels name as `name`'s primary now (asks the first sentinel that answers). */
  primaryAddress(name: string): Promise<string>;
  node(address: string): RedisProcess;
  /** Polls until the sentinels name a primary for `name` other than `old`; returns it and how long it took. */
  waitForPrimary(name: string, old: string, timeoutMs?: number): Promise<{ address: string; ms: number }>;
  /** Polls until every sentinel knows `replicas` healthy replicas of `name` and the other sentinels. */
  ready(name: string, replicas: number, timeoutMs?: number): Promise<void>;
  /** The password the helpers AUTH with (null: none); a test rotating the sentinels' password sets it. */
  password: string | null;
  /** One command to the sentinel at `port`, after AUTH with `password` when set; an error reply rejects. */
  command(port: number, ...args: string[]): Promise<unknown>;
  stop(): Promise<void>;
}

export interface SentinelSetupOptions {
  masters: Array<{ name: string; replicas: number }>;
  sentinels?: number;
  downAfterMs?: number;
  failoverTimeoutMs?: number;
  /** The sentinels' `requirepass` (null or absent: none). */
  password?: string | null;
}

const poll = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms)); // no event to await: polling

/** `commands` to a sentinel, after AUTH when `password` is set (its reply is left out of the result). */
async function sentinelCommands(
  port: number,
  password: string | null,
  commands: string[][],
  opts: { timeoutMs?: number } = {},
): Promise<unknown[]> {
  if (password === null) return redisCommands(port, commands, opts);
  const [auth, ...replies] = await redisCommands(port, [['AUTH', password], ...commands], opts);
  if (auth instanceof Error) throw auth;
  return replies;
}

async function startSentinel(monitors: Array<{ name: string; port: number }>, o: SentinelSetupOptions) {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const dir = makeTempDir(`keymux-sentinel-${port}-`);
    const conf = path.join(dir, 'sentinel.conf');
    const lines = [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      'daemonize no',
      `dir ${dir}`,
      `logfile ${path.join(dir, 'sentinel.log')}`,
      'loglevel notice',
    ];
    if ((o.password ?? null) !== null) lines.push(`requirepass ${o.password}`);
    for (const m of monitors) {
      lines.push(
        `sentinel monitor ${m.name} 127.0.0.1 ${m.port} 2`,
        `sentinel down-after-milliseconds ${m.name} ${o.downAfterMs ?? 1000}`,
        `sentinel failover-timeout ${m.name} ${o.failoverTimeoutMs ?? 3000}`,
        `sentinel parallel-syncs ${m.name} 1`,
      );
    }
    fs.writeFileSync(conf, lines.join('\n') + '\n');
    const child = spawn('redis-sentinel', [conf], { stdio: 'ignore' });
    const s: SentinelProcess = {
      port,
      address: `127.0.0.1:${port}`,
      dir,
      process: child,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((res) => child.once('exit', () => res()));
        child.kill('SIGKILL');
        await exited;
      },
    };
    try {
      for (let i = 0; ; i++) {
        if (child.exitCode !== null) throw new Error(`redis-sentinel on ${port} exited at start`);
        try {
          const [pong] = await sentinelCommands(port, o.password ?? null, [['PING']], { timeoutMs: 500 });
          if (String(pong) === 'PONG') {
            // A restarted old primary is converted to a replica once it has reported itself a primary for 4 hello
            // periods, at the next INFO: hello every 500 ms (not 2 s) and INFO every 1 s (not 10 s) make that ~3 s
            // instead of ~10. TILT only after a 10 s stall (not 2 s): on a loaded 2-core CI machine a sentinel
            // that missed its 100 ms timer for 2 s would otherwise stop acting for 30 s.
            const [ok] = await sentinelCommands(
              port,
              o.password ?? null,
              [['SENTINEL', 'DEBUG', 'info-period', '1000', 'publish-period', '500', 'tilt-trigger', '10000']],
              { timeoutMs: 500 },
            );
            if (String(ok) !== 'OK') throw new Error(`SENTINEL DEBUG on ${port}: ${String(ok)}`);
            return s;
          }
        } catch {
          /* not up yet */
        }
        if (i > 200) throw new Error(`redis-sentinel on ${port} did not become ready`);
        await poll(25);
      }
    } catch (err) {
      await s.stop();
      if (attempt >= 3) throw err;
    }
  }
}

export async function startSentinels(o: SentinelSetupOptions): Promise<SentinelSetup> {
  const masters: SentinelMaster[] = [];
  for (const m of o.masters) {
    const primary = await startRedis();
    const nodes = [primary];
    for (let i = 0; i < m.replicas; i++) {
      nodes.push(await startRedis({ args: ['--replicaof', '127.0.0.1', String(primary.port)] }));
    }
    masters.push({ name: m.name, nodes });
  }
  const sentinels: SentinelProcess[] = [];
  for (let i = 0; i < (o.sentinels ?? 3); i++) {
    sentinels.push(
      await startSentinel(
        masters.map((m) => ({ name: m.name, port: m.nodes[0]!.port })),
        o,
      ),
    );
  }
  const all = masters.flatMap((m) => m.nodes);
  const ask = async (cmd: string[]): Promise<unknown> => {
    for (const s of sentinels) {
      try {
        const [r] = await sentinelCommands(s.port, setup.password, [cmd], { timeoutMs: 500 });
        if (!(r instanceof Error)) return r;
      } catch {
        /* next sentinel */
      }
    }
    throw new Error('no sentinel answered');
  };
  const setup: SentinelSetup = {
    sentinels,
    masters,
    addresses: () => sentinels.map((s) => s.address),
    async primaryAddress(name) {
      const r = (await ask(['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name])) as unknown[];
      return `${String(r[0])}:${String(r[1])}`;
    },
    node(address) {
      const n = all.find((x) => x.address === address);
      if (n === undefined) throw new Error(`no node ${address}`);
      return n;
    },
    async waitForPrimary(name, old, timeoutMs = 20_000) {
      const t0 = Date.now();
      while (Date.now() - t0 < timeoutMs) {
        const now = await setup.primaryAddress(name).catch(() => old);
        if (now !== old) return { address: now, ms: Date.now() - t0 };
        await poll(50);
      }
      throw new Error(`the sentinels named no new primary for ${name} within ${timeoutMs} ms`);
    },
    async ready(name, replicas, timeoutMs = 30_000) {
      const t0 = Date.now();
      for (;;) {
        let ok = true;
        for (const s of sentinels) {
          try {
            const [master, reps] = await sentinelCommands(
              s.port,
              setup.password,
              [
                ['SENTINEL', 'MASTER', name],
                ['SENTINEL', 'REPLICAS', name],
              ],
              { timeoutMs: 500 },
            );
            const f = new Map<string, string>();
            const arr = master as unknown[];
            for (let i = 0; i + 1 < arr.length; i += 2) f.set(String(arr[i]), String(arr[i + 1]));
            const healthy = (reps as unknown[][]).filter((r) => {
              const g = new Map<string, string>();
              for (let i = 0; i + 1 < r.length; i += 2) g.set(String(r[i]), String(r[i + 1]));
              return g.get('master-link-status') === 'ok' && !/s_down|disconnected/.test(g.get('flags') ?? '');
            });
            if (Number(f.get('num-other-sentinels')) < sentinels.length - 1 || healthy.length < replicas) ok = false;
          } catch {
            ok = false;
          }
        }
        if (ok) return;
        if (Date.now() - t0 > timeoutMs) throw new Error(`sentinels not ready for ${name} within ${timeoutMs} ms`);
        await poll(100);
      }
    },
    password: o.password ?? null,
    async command(port, ...args) {
      const [r] = await sentinelCommands(port, setup.password, [args]);
      if (r instanceof Error) throw r;
      return r;
    },
    async stop() {
      await Promise.all(sentinels.map((s) => s.stop()));
      await Promise.all(all.map((n) => n.stop('SIGKILL').catch(() => undefined)));
    },
  };
  return setup;
}

/** INFO commandstats of a node as { command: calls } (e.g. { set: 12, get: 40 }). */
export async function commandCalls(port: number): Promise<Record<string, number>> {
  const [info] = await redisCommands(port, [['INFO', 'commandstats']]);
  const out: Record<string, number> = {};
  for (const m of String(info).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}
