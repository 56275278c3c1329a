#!/usr/bin/env bash
# The local millrace stack as separate processes: Redis, PostgreSQL+pgvector and the six
# services, with pids under $MILLRACE_DATA_DIR/run and logs under $MILLRACE_DATA_DIR/logs.
#
#   scripts/stack.sh up       start whatever is not running (idempotent), wait until ready, print URLs
#   scripts/stack.sh down     stop everything this script started
#   scripts/stack.sh status   what is running
#
# The caller's environment is passed through to the services, so MILLRACE_LLM_BASE_URL and
# friends configure an upstream. Ports: MILLRACE_REDIS_PORT (6390), MILLRACE_PG_PORT (5490),
# services from MILLRACE_HTTP_PORT_BASE (8060) and MILLRACE_GRPC_PORT_BASE (9060) up, in the
# order ingestion, chunking, metadata, embeddings, storage, llm-gateway. MILLRACE_DATABASE_URL
# uses an existing PostgreSQL (with pgvector) instead of starting one.
#
# Every API call needs a key. The bootstrap admin key is MILLRACE_ADMIN_KEY if set; else the one
# in $MILLRACE_DATA_DIR/admin.key (made on the first `up`: random, mode 600), which ingestion and
# the llm-gateway are given and the `millrace` command line reads by itself.
#
# MILLRACE_SCALE runs more replicas of the stream stages, e.g. "metadata=3 embeddings=2" (at
# most 9 each): replica N of a service listens 10 × (N - 1) ports above the first one
# (metadata-2 on 8072/9072) and joins the same consumer group. Ingestion and the gateway are
# called directly, so more of them need a load balancer in front (Kubernetes does that).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA_DIR="${MILLRACE_DATA_DIR:-$ROOT/.millrace}"
RUN_DIR="$DATA_DIR/run"
LOG_DIR="$DATA_DIR/logs"
PROFILE="${MILLRACE_PROFILE:-release}"
BIN_DIR="${MILLRACE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE}"
REDIS_PORT="${MILLRACE_REDIS_PORT:-6390}"
PG_PORT="${MILLRACE_PG_PORT:-5490}"

HTTP_BASE="${MILLRACE_HTTP_PORT_BASE:-8060}"
GRPC_BASE="${MILLRACE_GRPC_PORT_BASE:-9060}"
# instance:binary:http:grpc, in start order (callees before callers).
SERVICES=()
for entry in llm-gateway:5 storage:4 embeddings:3 metadata:2 chunking:1 ingestion:0; do
    name="${entry%%:*}" offset="${entry##*:}"
    SERVICES+=("$name:$name:$((HTTP_BASE + offset)):$((GRPC_BASE + offset))")
    replicas=1
    for scale in ${MILLRACE_SCALE:-}; do
        [ "${scale%%=*}" = "$name" ] && replicas="${scale#*=}"
    done
    if [ "$replicas" != 1 ]; then
        case "$name" in chunking | metadata | embeddings | storage) ;; *)
            echo "stack: MILLRACE_SCALE: only chunking, metadata, embeddings and storage scale here, not $name" >&2
            exit 1
            ;;
        esac
        [[ "$replicas" =~ ^[1-9]$ ]] || { echo "stack: MILLRACE_SCALE: $name=$replicas is not 1 to 9" >&2; exit 1; }
    fi
    for ((replica = 2; replica <= replicas; replica++)); do
        shift_by=$((10 * (replica - 1) + offset))
        SERVICES+=("$name-$replica:$name:$((HTTP_BASE + shift_by)):$((GRPC_BASE + shift_by))")
    done
done

log() { echo "stack: $*"; }
die() {
    echo "stack: $*" >&2
    exit 1
}

# A pid file whose process runs (an exited process not yet reaped, state Z, counts as gone).
alive() {
    [ -f "$1" ] || return 1
    local pid
    pid="$(cat "$1")"
    kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]
}

ADMIN_KEY_FILE="$DATA_DIR/admin.key"

