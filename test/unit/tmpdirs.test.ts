/**
 * Test temp directories (test/support/tmpdirs.ts) are removed when the test process ends, also when it is ended the
 * way vitest ends its forks (SIGTERM), which without the module's handler skips 'exit' handlers. A child node process
 * (with tsx, as vitest runs TypeScript) makes a directory through makeTempDir and is then ended; the directory must
 * be gone.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const support = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/tmpdirs.ts');

/** Starts a child that makes a temp dir, prints it, then exits at once or waits to be signalled. */
function child(ending: 'exit' | 'wait'): Promise<{ dir: string; done: Promise<void>; kill: () => void }> {
  const code =
    `import { makeTempDir } from ${JSON.stringify(support)};` +
    `const dir = makeTempDir('keymux-tmpdirs-test-');` +
    `process.stdout.write(dir + '\\n');` +
    (ending === 'wait' ? 'setInterval(() => undefined, 1000);' : '');
  const proc = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const done = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve({ dir: out.trim(), done, kill: () => proc.kill('SIGTERM') });
    });
    proc.once('exit', (c) => {
      if (!out.includes('\n')) reject(new Error(`child exited (${c}) before printing its directory`));
    });
  });
}

describe('test temp directories', () => {
  it('are removed when the process exits', async () => {
    const c = await child('exit');
    await c.done;
    expect(c.dir).toContain('keymux-tmpdirs-test-');
    expect(fs.existsSync(c.dir)).toBe(false);
  });

  it('are removed when the process is ended with SIGTERM, as vitest ends its forks', async () => {
    const c = await child('wait');
    expect(fs.existsSync(c.dir)).toBe(true);
    c.kill();
    await c.done;
    expect(fs.existsSync(c.dir)).toBe(false);
  });
});
