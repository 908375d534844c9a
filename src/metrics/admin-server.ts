/**
 * Admin HTTP server on the `admin:` address (HTTPS with `admin.tls`): a route table of (method, path) -> handler.
 * It answers /healthz (the process is alive and its event loop turns) and /readyz (a config is loaded, at least
 * one shard is reachable, and keymux is not draining) itself; everything else is added with addRoute (endpoints.ts
 * adds /metrics, /shards, /hotkeys and /slowlog; other parts of keymux add theirs, e.g. POST /reload). HEAD is
 * answered by the GET handler without a body; a known path with another method gets 405 and an Allow header; an
 * unknown path 404; a handler that throws or rejects, 500. Control plane only: nothing here touches the data path.
 *
 * Who may do what (README "Security"), checked before any handler runs:
 * - With `admin.token_file`, every route needs `Authorization: Bearer TOKEN` (401 otherwise) except the ones added
 *   as 'open' (/healthz, /readyz) and, while `public_metrics` holds, 'metrics' (/metrics). The token is compared
 *   in constant time and read per request, so a rotated token file takes effect at once.
 * - A request that changes state (any method but GET and HEAD) is refused when it carries an Origin header or a
 *   body type a web page may send without asking (form, multipart, text/plain): a browser sends Origin with every
 *   such request, so a page the operator happens to visit cannot POST /reload or DELETE /slowlog, token or not.
 * - Without a token, only requests addressed to an IP address or `localhost` are answered (apart from the probes):
 *   a page served from an attacker's name that resolves to 127.0.0.1 (DNS rebinding) would otherwise read the
 *   admin port as its own origin.
 * Handlers learn whether the caller showed the token (`caller.authorized`) and show key names, file paths and
 * shard addresses only then.
 */
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import { isIP, type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { contextPart, type ServerTlsOptions } from '../security/tls.js';

export interface AdminState {
  ready(): { ok: boolean; reason: string };
}

/** The admin port's access settings, read per request (a reload or a rotated file changes them in place). */
export interface AdminAccess {
  /** The bearer token (admin.token_file), or null: no token is asked for. */
  token(): Buffer | null;
  /** With a token: /metrics answers without it. */
  publicMetrics(): boolean;
  /** Called for each refused request (counted, and logged at most every few seconds by the caller). */
  refused?(reason: string, req: http.IncomingMessage): void;
}

/** Who may call a route: anyone (probes), anyone while metrics are public, or only holders of the token. */
export type RouteAccess = 'open' | 'metrics' | 'token';

/** What a handler knows about its caller. */
export interface Caller {
  /** The caller showed the admin token (never true when no token is configured). */
  authorized: boolean;
}

/** Handles one request; `url` is the parsed request URL (query parameters in url.searchParams). */
export type RouteHandler = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
  caller: Caller,
) => void | Promise<void>;

interface Route {
  handler: RouteHandler;
  access: RouteAccess;
}

/** Body types a web page may send to any origin without a CORS preflight. */
const SIMPLE_BODY_TYPES = /^\s*(text\/plain|application\/x-www-form-urlencoded|multipart\/form-data)\s*(;|$)/i;

const NO_TOKEN: AdminAccess = { token: () => null, publicMetrics: () => true };

export class AdminServer {
  private readonly server: http.Server | https.Server;
  private readonly state: AdminState;
  private readonly access: AdminAccess;
  /** path -> method (uppercase) -> route */
  private readonly routes: Map<string, Map<string, Route>>;
  private onError: (err: unknown, method: string, path: string) => void;

  constructor(state: AdminState, options: { access?: AdminAccess; tls?: ServerTlsOptions | null } = {}) {
    this.state = state;
    this.access = options.access ?? NO_TOKEN;
    this.routes = new Map();
    this.onError = () => undefined;
    const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => this.handle(req, res);
    this.server = options.tls ? https.createServer(options.tls, handle) : http.createServer(handle);
    this.server.keepAliveTimeout = 5000;
    this.addRoute('GET', '/healthz', (_req, res) => sendText(res, 200, 'ok\n'), 'open');
    this.addRoute(
      'GET',
      '/readyz',
      (_req, res) => {
        const r = this.state.ready();
        sendText(res, r.ok ? 200 : 503, `${r.ok ? 'ready' : 'not ready'}: ${r.reason}\n`);
      },
      'open',
    );
  }

  /**
   * Adds (or replaces) the handler for `method` (GET, POST, ...) on `path` (exact match, e.g. "/reload"). Routes
   * need the admin token when one is configured unless `access` says otherwise.
   */
  addRoute(method: string, path: string, handler: RouteHandler, access: RouteAccess = 'token'): this {
    let byMethod = this.routes.get(path);
    if (byMethod === undefined) this.routes.set(path, (byMethod = new Map()));
    byMethod.set(method.toUpperCase(), { handler, access });
    return this;
  }

