# One entry point for people and CI. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

BROWSER_MCP := tools/browser/node_modules/.bin/playwright-mcp

.PHONY: help run test lint typecheck pytest bench clean system-deps browser-mcp

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

# uv installs the project (a fresh .venv here: 38-44 s with warm caches, pip 64-73 s); the venv's
# own pip installs uv first, so python3 and pip are still all a machine needs. --compile-bytecode
# as pip does: otherwise the suite's first processes would compile site-packages side by side.
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

$(BIN)/mcos: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.4'
	$(UV) -e '.[dev]'
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

# Lint first (under a second), then mypy beside the suite: in a fresh clone mypy has no cache
# (47 s of one core), and the suite's tests often wait on processes, leases and namespaces. mypy
# runs niced, on the CPU the tests leave; its output follows the suite's, and the run fails if
# either fails.
test: lint $(BIN)/mcos system-deps $(BROWSER_MCP)  ## everything CI runs: lint, then types beside the whole suite
	@types=$$(mktemp); \
	nice $(MAKE) --no-print-directory typecheck > $$types 2>&1 & pid=$$!; \
	$(MAKE) --no-print-directory pytest; tests=$$?; \
	wait $$pid; typed=$$?; \
	echo "== make typecheck (beside the tests): exit $$typed"; cat $$types; rm -f $$types; \
	test $$tests -eq 0 && test $$typed -eq 0

bench: $(BIN)/mcos  ## the benchmarks: the bus (needs PostgreSQL on 127.0.0.1:5432; installs Debian's wrk), a fleet-day's cost
	$(UV) -e '.[dev,bench]'
	@command -v wrk >/dev/null || { $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/python benchmarks/bus.py
	$(BIN)/python benchmarks/fleet_day.py

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tools/browser/node_modules
