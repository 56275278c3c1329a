#!/usr/bin/env bash
# The web console's browser tests: headless Chromium from Debian's packages, driven by selenium
# through /usr/bin/chromedriver (scripts/setup.sh installs both and the venv), against a real
# stack on free ports with the fake upstream behind the gateway (scripts/test_stack.sh), stopped
# at the end whatever happens. tests/console/test_console.py says what is walked through.
#
#   CONSOLE_SCREENSHOTS   where the pages' screenshots go (default: the temporary directory,
#                         removed at the end; `make console-screenshots` writes docs/console)
#   MILLRACE_PROFILE      which build of the services (default debug, as `make test` builds)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
VENV="$MILLRACE_HOME/venv-console"

[ -x "$VENV/bin/python" ] || { echo "console: $VENV is missing; run scripts/setup.sh" >&2; exit 1; }
for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "console: $tool is missing; run scripts/setup.sh" >&2; exit 1; }
done

# shellcheck source=../../scripts/test_stack.sh
. "$ROOT/scripts/test_stack.sh"
test_stack_prepare console
# Quick redelivery, so that the dead letter the test makes is given up on within seconds.
export MILLRACE_BLOCK_MS=500 MILLRACE_VISIBILITY_TIMEOUT_MS=2000 MILLRACE_RECLAIM_INTERVAL_MS=300 MILLRACE_MAX_DELIVERIES=2
export MILLRACE_TRACE_URL="http://jaeger.example/trace/{trace_id}"
# Metadata through the gateway to the project's fake upstream, under quotas and a daily budget,
# so that the overview has limits, use and spend to show (a priced model name, so calls cost).
export MILLRACE_LLM_CHAT_MODEL=gpt-4o-mini
export MILLRACE_LLM_RPM=600 MILLRACE_LLM_TPM=200000 MILLRACE_MAX_DAILY_COST_USD=5
test_stack_up --latency-ms 20

export CONSOLE_BASE_URL="http://127.0.0.1:$HTTP_BASE"
export CONSOLE_ADMIN_KEY_FILE="$DATA_DIR/admin.key"
export CONSOLE_DATABASE_URL="$("$ROOT/scripts/pg.sh" url "$PG_PORT")"
export CONSOLE_PSQL="${MILLRACE_PG_BIN:-$MILLRACE_HOME/pgserver/bin}/psql"
export CONSOLE_SCREENSHOTS="${CONSOLE_SCREENSHOTS:-$DATA_DIR/screenshots}"
"$VENV/bin/python" "$ROOT/tests/console/test_console.py"
