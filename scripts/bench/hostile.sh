#!/usr/bin/env bash
# Hostile clients against one real Edge on loopback (release build): 10,000 idle connections, 50 slow clients (a frame
# a byte at a time), a flood of oversized length headers, a connect-and-close storm and clients that never read,
# while a well-behaved probe measures its latency (alone first, then beside them). Checks that the edge never dies,
# its memory stays bounded, idle and slow connections are closed by their timeouts, and the probe is served.
# Last line: RESULT connections=N probe_p99_ms=X baseline_p99_ms=X crashes=N ...
#   scripts/bench.sh hostile [flashsale-bench hostile options, e.g. --idle-connections 5000 --seconds 30]
# FLASHSALE_ZK=host:port uses a running ZooKeeper (the edge registers there); otherwise the checkout's is started.
source "$(dirname "$0")/common.sh"
bench_build
swift build -c release --product Edge >&2
started_zk=0
if [[ -z "${FLASHSALE_ZK:-}" ]]; then
  if ! bash scripts/zookeeper.sh status >/dev/null 2>&1; then bash scripts/zookeeper.sh start >&2; started_zk=1; fi
  eval "$(bash scripts/zookeeper.sh env | grep '^export FLASHSALE_ZK=')"
fi
status=0
"$BIN/flashsale-bench" hostile --zookeeper "$FLASHSALE_ZK" --idle-connections 10000 --slow-clients 50 \
  --oversized-workers 4 --storm-rate 500 --non-readers 4 --baseline-seconds 5 --seconds 20 \
  --idle-timeout 10 --frame-timeout 3 "$@" || status=$?
[[ $started_zk == 1 ]] && bash scripts/zookeeper.sh stop >&2
exit $status
