/**
 * The file of the Unix domain socket clients connect to (`listen_unix`), before and after keymux binds it. A socket
 * file outlives the process that bound it when that process did not close it (a crash, SIGKILL, an OOM kill), and
 * a new bind on its path then fails with EADDRINUSE; Redis and twemproxy remove such a file first. keymux removes
 * it only when it is provably stale: it is a socket and nobody accepts on it (a connect is refused). A path that
 * is not a socket (a regular file, a directory, a symlink) or a live socket of another process is an error that
 * names it, and is never deleted. After the bind the file gets its configured mode; it is bound with a umask that
 * lets only the owner in, so no client of another user can connect in the moment before the chmod. Node (libuv)
 * removes the file itself when the listening server closes (drain, clean exit).
 */
import fs from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';

/** Connect errors that mean nobody listens on a socket file: it is stale. */
const STALE_CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOENT']);

/**
 * Makes `path` free to bind: nothing there, or a stale socket file (removed). Throws, naming the path and what is
 * there, when it is anything else.
 */
export async function freeSocketPath(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return checkDirectory(path);
    throw new Error(`listen_unix: cannot inspect ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!stat.isSocket()) {
    throw new Error(
      `listen_unix: ${path} exists and is not a socket (${fileKind(stat)}); keymux will not remove it: ` +
        'choose another path or remove it yourself',
    );
  }
  const answer = await tryConnect(path);
  if (answer === 'live') {
    throw new Error(
      `listen_unix: ${path} is a socket another process is listening on (a connection to it was accepted); ` +
        'stop that process or choose another path',
    );
  }
  if (answer !== 'stale') throw new Error(`listen_unix: cannot tell whether ${path} is in use: ${answer}`);
  try {
    fs.unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`listen_unix: cannot remove the stale socket ${path}: ${(err as Error).message}`, {
        cause: err,
      });
  }
}

/**
 * Nothing is at `path`: its directory must exist, as the bind will not create it. Checked here because the bind's
 * own error for a missing directory is libuv's EACCES ("permission denied"), which sends an operator hunting for a
 * permission problem that is not there.
 */
function checkDirectory(path: string): void {
  const dir = nodePath.dirname(path);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new Error(`listen_unix: the directory of ${path} (${dir}) does not exist; create it first`, {
        cause: err,
      });
    return; // anything else (no permission to look): the bind reports it
  }
  if (!stat.isDirectory()) throw new Error(`listen_unix: ${dir}, the directory of ${path}, is not a directory`);
}

/** Binds `server` on `path` (owner-only while binding), then gives the file `mode` when one is configured. */
export function listenOnPath(server: net.Server, path: string, mode: number | null): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new Error(`listen_unix: cannot listen on ${path}: ${err.message}`));
    server.once('error', onError);
    // The bind happens within listen(): the umask in force then decides the file's first mode.
    const umask = mode !== null ? process.umask(0o177) : null;
    try {
      server.listen({ path, backlog: 1024 }, () => {
        server.off('error', onError);
        try {
          if (mode !== null) fs.chmodSync(path, mode);
          resolve();
        } catch (err) {
          server.close();
          reject(new Error(`listen_unix: cannot set the mode of ${path}: ${(err as Error).message}`));
        }
      });
    } finally {
      if (umask !== null) process.umask(umask);
    }
  });
}

/** 'live' when something accepts on `path`, 'stale' when the connect is refused, else the error's text. */
function tryConnect(path: string): Promise<'live' | 'stale' | string> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve('live');
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      probe.destroy();
      resolve(err.code !== undefined && STALE_CONNECT_ERRORS.has(err.code) ? 'stale' : err.message);
    });
  });
}

function fileKind(stat: fs.Stats): string {
  if (stat.isFile()) return 'a regular file';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isSymbolicLink()) return 'a symbolic link';
  if (stat.isFIFO()) return 'a FIFO';
  return 'not a socket';
}
