/**
 * ScriptMemory: the Lua scripts and functions clients loaded through keymux, so that a shard added later (a
 * reload that adds a shard, a new master in cluster mode) gets them too, before any client command reaches it.
 *
 * - Scripts: the body of every successful SCRIPT LOAD, by SHA1 (SCRIPT FLUSH forgets them), and of every script
 *   first run with EVAL / EVAL_RO: a Redis server caches what it EVALs, so EVALSHA and SCRIPT EXISTS find it
 *   afterwards; behind keymux the EVAL ran on one shard only, so the first EVAL of a body keymux has not seen
 *   (SHA1 per EVAL, no more: EVAL is not the fast path, and Redis hashes it too) also sends SCRIPT LOAD of it to
 *   every other shard, on the connection that client's later commands take there, so its own SCRIPT EXISTS or
 *   EVALSHA right after the EVAL finds it everywhere. A body that fails to compile is refused by every shard and
 *   not remembered. An EVAL_RO that ran on a replica is loaded on every primary (its own shard's too).
 * - Replicas: Redis 7 propagates neither SCRIPT LOAD nor its script cache to replicas, and keymux loads scripts on
 *   primaries only, so an EVALSHA_RO sent to a replica may find nothing there: `loadOn` loads a remembered body on
 *   a replica that answered NOSCRIPT (dispatch/one-shard.ts runs the call on the primary meanwhile). Nor does
 *   Redis propagate SCRIPT FLUSH: a client's goes to the replicas too (dispatch/broadcast.ts, toReplicas).
 * - Functions: the FUNCTION LOAD / RESTORE commands that succeeded since the last FUNCTION FLUSH, in order, a
 *   library's later LOAD or DELETE replacing its earlier LOAD (FCALL has no fallback the way EVALSHA has).
 * On a new pool the remembered commands are queued on each of its connections ahead of any client command (the
 * pool is new, so nothing else is queued there yet), replies only logged: "already exists" from a shard that had
 * them is fine. Bounded (MAX_BYTES): past it, keymux stops remembering bodies and says so in the log once; an EVAL
 * body is still loaded on every shard at its first EVAL, keymux keeping only its SHA1 (up to MAX_SHARED_UNREMEMBERED,
 * past which such a body is loaded on the other shards again at each EVAL).
 */
import { createHash } from 'node:crypto';
import type { BackendOp } from '../core/request.js';
import type { ShardPool } from '../backend/pool.js';
import type { BackendConnection } from '../backend/backend-connection.js';
import type { Topology } from '../routing/topology.js';
import { commandFrame } from '../resp/writer.js';
import { errorText, isErrorFrame } from '../resp/reply-reader.js';
import { childLogger, type Logger } from '../log.js';

const MAX_BYTES = 64 * 1024 * 1024;
/** SHA1s of EVAL bodies loaded on every shard but not remembered (MAX_BYTES reached): about 100 bytes each. */
const MAX_SHARED_UNREMEMBERED = 65_536;
const SCRIPT_LOAD: Buffer[] = [Buffer.from('SCRIPT'), Buffer.from('LOAD')];

class ReplayOp implements BackendOp {
  sentAt = 0;
  redirects = 0;
  readonly sessionId = 0;
  constructor(
    readonly frame: Buffer,
    private readonly onReply: (reply: Buffer) => void,
  ) {}
  deliver(reply: Buffer): void {
    this.onReply(reply);
  }
}

interface FunctionEntry {
  /** Library name (FUNCTION LOAD), or null (FUNCTION RESTORE payload). */
  lib: string | null;
  frame: Buffer;
}

export class ScriptMemory {
  private readonly scripts = new Map<string, Buffer>();
  /** SHA1s of EVAL bodies every shard loaded that keymux could not remember (full): not loaded again. */
  private readonly sharedUnremembered = new Set<string>();
  /** SHA1s of EVAL bodies being loaded on the other shards (shareEval). */
  private readonly sharing = new Set<string>();
  /** SCRIPT FLUSHes seen: a share begun before one is not remembered. */
  private flushes = 0;
  private functions: FunctionEntry[] = [];
  private bytes = 0;
  private full = false;
  private log: Logger | null = null;

  /** `maxBytes`: the bound on what is remembered (tests lower it). */
  constructor(private readonly maxBytes = MAX_BYTES) {}

  get scriptCount(): number {
    return this.scripts.size;
  }

  get functionCount(): number {
    return this.functions.length;
  }

  /** A SCRIPT LOAD of `body` answered `sha` on every shard. */
  rememberScript(sha: string, body: Buffer): void {
    this.keepScript(sha, Buffer.from(body));
  }

  /** Remembers `copy`, a buffer of keymux's own (not a view into a client's read buffer). */
  private keepScript(sha: string, copy: Buffer): void {
    if (this.scripts.has(sha) || !this.room(copy.length)) return;
    this.scripts.set(sha, copy);
    this.bytes += copy.length;
  }

