/** The merge of each MergeKind (spec.merge), as data: fan-out and broadcast dispatch pick theirs here. */
import { mergeAllOk, mergeMget, mergeSum } from '../../fanout/merge.js';
import { mergeInfo } from '../../commands/info.js';
import {
  mergeAnd,
  mergeFunctionDelete,
  mergeFunctionFlush,
  mergeFunctionLoad,
  mergeFunctionRestore,
  mergeKeys,
  mergeRandom,
  mergeSame,
  mergeScriptFlush,
  mergeScriptLoad,
} from '../../keyspace/merges.js';
import type { MergeFn } from '../../core/fragment.js';
import type { MergeKind } from '../../commands/spec.js';

export const MERGES: Readonly<Record<MergeKind, MergeFn>> = {
  mget: mergeMget,
  sum: mergeSum,
  'all-ok': mergeAllOk,
  info: mergeInfo,
  same: mergeSame,
  and: mergeAnd,
  keys: mergeKeys,
  random: mergeRandom,
  'script-load': mergeScriptLoad,
  'script-flush': mergeScriptFlush,
  'function-load': mergeFunctionLoad,
  'function-delete': mergeFunctionDelete,
  'function-flush': mergeFunctionFlush,
  'function-restore': mergeFunctionRestore,
};
