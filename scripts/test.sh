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

# A port something already listens on (another checkout's server) is skipped for the next free one.
listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() { local port=$1; while listening "$port"; do port=$((port + 1)); done; echo "$port"; }

started=()
stop_started() { for s in "${started[@]:-}"; do [[ -n "$s" ]] && bash "scripts/$s.sh" stop || true; done; }
trap stop_started EXIT
for s in postgres zookeeper; do
  if ! bash "scripts/$s.sh" status >/dev/null 2>&1; then
    if [[ $s == postgres ]]; then export FLASHSALE_PG_PORT=$(free_port "${FLASHSALE_PG_PORT:-15432}"); fi
    if [[ $s == zookeeper ]]; then export FLASHSALE_ZK_PORT=$(free_port "${FLASHSALE_ZK_PORT:-12181}"); fi
    bash "scripts/$s.sh" start
    started+=("$s")
  fi
done
eval "$(bash scripts/postgres.sh env)"
eval "$(bash scripts/zookeeper.sh env)"
export FLASHSALE_PG_DSN FLASHSALE_ZK

# One suite at a time: the integration suites each start a whole platform, and on 2 cores running them side by
# side turns their waits into timeouts. Serial costs a few minutes and makes the run deterministic.
swift test --skip-build --no-parallel "$@"
