/**
 * Admin endpoints for configuration: `POST /reload` re-reads the config file and applies it (the same path as
 * SIGHUP and the file watch: a bad file is rejected with its file:line errors and the running config stays), and
 * `GET /config` shows the active config, with every password masked, and its version (it grows by one for each
 * applied reload or rediscovered cluster topology). File paths (the config's own, certificates, token, state
 * file) and shard and seed addresses are shown only to a caller that showed the admin token; anyone else sees
 * them masked. Both need the token when one is configured (admin-server.ts).
 *
 * `POST /reload?dry_run=1` applies nothing: it compares the running topology with the config file (or with the
 * YAML in the request body, as `keymux plan --against` sends it; `source=NAME` names it in errors) and answers
 * the plan (routing/plan.ts) with live estimates of the keys and bytes that would move (migration/estimate.ts;
 * `sample=N` keys per shard, `time_ms=T` budget, `sample=0` for none). An invalid config gets 400 with the
 * same `file:line` errors as `keymux --check`.
 */
import type http from 'node:http';
import type { AdminServer } from '../metrics/admin-server.js';
import { sendJson } from '../metrics/admin-server.js';
import type { KeymuxConfig } from './schema.js';
import type { ReloadResult } from '../proxy.js';
import { parseConfigText, readConfigFile } from './load.js';
import type { MigrationProgress } from '../migration/migration.js';
import { DEFAULT_SAMPLE_KEYS, DEFAULT_SAMPLE_TIME_MS, planReport } from '../migration/estimate.js';
import { configWithPrimaries, resolveSentinelView } from '../backend/sentinel.js';
import type { SentinelView } from '../routing/topology.js';
import { loadSecurity } from '../security/material.js';

export interface ConfigHost {
  readonly topology: { readonly config: KeymuxConfig; readonly version: number; readonly sentinelView?: SentinelView };
  reloadFromFile(trigger: string): Promise<ReloadResult>;
  /** The file reloads read (null when keymux was started from a config object). */
  readonly configFile?: string | null;
  migrationProgress?(): MigrationProgress[];
  /** Why this host would refuse a reload to `next` beyond the plan's own rules (workers > 1: a migration), or null. */
  reloadRefusal?(next: KeymuxConfig): string | null;
}

/** Largest config a dry run accepts in a request body. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const MAX_SAMPLE_KEYS = 100_000;
const MAX_SAMPLE_TIME_MS = 60_000;

const MASK = '********';
/** What /config shows in place of a path or an address to a caller without the admin token. */
export const HIDDEN = '(hidden: needs the admin token)';

/**
 * A deep copy of `value` in which every `password` that is set, every item of `passwords`, and the passwords and
 * password hashes inside a user's ACL `rules` (">secret", "#hash") read as a mask.
 */
export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'password' && v !== null) out[k] = MASK;
      else if (k === 'passwords' && Array.isArray(v)) out[k] = v.map(() => MASK);
      else if (k === 'rules' && typeof v === 'string') out[k] = v.replace(/(^|\s)([<>#!])\S*/g, `$1$2${MASK}`);
      else out[k] = maskSecrets(v);
    }
    return out;
  }
  return value;
}

export function addConfigRoutes(admin: AdminServer, host: ConfigHost): void {
  admin.addRoute('POST', '/reload', async (req, res, url) => {
    const dryRun = url.searchParams.get('dry_run');
    if (dryRun !== null && dryRun !== '0' && dryRun !== 'false') {
      await dryRunReload(host, req, res, url);
      return;
    }
    const result = await host.reloadFromFile('admin');
    sendJson(res, result.ok ? 200 : 400, result);
  });
  admin.addRoute('GET', '/config', (_req, res, _url, caller) => {
    const topo = host.topology;
    const config = maskSecrets(topo.config);
    sendJson(res, 200, {
      version: topo.version,
      source: caller.authorized ? topo.config.source : HIDDEN,
      config: caller.authorized ? config : maskLocations(config),
    });
  });
}

/**
 * A copy of a (secret-masked) config for a caller without the admin token: every file path (`source`, and every
 * `...File` key that is set) and every shard and seed address reads as HIDDEN.
 */
export function maskLocations(value: unknown, key = ''): unknown {
  if (Array.isArray(value)) {
    const where = key === 'shards' || key === 'seeds';
    return value.map((v) => (where && isRecord(v) ? hideAddress(v) : maskLocations(v)));
  }
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = (k === 'source' || /File$/.test(k)) && v !== null ? HIDDEN : maskLocations(v, k);
  }
  return out;
}

function hideAddress(v: Record<string, unknown>): Record<string, unknown> {
  const out = maskLocations(v) as Record<string, unknown>;
  for (const k of ['address', 'host', 'port']) if (k in out) out[k] = HIDDEN;
  // A shard without a name of its own is named by its address.
  if (out.named === false && 'name' in out) out.name = HIDDEN;
  return out;
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function intParam(url: URL, name: string, fallback: number, max: number): number | string {
  const raw = url.searchParams.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  if (raw === '' || !Number.isInteger(n) || n < 0 || n > max)
    return `${name} must be an integer 0..${max}, got ${JSON.stringify(raw)}`;
  return n;
}

async function readBody(req: http.IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function dryRunReload(
  host: ConfigHost,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
): Promise<void> {
  const keys = intParam(url, 'sample', DEFAULT_SAMPLE_KEYS, MAX_SAMPLE_KEYS);
  const timeMs = intParam(url, 'time_ms', DEFAULT_SAMPLE_TIME_MS, MAX_SAMPLE_TIME_MS);
  for (const v of [keys, timeMs]) {
    if (typeof v === 'string') {
      sendJson(res, 400, { ok: false, errors: [v] });
      return;
    }
  }
  const body = await readBody(req);
  if (body === null) {
    sendJson(res, 413, { ok: false, errors: [`the config in the request body is over ${MAX_BODY_BYTES} bytes`] });
    return;
  }
  let result;
  if (body.trim() !== '') {
    result = parseConfigText(body, url.searchParams.get('source') ?? '<request body>');
  } else if (host.configFile !== undefined && host.configFile !== null) {
    result = await readConfigFile(host.configFile);
  } else {
    sendJson(res, 400, {
      ok: false,
      errors: ['keymux was started without a config file: send the new config as the request body'],
    });
    return;
  }
  if (result.errors !== undefined) {
    sendJson(res, 400, { ok: false, errors: result.errors });
    return;
  }
  const sample =
    (keys as number) > 0 && (timeMs as number) > 0 ? { keysPerShard: keys as number, timeMs: timeMs as number } : null;
  // Sentinel shards are planned at their primaries (the running ones; new masters are asked for theirs, with the
  // password of sentinel.password_file when there is one).
  const running: SentinelView = host.topology.sentinelView ?? new Map();
  const secrets = (result.config.sentinel?.passwordFile ?? null) !== null ? loadSecurity(result.config) : null;
  const asking = secrets !== null && secrets.errors === undefined ? secrets.material.config : result.config;
  const view = await resolveSentinelView(asking, running).catch(() => running);
  const report = await planReport(
    configWithPrimaries(host.topology.config, running),
    configWithPrimaries(result.config, view),
    sample,
    host.migrationProgress?.() ?? [],
  );
  const refusal = report.plan.refused === null ? (host.reloadRefusal?.(result.config) ?? null) : null;
  if (refusal !== null) report.plan.refused = refusal;
  sendJson(res, 200, { ok: true, dry_run: true, version: host.topology.version, ...report });
}
