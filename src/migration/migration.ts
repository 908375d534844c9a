/**
 * Migration: moving keys when a reload changes which shard owns them (slots mode: a slot changes owner; ring
 * mode: a key's ring position now belongs to another member), while clients keep reading and writing.
 *
 * The rule, like Redis Cluster's ASK: a key "in motion" is on its old owner until keymux has moved it, and on its
 * new owner from then on. keymux is the only writer, so it can make that exact:
 * - every request is routed by the new topology; a request touching a key that still needs moving is held, the
 *   key is moved first (MIGRATE ... KEYS k from the old owner to the new one: it carries the value and its TTL and
 *   deletes the source copy atomically; +NOKEY means there is nothing to move), then the request is routed again;
 * - in the background, each old owner is SCANned and every key whose owner changed is MIGRATEd in batches;
 * - nothing starts until every request sent to the old owners before the swap has been answered (a PING marker
 *   on each of their connections), so no late write can land on an old owner after its key moved.
 * A key is never on two shards at once and never read from the wrong one: no read misses, no write is lost. A copy
 * of a moving key that is already on its new owner (a leftover of an earlier topology, or of a direct write to the
 * shard) is overwritten with the current value (MIGRATE ... REPLACE), never kept in its place.
 *
 * Migrations chain: a reload during a migration starts a new one whose "where is the key now" asks the previous
 * one, so a migration survives further reloads. For restarts, the old topology is written to a state file (when
 * configured) and the migration resumes from it: moved keys answer +NOKEY and cost one round trip each.
 *
 * With `workers` > 1 (src/workers/) a migration is coordinated: the primary process decides that one runs and
 * numbers it, and every worker holds a Migration of that number. Nothing moves until every worker has fenced its
 * old owners (each worker's migration waits for `release()` after its own fence), so no worker can still have a
 * write on its way to an old owner when the first key moves. Then one worker, the leader, owns the moving: it
 * scans the old owners, runs every MIGRATE through its one scheduler (no MIGRATE cycle between processes), and
 * knows exactly which keys moved; the other workers (followers) open no connection of their own and ask the leader
 * (through the primary) to move the keys their clients touch, then route them to the new owner. When the leader's
 * scan is done the primary tells every worker (`endCoordinated()`).
 */
import { performance } from 'node:perf_hooks';
import type { Topology } from '../routing/topology.js';
import type { KeymuxConfig } from '../config/schema.js';
import { BackendConnection } from '../backend/backend-connection.js';
import { CallbackOp } from '../backend/callback-op.js';
import { commandFrame } from '../resp/writer.js';
import { errorText, isErrorFrame, readArrayElements, readBulk } from '../resp/reply-reader.js';
import { backendOptions } from '../routing/topology.js';
import { childLogger, type Logger } from '../log.js';
import { removeMigrationState, writeMigrationState } from './state-file.js';

/**
 * Answers "which shard address holds this key right now". Exact while this process has run every migration since
 * the placement it starts from; after a restart in the middle of chained migrations it only knows where a key may
 * be (`uncertain`: `candidates`, oldest placement first).
 */
export interface KeyLocator {
  readonly uncertain: boolean;
  /** Where the key is (uncertain: the oldest place it may be). */
  locate(key: Buffer): string;
  /** Every place the key may be, oldest placement first, each once (one entry when not uncertain). */
  candidates(key: Buffer): string[];
}

/** Where a topology (with no migration in progress) puts a key. */
export class TopologyLocator implements KeyLocator {
  readonly topo: Topology;
  readonly uncertain = false;
  constructor(topo: Topology) {
    this.topo = topo;
  }
  locate(key: Buffer): string {
    return this.topo.shards[this.topo.router.shardFor(key)].address;
  }
  candidates(key: Buffer): string[] {
    return [this.locate(key)];
  }
}

/**
 * Where a key may be after keymux restarted in the middle of chained migrations (a reload during a migration, and a
 * restart before the last one finished): on its owner in any of the placements the state file lists, or already
 * on its new owner. A MIGRATE deletes the key from its source and no write goes to an owner the key has left, so
 * the oldest placement's owner that still holds the key holds its live value (the one to move).
 */
export class ChainLocator implements KeyLocator {
  readonly uncertain = true;
  /** Oldest first. */
  readonly placements: TopologyLocator[];
  constructor(placements: Topology[]) {
    this.placements = placements.map((t) => new TopologyLocator(t));
  }
  locate(key: Buffer): string {
    return this.placements[0].locate(key);
  }
  candidates(key: Buffer): string[] {
    const out: string[] = [];
    for (const p of this.placements) {
      const at = p.locate(key);
      if (!out.includes(at)) out.push(at);
    }
    return out;
  }
}

