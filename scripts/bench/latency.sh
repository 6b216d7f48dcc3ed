#!/usr/bin/env bash
# Latency under a fixed offered load (open loop, coordinated omission corrected): the reference sale's mix through
# 2 edges at 25k, 50k, 100k and 200k attempts/s, p50/p99/p99.9 at each, with the load generator's own CPU per
# attempt beside the edges', the inventory's and PostgreSQL's (one machine runs them all). Ends with
#   RESULT p99_ms_at_100k=X p999_ms_at_100k=X p99_ms_at_200k=X max_rate_p99_under_5ms=N dropped=N lost=N oversold=N
#          sold_out_p99_ms_at_100k=X (the p99 of the attempts after the last PURCHASED one: the edges' counters alone)
# (dropped counts attempts not sent or not answered in 2 s). Target: p99_ms_at_100k <= 5.
# The generator's 100 connections stand for callers that multiplex their users' requests: the attempts due in one
# 100 us tick go out together on one connection (`--spread tick`); `--spread attempt` sends each on the next
# connection instead, a write and a read per attempt on each side.
#   scripts/bench.sh latency [seconds per rate] [flashsale-bench latency flags: --pin, --edge-threads N, --rates ...,
#                                                 --spread tick|attempt]
source "$(dirname "$0")/common.sh"
SECONDS_PER_RATE=${1:-5}
shift || true
bench_build_all
start_run_servers bench-latency
"$BIN/flashsale-bench" latency --admin-dsn "$FLASHSALE_PG_DSN" --zookeeper "$FLASHSALE_ZK" --seconds "$SECONDS_PER_RATE" "$@"
