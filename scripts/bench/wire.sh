#!/usr/bin/env bash
# Ping calls per second through the wire runtime (RPCClient -> RPCServer, separate processes, loopback),
# 1,000 connections x 1 and x 16 in flight, beside Redis running the seckill Lua script in the same run.
#   scripts/bench.sh wire [seconds]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RUN=${1:-5}
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
bench_build

start_ready /tmp/flashsale-wire-server.log "$BIN/flashsale-bench" wire-server --port 0
PORT=${READY_ADDR##*:}
echo "== wire runtime: Ping, server on port $PORT"
p1=$("$BIN/flashsale-bench" wire --port "$PORT" --connections 1000 --depth 1 --seconds "$SECONDS_PER_RUN")
echo "$p1"
p16=$("$BIN/flashsale-bench" wire --port "$PORT" --connections 1000 --depth 16 --seconds "$SECONDS_PER_RUN")
echo "$p16"
stop_started

echo "== anchor: redis-benchmark, Lua stock pre-deduction (../shared/anchors/redis-anchor.sh)"
redis=$(bash "$SHARED/anchors/redis-anchor.sh" 1000000)
echo "$redis"
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
echo "RESULT calls_per_s_p1=$c1 calls_per_s_p16=$c16 redis_p1=$redis_p1 redis_p16=$redis_p16 ratio_vs_redis_p1=$(ratio "$c1" "$redis_p1") ratio_vs_redis_p16=$(ratio "$c16" "$redis_p16") p99_ms=$(field "$p16" p99_ms)"
