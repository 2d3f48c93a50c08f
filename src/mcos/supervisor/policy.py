"""Restart rules: back off with jitter, give up on a crash loop, never retry a bad config.

Plain functions over plain data, time passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mcos.exceptions import EX_CONFIG

EX_FENCED = 75
"""An agent exits with this when Mission Control fenced it out (another instance took over)."""


class Exit(StrEnum):
    """What an agent's exit means for its supervisor."""

    STOPPED = "stopped"
    """It was asked to stop (or stopped cleanly): nothing to do."""
    MISCONFIGURED = "misconfigured"
    """Exit 78: a missing secret or bad workspace; retrying cannot help."""
    FENCED = "fenced"
    """Exit 75: another instance holds the agent now; do not restart it here."""
    CRASHED = "crashed"
    """Anything else: restart after a backoff."""


def classify_exit(code: int | None, *, stopping: bool) -> Exit:
    """The meaning of an exit code (negative: killed by that signal)."""
    if stopping or code == 0:
        return Exit.STOPPED
    if code == EX_CONFIG:
        return Exit.MISCONFIGURED
    if code == EX_FENCED:
        return Exit.FENCED
    return Exit.CRASHED


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff with jitter, and the crash-loop limit."""

    first: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(seconds=60)
    max_restarts: int = 5
    window: timedelta = timedelta(minutes=5)

    def backoff(self, restarts: int, unit: float) -> timedelta:
        """Wait before restart number ``restarts`` (1-based): 1 s doubling to 60 s, then
        scaled by a random draw in [0.5, 1.0) so a fleet does not restart in step."""
        base: timedelta = min(self.first * (2 ** max(restarts - 1, 0)), self.cap)
        return base * (0.5 + unit / 2)

    def failed(self, crashes: Sequence[datetime], now: datetime) -> bool:
        """More than ``max_restarts`` crashes within the window: stop trying."""
        recent = [t for t in crashes if now - t <= self.window]
        return len(recent) > self.max_restarts


def watchdog_expired(last_alive: datetime, now: datetime, period: timedelta) -> bool:
    """Whether an agent has been silent for longer than its watchdog period (hung)."""
    return now - last_alive > period
