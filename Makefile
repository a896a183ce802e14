# eventflow developer entry points. CI runs `make test` (via .ci/run).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
# buf: a global install, else a local `npm install --no-save @bufbuild/buf`, else npx.
BUF := $(shell command -v buf 2>/dev/null || { [ -x node_modules/.bin/buf ] && echo node_modules/.bin/buf; } || echo "npx --yes @bufbuild/buf")

.PHONY: help deps proto test run stop bench soak lint fmt

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

deps: ## install what the tests need (redis-server, PostgreSQL, .venv with the Python requirements)
	scripts/ensure-deps.sh

proto: deps ## regenerate the Python stubs in examples/python/eventflow/
	$(PY) examples/python/gen.py --force

test: deps ## build the binaries; Rust tests (e2e on one Redis and on a Redis Cluster); the Python client package and examples, Node clients against the real binaries; Helm/deploy tests
	cargo build --bins
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --no-tests=warn; \
	  EVENTFLOW_E2E_REDIS=cluster cargo nextest run --profile cluster; \
	else \
	  cargo test --workspace; \
	  echo "the e2e run on Redis Cluster needs cargo-nextest (cargo install cargo-nextest): skipped"; \
	fi
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation ./libs/client-python
	$(PY) -m pytest examples/python libs/client-python/tests deploy/tests -q
	cd examples/node && npm ci --no-audit --no-fund && node --test

run: ## start Redis (if none), a PostgreSQL (without EVENTFLOW_DATABASE_URL) and every service in the background, then run the demo
	scripts/run-local.sh

stop: ## stop what `make run` started
	scripts/stop-local.sh

bench: ## the benchmarks and their peers (release build; RESULT lines: docs/operations.md)
	scripts/ensure-deps.sh redis nats postgres
	cargo build --release --bins
	cargo run --release -q -p eventflow-bench --bin eventflow-bench

soak: ## the fault suite (release build; not part of make test)
	scripts/ensure-deps.sh redis
	cargo build --release --bins
	cargo run --release -q -p eventflow-bench --bin eventflow-soak

lint: ## rustfmt check, clippy and rustdoc with warnings as errors, buf lint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
	$(BUF) lint

fmt: ## format the Rust code
	cargo fmt --all
