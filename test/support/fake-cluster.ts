/**
 * Scripted fake Redis Cluster nodes with a tiny real keyspace, for exact ordering and fault cases: each node answers
 * CLUSTER SHARDS with a layout the test controls, AUTH/READONLY/ASKING/PING with +OK, and GET, SET, INCR, DEL, MGET
 * and DBSIZE from its own Map, in the order commands arrive, so the order in which keymux sends a client's commands
 * is visible in the values the client reads. A `before` hook lets a test answer a command with anything else first
 * (-TRYAGAIN, -CLUSTERDOWN, -MOVED, -LOADING, silence). Every data command a node executed is logged, in order.
 */
import { FakeBackend, bulk, type FakeConnection, type ScriptAnswer } from './fake-backend.js';

export interface FakeShardLayout {
  node: FakeClusterNode;
  id: string;
  ranges: Array<[number, number]>;
  replicas?: FakeClusterNode[];
}

export const nodeId = (n: number): string => n.toString(16).padStart(40, '0');

/** A CLUSTER SHARDS reply (RESP2: flat key/value arrays). */
export function shardsReply(shards: FakeShardLayout[]): string {
  const str = (s: string): string => bulk(s);
  const nodeEntry = (n: FakeClusterNode, id: string, role: string): string =>
    `*14\r\n${str('id')}${str(id)}${str('port')}:${n.port}\r\n${str('ip')}${str('127.0.0.1')}` +
    `${str('endpoint')}${str('127.0.0.1')}${str('role')}${str(role)}${str('replication-offset')}:1\r\n` +
    `${str('health')}${str('online')}`;
  let out = `*${shards.length}\r\n`;
  for (const s of shards) {
    const replicas = s.replicas ?? [];
    out += `*4\r\n${str('slots')}*${s.ranges.length * 2}\r\n${s.ranges.map(([a, z]) => `:${a}\r\n:${z}\r\n`).join('')}`;
    out += `${str('nodes')}*${1 + replicas.length}\r\n${nodeEntry(s.node, s.id, 'master')}`;
    replicas.forEach(
      (r, i) => (out += nodeEntry(r, `${s.id.slice(0, 38)}${(i + 1).toString(16).padStart(2, '0')}`, 'replica')),
    );
  }
  return out;
}

/** Answers a command before the keyspace does: a reply, null to let the keyspace answer, or 'silent'. */
export type BeforeHook = (cmd: string[], node: FakeClusterNode, conn: FakeConnection) => ScriptAnswer | 'pass';

export class FakeClusterNode {
  readonly data = new Map<string, string>();
  /** Data commands executed by the keyspace, in order ("SET k v"). */
  readonly executed: string[] = [];
  before: BeforeHook = () => 'pass';
  layout: () => FakeShardLayout[] = () => [];
  backend!: FakeBackend;

  get port(): number {
    return this.backend.port;
  }

  get address(): string {
    return this.backend.address;
  }

  /** Every command received (any kind), as upper-case "NAME args" strings. */
  received(): string[] {
    return this.backend.commands.map((c) => [c[0]!.toUpperCase(), ...c.slice(1)].join(' '));
  }

  static async start(): Promise<FakeClusterNode> {
    const node = new FakeClusterNode();
    node.backend = await FakeBackend.start((cmd, conn) => node.answer(cmd, conn));
    return node;
  }

  close(): Promise<void> {
    return this.backend.close();
  }

  private answer(cmd: string[], conn: FakeConnection): ScriptAnswer {
    const name = cmd[0]!.toUpperCase();
    if (name === 'CLUSTER' && cmd[1]?.toUpperCase() === 'SHARDS') return shardsReply(this.layout());
    if (name === 'AUTH' || name === 'READONLY' || name === 'ASKING') return '+OK\r\n';
    if (name === 'PING') return '+PONG\r\n';
    const first = this.before(cmd, this, conn);
    if (first !== 'pass') return first;
    this.executed.push([name, ...cmd.slice(1)].join(' '));
    const get = (k: string): string => {
      const v = this.data.get(k);
      return v === undefined ? '$-1\r\n' : bulk(v);
    };
    switch (name) {
      case 'GET':
        return get(cmd[1]!);
      case 'SET':
        this.data.set(cmd[1]!, cmd[2]!);
        return '+OK\r\n';
      case 'INCR': {
        const n = Number(this.data.get(cmd[1]!) ?? '0') + 1;
        this.data.set(cmd[1]!, String(n));
        return `:${n}\r\n`;
      }
      case 'DEL': {
        let n = 0;
        for (const k of cmd.slice(1)) if (this.data.delete(k)) n++;
        return `:${n}\r\n`;
      }
      case 'MGET':
        return `*${cmd.length - 1}\r\n${cmd
          .slice(1)
          .map((k) => get(k))
          .join('')}`;
      case 'DBSIZE':
        return `:${this.data.size}\r\n`;
      default:
        return `-ERR fake node: unexpected ${name}\r\n`;
    }
  }
}
