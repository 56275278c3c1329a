#!/usr/bin/env bash
# Property-based tests of the ingestion service's HTTP API against its own OpenAPI document
# (schemathesis, in the venv scripts/setup.sh makes): every answer must be no 5xx and conform
# to the document (status, content type, headers, body schema), schema-invalid input must be
# refused and valid input accepted.
#
# Every request carries the stack's bootstrap admin key (made by scripts/stack.sh in the temporary
# data directory); schemathesis' `ignored_auth` check also sends requests without it, which must
# be refused with 401.
#
# It starts what the API needs on free ports in a temporary directory, through scripts/stack.sh
# (Redis, PostgreSQL and the six services, embeddings with the hashing provider so no model
# loads), with the fake upstream (tools/fake-openai) behind the gateway so that searches with
# `rerank: true` reach a chat model (metadata stays extractive: the reranker is its only
# caller), and stops it all at the end, whatever happens.
#
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase. Unset: the bounded run of
#                               `make test` (10 cases, a fixed seed and a 90 s budget, so the
#                               gate is the same run each time). Set (the chaos suite's long
#                               mode, e.g. 500): a random seed and no time budget unless given
#   SCHEMATHESIS_MAX_TIME       time budget in seconds for the whole run
#   SCHEMATHESIS_SEED           seed, to replay a run (printed at the end of each)
#   SCHEMATHESIS_WORKERS        concurrent workers (default 2)
#   MILLRACE_PROFILE            which build of the services (default debug, as `make test` builds)
# Reports (JUnit, and the failures as pytest files) go to $MILLRACE_DATA_DIR/schemathesis
# ($ROOT/.millrace/schemathesis by default).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
VENV="$MILLRACE_HOME/venv-schemathesis"
REPORT_DIR="${MILLRACE_DATA_DIR:-$ROOT/.millrace}/schemathesis"
if [ -z "${SCHEMATHESIS_MAX_EXAMPLES:-}" ]; then
    MAX_EXAMPLES=10
    SCHEMATHESIS_SEED="${SCHEMATHESIS_SEED:-20261206}"
    SCHEMATHESIS_MAX_TIME="${SCHEMATHESIS_MAX_TIME:-90}"
else
    MAX_EXAMPLES="$SCHEMATHESIS_MAX_EXAMPLES"
fi
WORKERS="${SCHEMATHESIS_WORKERS:-2}"

log() { echo "schemathesis: $*"; }

[ -x "$VENV/bin/schemathesis" ] || { echo "schemathesis: $VENV is missing; run scripts/setup.sh" >&2; exit 1; }
[[ "$MAX_EXAMPLES" =~ ^[1-9][0-9]*$ ]] || { echo "schemathesis: SCHEMATHESIS_MAX_EXAMPLES=$MAX_EXAMPLES is not a positive integer" >&2; exit 2; }

# Six consecutive free ports for HTTP and six for gRPC, and one each for Redis, PostgreSQL and
# the fake upstream, none of them a port something on this machine already uses.
read -r HTTP_BASE GRPC_BASE REDIS_PORT PG_PORT FAKE_PORT < <(python3 "$ROOT/scripts/free_ports.py" 6 6 1 1 1)

DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/millrace-schemathesis.XXXXXX")"
export MILLRACE_DATA_DIR="$DATA_DIR" MILLRACE_PROFILE="${MILLRACE_PROFILE:-debug}"
export MILLRACE_HTTP_PORT_BASE="$HTTP_BASE" MILLRACE_GRPC_PORT_BASE="$GRPC_BASE"
export MILLRACE_REDIS_PORT="$REDIS_PORT" MILLRACE_PG_PORT="$PG_PORT"
export MILLRACE_EMBEDDINGS_PROVIDER=hashing
# Generated URLs name hosts that do not exist: their jobs fail at chunking's fetch quickly, so
# that event streams (which end with the job) do not wait the default 30 s.
export MILLRACE_FETCH_TIMEOUT_MS=2000
unset MILLRACE_DATABASE_URL MILLRACE_ADMIN_KEY MILLRACE_API_KEY MILLRACE_SCALE MILLRACE_LLM_UPSTREAMS_FILE MILLRACE_LLM_EMBED_MODEL
export MILLRACE_LLM_BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" MILLRACE_LLM_CHAT_MODEL=fake-chat
export MILLRACE_METADATA_PROVIDER=extractive
FAKE="${MILLRACE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/$MILLRACE_PROFILE}/millrace-fake-openai"
[ -x "$FAKE" ] || { echo "schemathesis: $FAKE is missing; cargo build --workspace --bins" >&2; exit 1; }
FAKE_PID=""

stop() {
    local status=$?
    "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null || true
    if [ "$status" -ne 0 ] && [ -d "$DATA_DIR/logs" ]; then
        tail -n 20 "$DATA_DIR"/logs/ingestion.log >&2 || true
    fi
    rm -rf "$DATA_DIR"
    exit "$status"
}
trap stop EXIT INT TERM

log "starting the stack (http $HTTP_BASE.., grpc $GRPC_BASE.., redis $REDIS_PORT, postgres $PG_PORT, fake upstream $FAKE_PORT)"
"$FAKE" --addr "127.0.0.1:$FAKE_PORT" >"$DATA_DIR/fake-openai.log" 2>&1 &
FAKE_PID=$!
"$ROOT/scripts/stack.sh" up >"$DATA_DIR/stack.log" 2>&1 || { cat "$DATA_DIR/stack.log" >&2; exit 1; }

mkdir -p "$REPORT_DIR"
args=(
    --no-color --config-file "$ROOT/scripts/schemathesis.toml"
    run "http://127.0.0.1:$HTTP_BASE/openapi.json"
    # Every check, but those scripts/schemathesis.toml turns off, each with its reason.
    --max-examples "$MAX_EXAMPLES"
    --workers "$WORKERS"
    --request-timeout 30
    --report junit,pytest --report-dir "$REPORT_DIR"
    # No example database in the working tree: a run is replayed by its seed.
    --generation-database none
)
[ -n "${SCHEMATHESIS_MAX_TIME:-}" ] && args+=(--max-time "$SCHEMATHESIS_MAX_TIME")
[ -n "${SCHEMATHESIS_SEED:-}" ] && args+=(--seed "$SCHEMATHESIS_SEED")
log "schemathesis ${args[*]}"
# After the log line: the key is not printed.
args+=(--header "Authorization: Bearer $(tr -d '[:space:]' <"$DATA_DIR/admin.key")")
# From the temporary directory, where schemathesis keeps its cache.
(cd "$DATA_DIR" && "$VENV/bin/schemathesis" "${args[@]}")
