/**
 * `keymux plan` and `POST /reload?dry_run=1` against live shards with known data, then the real reload: for
 * three real changes (add a shard, move a third of the slots, change a ring weight) the plan's estimate of the
 * keys and bytes that would move must match what the migration then really moves, within the margin the plan
 * prints; the slot and ring figures must match the configs exactly. A dry run changes nothing; a bad file gets the
 * same `file:line` errors as `keymux --check`; a second plan quotes the rate the first migration measured.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/config/load.js';
import { Proxy } from '../../src/proxy.js';
import type { PlanReport } from '../../src/migration/estimate.js';
import { redisCommands, startRedis, type RedisProcess } from '../support/redis.js';
import '../support/keymux.js'; // silences keymux's logs in this process
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const run = promisify(execFile);
const BIN = path.resolve('bin/keymux.js');
const KEYS = 20_000;
const SAMPLE = 1500;
let dir: string;
let redis: RedisProcess[] = [];

beforeAll(async () => {
  if (!fs.existsSync(path.resolve('dist/main.js'))) throw new Error('dist/ is missing: run `npm run build`');
  dir = makeTempDir('keymux-plan-');
  redis = await Promise.all([0, 1, 2, 3].map(() => startRedis()));
});
afterAll(async () => {
  await Promise.all(redis.map((r) => r.stop()));
  removeTempDir(dir);
});

type Obj = Record<string, unknown>;

function writeConfig(name: string, body: Obj): string {
  const file = path.join(dir, name);
  // A generous shard timeout: loading and migrating on a busy shared machine must not time out.
  const defaults = {
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    log: { level: 'silent' },
    backend: { timeout_ms: 30000 },
  };
  fs.writeFileSync(file, stringify({ ...defaults, ...body }));
  return file;
}

const slotsShards = (ranges: string[][]): Obj[] =>
  ranges.map((slots, i) => ({ name: 'abcd'[i], address: redis[i].address, slots }));

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [BIN, ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

async function getJson(url: string): Promise<any> {
  const res = await request(url);
  return res.body.json();
}

/** Every key on every shard with its MEMORY USAGE: key (latin1) -> [shard index, bytes]. */
async function placement(): Promise<Map<string, [number, number]>> {
  const out = new Map<string, [number, number]>();
  for (const [i, r] of redis.entries()) {
    let cursor = '0';
    const keys: Buffer[] = [];
    do {
      const [reply] = (await redisCommands(r.port, [['SCAN', cursor, 'COUNT', 5000]], { buffers: true })) as [
        [Buffer, Buffer[]],
      ];
      cursor = reply[0].toString();
      keys.push(...reply[1]);
    } while (cursor !== '0');
    if (keys.length === 0) continue;
    const sizes = await redisCommands(
      r.port,
      keys.map((k) => ['MEMORY', 'USAGE', k]),
      { timeoutMs: 30_000 },
    );
    keys.forEach((k, j) => out.set(k.toString('latin1'), [i, Number(sizes[j])]));
  }
  return out;
}

/** What really moved between two placements: keys and the bytes they had before moving. */
function moved(before: Map<string, [number, number]>, after: Map<string, [number, number]>): [number, number] {
  let keys = 0;
  let bytes = 0;
  for (const [k, [shard, size]] of before) {
    const now = after.get(k);
    expect(now, `key ${k} still exists`).toBeDefined();
    if (now![0] !== shard) {
      keys++;
      bytes += size;
    }
  }
  expect(after.size).toBe(before.size);
  return [keys, bytes];
}

/** Known data: KEYS keys with values of 20..600 bytes (deterministic), written through keymux. */
async function load(port: number): Promise<void> {
  const cmds: Array<Array<string | number>> = [];
  let seed = 12345;
  for (let i = 0; i < KEYS; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    cmds.push(['SET', `plan:${i % 7 === 0 ? `{grp${i % 101}}` : ''}key:${i}`, 'v'.repeat(20 + (seed % 580))]);
  }
  // In batches: keymux runs in this process, and one huge pipeline would hold its event loop for long.
  for (let i = 0; i < cmds.length; i += 2000) {
    const replies = await redisCommands(port, cmds.slice(i, i + 2000), { timeoutMs: 60_000 });
    expect(replies.filter((r) => r !== 'OK')).toEqual([]);
  }
}