const PING = commandFrame(['PING']);
const ERR_CLOSED = Buffer.from('-ERR keymux: migration stopped (keymux is shutting down)\r\n');
const SCAN_COUNT = '1000';
const BATCH_KEYS = 100;
const PROGRESS_LOG_MS = 2000;

export interface MigrationProgress {
  id: number;
  /** aborted: a coordinated migration some worker could not take on before anything moved (workers > 1). */
  state: 'fencing' | 'running' | 'done' | 'superseded' | 'aborted';
  sources: string[];
  /**
   * Keys the current scan pass has seen, and its estimate of those left (the sources' DBSIZE at the pass's start,
   * less what it has seen). A pass after errors, or of a migration reinstated, starts both again.
   */
  keysScanned: number;
  /** Keys moved to their new owner, over the whole migration. */
  keysMoved: number;
  keysLeft: number;
  /** Scan passes started (a pass after errors or reinstatement adds one; 0 in a worker that does not scan). */
  passes: number;
  /** Requests waiting for the migration's fence (those sent to the old owners before the reload to be answered). */
  held: number;
  startedAt: number;
  /** When it finished (done), or null while it runs or once superseded: the keys/s `keymux plan` quotes. */
  finishedAt: number | null;
  errors: number;
}

export interface MigrationOptions {
  /** Where to record the old topology so a restart can resume (null: no resume across restarts). */
  stateFile: string | null;
  /** The placements keys may still be at, oldest first (the old config's, and a running migration's before it). */
  chain: Array<Partial<KeymuxConfig>>;
  /** Resumed after a restart, or joined by a worker started during it: what moved before is not known here. */
  resumed?: boolean;
}

/**
 * A worker's part in a migration coordinated by the primary process (workers > 1). The leader moves keys; a
 * follower asks the leader to move the keys its clients touch.
 */
export interface Coordination {
  /** The primary's number for this migration: the same in every worker. */
  id: number;
  role: 'leader' | 'follower';
  /** Start moving right after the local fence (a worker started while the migration runs); else wait for release(). */
  released: boolean;
  /** Follower: asks the leader to move `keys`; `done(ok)` once they are on their new owners (or could not be moved). */
  remoteMove(id: number, keys: Buffer[], done: (result: MoveResult) => void): void;
  /** Leader: the scan found and moved every key that had to move (`progress`: its figures, for `keymux plan`). */
  onScanned(id: number, progress: MigrationProgress): void;
}

/**
 * A follower's answer about keys it asked to be moved: moved (true), could not be moved (false), or the migration
 * was taken over on worker 1 by a chained one (route again through the newer one once this worker has it too).
 */
export type MoveResult = boolean | 'superseded';

/** How soon a follower asks again about keys of a migration worker 1 has already handed over to a chained one. */
const SUPERSEDED_RETRY_MS = 20;

let nextId = 1;

interface MigrateJob {
  source: string;
  target: string;
  frame: Buffer;
  done: (reply: Buffer) => void;
}

type SendJob = (job: MigrateJob, done: (reply: Buffer) => void) => void;

/**
 * Runs MIGRATE commands without deadlocks. A redis-server running MIGRATE is blocked until its target has
 * restored the keys, so MIGRATE A->B and B->A at the same time (or any cycle) wait on each other until both time
 * out. The scheduler only starts S->T when T is not itself the source of a running MIGRATE and S is not the target
 * of one: running MIGRATEs then always go from pure sources to pure targets, and no cycle can form. One MIGRATE
 * per source at a time; jobs for waiting clients go ahead of background batches. Shared by every migration of the
 * process (a chained migration may move keys against the direction of the one it superseded). Paused
 * (MigrationPause) while a command for every shard is out: none starts, and that command waits for the running
 * ones to end.
 */
class MigrateScheduler {
  private readonly queue: Array<MigrateJob & { send: SendJob }> = [];
  private readonly running = new Map<string, number>(); // source -> 1 while it runs a MIGRATE
  private readonly targets = new Map<string, number>(); // target -> running MIGRATEs into it
  /** Pauses not yet released: no MIGRATE starts while there is one. */
  pauses = 0;
  /** Called once no MIGRATE runs (pauses waiting for the running ones to end). */
  private quietWaiters: Array<() => void> = [];

  submit(job: MigrateJob, urgent: boolean, send: SendJob): void {
    const wrapped = {
      ...job,
      send,
      done: (reply: Buffer) => {
        this.running.delete(job.source);
        const n = (this.targets.get(job.target) ?? 1) - 1;
        if (n === 0) this.targets.delete(job.target);
        else this.targets.set(job.target, n);
        job.done(reply);
        if (this.running.size === 0 && this.quietWaiters.length > 0) {
          const waiters = this.quietWaiters;
          this.quietWaiters = [];
          for (const w of waiters) w();
        }
        this.pump();
      },
    };
    if (urgent) this.queue.unshift(wrapped);
    else this.queue.push(wrapped);
    this.pump();
  }

