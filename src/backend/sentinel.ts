/**
 * Sentinel-managed shards (slots and ring modes): where each `sentinel_master` shard's primary and replicas are,
 * and following them through failovers without a restart.
 *
 * - Discovery: SENTINEL GET-MASTER-ADDR-BY-NAME and SENTINEL REPLICAS, asking each sentinel in order until one
 *   answers (a replica that is down, disconnected or whose link to its primary is not ok is left out). Start-up
 *   and reloads wait for an answer for every master (a master no sentinel knows is a config error).
 * - Following: one subscriber connection per sentinel, on +switch-master and the leader's +promoted-slave (applied
 *   at once: the message names the new primary) and the events that change a master's replicas or health
 *   (+sdown/-sdown, +odown, +slave, +convert-to-slave, +role-change...: a check of that master). A periodic check of every master is the safety
 *   net; while a shard's primary is unreachable its master is checked every 250 ms.
 * - A change is installed as a new Topology snapshot (SentinelHost.installSentinelView): the shard's pools move to
 *   the new primary (pools of other shards are carried over), client connections stay.
 * - The switch, seen from requests (this is the shards' RedirectHandler): a request whose bytes reach a primary
 *   connection that is down was never written, so it is held (in order, per shard) for at most
 *   sentinel.failover_wait_ms and sent to the shard's primary as soon as there is one again (the new one, or the
 *   old one back); past the bound it gets "-ERR keymux: ..." saying why. A request already written to the old
 *   primary is never re-sent (it gets the connection's error: it may have been applied). The handshake's ROLE check
 *   (backend-connection.ts) keeps writes off a node that is no longer a primary.
 * - A failover the old primary lives through (SENTINEL FAILOVER): from the leader's +selected-slave until the switch
 *   (+promoted-slave or +switch-master), new requests to the shard are held the same way (its pool's connections
 *   hold them: ShardPool.hold) and the old primary is paused for writes (CLIENT PAUSE WRITE); at the switch keymux's
 *   connections to the old primary are closed, so nothing waiting there runs later; on an abort or past
 *   failover_wait_ms the old primary is unpaused and gets what was held. Writes it acknowledged after the promotion
 *   would otherwise be discarded when the sentinels make it a replica.
 * Control plane only: nothing here runs per request unless the shard's primary is unreachable or being replaced.
 */
import net from 'node:net';
import { createRequire } from 'node:module';
import type { Endpoint, KeymuxConfig, SentinelConfig } from '../config/schema.js';
import { formatHostPort } from '../config/fields.js';
import { controlCommands } from './control.js';
import type { BackendConnection, RedirectHandler } from './backend-connection.js';
import type { BackendOp } from '../core/request.js';
import { Request } from '../core/request.js';
import { Fragment } from '../core/fragment.js';
import { commandFrame } from '../resp/writer.js';
import type { SentinelMasterView, SentinelView, Topology } from '../routing/topology.js';
import { childLogger, type Logger } from '../log.js';

const require = createRequire(import.meta.url);
const RedisParser = require('redis-parser') as new (opts: {
  returnReply: (r: unknown) => void;
  returnError: (e: Error) => void;
  returnFatalError?: (e: Error) => void;
}) => { execute(b: Buffer): void; reset(): void };

/** What the controller needs of the proxy. */
export interface SentinelHost {
  readonly topology: Topology;
  /** Builds and installs a snapshot of the running config with `view` (pools move; nothing else changes). */
  installSentinelView(view: SentinelView, reason: string): void;
  /** Closes every session connection (transactions, WATCH, blocking commands) to the node at `address`. */
  closeSessionConnections(address: string): void;
}

/** Events after which a master is checked again (its primary, replicas or their health may have changed). */
const WATCHED = [
  '+switch-master',
  '+sdown',
  '-sdown',
  '+odown',
  '-odown',
  '+slave',
  '+convert-to-slave',
  '+role-change',
  '+reboot',
  '+slave-reconf-done',
  '+fix-slave-config',
  '-failover-abort-no-good-slave',
  '+failover-end',
  // A failover's steps, published by the sentinel leading it only (see SentinelController.beginFailover).
  '+selected-slave',
  '+failover-state-send-slaveof-noone',
  '+promoted-slave',
  '-failover-abort-not-elected',
  '-failover-abort-slave-timeout',
];

