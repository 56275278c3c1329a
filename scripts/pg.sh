#!/usr/bin/env bash
# Run a private PostgreSQL+pgvector (installed by scripts/setup.sh) for development and `make run`.
#
#   scripts/pg.sh start DATA_DIR PORT   initdb if DATA_DIR is empty, start postgres in the background
#                                       (log: DATA_DIR/../postgres.log), wait until ready, and
#                                       CREATE EXTENSION vector in database `postgres`
#   scripts/pg.sh stop DATA_DIR         fast shutdown (SIGINT to the postmaster), wait until gone
#   scripts/pg.sh url PORT              print the connection URL
#
# PostgreSQL refuses to run as root. As root, the server runs in a user namespace where it is
# uid 1000 (`unshare --user --map-user=1000`), which needs no chown of the data directory.
#
# Environment: MILLRACE_PG_BIN (a bin dir), else ${MILLRACE_HOME:-$HOME/.cache/millrace}/pgserver/bin.
set -euo pipefail

MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
PG_BIN="${MILLRACE_PG_BIN:-$MILLRACE_HOME/pgserver/bin}"

log() { echo "pg: $*"; }
die() {
    echo "pg: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start DATA_DIR PORT | stop DATA_DIR | url PORT" >&2
    exit 2
}

need_bin() {
    [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL at $PG_BIN (run scripts/setup.sh, or set MILLRACE_PG_BIN)"
}

# Prefix that runs a server-side binary (initdb, postgres) as a non-root user.
AS_PG_USER=()
if [ "$(id -u)" -eq 0 ]; then
    AS_PG_USER=(unshare --user --map-user=1000 --map-group=1000)
fi

url() {
    echo "postgres://postgres@127.0.0.1:$1/postgres"
}

# Prints the postmaster pid if DATA_DIR has a live server, else nothing.
running_pid() {
    local pidfile="$1/postmaster.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(head -n 1 "$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$pid"
    fi
}

is_ready() {
    local port="$1"
    if [ -x "$PG_BIN/pg_isready" ]; then
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres
    else
        "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
    fi
}

start() {
    local data_dir="$1" port="$2"
    need_bin
    mkdir -p "$data_dir"
    data_dir="$(cd "$data_dir" && pwd)"
    local logfile
    logfile="$(dirname "$data_dir")/postgres.log"

    local pid
    pid="$(running_pid "$data_dir")"
    if [ -n "$pid" ]; then
        log "already running (pid $pid, data $data_dir)"
    else
        if [ -z "$(ls -A "$data_dir")" ]; then
            log "initdb $data_dir"
            "${AS_PG_USER[@]}" "$PG_BIN/initdb" -D "$data_dir" -U postgres --auth=trust -E UTF8 >>"$logfile" 2>&1 ||
                die "initdb failed, see $logfile"
        elif [ ! -f "$data_dir/PG_VERSION" ]; then
            die "$data_dir is neither empty nor a PostgreSQL data directory"
        fi
        # TCP only on 127.0.0.1: no Unix socket, so a long DATA_DIR path cannot exceed the socket path limit.
        # Own session (setsid): a Ctrl-C meant for `make run` must not kill the server directly.
        setsid "${AS_PG_USER[@]}" "$PG_BIN/postgres" -D "$data_dir" -p "$port" -c listen_addresses=127.0.0.1 \
            -c unix_socket_directories= -c fsync=off >>"$logfile" 2>&1 </dev/null &
        pid=$!
        log "started postgres (pid $pid, port $port, log $logfile)"
    fi

    local i
    for i in $(seq 1 150); do
        if is_ready "$port"; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            die "postgres exited, see $logfile: $(tail -n 5 "$logfile")"
        fi
        sleep 0.2
    done
    is_ready "$port" || die "postgres not ready after 30 s, see $logfile"
    PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -Atqc \
        'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null || die "CREATE EXTENSION vector failed"
    log "ready: $(url "$port")"
}

stop() {
    local data_dir="$1" pid i
    pid="$(running_pid "$data_dir")"
    if [ -z "$pid" ]; then
        log "not running (data $data_dir)"
        return 0
    fi
    kill -INT "$pid"
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || {
            log "stopped (pid $pid)"
            return 0
        }
        sleep 0.2
    done
    log "still running after 30 s, sending SIGKILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
start)
    [ $# -eq 3 ] || usage
    start "$2" "$3"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop "$2"
    ;;
url)
    [ $# -eq 2 ] || usage
    url "$2"
    ;;
*) usage ;;
esac
