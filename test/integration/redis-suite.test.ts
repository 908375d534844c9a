// Redis's own test suite (tests/ of Redis 7.0.15, run by ../shared/tools/redis-suite.sh in external-server mode)
// strictly through keymux: every command, the suite's own set-up included (FLUSHALL, FUNCTION FLUSH, CONFIG
// SET), goes to keymux in slots mode over three shards, with commands.config_broadcast on, commands.scripts:
// isolated and commands.ping: shards (the suite's BUSY tests run a script for ever and wait for PING to say BUSY).
// Each unit gets fresh shards and a fresh keymux (a unit that leaves a runaway script or odd settings behind cannot
// spoil the next), and units run in two lanes at once to fit CI. The test fails when any unit passes fewer tests than its floor in
// test/redis-suite-floors.json, and when the runner is missing (CI has it; say where with REDIS_SUITE_DIR).
// REDIS_SUITE_WRITE_FLOORS=1 rewrites the floors file with the counts measured (after a change that passes more).
// REDIS_SUITE_MODE=ring runs the same units through ring mode (three shards named a, b, c, so every run puts each
// key on the same shard whatever ports the shards got) against the floors' own ring_units section;
// REDIS_SUITE_MODE=cluster runs them through cluster mode: a fresh real Redis Cluster per unit (3 masters made by
// redis-cli --cluster create), keymux in mode: cluster with the same commands settings, and the runner's
// CLUSTER_MODE=1 (the suite's --cluster-mode, which skips its tests of keys in several slots), against the floors'
// own cluster_units section.
// The floors file's order_races names, per unit, the few tests whose outcome depends on the order in which a shard
// reads two of keymux's connections (a blocking command on its session connection, another client's write sent at
// once on the shared one; README, Redis's own test suite): such a test failing with the error of that other order
// counts towards the floor; failing any other way, or any other test failing, does not.
import { afterAll, describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startRedis, type RedisProcess } from '../support/redis.js';
import { ringConfig, slotsConfig, startKeymux, type ConfigObject } from '../support/keymux.js';
import { startCluster, type RedisCluster } from '../support/cluster.js';
import { freePort } from '../support/ports.js';
import type { Proxy } from '../../src/proxy.js';

const FLOORS_FILE = path.resolve('test/redis-suite-floors.json');
const UNITS = [
  'unit/keyspace',
  'unit/type/string',
  'unit/type/incr',
  'unit/type/list',
  'unit/type/set',
  'unit/type/zset',
  'unit/type/hash',
  'unit/expire',
  'unit/multi',
  'unit/pubsub',
  'unit/scripting',
  'unit/functions',
  'unit/scan',
  'unit/sort',
  'unit/dump',
  'unit/type/stream',
  'unit/type/stream-cgroups',
  'unit/protocol',
  'unit/info-command',
  'unit/type/list-2',
  'unit/other',
  'unit/quit',
  'unit/introspection-2',
  'unit/introspection',
  'unit/bitops',
  'unit/bitfield',
  'unit/geo',
];
const LANES = 2;
type SuiteMode = 'slots' | 'ring' | 'cluster';
/**
 * REDIS_SUITE_MODE=ring runs the same units through ring mode (fnv1a_64) instead of slots mode, against the
 * ring-mode floors; REDIS_SUITE_MODE=cluster through cluster mode, against the cluster-mode floors. Anything else is
 * refused rather than run as slots mode under a name that says otherwise.
 */
const MODE: SuiteMode = suiteMode(process.env.REDIS_SUITE_MODE);
/**
 * The floors file's section for this mode. Each mode places the suite's keys its own way (which tests meet keys on
 * different shards, or a script left running on the keyless shard, differs), and cluster mode also skips the suite's
 * multi-slot tests, so each has its own floors; the slots floors (CI's run) are `units`.
 */
const FLOORS_SECTION = ({ slots: 'units', ring: 'ring_units', cluster: 'cluster_units' } as const)[MODE];
/**
 * Ring mode's shards are named: an unnamed shard's points on the ring are hashed from its "host:port" (as in
 * twemproxy), and the shards' ports are free ports, different at every run, so each run would put the suite's keys
 * on different shards and pass a different number of tests (unit/multi passed 25 to 30 over five runs: how many of
 * its tests meet the script an earlier one leaves running on the keyless shard depends on where `xx`, `foo` and
 * `s{t}` land). With names the ring is the same at every run.
 */
const RING_SHARD_NAMES = ['a', 'b', 'c'];
const UNIT_TIMEOUT_S = 180;

