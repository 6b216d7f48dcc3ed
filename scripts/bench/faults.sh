#!/usr/bin/env bash
# The fault suite at full size: for each case a sale on 3 edges against the suite's own PostgreSQL and ZooKeeper
# (a 3-node ensemble for the ensemble case), one fault or hostile client load mid-sale (1 us deadlines, reused
# request ids, retry floods at keep 0, tokenless inventory purchases, poisoned ZooKeeper registrations, the hot
# database away, an edge on a dead edge's port, an edge cut off from ZooKeeper), clients retrying in-doubt requests
# with the same request id, a final sweep of buyers, then the audit; the ground-truth invariant (what live edges
# hold <= the database's remaining) is sampled throughout. The pg* cases run on a primary and a synchronous standby
# under Patroni (scripts/pg-cluster.sh): the primary's postmaster killed (the standby promoted), the same with the
# old primary rejoining mid-sale, Patroni alone killed on the primary (an orphan), the standby lost (non-strict
# mode: the primary goes on acknowledging alone). Prints the table and
# `RESULT cases=N hostile_cases=N lost=N duplicated=N oversold=N stranded=N failed_cases=N`.
#   scripts/bench.sh faults [stock per case] [--cases NAME,...]
source "$(dirname "$0")/common.sh"
STOCK=2000
CASES=all
while [[ $# -gt 0 ]]; do
  case $1 in
    --cases) CASES=$2; shift 2 ;;
    *) STOCK=$1; shift ;;
  esac
done
bench_build_all
"$BIN/flashsale-bench" faults --cases "$CASES" --stock "$STOCK" --connections 40 --depth 4
