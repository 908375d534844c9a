/**
 * Listener: the client-facing ports: the plain TCP port (`listen`), with `tls.enabled` the TLS port (`tls.listen`,
 * keymux terminates TLS; with `tls.ca_file` clients must present a certificate signed by it), and with
 * `listen_unix` a Unix domain socket (its file is prepared and removed by unix-socket.ts). All hand their sockets
 * to the same accept: `clients.max` counts clients of every port (a client over the limit gets
 * "-ERR max number of clients reached" and is closed, as Redis does: its socket is destroyed once the error is
 * written, or soon after if the client does not take it, so refused clients cannot pile up file descriptors), and
 * each socket becomes a ClientSession, which cannot tell a TLS socket from a plain one. A TLS client is handed
 * over once its handshake is done; a handshake that fails (no client certificate, one from another CA, not TLS at
 * all) is counted and never reaches a session. New certificates replace the old ones for new handshakes without
 * touching connected clients (setSecureContext). Stopping the listener (drain) refuses new connections on every
 * port (the Unix socket's file is removed then) and leaves existing sessions running. A Unix socket client is a
 * plain one to its session (shared-buffer reads and direct writes work on its pipe handle as on TCP), named by the
 * socket's path instead of an address. The limits across clients (client-limits.ts) live here: a
 * connection past `clients.max_new_connections_per_s` is refused before it becomes a session (on the TLS port
 * before its handshake, where connections still in their handshake count against `clients.max` too), and a
 * session's held bytes and unfinished command stop counting when it is removed. A refused handshake's socket is
 * destroyed once its alert had time to leave, even if the client half-closed.
 */
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { ClientSession } from './client-session.js';
import type { ProxyContext } from './context.js';
import { ERR_CONNECTION_RATE, ERR_MAX_CLIENTS } from '../errors.js';
import { ClientLimits } from './client-limits.js';
import { CLOSE_LINGER_MS, endThenDestroy } from './socket-close.js';
import { contextPart, type ServerTlsOptions } from '../security/tls.js';
import { freeSocketPath, listenOnPath } from './unix-socket.js';
import { childLogger, type Logger } from '../log.js';

/** A TLS client that has not finished its handshake by then is dropped (Node's default is 120 s). */
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long a refused handshake's TLS alert may take to leave before its socket is destroyed. */
const TLS_ALERT_LINGER_MS = 1000;
/** At most one log line per this many ms about refused TLS handshakes (with the count since the last one). */
const TLS_LOG_INTERVAL_MS = 10_000;