/** Resolves once every shard of the proxy has a ready connection (start-up connects asynchronously). */
async function shardsReady(proxy: Proxy): Promise<void> {
  for (let i = 0; i < 400 && !proxy.topology.shards.every((s) => s.pool.healthy); i++) {
    await new Promise((r) => setTimeout(r, 25)); // connection readiness has no event on the proxy's surface
  }
  expect(proxy.topology.shards.every((s) => s.pool.healthy)).toBe(true);
}

async function waitMigrationDone(admin: string, after: number): Promise<Obj> {
  for (let i = 0; i < 1200; i++) {
    const shards = await getJson(`${admin}/shards`);
    const m = (shards.migrations as Obj[]).find((x) => (x.id as number) > after);
    if (m !== undefined && m.state === 'done') return m;
    await new Promise((r) => setTimeout(r, 50)); // the migration has no event an HTTP client can await
  }
  throw new Error('the migration did not finish');
}

interface Change {
  title: string;
  mode: 'slots' | 'ring';
  before: Obj;
  after: Obj;
  check: (report: PlanReport) => void;
}

const CHANGES: Change[] = [
  {
    title: 'slots: add a shard that takes a quarter of the slots from the other three',
    mode: 'slots',
    before: { mode: 'slots', shards: [] },
    after: { mode: 'slots', shards: [] },
    check: (r) => {
      expect(r.plan.added.map((s) => s.name)).toEqual(['d']);
      expect(r.plan.moves.map((m) => [m.from.name, m.to.name, m.slots, m.ranges])).toEqual([
        ['a', 'd', 1365, ['0-1364']],
        ['b', 'd', 1365, ['5461-6825']],
        ['c', 'd', 1365, ['10923-12287']],
      ]);
      expect(r.plan.movingShare).toBeCloseTo(4095 / 16384, 10);
    },
  },
  {
    title: 'slots: move a third of the slots (each shard hands a third of its own to the next)',
    mode: 'slots',
    before: { mode: 'slots', shards: [] },
    after: { mode: 'slots', shards: [] },
    check: (r) => {
      expect(r.plan.added).toEqual([]);
      expect(r.plan.changed.map((c) => [c.name, c.changes])).toEqual([
        ['a', ['slots 0-5460 -> 0-3640,14563-16383']],
        ['b', ['slots 5461-10922 -> 3641-9101']],
        ['c', ['slots 10923-16383 -> 9102-14562']],
      ]);
      expect(r.plan.moves.map((m) => [m.from.name, m.to.name, m.slots, m.ranges])).toEqual([
        ['b', 'c', 1821, ['9102-10922']],
        ['c', 'a', 1821, ['14563-16383']],
        ['a', 'b', 1820, ['3641-5460']],
      ]);
      expect(r.plan.movingShare).toBeCloseTo(5462 / 16384, 10);
    },
  },
  {
    title: 'ring: change one weight from 1 to 2',
    mode: 'ring',
    before: { mode: 'ring', ring: { hash: 'fnv1a_64' }, shards: [] },
    after: { mode: 'ring', ring: { hash: 'fnv1a_64' }, shards: [] },
    check: (r) => {
      expect(r.plan.changed.map((c) => [c.name, c.changes])).toEqual([['b', ['weight 1 -> 2']]]);
      // b gains ring share from both others; a and c also trade a little, because every server's point count
      // depends on the total weight (twemproxy's ketama).
      const toB = r.plan.moves.filter((m) => m.to.name === 'b').reduce((a, m) => a + m.share!, 0);
      expect(
        r.plan.moves
          .filter((m) => m.to.name === 'b')
          .map((m) => m.from.name)
          .sort(),
      ).toEqual(['a', 'c']);
      expect(toB).toBeGreaterThan(0.1); // about 1/6: b goes from a third of the weight to a half
      expect(toB).toBeGreaterThan(0.8 * r.plan.movingShare!);
      const share = r.plan.shares.find((s) => s.name === 'b')!;
      expect(share.after!).toBeGreaterThan(share.before!);
      expect(r.plan.moves.reduce((a, m) => a + (m.arcs ?? 0), 0)).toBeGreaterThan(10);
    },
  },
];

