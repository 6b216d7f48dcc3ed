#!/usr/bin/env bash
# The admission-path anchor most flash-sale systems use: stock pre-deduction in Redis with a Lua script
# (GET, check > 0, DECR), driven by redis-benchmark on loopback. Prints requests/s per (connections, pipeline).
# Usage: scripts/anchors/redis-anchor.sh [requests] [pin] ; needs redis-server and redis-tools (Debian).
# With `pin`, redis-server runs on CPU 1 and redis-benchmark on CPU 0, as `flashsale sale --pin` places the edges
# and the buyers.
set -euo pipefail
N=${1:-1000000}
SERVER_CPU=() CLIENT_CPU=()
if [[ "${2:-}" == pin ]]; then SERVER_CPU=(taskset -c 1) CLIENT_CPU=(taskset -c 0); fi
# Below the ephemeral range (run-servers.sh's rule): after a sale's thousands of connections a port in it may be
# held by some socket, and redis-server then failed to bind.
source "$(dirname "$0")/../lib/run-servers.sh"
PORT=$(free_port "$(random_port)")
"${SERVER_CPU[@]}" redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for i in $(seq 50); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p $PORT ping >/dev/null 2>&1 || { echo "redis-server did not start on port $PORT" >&2; exit 1; }
redis-cli -p $PORT set stock:TV 1000000000 >/dev/null
S='local s=tonumber(redis.call("GET",KEYS[1])) if s and s>0 then redis.call("DECR",KEYS[1]) return 1 end return 0'
for c in 1000; do for P in 1 16; do
  r=$("${CLIENT_CPU[@]}" redis-benchmark -p $PORT -n "$N" -c $c -P $P -q eval "$S" 1 stock:TV 2>&1 | tr '\r' '\n' | grep 'requests per second' | tail -1 | sed 's/.*: \([0-9.]*\) requests per second.*/\1/')
  echo "redis-lua-decr connections=$c pipeline=$P requests_per_s=${r%.*}"
done; done
