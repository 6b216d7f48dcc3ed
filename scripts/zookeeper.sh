#!/usr/bin/env bash
# A standalone ZooKeeper (Debian's zookeeper package) for this checkout: start | stop | status | env.
#
# Listens on 127.0.0.1:${FLASHSALE_ZK_PORT:-12181}. Data, config, log and pid file live in
# <checkout>/.data/zookeeper (FLASHSALE_ZK_BASE overrides). JVM flags: FLASHSALE_ZK_JVM_OPTS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${FLASHSALE_ZK_PORT:-12181}"
BASE="${FLASHSALE_ZK_BASE:-$ROOT/.data/zookeeper}"
CFG="$BASE/zoo.cfg"
PIDFILE="$BASE/zookeeper.pid"
LOGFILE="$BASE/zookeeper.log"
CLASSPATH_ZK="/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
# Small heap, serial GC, no hsperfdata files: enough for a coordination server on loopback.
JVM_OPTS="${FLASHSALE_ZK_JVM_OPTS:--Xms16m -Xmx256m -XX:+UseSerialGC -XX:-UsePerfData -XX:TieredStopAtLevel=1}"

log() { echo "zookeeper.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The pid in the pid file if that process is our ZooKeeper JVM.
our_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid; pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "ZooKeeperServerMain $CFG" || return 1
    echo "$pid"
}

# The port our running server was started with (from its config), else the configured one.
running_port() {
    if our_pid >/dev/null && [ -f "$CFG" ]; then
        sed -n 's/^clientPort=//p' "$CFG"
    else
        echo "$PORT"
    fi
}

# Four-letter word over bash's /dev/tcp (netcat may be missing); bounded by timeout.
four_letter() {
    local port="$1" word="$2"
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1; printf "%s" "$1" >&3; cat <&3' "$port" "$word" 2>/dev/null
}

# Ready means srvr answers with a Mode: line (ruok answers before requests are served).
is_ready() {
    four_letter "${1:-$(running_port)}" srvr | grep -q '^Mode:'
}

wait_ready() {
    local pid="$1"
    for _ in $(seq 1 150); do
        is_ready "$PORT" && return 0
        kill -0 "$pid" 2>/dev/null || { tail -20 "$LOGFILE" >&2; die "zookeeper exited during start-up (see $LOGFILE)"; }
        sleep 0.1
    done
    tail -20 "$LOGFILE" >&2
    die "zookeeper not ready on port $PORT after 15 s (see $LOGFILE)"
}

cmd_start() {
    local pid
    if pid="$(our_pid)"; then
        if ! is_ready; then wait_ready "$pid"; fi
        echo "zookeeper already running on 127.0.0.1:$(running_port) (pid $pid)"
        return 0
    fi
    if is_ready "$PORT"; then
        die "port $PORT already serves a ZooKeeper not started from $BASE; set FLASHSALE_ZK_PORT"
    fi
    mkdir -p "$BASE/data"
    cat >"$CFG" <<EOF
# Written by scripts/zookeeper.sh on every start.
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$BASE/data
clientPort=$PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,conf,cons
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
    # Started directly (no nohup/cd wrapper) so $! is the JVM; its own session keeps a terminal's ^C away.
    # shellcheck disable=SC2086
    setsid java $JVM_OPTS -cp "$CLASSPATH_ZK" org.apache.zookeeper.server.ZooKeeperServerMain "$CFG" \
        </dev/null >>"$LOGFILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
    wait_ready "$pid"
    # setsid forks only when it is a process-group leader; then find the JVM by its command line.
    if ! our_pid >/dev/null; then
        pid="$(pgrep -f "ZooKeeperServerMain $CFG" | head -1 || true)"
        [ -n "$pid" ] && echo "$pid" >"$PIDFILE"
    fi
    echo "zookeeper started on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
}

cmd_stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        echo "zookeeper not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    # our_pid, not kill -0: an exited but unreaped JVM (zombie) has an empty command line.
    for _ in $(seq 1 100); do
        our_pid >/dev/null || break
        sleep 0.1
    done
    if our_pid >/dev/null; then
        log "zookeeper did not stop in 10 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do our_pid >/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    echo "zookeeper stopped"
}

cmd_status() {
    local pid
    if pid="$(our_pid)" && is_ready; then
        echo "zookeeper running on 127.0.0.1:$(running_port) (pid $pid)"
        return 0
    fi
    echo "zookeeper not running"
    return 1
}

cmd_env() {
    echo "export FLASHSALE_ZK_PORT=$(running_port)"
    echo "export FLASHSALE_ZK=127.0.0.1:$(running_port)"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
