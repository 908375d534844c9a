/**
 * `keymux plan --config NEW.yaml [--against http://ADMIN | --current OLD.yaml] [--json]`: what applying NEW.yaml
 * would change, before anyone applies it. With --against, the running keymux computes it (`POST
 * /reload?dry_run=1` with the file as the body: it knows the live topology, the shards' passwords and the rate
 * of its last migration, and samples its own shards); with --current, this process compares the two files and
 * samples the shards of OLD.yaml itself. The report (migration/estimate.ts PlanReport) is printed for people, or
 * as JSON with --json. NEW.yaml is validated first: a bad file gets the same `file:line` errors as `keymux
 * --check` and exit code 1.
 *
 * Exit codes: 0 a plan was printed; 1 the config is invalid or its reload would be refused; 2 usage, or the
 * admin address did not answer.
 */
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { planReport, DEFAULT_SAMPLE_KEYS, DEFAULT_SAMPLE_TIME_MS, type PlanReport } from '../migration/estimate.js';
import {
  adminToken,
  adminUrl,
  authHeaders,
  TOKEN_HINT,
  bytes,
  count,
  percent,
  printConfigErrors,
  processIo,
  Progress,
  readKeymuxConfig,
  seconds,
  table,
  type Io,
} from './common.js';

const USAGE = `usage: keymux plan --config NEW.yaml [--against http://ADMIN | --current OLD.yaml] [options]

Shows what applying NEW.yaml would change: shards added, removed and changed, the slots (slots mode) or ring
share (ring mode) moving from which shard to which, and, sampled from the live shards, how many keys and bytes
the migration would move and how long it would take.

  -c, --config FILE     the new configuration (validated like keymux --check)
  -a, --against ADDR    a running keymux's admin address (e.g. http://127.0.0.1:9121): compare with what it runs
      --current FILE    compare with this config instead (and sample its shards from here)
      --json            print the report as JSON
      --sample N        keys sampled per shard (default ${DEFAULT_SAMPLE_KEYS}; 0 = no sampling)
      --time-ms T       time budget for sampling in ms (default ${DEFAULT_SAMPLE_TIME_MS})
      --no-sample       do not ask the shards (positions only)
      --token-file FILE with --against: the admin token (admin.token_file); also KEYMUX_ADMIN_TOKEN_FILE or
                        KEYMUX_ADMIN_TOKEN
  -h, --help            this help
`;

