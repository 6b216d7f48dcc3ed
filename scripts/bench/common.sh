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

# `flashsale-bench serve inventory|wire-server ...` (Sources/FlashSaleBench/ServeCommand.swift), the harness's one
# process starter: typed arguments, databases of its own. Its one line goes to SERVED ("SERVING NAME address=...
# pid=... log=... [database=... hot_database=...]": read it with `field`). stop_service stops the process and keeps
# the databases (STOPPED holds "STOPPED NAME status=N"); stop_served, or this script's end however it ends (the
# coprocess's input closes), stops it and drops them.
SERVE_JOB=""
serve() {
  coproc SERVE { exec "$BIN/flashsale-bench" serve "$@"; }
  # Bash forgets SERVE and SERVE_PID once the coprocess exits: keep them.
  SERVE_JOB=$SERVE_PID
  SERVE_IN=${SERVE[1]}
  SERVE_OUT=${SERVE[0]}
  IFS= read -r SERVED <&"$SERVE_OUT" || { echo "flashsale-bench serve $* did not start" >&2; return 1; }
}
stop_service() { echo stop >&"$SERVE_IN"; IFS= read -r STOPPED <&"$SERVE_OUT"; }
stop_served() {
  [[ -n "$SERVE_JOB" ]] || return 0
  exec {SERVE_IN}>&-
  wait "$SERVE_JOB" 2>/dev/null || true
  SERVE_JOB=""
}
trap 'stop_served; stop_run_servers' EXIT

# free_port, and this run's own servers (start_run_servers KIND [postgres] [zookeeper]), stopped on exit.
source scripts/lib/run-servers.sh

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
field() { tr ' ' '\n' <<<"$1" | grep "^$2=" | cut -d= -f2; }
