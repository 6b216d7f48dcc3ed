#!/usr/bin/env bash
# PostgreSQL 15 under Patroni (Debian's patroni 3.0.2 + python3-kazoo) for this checkout: a primary and a synchronous
# standby on loopback, with the platform's own ZooKeeper as Patroni's store.
#   scripts/pg-cluster.sh start | stop | status | env | failover | kill-patroni | kill-standby | fence | sync on|off
#
# start         starts both nodes (or the one that is down, which rejoins as a standby through pg_rewind), waits
#               for a writable primary and, when both nodes run, for the synchronous standby.
# stop          stops the standby first, then the primary (the other order fails over).
# status        prints each node's role and state (Patroni's REST /cluster); exit 1 when no primary.
# env           prints, as `export` lines (like scripts/postgres.sh env): FLASHSALE_PG_DSN (owner, both hosts,
#               target_session_attrs=read-write), FLASHSALE_PG_SERVICE_DSN (flashsale_app), FLASHSALE_PG_PATRONI
#               (REST endpoints) and FLASHSALE_PG_PATRONI_LEADER (the ZooKeeper path of Patroni's leader key).
# failover      the primary's machine vanishes: kill -9 of its Patroni, postmaster and backends; waits for the
#               standby to be promoted and prints the kill's time (seconds since the epoch) and the new primary's
#               name. `start` brings the old one back.
# kill-patroni  kill -9 of Patroni alone on the primary: its PostgreSQL lives on, still read-write (an orphan).
# kill-standby  the standby's machine vanishes (kill -9 of its Patroni, postmaster and backends): in this mode the
#               primary goes on acknowledging, alone, once Patroni has emptied synchronous_standby_names.
# fence         kill -9 of the PostgreSQL of every node whose Patroni is dead (an orphan), as a watchdog would;
#               `start` brings the node back as a standby.
# sync on|off   synchronous_mode on (the default; waits for the synchronous standby) or off (asynchronous
#               streaming: commits return once local; waits for synchronous_standby_names to be empty). For
#               measuring what the second copy costs (scripts/bench/failover.sh).
#
# Needs ZooKeeper: FLASHSALE_ZK (host:port[,...]), as `scripts/zookeeper.sh env` prints. Data, sockets and logs
# under <checkout>/.data/pg-cluster (FLASHSALE_PGC_BASE overrides: a test run or benchmark gives its own folder,
# scripts/lib/run-servers.sh; /tmp/flashsale-<hash>/pg-cluster when the server account cannot reach the checkout).
# Ports: FLASHSALE_PGC_PORT (default 15442) and FLASHSALE_PGC_REST_PORT (default 18008) are where the search for
# two free ones for the nodes and two for their REST APIs starts. `start` records the ports and ZooKeeper in
# BASE/cluster.env, so that later commands on the same folder find them without the variables. The Patroni namespace
# in ZooKeeper is named after the folder: two folders never share a cluster.
#
# Mode: synchronous_mode on, not strict. While both nodes run, a commit returns only once the standby has it. With
# one node left, Patroni empties synchronous_standby_names and commits go on unprotected until the standby is back
# (also for the few seconds after a cold start and after each failover): availability over a second copy. Strict
# mode would stop every commit of a 2-node cluster with one node down. failsafe_mode keeps a healthy primary
# writable through a ZooKeeper outage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="${FLASHSALE_PG_BIN:-/usr/lib/postgresql/15/bin}"
HASH="$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)"
SCOPE=flashsale
NODES=(n1 n2)