export async function run(argv: string[], io: Io = processIo): Promise<number> {
  let values: {
    config?: string;
    against?: string;
    current?: string;
    json?: boolean;
    sample?: string;
    'time-ms'?: string;
    'no-sample'?: boolean;
    'token-file'?: string;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        against: { type: 'string', short: 'a' },
        current: { type: 'string' },
        json: { type: 'boolean' },
        sample: { type: 'string' },
        'time-ms': { type: 'string' },
        'no-sample': { type: 'boolean' },
        'token-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.err(`keymux plan: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (values.config === undefined) {
    io.err(`keymux plan: --config NEW.yaml is required\n${USAGE}`);
    return 2;
  }
  if (values.against === undefined && values.current === undefined) {
    io.err(
      'keymux plan: say what to compare NEW.yaml with:\n' +
        '  --against http://ADMIN   the admin address of the running keymux (its `admin:` setting), or\n' +
        '  --current OLD.yaml       the config file the running keymux was started with\n',
    );
    return 2;
  }
  if (values.against !== undefined && values.current !== undefined) {
    io.err('keymux plan: give --against or --current, not both\n');
    return 2;
  }
  const sampleKeys = values['no-sample'] ? 0 : Number(values.sample ?? DEFAULT_SAMPLE_KEYS);
  const timeMs = Number(values['time-ms'] ?? DEFAULT_SAMPLE_TIME_MS);
  if (!Number.isInteger(sampleKeys) || sampleKeys < 0 || !Number.isInteger(timeMs) || timeMs <= 0) {
    io.err('keymux plan: --sample must be an integer >= 0 and --time-ms an integer > 0\n');
    return 2;
  }
  const next = readKeymuxConfig(values.config, io);
  if (next === null) return 1;

  const progress = new Progress(io);
  let report: PlanReport;
  if (values.against !== undefined) {
    let token: string | null;
    try {
      token = adminToken(values['token-file']);
    } catch (err) {
      io.err(`keymux plan: ${(err as Error).message}\n`);
      return 2;
    }
    const url = new URL(`${adminUrl(values.against)}/reload`);
    url.searchParams.set('dry_run', '1');
    url.searchParams.set('sample', String(sampleKeys));
    url.searchParams.set('time_ms', String(timeMs));
    url.searchParams.set('source', values.config);
    const ticker = setInterval(() => progress.update(`keymux plan: ${url.host} is sampling its shards`), 200);
    progress.update(`keymux plan: asking ${url.host}`);
    try {
      const res = await request(url, {
        method: 'POST',
        body: next.text,
        headers: { 'content-type': 'application/yaml', ...authHeaders(token) },
        headersTimeout: timeMs + 30_000,
        bodyTimeout: timeMs + 30_000,
      });
      if (res.statusCode === 401 || res.statusCode === 403 || res.statusCode === 415) {
        const text = (await res.body.text()).trim();
        progress.done();
        io.err(
          `keymux plan: ${url.host} answered ${res.statusCode}: ${text}${res.statusCode === 401 ? `\n${TOKEN_HINT}` : ''}\n`,
        );
        return 2;
      }
      const body = (await res.body.json()) as { ok?: boolean; errors?: string[] } & PlanReport;
      if (res.statusCode !== 200 || body.ok !== true) {
        progress.done();
        if (Array.isArray(body.errors)) printConfigErrors(body.errors, io);
        else io.err(`keymux plan: ${url.host} answered ${res.statusCode}\n`);
        return res.statusCode === 400 ? 1 : 2;
      }
      report = { ...body };
      delete (report as { ok?: boolean }).ok;
    } catch (err) {
      progress.done();
      io.err(
        `keymux plan: cannot ask ${url.origin} (is keymux running with admin: ${url.host}?): ${(err as Error).message}\n`,
      );
      return 2;
    } finally {
      clearInterval(ticker);
    }
  } else {
    const current = readKeymuxConfig(values.current!, io);
    if (current === null) return 1;
    progress.update('keymux plan: sampling the shards');
    report = await planReport(
      current.config,
      next.config,
      sampleKeys > 0
        ? {
            keysPerShard: sampleKeys,
            timeMs,
            onProgress: (done, total, keys) =>
              progress.update(`keymux plan: sampled ${done}/${total} shards, ${count(keys)} keys`),
          }
        : null,
      [],
    );
  }
  progress.done();
  io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatPlan(report));
  return report.plan.refused !== null ? 1 : 0;
}

const shardText = (s: { name: string; address: string }): string =>
  s.name === s.address ? s.address : `${s.name} (${s.address})`;

