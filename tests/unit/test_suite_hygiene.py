"""The suite's own guarantees: a timed-out test still tears down, and leaves no process-wide
state behind; the tests synchronise by waiting for state, not by sleeping."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import discord.http
import pytest
from discord.gateway import DiscordWebSocket

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

HANGING = """
import threading  # noqa: E402
from pathlib import Path

import discord.http
import pytest

from tests.conftest import _restore_discord_globals  # noqa: F401 (the autouse fixture)


@pytest.fixture
def server(tmp_path_factory):
    yield "a server"
    Path(MARK).write_text("torn down")


@pytest.mark.timeout(2)
def test_hangs(server):
    discord.http.Route.BASE = "http://127.0.0.1:1/api/v10"  # a fake that dies with the test
    threading.Event().wait()  # hangs until pytest-timeout fires


def test_next_one_sees_discord_as_it_was():
    assert discord.http.Route.BASE == ORIGINAL
"""


def _suite_option(name: str) -> str:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return str(config["tool"]["pytest"]["ini_options"][name])


def _run_hanging_test(pytester: pytest.Pytester, method: str) -> tuple[pytest.RunResult, Path]:
    mark = pytester.path / "teardown-ran"
    pytester.makepyfile(
        test_hang=(
            f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
            f"MARK = {str(mark)!r}\nORIGINAL = {discord.http.Route.BASE!r}\n" + HANGING
        )
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:xdist", "-o", f"timeout_method={method}"
    )
    return result, mark


class TestATimedOutTest:
    """The suite's timeout method fails the test and still runs its fixtures' teardown."""

    def test_the_suite_uses_the_signal_method(self) -> None:
        """``thread`` would ``os._exit`` the worker: no teardown, servers and processes leak."""
        assert _suite_option("timeout_method") == "signal"

    def test_teardown_runs_and_discord_is_restored(self, pytester: pytest.Pytester) -> None:
        """The hung test fails, its fixture is torn down, the next test sees discord.py's
        pristine API base (the autouse fixture of tests/conftest.py restored it)."""
        result, mark = _run_hanging_test(pytester, _suite_option("timeout_method"))
        result.assert_outcomes(passed=1, failed=1)
        assert "Timeout" in result.stdout.str()
        assert mark.read_text() == "torn down"

    def test_the_thread_method_would_leak(self, pytester: pytest.Pytester) -> None:
        """The check above can fail: with ``thread`` the run dies and no teardown runs."""
        result, mark = _run_hanging_test(pytester, "thread")
        assert result.ret != 0
        assert not mark.exists()


def test_this_process_has_discord_pristine() -> None:
    """Whatever ran before in this worker, discord.py points at Discord."""
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert DiscordWebSocket.DEFAULT_GATEWAY is not None


def test_no_fixed_sleeps_in_tests() -> None:
    """Tests wait for state (tests/waiting.py), not for time: no ``sleep(n)`` with n > 0,
    except in fakes that model a real service and in a few reviewed places (listed here)."""
    allowed = {
        # fakes modelling a real service's long-poll or a slow tool
        "tests/fakes/telegram_server.py",
        "tests/fakes/mcp_http_server.py",
        # a child process killed long before it ends; a fake MCP server that never answers
        "tests/store/consumer_proc.py",
        "tests/runtime/test_mcp.py",
        # an injected sleep recording the channel's backoff; a poller script's retry pause
        "tests/channels/test_telegram.py",
        "tests/supervisor/test_faults.py",
        # the API tests' uvicorn polling its own stop flag (uvicorn's 0.1 s tick, shortened)
        "tests/api/conftest.py",
        # this file names the pattern
        "tests/unit/test_suite_hygiene.py",
    }
    pattern = re.compile(r"\bsleep\((?!0\))[0-9]")  # a literal wait; sleep(0) only yields
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if str(path.relative_to(REPO)) not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], "fixed sleeps in tests (wait with tests/waiting.py):\n" + "\n".join(found)
