#!/usr/bin/env bash
# `make run`: bring the stack up, ingest examples/ with a sample search, and keep it up until
# Ctrl-C (or SIGTERM), then stop everything in order.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo; scripts/stack.sh down; exit 0' INT TERM
scripts/stack.sh up
python3 scripts/demo.py
echo "millrace is running: http://127.0.0.1:${MILLRACE_HTTP_PORT_BASE:-8060} (Ctrl-C stops it)"
while true; do sleep 1; done
