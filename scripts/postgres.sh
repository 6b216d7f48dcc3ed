#!/usr/bin/env bash
# PostgreSQL 15 (Debian's binaries) for this checkout: start | stop | status | env.
#
# Listens on 127.0.0.1:${FLASHSALE_PG_PORT:-15432}, trust auth (loopback only). Two roles: "postgres", the
# superuser that owns and migrates the schema, and "flashsale_app", the login role the inventory serves as (a
# member of flashsale_service, which may only call the procedures and read: see migration 3). `env` prints a DSN
# for each: FLASHSALE_PG_DSN (owner) and FLASHSALE_PG_SERVICE_DSN (serving).
# Data: <checkout>/.data/postgres/{data,run,postgres.log}. When running as root the server runs as
# user "postgres", which must be able to reach that folder; if it cannot (a parent folder without
# o+x), or the socket path would be too long, everything goes to /tmp/flashsale-<hash of checkout>/postgres.
# FLASHSALE_PG_BASE overrides the folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${FLASHSALE_PG_PORT:-15432}"
PGBIN="${FLASHSALE_PG_BIN:-/usr/lib/postgresql/15/bin}"
HASH="$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)"
FALLBACK="/tmp/flashsale-$HASH/postgres"

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# Runs a server binary as the account that owns the data.
as_owner() {
    if [ "$IS_ROOT" -eq 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

own() {
    if [ "$IS_ROOT" -eq 1 ]; then chown postgres:postgres "$@"; fi
}

# Creates BASE (and its run/ folder) owned by the server account; fails if that account cannot use it.
prepare_base() {
    local base="$1"
    mkdir -p "$base/run" || return 1
    if [ "$IS_ROOT" -eq 1 ]; then
        chown postgres:postgres "$base" "$base/run" || return 1
        chmod 0755 "$base" || return 1
        runuser -u postgres -- test -w "$base/run" || return 1
    fi
    # Unix socket paths are limited to 107 bytes.
    [ "${#base}" -lt 80 ] || return 1
}

choose_base() {
    if [ -n "${FLASHSALE_PG_BASE:-}" ]; then
        prepare_base "$FLASHSALE_PG_BASE" || die "cannot use FLASHSALE_PG_BASE=$FLASHSALE_PG_BASE"
        BASE="$FLASHSALE_PG_BASE"; return
    fi
    # An existing cluster wins, so that start/stop/status always agree on where it is.
    local primary="$ROOT/.data/postgres"
    for b in "$primary" "$FALLBACK"; do
        if [ -f "$b/data/PG_VERSION" ]; then BASE="$b"; return; fi
    done
    mkdir -p "$ROOT/.data"
    if prepare_base "$primary" 2>/dev/null; then BASE="$primary"; return; fi
    rm -rf "$primary" 2>/dev/null || true
    mkdir -p "$(dirname "$FALLBACK")"; chmod 0755 "$(dirname "$FALLBACK")"
    prepare_base "$FALLBACK" || die "cannot prepare $FALLBACK"
    BASE="$FALLBACK"
}

choose_base
PGDATA="$BASE/data"
SOCKDIR="$BASE/run"
LOGFILE="$BASE/postgres.log"

# The port of the running server (from postmaster.pid), else the configured one.
running_port() {
    if [ -f "$PGDATA/postmaster.pid" ]; then sed -n 4p "$PGDATA/postmaster.pid"; else echo "$PORT"; fi
}

# pg_ctl status only checks that the pid in postmaster.pid is alive: also make sure it is a postgres
# (after a crash the pid may have been reused).
is_running() {
    [ -f "$PGDATA/PG_VERSION" ] && as_owner "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 || return 1
    local pid; pid="$(head -1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && grep -q postgres "/proc/$pid/comm" 2>/dev/null
}

is_ready() {
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$(running_port)" -U postgres -t 2 >/dev/null 2>&1
}

write_config() {
    # Loaded through include_if_exists, rewritten on every start so edits here take effect.
    local conf="$PGDATA/flashsale.conf"
    cat >"$conf" <<EOF
# Written by scripts/postgres.sh on every start.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKDIR'
max_connections = 300
shared_buffers = 512MB
work_mem = 8MB
maintenance_work_mem = 128MB
# Durability stays on: an acknowledged order is on disk.
fsync = on
synchronous_commit = on
# Fewer, larger checkpoints for bursts of small transactions.
wal_buffers = 16MB
max_wal_size = 4GB
min_wal_size = 256MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
commit_delay = 0
log_min_duration_statement = -1
log_checkpoints = off
lc_messages = 'C'
EOF
    own "$conf"
    grep -q "include_if_exists = 'flashsale.conf'" "$PGDATA/postgresql.conf" ||
        echo "include_if_exists = 'flashsale.conf'" >>"$PGDATA/postgresql.conf"
}

SERVICE_LOGIN=flashsale_app

# The serving login role. Roles are per server and the group role is made by migration 3 too, with the same
# statement, so whichever runs first makes it; the login role holds nothing but its membership.
ensure_roles() {
    "$PGBIN/psql" -qAtX -h 127.0.0.1 -p "$(running_port)" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL ||
SET client_min_messages = warning;
DO \$r\$ BEGIN CREATE ROLE flashsale_service NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$r\$;
DO \$r\$ BEGIN CREATE ROLE $SERVICE_LOGIN LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$r\$;
GRANT flashsale_service TO $SERVICE_LOGIN;
SQL
        die "cannot create the role $SERVICE_LOGIN (see $LOGFILE)"
}

cmd_start() {
    # A server that is up but not ready is either starting or dying (killed, not yet reaped): wait for
    # it to become ready, or to be gone and then start a new one.
    for _ in $(seq 1 150); do
        is_running || break
        if is_ready; then
            ensure_roles
            echo "postgres already running on 127.0.0.1:$(running_port) (data $PGDATA)"
            return 0
        fi
        sleep 0.1
    done
    is_running && die "postgres runs but does not answer on port $(running_port) (see $LOGFILE)"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        rm -rf "$PGDATA"
        mkdir -p "$PGDATA"
        own "$PGDATA"
        chmod 0700 "$PGDATA"
        as_owner "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 ||
            { cat "$BASE/initdb.log" >&2; die "initdb failed"; }
    fi
    write_config
    # A stale pid file from a killed server would make pg_ctl refuse to start.
    if [ -f "$PGDATA/postmaster.pid" ]; then
        local pid; pid="$(head -1 "$PGDATA/postmaster.pid")"
        kill -0 "$pid" 2>/dev/null || rm -f "$PGDATA/postmaster.pid"
    fi
    touch "$LOGFILE"; own "$LOGFILE"
    if ! as_owner "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGFILE" -w -t 60 start >"$BASE/pg_ctl.out" 2>&1; then
        cat "$BASE/pg_ctl.out" >&2
        tail -20 "$LOGFILE" >&2
        die "pg_ctl start failed (port $PORT in use? see $LOGFILE)"
    fi
    wait_ready
    ensure_roles
    echo "postgres started on 127.0.0.1:$PORT (data $PGDATA)"
}

wait_ready() {
    for _ in $(seq 1 100); do
        is_ready && return 0
        sleep 0.1
    done
    die "postgres not ready on port $(running_port) after 10 s (see $LOGFILE)"
}

cmd_stop() {
    if ! is_running; then echo "postgres not running"; return 0; fi
    local pid; pid="$(head -1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
    # fast: roll back open transactions, checkpoint, exit. immediate: crash-like, recovered at next start.
    as_owner "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 20 stop >/dev/null 2>&1 ||
        as_owner "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    echo "postgres stopped"
}

cmd_status() {
    if is_running && is_ready; then
        echo "postgres running on 127.0.0.1:$(running_port) (data $PGDATA)"
        return 0
    fi
    echo "postgres not running (data $PGDATA)"
    return 1
}

cmd_env() {
    local port; port="$(running_port)"
    echo "export FLASHSALE_PG_PORT=$port"
    echo "export FLASHSALE_PG_DSN='host=127.0.0.1 port=$port user=postgres dbname=postgres'"
    echo "export FLASHSALE_PG_SERVICE_DSN='host=127.0.0.1 port=$port user=$SERVICE_LOGIN dbname=postgres'"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
