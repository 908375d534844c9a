/**
 * Redis's glob matching (util.c stringmatchlen, case-sensitive), byte for byte: `*`, `?`, `[...]` with `^`,
 * ranges and `\` escapes, a lone `\` or an unterminated `[` read as Redis reads them, ranges compared as C `char`
 * (signed, so bytes >= 0x80 sort below ASCII, as on the x86/arm64 builds Redis ships), and the same guard against
 * abusive patterns (nesting bound, no retrying longer matches once a suffix failed). keymux uses it where it must
 * know what a backend will match without asking one: which pattern subscriptions a PUBLISH reaches (its receiver
 * count) and PUBSUB CHANNELS' pattern over channels it knows. A unit test checks it against a real server's KEYS.
 */

const STAR = 42; // *
const QUESTION = 63; // ?
const OPEN = 91; // [
const CLOSE = 93; // ]
const CARET = 94; // ^
const BACKSLASH = 92; // \
const DASH = 45; // -

/** A byte as a C `char` on the platforms Redis ships for (signed). */
function signed(b: number): number {
  return b > 127 ? b - 256 : b;
}

/** True when `subject` matches the glob `pattern` as Redis matches a channel against a PSUBSCRIBE pattern. */
export function globMatch(pattern: Buffer, subject: Buffer): boolean {
  const skipLonger = { value: false };
  return match(pattern, 0, pattern.length, subject, 0, subject.length, skipLonger, 0);
}

function match(
  p: Buffer,
  pi: number,
  pLen: number,
  s: Buffer,
  si: number,
  sLen: number,
  skipLonger: { value: boolean },
  nesting: number,
): boolean {
  if (nesting > 1000) return false;
  // pLen / sLen are the bytes left from pi / si. Reading past the end yields undefined, which, like the C
  // string's terminating NUL, equals none of the special bytes.
  while (pLen > 0 && sLen > 0) {
    const c = p[pi];
    if (c === STAR) {
      while (pLen > 0 && p[pi + 1] === STAR) {
        pi++;
        pLen--;
      }
      if (pLen === 1) return true;
      while (sLen > 0) {
        if (match(p, pi + 1, pLen - 1, s, si, sLen, skipLonger, nesting + 1)) return true;
        if (skipLonger.value) return false;
        si++;
        sLen--;
      }
      skipLonger.value = true;
      return false;
    } else if (c === QUESTION) {
      si++;
      sLen--;
    } else if (c === OPEN) {
      pi++;
      pLen--;
      const not = p[pi] === CARET;
      if (not) {
        pi++;
        pLen--;
      }
      let matched = false;
      for (;;) {
        if (p[pi] === BACKSLASH && pLen >= 2) {
          pi++;
          pLen--;
          if (p[pi] === s[si]) matched = true;
        } else if (p[pi] === CLOSE) {
          break;
        } else if (pLen === 0) {
          pi--;
          pLen++;
          break;
        } else if (pLen >= 3 && p[pi + 1] === DASH) {
          let start = signed(p[pi]);
          let end = signed(p[pi + 2]);
          const ch = signed(s[si]);
          if (start > end) {
            const t = start;
            start = end;
            end = t;
          }
          pi += 2;
          pLen -= 2;
          if (ch >= start && ch <= end) matched = true;
        } else if (p[pi] === s[si]) {
          matched = true;
        }
        pi++;
        pLen--;
      }
      if (not) matched = !matched;
      if (!matched) return false;
      si++;
      sLen--;
    } else {
      if (c === BACKSLASH && pLen >= 2) {
        pi++;
        pLen--;
      }
      if (p[pi] !== s[si]) return false;
      si++;
      sLen--;
    }
    pi++;
    pLen--;
    if (sLen === 0) {
      while (p[pi] === STAR) {
        pi++;
        pLen--;
      }
      break;
    }
  }
  return pLen === 0 && sLen === 0;
}