# The bootstrap admin key: MILLRACE_ADMIN_KEY, else the key file, made now if missing.
admin_key() {
    if [ -n "${MILLRACE_ADMIN_KEY:-}" ]; then
        echo "$MILLRACE_ADMIN_KEY"
        return
    fi
    if [ ! -s "$ADMIN_KEY_FILE" ]; then
        mkdir -p "$DATA_DIR"
        # 32 random bytes, base64url: the same strength as the keys the API makes.
        (umask 077 && printf 'mr_%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" >"$ADMIN_KEY_FILE")
    fi
    chmod 600 "$ADMIN_KEY_FILE"
    tr -d '[:space:]' <"$ADMIN_KEY_FILE"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

database_url() {
    if [ -n "${MILLRACE_DATABASE_URL:-}" ]; then echo "$MILLRACE_DATABASE_URL"; else "$ROOT/scripts/pg.sh" url "$PG_PORT"; fi
}

wait_ready() {
    local name="$1" url="$2"
    for _ in $(seq 1 120); do
        # Refused connections are expected until the service listens; a timeout says so below.
        if curl -fs -o /dev/null "$url" 2>/dev/null; then return 0; fi
        sleep 0.5
    done
    die "$name did not become ready at $url; see $LOG_DIR/$name.log"
}

start_redis() {
    local pidfile="$RUN_DIR/redis.pid"
    if alive "$pidfile"; then
        log "redis already running on $REDIS_PORT"
        return
    fi
    port_busy "$REDIS_PORT" && die "port $REDIS_PORT is taken; set MILLRACE_REDIS_PORT"
    mkdir -p "$DATA_DIR/redis"
    # AOF on: job state and queued work survive a Redis restart.
    # Each server gets its own session (setsid), so a Ctrl-C in the terminal reaches only the
    # script that started them, which then stops them in order with `down`.
    setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA_DIR/redis" --appendonly yes \
        --save "" --maxmemory-policy noeviction >"$LOG_DIR/redis.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis did not start; see $LOG_DIR/redis.log"
    log "redis on 127.0.0.1:$REDIS_PORT"
}

start_postgres() {
    if [ -n "${MILLRACE_DATABASE_URL:-}" ]; then
        log "using MILLRACE_DATABASE_URL"
        return
    fi
    if [ ! -f "$DATA_DIR/pg/data/postmaster.pid" ] && port_busy "$PG_PORT"; then
        die "port $PG_PORT is taken; set MILLRACE_PG_PORT"
    fi
    "$ROOT/scripts/pg.sh" start "$DATA_DIR/pg/data" "$PG_PORT" | sed 's/^/stack: /'
}

start_service() {
    local name="$1" binary="$2" http="$3" grpc="$4" pidfile="$RUN_DIR/$1.pid"
    if alive "$pidfile"; then
        log "$name already running"
        return
    fi
    local bin="$BIN_DIR/millrace-$binary"
    [ -x "$bin" ] || die "no binary $bin (run: cargo build --release --workspace --bins)"
    port_busy "$http" && die "port $http for $name is taken"
    port_busy "$grpc" && die "port $grpc for $name is taken"
    # Only the services that authenticate callers hold the admin key.
    local extra_env=()
    case "$binary" in ingestion | llm-gateway) extra_env=("MILLRACE_ADMIN_KEY=$(admin_key)") ;; esac
    # The gateway serves /metrics on a port of its own (8075 with the default bases).
    [ "$binary" = llm-gateway ] && extra_env+=("MILLRACE_METRICS_ADDR=127.0.0.1:$((http + 10))")
    env ${extra_env[@]+"${extra_env[@]}"} MILLRACE_HTTP_ADDR="127.0.0.1:$http" MILLRACE_GRPC_ADDR="127.0.0.1:$grpc" \
        MILLRACE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" MILLRACE_DATABASE_URL="$(database_url)" \
        MILLRACE_CONSUMER_NAME="$name-local" \
        MILLRACE_STORAGE_URL="http://127.0.0.1:$((GRPC_BASE + 4))" \
        MILLRACE_EMBEDDINGS_URL="http://127.0.0.1:$((GRPC_BASE + 3))" \
        MILLRACE_LLM_GATEWAY_URL="http://127.0.0.1:$((GRPC_BASE + 5))" \
        MILLRACE_CHUNKING_URL="http://127.0.0.1:$((GRPC_BASE + 1))" \
        MILLRACE_METADATA_URL="http://127.0.0.1:$((GRPC_BASE + 2))" \
        setsid "$bin" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

up() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    command -v redis-server >/dev/null || die "redis-server is missing (run scripts/setup.sh)"
    start_redis
    start_postgres
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name binary http grpc <<<"$entry"
        start_service "$name" "$binary" "$http" "$grpc"
    done
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name _ http _ <<<"$entry"
        wait_ready "$name" "http://127.0.0.1:$http/readyz"
    done
    log "up. API: http://127.0.0.1:$HTTP_BASE (OpenAPI at /openapi.json); logs in $LOG_DIR"
    if [ -n "${MILLRACE_ADMIN_KEY:-}" ]; then
        log "admin key: MILLRACE_ADMIN_KEY (from your environment)"
    else
        log "admin key: $ADMIN_KEY_FILE (the millrace CLI reads it; curl: -H \"Authorization: Bearer \$(cat $ADMIN_KEY_FILE)\")"
    fi
    for entry in "${SERVICES[@]}"; do
        IFS=: read -r name _ http grpc <<<"$entry"
        printf 'stack:   %-12s http://127.0.0.1:%s  grpc 127.0.0.1:%s\n' "$name" "$http" "$grpc"
    done
}

stop_pid() {
    local name="$1" pidfile="$RUN_DIR/$1.pid"
    if alive "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            alive "$pidfile" || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped $name"
    fi
    rm -f "$pidfile"
}

down() {
    # Every service pid file, replicas included even if MILLRACE_SCALE changed since `up`.
    local pidfile
    for pidfile in "$RUN_DIR"/*-[0-9].pid; do
        [ -e "$pidfile" ] && stop_pid "$(basename "$pidfile" .pid)"
    done
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_pid "${SERVICES[$i]%%:*}"
    done
    if [ -z "${MILLRACE_DATABASE_URL:-}" ] && [ -d "$DATA_DIR/pg/data" ]; then
        "$ROOT/scripts/pg.sh" stop "$DATA_DIR/pg/data" | sed 's/^/stack: /'
    fi
    stop_pid redis
}

status() {
    for name in redis "${SERVICES[@]%%:*}"; do
        if alive "$RUN_DIR/$name.pid"; then echo "$name: running (pid $(cat "$RUN_DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
