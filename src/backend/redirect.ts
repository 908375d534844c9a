/**
 * Redis Cluster error replies read straight from raw reply frames: MOVED and ASK redirections (parsed and
 * validated), and the transient errors a cluster client retries (TRYAGAIN, CLUSTERDOWN, LOADING). Pure
 * functions on Buffers, no state.
 *
 * Invariants:
 * - Only the first line of a frame is read, and only its first MAX_REDIRECT_LINE bytes: a redirection is a short
 *   simple error, so a long frame is rejected without being decoded. Nothing is decoded unless the frame starts
 *   with "-MOVED " or "-ASK ".
 * - A redirection is untrusted input (rule 10): parseRedirect never throws; anything that is not exactly
 *   `-MOVED <slot> <host>:<port>` / `-ASK <slot> <host>:<port>` with slot 0..16383, port 1..65535 and a host
 *   that is an IPv4 address, an IPv6 address (bracketed "[::1]" or bare "::1", as Redis writes it), a host
 *   name, or empty, comes back as `{ kind: 'invalid', reason }`, never as a target.
 * - An empty host (`-MOVED 3999 :6381`, sent by nodes with cluster-preferred-endpoint-type unknown-endpoint)
 *   means "the host of the node that sent this reply": the target has `sameHost: true`, `host: ''` and
 *   `address: ':6381'`; resolve it with `withHost(redirect, answeringHost)` before using the address.
 * - `address` has the same form as NodeInfo.address in cluster-discovery.ts ("host:port", IPv6 in brackets), so
 *   it can be used directly as a pool key.
 *
 * Retryable errors, and why LOADING is not CLUSTERDOWN:
 * - TRYAGAIN: a multi-key command hit a slot being migrated with only some of its keys moved. Retry the same
 *   command later (backoff); the slot map is right.
 * - CLUSTERDOWN: the node thinks the cluster (or this slot) is not served: a master failed and its replica is
 *   not promoted yet, or a slot is unassigned. Retry with backoff AND refresh the slot map, since the answer is
 *   usually a promoted replica elsewhere.
 * - LOADING: this one node is loading its data set (restart, full sync of a replica). It says nothing about the
 *   cluster or the slot map, so isClusterDown() does NOT include it; isLoading() detects it and
 *   retryableError() reports it separately, so a caller can retry without a refresh, or read from the master.
 */

import { isIPv6 } from 'node:net';

export const SLOT_COUNT = 16384;

/** Longest first line parseRedirect reads: "-MOVED 16383 " + a 255-byte host in brackets + ":65535\r\n" fits. */
export const MAX_REDIRECT_LINE = 300;

export type RedirectKind = 'moved' | 'ask';

/** A valid redirection. */
export interface RedirectTarget {
  kind: RedirectKind;
  slot: number;
  /** '' when sameHost. IPv6 without brackets. */
  host: string;
  port: number;
  /** "host:port", "[v6]:port", or ":port" when sameHost. */
  address: string;
  /** The reply gave no host: the target is on the host of the node that answered. */
  sameHost: boolean;
}

/** A MOVED or ASK reply that is malformed or names an impossible target. */
export interface InvalidRedirect {
  kind: 'invalid';
  /** Which redirection it claimed to be. */
  of: RedirectKind;
  /** What is wrong, for logs: e.g. 'slot 16384 is out of range (0..16383)'. */
  reason: string;
}

export type Redirect = RedirectTarget | InvalidRedirect;

/** Transient cluster errors worth retrying; see the file comment for what each one means. */
export type RetryableError = 'tryagain' | 'clusterdown' | 'loading';

const MOVED = Buffer.from('-MOVED', 'latin1');
const ASK = Buffer.from('-ASK', 'latin1');
const TRYAGAIN = Buffer.from('-TRYAGAIN', 'latin1');
const CLUSTERDOWN = Buffer.from('-CLUSTERDOWN', 'latin1');
const LOADING = Buffer.from('-LOADING', 'latin1');
const MASTERDOWN = Buffer.from('-MASTERDOWN', 'latin1');

const SPACE = 0x20;
const CR = 0x0d;
const LF = 0x0a;
const DASH = 0x2d;

/** Host names: letters, digits, '_', '-', '.', not starting or ending with '-' or '.' (a trailing dot is FQDN). */
const HOST_NAME_RE = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$/;

