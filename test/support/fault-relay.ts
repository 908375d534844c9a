/**
 * A TCP relay between keymux and one real redis-server that injects faults on command, for the fault-injector
 * suite. keymux is configured with the relay's address as the shard; every connection keymux opens gets its own
 * pair of sockets, and bytes are forwarded in order in both directions unless a fault says otherwise:
 * - delay(ms): every chunk (both directions) is held `ms` before it is forwarded (order kept);
 * - blackhole(): bytes in both directions are dropped and the connections stay open (a silent network);
 * - stall(): bytes are buffered, not forwarded, until clear() (a paused process; they are delivered then);
 * - cut(): every current connection is destroyed at once (mid-reply, mid-request);
 * - reorderByReconnect(): replies on the current connections are held back; once keymux has given up on them
 *   and opened a new connection that carried traffic, the held replies are released onto the old connections
 *   (whose keymux side is gone or must ignore them): late replies racing the new connection's;
 * - clear(): back to forwarding (stalled bytes delivered).
 * Counts faults injected and connections seen. Only sockets it created are touched.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

type Mode = 'pass' | 'delay' | 'blackhole' | 'stall';

/** One direction of a connection: chunks in order, each with the time it may leave (a delay never reorders). */
interface Lane {
  to: net.Socket;
  queue: Array<{ at: number; bytes: Buffer }>;
  timer: NodeJS.Timeout | null;
}

interface Pair {
  client: net.Socket; // keymux's side
  server: net.Socket; // redis's side
  up: Lane;
  down: Lane;
  /** Replies held for reorder-by-reconnect. */
  reorderHeld: boolean;
}

export class FaultRelay {
  readonly port: number;
  readonly target: number;
  faults = 0;
  connections = 0;
  private readonly server: net.Server;
  private readonly pairs = new Set<Pair>();
  private mode: Mode = 'pass';
  private delayMs = 0;
  private reorderWaiting: Pair[] = [];

  private constructor(server: net.Server, port: number, target: number) {
    this.server = server;
    this.port = port;
    this.target = target;
  }

  static start(target: number): Promise<FaultRelay> {
    return new Promise((resolve, reject) => {
      let relay: FaultRelay | null = null;
      const server = net.createServer((client) => relay?.accept(client));
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        relay = new FaultRelay(server, (server.address() as net.AddressInfo).port, target);
        resolve(relay);
      });
    });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  private accept(client: net.Socket): void {
    this.connections++;
    const server = net.connect(this.target, '127.0.0.1');
    client.setNoDelay(true);
    server.setNoDelay(true);
    const lane = (to: net.Socket): Lane => ({ to, queue: [], timer: null });
    const pair: Pair = { client, server, up: lane(server), down: lane(client), reorderHeld: false };
    this.pairs.add(pair);
    const end = () => {
      client.destroy();
      server.destroy();
      for (const l of [pair.up, pair.down]) if (l.timer !== null) clearTimeout(l.timer);
      this.pairs.delete(pair);
    };
    client.on('data', (d: Buffer) => this.enqueue(pair, pair.up, d));
    server.on('data', (d: Buffer) => this.enqueue(pair, pair.down, d));
    client.on('close', end);
    server.on('close', end);
    client.on('error', () => undefined);
    server.on('error', () => undefined);
    // A new connection carrying traffic releases the replies held for reorder-by-reconnect.
    if (this.reorderWaiting.length > 0) {
      server.once('data', () => {
        const held = this.reorderWaiting;
        this.reorderWaiting = [];
        for (const p of held) {
          p.reorderHeld = false;
          this.pump(p, p.down);
        }
      });
    }
  }

  private enqueue(pair: Pair, lane: Lane, bytes: Buffer): void {
    if (this.mode === 'blackhole') return;
    const now = performance.now();
    const last = lane.queue.length > 0 ? lane.queue[lane.queue.length - 1].at : 0;
    lane.queue.push({ at: Math.max(now + (this.mode === 'delay' ? this.delayMs : 0), last), bytes });
    this.pump(pair, lane);
  }

  private pump(pair: Pair, lane: Lane): void {
    if (lane.timer !== null) {
      clearTimeout(lane.timer);
      lane.timer = null;
    }
    if (this.mode === 'stall' || (lane === pair.down && pair.reorderHeld)) return;
    const now = performance.now();
    while (lane.queue.length > 0 && lane.queue[0].at <= now) {
      const { bytes } = lane.queue.shift()!;
      if (!lane.to.destroyed) lane.to.write(bytes);
    }
    if (lane.queue.length > 0) lane.timer = setTimeout(() => this.pump(pair, lane), lane.queue[0].at - now);
  }

  delay(ms: number): void {
    this.faults++;
    this.mode = 'delay';
    this.delayMs = ms;
  }

  blackhole(): void {
    this.faults++;
    this.mode = 'blackhole';
  }

  stall(): void {
    this.faults++;
    this.mode = 'stall';
  }

  cut(): void {
    this.faults++;
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.server.destroy();
    }
    this.pairs.clear();
  }

  reorderByReconnect(): void {
    this.faults++;
    for (const p of this.pairs) {
      p.reorderHeld = true;
      this.reorderWaiting.push(p);
    }
  }

  /** Back to forwarding; bytes held by a stall are delivered now, in order. */
  clear(): void {
    this.mode = 'pass';
    for (const p of this.pairs) {
      this.pump(p, p.up);
      this.pump(p, p.down);
    }
  }

  close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.server.destroy();
    }
    this.pairs.clear();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
