/**
 * The migration state file (`migration.state_file`): while a key migration runs, the placement the keys are
 * moving away from is recorded here, so a keymux restarted in the middle resumes the migration instead of reading
 * keys where they are not yet. One writer: the process that runs the migration (a single keymux, or the primary
 * process with workers > 1). Written atomically and durably (a temporary file, fsynced, renamed into place, the
 * directory fsynced); removed once every key moved.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KeymuxConfig } from '../config/schema.js';

/** The parts of a config that decide key placement (what the state file records). */
export function routingOf(config: KeymuxConfig): Partial<KeymuxConfig> {
  return {
    mode: config.mode,
    hashTag: config.hashTag,
    ring: config.ring,
    shards: config.shards,
    routing: config.routing,
  };
}

/**
 * Records a running migration: `chain` lists the placements keys may still be at, oldest first (one, unless a
 * reload came during a migration: then every placement since the last completed one). `from` (the newest) is
 * what a version 1 file held.
 */
export function writeMigrationState(file: string, startedAt: number, chain: Array<Partial<KeymuxConfig>>): void {
  const state = { version: 2, startedAt: new Date(startedAt).toISOString(), from: chain[chain.length - 1], chain };
  const tmp = `${file}.tmp`;
  try {
    // On disk before it is named (fsync), and the name on disk too (the directory's fsync): a machine that stops
    // right after the reload must not come back with no record, or an empty one, of where keys still are.
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, JSON.stringify(state));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  syncDirectory(path.dirname(path.resolve(file)));
}

/** fsync of a directory (its entries), where the platform allows it. */
function syncDirectory(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* not supported here (some file systems, Windows): the rename is still atomic */
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/**
 * The placements an interrupted migration was moving keys away from (oldest first), or null when none was
 * interrupted.
 */
export function readMigrationState(file: string): Array<Partial<KeymuxConfig>> | null {
  let state: { from?: Partial<KeymuxConfig>; chain?: Array<Partial<KeymuxConfig>> };
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof state;
  } catch {
    return null;
  }
  if (Array.isArray(state.chain) && state.chain.length > 0) return state.chain;
  return typeof state.from === 'object' && state.from !== null ? [state.from] : null;
}

export function removeMigrationState(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/**
 * Why the state file `file` could not be written, or null when its directory takes files. Checked when keymux
 * starts and before a reload changes anything: a migration whose state cannot be recorded is refused, not started
 * half (a path in a directory that does not exist is a config error like any other).
 */
export function stateFileProblem(file: string | null): string | null {
  if (file === null) return null;
  const dir = path.dirname(path.resolve(file));
  try {
    if (!fs.statSync(dir).isDirectory()) return `migration.state_file ${file}: ${dir} is not a directory`;
    fs.accessSync(dir, fs.constants.W_OK);
    return null;
  } catch (err) {
    return `migration.state_file ${file}: cannot write in ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
}