describe('keymux plan matches what the reload then moves', () => {
  const configure = (c: Change): void => {
    if (c.mode === 'slots' && c.title.includes('add a shard')) {
      c.before.shards = slotsShards([['0-5460'], ['5461-10922'], ['10923-16383']]);
      c.after.shards = slotsShards([
        ['1365-5460'],
        ['6826-10922'],
        ['12288-16383'],
        ['0-1364', '5461-6825', '10923-12287'],
      ]);
    } else if (c.mode === 'slots') {
      c.before.shards = slotsShards([['0-5460'], ['5461-10922'], ['10923-16383']]);
      c.after.shards = slotsShards([['0-3640', '14563-16383'], ['3641-9101'], ['9102-14562']]);
    } else {
      const ring = (w: number[]): Obj[] =>
        w.map((weight, i) => ({ name: 'abc'[i], address: redis[i].address, weight }));
      c.before.shards = ring([1, 1, 1]);
      c.after.shards = ring([1, 2, 1]);
    }
  };

  for (const [n, change] of CHANGES.entries()) {
    it(change.title, async () => {
      configure(change);
      await Promise.all(redis.map((r) => redisCommands(r.port, [['FLUSHALL']])));
      const file = writeConfig(`keymux-${n}.yaml`, change.before);
      const proxy = await Proxy.start(parseConfigText(fs.readFileSync(file, 'utf8'), file).config!, {
        configPath: file,
        watchConfig: false,
        builtinCommandTable: true,
      });
      try {
        const admin = `http://127.0.0.1:${proxy.adminPort}`;
        await shardsReady(proxy);
        await load(proxy.port);
        const before = await placement();
        const next = writeConfig(`keymux-${n}-next.yaml`, change.after);

        const planned = await cli(['plan', '--config', next, '--against', admin, '--json', '--sample', String(SAMPLE)]);
        expect(planned.stderr).toBe('');
        expect(planned.code).toBe(0);
        const report = JSON.parse(planned.stdout) as PlanReport;
        change.check(report);
        const e = report.estimate!;
        expect(e, report.estimateSkipped ?? '').not.toBeNull();
        // It really sampled: no shard was read in full, so the figures have margins.
        for (const s of e.shards) {
          expect(s.error).toBeNull();
          expect(s.exact).toBe(false);
          expect(s.sampled).toBe(SAMPLE);
        }
        expect(e.total.keysMargin).toBeGreaterThan(0);
        expect(e.total.keysOnSources).toBe(KEYS);
        expect(e.rate.measured).toBe(false);
        expect(e.durationS).toBeCloseTo(e.total.keys / e.rate.keysPerSecond, 6);

        // A dry run changes nothing.
        expect((await getJson(`${admin}/config`)).version).toBe(1);
        expect((await placement()).size).toBe(KEYS);

        // The real reload, then what really moved.
        fs.copyFileSync(next, file);
        const reload = await request(`${admin}/reload`, { method: 'POST' });
        expect(reload.statusCode).toBe(200);
        await reload.body.dump();
        const migration = await waitMigrationDone(admin, 0);
        const after = await placement();
        const [keys, bytes] = moved(before, after);
        expect(migration.keysMoved).toBe(keys);
        const report1 = `plan said ${e.total.keys} ± ${e.total.keysMargin} keys, ${e.total.bytes} ± ${e.total.bytesMargin} bytes; moved ${keys} keys, ${bytes} bytes`;
        // The margin is a 99.9% interval (z = 3.29) and Redis's random hash seed changes the sample every run: six
        // such checks would miss ~0.6% of runs by design. 1.25 margins (z = 4.1, ~4e-5 each) still catch a
        // wrong estimate or a margin too narrow.
        expect(Math.abs(e.total.keys - keys), report1).toBeLessThanOrEqual(1.25 * e.total.keysMargin);
        expect(Math.abs(e.total.bytes - bytes), report1).toBeLessThanOrEqual(1.25 * e.total.bytesMargin);
        // The margin is informative, not a blanket: well under the keys moved.
        expect(e.total.keysMargin).toBeLessThan(keys / 3);

        // Planning the way back now quotes the rate the migration measured.
        const back = await cli([
          'plan',
          '--config',
          writeConfig(`keymux-${n}-back.yaml`, change.before),
          '--against',
          admin,
          '--json',
        ]);
        const backReport = JSON.parse(back.stdout) as PlanReport;
        expect(backReport.estimate!.rate.measured).toBe(true);
        expect(backReport.estimate!.rate.basis).toMatch(
          new RegExp(`^migration #${migration.id as number}: ${keys} keys in`),
        );
      } finally {
        await proxy.close();
      }
    });
  }

  it('prints a plan for people, validates like --check, and says what it needs', async () => {
    const old = writeConfig('people-old.yaml', {
      mode: 'slots',
      shards: slotsShards([['0-5460'], ['5461-10922'], ['10923-16383']]),
    });
    const next = writeConfig('people-new.yaml', {
      mode: 'slots',
      shards: slotsShards([['0-5460'], ['5461-10922'], ['10923-15000'], ['15001-16383']]),
      backend: { timeout_ms: 500 },
    });
    await Promise.all(redis.map((r) => redisCommands(r.port, [['FLUSHALL']])));
    await redisCommands(redis[2].port, [['SET', 'plan:people', 'x']]);
    const r = await cli(['plan', '--config', next, '--current', old]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`keymux plan: ${old} -> ${next} (slots mode)`);
    expect(r.stdout).toMatch(/\+\s+d\s+127\.0\.0\.1:\d+\s+added/);
    expect(r.stdout).toMatch(
      new RegExp(`c \\(${redis[2].address}\\) -> d \\(${redis[3].address}\\): 1,383 slots \\(15001-16383\\)`),
    );
    expect(r.stdout).toMatch(/Live estimate \(SCAN sample of 1 keys/);
    expect(r.stdout).toMatch(/all keys \(exact\)/);
    expect(r.stdout).toMatch(/no migration measured yet: default 20000 keys\/s/);
    expect(r.stdout).toContain('Other sections that change: backend');

    // An invalid file: the very lines `keymux --check` prints, and exit code 1.
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'mode: slots\nshards:\n  - name: a\n    address: 127.0.0.1:7001\n    slots: [0-100]\n');
    const check = await cli(['--config', bad, '--check']);
    const planned = await cli(['plan', '--config', bad, '--current', old]);
    expect(planned.code).toBe(1);
    expect(check.code).toBe(1);
    expect(planned.stderr).toBe(check.stderr);
    expect(planned.stderr).toMatch(new RegExp(`${bad}:\\d+: `));

    const lost = await cli(['plan', '--config', next]);
    expect(lost.code).toBe(2);
    expect(lost.stderr).toMatch(/--against http:\/\/ADMIN.*\n.*--current OLD\.yaml/);

    // A change that needs a restart is refused, as the reload would be.
    const moved = writeConfig('people-listen.yaml', {
      mode: 'slots',
      listen: '127.0.0.1:1',
      shards: slotsShards([['0-16383']]),
    });
    const refused = await cli(['plan', '--config', moved, '--current', old, '--no-sample']);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/REFUSED: .*listen cannot change without a restart/);
  });

  it('POST /reload?dry_run=1 re-reads the config file, and answers 400 with file:line errors for a bad one', async () => {
    const file = writeConfig('dry.yaml', { mode: 'ring', shards: [{ address: redis[0].address }] });
    const proxy = await Proxy.start(parseConfigText(fs.readFileSync(file, 'utf8'), file).config!, {
      configPath: file,
      watchConfig: false,
      builtinCommandTable: true,
    });
    try {
      const admin = `http://127.0.0.1:${proxy.adminPort}`;
      fs.writeFileSync(
        file,
        stringify({
          listen: '127.0.0.1:0',
          admin: '127.0.0.1:0',
          mode: 'ring',
          shards: [{ address: redis[0].address }, { address: redis[1].address }],
        }),
      );
      const res = await request(`${admin}/reload?dry_run=1&sample=0`, { method: 'POST' });
      const body = (await res.body.json()) as PlanReport & { ok: boolean; dry_run: boolean };
      expect(res.statusCode).toBe(200);
      expect(body.ok && body.dry_run).toBe(true);
      expect(body.plan.added.map((s) => s.address)).toEqual([redis[1].address]);
      expect(body.estimateSkipped).toBe('sampling was not asked for');
      expect(proxy.topology.config.shards).toHaveLength(1); // nothing applied

      fs.writeFileSync(file, 'mode: ring\nshards:\n  - address: nowhere\n');
      const badRes = await request(`${admin}/reload?dry_run=1`, { method: 'POST' });
      const bad = (await badRes.body.json()) as { ok: boolean; errors: string[] };
      expect(badRes.statusCode).toBe(400);
      expect(bad.errors.some((l) => l.startsWith(`${file}:3: `))).toBe(true);
    } finally {
      await proxy.close();
    }
  });
});
