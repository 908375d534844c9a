#!/usr/bin/env bash
# Runs the whole keymux test suite: installs what it needs (npm dependencies; redis-server, redis-cli,
# nutcracker, prometheus, kubectl (deploy test: `kubectl kustomize`), tmux (keymux top, read off a real
# terminal) and openssl (the TLS tests make their certificates with it) via apt-get when running as root),
# type-checks, lints and builds, then runs vitest (unit tests and
# integration tests against real redis-server / nutcracker processes started on free loopback ports).
# Ends with a line "N passed, M failed". Extra arguments go to vitest (e.g. a file filter).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_binaries redis-server:redis-server redis-sentinel:redis-sentinel redis-cli:redis-tools redis-benchmark:redis-tools nutcracker:nutcracker \
  prometheus:prometheus promtool:prometheus kubectl:kubectl tmux:tmux openssl:openssl
ensure_node_modules
npm run --silent build || { echo "keymux: the TypeScript build failed"; echo "0 passed, 1 failed"; exit 1; }
# Static checks first: types of src/ and test/, ESLint (type-aware) and Prettier. A failure counts as one failed
# test and stops here, so CI shows it before the long integration run. Skipped when a file filter is given
# (a developer re-running one test), unless KEYMUX_LINT=1.
if [ $# -eq 0 ] || [ "${KEYMUX_LINT:-0}" = 1 ]; then
npm run --silent typecheck || { echo "keymux: type errors (npm run typecheck)"; echo "0 passed, 1 failed"; exit 1; }
npm run --silent lint || { echo "keymux: lint or format problems (npm run lint; npm run format fixes most)"; echo "0 passed, 1 failed"; exit 1; }
fi

results=$(mktemp -t keymux-vitest-XXXXXX.json)
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@"
status=$?
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0;
  try {
    const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    // A suite that fails outside any test (a hook, an import) counts once; skipped and todo tests count as failed.
    passed = r.numPassedTests;
    failed = Math.max(r.numFailedTests, r.numFailedTestSuites > 0 ? 1 : 0) + (r.numPendingTests || 0) + (r.numTodoTests || 0);
  } catch { failed = 1; }
  if (passed === 0 && failed === 0) failed = 1;
  // vitest failed with every test passing (an unhandled error during the run): that counts as one failure.
  if (process.argv[2] !== "0" && failed === 0) failed = 1;
  console.log(`${passed} passed, ${failed} failed`);
' "$results" "$status"
rm -f "$results"
exit $status