log() { echo "pg-cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
as_owner() { if [ "$IS_ROOT" -eq 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

ensure_packages() {
    command -v patroni >/dev/null && python3 -c 'import kazoo' 2>/dev/null && return 0
    /usr/bin/python3 -c 'import kazoo' 2>/dev/null && command -v patroni >/dev/null && return 0
    log "installing patroni and python3-kazoo"
    apt-get install -y -qq patroni python3-kazoo >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq patroni python3-kazoo >/dev/null; }
}

choose_base() {
    if [ -n "${FLASHSALE_PGC_BASE:-}" ]; then BASE="$FLASHSALE_PGC_BASE"; return; fi
    local primary="$ROOT/.data/pg-cluster" fallback="/tmp/flashsale-$HASH/pg-cluster"
    for b in "$primary" "$fallback"; do [ -d "$b/n1" ] && { BASE="$b"; return; }; done
    mkdir -p "$primary"
    # The server account must reach the folder, and Unix socket paths are limited to 107 bytes.
    if [ "${#primary}" -lt 70 ] && { [ "$IS_ROOT" -eq 0 ] || { chown postgres:postgres "$primary" && runuser -u postgres -- test -w "$primary"; }; }; then
        BASE="$primary"; return
    fi
    rmdir "$primary" 2>/dev/null || true
    mkdir -p "$fallback"; chmod 0755 "$(dirname "$fallback")"
    [ "$IS_ROOT" -eq 1 ] && chown postgres:postgres "$fallback"
    BASE="$fallback"
}
choose_base
[ -n "${FLASHSALE_PGC_BASE:-}" ] && { mkdir -p "$BASE"; [ "$IS_ROOT" -eq 1 ] && chown postgres:postgres "$BASE"; }
NAMESPACE="/flashsale-patroni-$(printf '%s' "$BASE" | sha1sum | cut -c1-12)"

listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# Ports another folder's cluster recorded (it may be starting and not listen yet): RESERVED/PORT names its folder.
RESERVED=/tmp/flashsale-pgc-ports
reserved() { local f="$RESERVED/$1" owner; [ -f "$f" ] || return 1; owner="$(cat "$f")"; [ "$owner" != "$BASE" ] && [ -d "$owner" ]; }
# The first port from $1 on where it and the next one are both free and reserved by no other folder.
free_pair() {
    local p=$1
    while listening "$p" || listening $((p + 1)) || reserved "$p" || reserved $((p + 1)); do p=$((p + 2)); done
    echo "$p"
}
reserve() { local p; mkdir -p "$RESERVED"; for p in "$@"; do echo "$BASE" >"$RESERVED/$p"; done; }

# Ports and ZooKeeper of this folder's cluster: as recorded by its `start`, else chosen now (free ones).
CLUSTER_ENV="$BASE/cluster.env"
if [ -f "$CLUSTER_ENV" ]; then
    # shellcheck disable=SC1090
    source "$CLUSTER_ENV"
else
    PORT0="$(free_pair "${FLASHSALE_PGC_PORT:-15442}")"
    REST0="$(free_pair "${FLASHSALE_PGC_REST_PORT:-18008}")"
fi

index_of() { case "$1" in n1) echo 0 ;; n2) echo 1 ;; *) die "no node $1" ;; esac; }
pg_port() { echo $((PORT0 + $(index_of "$1"))); }
rest_port() { echo $((REST0 + $(index_of "$1"))); }
node_dir() { echo "$BASE/$1"; }

zk_hosts() {
    [ -n "${FLASHSALE_ZK:-}" ] || FLASHSALE_ZK="${CLUSTER_ZK:-}"
    [ -n "${FLASHSALE_ZK:-}" ] || eval "$(bash "$ROOT/scripts/zookeeper.sh" env 2>/dev/null)" || true
    [ -n "${FLASHSALE_ZK:-}" ] || die "no ZooKeeper: set FLASHSALE_ZK or run scripts/zookeeper.sh start"
    echo "$FLASHSALE_ZK"
}

write_config() {
    local node="$1" dir; dir="$(node_dir "$node")"
    mkdir -p "$dir/run"
    local hosts="" h
    IFS=',' read -ra zk <<<"$(zk_hosts)"
    for h in "${zk[@]}"; do hosts+="'$h', "; done
    cat >"$dir/patroni.yml" <<EOF
# Written by scripts/pg-cluster.sh on every start.
scope: $SCOPE
namespace: $NAMESPACE
name: $node
restapi:
  listen: 127.0.0.1:$(rest_port "$node")
  connect_address: 127.0.0.1:$(rest_port "$node")
zookeeper:
  hosts: [${hosts%, }]
bootstrap:
  dcs:
    ttl: 4
    loop_wait: 1
    retry_timeout: 1
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    failsafe_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 300
        max_wal_senders: 10
        max_replication_slots: 10
        wal_level: replica
        wal_log_hints: 'on'
        wal_keep_size: 256MB
        hot_standby: 'on'
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
    - auth-local: trust
    - auth-host: trust
postgresql:
  listen: 127.0.0.1:$(pg_port "$node")
  connect_address: 127.0.0.1:$(pg_port "$node")
  data_dir: $dir/data
  bin_dir: $PGBIN
  pgpass: $dir/pgpass
  use_unix_socket: true
  authentication:
    superuser: {username: postgres, password: unused-trust-on-loopback}
    replication: {username: replicator, password: unused-trust-on-loopback}
    rewind: {username: rewinder, password: unused-trust-on-loopback}
  parameters:
    unix_socket_directories: '$dir/run'
    shared_buffers: 256MB
    synchronous_commit: 'on'
    fsync: 'on'
    max_wal_size: 4GB
    checkpoint_timeout: 15min
    lc_messages: C
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
EOF
    [ "$IS_ROOT" -eq 1 ] && chown -R postgres:postgres "$dir"
    chmod 0600 "$dir/patroni.yml"
}

