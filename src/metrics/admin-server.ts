/**
 * Admin HTTP server on the `admin:` address: a route table of (method, path) -> handler. It answers /healthz
 * (the process is alive and its event loop turns) and /readyz (a config is loaded, at least one shard is
 * reachable, and keymux is not draining) itself; everything else is added with addRoute (endpoints.ts adds
 * /metrics, /shards, /hotkeys and /slowlog; other parts of keymux add theirs, e.g. POST /reload). HEAD is answered
 * by the GET handler without a body; a known path with another method gets 405 and an Allow header; an unknown
 * path 404; a handler that throws or rejects, 500. Control plane only: nothing here touches the data path.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AdminState {
  ready(): { ok: boolean; reason: string };
}

/** Handles one request; `url` is the parsed request URL (query parameters in url.searchParams). */
export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;

export class AdminServer {
  private readonly server: http.Server;
  private readonly state: AdminState;
  /** path -> method (uppercase) -> handler */
  private readonly routes: Map<string, Map<string, RouteHandler>>;
  private onError: (err: unknown, method: string, path: string) => void;

  constructor(state: AdminState) {
    this.state = state;
    this.routes = new Map();
    this.onError = () => undefined;
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
    this.addRoute('GET', '/healthz', (_req, res) => sendText(res, 200, 'ok\n'));
    this.addRoute('GET', '/readyz', (_req, res) => {
      const r = this.state.ready();
      sendText(res, r.ok ? 200 : 503, `${r.ok ? 'ready' : 'not ready'}: ${r.reason}\n`);
    });
  }

  /** Adds (or replaces) the handler for `method` (GET, POST, ...) on `path` (exact match, e.g. "/reload"). */
  addRoute(method: string, path: string, handler: RouteHandler): this {
    let byMethod = this.routes.get(path);
    if (byMethod === undefined) this.routes.set(path, (byMethod = new Map()));
    byMethod.set(method.toUpperCase(), handler);
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
    const handler = byMethod.get(method) ?? (method === 'HEAD' ? byMethod.get('GET') : undefined);
    if (handler === undefined) {
      const allow = [...byMethod.keys()];
      if (allow.includes('GET')) allow.push('HEAD');
      res.setHeader('allow', allow.join(', '));
      sendText(res, 405, `method ${method} not allowed on ${url.pathname} (allowed: ${allow.join(', ')})\n`);
      return;
    }
    const fail = (err: unknown): void => {
      this.onError(err, method, url.pathname);
      if (!res.headersSent) sendText(res, 500, `internal error: ${(err as Error)?.message ?? String(err)}\n`);
      else res.destroy();
    };
    try {
      const r = handler(req, res, url);
      if (r instanceof Promise) r.catch(fail);
    } catch (err) {
      fail(err);
    }
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