  /** `cb` once no MIGRATE runs: at once when none does. */
  whenQuiet(cb: () => void): void {
    if (this.running.size === 0) cb();
    else this.quietWaiters.push(cb);
  }

  pump(): void {
    if (this.pauses > 0) return;
    for (let i = 0; i < this.queue.length; i++) {
      const job = this.queue[i];
      if (this.running.has(job.source) || this.running.has(job.target) || this.targets.has(job.source)) continue;
      this.queue.splice(i--, 1);
      this.running.set(job.source, 1);
      this.targets.set(job.target, (this.targets.get(job.target) ?? 0) + 1);
      job.send(job, job.done);
    }
  }
}

const scheduler = new MigrateScheduler();

/**
 * A hold on this process's key moves while a command for every shard is out (FLUSHALL, FLUSHDB, DBSIZE, KEYS,
 * INFO...): such a command reads or clears every shard at once, and a MIGRATE between two of its shards meanwhile
 * would make it count keys twice or not at all, or restore keys on a shard it had already flushed (FLUSHALL
 * answered +OK and a batch of keys survived). No MIGRATE starts from the pause until release(); whenQuiet() runs
 * its callback once the MIGRATEs already running have ended, which is when the command may be sent. Clients
 * waiting for their keys to move wait for the release too (one round trip of the command).
 */
/** Pauses in effect (commands for every shard out while keys move): for tests and diagnostics. */
export function migrationPauses(): number {
  return scheduler.pauses;
}

/** A hold on key moves, local (MigrationPause) or asked of the worker that moves them (workers > 1). */
export interface MigrationHold {
  /** `cb` once no MIGRATE runs (none starts from the hold until release()). */
  whenQuiet(cb: () => void): void;
  release(): void;
}

export class MigrationPause implements MigrationHold {
  private released = false;
  constructor() {
    scheduler.pauses++;
  }
  whenQuiet(cb: () => void): void {
    scheduler.whenQuiet(cb);
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    scheduler.pauses--;
    scheduler.pump();
  }
}

export class Migration implements KeyLocator {
  readonly id: number;
  /**
   * To a migration chained after this one, a key this one has not moved may be on its old owner or already on its
   * new one: a follower does not see the moves the leader made for other workers, and a migration resumed after a
   * restart (or joined by a worker started during it) does not know what moved before.
   */
  readonly uncertain: boolean;
  /** Keys may be in more than one old place (a chain resumed after a restart): this one's moves probe each. */
  private readonly probing: boolean;
  readonly to: Topology;
  state: MigrationProgress['state'];
  keysScanned = 0;
  keysMoved = 0;
  errors = 0;
  readonly startedAt = Date.now();
  finishedAt: number | null = null;

  /** Where keys were; once done, the new placement itself (forgetPlaces). */
  private from: KeyLocator;
  private readonly log: Logger;
  /** Keys (latin1) known to be on their new owner already. */
  private moved = new Set<string>();
  /** Keys with a MIGRATE in flight -> callbacks to run when it completes. */
  private readonly inFlight = new Map<string, Array<(ok: boolean) => void>>();
  /** Requests that arrived while fencing: run once running. */
  private fenceWaiters: Array<{ keys: Buffer[]; then: (ok: boolean) => void }> = [];
  /** Called once no MIGRATE of this migration is queued or running (a successor waits for that). */
  private idleWaiters: Array<() => void> = [];
  /** One control connection per source address (SCAN and MIGRATE traffic). */
  private readonly conns = new Map<string, BackendConnection>();
  readonly sources: string[];
  private totalAtStart = 0;
  private scansLeft = 0;
  /** Which scan pass is current (scanAll starts a new one). */
  private scanPass = 0;
  private lastLog = 0;
  private readonly options: MigrationOptions;
  private readonly onDone: (m: Migration) => void;
  private closed = false;
  /** Null when this process alone moves the keys (workers: 1). */
  private readonly coordination: Coordination | null;
  /** Coordinated: the primary said every worker has fenced (or this worker started mid-migration). */
  private released: boolean;
  /** This process's requests to the old owners are all answered (callbacks wait for that). */
  private fencedHere = false;
  private fenceListeners: Array<() => void> = [];

  constructor(
    from: KeyLocator,
    sources: string[],
    to: Topology,
    options: MigrationOptions,
    onDone: (m: Migration) => void,
    coordination: Coordination | null = null,
  ) {
    this.id = coordination?.id ?? nextId++;
    this.coordination = coordination;
    this.released = coordination === null || coordination.released;
    this.from = from;
    this.probing = from.uncertain;
    this.uncertain = from.uncertain || coordination?.role === 'follower' || options.resumed === true;
    this.to = to;
    this.sources = sources;
    this.state = 'fencing';
    this.options = options;
    this.onDone = onDone;
    this.log = childLogger('migration', { migration: this.id });
  }