# Patroni's own process: the interpreter, not the runuser above it (whose command line holds the same words; a
# kill -9 of runuser leaves Patroni running).
patroni_pid() { pgrep -f "^/usr/bin/python3 /usr/bin/patroni $(node_dir "$1")/patroni.yml\$" | head -1 | grep .; }
# kill -9 of a node's Patroni and whatever wraps it.
kill_patroni() {
    local pids; pids="$(pgrep -f "/usr/bin/patroni $(node_dir "$1")/patroni.yml\$" | tr '\n' ' ' || true)"
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
}
patroni_running() { patroni_pid "$1" >/dev/null; }
postmaster_pid() { local f; f="$(node_dir "$1")/data/postmaster.pid"; [ -f "$f" ] && head -1 "$f" | grep -E '^[0-9]+$' && true; }

start_node() {
    local node="$1" dir; dir="$(node_dir "$node")"
    if patroni_pid "$node" >/dev/null; then return 0; fi
    write_config "$node"
    touch "$dir/patroni.log"; [ "$IS_ROOT" -eq 1 ] && chown postgres:postgres "$dir/patroni.log"
    # In a session of its own, with no PG* variables (they would override the pgpass file: replication fails).
    if [ "$IS_ROOT" -eq 1 ]; then
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/postgresql setsid runuser -u postgres -- \
            /usr/bin/python3 /usr/bin/patroni "$dir/patroni.yml" >>"$dir/patroni.log" 2>&1 </dev/null &
    else
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME" setsid /usr/bin/python3 /usr/bin/patroni "$dir/patroni.yml" \
            >>"$dir/patroni.log" 2>&1 </dev/null &
    fi
    wait_for 10 "Patroni process for $node" patroni_running "$node"
}

rest() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(rest_port "$1")/$2" 2>/dev/null || true; }

primary_node() { local n; for n in "${NODES[@]}"; do [ "$(rest "$n" primary)" = 200 ] && { echo "$n"; return 0; }; done; return 1; }

writable() {
    local n; n="$(primary_node)" || return 1
    "$PGBIN/psql" -qAtX -h 127.0.0.1 -p "$(pg_port "$n")" -U postgres -d postgres -c "SELECT NOT pg_is_in_recovery()" 2>/dev/null | grep -q t
}

wait_for() { # seconds description command...
    local seconds="$1" what="$2"; shift 2
    local end=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || die "no $what after ${seconds} s (logs: $BASE/*/patroni.log)"
        sleep 0.2
    done
}

has_sync_standby() { local n; for n in "${NODES[@]}"; do [ "$(rest "$n" sync)" = 200 ] && return 0; done; return 1; }

running_nodes() { local n c=0; for n in "${NODES[@]}"; do patroni_pid "$n" >/dev/null && c=$((c + 1)); done; echo "$c"; }

ensure_roles() {
    local n; n="$(primary_node)"
    "$PGBIN/psql" -qAtX -h 127.0.0.1 -p "$(pg_port "$n")" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
DO \$r\$ BEGIN CREATE ROLE flashsale_service NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$r\$;
DO \$r\$ BEGIN CREATE ROLE flashsale_app LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$r\$;
GRANT flashsale_service TO flashsale_app;
SQL
}

cmd_start() {
    ensure_packages
    # A cold start picks its ports again (from the recorded ones on): something else may hold them by now. Picked
    # and reserved under a lock, so that two clusters starting side by side never pick the same.
    if [ "$(running_nodes)" -eq 0 ]; then
        mkdir -p "$RESERVED"
        exec 9>"$RESERVED/.lock"
        flock -w 30 9 || die "could not lock $RESERVED/.lock"
        PORT0="$(free_pair "$PORT0")"; REST0="$(free_pair "$REST0")"
        reserve "$PORT0" $((PORT0 + 1)) "$REST0" $((REST0 + 1))
        exec 9>&-
    fi
    printf 'PORT0=%s\nREST0=%s\nCLUSTER_ZK=%q\n' "$PORT0" "$REST0" "$(zk_hosts)" >"$CLUSTER_ENV"
    local n
    for n in "${NODES[@]}"; do start_node "$n"; done
    wait_for 60 "writable primary" writable
    ensure_roles
    [ "$(running_nodes)" -eq 2 ] && wait_for 60 "synchronous standby" has_sync_standby
    echo "pg-cluster started: primary $(primary_node) (data $BASE)"
}

kill_node_postgres() {
    local node="$1" pid; pid="$(postmaster_pid "$node" || true)"
    [ -n "$pid" ] || return 0
    # Its backends do not die with the postmaster: take them first, before they are reparented.
    local children; children="$(pgrep -P "$pid" 2>/dev/null | tr '\n' ' ' || true)"
    # shellcheck disable=SC2086
    kill -KILL "$pid" $children 2>/dev/null || true
}

