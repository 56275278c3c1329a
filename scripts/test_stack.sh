# Sourced by the scripts that test against a whole stack (tests/console/run.sh,
# scripts/schemathesis.sh): a real stack through scripts/stack.sh (Redis, PostgreSQL and the six
# services; embeddings with the hashing provider, so no model loads) and the project's fake
# OpenAI-compatible upstream, on free ports in a temporary directory, both stopped at exit
# whatever happens.
#
#   test_stack_prepare NAME   ports, data directory and the common settings, exported; the exit
#                             trap. NAME prefixes messages and names the directory. After it the
#                             caller exports its own settings ($FAKE_PORT is the upstream's port).
#   test_stack_up [ARGS...]   starts the fake upstream (ARGS are its options) and the stack.
#
# Reads ROOT (the checkout) and MILLRACE_PROFILE (which build, default debug as `make test`
# builds); sets HTTP_BASE, GRPC_BASE, REDIS_PORT, PG_PORT, FAKE_PORT and DATA_DIR.

test_stack_prepare() {
    TEST_STACK_NAME="$1"
    # Six consecutive free ports for HTTP and six for gRPC, and one each for Redis, PostgreSQL
    # and the fake upstream, none of them a port something on this machine already uses.
    read -r HTTP_BASE GRPC_BASE REDIS_PORT PG_PORT FAKE_PORT < <(python3 "$ROOT/scripts/free_ports.py" 6 6 1 1 1)
    DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millrace-$TEST_STACK_NAME.XXXXXX")"
    export MILLRACE_DATA_DIR="$DATA_DIR" MILLRACE_PROFILE="${MILLRACE_PROFILE:-debug}"
    export MILLRACE_HTTP_PORT_BASE="$HTTP_BASE" MILLRACE_GRPC_PORT_BASE="$GRPC_BASE"
    export MILLRACE_REDIS_PORT="$REDIS_PORT" MILLRACE_PG_PORT="$PG_PORT"
    export MILLRACE_EMBEDDINGS_PROVIDER=hashing
    export MILLRACE_LLM_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1"
    # Nothing of the caller's own deployment leaks in.
    unset MILLRACE_DATABASE_URL MILLRACE_ADMIN_KEY MILLRACE_API_KEY MILLRACE_SCALE MILLRACE_LLM_UPSTREAMS_FILE \
        MILLRACE_LLM_EMBED_MODEL
    FAKE_BIN="${MILLRACE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/$MILLRACE_PROFILE}/millrace-fake-openai"
    [ -x "$FAKE_BIN" ] || { echo "$TEST_STACK_NAME: no $FAKE_BIN (run: cargo build --workspace --bins)" >&2; exit 1; }
    FAKE_PID=
    trap test_stack_stop EXIT INT TERM
}

test_stack_stop() {
    local status=$?
    "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
    if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
    if [ "$status" -ne 0 ] && [ -d "$DATA_DIR/logs" ]; then
        tail -n 20 "$DATA_DIR"/logs/ingestion.log >&2 || true
    fi
    rm -rf "$DATA_DIR"
    exit "$status"
}

test_stack_up() {
    "$FAKE_BIN" --addr "127.0.0.1:$FAKE_PORT" "$@" >"$DATA_DIR/fake-openai.log" 2>&1 &
    FAKE_PID=$!
    for _ in $(seq 1 100); do
        curl -fs -o /dev/null "http://127.0.0.1:$FAKE_PORT/v1/models" && break
        sleep 0.1
    done
    echo "$TEST_STACK_NAME: starting the stack (http $HTTP_BASE.., grpc $GRPC_BASE.., redis $REDIS_PORT," \
        "postgres $PG_PORT, fake upstream $FAKE_PORT)"
    "$ROOT/scripts/stack.sh" up >"$DATA_DIR/stack.log" 2>&1 || { cat "$DATA_DIR/stack.log" >&2; exit 1; }
}
