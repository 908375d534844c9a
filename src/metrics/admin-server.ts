/**
 * Admin HTTP server on the `admin:` address: /healthz (the process is alive and its event loop turns) and
 * /readyz (a config is loaded, at least one shard is reachable, and keymux is not draining). Later issues add
 * /metrics and admin endpoints here. Control plane only: nothing here touches the data path.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AdminState {
  ready(): { ok: boolean; reason: string };
}

export class AdminServer {
  private readonly server: http.Server;
  private readonly state: AdminState;

  constructor(state: AdminState) {
    this.state = state;
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
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
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return send(res, 200, 'ok\n');
    if (path === '/readyz') {
      const r = this.state.ready();
      return send(res, r.ok ? 200 : 503, `${r.ok ? 'ready' : 'not ready'}: ${r.reason}\n`);
    }
    send(res, 404, 'not found\n');
  }
}

function send(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
