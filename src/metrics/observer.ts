/**
 * Observer: the data path's one call into metrics, made when a reply is written to its client. It bumps plain
 * numbers only: per-command count, errors and client-observed latency. Later parts (hit/miss per shard, hot
 * keys, slow log) hang off the same call. Unknown commands are counted under one "unknown" name so a client
 * cannot create unbounded label values.
 */
import { performance } from 'node:perf_hooks';
import type { Request } from '../core/request.js';
import type { StatsRegistry, CommandStats } from './stats.js';

export class Observer {
  private readonly stats: StatsRegistry;
  private lastName: string;
  private lastStats: CommandStats | null;

  constructor(stats: StatsRegistry) {
    this.stats = stats;
    this.lastName = '';
    this.lastStats = null;
  }

  onReplied(req: Request): void {
    const spec = req.spec;
    const name = spec === null ? 'unknown' : spec.name;
    let cs = this.lastStats;
    if (name !== this.lastName || cs === null) {
      cs = this.stats.command(name);
      this.lastName = name;
      this.lastStats = cs;
    }
    cs.count++;
    const reply = req.reply as Buffer;
    if (reply[0] === 45 /* - */) cs.errors++;
    cs.latency.observe((performance.now() - req.startedAt) / 1000);
  }

  /** Hot-key tracking hook (sampling and the top-K live behind it). */
  onKeyRouted(_key: Buffer, _shard: number): void {
    // not tracked yet
  }
}
