"""The states an agent can be in, as its runtime and supervisor report them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class AgentStatus(StrEnum):
    """What an operator needs to know at a glance."""

    STARTING = "starting"
    RUNNING = "running"
    """In a model turn or a tool call."""
    IDLE = "idle"
    """Waiting for its next heartbeat, message or cron job."""
    COOLING_DOWN = "cooling_down"
    """Rate-limited by its model API; calls resume after ``until``."""
    OVER_BUDGET = "over_budget"
    """At its daily cap: no model calls until the day turns."""
    PAUSED = "paused"
    """Stopped by the no-progress circuit breaker until an operator resumes it."""
    MISCONFIGURED = "misconfigured"
    """Cannot start: a missing secret, a bad workspace; never retried until fixed."""
    FAILED = "failed"
    STOPPED = "stopped"


TIMED = frozenset({AgentStatus.COOLING_DOWN, AgentStatus.OVER_BUDGET})
"""States that end by themselves at their ``until``."""


def current(
    state: str, detail: str, until: datetime | None, now: datetime
) -> tuple[str, str, datetime | None]:
    """A reported state as it stands at ``now``: a cooldown or budget stop whose ``until`` has
    passed reads as ended (idle), never as a current state with an "until" in the past."""
    if until is None or until > now or state not in TIMED:
        return state, detail, until
    ended = state.replace("_", " ")
    return AgentStatus.IDLE.value, f"{ended} ended at {until:%H:%M:%S} UTC", None
