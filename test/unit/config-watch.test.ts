/**
 * ConfigWatcher: a change of the file's content calls back once; and an edit made while a reload was running (after
 * it read the file, before it finished) is reloaded, not recorded as applied. The reload gives markCurrent the
 * snapshot it took before reading; recording the file as it was at the end instead lost such an edit for good.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigWatcher } from '../../src/config/watch.js';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const dirs: string[] = [];
const watchers: ConfigWatcher[] = [];

afterEach(() => {
  for (const w of watchers.splice(0)) w.stop();
  for (const d of dirs.splice(0)) removeTempDir(d);
});

/** A watched file with content `a`, and a promise per change event. */
function watched(): { file: string; watcher: ConfigWatcher; nextChange: () => Promise<void> } {
  const dir = makeTempDir('keymux-watch-');
  dirs.push(dir);
  const file = path.join(dir, 'keymux.yaml');
  fs.writeFileSync(file, 'a\n');
  let resolve: () => void = () => undefined;
  let changed = new Promise<void>((r) => (resolve = r));
  const watcher = new ConfigWatcher(file, () => {
    resolve();
    changed = new Promise<void>((r) => (resolve = r));
  });
  watchers.push(watcher);
  watcher.start();
  return { file, watcher, nextChange: () => changed };
}

describe('ConfigWatcher', () => {
  it('calls back when the content changes', async () => {
    const { file, nextChange } = watched();
    const change = nextChange();
    fs.writeFileSync(file, 'b\n');
    await change;
  });

  it('reloads an edit made while a reload was running, after that reload read the file', async () => {
    const { file, watcher, nextChange } = watched();
    const change = nextChange();
    // A reload (SIGHUP) starts: it takes the snapshot and reads the file (content a)...
    const seen = watcher.snapshot();
    // ...the operator edits the file while it runs (a slow sentinel query)...
    fs.writeFileSync(file, 'b\n');
    // ...and it finishes, before the watcher's debounce ran: what it applied is `a`.
    watcher.markCurrent(seen);
    await change; // the edit to b is reloaded (never came before the fix: markCurrent re-read the file, b)
    expect(fs.readFileSync(file, 'utf8')).toBe('b\n');
  });
});
