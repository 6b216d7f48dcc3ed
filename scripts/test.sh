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

# This run's own PostgreSQL and ZooKeeper (scripts/lib/run-servers.sh), stopped at the end.
source scripts/lib/run-servers.sh
trap stop_run_servers EXIT
start_run_servers test

# One suite at a time: the integration suites each start a whole platform, and on 2 cores running them side by
# side turns their waits into timeouts. Serial costs a few minutes and makes the run deterministic.
swift test --skip-build --no-parallel "$@"
