"""Leases with fencing: exactly one live instance of each agent across every host.

A supervisor holds an agent's lease while it runs the agent and renews it well before it ends;
every grant to a new holder increments the fencing token. The agent sends its token with every
call, and Mission Control refuses an older one, so a paused or partitioned old instance cannot
act once another has taken over. Times are Mission Control's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mcos.exceptions import Fenced, LeaseHeld, LeaseLost

DEFAULT_TTL = timedelta(seconds=15)
FENCE_HEADER = "X-Mcos-Fence"


@dataclass(frozen=True)
class Lease:
    """Who may run an agent, with which fencing token, until when."""

    agent: str
    holder: str
    host: str
    fence: int
    expires_at: datetime
    acquired_at: datetime
    renewed_at: datetime

    def live(self, now: datetime) -> bool:
        """Whether the lease still binds at ``now``."""
        return now < self.expires_at


class Grant:
    """What an acquire does to the current lease (pure: the stores apply it)."""

    REFUSE = "refuse"
    RENEW = "renew"
    NEW = "new"


def grant(current: Lease | None, holder: str, now: datetime) -> str:
    """Refuse while another holder's lease binds; renew our own; otherwise a new grant."""
    if current is None or not current.live(now):
        return Grant.NEW
    return Grant.RENEW if current.holder == holder else Grant.REFUSE


def stale(presented: int, current: Lease | None) -> bool:
    """Whether a fencing token is older than the agent's current grant."""
    return current is not None and presented < current.fence


@dataclass(frozen=True)
class FenceGuard:
    """An agent instance's write, refused by the store in the statement that makes it when the
    agent's lease has moved past the instance's fencing token: no read of the lease before
    the write, and no gap between the check and the write for a takeover to fall into.

    ``presented`` is the fence the call carried, or None: a write without one is refused
    once any lease was granted for the agent (under a supervisor every instance carries it).
    """

    agent: str
    presented: int | None

    @property
    def floor(self) -> int:
        """The write passes while the agent's lease fence is at most this."""
        return self.presented or 0

    def refuses(self, current: Lease | None) -> bool:
        """Whether ``current`` (the agent's lease, fence > 0, or None) refuses this write."""
        return current is not None and current.fence > self.floor

    def refusal(self, current: Lease) -> Fenced:
        """The error for a write ``current`` refuses, saying who runs the agent now."""
        runner = f"{current.holder} on {current.host or '?'}"
        if self.presented is None:
            msg = (
                f"a write of {self.agent} without a fencing token ({FENCE_HEADER} missing): "
                f"a fence was issued for it ({runner}, fence {current.fence}); send the "
                "instance's current fence"
            )
            return Fenced(msg, presented=None, current=current.fence, missing=FENCE_HEADER)
        msg = (
            f"fencing token {self.presented} of {self.agent} is stale: {runner} runs it now "
            f"(fence {current.fence})"
        )
        return Fenced(msg, presented=self.presented, current=current.fence)


def renew_by(ttl: timedelta) -> timedelta:
    """How often a holder renews: three tries within one TTL."""
    return ttl / 3


def kill_deadline(expires_at: datetime, margin: timedelta = timedelta(seconds=2)) -> datetime:
    """When a holder that cannot renew must have stopped its agent: before anyone may take it."""
    return expires_at - margin


def ours(lease: Lease, holder: str, fence: int, now: datetime) -> bool:
    """Whether ``holder`` still holds this live grant."""
    return lease.holder == holder and lease.fence == fence and lease.live(now)


def held_error(current: Lease) -> LeaseHeld:
    """The refusal a second supervisor gets, saying who holds the agent and until when."""
    return LeaseHeld(
        f"{current.agent} is held by {current.holder} on host {current.host or '?'} "
        f"(fence {current.fence}) until {current.expires_at:%H:%M:%S} UTC: not starting it here",
        agent=current.agent,
        holder=current.holder,
        host=current.host,
        fence=current.fence,
        expires_at=current.expires_at.isoformat(),
    )


def lost_error(agent: str, current: Lease | None, holder: str, fence: int) -> LeaseLost:
    """The answer to a renewal that came too late or from a superseded holder."""
    if current is None or current.fence == 0:
        why = "no lease was granted"
    elif current.fence != fence or current.holder != holder:
        why = f"it now belongs to {current.holder} (fence {current.fence})"
    else:
        why = f"it expired at {current.expires_at:%H:%M:%S} UTC"
    return LeaseLost(
        f"{holder} no longer holds {agent} (fence {fence}): {why}; stop the agent",
        agent=agent,
        holder=holder,
        fence=fence,
    )
