/**
 * Admin endpoints for configuration: `POST /reload` re-reads the config file and applies it (the same path as
 * SIGHUP and the file watch: a bad file is rejected with its file:line errors and the running config stays), and
 * `GET /config` shows the active config, with every password masked, and its version (it grows by one for each
 * applied reload or rediscovered cluster topology).
 */
import type { AdminServer } from '../metrics/admin-server.js';
import { sendJson } from '../metrics/admin-server.js';
import type { KeymuxConfig } from './schema.js';
import type { ReloadResult } from '../proxy.js';

export interface ConfigHost {
  readonly topology: { readonly config: KeymuxConfig; readonly version: number };
  reloadFromFile(trigger: string): Promise<ReloadResult>;
}

const MASK = '********';

/** A deep copy of `value` in which every `password` that is set reads as a mask. */
export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = k === 'password' && v !== null ? MASK : maskSecrets(v);
    return out;
  }
  return value;
}

export function addConfigRoutes(admin: AdminServer, host: ConfigHost): void {
  admin.addRoute('POST', '/reload', async (_req, res) => {
    const result = await host.reloadFromFile('admin');
    sendJson(res, result.ok ? 200 : 400, result);
  });
  admin.addRoute('GET', '/config', (_req, res) => {
    const topo = host.topology;
    sendJson(res, 200, { version: topo.version, source: topo.config.source, config: maskSecrets(topo.config) });
  });
}
