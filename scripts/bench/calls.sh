#!/usr/bin/env bash
# CPU per call of the server's per-call path, without sockets or a load generator: one thread pushes bursts of 16
# pre-encoded frames through a real connection's handlers on an embedded channel (`flashsale-bench calls`). The
# anchor is Ping through the same path (the wire's own floor); the figure of each scenario is its fastest round.
#   scripts/bench.sh calls [calls-per-round]
# For A/B comparisons of changes of a few per cent, which the socket benchmarks' 20-40 % noise on a shared 2-core
# VM cannot resolve (and valgrind crashes on these binaries): run two builds' `flashsale-bench calls` alternately.
source "$(dirname "$0")/common.sh"
bench_build
echo "== server CPU per call (embedded channel, bursts of 16, one thread)"
"$BIN/flashsale-bench" calls --calls "${1:-100000}"
