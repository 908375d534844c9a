/**
 * Reading keymux's admin endpoints in tests: fetch JSON or text with undici, and parse the Prometheus text format
 * into samples (name, labels, value) with escapes in label values handled, so tests assert exact numbers rather
 * than grep lines. Also a PromQL metric-name extractor for the dashboard test.
 */
import { request } from 'undici';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export async function httpGet(
  port: number,
  path: string,
  method = 'GET',
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const res = await request(`http://127.0.0.1:${port}${path}`, { method: method as 'GET', headers });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

/** GETs JSON; `headers` e.g. { authorization: 'Bearer TOKEN' } for a keymux with admin.token_file. */
export async function getJson<T = any>(port: number, path: string, headers: Record<string, string> = {}): Promise<T> {
  const r = await httpGet(port, path, 'GET', headers);
  if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.body}`);
  return JSON.parse(r.body) as T;
}

export async function scrape(port: number): Promise<Sample[]> {
  const r = await httpGet(port, '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status} ${r.body}`);
  return parseExposition(r.body);
}

/** Parses the Prometheus text exposition format (0.0.4) into samples; comments and blank lines are skipped. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    let i = 0;
    while (i < line.length && line[i] !== '{' && line[i] !== ' ') i++;
    const name = line.slice(0, i);
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      while (line[i] !== '}') {
        const eq = line.indexOf('=', i);
        const label = line.slice(i, eq);
        i = eq + 2; // past ="
        let value = '';
        while (line[i] !== '"') {
          if (line[i] === '\\') {
            const n = line[i + 1];
            value += n === 'n' ? '\n' : n;
            i += 2;
          } else {
            value += line[i++];
          }
        }
        labels[label] = value;
        i++; // closing quote
        if (line[i] === ',') i++;
      }
      i++; // }
    }
    const rest = line.slice(i).trim().split(/\s+/)[0];
    const value = rest === '+Inf' ? Infinity : rest === '-Inf' ? -Infinity : Number(rest);
    out.push({ name, labels, value });
  }
  return out;
}

/** The samples named `name` whose labels include `labels`. */
export function samplesOf(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample named `name` whose labels include `labels` (throws unless exactly one). */
export function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samplesOf(samples, name, labels);
  if (found.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples`);
  return found[0].value;
}

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'offset',
  'bool',
  'and',
  'or',
  'unless',
  'atan2',
  'inf',
  'nan',
]);

/**
 * The metric names a PromQL expression (or a Grafana label_values(...) query) reads: identifiers that are not
 * function names (followed by "("), keywords, label names (inside {...} or the lists after by/without/on/...),
 * numbers or durations; strings and Grafana $variables are removed first.
 */
export function promqlMetricNames(expr: string): string[] {
  let s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/'(?:[^'\\]|\\.)*'/g, "''")
    .replace(/\$\{?\w+\}?/g, '')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  const re = /[A-Za-z_:][A-Za-z0-9_:]*/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    const word = m[0];
    const after = s.slice(re.lastIndex).trimStart();
    const before = s.slice(0, m.index);
    if (after.startsWith('(')) continue; // a function
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    if (/[0-9.]$/.test(before)) continue; // part of a number like 1e3
    if (/label_values\(\s*[^,()]*$/.test(before) && after.startsWith(')')) continue;
    if (/,\s*$/.test(before) && /label_values\(/.test(before)) continue; // label_values(metric, LABEL)
    names.add(word);
  }
  return [...names];
}
