#!/usr/bin/env bash
# A sale with abandoned carts (issue 14): the reference sale's shape (3 x 1,000 units) with holds that expire within
# the run. 30 % of the winners never pay; their holds expire and are resold to later buyers until the whole stock is
# paid. Reports holds made, paid, expired and resold, and the time from an expiry to the resale of its unit.
#   scripts/bench.sh reservations [attempts] [hold_seconds] [pay_share]
source "$(dirname "$0")/common.sh"
ATTEMPTS=${1:-300000}
HOLD=${2:-3}
SHARE=${3:-0.7}
bench_build_all
start_run_servers bench-reservations
echo "== sale with holds: 3 x 1,000 units, $ATTEMPTS attempts, hold ${HOLD} s, ${SHARE} of winners pay"
"$BIN/flashsale" sale --products 3 --stock 1000 --attempts "$ATTEMPTS" --connections 200 --depth 8 \
  --hold "$HOLD" --pay-share "$SHARE" --json "$RUN/reservations.json" | tee "$RUN/reservations.txt"
grep '^RESULT ' "$RUN/reservations.txt" | tail -1