  /**
   * EVAL / EVAL_RO of `body` about to run on the primary of shard `ranOn`, or on a replica (`ranOn` -1): a body keymux
   * has not seen is loaded on every other primary (every primary when it ran on a replica), through
   * `connectionOf(pool)` (the connection the client's later commands take there), and remembered once every one
   * accepted it (when there is room; else only its SHA1, so it is not loaded again). Costs one SHA1 per EVAL; nothing
   * else once the script is known.
   */
  shareEval(body: Buffer, ranOn: number, topo: Topology, connectionOf: (pool: ShardPool) => BackendConnection): void {
    const shards = topo.shards;
    const targets = ranOn >= 0 && ranOn < shards.length ? shards.length - 1 : shards.length;
    if (targets === 0) return;
    const sha = createHash('sha1').update(body).digest('hex');
    if (this.scripts.has(sha) || this.sharing.has(sha) || this.sharedUnremembered.has(sha)) return;
    this.sharing.add(sha);
    const generation = this.flushes;
    const frame = commandFrame([...SCRIPT_LOAD, body]);
    const kept = Buffer.from(body); // the client's read buffer is reused: keep a copy until the replies are in
    let left = targets;
    let refused = 0;
    const done = (reply: Buffer): void => {
      if (isErrorFrame(reply)) refused++;
      if (--left > 0) return;
      if (generation !== this.flushes) return; // a SCRIPT FLUSH came in between: forgotten with the rest
      this.sharing.delete(sha);
      if (refused > 0) return;
      this.keepScript(sha, kept);
      // Full: every shard has it all the same; only its SHA1 is kept, so later EVALs of it are not loaded again.
      if (!this.scripts.has(sha) && this.sharedUnremembered.size < MAX_SHARED_UNREMEMBERED) {
        this.sharedUnremembered.add(sha);
      }
    };
    for (let i = 0; i < shards.length; i++) {
      if (i !== ranOn) connectionOf(shards[i].pool).send(new ReplayOp(frame, done), frame);
    }
  }

  /**
   * A replica answered NOSCRIPT to EVALSHA_RO `sha` (any case) on `conn`: loads the script there if keymux remembers
   * its body (reply only logged), so the replica serves it from now on. False when the body is not remembered.
   */
  loadOn(conn: BackendConnection, sha: string): boolean {
    const body = this.scripts.get(sha.toLowerCase());
    if (body === undefined) return false;
    const frame = commandFrame([...SCRIPT_LOAD, body]);
    conn.send(
      new ReplayOp(frame, (reply) => {
        if (isErrorFrame(reply)) {
          this.logger().warn(
            { shard: conn.shard.address, error: errorText(reply) },
            'a replica refused a script loaded through keymux',
          );
        }
      }),
      frame,
    );
    return true;
  }

  /** SCRIPT FLUSH succeeded. */
  forgetScripts(): void {
    for (const b of this.scripts.values()) this.bytes -= b.length;
    this.scripts.clear();
    this.sharing.clear();
    this.sharedUnremembered.clear();
    this.flushes++;
    this.full = false;
  }

  /** FUNCTION LOAD (args as the client sent them) created or replaced library `lib`. */
  rememberFunctionLoad(lib: string, args: Buffer[]): void {
    this.dropLibrary(lib);
    const frame = commandFrame(args);
    if (!this.room(frame.length)) return;
    this.functions.push({ lib, frame });
    this.bytes += frame.length;
  }

  /** FUNCTION RESTORE succeeded (a FLUSH policy replaces everything remembered before it). */
  rememberFunctionRestore(args: Buffer[]): void {
    const policy = args.length > 3 ? args[3].toString('latin1').toLowerCase() : '';
    if (policy === 'flush') this.forgetFunctions();
    const frame = commandFrame(args);
    if (!this.room(frame.length)) return;
    this.functions.push({ lib: null, frame });
    this.bytes += frame.length;
  }

  /** FUNCTION DELETE lib succeeded. */
  forgetLibrary(lib: string): void {
    this.dropLibrary(lib);
  }

  /** FUNCTION FLUSH succeeded. */
  forgetFunctions(): void {
    for (const f of this.functions) this.bytes -= f.frame.length;
    this.functions = [];
    this.full = false;
  }

  /** The frames that give a new shard what was loaded through keymux: scripts first, then functions in order. */
  replayFrames(): Buffer[] {
    const out: Buffer[] = [];
    for (const body of this.scripts.values()) out.push(commandFrame([...SCRIPT_LOAD, body]));
    for (const f of this.functions) out.push(f.frame);
    return out;
  }

  /** Queues the replay on every connection of each new pool (before any client command can be sent there). */
  replayOn(pools: readonly ShardPool[]): void {
    const frames = this.replayFrames();
    if (frames.length === 0) return;
    const log = this.logger();
    for (const pool of pools) {
      let failed = 0;
      let left = frames.length * pool.connections.length;
      const done = (reply: Buffer): void => {
        if (isErrorFrame(reply) && !/already exists/i.test(errorText(reply))) failed++;
        if (--left === 0) {
          log.info(
            { shard: pool.shard.address, scripts: this.scripts.size, functions: this.functions.length, failed },
            'scripts and functions loaded through keymux replayed on a new shard',
          );
        }
      };
      for (const conn of pool.connections) for (const frame of frames) conn.send(new ReplayOp(frame, done), frame);
    }
  }

  private dropLibrary(lib: string): void {
    const kept: FunctionEntry[] = [];
    for (const f of this.functions) {
      if (f.lib === lib) this.bytes -= f.frame.length;
      else kept.push(f);
    }
    this.functions = kept;
  }

  private room(n: number): boolean {
    if (this.bytes + n <= this.maxBytes) return true;
    if (!this.full) {
      this.full = true;
      this.logger().warn(
        { limitBytes: this.maxBytes },
        'too many scripts/functions loaded through keymux to remember: shards added later will not get the rest ' +
          '(EVALSHA there answers NOSCRIPT and clients fall back to EVAL; load functions on new shards directly)',
      );
    }
    return false;
  }

  private logger(): Logger {
    return (this.log ??= childLogger('scripts'));
  }
}
