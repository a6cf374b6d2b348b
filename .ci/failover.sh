#!/usr/bin/env bash
# A pg_auto_failover formation for the failover test: a monitor and two
# PostgreSQL nodes (a primary and a synchronous standby) on 127.0.0.1 ports
# 6000 (monitor), 6001 and 6002, all under one temporary directory, all run
# as the postgres user with shortened failover timers.
#
#   failover.sh run                 set up, run the failover test, tear down
#   failover.sh up DIR              set up a formation in DIR (its parent must
#                                   be searchable by the postgres user)
#   failover.sh primary DIR         print the node (1 or 2) that is primary now
#   failover.sh kill N DIR          SIGKILL node N's keeper and postmaster
#   failover.sh start N DIR         start node N again (it rejoins as standby)
#   failover.sh settled DIR         exit 0 if there is one primary with a
#                                   synchronous standby (both nodes healthy)
#   failover.sh state DIR           print each node's reported and goal state
#   failover.sh down DIR            kill everything and remove DIR
#
# Each pg_autoctl runs as the leader of a session of its own, which holds
# the keeper's processes and the postmaster it supervises; PostgreSQL puts
# its backends in sessions of their own, so they are taken by their parent.
# One kill takes the whole node, as a machine dying would. (Killing the
# postmaster alone is not a failover: the keeper restarts it in place.)
#
# Needs root (it installs postgresql-NN-auto-failover if missing and runs
# pg_autoctl as postgres), and ports 6000-6002 free.
set -euo pipefail

MONITOR_PORT=6000
NODE_PORTS=(6001 6002)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

as_pg() {
    # Config and state files of pg_autoctl stay inside the formation's
    # directory, not in the postgres user's home.
    runuser -u postgres -- env -i PATH="$PG_BIN:/usr/bin:/bin" HOME="$DIR" XDG_CONFIG_HOME="$DIR/config" \
        XDG_DATA_HOME="$DIR/data" XDG_RUNTIME_DIR="$DIR/run" PG_CONFIG="$PG_BIN/pg_config" "$@"
}

monitor_sql() {
    psql -w -X -Atq "postgres://postgres@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable" -c "$1"
}

# Starts `pg_autoctl run` for a data directory as the leader of a new
# session, which records its own pid (= the session id) before it becomes
# pg_autoctl.
start_keeper() {
    local name=$1
    rm -f "$DIR/$name.sid"
    # shellcheck disable=SC2016 # $$ is the inner shell's pid
    as_pg setsid sh -c 'echo $$ >"$1.sid"; exec pg_autoctl run --pgdata "$1"' sh "$DIR/$name" \
        >>"$DIR/$name.log" 2>&1 </dev/null &
    for _ in $(seq 1 50); do
        [ -s "$DIR/$name.sid" ] && return 0
        sleep 0.1
    done
    echo "pg_autoctl for $name did not start" >&2
    return 1
}

# SIGKILLs a node as a machine dying would: the keeper and every process
# of its session, the postmaster, and the postmaster's children (which
# PostgreSQL puts in sessions of their own).
kill_keeper() {
    local name=$1
    [ -s "$DIR/$name.sid" ] || return 0
    local sid postmaster children=""
    sid=$(cat "$DIR/$name.sid")
    # Never this script's own session, whatever the file says.
    if ! [[ "$sid" =~ ^[0-9]+$ ]] || [ "$sid" -le 1 ] || [ "$sid" = "$(ps -o sid= -p $$ | tr -d ' ')" ]; then
        echo "refusing to kill session '$sid'" >&2
        return 1
    fi
    postmaster=$(head -n 1 "$DIR/$name/postmaster.pid" 2>/dev/null || true)
    if [[ "$postmaster" =~ ^[0-9]+$ ]]; then
        children=$(pgrep -P "$postmaster" || true)
    fi
    pkill -KILL -s "$sid" 2>/dev/null || true
    for child in $children; do
        kill -KILL "$child" 2>/dev/null || true
    done
    # Until none is left running (zombies are dead already).
    for _ in $(seq 1 50); do
        pgrep -s "$sid" -r D,R,S,T,t >/dev/null 2>&1 || break
        sleep 0.1
    done
    rm -f "$DIR/$name.sid"
}

node_state() {
    # "name|reported|goal" per node
    monitor_sql "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid"
}

wait_for() {
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "timed out after ${seconds}s waiting for $what" >&2
    node_state >&2 || true
    return 1
}

settled() {
    local states
    states=$(node_state) || return 1
    echo "$states" | grep -q '|primary|primary$' && echo "$states" | grep -q '|secondary|secondary$'
}

