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
}

/** Opens a socket to host:port; `tlsSettings` is the config's backend.tls (null or disabled: plain TCP). */
export function connectBackend(host: string, port: number, tlsSettings: BackendTlsSettings | null): BackendSocket {
  const live = tlsSettings === null ? null : backendTlsFor(tlsSettings);
  if (live === null) return { socket: net.connect({ host, port }), readyEvent: 'connect' };
  return { socket: tls.connect(live.connectOptions(host, port)), readyEvent: 'secureConnect' };
}

/** OpenSSL's and Node's certificate error codes: the TLS handshake failed or the shard's certificate was refused. */
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_|ERR_OSSL_)/;

/** True for an error of the TLS layer (handshake, certificate), as opposed to the network's. */
export function isTlsError(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined ? TLS_CODE.test(code) : /SSL|TLS|certificate/i.test(err.message);
}

/** A socket error as a reason for logs and client errors; TLS failures say so, with OpenSSL's words. */
export function describeConnectError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (isTlsError(err)) {
    // OpenSSL's errors carry a short `reason` ("tlsv13 alert certificate required") beside a long message.
    const reason = (err as { reason?: unknown }).reason;
    const text = code?.startsWith('ERR_SSL_') && typeof reason === 'string' && reason !== '' ? reason : err.message;
    return `TLS handshake failed: ${text}${code !== undefined ? ` (${code})` : ''}`;
  }
  return code !== undefined ? `connection error ${code}` : `connection error: ${err.message}`;
}
