/**
 * The one way keymux opens a socket to a redis-server: plain TCP, or TLS when `backend.tls` is on, with the live
 * client context of that setting (security/tls.ts), so certificate rotation reaches every new connection. Used by
 * the data-path connections (backend-connection.ts), the control-plane requests (control.ts: discovery, COMMAND),
 * and the planner's sampling (migration/estimate.ts). There is no fallback: a shard that fails the TLS handshake
 * (wrong CA, wrong name, no TLS at all) is an error, never a plain-text connection.
 */
import net from 'node:net';
import tls from 'node:tls';
import { backendTlsFor, type BackendTlsSettings } from '../security/tls.js';

export interface BackendSocket {
  socket: net.Socket;
  /** The event after which the socket is ready for commands: 'connect', or 'secureConnect' over TLS. */
  readyEvent: 'connect' | 'secureConnect';
  /** True when bytes arrive through ReadInto.chunk ('data' never fires); false or absent: 'data' events. */
  userReads?: boolean;
}

/**
 * Reads into memory the caller hands out (plain TCP only; TLS sockets always emit 'data'): `next()` gives the
 * buffer the next read fills, `chunk(buf, n)` receives the first n bytes of it. Views of a chunk must stay valid, so
 * `next()` must never give memory a view may still point to.
 */
export interface ReadInto {
  next(): Uint8Array;
  chunk(buf: Uint8Array, n: number): void;
}

/** Opens a socket to host:port; `tlsSettings` is the config's backend.tls (null or disabled: plain TCP). */
export function connectBackend(
  host: string,
  port: number,
  tlsSettings: BackendTlsSettings | null,
  reads?: ReadInto,
): BackendSocket {
  const live = tlsSettings === null ? null : backendTlsFor(tlsSettings);
  if (live === null) {
    if (reads === undefined) return { socket: net.connect({ host, port }), readyEvent: 'connect' };
    // Node reads into the buffer `next` gives (called again after every read) and calls `chunk` with the count:
    // no allocation and copy of a new Buffer per read (see ReadInto).
    const socket = net.connect({
      host,
      port,
      onread: {
        buffer: () => reads.next(),
        callback: (n: number, buf: Uint8Array): boolean => {
          reads.chunk(buf, n);
          return true; // false would pause the socket
        },
      },
    });
    return { socket, readyEvent: 'connect', userReads: true };
  }
  return { socket: tls.connect(live.connectOptions(host, port)), readyEvent: 'secureConnect' };
}

/** OpenSSL's and Node's certificate error codes: the TLS handshake failed or the shard's certificate was refused. */
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_|ERR_OSSL_)/;

/** True for an error of the TLS layer (handshake, certificate), as opposed to the network's. */
export function isTlsError(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined ? TLS_CODE.test(code) : /SSL|TLS|certificate/i.test(err.message);
}

/**
 * A socket error as a reason for logs and client errors; TLS failures say so, with OpenSSL's words. `tlsSettings`
 * (the connection's backend.tls) lets a reset be explained: under TLS 1.3 a shard that requires client certificates
 * refuses one only after the client's side of the handshake is done, and whether keymux reads that alert or only
 * sees the connection reset depends on timing, so a reset on a TLS connection without a client certificate says
 * what is the likely cause.
 */
export function describeConnectError(err: Error, tlsSettings: BackendTlsSettings | null = null): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (
    (code === 'ECONNRESET' || code === 'EPIPE') &&
    tlsSettings !== null &&
    tlsSettings.enabled &&
    tlsSettings.certFile === null
  ) {
    return (
      `TLS connection reset by the shard (${code}); a shard that requires client certificates (tls-auth-clients) ` +
      'does this when backend.tls has no cert_file/key_file'
    );
  }
  if (isTlsError(err)) {
    // OpenSSL's errors carry a short `reason` ("tlsv13 alert certificate required") beside a long message.
    const reason = (err as { reason?: unknown }).reason;
    const text = code?.startsWith('ERR_SSL_') && typeof reason === 'string' && reason !== '' ? reason : err.message;
    return `TLS handshake failed: ${text}${code !== undefined ? ` (${code})` : ''}`;
  }
  return code !== undefined ? `connection error ${code}` : `connection error: ${err.message}`;
}