  get active(): boolean {
    return this.state === 'fencing' || this.state === 'running';
  }

  progress(): MigrationProgress {
    return {
      id: this.id,
      state: this.state,
      sources: this.sources,
      keysScanned: this.keysScanned,
      keysMoved: this.keysMoved,
      keysLeft: this.state === 'done' ? 0 : Math.max(0, this.totalAtStart - this.keysScanned),
      passes: this.scanPass,
      held: this.fenceWaiters.length,
      startedAt: this.startedAt,
      finishedAt: this.finishedAt,
      errors: this.errors,
    };
  }

  /** Where `key` is right now. */
  locate(key: Buffer): string {
    const target = this.newOwner(key);
    if (this.state === 'done') return target;
    const source = this.from.locate(key);
    if (source === target || this.moved.has(key.toString('latin1'))) return target;
    return source;
  }

  /** Where `key` may be: exactly one place unless uncertain, where it may also be on its new owner already. */
  candidates(key: Buffer): string[] {
    if (!this.uncertain) return [this.locate(key)];
    const target = this.newOwner(key);
    if (this.state === 'done' || this.moved.has(key.toString('latin1'))) return [target];
    const out = this.from.candidates(key);
    if (!out.includes(target)) out.push(target);
    return out;
  }

  /** The old places `key` may still be on (not its new owner), oldest first. */
  private oldPlaces(key: Buffer, target: string): string[] {
    return this.from.candidates(key).filter((a) => a !== target);
  }

  /** True when `key` is still on an old owner and must be moved before a request may use it. */
  needsMove(key: Buffer): boolean {
    if (!this.active) return false;
    if (this.state === 'fencing' && this.predecessorMoving(key)) return true; // where it lands is not known yet
    const target = this.newOwner(key);
    if (this.probing) return !this.moved.has(key.toString('latin1')) && this.oldPlaces(key, target).length > 0;
    const source = this.from.locate(key);
    return source !== target && !this.moved.has(key.toString('latin1'));
  }

  /**
   * Moves `keys` (those that need it) to their new owners, then calls `then` (once). While fencing, waits for
   * the fence first. On a failed MIGRATE the keys stay where they are and `then(false)` lets the caller answer
   * with an error rather than read the wrong shard.
   */
  moveThen(keys: Buffer[], then: (ok: boolean) => void): void {
    if (this.state === 'fencing') {
      this.fenceWaiters.push({ keys, then });
      return;
    }
    const pending = keys.filter((k) => this.needsMove(k));
    if (pending.length === 0) {
      then(true);
      return;
    }
    let left = pending.length;
    let allOk = true;
    const one = (ok: boolean) => {
      allOk &&= ok;
      if (--left === 0) then(allOk);
    };
    if (this.coordination?.role === 'follower') {
      this.askLeader(pending, one);
      return;
    }
    const bySource = new Map<string, Map<string, Buffer[]>>();
    for (const key of pending) {
      const name = key.toString('latin1');
      const waiters = this.inFlight.get(name);
      if (waiters !== undefined) {
        waiters.push(one);
        continue;
      }
      this.inFlight.set(name, [one]);
      const target = this.newOwner(key);
      if (this.probing) {
        this.probe(key, target, this.oldPlaces(key, target), 0, true);
        continue;
      }
      const source = this.from.locate(key);
      let byTarget = bySource.get(source);
      if (byTarget === undefined) bySource.set(source, (byTarget = new Map()));
      const list = byTarget.get(target);
      if (list === undefined) byTarget.set(target, [key]);
      else list.push(key);
    }
    // In MIGRATEs of at most BATCH_KEYS keys, as the scan makes them: one command's keys (a DEL of 150,000) must
    // not become one MIGRATE that holds both shards for its whole length.
    for (const [source, byTarget] of bySource) {
      for (const [target, list] of byTarget) {
        if (list.length <= BATCH_KEYS) this.migrate(source, target, list);
        else
          for (let i = 0; i < list.length; i += BATCH_KEYS) this.migrate(source, target, list.slice(i, i + BATCH_KEYS));
      }
    }
  }

