"""Fixtures shared by every tier."""

from __future__ import annotations

import importlib.metadata
import math
import os
import sys
from collections.abc import Iterator

import discord.http
import pytest
from discord.gateway import DiscordWebSocket
from hypothesis import HealthCheck, settings

settings.register_profile(
    "mcos", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("mcos")
"""Property tests check rules, not speed: hypothesis's 200 ms per-example deadline fails them
at random on a 2-core machine beside a CPU-heavy process (timing claims live in benchmarks/)."""

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_URL = os.environ.get("MCOS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    # The suite starts hundreds of Python processes (`mcos server`, agents, the CLI), each of
    # which would compile every module of src/mcos from source again (~0.4 s of CPU each), and
    # every xdist worker would assertion-rewrite every test module again (~5 s each): with the
    # bytecode cache allowed, the first one writes it and the others read it. Popped here, in
    # the xdist controller, before it starts the workers (they and every process the tests
    # start inherit it); `sys.dont_write_bytecode` covers this process.
    sys.dont_write_bytecode = False

if "PYTEST_XDIST_WORKER" in os.environ and os.environ.get("COLUMNS") == "80":
    # An xdist worker finds COLUMNS=80/LINES=24 in its environment (GNU readline sets them when
    # something in the worker initialises it). The `mcos` commands the tests start would then wrap
    # their output at 80 columns, where a plain pytest run leaves it at 200 (cli/common.py).
    # Tests that need a width set COLUMNS for the command themselves.
    os.environ.pop("COLUMNS")
    os.environ.pop("LINES", None)


WORKERS_PER_CPU = 1.5
"""xdist workers per CPU under ``-n auto``: a worker waits on its processes, leases and
namespaces much of the time. At one per CPU a quiet 2-core machine sat about a quarter idle
through the suite; at 1.5 (three workers) 13 %; at 2 (four) none, and no faster: pytest 9 min
22 s with three, 9 min 28 s with four, which failed a timing-bound supervisor test (tests/README.md
§5). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` (xdist's own) overrides the count."""


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: :data:`WORKERS_PER_CPU` workers per CPU this process may run on (rounded
    up), unless ``PYTEST_XDIST_AUTO_NUM_WORKERS`` says how many (then xdist's own hook reads it)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return math.ceil((cpus or 1) * WORKERS_PER_CPU)


def pg_unreachable(reason: str) -> None:
    """Fail under CI (PostgreSQL tests must run there), skip elsewhere with the reason."""
    message = f"PostgreSQL at {PG_URL} is unreachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: PostgreSQL tests never skip)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _restore_discord_globals() -> Iterator[None]:
    """Give discord.py's process-wide API base and gateway back after every test.

    ``DiscordChannel`` points ``discord.http.Route.BASE`` (and the gateway URL) at whatever
    ``api_url`` it was given — in tests, a fake that is gone when the test ends. Restored in
    teardown, which pytest-timeout's ``signal`` method still runs after a timeout, so a test that
    times out cannot leave the next ones talking to a dead fake.
    """
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def pytest_configure(config: pytest.Config) -> None:
    """Refuse the pytest and pytest-xdist pair that ignores ``xdist_group``.

    Under ``--dist loadgroup`` an xdist worker groups a test by appending ``@group`` to its node
    id; pytest 9.2 no longer reads it (pytest-xdist#1386, open; xdist 3.8.0 is the latest). The
    groups were silently split across the workers: each started its own 23-agent business fleet
    for the tests that share one (tests/e2e/conftest.py). ``pyproject.toml`` pins pytest <9.2.
    """
    if config.getoption("dist", "no") != "loadgroup":  # xdist's workers run with "no"
        return
    xdist_version = tuple(int(p) for p in importlib.metadata.version("pytest-xdist").split(".")[:2])
    if pytest.version_tuple[:2] >= (9, 2) and xdist_version <= (3, 8):
        msg = (
            f"pytest {pytest.__version__} with pytest-xdist {'.'.join(map(str, xdist_version))} "
            "ignores xdist_group (pytest-xdist#1386): install pytest<9.2 (make the .venv again)"
        )
        raise pytest.UsageError(msg)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the migrated template databases this process made (`tests/store/conftest.py`)."""
    templates = sys.modules.get("tests.store.conftest")
    if templates is not None:
        templates.drop_templates()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first, otherwise in collection order.

    pytest-xdist hands tests to its workers in collection order, a few at a time: a minute-long
    test collected near the end runs alone while the other worker has nothing left to do.
    Started first, the long tests overlap the many short ones. (Every worker sorts the same
    collection the same way, as xdist requires.)
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