export class Listener {
  readonly sessions = new Set<ClientSession>();
  readonly limits: ClientLimits;
  private readonly server: net.Server;
  private tlsServer: tls.Server | null = null;
  private unixServer: net.Server | null = null;
  private unixPath: string | null = null;
  private readonly ctx: ProxyContext;
  private readonly log: Logger;
  private nextId = 1;
  private tlsFailuresUnlogged = 0;
  /** Connections open on the TLS port (in their handshake or sessions), and those of them that are sessions. */
  private tlsOpen = 0;
  private tlsSessions = 0;
  private tlsLoggedAt = -Infinity;

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
    this.log = childLogger('listener');
    this.limits = new ClientLimits(ctx);
    // allowHalfOpen: a client that half-closes after its last command still gets its replies (the session ends
    // its side once they are written); without it Node ends the socket at once and backend replies are lost.
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => this.accept(sock));
  }

  /** Client ids from now on: first, first + 1, ... (a worker's block, so CLIENT ID is unique process-wide). */
  useClientIds(first: number): void {
    this.nextId = first;
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return listenOn(this.server, host, port);
  }

  /** Opens the TLS port; `options` are the certificate, key, CA and version floor (security/tls.ts). */
  listenTls(host: string, port: number, options: ServerTlsOptions): Promise<net.AddressInfo> {
    const server = tls.createServer(
      { ...options, noDelay: true, allowHalfOpen: true, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS },
      (sock) => this.accept(sock, true),
    );
    // Over the connection rate, or over clients.max counting the connections still in their handshake: refused
    // before any handshake work (no error can be sent in plain text). A connection is a client from its first
    // byte, as in Redis: handshakes left pending must not get past the limit the sessions have.
    server.prependListener('connection', (raw: net.Socket) => {
      raw.on('error', () => undefined);
      if (!this.limits.admitConnection(raw.remoteAddress)) {
        raw.destroy();
        return;
      }
      if (this.sessions.size + (this.tlsOpen - this.tlsSessions) >= this.ctx.topology.config.clients.max) {
        this.ctx.stats.clientsRejected++;
        raw.destroy();
        return;
      }
      this.tlsOpen++;
      raw.once('close', () => this.tlsOpen--);
    });
    // Node sends the TLS alert that tells the client why and ends its side, but a client that half-closed is never
    // destroyed (allowHalfOpen): its socket would stay open for good. It is destroyed once the alert had its time.
    server.on('tlsClientError', (err, sock) => {
      this.onTlsRefused(err, sock);
      const timer = setTimeout(() => sock.destroy(), TLS_ALERT_LINGER_MS);
      timer.unref();
      sock.once('close', () => clearTimeout(timer));
    });
    this.tlsServer = server;
    return listenOn(server, host, port);
  }

  /**
   * Opens the Unix socket at `path` (`listen_unix`): a stale socket file there is replaced, anything else there is
   * an error (unix-socket.ts); `mode` (null: as created) is the file's mode. `checkPath` false: the path was
   * already checked by whoever binds it (the primary of `workers: N`).
   */
  async listenUnix(path: string, mode: number | null, checkPath = true): Promise<void> {
    if (checkPath) await freeSocketPath(path);
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => this.accept(sock, false, path));
    await listenOnPath(server, path, mode);
    this.unixServer = server;
    this.unixPath = path;
  }

  /** The Unix socket's path while keymux listens on it (null without listen_unix). */
  get unixSocket(): string | null {
    return this.unixServer?.listening === true ? this.unixPath : null;
  }

  /** New certificates (or CA) for handshakes from now on; connected clients keep theirs. */
  setSecureContext(options: ServerTlsOptions): void {
    this.tlsServer?.setSecureContext(contextPart(options));
  }

  /** Connections open on the TLS port: sessions and those still in their handshake (tests, diagnostics). */
  get tlsConnections(): number {
    return this.tlsOpen;
  }

  /** The plain port's address (null when there is none: listen is null). */
  get address(): net.AddressInfo | null {
    return this.server.listening ? (this.server.address() as net.AddressInfo) : null;
  }

  /** The TLS port's address (null without TLS). */
  get tlsAddress(): net.AddressInfo | null {
    return this.tlsServer?.listening === true ? (this.tlsServer.address() as net.AddressInfo) : null;
  }

  /**
   * Stops accepting; resolves as soon as the listening sockets are closed (existing sessions keep running).
   * server.close()'s own callback is not awaited: it fires only once every open connection has ended, so awaiting
   * it would make drain and close wait for clients to leave on their own.
   */
  stopAccepting(): Promise<void> {
    if (this.server.listening) this.server.close();
    if (this.tlsServer?.listening === true) this.tlsServer.close();
    if (this.unixServer?.listening === true) this.unixServer.close(); // libuv removes the socket file
    this.limits.stop();
    return Promise.resolve();
  }

  private onTlsRefused(err: Error, sock: tls.TLSSocket): void {
    this.ctx.stats.tlsHandshakeFailures++;
    this.tlsFailuresUnlogged++;
    const now = performance.now();
    if (now - this.tlsLoggedAt < TLS_LOG_INTERVAL_MS) return;
    this.log.warn(
      {
        remote: `${sock.remoteAddress ?? '?'}:${sock.remotePort ?? '?'}`,
        reason: err.message,
        code: (err as NodeJS.ErrnoException).code,
        refused: this.tlsFailuresUnlogged,
      },
      'TLS handshake with a client failed (count since the last such line in "refused")',
    );
    this.tlsLoggedAt = now;
    this.tlsFailuresUnlogged = 0;
  }

  remove(session: { id: number }): void {
    this.sessions.delete(session as ClientSession);
    this.limits.forget(session as ClientSession);
  }

  /**
   * A new client socket; `admitted`: the TLS port already checked the connection rate; `unixPath`: it came over
   * the Unix socket at that path.
   */
  private accept(sock: net.Socket, admitted = false, unixPath: string | null = null): void {
    if (!admitted && !this.limits.admitConnection(sock.remoteAddress ?? unixPath ?? undefined)) {
      sock.on('error', () => undefined);
      endThenDestroy(sock, CLOSE_LINGER_MS, ERR_CONNECTION_RATE);
      return;
    }
    const max = this.ctx.topology.config.clients.max;
    if (this.sessions.size >= max) {
      this.ctx.stats.clientsRejected++;
      sock.on('error', () => undefined);
      endThenDestroy(sock, CLOSE_LINGER_MS, ERR_MAX_CLIENTS);
      return;
    }
    this.ctx.stats.clientsAccepted++;
    if (admitted) {
      this.tlsSessions++;
      sock.once('close', () => this.tlsSessions--);
    }
    // A TLS socket's bytes arrive decrypted through 'data'; a plain one (TCP or Unix) reads into the shared buffer.
    const plain = !(sock instanceof tls.TLSSocket);
    this.sessions.add(new ClientSession(this.nextId++, sock, this.ctx, this.limits, plain, unixPath));
  }
}

function listenOn(server: net.Server, host: string, port: number): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 1024 }, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
}
