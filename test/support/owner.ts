/**
 * A RequestOwner that does nothing (core/request.ts): for unit tests and micro benchmarks that build Requests and
 * Fragments by hand and read their replies directly, with no client session behind them.
 */
import type { RequestOwner } from '../../src/core/request.js';

export function idleOwner(id = 1): RequestOwner {
  return {
    id,
    onRequestDone: () => undefined,
    onFencedUnitDone: () => undefined,
    retryInOrder: () => undefined,
    holdRedirect: () => false,
    backendFull: () => undefined,
    backendDrained: () => undefined,
  };
}