const FAST_CHECK_MS = 250;
const HOLD_TICK_MS = 50;

/** The masters of a config (sentinel_master names). */
export function sentinelMasters(config: KeymuxConfig): string[] {
  const out: string[] = [];
  for (const s of config.shards) if (s.sentinelMaster) out.push(s.sentinelMaster);
  return out;
}

/** What the sentinels say of one master: the freshest answer and whether every sentinel gave it. */
export interface SentinelAnswer {
  view: SentinelMasterView;
  /** The answer's config-epoch (SENTINEL MASTER): every failover raises it; -1 when the sentinel did not say. */
  configEpoch: number;
  /** Every configured sentinel answered, naming the same primary at the same epoch. */
  unanimous: boolean;
}

/**
 * Asks every sentinel for `master` at once (its primary, config-epoch and usable replicas) and keeps the answer with
 * the highest config-epoch (ties: the first sentinel in config order). Sentinels learn a failover from its leader a
 * little later each (hello messages, every 2 s): the first sentinel to answer may still name the old primary, which
 * may be back up and not yet converted to a replica, so "the first that answers" could send writes there. Throws
 * when none names a primary (the message says what each answered).
 */
export async function askSentinels(settings: SentinelConfig, master: string): Promise<SentinelAnswer> {
  const problems: string[] = [];
  const answers = await Promise.all(
    settings.sentinels.map(async (s): Promise<SentinelAnswer | null> => {
      try {
        const [info, addr, replicas] = await controlCommands(
          {
            host: s.host,
            port: s.port,
            password: settings.password,
            username: settings.username,
            timeoutMs: settings.timeoutMs,
          },
          [
            ['SENTINEL', 'MASTER', master],
            ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', master],
            ['SENTINEL', 'REPLICAS', master],
          ],
        );
        if (addr instanceof Error) {
          problems.push(`${s.address}: ${addr.message}`);
          return null;
        }
        if (!Array.isArray(addr) || addr.length < 2) {
          problems.push(`${s.address}: does not know a master named ${JSON.stringify(master)}`);
          return null;
        }
        const primary = endpoint(String(addr[0]), Number(addr[1]));
        return {
          view: { primary, replicas: usableReplicas(replicas, primary) },
          configEpoch: configEpochOf(info),
          unanimous: false,
        };
      } catch (err) {
        problems.push(`${s.address}: ${(err as Error).message}`);
        return null;
      }
    }),
  );
  let best: SentinelAnswer | null = null;
  for (const a of answers) if (a !== null && (best === null || a.configEpoch > best.configEpoch)) best = a;
  if (best === null)
    throw new Error(`no sentinel named a primary for ${JSON.stringify(master)} (${problems.join('; ')})`);
  best.unanimous = answers.every(
    (a) => a !== null && a.configEpoch === best.configEpoch && a.view.primary.address === best.view.primary.address,
  );
  return best;
}

/** The config-epoch field of a SENTINEL MASTER reply (a flat field/value array); -1 when absent. */
function configEpochOf(reply: unknown): number {
  if (!Array.isArray(reply)) return -1;
  for (let i = 0; i + 1 < reply.length; i += 2) {
    if (String(reply[i]) === 'config-epoch') {
      const n = Number(String(reply[i + 1]));
      return Number.isSafeInteger(n) ? n : -1;
    }
  }
  return -1;
}

