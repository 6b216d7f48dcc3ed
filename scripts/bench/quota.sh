#!/usr/bin/env bash
# Quota propagation: time from a quota or shed write in ZooKeeper to every edge applying it, p50/p99 over many
# changes with 2, 4 and 8 edges (real Edge processes, release build). Target: p99 <= 50 ms.
# Args go to `flashsale-bench quota` (e.g. --changes 1000). FLASHSALE_ZK=host:port uses a running ZooKeeper; otherwise one of this run's own.
source "$(dirname "$0")/common.sh"
bench_build
swift build -c release --product Edge >&2
[[ -n "${FLASHSALE_ZK:-}" ]] || start_run_servers bench-quota zookeeper
"$BIN/flashsale-bench" quota --zookeeper "$FLASHSALE_ZK" --edge-binary "$BIN/Edge" --edges 2,4,8 "$@"
