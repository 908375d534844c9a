/**
 * Gate: a TCP relay in front of a redis-server for tests that must hold one connection's bytes at a chosen moment:
 * what keymux writes on the next connection it opens through the gate (a session connection on its way) is kept
 * until released, and the first SCAN reply passing back (a key migration scanning that shard) is reported.
 */
import net from 'node:net';

/**
 * A relay in front of a shard that holds back what keymux writes on the next connection it opens (a session
 * connection still on its way) until released, and reports the first SCAN reply it passes back (the migration
 * scanning that shard).
 */
export class Gate {
  readonly server: net.Server;
  readonly port: number;
  private holdNext = false;
  private held: { out: net.Socket; bytes: Buffer[] } | null = null;
  private heldSeen: (text: string) => void = () => undefined;
  private holdOn: { text: string; seen: () => void } | null = null;
  private awaitReply: { text: string; done: () => void } | null = null;
  private replyHoldOn: { text: string; held: () => void } | null = null;
  private heldReplies: { inbound: net.Socket; bytes: Buffer[]; held: (() => void) | null } | null = null;
  onScanReply: () => void = () => undefined;
  private readonly sockets = new Set<net.Socket>();

  private constructor(server: net.Server, port: number) {
    this.server = server;
    this.port = port;
  }

  static start(target: number): Promise<Gate> {
    return new Promise((resolve) => {
      let gate: Gate | null = null;
      const server = net.createServer((s) => gate?.accept(s, target));
      server.listen(0, '127.0.0.1', () => {
        gate = new Gate(server, (server.address() as net.AddressInfo).port);
        resolve(gate);
      });
    });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Holds the next connection's bytes; resolves once they include `text`. */
  holdUntilSeen(text: string): Promise<void> {
    this.holdNext = true;
    return new Promise((resolve) => {
      this.heldSeen = (seen) => {
        if (seen.includes(text)) resolve();
      };
    });
  }

  /**
   * Holds, from the first chunk that includes `text`, the bytes of whichever connection sends it (one already
   * open: a reused session connection); resolves once that chunk is held.
   */
  holdFrom(text: string): Promise<void> {
    return new Promise((resolve) => {
      this.holdOn = { text, seen: resolve };
    });
  }

  /**
   * Passes on the first chunk that includes `text` (on whichever connection sends it), then holds what the shard
   * answers on that connection until released: the command has run, its reply is late. Resolves once the shard's
   * answer is held.
   */
  holdRepliesFrom(text: string): Promise<void> {
    return new Promise((resolve) => {
      this.replyHoldOn = { text, held: resolve };
    });
  }

  /** Resolves once the shard has answered (its reply passed back) a chunk that includes `text`. */
  answered(text: string): Promise<void> {
    return new Promise((resolve) => {
      this.awaitReply = { text, done: resolve };
    });
  }

  release(): void {
    const replies = this.heldReplies;
    if (replies !== null) {
      this.heldReplies = null;
      for (const bytes of replies.bytes) replies.inbound.write(bytes);
    }
    const held = this.held;
    if (held === null) return;
    this.held = null;
    for (const bytes of held.bytes) held.out.write(bytes);
  }

  private accept(inbound: net.Socket, target: number): void {
    const out = net.connect(target, '127.0.0.1');
    for (const s of [inbound, out]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => undefined);
      s.on('close', () => {
        inbound.destroy();
        out.destroy();
        this.sockets.delete(s);
      });
    }
    let hold = this.holdNext ? { out, bytes: [] as Buffer[] } : null;
    this.holdNext = false;
    if (hold !== null) this.held = hold;
    let scanning = false;
    inbound.on('data', (d: Buffer) => {
      if (hold !== null && this.held === hold) {
        hold.bytes.push(d);
        this.heldSeen(Buffer.concat(hold.bytes).toString('latin1'));
        return;
      }
      const on = this.holdOn;
      if (on !== null && d.toString('latin1').includes(on.text)) {
        this.holdOn = null;
        hold = { out, bytes: [d] };
        this.held = hold;
        on.seen();
        return;
      }
      if (d.toString('latin1').includes('SCAN')) scanning = true;
      const replyOn = this.replyHoldOn;
      if (replyOn !== null && d.toString('latin1').includes(replyOn.text)) {
        this.replyHoldOn = null;
        this.heldReplies = { inbound, bytes: [], held: replyOn.held };
      }
      const wanted = this.awaitReply;
      if (wanted !== null && d.toString('latin1').includes(wanted.text)) {
        this.awaitReply = null;
        replied = wanted.done;
      }
      out.write(d);
    });
    let replied: (() => void) | null = null;
    out.on('data', (d: Buffer) => {
      const holding = this.heldReplies;
      if (holding !== null && holding.inbound === inbound) {
        holding.bytes.push(d);
        const held = holding.held;
        holding.held = null;
        held?.();
        return;
      }
      inbound.write(d);
      if (replied !== null) {
        const done = replied;
        replied = null;
        done();
      }
      if (scanning) {
        scanning = false;
        this.onScanReply();
      }
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
