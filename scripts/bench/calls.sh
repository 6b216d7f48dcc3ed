#!/usr/bin/env bash
# CPU per call of the server's per-call path, without sockets or a load generator: one thread pushes pre-encoded
# frames through real connections' handlers on embedded channels (`flashsale-bench calls`), in the sale's two
# shapes: bursts of 16 frames on one connection (16 in flight), and one frame a read going round 1,000 connections
# (1 in flight: the per-read costs, and a working set larger than the caches). The anchor is Ping through the same
# path (the wire's own floor); the figure of each scenario is its fastest round.
#   scripts/bench.sh calls [calls-per-round]
# For A/B comparisons of changes of a few per cent, which the socket benchmarks' 20-40 % noise on a shared 2-core
# VM cannot resolve (and valgrind crashes on these binaries): run two builds' `flashsale-bench calls` alternately.
source "$(dirname "$0")/common.sh"
bench_build
CALLS=${1:-96000}
echo "== server CPU per call: bursts of 16 on one connection (16 in flight)"
p16=$("$BIN/flashsale-bench" calls --calls "$CALLS" --burst 16 --connections 1)
grep -v RESULT <<<"$p16"
echo "== server CPU per call: one frame a read, round 1,000 connections (1 in flight)"
p1=$("$BIN/flashsale-bench" calls --calls "$CALLS" --burst 1 --connections 1000)
grep -v RESULT <<<"$p1"
r16=$(grep RESULT <<<"$p16")
r1=$(grep RESULT <<<"$p1")
echo "RESULT $(sed 's/^RESULT //' <<<"$r16") ping_p1_ns=$(field "$r1" ping_ns) shed_p1_ns=$(field "$r1" shed_ns) sold_out_p1_ns=$(field "$r1" sold_out_ns) shed_vs_ping_p1=$(field "$r1" shed_vs_ping)"
