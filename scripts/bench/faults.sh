#!/usr/bin/env bash
# The fault suite at full size: for each case a sale on 3 edges against the suite's own PostgreSQL and ZooKeeper
# (a 3-node ensemble for the ensemble case), one fault mid-sale, clients retrying in-doubt requests with the same
# request id, a final sweep of buyers, then the audit. Prints the table and
# `RESULT cases=N lost=N duplicated=N oversold=N stranded=N`.
#   scripts/bench.sh faults [stock per case]
source "$(dirname "$0")/common.sh"
STOCK=${1:-2000}
bash scripts/install-deps.sh >/dev/null
echo "building release..." >&2
swift build -c release >&2
BIN=$(swift build -c release --show-bin-path)
"$BIN/flashsale-bench" faults --stock "$STOCK" --connections 40 --depth 4
