#!/usr/bin/env bash
# OCI images of the six services, without a container engine (see scripts/images.py).
#   scripts/images.sh build   release binaries (incremental), then .millrace/images/millrace-<service>.oci.tar
#   scripts/images.sh check   build, then check every archive, start each binary from its layer
#                             and wait for /healthz, and require the check to reject broken images
# Environment:
#   MODEL=1                 bake the embedding model into the embeddings image (~+80 MB, no size limit)
#   MILLRACE_IMAGES_DIR     where the archives go (default .millrace/images)
#   MILLRACE_IMAGE_SOURCE   the org.opencontainers.image.source label
#   SOURCE_DATE_EPOCH       file and image times (default 0: the same binaries give the same digests)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/millrace/target}"
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
MODEL_DIR="$MILLRACE_HOME/models/all-MiniLM-L6-v2"
OUT="${MILLRACE_IMAGES_DIR:-.millrace/images}"
ARGS=(--out "$OUT" --source "${MILLRACE_IMAGE_SOURCE:-https://github.com/millrace/millrace}")
[ "${MODEL:-0}" = 1 ] && ARGS+=(--model "$MODEL_DIR")

for tool in ldd objcopy python3; do
    command -v "$tool" >/dev/null || { echo "images: $tool not found (binutils, libc-bin, python3)" >&2; exit 1; }
done
if [ ! -s "$MODEL_DIR/tokenizer.json" ]; then
    echo "images: $MODEL_DIR/tokenizer.json missing (the chunking image carries it); run make setup" >&2
    exit 1
fi

build() {
    # The same command as `make build-release`: building a subset of the packages would unify
    # features differently and rebuild dependencies.
    nice cargo build --release --workspace --bins
    python3 scripts/images.py build "${ARGS[@]}" --bin-dir "$TARGET/release" --tokenizer "$MODEL_DIR"
}

case "${1:-build}" in
    build) build ;;
    check)
        build
        python3 scripts/images.py check "${ARGS[@]}" --smoke
        # A second reader, when installed (apt-get install skopeo): the archives must open there too.
        if command -v skopeo >/dev/null 2>&1; then
            for f in "$OUT"/millrace-*.oci.tar; do
                skopeo inspect --config "oci-archive:$f" >/dev/null || { echo "images: skopeo cannot read $f" >&2; exit 1; }
            done
            echo "images: skopeo reads every archive"
        fi
        python3 scripts/images.py self-test --bin-dir "$TARGET/release"
        ;;
    *) echo "usage: $0 [build|check]" >&2; exit 2 ;;
esac
