/**
 * Watches the config file for changes and calls back when its content changed. It watches the DIRECTORY, not the
 * file: editors replace files by rename, and Kubernetes updates a mounted ConfigMap by swapping a `..data`
 * symlink, and a watch on the old file would never fire again. Events are debounced and the file's content
 * hash compared, so one save (or one symlink swap, which touches several names) triggers one reload.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const DEBOUNCE_MS = 150;

export class ConfigWatcher {
  private readonly file: string;
  private readonly onChange: () => void;
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastHash: string;

  constructor(file: string, onChange: () => void) {
    this.file = path.resolve(file);
    this.onChange = onChange;
    this.lastHash = hashOf(this.file);
  }

  start(): void {
    const dir = path.dirname(this.file);
    this.watcher = fs.watch(dir, { persistent: false }, () => this.schedule());
    this.watcher.on('error', () => undefined);
  }

  /** The file's content hash now: a reload takes it before it reads the file, and gives it to markCurrent. */
  snapshot(): string {
    return hashOf(this.file);
  }

  /**
   * Records the content that is now active (after a reload triggered elsewhere, e.g. SIGHUP): `seen`, the snapshot
   * taken before that reload read the file. Not the file as it is now: an edit made while the reload ran (a slow
   * sentinel query, a migration being planned) would then be recorded as applied and never reloaded. With the
   * snapshot, such an edit differs from it and the pending change event reloads it (a change between the snapshot
   * and the read costs at most one more reload, which finds it unchanged).
   */
  markCurrent(seen: string): void {
    this.lastHash = seen;
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.watcher?.close();
    this.watcher = null;
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const hash = hashOf(this.file);
      if (hash === this.lastHash || hash === '') return;
      this.lastHash = hash;
      this.onChange();
    }, DEBOUNCE_MS);
  }
}

function hashOf(file: string): string {
  try {
    return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  } catch {
    return '';
  }
}
