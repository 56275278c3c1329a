#!/usr/bin/env bash
# `make bench`: the end-to-end benchmark (see scripts/bench.py); append its Markdown to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/bench.py "$@"
