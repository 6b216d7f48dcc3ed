#!/usr/bin/env bash
# The README's main job: the reference flash sale end to end (3 products x 1,000 units, 1,000,000 attempts).
# Installs what is missing, builds in release mode, runs `flashsale sale` (which starts PostgreSQL, ZooKeeper,
# the services and the edges, and stops what it started), and leaves the report on screen.
#   scripts/sale.sh [flashsale sale options, e.g. --attempts 100000 --json report.json]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/install-deps.sh >/dev/null
echo "building (release)..." >&2
swift build -c release >&2
BIN=$(swift build -c release --show-bin-path)
exec "$BIN/flashsale" sale --products 3 --stock 1000 --attempts 1000000 "$@"
