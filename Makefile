# The two commands of the README: `make demo` and `make test`.
# Both bootstrap .venv idempotently: pip runs only when pyproject.toml is newer than the stamp.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_LOGGING_LEVEL ?= WARNING

SHELL := /bin/bash

.PHONY: demo test test-all lint bench venv clean browser

# The browser test drives `worldnet serve`'s page in Debian's headless Chromium: install it when missing.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# This machine's pip config names index folders that may not exist: drop that noise only.
	@set -o pipefail; $(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/worldnet demo

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (Debian) for the browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check worldnet tasks flows tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .worldnet
