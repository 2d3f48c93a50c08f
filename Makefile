# One entry point for people and CI. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

BROWSER_MCP := tools/browser/node_modules/.bin/playwright-mcp

.PHONY: help run test lint typecheck pytest bench clean system-deps browser-mcp

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(BIN)/mcos: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/mcos  ## install, then run Mission Control and the demo business fleet (./mcos-demo)
	$(BIN)/mcos run

lint: $(BIN)/mcos  ## ruff check and ruff format --check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(BIN)/mcos  ## mypy, strict on src/
	$(BIN)/mypy

system-deps:  ## Debian packages the tests use (systemd-analyze, faketime, chromium, npm, dovecot, iproute2), installed when missing
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v faketime >/dev/null || missing="$$missing faketime"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	test -x /usr/sbin/dovecot || missing="$$missing dovecot-imapd"; \
	command -v tc >/dev/null && command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BROWSER_MCP): tools/browser/package.json tools/browser/package-lock.json
	cd tools/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

browser-mcp: system-deps $(BROWSER_MCP)  ## the Playwright MCP server agents browse with (npm ci from the lock; runs on Debian's chromium, downloads no browser)

pytest: $(BIN)/mcos system-deps $(BROWSER_MCP)  ## the whole test suite (PostgreSQL tests fail, not skip, under CI=true)
	$(BIN)/python -m pytest --durations=25

test: lint typecheck pytest  ## everything CI runs

bench: $(BIN)/mcos  ## the benchmarks: the bus (needs PostgreSQL on 127.0.0.1:5432; installs Debian's wrk), a fleet-day's cost
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || { $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/python benchmarks/bus.py
	$(BIN)/python benchmarks/fleet_day.py

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tools/browser/node_modules
