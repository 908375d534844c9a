/**
 * Writes config/keymux.schema.json, the JSON Schema editors check keymux configs against, from the one config
 * declaration in src/config/schema.ts (configJsonSchema), formatted with the repository's Prettier settings.
 * test/unit/config-json-schema.test.ts fails when the committed file differs from what this writes.
 * Run: npm run gen:schema   (or: npx tsx scripts/gen-config-schema.ts)
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { configJsonSchema } from '../src/config/schema.js';

const OUT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../config/keymux.schema.json');

const options = await prettier.resolveConfig(OUT);
const text = await prettier.format(JSON.stringify(configJsonSchema()), { ...options, filepath: OUT });
const before = fs.existsSync(OUT) ? fs.readFileSync(OUT, 'utf8') : null;
fs.writeFileSync(OUT, text);
console.log(`${path.relative(process.cwd(), OUT)}: ${before === text ? 'unchanged' : 'written'}`);
