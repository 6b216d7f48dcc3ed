#!/usr/bin/env bash
# PostgreSQL failover under a sale, on the HA set-up (a primary and a synchronous standby under Patroni,
# scripts/pg-cluster.sh; the inventory follows Patroni's leader: --patroni-zookeeper, --patroni-leader-path):
#   1. what the second copy costs: the inventory benchmark (`flashsale-bench inventory`, one hot product) on the
#      cluster with synchronous_mode on, then off (asynchronous streaming), same cluster, same run;
#   2. the sale: `flashsale-bench faults --cases pgfailover` (3 edges, buyers retrying in-doubt requests with the
#      same request id, then a sweep and the audit), with kill -9 of the primary's Patroni, postmaster and backends
#      once a third of the stock is sold. failover_s runs from the kill to the first order committed on the new
#      primary (its transaction's start); unavailable_s is the gap in orders across the kill (the last order
#      before it to the first after it: the longest pause of a paced sale).
# Ends with `RESULT failover_s=X unavailable_s=X lost=N duplicated=N oversold=N stranded=N orders_per_s_sync=N
# orders_per_s_async=N ratio_sync_vs_async=X`.
#   scripts/bench.sh failover [stock] [seconds per rate run]
# The sale is the fault suite's paced one (stock x 2 attempts over about 6 s), not the reference sale's 1,000,000
# attempts: on a machine this size the reference load alone saturates it, and the failover is what is measured.
source "$(dirname "$0")/common.sh"
STOCK=${1:-3000}
SECONDS_PER_RUN=${2:-8}
bench_build_all
export FLASHSALE_SERVICE_TOKEN=${FLASHSALE_SERVICE_TOKEN:-bench-$RANDOM$RANDOM$RANDOM$RANDOM}

echo "== the cluster: a primary and a synchronous standby under Patroni, on this run's ZooKeeper"
start_run_servers bench-failover zookeeper pg-cluster
# Databases of its own on the cluster, the inventory following Patroni's leader.
serve inventory --prefix bench_failover --patroni-zookeeper "$FLASHSALE_ZK" \
  --patroni-leader-path "$FLASHSALE_PG_PATRONI_LEADER" --hot-consumers 3 --queue-limit 100000 --log-level warning
PORT=$(field "$SERVED" address); PORT=${PORT##*:}
"$BIN/flashsale-bench" inventory --port "$PORT" --product bench-sync --stock 100000000 --prepare-only >&2
"$BIN/flashsale-bench" inventory --port "$PORT" --product bench-async --stock 100000000 --prepare-only >&2
rate() {
  local run
  run=$("$BIN/flashsale-bench" inventory --port "$PORT" --product "$1" --connections 16 --in-flight 250 \
    --seconds "$SECONDS_PER_RUN" --warmup 2)
  echo "$run" >&2
  field "$(grep '^BENCH' <<<"$run")" orders_per_s
}
echo "== inventory benchmark, synchronous standby (every commit on both servers)"
sync_rate=$(rate bench-sync)
bash scripts/pg-cluster.sh sync off >&2
echo "== inventory benchmark, asynchronous standby"
async_rate=$(rate bench-async)
bash scripts/pg-cluster.sh sync on >&2
stop_served
stop_run_servers

echo "== sale with the primary killed mid-sale: flashsale-bench faults --cases pgfailover --stock $STOCK"
sale=$("$BIN/flashsale-bench" faults --cases pgfailover --stock "$STOCK" --connections 40 --depth 4 2>&1) || true
echo "$sale"
times=$(grep -m1 -o 'failover_s=[^ ]* unavailable_s=[^ ]*' <<<"$sale" || echo "failover_s=n/a unavailable_s=n/a")
result=$(grep '^RESULT ' <<<"$sale" | tail -1)
[[ -n "$result" ]] || { echo "the sale printed no RESULT" >&2; exit 1; }
counts=""
for key in lost duplicated oversold stranded; do counts+=" $key=$(field "$result" "$key")"; done
echo
printf '%-36s %12s\n' "inventory orders/s, synchronous" "$sync_rate" "inventory orders/s, asynchronous" "$async_rate"
echo "RESULT $times$counts orders_per_s_sync=$sync_rate orders_per_s_async=$async_rate ratio_sync_vs_async=$(ratio "$sync_rate" "$async_rate")"
[[ "$(field "$result" failed_cases)" == 0 ]]
