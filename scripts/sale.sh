#!/usr/bin/env bash
# The README's main job: the reference flash sale end to end (3 products x 1,000 units, 1,000,000 attempts).
# Installs what is missing, builds in release mode, runs `flashsale sale` (which starts PostgreSQL, ZooKeeper,
# the services and the edges, and stops what it started), and leaves the report on screen. The report is also
# written to .data/reports/sale-<UTC time>.txt, beside it the page with the charts (.html, one self-contained file
# to open in any browser) and the JSON (.json); the last lines say where.
#   scripts/sale.sh [flashsale sale options, e.g. --attempts 100000]
#   FLASHSALE_REPORTS=DIR scripts/sale.sh    # write the reports to DIR instead
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/install-deps.sh >/dev/null
echo "building (release)..." >&2
swift build -c release >&2
BIN=$(swift build -c release --show-bin-path)
REPORTS="${FLASHSALE_REPORTS:-.data/reports}"
mkdir -p "$REPORTS"
BASE="$REPORTS/sale-$(date -u +%Y%m%d-%H%M%S)"
status=0
"$BIN/flashsale" sale --products 3 --stock 1000 --attempts 1000000 --html "$BASE.html" --json "$BASE.json" "$@" \
    | tee "$BASE.txt" || status=$?
echo ""
echo "report: $BASE.txt"
[[ -f "$BASE.html" ]] && echo "page:   $BASE.html (charts; open it in a browser)"
[[ -f "$BASE.json" ]] && echo "json:   $BASE.json"
exit "$status"
