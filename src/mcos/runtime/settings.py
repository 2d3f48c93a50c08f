"""The knobs of an agent's loop (batching, claims, the breaker, cooldowns), in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from mcos.runtime.workspace import Limits


@dataclass(frozen=True)
class RuntimeSettings:
    """Knobs of the loop; the defaults suit a fleet of dozens of agents."""

    batch_window: float = 20.0
    """Seconds normal messages wait so several arrive in one turn; urgent ones never wait."""
    visibility: float = 600.0
    """Seconds a claimed message stays ours before Mission Control offers it again."""
    claim_limit: int = 20
    claim_gather: float = 0.02
    """Seconds a woken claim waits more before Mission Control answers it, so messages that
    arrive together (a burst, a fan-out) come in one answer rather than one request each."""
    breaker_turns: int = 5
    """Turns without a tool call, message or log entry that pause the agent…"""
    breaker_window: timedelta = timedelta(minutes=30)
    """…within this window."""
    flush_threshold: float = 0.85
    keep_turns: int = 6
    """Recent turns kept verbatim after a compaction."""
    recheck_reminder: timedelta = timedelta(hours=1)
    """A check still failing is put before the model again only this often (no stampede)."""
    end_on_actions: bool = True
    """End a turn after a round of successful actions (send, reply, log) instead of calling the
    model again only to hear it say it is done; read tools and errors always get a follow-up."""
    clock_every: timedelta = timedelta(minutes=10)
    """How often the offset to Mission Control's clock is measured again."""
    clock_tolerance: timedelta = timedelta(seconds=2)
    """An offset to Mission Control's clock beyond this is reported (P3 "clock unhealthy")."""
    limits: Limits = field(default_factory=Limits)
    pause_poll: float = 5.0
    """Seconds between looks at whether an operator resumed a paused agent."""
    stop_grace: float = 20.0
    """Seconds a stop waits for a model turn in progress to finish."""
    paused_recheck: timedelta = timedelta(minutes=5)
    """A paused agent hands its claimed messages back for this long (no attempt used)."""
    unavailable_base: timedelta = timedelta(seconds=30)
    """First wait after the model stayed unavailable (5xx/529) through the provider's retries;
    it doubles with each further failure…"""
    unavailable_cap: timedelta = timedelta(minutes=10)
    """…up to this."""
    cron_retry: timedelta = timedelta(minutes=1)
    """A cron run the model failed (after its own retries) is tried again no sooner."""
