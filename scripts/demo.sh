#!/usr/bin/env bash
# Runs keymux on its built-in default: installs what is missing (npm dependencies; redis-server via apt-get when
# running as root), starts 3 local redis-server shards on 127.0.0.1:7001-7003 (data in .demo/), starts keymux on
# 127.0.0.1:6380 with config/default.yaml, prints how to connect, and stops everything it started on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_binaries redis-server:redis-server redis-cli:redis-tools
ensure_node_modules
npm run --silent build

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 7001 7002 7003 6380 9121; do
  if port_busy "$port"; then
    echo "keymux demo: port $port on 127.0.0.1 is already in use; stop what uses it (or an earlier demo) and retry." >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "keymux demo: stopped keymux and the 3 redis-server shards"
}
trap cleanup INT TERM EXIT

mkdir -p .demo
for port in 7001 7002 7003; do
  mkdir -p ".demo/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir ".demo/$port" \
    --logfile "redis.log" --daemonize no --protected-mode no &
  pids+=($!)
done
for port in 7001 7002 7003; do
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done

node bin/keymux.js --config config/default.yaml &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p 6380 ping >/dev/null 2>&1 && break; sleep 0.05; done

cat <<MSG

  keymux is running on 127.0.0.1:6380 in front of 3 redis-server shards (127.0.0.1:7001, 7002, 7003).

    redis-cli -p 6380                      # then: set hello world / get hello / mget a b c / info keymux
    curl -s 127.0.0.1:9121/readyz          # admin endpoint

  Press Ctrl-C to stop keymux and the shards.

MSG
wait "${pids[-1]}"