stop_node() {
    local node="$1" pid; pid="$(patroni_pid "$node" || true)"
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true   # Patroni stops its PostgreSQL on SIGTERM
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    local pm; pm="$(postmaster_pid "$node" || true)"
    if [ -n "$pm" ] && kill -0 "$pm" 2>/dev/null; then
        as_owner "$PGBIN/pg_ctl" -D "$(node_dir "$node")/data" -m fast -w -t 10 stop >/dev/null 2>&1 || kill_node_postgres "$node"
    fi
}

cmd_stop() {
    local leader; leader="$(primary_node || true)"
    local n
    for n in "${NODES[@]}"; do [ "$n" != "$leader" ] && stop_node "$n"; done
    [ -n "$leader" ] && stop_node "$leader"
    echo "pg-cluster stopped"
}

cmd_status() {
    local n ok=1
    for n in "${NODES[@]}"; do
        local role="down"
        if patroni_pid "$n" >/dev/null; then
            role="running"
            [ "$(rest "$n" primary)" = 200 ] && role="primary" && ok=0
            [ "$(rest "$n" sync)" = 200 ] && role="sync standby"
            [ "$role" = running ] && [ "$(rest "$n" replica)" = 200 ] && role="replica"
        fi
        echo "$n 127.0.0.1:$(pg_port "$n") rest 127.0.0.1:$(rest_port "$n"): $role"
    done
    return $ok
}

cmd_env() {
    local hosts="127.0.0.1,127.0.0.1" ports; ports="$(pg_port n1),$(pg_port n2)"
    local common="host=$hosts port=$ports dbname=postgres target_session_attrs=read-write connect_timeout=2"
    echo "export FLASHSALE_PG_DSN='$common user=postgres'"
    echo "export FLASHSALE_PG_SERVICE_DSN='$common user=flashsale_app'"
    echo "export FLASHSALE_PG_PATRONI='127.0.0.1:$(rest_port n1),127.0.0.1:$(rest_port n2)'"
    echo "export FLASHSALE_PG_PATRONI_LEADER='$NAMESPACE/$SCOPE/leader'"
}

cmd_failover() {
    local old; old="$(primary_node)" || die "no primary to fail over from"
    kill_patroni "$old"
    kill_node_postgres "$old"
    local killed; killed="$(date +%s.%N)"
    local started=$SECONDS
    wait_for 30 "promoted standby" writable
    echo "failover: $old killed at $killed, $(primary_node) primary after $((SECONDS - started)) s"
}

cmd_kill_standby() {
    local leader; leader="$(primary_node)" || die "no primary"
    local n
    for n in "${NODES[@]}"; do
        [ "$n" = "$leader" ] && continue
        kill_patroni "$n"
        kill_node_postgres "$n"
        echo "kill-standby: $n killed; $leader primary alone"
    done
}

cmd_sync() {
    local mode
    case "${1:-}" in on) mode=true ;; off) mode=false ;; *) die "usage: $0 sync on|off" ;; esac
    local ctl="$BASE/patronictl.yml" hosts="" h
    IFS=',' read -ra zk <<<"$(zk_hosts)"
    for h in "${zk[@]}"; do hosts+="'$h', "; done
    printf 'scope: %s\nnamespace: %s\nzookeeper:\n  hosts: [%s]\n' "$SCOPE" "$NAMESPACE" "${hosts%, }" >"$ctl"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp /usr/bin/python3 /usr/bin/patronictl -c "$ctl" \
        edit-config -s "synchronous_mode=$mode" --force >/dev/null
    if [ "$mode" = true ]; then
        wait_for 60 "synchronous standby" has_sync_standby
    else
        wait_for 60 "asynchronous commits" no_sync_names
    fi
    echo "pg-cluster: synchronous_mode $1"
}

no_sync_names() {
    local n out; n="$(primary_node)" || return 1
    out="$("$PGBIN/psql" -qAtX -h 127.0.0.1 -p "$(pg_port "$n")" -U postgres -d postgres -c "SHOW synchronous_standby_names" 2>/dev/null)" || return 1
    [ -z "$out" ]
}

cmd_fence() {
    local n
    for n in "${NODES[@]}"; do
        patroni_running "$n" && continue
        [ -n "$(postmaster_pid "$n" || true)" ] || continue
        kill_node_postgres "$n"
        echo "fence: the PostgreSQL of $n (no Patroni) killed"
    done
}

cmd_kill_patroni() {
    local old; old="$(primary_node)" || die "no primary"
    kill_patroni "$old"
    echo "kill-patroni: Patroni of $old killed; its PostgreSQL on 127.0.0.1:$(pg_port "$old") lives on"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    failover) cmd_failover ;;
    kill-patroni) cmd_kill_patroni ;;
    kill-standby) cmd_kill_standby ;;
    fence) cmd_fence ;;
    sync) cmd_sync "${2:-}" ;;
    *) echo "usage: $0 start|stop|status|env|failover|kill-patroni|kill-standby|fence|sync on|off" >&2; exit 2 ;;
esac
