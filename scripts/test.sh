#!/usr/bin/env bash
# The project's test command (README): installs what is missing, checks the generated message code, builds,
# starts the real PostgreSQL and ZooKeeper (or reuses running ones), runs every test, and stops what it started.
#   scripts/test.sh [swift test arguments, e.g. --filter InventoryTests]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"

bash scripts/install-deps.sh
bash scripts/gen-proto.sh --check
swift build --build-tests

started=()
stop_started() { for s in "${started[@]:-}"; do [[ -n "$s" ]] && bash "scripts/$s.sh" stop || true; done; }
trap stop_started EXIT
for s in postgres zookeeper; do
  if ! bash "scripts/$s.sh" status >/dev/null 2>&1; then
    bash "scripts/$s.sh" start
    started+=("$s")
  fi
done
eval "$(bash scripts/postgres.sh env)"
eval "$(bash scripts/zookeeper.sh env)"
export FLASHSALE_PG_DSN FLASHSALE_ZK

swift test --skip-build "$@"
