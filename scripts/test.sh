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
if (($#)); then
    swift test --skip-build --no-parallel "$@"
    exit
fi

# The whole run has two lanes. The fault suites start servers of their own (PostgreSQL, ZooKeeper, an ensemble,
# Patroni) and spend most of their time waiting: on paced sales, session timeouts and failovers, not on the CPU.
# They run beside the others rather than after them, which cuts the run by their length (about 4 minutes of 12).
# Each lane is still serial, and the fault lane's lines are prefixed so the two can be told apart. Both run the
# built test binary itself, as `swift test` does: two `swift test` processes on one .build wait on each other's
# lock, or fail on its build database.
TESTS="$(swift build --show-bin-path)/flashsalePackageTests.xctest"
export NO_COLOR=1
FAULT_SUITES='FaultSuiteTests|PatroniFaultTests'
( set -o pipefail
  "$TESTS" --testing-library swift-testing --no-parallel --filter "$FAULT_SUITES" 2>&1 | sed -u 's/^/[fault lane] /' ) &
fault_lane=$!
main_status=0
"$TESTS" --testing-library swift-testing --no-parallel --skip "$FAULT_SUITES" || main_status=$?
fault_status=0
wait "$fault_lane" || fault_status=$?
echo "test lanes: main exit $main_status, fault lane exit $fault_status"
((main_status == 0 && fault_status == 0))