  /** Follower: the leader moves the keys (one request for those not already asked for by another client). */
  private askLeader(keys: Buffer[], one: (ok: boolean) => void): void {
    const ask: Buffer[] = [];
    for (const key of keys) {
      const name = key.toString('latin1');
      const waiters = this.inFlight.get(name);
      if (waiters !== undefined) waiters.push(one);
      else {
        this.inFlight.set(name, [one]);
        ask.push(key);
      }
    }
    if (ask.length === 0) return;
    const send = (): void =>
      this.coordination!.remoteMove(this.id, ask, (result) => {
        // Worker 1's side of this migration was taken over by a chained one this worker has not applied yet: ask
        // again shortly; once this worker has applied it, the requests are routed again, through the newer one.
        if (result === 'superseded' && this.active && !this.closed) {
          setTimeout(send, SUPERSEDED_RETRY_MS);
          return;
        }
        let ok = result !== false;
        if (this.state === 'done' || this.state === 'aborted') ok = this.state === 'done';
        if (!ok) {
          // The requests waiting for these keys are answered TRYAGAIN here, in this worker: without this line its log
          // had no trace of why (the cause is in worker 1's "MIGRATE failed" line, or the primary's warning).
          this.log.warn(
            { keys: ask.length, role: 'follower', state: this.state },
            'keys this worker asked worker 1 to move were not moved; the requests waiting for them get TRYAGAIN',
          );
        }
        // Recorded as moved only when worker 1 said so while this migration still answers where keys are.
        this.settle(ask, ok, ok && result === true && this.active);
        if (!ok) this.errors++;
        this.notifyIdle(); // a migration chained after this one waits for that before it starts
      });
    send();
  }

  /** Calls `cb` once every request this process sent to the old owners before the swap has been answered. */
  whenFencedHere(cb: () => void): void {
    if (this.fencedHere || !this.active) cb();
    else this.fenceListeners.push(cb);
  }

  /** Coordinated: every worker has fenced; keys may move now. */
  release(): void {
    this.released = true;
    if (this.fencedHere && this.state === 'fencing') this.run();
  }

  /**
   * Coordinated: the leader's scan is over, so every key is on its new owner (or the primary gave up on this
   * migration): nothing is held or asked for any more.
   */
  endCoordinated(): void {
    if (this.state === 'done' || this.state === 'aborted') return;
    this.state = 'done';
    this.finishedAt = Date.now();
    this.moved = new Set();
    // Migrations this one took over are complete too: every key is where this one put it.
    this.retirePredecessors();
    this.forgetPlaces();
    this.routeFenceWaitersAgain();
    for (const c of this.conns.values()) c.closeWhenIdle();
    this.onDone(this);
  }

  /**
   * Coordinated: some worker could not take this migration on, so the primary gives every worker its previous
   * config back before anything moved. Call once the topology without it is installed: the requests that were
   * waiting for the fence are routed again, through it.
   */
  abort(): void {
    if (!this.active) return;
    this.state = 'aborted';
    this.log.warn('migration aborted before any key moved (another worker refused the reload)');
    this.routeFenceWaitersAgain();
    this.close();
    this.onDone(this);
  }

  /** The migration this one took over (chained after a reload during it), or null. */
  get predecessor(): Migration | null {
    return this.from instanceof Migration ? this.from : null;
  }

  /**
   * Coordinated: the migration that took this one over was aborted before anything of it moved, so this one goes on
   * (the leader scans its old owners again from the start; keys it already moved answer quickly).
   */
  reinstate(): void {
    if (this.state !== 'superseded') return;
    this.state = 'running';
    this.conns.clear(); // the ones it had close once idle (supersede); new ones are opened as needed
    this.log.info('migration resumed (the reload that took it over was rolled back)');
    if (this.coordination?.role !== 'follower') this.scanAll();
  }

  /** The placements keys may still be at, oldest first (what the state file records). */
  get chain(): Array<Partial<KeymuxConfig>> {
    return this.options.chain;
  }

  /** The topology the keys are placed by before this migration (null when chained to another migration). */
  get fromTopology(): Topology | null {
    return this.from instanceof TopologyLocator ? this.from.topo : null;
  }

  /**
   * Starts: fence (markers on the old owners' connections, and `alsoWait`: the transactions in flight on session
   * connections, which the markers do not cover), then the background scan.
   */
  start(oldTopology: Topology, alsoWait: ((done: () => void) => void) | null = null): void {
    this.writeState();
    const conns = oldTopology
      .allPools()
      .flatMap((p) => p.allConnections())
      .filter((c) => c.state !== 'closed');
    // Migrations this one supersedes must have no MIGRATE in flight: a key they are moving right now would
    // otherwise be looked for where it no longer is.
    const predecessors: Migration[] = [];
    for (let p = this.from; p instanceof Migration; p = p.from) predecessors.push(p);
    let left = conns.length + predecessors.length + (alsoWait === null ? 1 : 2);
    const fenced = () => {
      if (--left > 0 || this.state !== 'fencing') return;
      this.fencedHere = true;
      const listeners = this.fenceListeners;
      this.fenceListeners = [];
      for (const cb of listeners) cb();
      if (this.released) this.run();
    };
    for (const c of conns) c.send(new CallbackOp(PING, fenced), PING);
    for (const p of predecessors) p.whenIdle(fenced);
    alsoWait?.(fenced);
    fenced();
  }