up() {
    install_if_missing
    mkdir -p "$DIR"
    chown postgres: "$DIR"
    chmod 700 "$DIR"
    as_pg mkdir -p "$DIR/config" "$DIR/data" "$DIR/run"

    as_pg pg_autoctl create monitor --pgdata "$DIR/monitor" --pgport $MONITOR_PORT \
        --hostname 127.0.0.1 --auth trust --no-ssl >>"$DIR/monitor.log" 2>&1
    start_keeper monitor
    wait_for "the monitor" 60 monitor_sql "SELECT 1"
    # Shortened failover timers (defaults in parentheses): the monitor
    # checks each node every second (5 s), gives up on a check after 1 s
    # (5 s), retries once (2) after 0.5 s (2 s), fails a node over once it
    # has been unhealthy for 3 s (20 s), and waits 6 s (30 s) for a primary
    # it cannot reach to have demoted itself before it promotes the standby.
    # That wait must stay above the keepers' network_partition_timeout
    # (below): it is what keeps a partitioned old primary from taking
    # writes beside the new one.
    for setting in health_check_period=1000 health_check_timeout=1000 health_check_max_retries=1 \
        health_check_retry_delay=500 node_considered_unhealthy_timeout=3000 primary_demote_timeout=6000; do
        monitor_sql "ALTER SYSTEM SET pgautofailover.${setting%%=*} = ${setting#*=}" >/dev/null
    done
    monitor_sql "SELECT pg_reload_conf()" >/dev/null

    local monitor_url="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"
    for i in 1 2; do
        local port=${NODE_PORTS[$((i - 1))]}
        as_pg pg_autoctl create postgres --pgdata "$DIR/node$i" --pgport "$port" --pgctl "$PG_BIN/pg_ctl" \
            --hostname 127.0.0.1 --name "node$i" --dbname ledger --monitor "$monitor_url" \
            --auth trust --no-ssl >>"$DIR/node$i.log" 2>&1
        # The keeper's own timer: a primary that can reach neither the
        # monitor nor its standby demotes itself after 3 s (20 s).
        as_pg pg_autoctl config set --pgdata "$DIR/node$i" timeout.network_partition_timeout 3 >/dev/null
        start_keeper "node$i"
        if [ "$i" = 1 ]; then
            wait_for "node1 as primary" 120 primary_is 1
            # A killed primary whose pg_rewind fails rejoins by
            # pg_basebackup, which waits for a spread checkpoint: keep that
            # short (the standby copies these settings).
            # (Retried: the keeper may be restarting PostgreSQL just then.)
            wait_for "node1 to take settings" 60 quick_checkpoints
        fi
    done
    wait_for "a primary with a synchronous standby" 180 settled
}

quick_checkpoints() {
    psql -w -X -q "postgres://postgres@127.0.0.1:${NODE_PORTS[0]}/postgres" \
        -c "ALTER SYSTEM SET checkpoint_timeout = '30s'" \
        -c "ALTER SYSTEM SET checkpoint_completion_target = 0.1" -c "SELECT pg_reload_conf()"
}

primary_is() {
    [ "$(primary)" = "$1" ]
}

primary() {
    monitor_sql "SELECT nodename FROM pgautofailover.node WHERE reportedstate IN ('primary', 'wait_primary', 'single') AND goalstate = reportedstate" |
        sed -n 's/^node//p' | head -n 1
}

down() {
    [ -d "$DIR" ] || return 0
    for name in node1 node2 monitor; do
        kill_keeper "$name"
    done
    # The sockets and lock files the killed postmasters left.
    for port in $MONITOR_PORT "${NODE_PORTS[@]}"; do
        rm -f "/var/run/postgresql/.s.PGSQL.$port" "/var/run/postgresql/.s.PGSQL.$port.lock"
    done
    rm -rf "$DIR"
}

install_if_missing() {
    if ! command -v pg_autoctl >/dev/null 2>&1; then
        local major
        major=$(basename "$(dirname "$PG_BIN")")
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$major-auto-failover" >/dev/null
    fi
}

run() {
    DIR=$(mktemp -d -t carbon-ledger-failover.XXXXXX)
    trap 'down' EXIT
    up
    CARBON_LEDGER_FAILOVER_DIR="$DIR" \
        CARBON_LEDGER_FAILOVER_SCRIPT="$(realpath "$0")" \
        CARBON_LEDGER_FAILOVER_URL="postgres://postgres@127.0.0.1:${NODE_PORTS[0]},127.0.0.1:${NODE_PORTS[1]}/ledger?sslmode=disable&target_session_attrs=read-write" \
        cargo test --test failover -- --ignored --nocapture
}

command=${1:-}
case "$command" in
run) run ;;
up) DIR=$2 up ;;
primary) DIR=$2 primary ;;
kill) DIR=$3 kill_keeper "node$2" ;;
start) DIR=$3 start_keeper "node$2" ;;
settled) DIR=$2 settled ;;
state) DIR=$2 node_state ;;
down) DIR=$2 down ;;
*)
    echo "usage: $0 run | up DIR | primary DIR | kill N DIR | start N DIR | settled DIR | state DIR | down DIR" >&2
    exit 2
    ;;
esac