  /** Paths with a handler, sorted (for an index or a test). */
  get paths(): string[] {
    return [...this.routes.keys()].sort();
  }

  /** Called when a handler throws or rejects (the client gets a 500). */
  setErrorHandler(fn: (err: unknown, method: string, path: string) => void): void {
    this.onError = fn;
  }

  /** HTTPS only: a new certificate (or client CA) for connections from now on. */
  setSecureContext(options: ServerTlsOptions): void {
    if (this.server instanceof https.Server) this.server.setSecureContext(contextPart(options));
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin');
    } catch {
      sendText(res, 400, 'bad request\n');
      return;
    }
    const byMethod = this.routes.get(url.pathname);
    if (byMethod === undefined) {
      sendText(res, 404, 'not found\n');
      return;
    }
    const method = (req.method ?? 'GET').toUpperCase();
    const route = byMethod.get(method) ?? (method === 'HEAD' ? byMethod.get('GET') : undefined);
    if (route === undefined) {
      const allow = [...byMethod.keys()];
      if (allow.includes('GET')) allow.push('HEAD');
      res.setHeader('allow', allow.join(', '));
      sendText(res, 405, `method ${method} not allowed on ${url.pathname} (allowed: ${allow.join(', ')})\n`);
      return;
    }
    const caller = this.check(req, res, method, route.access);
    if (caller === null) return;
    const fail = (err: unknown): void => {
      this.onError(err, method, url.pathname);
      if (!res.headersSent) sendText(res, 500, `internal error: ${(err as Error)?.message ?? String(err)}\n`);
      else res.destroy();
    };
    try {
      const r = route.handler(req, res, url, caller);
      if (r instanceof Promise) r.catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  /** The access rules of the file comment; answers the refusal itself and returns null, or the caller. */
  private check(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    access: RouteAccess,
  ): Caller | null {
    const refuse = (status: number, reason: string, headers: Record<string, string> = {}): null => {
      this.access.refused?.(reason, req);
      for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
      sendText(res, status, `refused: ${reason}\n`);
      return null;
    };
    if (method !== 'GET' && method !== 'HEAD') {
      if (req.headers.origin !== undefined) {
        return refuse(403, 'a request with an Origin header comes from a web page; state-changing requests never do');
      }
      const type = req.headers['content-type'];
      if (type !== undefined && SIMPLE_BODY_TYPES.test(type)) {
        return refuse(
          415,
          `a web page can send ${type.split(';')[0]!.trim()} to any site; send application/json, application/yaml ` +
            'or no body',
        );
      }
    }
    const token = this.access.token();
    const authorized = token !== null && bearerMatches(req.headers.authorization, token);
    if (access === 'open') return { authorized };
    if (token === null) {
      const host = hostName(req.headers.host);
      if (host !== null && isIP(host) === 0 && host !== 'localhost' && !host.endsWith('.localhost')) {
        return refuse(
          403,
          `the request is addressed to the name ${JSON.stringify(host)}; without admin.token_file the admin port ` +
            'answers only requests addressed to an IP address or localhost (a defence against DNS rebinding)',
        );
      }
      return { authorized };
    }
    if (authorized || (access === 'metrics' && this.access.publicMetrics())) return { authorized };
    return refuse(
      401,
      req.headers.authorization === undefined
        ? 'this endpoint needs the admin token: Authorization: Bearer TOKEN'
        : 'the admin token is wrong',
      { 'www-authenticate': 'Bearer realm="keymux admin"' },
    );
  }
}

/** The host part of a Host header ("[::1]:9121" -> "::1"), lowercased; null when absent. */
function hostName(header: string | undefined): string | null {
  if (header === undefined || header === '') return null;
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') === -1 ? undefined : h.indexOf(']'));
  const colon = h.lastIndexOf(':');
  return colon === -1 ? h : h.slice(0, colon);
}

/** `Authorization: Bearer X` with X equal to the token; constant time over the digests, whatever their lengths. */
function bearerMatches(header: string | undefined, token: Buffer): boolean {
  if (header === undefined) return false;
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(header);
  if (m === null) return false;
  const digest = (b: Buffer | string): Buffer => crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(digest(m[1]!), digest(token));
}

/** Limits log lines about refused admin requests: at most one per `intervalMs`, with the count since the last. */
export class RefusalLog {
  private unlogged = 0;
  private loggedAt = -Infinity;
  constructor(private readonly intervalMs: number) {}
  /** Counts one refusal; returns the count to log now, or 0 (not yet). */
  note(): number {
    this.unlogged++;
    const now = performance.now();
    if (now - this.loggedAt < this.intervalMs) return 0;
    this.loggedAt = now;
    const n = this.unlogged;
    this.unlogged = 0;
    return n;
  }
}

export function sendText(
  res: http.ServerResponse,
  status: number,
  body: string,
  contentType = 'text/plain; charset=utf-8',
): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  sendText(res, status, `${JSON.stringify(value, null, 2)}\n`, 'application/json; charset=utf-8');
}