  /** After the fence (and, coordinated, the primary's release): moves keys; the leader scans the old owners. */
  private run(): void {
    this.state = 'running';
    this.log.info({ sources: this.sources, role: this.coordination?.role ?? 'alone' }, 'migration started');
    const waiters = this.fenceWaiters;
    this.fenceWaiters = [];
    for (const w of waiters) this.moveThen(w.keys, w.then);
    if (this.coordination?.role !== 'follower') this.scanAll();
  }

  /** A newer migration took over (it asks this one where keys are until it is done itself). */
  supersede(): void {
    // Keep answering locate() for the newer migration; stop the background scan. Requests still waiting for
    // this one's fence are routed again, now through the newer migration.
    if (this.state === 'running' || this.state === 'fencing') this.state = 'superseded';
    this.routeFenceWaitersAgain();
    for (const c of this.conns.values()) c.closeWhenIdle();
  }

  /** The requests waiting for this migration's fence are routed again (through whatever migration is current). */
  private routeFenceWaitersAgain(): void {
    const waiters = this.fenceWaiters;
    this.fenceWaiters = [];
    for (const w of waiters) w.then(true);
  }

  /** Migrations this one took over are complete with it: every key is where this one put it. */
  private retirePredecessors(): void {
    const chain: Migration[] = [];
    for (let prev = this.from; prev instanceof Migration; prev = prev.from) chain.push(prev);
    for (const prev of chain) prev.retire();
  }

  /**
   * Done: every key is where `to` puts it, so the old placements are no longer asked. Letting go of them matters:
   * each placement is a topology whose own migration points at the placement before it, and so on back to the
   * first reload, all kept alive by the current topology (about 12 KB per reload that moved keys, for good).
   */
  private forgetPlaces(): void {
    this.from = new TopologyLocator(this.to);
  }

  /** True when a migration this one superseded is moving `key` right now. */
  private predecessorMoving(key: Buffer): boolean {
    let name: string | null = null;
    for (let p = this.from; p instanceof Migration; p = p.from) {
      if (p.inFlight.size === 0) continue;
      name ??= key.toString('latin1');
      if (p.inFlight.has(name)) return true;
    }
    return false;
  }

  /** Calls `cb` once no MIGRATE of this migration is queued or running. */
  whenIdle(cb: () => void): void {
    if (this.inFlight.size === 0) cb();
    else this.idleWaiters.push(cb);
  }

  /** Marks a superseded migration finished once the one that took over is. */
  private retire(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.moved = new Set();
    this.forgetPlaces();
    this.close();
    this.onDone(this);
  }

  close(): void {
    this.closed = true;
    for (const c of this.conns.values()) c.close();
    this.conns.clear();
  }

  private newOwner(key: Buffer): string {
    const to = this.to;
    return to.shards[to.router.shardFor(key)].address;
  }

  /**
   * This migration's connection to `address` while it runs, for a SCAN walk that still has to read a shard a reload
   * took out of the topology (no pool reaches it any more; its keys are on their way off it). Null once the
   * migration is over: its connections are closed then, and the shard holds none of the keys keymux serves.
   */
  connectionWhileActive(address: string): BackendConnection | null {
    return this.active && !this.closed ? this.conn(address) : null;
  }

  private conn(address: string): BackendConnection {
    let c = this.conns.get(address);
    if (c === undefined || c.state === 'closed') {
      const sep = address.lastIndexOf(':');
      const options = {
        ...backendOptions(this.to.config, false),
        timeoutMs: Math.max(10_000, this.to.config.backend.timeoutMs),
      };
      c = new BackendConnection(
        {
          name: `migration:${address}`,
          address,
          host: address.slice(0, sep).replace(/^\[|\]$/g, ''),
          port: Number(address.slice(sep + 1)),
        },
        options,
        this.log,
      );
      c.connect();
      this.conns.set(address, c);
    }
    return c;
  }

  private migrateFrame(target: string, keys: Buffer[]): Buffer {
    const sep = target.lastIndexOf(':');
    const host = target.slice(0, sep).replace(/^\[|\]$/g, '');
    const b = this.to.config.backend;
    const args: Array<string | Buffer> = [
      'MIGRATE',
      host,
      target.slice(sep + 1),
      '',
      '0',
      String(Math.max(5000, b.timeoutMs)),
      // The source's copy is the key's current value (keymux routed every write there); a copy already on the
      // target is a leftover (an earlier topology sent the key there, or someone wrote to the shard directly), so
      // it is replaced: without REPLACE, MIGRATE fails with BUSYKEY and the key would stay on its old owner.
      'REPLACE',
    ];
    if (b.password !== null) {
      if (b.username !== null) args.push('AUTH2', b.username, b.password);
      else args.push('AUTH', b.password);
    }
    args.push('KEYS');
    for (const key of keys) args.push(key); // not spread into one call: its arguments would be bounded by the stack
    return commandFrame(args);
  }

