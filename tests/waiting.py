"""How tests wait: for observable state, with a deadline — never for a fixed time.

``wait_until`` / ``eventually`` poll a check until it holds and fail the test with what was
awaited (and the last value seen) when the deadline passes. ``stays`` / ``astays`` are their
mirror for "nothing happens": the check must hold at every poll over a window, failing at the
first poll where it does not. The polling is tenacity's (see tests/README.md).

The deadlines are generous on purpose (the suite must pass on a loaded 2-core machine): a
passing test returns as soon as the state is there, so a long deadline costs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import pytest
from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

__all__ = ["astays", "eventually", "past", "stays", "wait_until"]

T = TypeVar("T")


def _falsy(value: object) -> bool:
    return not value


def _say(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def wait_until(
    what: str | Callable[[], str],
    check: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail after ``timeout``.

    ``what`` names what is awaited, for the failure; a callable is asked at failure time (to
    include the state seen then).
    """
    retrying = Retrying(
        retry=retry_if_result(_falsy), stop=stop_after_delay(timeout), wait=wait_fixed(interval)
    )
    try:
        return retrying(check)
    except RetryError as exc:
        last = exc.last_attempt.result() if not exc.last_attempt.failed else None
        pytest.fail(f"timed out after {timeout:g}s waiting for {_say(what)} (last seen: {last!r})")


async def eventually(
    what: str | Callable[[], str],
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.02,
) -> T:
    """Async ``wait_until``: ``check`` may be a plain or an async callable."""

    async def attempt() -> T:
        value = check()
        if inspect.isawaitable(value):
            return await value
        return value

    retrying = AsyncRetrying(
        retry=retry_if_result(_falsy), stop=stop_after_delay(timeout), wait=wait_fixed(interval)
    )
    try:
        result: T = await retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.result() if not exc.last_attempt.failed else None
        pytest.fail(f"timed out after {timeout:g}s waiting for {_say(what)} (last seen: {last!r})")
    return result


def _window(duration: float, interval: float, **kwargs: Any) -> dict[str, Any]:
    # Retry while the check holds; stop (successfully) when the window is over.
    return {
        "retry": retry_if_result(bool),
        "stop": stop_after_delay(duration),
        "wait": wait_fixed(interval),
        "retry_error_callback": lambda _state: True,
        **kwargs,
    }


def stays(what: str, check: Callable[[], object], duration: float, interval: float = 0.05) -> None:
    """Fail as soon as ``check`` is falsy at any poll during ``duration`` seconds.

    For asserting that something does *not* happen (no restart, no further send): give a window
    longer than the time the unwanted thing would take to show, and name why in ``what``.
    """
    seen: list[object] = []

    def recorded() -> object:
        value = check()
        seen.append(value)
        return value

    Retrying(**_window(duration, interval))(recorded)
    if not seen[-1]:
        pytest.fail(f"{what} stopped holding within {duration:g}s (seen: {seen[-1]!r})")


async def astays(
    what: str,
    check: Callable[[], object | Awaitable[object]],
    duration: float,
    interval: float = 0.02,
) -> None:
    """Async ``stays``: ``check`` may be a plain or an async callable."""
    seen: list[object] = []

    async def recorded() -> object:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        seen.append(value)
        return value

    await AsyncRetrying(**_window(duration, interval))(recorded)
    if not seen[-1]:
        pytest.fail(f"{what} stopped holding within {duration:g}s (seen: {seen[-1]!r})")


async def past(now: Callable[[], Awaitable[datetime]], instant: datetime) -> None:
    """Wait until a clock (a store's ``now``, Mission Control's time) is past ``instant``.

    For tests about deadlines and expiry: they wait for the clock that judges the deadline,
    not for a guessed wall-clock time.
    """

    async def over() -> bool:
        return await now() > instant

    await eventually(f"the clock to pass {instant.isoformat()}", over, timeout=30)
