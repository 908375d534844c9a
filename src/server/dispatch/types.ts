/**
 * The contract between a client session and the handlers of its dispatch kinds (keyed, fan-out, broadcast, local,
 * refused, and the kinds later issues add). A handler gets the request, its resolved spec and the topology snapshot
 * read once for it, and answers it or sends it on; it may use only what DispatchSession exposes, so adding a kind
 * adds a file here, not branches in the session.
 */
import type { Request, RequestOwner, RoutedUnit } from '../../core/request.js';
import type { CommandSpec } from '../../commands/spec.js';
import type { Topology } from '../../routing/topology.js';
import type { ShardPool } from '../../backend/pool.js';
import type { Migration } from '../../migration/migration.js';
import type { LocalSession } from '../../commands/local.js';
import type { ProxyContext } from '../context.js';
import type { PubSubClient } from '../../pubsub/client.js';
import type { Entry } from '../../pubsub/hub.js';
import type { SessionState } from '../../session/client-state.js';

export interface DispatchSession extends LocalSession, RequestOwner {
  readonly ctx: ProxyContext;
  /** The client is gone (its connection closed): nothing may be leased or sent for it any more. */
  readonly left: boolean;
  /** Scratch array for key indexes (reused by every handler; valid until the next call). */
  readonly keyIndexes: number[];
  /**
   * During a migration: if any key of `req` (at args[idx[0..n)]) is still on its old owner, moves it first and
   * dispatches `req` again afterwards, holding the client's later requests meanwhile. True when it took `req`.
   * `keys`, when given, are the keys to check instead (EXEC: the keys of the queued commands). When the move fails
   * `req` is answered -TRYAGAIN; `failed`, when given, runs first (EXEC: the transaction ends, as any EXEC reply ends it).
   */
  holdForMigration(
    req: Request,
    migration: Migration,
    idx: number[],
    n: number,
    keys?: Buffer[],
    failed?: () => void,
  ): boolean;
  /** Sends a routed unit through `pool`, behind the client's ordering fence for its slot when cluster mode needs one. */
  sendUnit(unit: RoutedUnit, pool: ShardPool, topo: Topology): void;
  /**
   * The client's user may use operator forms the config grants (commands.config_broadcast): true for a user
   * marked `operator: true`, or, when clients.users is empty, for any authenticated client.
   */
  readonly operator: boolean;
  /** The RESP version the client speaks (2 until it switches with HELLO). */
  readonly protocol: number;
  /** The client's pub/sub state (null until it first subscribes). */
  readonly pubsub: PubSubClient<Entry> | null;
  /** The client's pub/sub state, created on first use. */
  pubsubClient(): PubSubClient<Entry>;
  /**
   * `req` must wait (e.g. at the pub/sub publish gate): the client's later requests are held behind it until
   * `resumeParked(req)`, which dispatches it again.
   */
  park(req: Request): void;
  resumeParked(req: Request): void;
  /** Transaction / WATCH / blocked-command state (null until the client first needs it). */
  readonly txn: SessionState | null;
  /** That state, created on first use. */
  sessionState(): SessionState;
  /**
   * `req` must run alone in its client's order (it goes over a connection of its own): true when it may go now
   * (nothing earlier of the client is outstanding); false when it was parked, and the session dispatches it again
   * once the earlier ones are answered. Later requests wait until it is answered either way. It may be held for
   * long, so it gets bytes of its own first (ownBytes, core/request.ts). `blocks`: a blocking command or WAIT,
   * refused (with an error, and the connection ended) once the client has ended its side.
   */
  runAlone(req: Request, blocks?: boolean): boolean;
  /**
   * WAIT (wait.ts): `pool` (a shard's shared pool, cluster mode a master's) received a command of this client that
   * is not read-only. sendUnit notes it for the commands it sends; the session handlers note what they send over
   * leased connections (EXEC, blocking writes).
   */
  noteWrite(pool: ShardPool): void;
  /** The pools noted since the last call (WAIT takes them), in no particular order. */
  takeWritten(): ShardPool[];
  /**
   * EXEC is about to run its queued local commands: the AuthGuard holds of the AUTHs among them add up (instead of
   * each holding the client) until answerAfterExecAuth, which delivers EXEC's `reply` once they are over, and closes
   * the connection after it when a failure reached clients.auth_failures.close_after.
   */
  beginExecAuth(): void;
  answerAfterExecAuth(req: Request, reply: Buffer): void;
  /**
   * EXEC of a transaction queued before a reload changed users or rules: the client's user's permission for a queued
   * command now, null when allowed, else the NOPERM reply that takes its place (security/acl.ts recheckAtExec).
   */
  permissionAtExec(spec: CommandSpec, args: Buffer[]): Buffer | null;
  /** Holds the client's later requests (not routed) until releaseLater(): a sliced fan-out still sending. */
  holdLater(): void;
  releaseLater(): void;
}

export type DispatchHandler = (session: DispatchSession, req: Request, spec: CommandSpec, topo: Topology) => void;
