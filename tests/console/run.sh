#!/usr/bin/env bash
# The web console's browser tests: headless Chromium from Debian's packages, driven by selenium
# through /usr/bin/chromedriver (scripts/setup.sh installs both and the venv), against a real
# stack started here on free ports in a temporary directory through scripts/stack.sh (Redis,
# PostgreSQL and the six services; embeddings with the hashing provider so no model loads), and
# stopped at the end, whatever happens. tests/console/test_console.py says what is walked through.
#
#   CONSOLE_SCREENSHOTS   where the pages' screenshots go (default: the temporary directory,
#                         removed at the end; `make console-screenshots` writes docs/console)
#   MILLRACE_PROFILE      which build of the services (default debug, as `make test` builds)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
VENV="$MILLRACE_HOME/venv-console"

log() { echo "console: $*"; }

[ -x "$VENV/bin/python" ] || { echo "console: $VENV is missing; run scripts/setup.sh" >&2; exit 1; }
for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "console: $tool is missing; run scripts/setup.sh" >&2; exit 1; }
done

# Six consecutive free ports for HTTP and six for gRPC, and one each for Redis, PostgreSQL and the
# fake LLM upstream.
read -r HTTP_BASE GRPC_BASE REDIS_PORT PG_PORT FAKE_PORT < <(python3 "$ROOT/scripts/free_ports.py" 6 6 1 1 1)

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millrace-console.XXXXXX")"
export MILLRACE_DATA_DIR="$DATA_DIR" MILLRACE_PROFILE="${MILLRACE_PROFILE:-debug}"
export MILLRACE_HTTP_PORT_BASE="$HTTP_BASE" MILLRACE_GRPC_PORT_BASE="$GRPC_BASE"
export MILLRACE_REDIS_PORT="$REDIS_PORT" MILLRACE_PG_PORT="$PG_PORT"
export MILLRACE_EMBEDDINGS_PROVIDER=hashing
# Quick redelivery, so that the dead letter the test makes is given up on within seconds.
export MILLRACE_BLOCK_MS=500 MILLRACE_VISIBILITY_TIMEOUT_MS=2000 MILLRACE_RECLAIM_INTERVAL_MS=300 MILLRACE_MAX_DELIVERIES=2
export MILLRACE_TRACE_URL="http://jaeger.example/trace/{trace_id}"
unset MILLRACE_DATABASE_URL MILLRACE_ADMIN_KEY MILLRACE_API_KEY MILLRACE_SCALE MILLRACE_LLM_UPSTREAMS_FILE
# Metadata through the gateway to the project's fake upstream, under quotas and a daily budget,
# so that the overview has limits, use and spend to show (a priced model name, so calls cost).
export MILLRACE_LLM_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" MILLRACE_LLM_CHAT_MODEL=gpt-4o-mini
export MILLRACE_LLM_RPM=600 MILLRACE_LLM_TPM=200000 MILLRACE_MAX_DAILY_COST_USD=5
FAKE_BIN="${MILLRACE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/$MILLRACE_PROFILE}/millrace-fake-openai"
[ -x "$FAKE_BIN" ] || { echo "console: no $FAKE_BIN (run: cargo build --workspace --bins)" >&2; exit 1; }
FAKE_PID=

stop() {
    local status=$?
    "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
    if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
    if [ "$status" -ne 0 ] && [ -d "$DATA_DIR/logs" ]; then
        tail -n 20 "$DATA_DIR"/logs/ingestion.log >&2 || true
    fi
    rm -rf "$DATA_DIR"
    exit "$status"
}
trap stop EXIT INT TERM

"$FAKE_BIN" --addr "127.0.0.1:$FAKE_PORT" --latency-ms 20 >"$DATA_DIR/fake-openai.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 1 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$FAKE_PORT/v1/models" && break
    sleep 0.1
done
log "starting the stack (http $HTTP_BASE.., grpc $GRPC_BASE.., redis $REDIS_PORT, postgres $PG_PORT)"
"$ROOT/scripts/stack.sh" up >"$DATA_DIR/stack.log" 2>&1 || { cat "$DATA_DIR/stack.log" >&2; exit 1; }

export CONSOLE_BASE_URL="http://127.0.0.1:$HTTP_BASE"
export CONSOLE_ADMIN_KEY_FILE="$DATA_DIR/admin.key"
export CONSOLE_DATABASE_URL="$("$ROOT/scripts/pg.sh" url "$PG_PORT")"
export CONSOLE_PSQL="${MILLRACE_PG_BIN:-$MILLRACE_HOME/pgserver/bin}/psql"
export CONSOLE_SCREENSHOTS="${CONSOLE_SCREENSHOTS:-$DATA_DIR/screenshots}"
"$VENV/bin/python" "$ROOT/tests/console/test_console.py"
