"""Rate limits learnt once per key: an upstream 429 makes every caller on that key wait.

Agents that share a key share its rate limit. The first 429 tells Mission Control how long
the provider wants quiet (``retry-after-ms``, ``retry-after``, or the ``…-reset`` times the
provider sends); until then each call on that key is answered 429 at once, with the remaining
seconds, and never reaches the provider. Kept in this process's memory: with several Mission
Control workers each learns the limit from its own first 429.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

DEFAULT_WAIT = timedelta(seconds=60)
"""How long to wait after a 429 that names no time."""
MAX_WAIT = timedelta(hours=1)
"""A wait longer than this is taken as a wrong header, not a reason to stop for a day."""


def _timestamp(value: str) -> datetime | None:
    """An RFC 3339 time (``2026-12-02T21:00:05Z``) or an HTTP date, aware; None if neither."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    return when if when.tzinfo is not None else None


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def wait_after_429(headers: Mapping[str, str], now: datetime) -> timedelta:
    """How long a provider's 429 asks every caller of its key to wait.

    ``retry-after-ms`` (milliseconds) is the most precise; then ``retry-after`` (seconds, or an
    HTTP date); then Anthropic's ``anthropic-ratelimit-*-reset`` times of the limits that ran out
    (``…-remaining: 0``), the latest of them; else a minute. Capped at an hour.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    wait: timedelta | None = None
    if (ms := _seconds(lowered.get("retry-after-ms", ""))) is not None:
        wait = timedelta(milliseconds=ms)
    elif "retry-after" in lowered:
        value = lowered["retry-after"]
        if (seconds := _seconds(value)) is not None:
            wait = timedelta(seconds=seconds)
        elif (when := _timestamp(value)) is not None:
            wait = when - now
    if wait is None:
        resets = []
        for name, value in lowered.items():
            if not (name.startswith("anthropic-ratelimit-") and name.endswith("-reset")):
                continue
            remaining = lowered.get(name.removesuffix("-reset") + "-remaining")
            when = _timestamp(value)
            if when is not None and remaining in (None, "0"):
                resets.append(when - now)
        wait = max(resets) if resets else None
    if wait is None:
        return DEFAULT_WAIT
    return min(max(wait, timedelta(0)), MAX_WAIT)


class Cooldowns:
    """Until when each key (by its fingerprint) must not be used."""

    def __init__(self) -> None:
        self._until: dict[str, datetime] = {}

    def hold(self, key: str, until: datetime) -> None:
        """Nobody calls with ``key`` before ``until`` (a later time wins over an earlier one)."""
        current = self._until.get(key)
        if current is None or until > current:
            self._until[key] = until

    def remaining(self, key: str, now: datetime) -> timedelta | None:
        """How long ``key`` must still rest, or None when it may be used."""
        until = self._until.get(key)
        if until is None:
            return None
        if until <= now:
            del self._until[key]
            return None
        return until - now
