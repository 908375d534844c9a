/**
 * Reading a configuration: YAML text -> document AST (with a LineCounter, so every node has a line) -> plain JS
 * -> validateConfig. Owns the mapping from validator paths to lines (`locate`), and turns YAML syntax errors,
 * warnings (unknown tags) and alias failures into the same one-line `file:line: message` form. A syntax error
 * stops there: the validator only ever sees a document that parsed cleanly. Nothing here keeps state; a reload
 * simply calls it again and keeps the old config if it gets errors.
 */

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import {
  LineCounter,
  parseDocument,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  visit,
  type Document,
  type Node,
  type YAMLError,
} from 'yaml';
import { validateConfig, type ConfigPath, type ConfigResult, type KeymuxConfig, type Locate } from './schema.js';

/** Thrown by loadConfigFile. `errors` holds one line per problem; `message` is them joined by newlines. */
export class ConfigError extends Error {
  readonly code = 'ERR_KEYMUX_CONFIG';
  readonly errors: readonly string[];
  constructor(errors: readonly string[]) {
    super(errors.join('\n'));
    this.name = 'ConfigError';
    this.errors = Object.freeze([...errors]);
  }
}

/** Reads, parses and validates a config file; throws ConfigError listing every problem. */
export function loadConfigFile(path: string): KeymuxConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the file: ${(err as Error).message}`]);
  }
  const result = parseConfigText(text, path);
  if (result.errors) throw new ConfigError(result.errors);
  return result.config;
}

/** Like loadConfigFile but asynchronous and never throws: for reloads, where a bad file keeps the old config. */
export async function readConfigFile(path: string): Promise<ConfigResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return { errors: [`${path}: cannot read the file: ${(err as Error).message}`] };
  }
  return parseConfigText(text, path);
}

/** Parses and validates YAML text; `source` names it in error messages and becomes `config.source`. */
export function parseConfigText(text: string, source: string): ConfigResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const lineAt = (offset: number): number => Math.max(1, lineCounter.linePos(offset).line);

  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    const lines = problems
      .map((e) => ({ line: lineAt(e.pos[0]), text: describeYamlError(e, text) }))
      .sort((a, b) => a.line - b.line)
      .map((p) => `${source}:${p.line}: ${p.text}`);
    return { errors: lines };
  }

  // Unresolved aliases are not parse errors in `yaml`; toJS would throw without a position.
  const aliasErrors: string[] = [];
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) === undefined) {
        const line = alias.range ? lineAt(alias.range[0]) : 1;
        aliasErrors.push(
          `${source}:${line}: invalid YAML: alias *${alias.source} has no anchor &${alias.source} before it`,
        );
      }
    },
  });
  if (aliasErrors.length > 0) return { errors: aliasErrors };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { errors: [`${source}: invalid YAML: ${(err as Error).message}`] };
  }
  return validateConfig(value, makeLocator(doc, lineCounter), source);
}

function describeYamlError(e: YAMLError, text: string): string {
  if (e.code === 'DUPLICATE_KEY') {
    const key = /^[^:\n]*/.exec(text.slice(e.pos[0]))![0].trim();
    return `duplicate key ${JSON.stringify(key)} in the same mapping`;
  }
  return `invalid YAML: ${e.message}`;
}

/**
 * Builds the validator's `locate` for one document. A path ending in a mapping key gives the key's line; one
 * ending in a list index gives the item's line; [] gives the first line of the document's content.
 */
export function makeLocator(doc: Document, lineCounter: LineCounter): Locate {
  const lineOf = (node: { range?: unknown } | null | undefined): number | null => {
    const range = node?.range as [number, number, number] | null | undefined;
    return range ? Math.max(1, lineCounter.linePos(range[0]).line) : null;
  };
  const deref = (node: unknown): unknown => (isAlias(node) ? node.resolve(doc) : node);

  return (path: ConfigPath): number | null => {
    let node = deref(doc.contents);
    if (path.length === 0) return lineOf(node as Node | null);
    for (let i = 0; i < path.length; i++) {
      const part = path[i]!;
      const last = i === path.length - 1;
      if (isMap(node) && typeof part === 'string') {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === part);
        if (!pair) return null;
        if (last) return lineOf(pair.key as Node) ?? lineOf(pair.value as Node);
        node = deref(pair.value);
      } else if (isSeq(node) && typeof part === 'number') {
        const item = node.items[part];
        if (item === undefined) return null;
        if (last) return lineOf(item as Node);
        node = deref(item);
      } else {
        return null;
      }
    }
    return null;
  };
}
