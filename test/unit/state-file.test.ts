/**
 * The migration state file: written whole or not at all (a temporary file, fsynced, renamed into place), read back
 * as written, and a failed write leaves neither a half file nor its temporary behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';
import {
  readMigrationState,
  removeMigrationState,
  stateFileProblem,
  writeMigrationState,
} from '../../src/migration/state-file.js';

let dir: string;
beforeAll(() => {
  dir = makeTempDir('keymux-state-file-');
});
afterAll(() => removeTempDir(dir));

describe('migration state file', () => {
  it('reads back the chain it was written with; removed, it reads as no migration', () => {
    const file = path.join(dir, 'state.json');
    const chain = [{ mode: 'slots' as const }, { mode: 'ring' as const }];
    writeMigrationState(file, Date.now(), chain);
    expect(readMigrationState(file)).toEqual(chain);
    expect(fs.existsSync(`${file}.tmp`)).toBe(false);
    removeMigrationState(file);
    expect(readMigrationState(file)).toBe(null);
  });

  it('a write that fails (the name is taken by a directory) throws and leaves no temporary file', () => {
    const file = path.join(dir, 'taken');
    fs.mkdirSync(path.join(file, 'inside'), { recursive: true });
    expect(() => writeMigrationState(file, Date.now(), [{ mode: 'slots' }])).toThrow();
    expect(fs.existsSync(`${file}.tmp`)).toBe(false);
  });

  it('says why a path cannot take the file: a missing directory, a file where the directory should be', () => {
    expect(stateFileProblem(null)).toBe(null);
    expect(stateFileProblem(path.join(dir, 'ok.json'))).toBe(null);
    expect(stateFileProblem(path.join(dir, 'missing', 'x.json'))).toMatch(/cannot write in .*missing \(ENOENT\)/);
    const notDir = path.join(dir, 'plain');
    fs.writeFileSync(notDir, '');
    expect(stateFileProblem(path.join(notDir, 'x.json'))).toMatch(/is not a directory/);
  });
});
