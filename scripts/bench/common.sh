# Shared by scripts/bench/*.sh: release build, anchors, helpers. Source it; do not run it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

bench_build() {
  bash scripts/install-deps.sh >/dev/null
  echo "building release..." >&2
  swift build -c release --product flashsale-bench "$@" >&2
  BIN=$(swift build -c release --show-bin-path)
}

# The whole package (the services, the CLI and the load generators), for benchmarks that start the platform.
bench_build_all() {
  bash scripts/install-deps.sh >/dev/null
  echo "building release..." >&2
  swift build -c release >&2
  BIN=$(swift build -c release --show-bin-path)
}

# Starts a process in the background, waits for its READY line, sets READY_ADDR (host:port) and PIDS.
PIDS=()
start_ready() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do
    if grep -q '^READY ' "$log"; then READY_ADDR=$(grep -m1 '^READY ' "$log" | awk '{print $3}'); return 0; fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "process died: $*" >&2; cat "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready in 30 s: $*" >&2; return 1
}
stop_started() { for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap 'stop_started; stop_run_servers' EXIT

# free_port, and this run's own servers (start_run_servers KIND [postgres] [zookeeper]), stopped on exit.
source scripts/lib/run-servers.sh

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
field() { tr ' ' '\n' <<<"$1" | grep "^$2=" | cut -d= -f2; }