function startsWith(frame: Buffer, prefix: Buffer): boolean {
  if (frame.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (frame[i] !== prefix[i]) return false;
  return true;
}

/** The frame is the error `code` itself (followed by a space, the end of the line, or the end of the frame). */
function isErrorCode(frame: Buffer, code: Buffer): boolean {
  if (!startsWith(frame, code)) return false;
  const next = frame[code.length];
  return next === undefined || next === SPACE || next === CR;
}

/** True for "-MOVED ..." and "-ASK ..." frames (valid or not): the cheap test before parseRedirect. */
export function isRedirect(frame: Buffer): boolean {
  return frame[0] === DASH && (isErrorCode(frame, MOVED) || isErrorCode(frame, ASK));
}

/**
 * Parses a MOVED or ASK error reply. Returns null when the frame is not one (any other reply, including other
 * errors), a RedirectTarget when it is valid, and an InvalidRedirect saying why when it is not.
 */
export function parseRedirect(frame: Buffer): Redirect | null {
  if (frame[0] !== DASH) return null;
  let kind: RedirectKind;
  if (isErrorCode(frame, MOVED)) kind = 'moved';
  else if (isErrorCode(frame, ASK)) kind = 'ask';
  else return null;
  const codeEnd = kind === 'moved' ? MOVED.length : ASK.length;
  if (frame[codeEnd] !== SPACE) return invalid(kind, 'missing slot and address');
  let i = codeEnd + 1;

  // The first line, without its CRLF; a frame cut before its CRLF is read to its end.
  const limit = Math.min(frame.length, MAX_REDIRECT_LINE);
  let end = i;
  while (end < limit && frame[end] !== CR && frame[end] !== LF) end++;
  if (end === limit && limit < frame.length) {
    return invalid(kind, `longer than ${MAX_REDIRECT_LINE} bytes`);
  }

  // Slot: decimal digits, 0..16383.
  const slotEnd = tokenEnd(frame, i, end);
  const slotText = frame.toString('latin1', i, slotEnd);
  if (slotText === '') return invalid(kind, i === end ? 'missing slot and address' : 'missing slot');
  if (!/^\d+$/.test(slotText)) return invalid(kind, `slot ${JSON.stringify(slotText)} is not a number`);
  const slot = slotText.length > 5 ? SLOT_COUNT : Number(slotText);
  if (slot >= SLOT_COUNT) return invalid(kind, `slot ${slotText} is out of range (0..${SLOT_COUNT - 1})`);
  if (slotEnd === end) return invalid(kind, 'missing address');
  i = slotEnd + 1; // the space

  // Address: host:port, the last colon separates the port.
  const text = frame.toString('latin1', i, end);
  if (text === '') return invalid(kind, 'missing address');
  if (/\s/.test(text)) return invalid(kind, `unexpected text after the address in ${JSON.stringify(text)}`);
  const colon = text.lastIndexOf(':');
  if (colon === -1) return invalid(kind, `missing port in address ${JSON.stringify(text)}`);
  const portText = text.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portText)) {
    return invalid(
      kind,
      portText === ''
        ? `missing port in address ${JSON.stringify(text)}`
        : `port ${JSON.stringify(portText)} is not a number`,
    );
  }
  const port = Number(portText);
  if (port < 1 || port > 65535) return invalid(kind, `port ${port} is out of range (1..65535)`);

  let host = text.slice(0, colon);
  if (host === '') {
    return { kind, slot, host: '', port, address: `:${port}`, sameHost: true };
  }
  if (host.charCodeAt(0) === 0x5b /* [ */) {
    if (host.charCodeAt(host.length - 1) !== 0x5d /* ] */ || !isIPv6(host.slice(1, -1))) {
      return invalid(kind, `host ${JSON.stringify(host)} is not a valid IPv6 address`);
    }
    host = host.slice(1, -1);
  } else if (host.indexOf(':') !== -1) {
    // Redis writes IPv6 targets bare: "-MOVED 3999 ::1:6381".
    if (!isIPv6(host)) return invalid(kind, `host ${JSON.stringify(host)} is not a valid IPv6 address`);
  } else if (host.length > 255 || !HOST_NAME_RE.test(host)) {
    return invalid(kind, `host ${JSON.stringify(host)} is not a valid host name or IP address`);
  }
  return { kind, slot, host, port, address: formatAddress(host, port), sameHost: false };
}

/** A sameHost target resolved against the host of the node that answered; other redirects unchanged. */
export function withHost(r: RedirectTarget, answeringHost: string): RedirectTarget {
  if (!r.sameHost) return r;
  return {
    kind: r.kind,
    slot: r.slot,
    host: answeringHost,
    port: r.port,
    address: formatAddress(answeringHost, r.port),
    sameHost: false,
  };
}

/** "host:port"; IPv6 in brackets. */
export function formatAddress(host: string, port: number): string {
  return host.indexOf(':') !== -1 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** -TRYAGAIN: a multi-key command during a slot migration; retry the same command later. */
export function isTryAgain(frame: Buffer): boolean {
  return frame[0] === DASH && isErrorCode(frame, TRYAGAIN);
}

/** -CLUSTERDOWN (cluster down, slot not served, read-only while down): retry later and refresh the map. */
export function isClusterDown(frame: Buffer): boolean {
  return frame[0] === DASH && isErrorCode(frame, CLUSTERDOWN);
}

/** -LOADING: that node is loading its data set. Not a cluster condition (see the file comment). */
export function isLoading(frame: Buffer): boolean {
  return frame[0] === DASH && isErrorCode(frame, LOADING);
}

/** -MASTERDOWN: a replica (replica-serve-stale-data no) lost its master; read from the master instead. */
export function isMasterDown(frame: Buffer): boolean {
  return frame[0] === DASH && isErrorCode(frame, MASTERDOWN);
}

/** Which transient cluster error the frame is, or null: one dispatch for the retry path. */
export function retryableError(frame: Buffer): RetryableError | null {
  if (frame[0] !== DASH) return null;
  if (isErrorCode(frame, TRYAGAIN)) return 'tryagain';
  if (isErrorCode(frame, CLUSTERDOWN)) return 'clusterdown';
  if (isErrorCode(frame, LOADING)) return 'loading';
  return null;
}

function invalid(of: RedirectKind, reason: string): InvalidRedirect {
  return { kind: 'invalid', of, reason };
}

/** Index of the first space at or after `from`, or `end`. */
function tokenEnd(frame: Buffer, from: number, end: number): number {
  let to = from;
  while (to < end && frame[to] !== SPACE) to++;
  return to;
}
