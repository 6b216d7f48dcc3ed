#!/usr/bin/env bash
# A 3-node ZooKeeper ensemble on loopback, for fault tests: start | stop | stop-node N | start-node N | status | env
#
# Client ports FLASHSALE_ZKE_PORT+1..+3 (default 13181..13183), quorum and election ports +100 and +200 above them
# (all below 32768). Data under <checkout>/.data/zk-ensemble (FLASHSALE_ZKE_BASE overrides).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PORT="${FLASHSALE_ZKE_PORT:-13180}"
BASE="${FLASHSALE_ZKE_BASE:-$ROOT/.data/zk-ensemble}"
CLASSPATH_ZK="/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
JVM_OPTS="-Xms16m -Xmx128m -XX:+UseSerialGC -XX:-UsePerfData -XX:TieredStopAtLevel=1"

client_port() { echo $((BASE_PORT + $1)); }
node_dir() { echo "$BASE/node$1"; }
pid_of() { local f; f="$(node_dir "$1")/pid"; [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

four_letter() {  # port word
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf '%s' '$2' >&3; cat <&3" 2>/dev/null || true
}
mode() { four_letter "$(client_port "$1")" srvr | sed -n 's/^Mode: //p'; }

configure() {
    local n dir
    for n in 1 2 3; do
        dir="$(node_dir $n)"
        mkdir -p "$dir/data"
        echo "$n" >"$dir/data/myid"
        {
            echo "tickTime=500"; echo "initLimit=10"; echo "syncLimit=5"
            echo "dataDir=$dir/data"; echo "clientPort=$(client_port $n)"; echo "clientPortAddress=127.0.0.1"
            echo "maxClientCnxns=0"; echo "admin.enableServer=false"; echo "4lw.commands.whitelist=ruok,srvr,stat,mntr"
            for m in 1 2 3; do echo "server.$m=127.0.0.1:$((BASE_PORT + 100 + m)):$((BASE_PORT + 200 + m))"; done
        } >"$dir/zoo.cfg"
    done
}

start_node() {
    local n=$1 dir; dir="$(node_dir "$n")"
    if pid_of "$n" >/dev/null; then return 0; fi
    # setsid: the JVM outlives this script and ignores the terminal's Ctrl-C.
    setsid java $JVM_OPTS -cp "$CLASSPATH_ZK" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
        >"$dir/zookeeper.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

stop_node() {
    local n=$1 pid
    pid="$(pid_of "$n")" || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$(node_dir "$n")/pid"
}

wait_serving() {  # nodes...; a node serves when srvr shows leader or follower
    local n
    for _ in $(seq 150); do
        local all=1
        for n in "$@"; do [[ "$(mode "$n")" =~ ^(leader|follower)$ ]] || all=0; done
        [[ $all == 1 ]] && return 0
        sleep 0.2
    done
    echo "zk-ensemble.sh: nodes $* not serving after 30 s" >&2; return 1
}

case "${1:-}" in
    start) configure; for n in 1 2 3; do start_node $n; done; wait_serving 1 2 3; echo "zk-ensemble started on $(client_port 1),$(client_port 2),$(client_port 3)" ;;
    stop) for n in 1 2 3; do stop_node $n; done; echo "zk-ensemble stopped" ;;
    stop-node) stop_node "$2"; echo "node $2 stopped" ;;
    start-node) start_node "$2"; wait_serving "$2"; echo "node $2 started" ;;
    leader) for n in 1 2 3; do [[ "$(mode $n)" == leader ]] && echo "$n"; done ;;
    status) for n in 1 2 3; do echo "node $n: $(mode $n)"; done ;;
    env) echo "export FLASHSALE_ZK=127.0.0.1:$(client_port 1),127.0.0.1:$(client_port 2),127.0.0.1:$(client_port 3)" ;;
    *) echo "usage: $0 start|stop|stop-node N|start-node N|leader|status|env" >&2; exit 2 ;;
esac
