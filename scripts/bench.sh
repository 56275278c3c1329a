#!/usr/bin/env bash
# `make bench [BENCH="part ..."]`: the benchmarks whose figures are in docs/benchmarks.md, each
# printing Markdown to paste there. Parts (default: pipeline gateway quota tracing):
#   pipeline  scripts/bench.py: pipeline vs bulk COPY, and memory under a backlog (~10 min)
#   gateway   scripts/bench_gateway.py: gateway overhead at 500 and 2,000 req/s, memory (~6 min)
#   quota     scripts/bench_quota.py: RPM saturation with 1 and 3 metadata replicas (~12 min)
#   tracing   scripts/bench_tracing.py: throughput with OTLP export on and off (~5 min)
#   reingest  scripts/bench_reingest.py: incremental re-ingest against a first ingest
#   runs      scripts/bench_runs.py: a run of 20,000 items; listing, paging and its report
#   crawl     scripts/bench_crawl.py: a 5,000-page local site crawled at 1,200 requests/min per
#             host by two chunking replicas (~5 min)
#   chunking  cargo bench -p millrace-chunking --bench chunking (criterion)
#   keys      cargo bench -p millrace-auth --bench key_check: what the key check adds (criterion)
#   fulltext  scripts/bench_fulltext.py: pipeline chunks/s with the full-text column (keyword
#             search's tsvector and GIN index) as migrated, as migration 5 made it, and without
#             it, rounds rotating, then the column alone in PostgreSQL (~14 min)
#   search    scripts/bench_search.py: search quality on the Python docs (python3-doc), test and
#             development query sets, against LlamaIndex, and search latency at 10k and 100k
#             chunks (~25 min; 1M with `python3 scripts/bench_search.py --sizes 100000,1000000`)
# The local embedding model against PyTorch needs the pyref venv; see scripts/bench_embeddings.py.
set -euo pipefail
cd "$(dirname "$0")/.."
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
# The peer baseline of `search`, pinned: LlamaIndex's core and grpcio (to call our embeddings
# service, so both sides use the same model and the same vectors; no PyTorch).
LLAMAINDEX_VERSION="0.14.25"
GRPCIO_VERSION="1.85.4"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The corpus of `search`: Debian's python3-doc (the Python documentation as HTML).
ensure_python_doc() {
    if [ -f /usr/share/doc/python3-doc/html/library/json.html ]; then return; fi
    command -v apt-get >/dev/null || { echo "bench: install Debian's python3-doc (needs apt-get)" >&2; exit 1; }
    echo "bench: apt-get install python3-doc" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-doc >/dev/null
}

ensure_llamaindex_venv() {
    local venv="$MILLRACE_HOME/venv-llamaindex"
    if "$venv/bin/python" -c "import grpc, llama_index.core as c; assert c.__version__ == '$LLAMAINDEX_VERSION'" >/dev/null 2>&1; then
        return
    fi
    echo "bench: making $venv (llama-index-core $LLAMAINDEX_VERSION)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "llama-index-core==$LLAMAINDEX_VERSION" "grpcio==$GRPCIO_VERSION"
}
for part in ${BENCH:-pipeline gateway quota tracing}; do
    echo "## bench: $part" >&2
    case "$part" in
    pipeline) python3 scripts/bench.py ;;
    gateway) python3 scripts/bench_gateway.py ;;
    quota) python3 scripts/bench_quota.py ;;
    tracing) python3 scripts/bench_tracing.py ;;
    reingest) python3 scripts/bench_reingest.py ;;
    runs) python3 scripts/bench_runs.py ;;
    fulltext) python3 scripts/bench_fulltext.py ;;
    crawl) python3 scripts/bench_crawl.py ;;
    chunking) cargo bench -p millrace-chunking --bench chunking ;;
    keys) cargo bench -p millrace-auth --bench key_check ;;
    search)
        ensure_python_doc
        ensure_llamaindex_venv
        python3 scripts/bench_search.py
        ;;
    *)
        echo "bench: unknown part $part (pipeline, gateway, quota, tracing, reingest, runs, fulltext, crawl, chunking, keys, search)" >&2
        exit 2
        ;;
    esac
done