function suiteMode(value: string | undefined): SuiteMode {
  if (value === undefined || value === '' || value === 'slots') return 'slots';
  if (value === 'ring' || value === 'cluster') return value;
  throw new Error(`REDIS_SUITE_MODE=${value}: expected slots, ring or cluster`);
}

/**
 * Where ../shared is: REDIS_SUITE_DIR, or next to the repository (main checkout) or to its parent (worktrees), or
 * next to the local repository this checkout was cloned from (a throw-away clone in a temporary directory).
 */
function sharedDir(): string | null {
  const candidates = [process.env.REDIS_SUITE_DIR, path.resolve('..', 'shared'), path.resolve('..', '..', 'shared')];
  const origin = spawnSync('git', ['config', '--get', 'remote.origin.url'], { encoding: 'utf8' }).stdout?.trim();
  if (origin !== undefined && path.isAbsolute(origin)) candidates.push(path.resolve(origin, '..', 'shared'));
  for (const dir of candidates) {
    if (dir !== undefined && fs.existsSync(path.join(dir, 'tools', 'redis-suite.sh'))) return dir;
  }
  return null;
}

interface UnitResult {
  unit: string;
  passed: number;
  failed: number;
  status: string;
  seconds: number;
  /** The runner's lines naming each failing test (VERBOSE=1), for the failure message. */
  failures: string[];
  /** Of those, the order races lost (see order_races), counted towards the floor. */
  orderRacesLost: number;
}

/** Parses the runner's line: "<unit> <p> passed <f> failed (<e> errors, <i> ignored, <s>s) <status>". */
function parseUnitLine(unit: string, out: string): UnitResult {
  const lines = out.split('\n');
  const line = lines.find((l) => l.startsWith(`${unit} `)) ?? '';
  const failures = lines.filter((l) => l.startsWith('    ')).map((l) => l.trim().slice(0, 240));
  const m = /^\S+\s+(\d+) passed\s+(\d+) failed \(\d+ errors, \d+ ignored, (\d+)s\) (.*)$/.exec(line);
  if (m === null) {
    const status = `no result line in: ${out.slice(-400)}`;
    return { unit, passed: 0, failed: 0, status, seconds: 0, failures, orderRacesLost: 0 };
  }
  const [passed, failed, seconds, status] = [Number(m[1]), Number(m[2]), Number(m[3]), m[4]];
  return { unit, passed, failed, seconds, status, failures, orderRacesLost: 0 };
}

/**
 * A test whose outcome depends on the order in which a shard reads two connections that no client orders (see
 * order_races in the floors file): its name, and what its failure line says when the other order won.
 */
interface OrderRace {
  test: string;
  fails_with: string;
}

/** The failure lines of `result` that are one of its unit's order races lost (named test, that race's error). */
function lostOrderRaces(result: UnitResult, races: Record<string, OrderRace[]>): string[] {
  const own = races[result.unit] ?? [];
  return result.failures.filter((line) =>
    own.some((race) => line.includes(` ${race.test} in tests/`) && line.includes(race.fails_with)),
  );
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (_e, out) =>
      resolve(String(out)),
    );
  });
}

/** What keymux needs in every mode: see the file comment (scripts, PING and CONFIG as the suite expects them). */
const SUITE_SETTINGS: ConfigObject = {
  commands: { config_broadcast: true, scripts: 'isolated', ping: 'shards' },
  // timeout_ms 10 s: some of the suite's scripts run for seconds on a loaded machine (cmsgpack), and keymux
  // times out a shard that stays silent longer than that (2 s by default).
  backend: { timeout_ms: 10_000 },
};

/** Fresh backends for one unit, the keymux config that reaches them, and how to stop them. */
interface Backends {
  config: ConfigObject;
  stop(): Promise<void>;
}

async function startBackends(): Promise<Backends> {
  if (MODE === 'cluster') {
    // No replicas: the suite writes and reads on masters only, and a replica would only add a sync per unit.
    // cluster-node-timeout at Redis's default (15 s, not the harness's 1 s): no node of this cluster is ever meant
    // to fail (there is no replica to promote), and with 1 s a master slowed down on a loaded machine (the suite's
    // scripts keep one busy for seconds) could be marked failed, and the cluster refuse everything as CLUSTERDOWN.
    const cluster: RedisCluster = await startCluster({ masters: 3, replicasPerMaster: 0, nodeTimeoutMs: 15_000 });
    return {
      config: { mode: 'cluster', cluster: { seeds: cluster.seeds() }, ...SUITE_SETTINGS },
      stop: () => cluster.stop(),
    };
  }
  const shards: RedisProcess[] = await Promise.all([startRedis(), startRedis(), startRedis()]);
  const ports = shards.map((s) => s.port);
  return {
    config:
      MODE === 'ring'
        ? ringConfig(ports, {
            shards: ports.map((port, i) => ({ name: RING_SHARD_NAMES[i], address: `127.0.0.1:${port}` })),
            ...SUITE_SETTINGS,
          })
        : slotsConfig(ports, SUITE_SETTINGS),
    stop: async () => {
      await Promise.all(shards.map((s) => s.stop('SIGKILL')));
    },
  };
}

