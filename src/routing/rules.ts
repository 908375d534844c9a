/**
 * Routing rules: for applications that cannot put {hash tags} in their keys (BullMQ's default prefix writes
 * `bull:emails:wait`, `bull:emails:42`...), the config says which part of a key routes it, per key pattern:
 * `routing: [{ match: "^bull:([^:]+):", by: 1 }]`. A key matching a rule's pattern routes as if it were only the
 * bytes of capture group `by` (hash tags still apply inside those bytes); a key matching no rule routes as today.
 * Rules are tried in order, the first match wins; a match whose group is empty or did not take part routes the
 * key as today (as an empty {} hash tag does).
 *
 * Patterns are JavaScript regular expressions matched against the key's bytes read as latin1 (one character per
 * byte), so capture offsets are byte offsets and binary keys never fail to decode; a pattern written in ASCII
 * means what it says. Cost: none when `routing` is empty (the routers without rules are the plain ones); with
 * rules, a pattern anchored by a literal prefix ("^bull:...") is first checked on the bytes, and only keys with
 * that prefix build a string and run the regex.
 */
import type { TagRange } from './hash-tag.js';

export interface RoutingRuleConfig {
  readonly match: string;
  readonly by: number;
}

class CompiledRule {
  constructor(
    readonly regex: RegExp,
    readonly by: number,
    /** Bytes every matching key starts with (from a "^literal" pattern head), or null when unknown. */
    readonly prefix: Buffer | null,
  ) {}
}

/** Number of capture groups of a pattern (throws if it does not compile). */
export function captureGroups(pattern: string): number {
  const m = new RegExp(`${pattern}|`).exec('');
  return m === null ? 0 : m.length - 1;
}

/**
 * The literal bytes a pattern's every match starts with, when the pattern is anchored ("^...") and has no
 * top-level alternative: "^bull:([^:]+):" -> "bull:". Conservative: any special character ends it, and a character
 * followed by a quantifier is dropped. Empty or not anchored: null (no prefilter).
 */
export function literalPrefix(pattern: string): string | null {
  if (!pattern.startsWith('^') || pattern.includes('|')) return null;
  let out = '';
  for (let i = 1; i < pattern.length; i++) {
    const c = pattern[i];
    if ('?*+{'.includes(c)) {
      out = out.slice(0, -1);
      break;
    }
    if ('\\^$.()[]}'.includes(c)) break;
    out += c;
  }
  // Only ASCII: a non-ASCII pattern character is one UTF-16 unit, not one key byte.
  return out.length > 0 && /^[\x20-\x7e]+$/.test(out) ? out : null;
}

export class RoutingRules {
  private readonly rules: readonly CompiledRule[];

  constructor(config: readonly RoutingRuleConfig[]) {
    this.rules = config.map((r) => {
      const prefix = literalPrefix(r.match);
      return new CompiledRule(new RegExp(r.match, 'd'), r.by, prefix === null ? null : Buffer.from(prefix, 'latin1'));
    });
  }

  get size(): number {
    return this.rules.length;
  }

  /** When a rule matches key[0, key.length), writes the routed bytes' range into `out` and returns true. */
  apply(key: Buffer, out: TagRange): boolean {
    const rules = this.rules;
    let text: string | null = null;
    for (let r = 0; r < rules.length; r++) {
      const rule = rules[r];
      const prefix = rule.prefix;
      if (
        prefix !== null &&
        (key.length < prefix.length || key.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0)
      )
        continue;
      if (text === null) text = key.toString('latin1');
      const m = rule.regex.exec(text);
      if (m === null) continue;
      const span = m.indices?.[rule.by];
      if (span === undefined || span[1] <= span[0]) return false;
      out.start = span[0];
      out.end = span[1];
      return true;
    }
    return false;
  }
}
