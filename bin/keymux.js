#!/usr/bin/env node
// keymux command-line entry: runs the compiled proxy (dist/, built by `npm run build` / npm's prepare step).
import('../dist/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    console.error('keymux: dist/ is missing; run `npm ci` (which builds) or `npm run build` first');
    process.exit(1);
  }
  throw err;
});
