# The two set-up commands of the README: `make run` and `make test`.
# Everything installs into .venv; nothing is installed globally.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit run bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# checkov pins versions (packaging, among others) that clash with the test tools, so it lives in a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==3.3.30
	touch $@

# The chat page's bundler and its JavaScript tests (versions from web/package-lock.json).
WEB_STAMP := web/node_modules/.package-lock.json

$(WEB_STAMP): web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error

# The browser tests drive Debian's Chromium: Playwright's own browser downloads are not used.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null

# The benchmark's peer (the official Node.js handler, versions from bench/node-peer/package-lock.json)
# and the load generator that drives it and the app alike (Debian's wrk).
PEER_STAMP := bench/node-peer/node_modules/.package-lock.json
WRK := /usr/bin/wrk

$(PEER_STAMP): bench/node-peer/package-lock.json
	npm ci --prefix bench/node-peer --no-audit --no-fund --loglevel=error

$(WRK):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends wrk >/dev/null

install: $(STAMP) $(CHECKOV_STAMP) $(WEB_STAMP) $(CHROMIUM) $(PEER_STAMP) $(WRK)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest

test: lint typecheck unit

# The local stack: Functions host and Web PubSub service, in the foreground until Ctrl+C.
run: $(STAMP)
	$(BIN)/python -m devstack

# Performance figures (docs/performance.md); BENCH_QUICK=1 for a short run, BENCH_CLIENTS=N for the stack figure.
bench: install $(PEER_STAMP) $(WRK)
	$(BIN)/python -m bench
