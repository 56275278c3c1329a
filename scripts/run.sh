#!/usr/bin/env bash
# `make run`: bring the stack up, ingest examples/ with the `millrace` command line (progress
# bars, then a summary) and run a sample search, and keep the stack up until Ctrl-C (or
# SIGTERM), then stop everything in order.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo; scripts/stack.sh down; exit 0' INT TERM
scripts/stack.sh up
export MILLRACE_URL="http://127.0.0.1:${MILLRACE_HTTP_PORT_BASE:-8060}"
# The stack's bootstrap admin key (stack.sh made the file unless MILLRACE_ADMIN_KEY is set).
MILLRACE_API_KEY="${MILLRACE_API_KEY:-${MILLRACE_ADMIN_KEY:-$(cat "${MILLRACE_DATA_DIR:-.millrace}/admin.key")}}"
export MILLRACE_API_KEY
millrace="${CARGO_TARGET_DIR:-target}/${MILLRACE_PROFILE:-release}/millrace"
# examples/README.md describes the examples; it is not one of them.
mapfile -t examples < <(find examples -type f ! -name README.md | sort)
"$millrace" ingest "${examples[@]}" --wait || echo "some examples failed (see above); the stack stays up"
echo
echo 'search: "how did a mill use the rise and fall of the sea"'
"$millrace" search "how did a mill use the rise and fall of the sea" --top-k 3
echo "millrace is running: $MILLRACE_URL (Ctrl-C stops it; try: $millrace --help)"
echo "web console: $MILLRACE_URL/ui/ (sign in with the admin key in ${MILLRACE_DATA_DIR:-.millrace}/admin.key)"
while true; do sleep 1; done