  /** MIGRATEs `keys` from source to target (through the scheduler); settles their in-flight waiters. */
  private migrate(source: string, target: string, keys: Buffer[], after?: () => void): void {
    this.runMigrate(source, target, keys, after === undefined, (reply) => {
      const ok = !isErrorFrame(reply);
      if (ok) {
        // +OK (moved) or +NOKEY (none of them existed any more): either way they are not on the source now.
        if (reply.toString('latin1', 0, 3) === '+OK') this.keysMoved += keys.length;
      } else {
        this.errors++;
        this.log.warn({ source, target, keys: keys.length, error: errorText(reply) }, 'MIGRATE failed');
      }
      this.settle(keys, ok);
      after?.();
      this.notifyIdle();
    });
  }

  /**
   * An uncertain migration moves `key` from the oldest of `places` that holds it (its live value: see
   * ChainLocator), then deletes the copies the newer places may hold (leftovers that would otherwise be taken for
   * the key after another restart). No place holds it: it is on its new owner already, or nowhere.
   */
  private probe(key: Buffer, target: string, places: string[], i: number, urgent: boolean, after?: () => void): void {
    if (i >= places.length) {
      this.settle([key], true);
      after?.();
      this.notifyIdle();
      return;
    }
    const source = places[i];
    this.runMigrate(source, target, [key], urgent, (reply) => {
      if (isErrorFrame(reply)) {
        this.errors++;
        this.log.warn({ source, target, keys: 1, error: errorText(reply) }, 'MIGRATE failed');
        this.settle([key], false);
      } else if (reply.toString('latin1', 0, 3) === '+OK') {
        this.keysMoved++;
        const del = commandFrame(['DEL', key]);
        for (const later of places.slice(i + 1)) this.conn(later).send(new CallbackOp(del, () => undefined), del);
        this.settle([key], true);
      } else {
        this.probe(key, target, places, i + 1, urgent, after);
        return;
      }
      after?.();
      this.notifyIdle();
    });
  }

  /** Sends one MIGRATE through the scheduler. */
  private runMigrate(
    source: string,
    target: string,
    keys: Buffer[],
    urgent: boolean,
    done: (reply: Buffer) => void,
  ): void {
    const frame = this.migrateFrame(target, keys);
    scheduler.submit({ source, target, frame, done }, urgent, (job, jobDone) => {
      if (this.closed) jobDone(ERR_CLOSED);
      else this.conn(job.source).send(new CallbackOp(job.frame, jobDone), job.frame);
    });
  }

  /**
   * `keys` are where they belong now (ok), or could not be moved: their waiting requests go on. `record`: remember
   * them as moved (as ok unless the caller knows better).
   */
  private settle(keys: Buffer[], ok: boolean, record = ok): void {
    for (const k of keys) {
      const name = k.toString('latin1');
      if (record) this.moved.add(name);
      const waiters = this.inFlight.get(name);
      this.inFlight.delete(name);
      if (waiters !== undefined) for (const w of waiters) w(ok);
    }
  }

