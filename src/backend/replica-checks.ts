/**
 * ReplicaChecks (slots and ring modes): decides which replica pools may serve reads. Every
 * replica_checks.interval_ms it asks each shard's primary for INFO replication (master_repl_offset) and each of
 * its replicas for INFO replication and INFO persistence, and marks a replica pool `readable` only when the
 * replica is not loading, not in a full sync, its link to the primary is up, and its offset is within
 * replica_checks.max_lag_bytes of the primary's. A replica that does not answer is not readable either (the pool's
 * own connection state also says so at once). Topology.readPool reads the flag; nothing here runs per request.
 * Control plane: short-lived control connections (control.ts), one round at a time.
 */
import type { KeymuxConfig } from '../config/schema.js';
import { controlCommands, type ControlTarget } from './control.js';
import type { ShardPool } from './pool.js';
import type { Topology } from '../routing/topology.js';
import { childLogger, type Logger } from '../log.js';

export interface ReplicaCheckHost {
  readonly topology: Topology;
}

/** The fields of an INFO text, as a map. */
function infoFields(text: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (typeof text !== 'string') return out;
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

/** Why a replica with these INFO fields may not serve reads (null: it may), given its primary's offset. */
export function replicaProblem(
  info: Map<string, string>,
  primaryOffset: number | null,
  maxLagBytes: number | null,
): string | null {
  if (info.get('role') !== 'slave') return `not a replica (role ${info.get('role') ?? 'unknown'})`;
  if (info.get('loading') === '1') return 'loading its data set';
  if (info.get('master_sync_in_progress') === '1') return 'syncing with its primary';
  if (info.get('master_link_status') !== 'up') return 'its link to the primary is down';
  if (maxLagBytes === null) return null;
  const offset = Number(info.get('slave_repl_offset') ?? NaN);
  if (primaryOffset === null || !Number.isFinite(offset)) return 'replication offset unknown';
  const lag = primaryOffset - offset;
  return lag > maxLagBytes ? `lagging ${lag} bytes behind its primary (bound ${maxLagBytes})` : null;
}

export class ReplicaChecks {
  private readonly host: ReplicaCheckHost;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | null = null;
  private intervalMs = 0;
  private running = false;
  private again = false;
  private closed = false;

  constructor(host: ReplicaCheckHost) {
    this.host = host;
    this.log = childLogger('replicas');
  }

  /** (Re)starts the periodic checks for `config` and checks at once (a new snapshot may have new replicas). */
  configure(config: KeymuxConfig): void {
    if (this.closed) return;
    const ms = config.replicaChecks.intervalMs;
    if (this.timer === null || ms !== this.intervalMs) {
      if (this.timer !== null) clearInterval(this.timer);
      this.intervalMs = ms;
      this.timer = setInterval(() => void this.round(), ms);
      this.timer.unref();
    }
    void this.round();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round over every shard with replicas (a round asked for while one runs runs right after it). */
  async round(): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      do {
        this.again = false;
        const topo = this.host.topology;
        await Promise.all(topo.shards.filter((s) => s.replicas.length > 0).map((s) => this.checkShard(topo, s)));
      } while (this.again && !this.closed);
    } finally {
      this.running = false;
    }
  }

  private async checkShard(topo: Topology, shard: Topology['shards'][number]): Promise<void> {
    const config = topo.config;
    const target = (p: ShardPool): ControlTarget => ({
      host: p.shard.host,
      port: p.shard.port,
      password: config.backend.password,
      username: config.backend.username,
      timeoutMs: Math.max(100, Math.min(config.backend.timeoutMs || 1000, config.replicaChecks.intervalMs)),
      tls: config.backend.tls,
    });
    const maxLag = config.replicaChecks.maxLagBytes;
    const primaryOffset =
      maxLag === null
        ? null
        : await controlCommands(target(shard.pool), [['INFO', 'replication']]).then(
            ([r]) => {
              const v = Number(infoFields(r).get('master_repl_offset') ?? NaN);
              return Number.isFinite(v) ? v : null;
            },
            () => null,
          );
    await Promise.all(
      shard.replicas.map(async (p) => {
        let problem: string | null;
        try {
          const [repl, persistence] = await controlCommands(target(p), [
            ['INFO', 'replication'],
            ['INFO', 'persistence'],
          ]);
          const info = infoFields(repl);
          for (const [k, v] of infoFields(persistence)) info.set(k, v);
          problem = replicaProblem(info, primaryOffset, maxLag);
        } catch (err) {
          problem = `does not answer (${(err as Error).message})`;
        }
        const readable = problem === null;
        if (readable !== p.readable) {
          (readable ? this.log.info : this.log.warn).call(
            this.log,
            { shard: shard.name, replica: p.shard.address, reason: problem ?? 'ok' },
            readable ? 'replica serves reads' : 'replica skipped for reads',
          );
        }
        p.readable = readable;
        p.readableReason = problem ?? 'ok';
      }),
    );
  }
}
