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
# It starts what the API needs on free ports (scripts/test_stack.sh: the stack and the fake
# upstream, tools/fake-openai, behind the gateway so that searches with `rerank: true` reach a
# chat model; metadata stays extractive, so the reranker is its only caller), and stops it all at
# the end, whatever happens.
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

# shellcheck source=test_stack.sh
. "$ROOT/scripts/test_stack.sh"
test_stack_prepare schemathesis
# Generated URLs name hosts that do not exist: their jobs fail at chunking's fetch quickly, so
# that event streams (which end with the job) do not wait the default 30 s.
export MILLRACE_FETCH_TIMEOUT_MS=2000
export MILLRACE_LLM_CHAT_MODEL=fake-chat MILLRACE_METADATA_PROVIDER=extractive
test_stack_up

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
