/**
 * Listener: the one client-facing TCP port. Accepts connections, enforces `clients.max` (a client over the limit
 * gets "-ERR max number of clients reached" and is closed, as Redis does: its socket is destroyed once the error
 * is written, or soon after if the client does not take it, so refused clients cannot pile up file descriptors),
 * and hands each socket to a new ClientSession. Stopping the listener (drain) refuses new connections and leaves
 * existing sessions running.
 */
import net from 'node:net';
import { ClientSession } from './client-session.js';
import type { ProxyContext } from './context.js';
import { ERR_MAX_CLIENTS } from '../errors.js';
import { CLOSE_LINGER_MS, endThenDestroy } from './socket-close.js';

export class Listener {
  readonly sessions = new Set<ClientSession>();
  private readonly server: net.Server;
  private readonly ctx: ProxyContext;
  private nextId = 1;

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    // allowHalfOpen: a client that half-closes after its last command still gets its replies (the session ends
    // its side once they are written); without it Node ends the socket at once and backend replies are lost.
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => this.accept(sock));
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 1024 }, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  get address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  /**
   * Stops accepting; resolves as soon as the listening socket is closed (existing sessions keep running).
   * server.close()'s own callback is not awaited: it fires only once every open connection has ended, so awaiting
   * it would make drain and close wait for clients to leave on their own.
   */
  stopAccepting(): Promise<void> {
    if (this.server.listening) this.server.close();
    return Promise.resolve();
  }

  remove(session: { id: number }): void {
    this.sessions.delete(session as ClientSession);
  }

  private accept(sock: net.Socket): void {
    const max = this.ctx.topology.config.clients.max;
    if (this.sessions.size >= max) {
      this.ctx.stats.clientsRejected++;
      sock.on('error', () => undefined);
      endThenDestroy(sock, CLOSE_LINGER_MS, ERR_MAX_CLIENTS);
      return;
    }
    this.ctx.stats.clientsAccepted++;
    this.sessions.add(new ClientSession(this.nextId++, sock, this.ctx));
  }
}
