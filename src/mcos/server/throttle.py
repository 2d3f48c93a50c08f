"""Throttling of failed sign-ins: a moving window of failures per client address and per token
prefix (the ``limits`` package, in this process's memory).

Only failures count: an operator who signs in right is never slowed down. Past the limit every
attempt from that client, or naming that token prefix, is refused with 429 and ``Retry-After``
until the oldest failure leaves the window — whether the attempt would have succeeded or not, so
a guesser learns nothing more. Each server process keeps its own window (a fleet of ``--workers``
processes allows at most the limit per process).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class FailureThrottle:
    """Counts failures per (kind, key) and says how long a refused caller must wait."""

    def __init__(self, **limits: str) -> None:
        """``limits``: a kind of key → a rate such as ``"10/minute"`` (``limits`` notation)."""
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {kind: parse(rate) for kind, rate in limits.items()}

    def retry_after(self, **keys: str | None) -> int | None:
        """Seconds until the first of ``keys`` (kind=key) may try again; None: it may now."""
        wait: float | None = None
        for kind, key in keys.items():
            item = self._items[kind]
            if key is None or self._limiter.test(item, kind, key):
                continue
            stats = self._limiter.get_window_stats(item, kind, key)
            wait = max(wait or 0.0, stats.reset_time - time.time())
        return None if wait is None else max(1, math.ceil(wait))

    def failed(self, **keys: str | None) -> None:
        """Count one failure against each of ``keys``."""
        for kind, key in keys.items():
            if key is not None:
                self._limiter.hit(self._items[kind], kind, key)
