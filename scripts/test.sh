#!/usr/bin/env bash
# The project's test command (README): installs what is missing, checks the generated message code, builds,
# starts the real PostgreSQL and ZooKeeper of this run's own, runs every test, and stops them.
#   scripts/test.sh [swift test arguments, e.g. --filter InventoryTests]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"

bash scripts/install-deps.sh
bash scripts/gen-proto.sh --check
swift build --build-tests

# This run's own PostgreSQL and ZooKeeper, in a folder of its own (.data/runs/test-PID) on free ports: another
# checkout's run, a benchmark or `flashsale sale` beside it never shares them, and none of them stops these.
# A port something already listens on is skipped for the next free one. Folders of runs that were killed (their
# process is gone) have their servers stopped first.
listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() { local port=$1; while listening "$port"; do port=$((port + 1)); done; echo "$port"; }
RUNS="$PWD/.data/runs"
# PostgreSQL's socket path must stay short.
[[ ${#RUNS} -lt 48 ]] || RUNS=/tmp/flashsale-runs
stop_run() {
  FLASHSALE_ZK_BASE="$1/zookeeper" bash scripts/zookeeper.sh stop >/dev/null 2>&1 || true
  FLASHSALE_PG_BASE="$1/postgres" bash scripts/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$1"
}
for old in "$RUNS"/test-*; do
  [[ -d "$old" ]] || continue
  kill -0 "${old##*-}" 2>/dev/null || stop_run "$old"
done
RUN="$RUNS/test-$$"
mkdir -p "$RUN"
export FLASHSALE_PG_BASE="$RUN/postgres" FLASHSALE_ZK_BASE="$RUN/zookeeper"
export FLASHSALE_PG_PORT=$(free_port "${FLASHSALE_PG_PORT:-15432}")
export FLASHSALE_ZK_PORT=$(free_port "${FLASHSALE_ZK_PORT:-12181}")
trap 'stop_run "$RUN"' EXIT
bash scripts/postgres.sh start
bash scripts/zookeeper.sh start
eval "$(bash scripts/postgres.sh env)"
eval "$(bash scripts/zookeeper.sh env)"
export FLASHSALE_PG_DSN FLASHSALE_ZK

# One suite at a time: the integration suites each start a whole platform, and on 2 cores running them side by
# side turns their waits into timeouts. Serial costs a few minutes and makes the run deterministic.
swift test --skip-build --no-parallel "$@"
