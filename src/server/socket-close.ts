/**
 * Ending client sockets so that none is left open. The listener allows half-open sockets (a client may send its
 * last command and half-close, and still get its replies), so a socket keymux ends stays open until the client
 * ends its side too; a client that never does, or never reads what keymux wrote, would pin the file descriptor
 * for ever. endThenDestroy writes the last bytes and ends, keeps reading (and discarding, when nobody listens)
 * what the client still sends, so that closing does not turn into a reset that could drop the last reply, and
 * destroys the socket as soon as everything has been written, or once the client has taken none of it for
 * `lingerMs`. `unsent` tells how many bytes the client has not taken yet (by default what Node's Writable holds; a
 * session that also writes to the handle directly adds what libuv holds: client-writes.ts).
 */
import type net from 'node:net';

/** How long a closing client socket may go without taking any of its last bytes before it is destroyed. */
export const CLOSE_LINGER_MS = 2000;

export function endThenDestroy(
  sock: net.Socket,
  lingerMs: number,
  lastBytes?: Buffer,
  unsent: () => number = () => sock.writableLength,
): void {
  if (sock.destroyed) return;
  const destroy = (): void => {
    clearInterval(watch);
    sock.destroy();
  };
  let left = Number.POSITIVE_INFINITY;
  // One timer per closing socket (close path, not data path): destroys when a whole period passed without the
  // client taking a byte of what is still buffered for it.
  const watch = setInterval(() => {
    const now = unsent();
    if (now >= left) destroy();
    left = now;
  }, lingerMs);
  watch.unref();
  sock.once('finish', destroy);
  sock.once('close', () => clearInterval(watch));
  sock.resume();
  if (lastBytes !== undefined) sock.end(lastBytes);
  else sock.end();
}
