#!/usr/bin/env bash
# The reference flash sale through the edges, beside Redis' seckill Lua script in the same run:
#   1. the reference sale (3 x 1,000 units, 1,000,000 attempts, 1,000 connections x 16 in flight): wall time,
#      attempts/s, p99, orders, audit;
#   2. the same platform at 1,000 connections x 1 in flight (fewer attempts: its rate is what counts);
#   3. the edge's memory with 10,000 open connections;
#   4. scripts/anchors/redis-anchor.sh (1,000 connections, 1 and 16 in flight);
#   5. 2 and 4 again pinned: the buyers and redis-benchmark on CPU 0, the edges and redis-server on CPU 1 (the
#      inventory, PostgreSQL and ZooKeeper on both), so that the load generator's cost is kept off the server's core.
#   scripts/bench.sh sale [attempts]
source "$(dirname "$0")/common.sh"
ATTEMPTS=${1:-1000000}
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; }
bench_build_all
# This run's own servers; `flashsale sale` uses them (it would otherwise start servers of its own for each sale).
start_run_servers bench-sale

# The anchor first, before a thousand connections churn the machine (Redis has been seen failing to start after).
echo "== anchor: redis-benchmark, Lua stock pre-deduction (scripts/anchors/redis-anchor.sh)"
redis=$(bash "$ROOT/scripts/anchors/redis-anchor.sh" 1000000 || true)
grep -q 'pipeline=16 requests_per_s=[0-9]' <<<"$redis" || { sleep 2; redis=$(bash "$ROOT/scripts/anchors/redis-anchor.sh" 1000000); }
echo "$redis"
echo "== reference sale: 3 x 1,000 units, $ATTEMPTS attempts, 1,000 connections x 16"
"$BIN/flashsale" sale --products 3 --stock 1000 --attempts "$ATTEMPTS" --connections 1000 --depth 16 --json "$RUN/sale-p16.json"
echo "== the same at 1,000 connections x 1"
"$BIN/flashsale" sale --products 3 --stock 1000 --attempts $((ATTEMPTS / 4)) --connections 1000 --depth 1 --json "$RUN/sale-p1.json" >"$RUN/sale-p1.txt"
grep -E "wall time|throughput|latency|audit" "$RUN/sale-p1.txt"
echo "== edge memory with 10,000 connections"
rss=$("$BIN/flashsale-bench" edge-rss --zookeeper "$FLASHSALE_ZK" --connections 10000)
echo "$rss"
echo "== pinned: buyers and redis-benchmark on CPU 0, edges and redis-server on CPU 1"
redis_pinned=$(bash "$ROOT/scripts/anchors/redis-anchor.sh" 1000000 pin || true)
echo "$redis_pinned"
for depth in 1 16; do
  "$BIN/flashsale" sale --pin --products 3 --stock 1000 --attempts $((ATTEMPTS / (depth == 1 ? 4 : 2))) --connections 1000 \
    --depth $depth --json "$RUN/sale-pinned-p$depth.json" >"$RUN/sale-pinned-p$depth.txt"
  grep -E "throughput|audit" "$RUN/sale-pinned-p$depth.txt" | sed "s/^/$depth in flight: /"
done
redis_p1=$(grep 'pipeline=1 ' <<<"$redis" | sed 's/.*requests_per_s=//')
redis_p16=$(grep 'pipeline=16 ' <<<"$redis" | sed 's/.*requests_per_s=//')
redis_pinned_p1=$(grep 'pipeline=1 ' <<<"$redis_pinned" | sed 's/.*requests_per_s=//')
redis_pinned_p16=$(grep 'pipeline=16 ' <<<"$redis_pinned" | sed 's/.*requests_per_s=//')

read -r orders audit wall rate p99 < <(python3 -c '
import json, sys; r = json.load(open(sys.argv[1]))
print(sum(p["orders"] for p in r["products"]), "clean" if r["auditClean"] else "failed",
      round(r["wallSeconds"], 2), int(r["attemptsPerSecond"]), round(r["latency"]["p99Ms"], 2))' "$RUN/sale-p16.json")
rate_of() { python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["attemptsPerSecond"]))' "$1"; }
rate_p1=$(rate_of "$RUN/sale-p1.json")
pinned_p1=$(rate_of "$RUN/sale-pinned-p1.json")
pinned_p16=$(rate_of "$RUN/sale-pinned-p16.json")
rss10k=$(field "$rss" edge_rss_mib)
echo
printf '%-30s %14s %14s\n' "" "1 in flight" "16 in flight"
printf '%-30s %14s %14s\n' "edge attempts/s" "$rate_p1" "$rate"
printf '%-30s %14s %14s\n' "redis Lua requests/s" "$redis_p1" "$redis_p16"
printf '%-30s %14s %14s\n' "ratio" "$(ratio "$rate_p1" "$redis_p1")" "$(ratio "$rate" "$redis_p16")"
printf '%-30s %14s %14s\n' "pinned: edge attempts/s" "$pinned_p1" "$pinned_p16"
printf '%-30s %14s %14s\n' "pinned: redis Lua requests/s" "$redis_pinned_p1" "$redis_pinned_p16"
printf '%-30s %14s %14s\n' "pinned: ratio" "$(ratio "$pinned_p1" "$redis_pinned_p1")" "$(ratio "$pinned_p16" "$redis_pinned_p16")"
echo "reference sale: orders=$orders audit=$audit wall=${wall}s p99=${p99}ms; edge RSS with 10,000 connections: ${rss10k} MiB"
echo "RESULT orders=$orders audit=$audit wall_s=$wall attempts_per_s=$rate p99_ms=$p99 ratio_vs_redis_p1=$(ratio "$rate_p1" "$redis_p1") ratio_vs_redis_p16=$(ratio "$rate" "$redis_p16") edge_rss_mib_10k=$rss10k pinned_ratio_vs_redis_p1=$(ratio "$pinned_p1" "$redis_pinned_p1") pinned_ratio_vs_redis_p16=$(ratio "$pinned_p16" "$redis_pinned_p16")"
