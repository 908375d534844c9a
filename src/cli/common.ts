/**
 * What the subcommands in src/cli/ share: printing config errors exactly as `keymux --check` does, progress
 * lines on stderr (only when stderr is a terminal, so scripts and pipes get clean output), admin addresses, and
 * number formatting for people. Nothing here is on the proxy's path.
 */
import { readFileSync } from 'node:fs';
import { parseConfigText } from '../config/load.js';
import type { KeymuxConfig } from '../config/schema.js';

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  /** True when stderr is a terminal (progress lines are shown then). */
  errIsTty: boolean;
}

export const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  errIsTty: process.stderr.isTTY === true,
};

/** Reads and validates a keymux config; prints errors as `keymux --check` does and returns null on failure. */
export function readKeymuxConfig(file: string, io: Io): { config: KeymuxConfig; text: string } | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    printConfigErrors([`${file}: cannot read the file: ${(err as Error).message}`], io);
    return null;
  }
  const result = parseConfigText(text, file);
  if (result.errors !== undefined) {
    printConfigErrors(result.errors, io);
    return null;
  }
  return { config: result.config, text };
}

/** The same lines as `keymux --config FILE --check` prints for a bad config. */
export function printConfigErrors(errors: readonly string[], io: Io): void {
  io.err(`keymux: invalid configuration (${errors.length} problem${errors.length === 1 ? '' : 's'}):\n`);
  for (const e of errors) io.err(`  ${e}\n`);
}

/**
 * A progress line on stderr, redrawn in place, when stderr is a terminal; silent otherwise. `done()` clears it.
 */
export class Progress {
  private readonly io: Io;
  private shown = false;
  private readonly started = Date.now();

  constructor(io: Io) {
    this.io = io;
  }

  update(text: string): void {
    if (!this.io.errIsTty) return;
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    this.io.err(`\r\x1b[2K${text} (${seconds} s)`);
    this.shown = true;
  }

  done(): void {
    if (this.shown) this.io.err('\r\x1b[2K');
    this.shown = false;
  }
}

/**
 * The admin token a tool sends (keymux's `admin.token_file`): read from `--token-file FILE`, else the file named
 * by KEYMUX_ADMIN_TOKEN_FILE, else KEYMUX_ADMIN_TOKEN itself; null when none is given. Never a command-line value
 * (other users of the machine can read a process's arguments). Throws with a message for a file it cannot read.
 */
export function adminToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  const file = tokenFile ?? env.KEYMUX_ADMIN_TOKEN_FILE;
  if (file !== undefined && file !== '') {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new Error(`cannot read the admin token file ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const token = env.KEYMUX_ADMIN_TOKEN?.trim();
  return token !== undefined && token !== '' ? token : null;
}

/** HTTP headers carrying the admin token (none without one). */
export function authHeaders(token: string | null): Record<string, string> {
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

/** What to say when the admin server refused a request for want of the (right) token. */
export const TOKEN_HINT =
  'the admin server needs its token: give --token-file FILE (or set KEYMUX_ADMIN_TOKEN_FILE or KEYMUX_ADMIN_TOKEN)';

/** "127.0.0.1:9121", ":9121" or "http://host:9121/" -> "http://host:9121". */
export function adminUrl(address: string): string {
  let a = address.trim().replace(/\/+$/, '');
  if (a.startsWith(':')) a = `127.0.0.1${a}`;
  if (!/^https?:\/\//.test(a)) a = `http://${a}`;
  return a;
}

export function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function bytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[u]}`;
}

export function percent(share: number, digits = 1): string {
  return `${(share * 100).toFixed(digits)}%`;
}

export function seconds(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** Left-aligned columns: rows of cells -> lines, each column as wide as its widest cell. */
export function table(rows: string[][], rightAlign: ReadonlySet<number> = new Set()): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (rightAlign.has(i) ? c.padStart(widths[i]) : i === r.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}
