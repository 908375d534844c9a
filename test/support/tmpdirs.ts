/**
 * Temporary directories for tests: every directory a test or a support module needs under the OS temp dir is made
 * here (`makeTempDir`) and remembered, and all of them are removed when the test process exits, whatever the tests
 * did. Removal waits for exit (not a process's stop()) because a redis-server may be stopped and restarted on the
 * same directory, and a test may read files in it (a log) after stopping the process. `removeTempDir` removes one
 * early, for callers that are done with it. vitest's forks pool ends a worker with SIGTERM, which by default kills
 * it without running 'exit' handlers, so SIGTERM is turned into an exit here (unless something else handles it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dirs = new Set<string>();

/** fs.mkdtempSync under os.tmpdir() with `prefix`; the directory is removed at process exit. */
export function makeTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** Removes `dir` (recursively) now and forgets it. */
export function removeTempDir(dir: string): void {
  dirs.delete(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

// An exit handler must be synchronous.
process.on('exit', () => {
  for (const dir of dirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  dirs.clear();
});

// Without this, SIGTERM (how vitest stops a fork) would end the process without 'exit' handlers. 128 + 15: the
// status a death by SIGTERM reports. Code that handles SIGTERM itself is left to do so.
process.on('SIGTERM', () => {
  if (process.listenerCount('SIGTERM') === 1) process.exit(143);
});
