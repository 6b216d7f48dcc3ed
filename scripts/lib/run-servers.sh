# Sourced by scripts/test.sh and scripts/bench/common.sh: PostgreSQL and/or ZooKeeper of this run's own, in a folder
# of its own (.data/runs/KIND-PID) on free ports. Another checkout's run, a benchmark or `flashsale sale` beside it
# never shares them, and none of them stops these. A port something already listens on is skipped for the next
# free one. Folders of runs of KIND that were killed (their process is gone) have their servers stopped first.
#   start_run_servers KIND [postgres] [zookeeper] [pg-cluster]   (postgres and zookeeper when none is named); then
#   stop_run_servers, e.g. on EXIT. pg-cluster (scripts/pg-cluster.sh: a primary and a synchronous standby under
#   Patroni, on this run's ZooKeeper, so name zookeeper before it) exports the same FLASHSALE_PG_DSN and
#   FLASHSALE_PG_SERVICE_DSN as postgres does, and FLASHSALE_PG_PATRONI / FLASHSALE_PG_PATRONI_LEADER.
#
# Cluster/RunServers.swift is the same fixture for Swift (tests without scripts/test.sh, `flashsale sale`): same
# folders (.data/runs/KIND-PID, /tmp/flashsale-runs past 48 characters), same cleanup of a gone run's folder, the
# same server scripts doing the work. They stay two because a shell must hold the exports itself (a child process
# cannot set them), the folder is named after the process that owns the servers (this shell, whose PID a Swift helper
# that exits at once does not have), and pg-cluster lives only here; a `flashsale-bench run-servers` printing
# exports for `eval`, with an owner PID, is the way to make them one.
listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() { local port=$1; while listening "$port"; do port=$((port + 1)); done; echo "$port"; }
# Where the search for a free port starts unless one is given: a random one in 20000..31999 (below the ephemeral range,
# as RunServers.swift picks), so runs beside each other rarely race for the same first free port.
random_port() { echo $((20000 + RANDOM % 12000)); }

RUNS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.data/runs"
# PostgreSQL's socket path must stay short.
[[ ${#RUNS} -lt 48 ]] || RUNS=/tmp/flashsale-runs
RUN=""

stop_run() {
  [[ -d "$1/pg-cluster" ]] && { FLASHSALE_PGC_BASE="$1/pg-cluster" bash scripts/pg-cluster.sh stop >/dev/null 2>&1 || true; }
  FLASHSALE_ZK_BASE="$1/zookeeper" bash scripts/zookeeper.sh stop >/dev/null 2>&1 || true
  FLASHSALE_PG_BASE="$1/postgres" bash scripts/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$1"
}

start_run_servers() {
  local kind=$1; shift
  local servers=("$@"); [[ ${#servers[@]} -gt 0 ]] || servers=(postgres zookeeper)
  for old in "$RUNS/$kind"-*; do
    [[ -d "$old" ]] || continue
    kill -0 "${old##*-}" 2>/dev/null || stop_run "$old"
  done
  RUN="$RUNS/$kind-$$"
  mkdir -p "$RUN"
  export FLASHSALE_PG_BASE="$RUN/postgres" FLASHSALE_ZK_BASE="$RUN/zookeeper" FLASHSALE_PGC_BASE="$RUN/pg-cluster"
  local s
  for s in "${servers[@]}"; do
    if [[ $s == postgres ]]; then
      export FLASHSALE_PG_PORT=$(free_port "${FLASHSALE_PG_PORT:-$(random_port)}")
      bash scripts/postgres.sh start >&2
      eval "$(bash scripts/postgres.sh env)"
      export FLASHSALE_PG_DSN FLASHSALE_PG_SERVICE_DSN
    elif [[ $s == pg-cluster ]]; then
      bash scripts/pg-cluster.sh start >&2
      eval "$(bash scripts/pg-cluster.sh env)"
      export FLASHSALE_PG_DSN FLASHSALE_PG_SERVICE_DSN FLASHSALE_PG_PATRONI FLASHSALE_PG_PATRONI_LEADER
    else
      export FLASHSALE_ZK_PORT=$(free_port "${FLASHSALE_ZK_PORT:-$(random_port)}")
      bash scripts/zookeeper.sh start >&2
      eval "$(bash scripts/zookeeper.sh env)"
      export FLASHSALE_ZK
    fi
  done
}

stop_run_servers() { [[ -n "$RUN" ]] && stop_run "$RUN"; RUN=""; }