/** The report for people. */
export function formatPlan(r: PlanReport): string {
  const p = r.plan;
  const lines: string[] = [`keymux plan: ${r.from} -> ${r.to} (${p.mode} mode)`, ''];
  if (p.refused !== null) {
    lines.push(
      `REFUSED: ${p.refused}`,
      'A reload with this file would be rejected and the running config would stay.',
      '',
    );
    return `${lines.join('\n')}\n`;
  }
  if (p.unchanged) lines.push('Every key stays where it is: no shard gains or loses keys.', '');
  if (p.rehash) {
    lines.push(
      'The hash function or hash tag changes: keys are placed anew, so almost every key may move.',
      'Only the live estimate below tells how many do.',
      '',
    );
  }
  if (p.added.length + p.removed.length + p.changed.length > 0) {
    lines.push('Shards');
    const rows: string[][] = [];
    for (const s of p.added) rows.push(['  +', s.name, s.address, 'added']);
    for (const s of p.removed) rows.push(['  -', s.name, s.address, 'removed']);
    for (const s of p.changed) rows.push(['  ~', s.name, s.address, s.changes.join(', ')]);
    lines.push(...table(rows), '');
  }
  const unit = p.mode === 'slots' ? 'slots' : 'ring';
  lines.push(p.mode === 'slots' ? 'Share of the slots' : 'Share of the hash ring');
  lines.push(
    ...table(
      [
        ['  shard', 'address', 'before', 'after'],
        ...p.shares.map((s) => [
          `  ${s.name}`,
          s.address,
          s.before === null ? '-' : percent(s.before),
          s.after === null ? '-' : percent(s.after),
        ]),
      ],
      new Set([2, 3]),
    ),
    '',
  );
  if (p.moves.length > 0) {
    lines.push(
      `Moving (${unit === 'slots' ? 'slots' : 'ring positions'} whose owner changes${p.movingShare === null ? '' : `: ${percent(p.movingShare)} in all`})`,
    );
    for (const m of p.moves) {
      if (m.slots !== null) {
        const ranges = m.ranges ?? [];
        const shown = ranges.slice(0, 8).join(', ') + (ranges.length > 8 ? `, ... (${ranges.length} ranges)` : '');
        lines.push(`  ${shardText(m.from)} -> ${shardText(m.to)}: ${count(m.slots)} slots (${shown})`);
      } else {
        lines.push(
          `  ${shardText(m.from)} -> ${shardText(m.to)}: ${percent(m.share ?? 0, 2)} of the ring in ${count(m.arcs ?? 0)} arcs`,
        );
      }
    }
    lines.push('');
  }
  const e = r.estimate;
  if (e === null) {
    lines.push(`Live estimate: none (${r.estimateSkipped ?? 'not asked for'})`);
  } else {
    const sampled = e.shards.reduce((a, s) => a + s.sampled, 0);
    lines.push(`Live estimate (SCAN sample of ${count(sampled)} keys; margins at ${percent(e.confidence)} confidence)`);
    lines.push(
      ...table(
        [
          ['  shard', 'keys', 'sampled', ''],
          ...e.shards.map((s) => [
            `  ${shardText(s)}`,
            count(s.keys),
            count(s.sampled),
            s.error !== null ? `error: ${s.error}` : s.exact ? 'all keys (exact)' : `${s.elapsedMs} ms`,
          ]),
        ],
        new Set([1, 2]),
      ),
    );
    for (const m of e.moves) {
      lines.push(
        `  ${shardText(m.from)} -> ${shardText(m.to)}: ${count(m.keys)} ± ${count(m.keysMargin)} keys, ${bytes(m.bytes)} ± ${bytes(m.bytesMargin)}`,
      );
    }
    const t = e.total;
    const of = t.keysOnSources > 0 ? ` of ${count(t.keysOnSources)} (${percent(t.keys / t.keysOnSources)})` : '';
    lines.push(
      `  total: ${count(t.keys)} ± ${count(t.keysMargin)} keys${of}, ${bytes(t.bytes)} ± ${bytes(t.bytesMargin)}`,
      `  time: about ${seconds(e.durationS)} ± ${seconds(e.durationMarginS)} at ${count(e.rate.keysPerSecond)} keys/s ` +
        `(${e.rate.measured ? 'measured: ' : ''}${e.rate.basis})`,
    );
    if (e.timeLimited) lines.push('  (the time budget ended the sampling early on some shard: --time-ms for more)');
    if (r.migrationRunning) lines.push('  (a migration is still running: its keys are counted where they are now)');
  }
  if (p.otherChanges.length > 0) lines.push('', `Other sections that change: ${p.otherChanges.join(', ')}`);
  return `${lines.join('\n')}\n`;
}