/** One unit against fresh backends and a fresh keymux. */
async function runUnit(runner: string, tree: string, unit: string): Promise<UnitResult> {
  const backends = await startBackends();
  let proxy: Proxy | null = null;
  try {
    proxy = await startKeymux(backends.config);
    const out = await run(
      runner,
      ['127.0.0.1', String(proxy.port), tree],
      {
        UNITS: unit,
        CTRL_PORT: String(await freePort()),
        UNIT_TIMEOUT: String(UNIT_TIMEOUT_S),
        VERBOSE: '1',
        CLUSTER_MODE: MODE === 'cluster' ? '1' : '0',
      },
      (UNIT_TIMEOUT_S + 60) * 1000,
    );
    return parseUnitLine(unit, out);
  } finally {
    await proxy?.close();
    await backends.stop();
  }
}

const results: UnitResult[] = [];

afterAll(() => {
  if (results.length === 0) return;
  const rows = results.map(
    (r) =>
      `${r.unit.padEnd(26)} ${String(r.passed).padStart(4)} passed ${String(r.failed).padStart(4)} failed ` +
      `${String(r.seconds).padStart(4)}s ${r.status}` +
      (r.orderRacesLost > 0 ? ` (${r.orderRacesLost} of the failed: order races lost)` : ''),
  );
  console.log(
    `Redis test suite through keymux (${MODE} mode, ${MODE === 'cluster' ? '3 masters' : '3 shards'}):\n${rows.join('\n')}`,
  );
});

describe("Redis's own test suite through keymux", () => {
  it(
    'passes at least the recorded floor of every unit',
    async () => {
      const shared = sharedDir();
      if (shared === null) {
        throw new Error(
          'the Redis test-suite runner is missing: expected ../shared/tools/redis-suite.sh and ../shared/redis-7.0.15 ' +
            '(set REDIS_SUITE_DIR to the folder holding tools/ and redis-7.0.15/)',
        );
      }
      const runner = path.join(shared, 'tools', 'redis-suite.sh');
      const tree = path.join(shared, 'redis-7.0.15');
      expect(fs.existsSync(path.join(tree, 'tests', 'test_helper.tcl')), `${tree}/tests/test_helper.tcl`).toBe(true);
      const floorsFile = JSON.parse(fs.readFileSync(FLOORS_FILE, 'utf8')) as Record<string, unknown>;
      const floors = (floorsFile[FLOORS_SECTION] ?? {}) as Record<string, number>;
      const races = (floorsFile.order_races ?? {}) as Record<string, OrderRace[]>;
      const queue = [...UNITS];
      const lane = async (): Promise<void> => {
        for (let unit = queue.shift(); unit !== undefined; unit = queue.shift())
          results.push(await runUnit(runner, tree, unit));
      };
      await Promise.all(Array.from({ length: LANES }, lane));
      results.sort((a, b) => UNITS.indexOf(a.unit) - UNITS.indexOf(b.unit));
      // A lost order race counts as passed (see order_races), when recording floors too.
      for (const r of results) r.orderRacesLost = lostOrderRaces(r, races).length;
      const counted = (r: UnitResult): number => r.passed + r.orderRacesLost;
      if (process.env.REDIS_SUITE_WRITE_FLOORS === '1') {
        const units = Object.fromEntries(results.map((r) => [r.unit, counted(r)]));
        fs.writeFileSync(FLOORS_FILE, `${JSON.stringify({ ...floorsFile, [FLOORS_SECTION]: units }, null, 2)}\n`);
      }
      const below = results
        .filter((r) => counted(r) < (floors[r.unit] ?? Number.POSITIVE_INFINITY))
        .map(
          (r) =>
            `${r.unit}: ${r.passed} passed + ${counted(r) - r.passed} order races lost, floor ` +
            `${floors[r.unit] ?? 'missing'} (${r.status})\n  ` +
            r.failures.slice(0, 10).join('\n  '),
        );
      expect(below).toEqual([]);
    },
    15 * 60_000,
  );
});
