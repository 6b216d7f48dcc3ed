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

# One suite at a time: the integration suites each start a whole platform, and on 2 cores running them side by
# side turns their waits into timeouts. Serial costs a few minutes and makes the run deterministic.
if (($#)); then
    start_run_servers test
    swift test --skip-build --no-parallel "$@"
    exit
fi

# Every run below runs the built test binary itself, as `swift test` does: two `swift test` processes on one .build
# wait on each other's lock, or fail on its build database.
TESTS="$(swift build --show-bin-path)/flashsalePackageTests.xctest"
export NO_COLOR=1

# First the unit-test targets, which need no server, in parallel (swift-testing's default), while the servers start.
# The fuzzer (in WireTests) runs in lane 2 below.
UNIT_TARGETS='EdgeTests|WireTests|QuotaCoreTests|InventoryCoreTests|InventoryDiscoveryTests|PostgresClientTests|ZooKeeperClientTests|SalePageTests|ModelTests'
LANE2_SUITES='FaultSuiteTests|PatroniFaultTests|FuzzTests'
( set -o pipefail
  "$TESTS" --testing-library swift-testing --filter "^($UNIT_TARGETS)\." --skip "$LANE2_SUITES" 2>&1 |
    sed -u 's/^/[units] /' ) &
units=$!
start_run_servers test
units_status=0
wait "$units" || units_status=$?
echo "unit tests: exit $units_status"
((units_status == 0))

# Then the integration suites in two lanes, side by side, each serial. Lane 2 holds the fault suites, which start
# servers of their own (PostgreSQL, ZooKeeper, an ensemble, Patroni) and spend most of their time waiting on paced
# sales, session timeouts and failovers, then the fuzzer, which needs no server: on a clean clone that balanced the
# lanes at about 8 minutes each, where one serial run took 12. Lane 2's lines are prefixed.
# Each lane's output is also kept, so that a failure's lines can be said again at the very end, where a reader of
# only the run's tail (CI) sees them.
lane_logs="$(mktemp -d)"
( set -o pipefail
  "$TESTS" --testing-library swift-testing --no-parallel --filter "$LANE2_SUITES" 2>&1 | sed -u 's/^/[lane 2] /' |
    tee "$lane_logs/lane2" ) &
lane2=$!
lane1_status=0
( set -o pipefail
  "$TESTS" --testing-library swift-testing --no-parallel --skip "^($UNIT_TARGETS)\.|$LANE2_SUITES" 2>&1 |
    tee "$lane_logs/lane1" ) || lane1_status=$?
lane2_status=0
wait "$lane2" || lane2_status=$?
echo "test lanes: lane 1 exit $lane1_status, lane 2 exit $lane2_status"
if ((lane1_status || lane2_status)); then
  # swift-testing's failed issues (✘), and the fault and hostile suites' own failed rows and expectations.
  echo "what failed, again:"
  grep -hE '✘|FAILED|case failed to run| FAIL ' "$lane_logs"/lane1 "$lane_logs"/lane2 | cut -c1-400 | head -80 || true
fi
rm -rf "$lane_logs"
((lane1_status == 0 && lane2_status == 0))
