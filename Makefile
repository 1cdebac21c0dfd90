# One-command set-up: every target installs what is missing first (scripts/setup.sh), so a fresh
# machine needs only `make demo` or `make test`.
SHELL := /bin/bash
CARGO ?= cargo
WORKBENCH := target/release/workbench

.PHONY: setup build demo test lint fmt clean-runs

## Install what is missing: libtorch (torch 2.11.0 CPU libraries, into .deps/py), the bundled corpus
## (data/kjv.txt) and, for the browser tests, Debian's chromium.
setup:
	@bash scripts/setup.sh

## Release binary at target/release/workbench (tests use the same profile, so dependencies build once).
build: setup
	$(CARGO) build --release --workspace

## The quickstart sweep on CPU; prints where the report is.
demo: build
	$(WORKBENCH) sweep experiments/quickstart.yaml --out runs/quickstart --force --resume

## Every test (unit, integration, browser) in the release profile.
test: build
	$(CARGO) test --release --workspace

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-runs:
	rm -rf runs