/** Asks for every master of `config`; throws with one line per master no sentinel named. */
export async function resolveSentinelView(config: KeymuxConfig, known?: SentinelView): Promise<SentinelView> {
  const view = new Map<string, SentinelMasterView>();
  const settings = config.sentinel;
  const masters = sentinelMasters(config);
  if (masters.length === 0 || settings === null) return view;
  const errors: string[] = [];
  await Promise.all(
    masters.map(async (m) => {
      const have = known?.get(m);
      if (have !== undefined) {
        view.set(m, have);
        return;
      }
      try {
        view.set(m, (await askSentinels(settings, m)).view);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }),
  );
  if (errors.length > 0) throw new Error(errors.join('\n'));
  return view;
}

/**
 * `config` with each sentinel_master shard's address, host and port set to its primary in `view` (shards of masters
 * not in `view` keep their "sentinel:<name>" placeholder). For plans: keys live where the primary is, so a shard
 * switched between `address` and `sentinel_master` at the same primary moves nothing.
 */
export function configWithPrimaries(config: KeymuxConfig, view: SentinelView): KeymuxConfig {
  if (!config.shards.some((s) => s.sentinelMaster)) return config;
  return {
    ...config,
    shards: config.shards.map((s) => {
      const seen = s.sentinelMaster ? view.get(s.sentinelMaster) : undefined;
      return seen === undefined ? s : { ...s, ...seen.primary };
    }),
  };
}

function endpoint(host: string, port: number): Endpoint {
  return { address: formatHostPort({ host, port }), host, port };
}

/** SENTINEL REPLICAS' answer: replicas that are up, connected and linked to their primary. */
function usableReplicas(reply: unknown, primary: Endpoint): Endpoint[] {
  if (!Array.isArray(reply)) return [];
  const out: Endpoint[] = [];
  for (const entry of reply) {
    if (!Array.isArray(entry)) continue;
    const f = new Map<string, string>();
    for (let i = 0; i + 1 < entry.length; i += 2) f.set(String(entry[i]), String(entry[i + 1]));
    const flags = (f.get('flags') ?? '').split(',');
    if (flags.some((x) => x === 's_down' || x === 'o_down' || x === 'disconnected')) continue;
    if ((f.get('master-link-status') ?? 'ok') !== 'ok') continue;
    const ip = f.get('ip');
    const port = Number(f.get('port'));
    if (ip === undefined || !Number.isInteger(port)) continue;
    const e = endpoint(ip, port);
    if (e.address !== primary.address) out.push(e);
  }
  return out.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

function sameView(a: SentinelMasterView | undefined, b: SentinelMasterView): boolean {
  return (
    a !== undefined &&
    a.primary.address === b.primary.address &&
    a.replicas.length === b.replicas.length &&
    a.replicas.every((r, i) => r.address === b.replicas[i].address)
  );
}

/** A failover seen starting on a shard (its leader chose a replica to promote): new requests are held meanwhile. */
interface FailoverHold {
  /** The sentinel leading the failover (address as configured): its abort ends the hold. */
  leader: string;
  master: string;
  /** The primary being replaced (paused for writes). */
  from: Endpoint;
  /** The hold's bound (start + sentinel.failover_wait_ms): then the old primary is unpaused and requests go on. */
  deadline: number;
}

/** An op held while its shard has no reachable primary. */
interface Held {
  op: BackendOp;
  /** performance-free wall clock is enough here: the bound is seconds, checked every HOLD_TICK_MS. */
  deadline: number;
}

export class SentinelController implements RedirectHandler {
  /** Failovers seen per shard name (primary address changes), for keymux_failovers_total. */
  readonly failovers = new Map<string, number>();
  /** When each shard last changed primary (ms since the epoch), for /shards. */
  readonly lastFailover = new Map<string, { at: number; from: string; to: string }>();
  private settings: SentinelConfig;
  private readonly host: SentinelHost;
  private readonly log: Logger;
  private watchers: SentinelWatcher[] = [];
  private periodic: NodeJS.Timeout | null = null;
  private fast: NodeJS.Timeout | null = null;
  private holdTimer: NodeJS.Timeout | null = null;
  /** Ops held per shard name, oldest first. */
  private readonly held = new Map<string, Held[]>();
  /** First time each op was held (an op held again after a failed re-send keeps its first deadline). */
  private readonly firstHeld = new WeakMap<BackendOp, number>();
  /** Shards whose primary a sentinel is replacing now (from +selected-slave until the switch or an abort). */
  private readonly failing = new Map<string, FailoverHold>();
  /** Masters whose primary is unreachable now (checked every FAST_CHECK_MS until it is back). */
  private readonly troubled = new Set<string>();
  private readonly checking = new Set<string>();
  /**
   * The highest config-epoch seen per master. An answer below it comes from a sentinel that has not heard of the
   * last failover yet and is ignored (unless every sentinel gives it: then the sentinels were reset).
   */
  private readonly epochs = new Map<string, number>();
  private closed = false;

  constructor(host: SentinelHost, settings: SentinelConfig) {
    this.host = host;
    this.settings = settings;
    this.log = childLogger('sentinel');
  }

  /** Subscribes to every sentinel's events and starts the periodic check. */
  start(): void {
    this.watchers = this.settings.sentinels.map(
      (s) => new SentinelWatcher(s, this.settings, this.log, (channel, text) => this.onEvent(s.address, channel, text)),
    );
    for (const w of this.watchers) w.start();
    this.schedulePeriodic();
    void this.checkAll(); // learns each master's config-epoch before a failover needs it
  }

  /** A reload: new sentinels or settings (the masters themselves come with the topology). */
  updateSettings(settings: SentinelConfig): void {
    const same = JSON.stringify(settings) === JSON.stringify(this.settings);
    this.settings = settings;
    if (same || this.closed) return;
    for (const w of this.watchers) w.close();
    this.epochs.clear(); // other sentinels: their epochs start afresh
    this.start();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.periodic !== null) clearInterval(this.periodic);
    if (this.fast !== null) clearInterval(this.fast);
    if (this.holdTimer !== null) clearInterval(this.holdTimer);
    this.periodic = this.fast = this.holdTimer = null;
    for (const [shard, list] of this.held) {
      for (const h of list) h.op.deliver(this.waitError(shard, 'keymux is shutting down'));
    }
    this.held.clear();
    this.failing.clear();
  }

  /** Ops held now, per shard (for /shards and tests). */
  heldCount(shard: string): number {
    return this.held.get(shard)?.length ?? 0;
  }

  /** Asks the sentinels about `master` now (coalesced: one question per master at a time). */
  check(master: string): Promise<void> {
    if (this.checking.has(master) || this.closed) return Promise.resolve();
    this.checking.add(master);
    return askSentinels(this.settings, master)
      .then(
        (answer) => {
          const known = this.epochs.get(master) ?? -1;
          if (answer.configEpoch < known && !answer.unanimous) {
            this.log.debug(
              { master, primary: answer.view.primary.address, epoch: answer.configEpoch, known },
              'sentinel answer older than the last failover seen: ignored',
            );
            return;
          }
          this.epochs.set(master, answer.configEpoch);
          this.apply(master, answer.view, 'check');
        },
        (err: Error) => this.log.warn({ master, err: err.message }, 'sentinel check failed'),
      )
      .finally(() => this.checking.delete(master));
  }

  /** Checks every master of the running config. */
  checkAll(): Promise<void> {
    return Promise.all(sentinelMasters(this.host.topology.config).map((m) => this.check(m))).then(() => undefined);
  }

  // ------------------------------------------------------------------------------------------------------------
  // RedirectHandler: the primary pools of sentinel shards

  interceptReply(_op: BackendOp, frame: Buffer, from: BackendConnection): boolean {
    // A primary demoted under an open connection answers writes with -READONLY (not applied): ask the sentinels.
    if (frame.length > 9 && frame.subarray(1, 9).toString('latin1') === 'READONLY') this.hint(from);
    return false;
  }

  interceptUnavailable(op: BackendOp, from: BackendConnection): boolean {
    const wait = this.settings.failoverWaitMs;
    if (wait <= 0 || this.closed || !(op instanceof Request || op instanceof Fragment)) return false;
    const shard = from.shard.name;
    const now = Date.now();
    const first = this.firstHeld.get(op) ?? now;
    if (now - first >= wait) {
      op.deliver(this.waitError(shard, `no reachable primary within sentinel.failover_wait_ms (${wait} ms)`));
      return true;
    }
    this.firstHeld.set(op, first);
    let list = this.held.get(shard);
    if (list === undefined) this.held.set(shard, (list = []));
    list.push({ op, deadline: first + wait });
    // The connection it came to was retired (a newer snapshot has another pool for the shard): when that pool is
    // up, everything held goes there now, in order.
    const current = this.currentShard(shard);
    const target = current?.pool.pick(op.sessionId);
    if (target !== undefined && target !== from && target.state !== 'down' && target.state !== 'closed') {
      this.release(shard);
      return true;
    }
    if (!this.failing.has(shard)) this.hint(from);
    this.startHoldTimer();
    return true;
  }

  private startHoldTimer(): void {
    if (this.holdTimer === null) {
      this.holdTimer = setInterval(() => this.expireHeld(), HOLD_TICK_MS);
      this.holdTimer.unref();
    }
  }

  connectionReady(from: BackendConnection): void {
    const shard = from.shard.name;
    const current = this.currentShard(shard);
    if (current === undefined || !current.pool.connections.includes(from)) return;
    if (current.sentinelMaster !== null) this.troubled.delete(current.sentinelMaster);
    this.release(shard);
  }

  connectionFailed(from: BackendConnection): void {
    this.hint(from);
  }

  // ------------------------------------------------------------------------------------------------------------

  private currentShard(name: string) {
    return this.host.topology.shards.find((s) => s.name === name);
  }

  /** The shard of `from` may have a new primary: check its master now and keep checking until it is back. */
  private hint(from: BackendConnection): void {
    const shard = this.currentShard(from.shard.name);
    const master = shard?.sentinelMaster ?? null;
    if (master === null || this.closed) return;
    if (!this.troubled.has(master)) {
      this.troubled.add(master);
      void this.check(master);
    }
    if (this.fast === null) {
      this.fast = setInterval(() => {
        if (this.troubled.size === 0) {
          clearInterval(this.fast!);
          this.fast = null;
          return;
        }
        for (const m of this.troubled) {
          const s = this.host.topology.shards.find((x) => x.sentinelMaster === m);
          if (s === undefined || s.pool.healthy) {
            this.troubled.delete(m);
            continue;
          }
          void this.check(m);
          // Requests are waiting: try the primary now rather than after the connection's backoff (up to 2 s).
          if (this.heldCount(s.name) > 0) s.pool.connect();
        }
      }, FAST_CHECK_MS);
      this.fast.unref();
    }
  }

  /** Installs what the sentinels say of `master` when it differs from the running view. */
  private apply(master: string, seen: SentinelMasterView, why: string): void {
    if (this.closed) return;
    const topo = this.host.topology;
    const shard = topo.shards.find((s) => s.sentinelMaster === master);
    if (shard === undefined) return; // not in the running config (any more)
    const before = topo.sentinelView.get(master);
    if (sameView(before, seen)) return;
    const view = new Map(topo.sentinelView);
    view.set(master, seen);
    const switched = before !== undefined && before.primary.address !== seen.primary.address;
    const oldPool = shard.pool;
    if (switched) {
      this.failovers.set(shard.name, (this.failovers.get(shard.name) ?? 0) + 1);
      this.lastFailover.set(shard.name, { at: Date.now(), from: before.primary.address, to: seen.primary.address });
      this.log.warn(
        { shard: shard.name, master, from: before.primary.address, to: seen.primary.address, why },
        'shard primary changed: moving its pools to the new primary',
      );
    } else {
      this.log.info(
        { shard: shard.name, master, replicas: seen.replicas.map((r) => r.address), why },
        'shard replicas changed',
      );
    }
    this.host.installSentinelView(view, switched ? 'failover' : 'replicas');
    if (switched && this.failing.delete(shard.name)) {
      // The old primary stays a primary for seconds more (the sentinels make it a replica ~8 s after the switch) and
      // its pause ends at failover_wait_ms: a write keymux sent it before the hold and still waiting there would then
      // run, be acknowledged and later discarded. Closing keymux's connections there (the shared ones and the
      // session connections: transactions, WATCH, blocking commands) answers what is in flight with an error (it
      // was written: never re-sent), and the server drops the commands of a client that has gone without running
      // them.
      oldPool.hold(false);
      oldPool.close();
      this.host.closeSessionConnections(before.primary.address);
    }
    // Held ops go to the new primary's connections first (queued there until they are ready).
    if (switched) this.release(shard.name);
  }

  /**
   * A sentinel chose a replica to promote in place of `master`'s primary `from` (+selected-slave, published by the
   * failover's leader only, ~100 ms before it sends REPLICAOF NO ONE to the replica): from now until the switch,
   * writes the old primary acknowledges would be discarded when it is made a replica of the new one. So new requests
   * to the shard are held (as for an unreachable primary) and the old primary is paused for writes (CLIENT PAUSE
   * WRITE, as Redis's own FAILOVER does), so that the writes already sent there do not run before the switch. Both
   * last at most sentinel.failover_wait_ms.
   */
  private beginFailover(leader: string, master: string, from: Endpoint): void {
    const wait = this.settings.failoverWaitMs;
    if (wait <= 0 || this.closed) return;
    const shard = this.host.topology.shards.find((s) => s.sentinelMaster === master);
    const current = this.host.topology.sentinelView.get(master);
    // Only a failover of the primary in use (a late event about an earlier one names a primary replaced since).
    if (shard === undefined || current === undefined || current.primary.address !== from.address) return;
    if (this.failing.has(shard.name)) return;
    this.failing.set(shard.name, { leader, master, from, deadline: Date.now() + wait });
    shard.pool.hold(true);
    this.startHoldTimer();
    this.log.warn(
      { shard: shard.name, master, primary: from.address, holdMs: wait },
      'sentinel failover started: holding requests and pausing writes on the old primary until the switch',
    );
    const o = shard.pool.options;
    const target = {
      host: from.host,
      port: from.port,
      password: o.password,
      username: o.username,
      tls: o.tls ?? null,
      timeoutMs: o.connectTimeoutMs,
    };
    controlCommands(target, [['CLIENT', 'PAUSE', String(wait), 'WRITE']]).then(
      ([reply]) => {
        if (reply instanceof Error)
          this.log.warn({ shard: shard.name, primary: from.address, err: reply.message }, 'CLIENT PAUSE refused');
      },
      (err: Error) =>
        // A primary that is down (an automatic failover) cannot take writes either.
        this.log.debug({ shard: shard.name, primary: from.address, err: err.message }, 'CLIENT PAUSE not sent'),
    );
  }

  /**
   * The failover held by beginFailover ended without a switch (aborted, or not done within the bound): the old
   * primary takes writes again and what was held goes to it.
   */
  private endFailover(shardName: string, why: string): void {
    const hold = this.failing.get(shardName);
    if (hold === undefined) return;
    this.failing.delete(shardName);
    const shard = this.currentShard(shardName);
    this.log.warn(
      { shard: shardName, master: hold.master, primary: hold.from.address, why },
      'sentinel failover hold ended',
    );
    if (shard !== undefined) {
      shard.pool.hold(false);
      const o = shard.pool.options;
      void controlCommands(
        {
          host: hold.from.host,
          port: hold.from.port,
          password: o.password,
          username: o.username,
          tls: o.tls ?? null,
          timeoutMs: o.connectTimeoutMs,
        },
        [['CLIENT', 'UNPAUSE']],
      ).catch(() => {}); // unreachable: its pause ends on its own
    }
    this.release(shardName);
    void this.check(hold.master);
  }

  /**
   * Sends the ops held for `shard` to its current primary pool, in the order they were held; ops whose connection
   * there is down stay held (a client's ops all use one connection, so its order is kept either way).
   */
  private release(shard: string): void {
    if (this.failing.has(shard)) return; // until the switch (or the hold's end)
    const list = this.held.get(shard);
    if (list === undefined || list.length === 0) return;
    this.held.delete(shard);
    const current = this.currentShard(shard);
    const keep: Held[] = [];
    for (const h of list) {
      if (current === undefined) {
        h.op.deliver(this.waitError(shard, 'the shard is no longer configured'));
        continue;
      }
      const conn = current.pool.pick(h.op.sessionId);
      if (conn.state === 'down' || conn.state === 'closed') keep.push(h);
      else conn.send(h.op, h.op.frame);
    }
    if (keep.length > 0) this.held.set(shard, keep);
  }

  private expireHeld(): void {
    const now = Date.now();
    for (const [shard, hold] of [...this.failing]) {
      if (hold.deadline <= now) this.endFailover(shard, `no switch within sentinel.failover_wait_ms`);
    }
    for (const shard of [...this.held.keys()]) {
      // Safety net: the shard's primary is up (a ready event may have come while these were on their way here).
      if (this.currentShard(shard)?.pool.healthy === true) this.release(shard);
    }
    for (const [shard, list] of this.held) {
      let n = 0;
      while (n < list.length && list[n].deadline <= now) n++;
      if (n === 0) continue;
      const expired = list.splice(0, n);
      if (list.length === 0) this.held.delete(shard);
      const wait = this.settings.failoverWaitMs;
      for (const h of expired) {
        h.op.deliver(this.waitError(shard, `no reachable primary within sentinel.failover_wait_ms (${wait} ms)`));
      }
    }
    if (this.held.size === 0 && this.failing.size === 0 && this.holdTimer !== null) {
      clearInterval(this.holdTimer);
      this.holdTimer = null;
    }
  }

  private waitError(shard: string, why: string): Buffer {
    const s = this.currentShard(shard);
    const master = s?.sentinelMaster ?? '?';
    return Buffer.from(
      `-ERR keymux: shard ${shard} (sentinel master ${master}): ${why}; the command was not sent, retry it\r\n`,
    );
  }

  /** An event `sentinel` published. */
  private onEvent(sentinel: string, channel: string, text: string): void {
    if (this.closed) return;
    const parts = text.split(' ');
    if (channel === '+switch-master') {
      // <master> <old ip> <old port> <new ip> <new port>: apply at once, then learn the replicas.
      const [master, oldIp, oldPort, ip, port] = parts;
      this.onSwitch(master, oldIp, oldPort, ip, port, '+switch-master');
      return;
    }
    // <instance type> <name> <ip> <port> [@ <master name> <master ip> <master port>]
    const at = parts.indexOf('@');
    const master = at >= 0 ? parts[at + 1] : parts[0] === 'master' ? parts[1] : undefined;
    if (master === undefined || !this.host.topology.sentinelView.has(master)) return;
    if (channel === '+selected-slave' || channel === '+failover-state-send-slaveof-noone') {
      if (at >= 0) this.beginFailover(sentinel, master, endpoint(parts[at + 2], Number(parts[at + 3])));
    } else if (channel === '+promoted-slave' && at >= 0) {
      // The chosen replica is a primary now (the leader saw it in its INFO): the switch, ahead of +switch-master
      // (which the leader publishes once the other replicas are reconfigured).
      this.onSwitch(master, parts[at + 2], parts[at + 3], parts[2], parts[3], '+promoted-slave');
      return;
    } else if (channel.startsWith('-failover-abort')) {
      // From the sentinel leading the failover only: another one that lost the election aborts its own attempt.
      const shard = this.host.topology.shards.find((s) => s.sentinelMaster === master);
      if (shard !== undefined && this.failing.get(shard.name)?.leader === sentinel)
        this.endFailover(shard.name, channel);
    }
    void this.check(master);
  }

  /** A sentinel says `master`'s primary moved from old to new: applied at once when it moves from the one in use. */
  private onSwitch(
    master: string,
    oldIp: string | undefined,
    oldPort: string | undefined,
    ip: string | undefined,
    port: string | undefined,
    why: string,
  ): void {
    {
      const topo = this.host.topology;
      const before = topo.sentinelView.get(master);
      // Only a switch away from the primary in use: a sentinel that learns of an earlier failover late announces
      // it late, and following it would go back to a primary that has been replaced since.
      const fromCurrent =
        before !== undefined &&
        oldIp !== undefined &&
        endpoint(oldIp, Number(oldPort)).address === before.primary.address;
      if (before !== undefined && fromCurrent && ip !== undefined && Number.isInteger(Number(port))) {
        const primary = endpoint(ip, Number(port));
        const replicas = before.replicas.filter((r) => r.address !== primary.address);
        // A failover raises the config-epoch: until a sentinel tells the new one, answers at the old epoch (which
        // name the old primary) are stale.
        const known = this.epochs.get(master);
        if (known !== undefined && known >= 0) this.epochs.set(master, known + 1);
        this.apply(master, { primary, replicas }, why);
      }
      void this.check(master);
    }
  }

  /** Each sentinel of the config, and whether keymux hears its events now (keymux_sentinel_up). */
  sentinelStates(): Array<{ address: string; up: boolean }> {
    return this.watchers.map((w) => ({ address: w.address, up: w.subscribed }));
  }

  private schedulePeriodic(): void {
    if (this.periodic !== null) clearInterval(this.periodic);
    this.periodic = setInterval(() => void this.checkAll(), this.settings.refreshIntervalMs);
    this.periodic.unref();
  }
}

/**
 * One subscriber connection to one sentinel: its events, reconnecting with backoff. A refused AUTH or SUBSCRIBE
 * (a sentinel whose password changed, one restarted without it) ends the connection, which is then opened again
 * with backoff: left open, it would stay connected and hear nothing. The backoff starts again only once a
 * subscription is confirmed, so a sentinel that keeps refusing is asked at most every 2 s.
 */
export class SentinelWatcher {
  private socket: net.Socket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private backoffMs = 100;
  private closed = false;
  /** The connection whose subscription the sentinel confirmed. */
  private subscribedOn: net.Socket | null = null;

  constructor(
    private readonly at: Endpoint,
    private readonly settings: SentinelConfig,
    private readonly log: Logger,
    private readonly onMessage: (channel: string, text: string) => void,
  ) {}

  start(): void {
    if (this.closed) return;
    const sock = net.connect({ host: this.at.host, port: this.at.port });
    this.socket = sock;
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 10_000);
    const parser = new RedisParser({
      returnReply: (r) => this.onReply(r),
      returnError: (e) => {
        this.log.warn({ sentinel: this.at.address, err: e.message }, 'sentinel refused; reconnecting');
        sock.destroy();
      },
      returnFatalError: () => sock.destroy(),
    });
    sock.on('connect', () => {
      const frames: Buffer[] = [];
      const { password, username } = this.settings;
      if (password !== null)
        frames.push(commandFrame(username !== null ? ['AUTH', username, password] : ['AUTH', password]));
      frames.push(commandFrame(['SUBSCRIBE', ...WATCHED]));
      sock.write(Buffer.concat(frames));
    });
    sock.on('data', (d: Buffer) => parser.execute(d));
    sock.on('error', () => {}); // 'close' follows
    sock.on('close', () => {
      if (this.socket !== sock) return;
      this.socket = null;
      if (this.closed) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.start();
      }, this.backoffMs);
      this.timer.unref();
      this.backoffMs = Math.min(2000, this.backoffMs * 2);
    });
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.socket?.destroy();
    this.socket = null;
  }

  private onReply(r: unknown): void {
    if (!Array.isArray(r) || r.length !== 3) return;
    const kind = String(r[0]);
    if (kind === 'subscribe') {
      this.backoffMs = 100; // subscribed: a later drop reconnects quickly again
      this.subscribedOn = this.socket;
    } else if (kind === 'message') this.onMessage(String(r[1]), String(r[2]));
  }

  /** Connected (tests, diagnostics). */
  get connected(): boolean {
    return this.socket !== null && !this.socket.destroyed && !this.socket.connecting;
  }

  /** Subscribed to the sentinel's events on the current connection (keymux_sentinel_up). */
  get subscribed(): boolean {
    return this.subscribedOn !== null && this.subscribedOn === this.socket && !this.subscribedOn.destroyed;
  }

  get address(): string {
    return this.at.address;
  }
}
