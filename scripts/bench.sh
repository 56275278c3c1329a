#!/usr/bin/env bash
# `make bench [BENCH="part ..."]`: the benchmarks whose figures are in docs/benchmarks.md, each
# printing Markdown to paste there. Parts (default: pipeline gateway quota tracing):
#   pipeline  scripts/bench.py: pipeline vs bulk COPY, and memory under a backlog (~10 min)
#   gateway   scripts/bench_gateway.py: gateway overhead at 500 and 2,000 req/s, memory (~6 min)
#   quota     scripts/bench_quota.py: RPM saturation with 1 and 3 metadata replicas (~12 min)
#   tracing   scripts/bench_tracing.py: throughput with OTLP export on and off (~5 min)
#   reingest  scripts/bench_reingest.py: incremental re-ingest against a first ingest
#   chunking  cargo bench -p millrace-chunking --bench chunking (criterion)
#   keys      cargo bench -p millrace-auth --bench key_check: what the key check adds (criterion)
# The local embedding model against PyTorch needs the pyref venv; see scripts/bench_embeddings.py.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in ${BENCH:-pipeline gateway quota tracing}; do
    echo "## bench: $part" >&2
    case "$part" in
    pipeline) python3 scripts/bench.py ;;
    gateway) python3 scripts/bench_gateway.py ;;
    quota) python3 scripts/bench_quota.py ;;
    tracing) python3 scripts/bench_tracing.py ;;
    reingest) python3 scripts/bench_reingest.py ;;
    chunking) cargo bench -p millrace-chunking --bench chunking ;;
    keys) cargo bench -p millrace-auth --bench key_check ;;
    *)
        echo "bench: unknown part $part (pipeline, gateway, quota, tracing, reingest, chunking, keys)" >&2
        exit 2
        ;;
    esac
done
