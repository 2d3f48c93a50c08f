"""tests/waiting.py: waits return as soon as the state is there and fail naming what they waited
for; ``stays`` fails at the first poll where the state no longer holds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.waiting import astays, eventually, past, stays, wait_until


class TestWaitUntil:
    """Poll until truthy; return the value; fail with what was awaited and the last value."""

    def test_returns_the_value_as_soon_as_it_is_there(self) -> None:
        """The value that satisfied the wait comes back, well before the deadline."""
        started = time.monotonic()
        seen = iter([None, 0, [], "ready"])
        assert wait_until("ready", lambda: next(seen), timeout=30, interval=0.01) == "ready"
        assert time.monotonic() - started < 10

    def test_fails_naming_what_and_the_last_value(self) -> None:
        """The failure says what was awaited and what was seen last."""
        with pytest.raises(
            pytest.fail.Exception, match=r"waiting for the page \(last seen: \[\]\)"
        ):
            wait_until("the page", lambda: [], timeout=0.2)

    def test_a_callable_what_is_asked_at_failure_time(self) -> None:
        """A callable ``what`` reports the state when the wait gave up."""
        state = {"n": 0}

        def check() -> bool:
            state["n"] += 1
            return False

        with pytest.raises(pytest.fail.Exception, match=r"after \d+ polls"):
            wait_until(lambda: f"after {state['n']} polls", check, timeout=0.2, interval=0.01)

    def test_an_exception_in_the_check_is_not_swallowed(self) -> None:
        """A check that raises ends the wait at once with its own error."""

        def broken() -> bool:
            raise RuntimeError("the server exited")

        started = time.monotonic()
        with pytest.raises(RuntimeError, match="the server exited"):
            wait_until("never", broken, timeout=30)
        assert time.monotonic() - started < 10


class TestStays:
    """Hold for a window; fail at the first poll where the state broke."""

    def test_holds_for_the_window(self) -> None:
        """A state that holds passes after the window."""
        stays("true", lambda: True, duration=0.1, interval=0.01)

    def test_fails_at_the_first_break_not_at_the_end(self) -> None:
        """The failure comes when the state breaks, not when the window ends."""
        started = time.monotonic()
        with pytest.raises(pytest.fail.Exception, match="no fourth post stopped holding"):
            stays("no fourth post", lambda: time.monotonic() - started < 0.05, duration=30)
        assert time.monotonic() - started < 10


class TestAsync:
    """The async forms take plain or async checks."""

    async def test_eventually_with_an_async_check(self) -> None:
        """An async check is awaited each poll."""
        calls = []

        async def check() -> int:
            calls.append(1)
            return len(calls) if len(calls) >= 3 else 0

        assert await eventually("three polls", check, interval=0.01) == 3

    async def test_eventually_fails(self) -> None:
        """A state that never comes fails the test, naming it."""
        with pytest.raises(pytest.fail.Exception, match="waiting for the mail"):
            await eventually("the mail", lambda: None, timeout=0.2)

    async def test_astays_fails_at_the_first_break(self) -> None:
        """An async ``stays`` fails when its state breaks."""
        seen = iter([True, True, False])
        with pytest.raises(pytest.fail.Exception, match="stopped holding"):
            await astays("quiet", lambda: next(seen), duration=30, interval=0.01)

    async def test_past_waits_for_the_judging_clock(self) -> None:
        """``past`` returns once the given clock is beyond the instant."""
        instant = datetime.now(UTC) + timedelta(milliseconds=50)

        async def now() -> datetime:
            return datetime.now(UTC)

        await past(now, instant)
        assert datetime.now(UTC) > instant
