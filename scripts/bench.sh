#!/usr/bin/env bash
# `npm run bench`: makes sure the benchmark's tools are present (node modules; redis-server, redis-benchmark and
# nutcracker, installed with apt-get only when running as root, otherwise a clear message), builds keymux
# (tsc -> dist/), then hands over to test/bench/run.ts with every argument (e.g. --targets direct,twemproxy).
# Environment: BENCH_SCALE multiplies request counts; BENCH_TIMEOUT_S bounds one redis-benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ]; then
  echo "bench: node_modules missing, running npm ci"
  npm ci
fi

missing_pkgs=()
command -v redis-server >/dev/null 2>&1 || missing_pkgs+=(redis-server)
{ command -v redis-benchmark >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; } || missing_pkgs+=(redis-tools)
command -v nutcracker >/dev/null 2>&1 || missing_pkgs+=(nutcracker)
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing ${missing_pkgs[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_pkgs[@]}"
  else
    echo "bench: missing ${missing_pkgs[*]} (needs redis-server, redis-benchmark and nutcracker on PATH)." >&2
    echo "bench: install them, e.g.: sudo apt-get install -y ${missing_pkgs[*]}" >&2
    exit 1
  fi
fi

# keymux is a target unless --targets names a list without it.
wants_keymux=1
prev=""
for arg in "$@"; do
  list=""
  case "$arg" in
    --targets=*) list="${arg#--targets=}" ;;
    *) [ "$prev" = "--targets" ] && list="$arg" ;;
  esac
  if [ -n "$list" ]; then
    case ",$list," in *,keymux,*) wants_keymux=1 ;; *) wants_keymux=0 ;; esac
  fi
  prev="$arg"
done

if ! npm run build; then
  if [ "$wants_keymux" -eq 1 ]; then
    echo "bench: npm run build failed, so keymux cannot be benchmarked (use --targets direct,twemproxy to skip it)" >&2
    exit 1
  fi
  echo "bench: npm run build failed; continuing because keymux is not among the targets" >&2
fi
exec npx tsx test/bench/run.ts "$@"