  private notifyIdle(): void {
    if (this.inFlight.size === 0 && this.idleWaiters.length > 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const cb of idle) cb();
    }
  }

  private scanAll(): void {
    // A new pass (a rescan after errors, or a migration reinstated): what an earlier pass still has in flight is
    // dropped when it returns, so two passes never count down the same sources.
    const pass = ++this.scanPass;
    this.scansLeft = this.sources.length;
    this.keysScanned = 0;
    this.totalAtStart = 0;
    if (this.scansLeft === 0) {
      this.finish();
      return;
    }
    for (const source of this.sources) {
      this.conn(source).send(
        new CallbackOp(commandFrame(['DBSIZE']), (reply) => {
          if (pass !== this.scanPass) return;
          const m = /^:(\d+)/.exec(reply.toString('latin1', 0, 24));
          if (m !== null) this.totalAtStart += Number(m[1]);
          this.scanStep(source, '0', pass);
        }),
        commandFrame(['DBSIZE']),
      );
    }
  }

  private scanStep(source: string, cursor: string, pass: number): void {
    if (this.state !== 'running' || this.closed || pass !== this.scanPass) return;
    const frame = commandFrame(['SCAN', cursor, 'COUNT', SCAN_COUNT]);
    this.conn(source).send(
      new CallbackOp(frame, (reply) => {
        // Superseded or closed meanwhile (the successor takes it from here), or an older pass.
        if (this.state !== 'running' || pass !== this.scanPass) return;
        const parts = readArrayElements(reply);
        const next = parts === null ? null : readBulk(parts[0]);
        const keys = parts === null ? null : readArrayElements(parts[1]);
        if (next === null || keys === null) {
          this.errors++;
          this.log.warn({ source, reply: reply.toString('latin1', 0, 200) }, 'SCAN failed; retrying');
          setTimeout(() => this.scanStep(source, cursor, pass), 200);
          return;
        }
        this.keysScanned += keys.length;
        const byTarget = new Map<string, Buffer[]>();
        let probes: Array<[Buffer, string, string[]]> | null = null;
        for (const raw of keys) {
          const key = readBulk(raw);
          if (key === null) continue;
          const k = Buffer.from(key);
          // The key is physically on `source`: it moves if its new owner is elsewhere, and only if `source` is where
          // the key lives. A copy on a shard that is not its owner is a leftover (of an older topology, or written
          // behind keymux's back) that no client could read: moved with REPLACE it would overwrite the key's live
          // value, so it stays where it is, as unreachable as before.
          const target = this.newOwner(k);
          if (target === source) continue;
          const name = k.toString('latin1');
          if (this.moved.has(name) || this.inFlight.has(name)) continue;
          if (this.probing) {
            // A place the key may be (not necessarily its live copy): probed oldest place first.
            const places = this.oldPlaces(k, target);
            if (!places.includes(source)) continue;
            this.inFlight.set(name, []);
            (probes ??= []).push([k, target, places]);
            continue;
          }
          if (this.from.locate(k) !== source) continue;
          this.inFlight.set(name, []);
          const list = byTarget.get(target);
          if (list === undefined) byTarget.set(target, [k]);
          else list.push(k);
        }
        let batches = 0;
        const continueScan = () => {
          if (--batches > 0 || pass !== this.scanPass) return;
          this.logProgress();
          const nextCursor = (next as Buffer).toString('latin1');
          if (nextCursor === '0') {
            if (--this.scansLeft === 0) this.finish();
          } else {
            this.scanStep(source, nextCursor, pass);
          }
        };
        for (const [target, list] of byTarget) {
          for (let i = 0; i < list.length; i += BATCH_KEYS) {
            batches++;
            this.migrate(source, target, list.slice(i, i + BATCH_KEYS), continueScan);
          }
        }
        for (const [k, target, places] of probes ?? []) {
          batches++;
          this.probe(k, target, places, 0, false, continueScan);
        }
        if (batches === 0) {
          batches = 1;
          continueScan();
        }
      }),
      frame,
    );
  }

  private logProgress(): void {
    const now = performance.now();
    if (now - this.lastLog < PROGRESS_LOG_MS) return;
    this.lastLog = now;
    const seconds = Math.max(1, (Date.now() - this.startedAt) / 1000);
    this.log.info(
      {
        keysScanned: this.keysScanned,
        keysMoved: this.keysMoved,
        keysLeft: this.progress().keysLeft,
        movedPerSecond: Math.round(this.keysMoved / seconds),
      },
      'migration progress',
    );
  }

  private finish(): void {
    if (this.state !== 'running') return; // a superseded migration is retired by its successor, never finished
    if (this.errors > 0) {
      // Some keys could not be moved: scan again (only keys that still need moving are touched).
      this.log.warn({ errors: this.errors }, 'migration pass had errors; scanning again');
      this.errors = 0;
      setTimeout(() => {
        // Closed, superseded or ended meanwhile: no new pass (it would open connections nobody closes).
        if (!this.closed && this.state === 'running') this.scanAll();
      }, 500);
      return;
    }
    this.state = 'done';
    this.finishedAt = Date.now();
    this.moved = new Set();
    // Migrations this one took over are complete too: every key is where this one put it.
    this.retirePredecessors();
    this.forgetPlaces();
    this.removeState();
    this.log.info(
      {
        keysScanned: this.keysScanned,
        keysMoved: this.keysMoved,
        seconds: Math.round((Date.now() - this.startedAt) / 100) / 10,
      },
      'migration finished',
    );
    for (const c of this.conns.values()) c.closeWhenIdle();
    this.onDone(this);
    this.coordination?.onScanned(this.id, this.progress());
  }

  private writeState(): void {
    if (this.options.stateFile === null) return;
    try {
      writeMigrationState(this.options.stateFile, this.startedAt, this.options.chain);
    } catch (err) {
      // Checked writable before the reload (stateFileProblem); gone since. The keys still move; only a restart
      // before the end would not know to resume.
      this.log.error({ err, stateFile: this.options.stateFile }, 'migration state file not written');
    }
  }

  private removeState(): void {
    if (this.options.stateFile !== null) removeMigrationState(this.options.stateFile);
  }
}
