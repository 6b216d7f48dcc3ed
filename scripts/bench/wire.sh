#!/usr/bin/env bash
# Ping calls per second through the wire runtime (RPCClient -> RPCServer, separate processes, loopback),
# 1,000 connections x 1 and x 16 in flight, beside Redis running the seckill Lua script in the same run.
#   scripts/bench.sh wire [seconds]
# Threads: server and load generator each run one event loop per core (WIRE_SERVER_THREADS, WIRE_CLIENT_THREADS
# override). Measured on this 2-core machine, 1+1 and 2+2 cost the same CPU per call (client ~3.1 us, server
# ~1.9 us at 16 in flight) and 2+2 gave equal or higher calls/s, so the default stays one loop per core. Nothing
# is pinned with taskset: the Redis anchor (a shared script) cannot be pinned the same way, and pinning only
# one side would make the comparison unequal. CPU time per call of both processes is printed too: on a shared
# machine it is steadier than calls/s.
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN=${1:-5}
THREADS=$(nproc)
SERVER_THREADS=${WIRE_SERVER_THREADS:-$THREADS}
CLIENT_THREADS=${WIRE_CLIENT_THREADS:-$THREADS}
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
bench_build

# The anchor first, on a machine not yet churned by a thousand connections closing (Redis has been seen failing to
# start right after them); once more if it did not answer.
echo "== anchor: redis-benchmark, Lua stock pre-deduction (scripts/anchors/redis-anchor.sh)"
redis=$(bash "$ROOT/scripts/anchors/redis-anchor.sh" 1000000 || true)
grep -q 'pipeline=16 requests_per_s=[0-9]' <<<"$redis" || { sleep 2; redis=$(bash "$ROOT/scripts/anchors/redis-anchor.sh" 1000000); }
echo "$redis"

serve wire-server --threads "$SERVER_THREADS"
PORT=$(field "$SERVED" address); PORT=${PORT##*:}
SERVER_PID=$(field "$SERVED" pid)
echo "== wire runtime: Ping, server on port $PORT ($SERVER_THREADS event loops), load generator $CLIENT_THREADS event loops"
load() { "$BIN/flashsale-bench" wire --port "$PORT" --connections 1000 --depth "$1" --seconds "$SECONDS_PER_RUN" --threads "$CLIENT_THREADS" --server-pid "$SERVER_PID"; }
p1=$(load 1)
echo "$p1"
p16=$(load 16)
echo "$p16"
stop_served

redis_p1=$(grep 'pipeline=1 ' <<<"$redis" | sed 's/.*requests_per_s=//')
redis_p16=$(grep 'pipeline=16 ' <<<"$redis" | sed 's/.*requests_per_s=//')

c1=$(field "$p1" calls_per_s); c16=$(field "$p16" calls_per_s)
echo
printf '%-28s %12s %12s\n' "" "1 in flight" "16 in flight"
printf '%-28s %12s %12s\n' "wire runtime calls/s" "$c1" "$c16"
printf '%-28s %12s %12s\n' "redis Lua requests/s" "$redis_p1" "$redis_p16"
printf '%-28s %12s %12s\n' "ratio" "$(ratio "$c1" "$redis_p1")" "$(ratio "$c16" "$redis_p16")"
printf '%-28s %12s %12s\n' "p50 ms" "$(field "$p1" p50_ms)" "$(field "$p16" p50_ms)"
printf '%-28s %12s %12s\n' "p99 ms" "$(field "$p1" p99_ms)" "$(field "$p16" p99_ms)"
printf '%-28s %12s %12s\n' "client CPU us per call" "$(field "$p1" client_cpu_us_per_call)" "$(field "$p16" client_cpu_us_per_call)"
printf '%-28s %12s %12s\n' "server CPU us per call" "$(field "$p1" server_cpu_us_per_call)" "$(field "$p16" server_cpu_us_per_call)"
echo "RESULT calls_per_s_p1=$c1 calls_per_s_p16=$c16 redis_p1=$redis_p1 redis_p16=$redis_p16 ratio_vs_redis_p1=$(ratio "$c1" "$redis_p1") ratio_vs_redis_p16=$(ratio "$c16" "$redis_p16") p99_ms=$(field "$p16" p99_ms)"
