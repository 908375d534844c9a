/**
 * The dispatch kinds, as data: spec.dispatch -> the handler that serves it. A new kind is a new file and a row here.
 */
import type { Dispatch } from '../../commands/spec.js';
import { dispatchBroadcast } from './broadcast.js';
import { dispatchFanout } from './fanout.js';
import { dispatchKeyed } from './keyed.js';
import { dispatchLocal, dispatchRefused } from './local.js';
import { dispatchPubSub } from './pubsub.js';
import { dispatchSession } from './session.js';
import { dispatchOneShard } from './one-shard.js';
import { dispatchScan } from './scan.js';
import { dispatchKill } from './kill.js';
import { dispatchConfig } from './config.js';
import { dispatchWait } from './wait.js';
import type { DispatchHandler } from './types.js';

export const DISPATCH: Readonly<Record<Dispatch, DispatchHandler>> = {
  keyed: dispatchKeyed,
  fanout: dispatchFanout,
  'all-shards': dispatchBroadcast,
  local: dispatchLocal,
  refused: dispatchRefused,
  pubsub: dispatchPubSub,
  session: dispatchSession,
  'one-shard': dispatchOneShard,
  scan: dispatchScan,
  kill: dispatchKill,
  config: dispatchConfig,
  wait: dispatchWait,
};

export type { DispatchHandler, DispatchSession } from './types.js';
