"""The states an agent can be in, as its runtime and supervisor report them."""

from __future__ import annotations

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
