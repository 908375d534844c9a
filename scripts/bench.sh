#!/usr/bin/env bash
# `npm run bench`: makes sure the benchmark's tools are present (node modules; redis-server, redis-cli,
# redis-benchmark and, when the ring section benches twemproxy, nutcracker; installed with apt-get only when running
# as root, otherwise a clear message), builds keymux (tsc -> dist/), then hands over to test/bench/run.ts with every
# argument (e.g. --sections ring,cluster --targets direct,twemproxy).
# Environment: BENCH_SCALE multiplies request counts; BENCH_ROUNDS sets the interleaved rounds per row;
# BENCH_TIMEOUT_S bounds one redis-benchmark run; BENCH_SECTION_TIMEOUT_S bounds one section.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_node_modules

# Which sections and ring targets run (the same defaults as run.ts; it validates the names).
sections="ring,cluster,metrics,hotkeys,workers"
targets="direct,twemproxy,keymux"
prev=""
for arg in "$@"; do
  case "$arg" in
    --sections=*) sections="${arg#--sections=}" ;;
    --targets=*) targets="${arg#--targets=}" ;;
    *)
      [ "$prev" = "--sections" ] && sections="$arg"
      [ "$prev" = "--targets" ] && targets="$arg"
      ;;
  esac
  prev="$arg"
done
has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
# keymux is needed by the cluster and metrics sections, and by the ring section when it is one of its targets.
wants_keymux=0
{ has "$sections" cluster || has "$sections" metrics || has "$sections" hotkeys || has "$sections" workers || { has "$sections" ring && has "$targets" keymux; }; } && wants_keymux=1
wants_nutcracker=0
{ has "$sections" ring && has "$targets" twemproxy; } && wants_nutcracker=1

needed=(redis-server:redis-server redis-cli:redis-tools redis-benchmark:redis-tools)
[ "$wants_nutcracker" -eq 1 ] && needed+=(nutcracker:nutcracker)
ensure_binaries "${needed[@]}"

if ! npm run build; then
  if [ "$wants_keymux" -eq 1 ]; then
    echo "bench: npm run build failed, so keymux cannot be benchmarked (use --sections ring --targets direct,twemproxy to skip it)" >&2
    exit 1
  fi
  echo "bench: npm run build failed; continuing because keymux is not among the targets" >&2
fi
exec npx tsx test/bench/run.ts "$@"
