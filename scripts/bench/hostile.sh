#!/usr/bin/env bash
# Hostile clients against one real Edge on loopback (release build): 10,000 idle connections, 50 slow clients (a frame
# a byte at a time), a flood of oversized length headers, a connect-and-close storm and clients that never read,
# while a well-behaved probe measures its latency (alone first, then beside them). Checks that the edge never dies,
# its memory stays bounded, idle and slow connections are closed by their timeouts, and the probe is served.
# Last line: RESULT connections=N probe_p99_ms=X baseline_p99_ms=X crashes=N ...
#   scripts/bench.sh hostile [flashsale-bench hostile options, e.g. --idle-connections 5000 --seconds 30]
# FLASHSALE_ZK=host:port uses a running ZooKeeper (the edge registers there); otherwise one of this run's own.
source "$(dirname "$0")/common.sh"
bench_build
swift build -c release --product Edge >&2
[[ -n "${FLASHSALE_ZK:-}" ]] || start_run_servers bench-hostile zookeeper
status=0
"$BIN/flashsale-bench" hostile --zookeeper "$FLASHSALE_ZK" --idle-connections 10000 --slow-clients 50 \
  --oversized-workers 4 --storm-rate 500 --non-readers 4 --baseline-seconds 5 --seconds 20 \
  --idle-timeout 10 --frame-timeout 3 "$@" || status=$?
exit $status
