"""When a Discord bot may IDENTIFY again: backing off so a crash loop cannot burn the day's budget.

Discord allows a bot token about 1000 IDENTIFYs a day (``session_start_limit``); when they run
out, Discord ends every session of the bot and resets its token. A bot that crashes and
restarts every few seconds re-identifies on each start and reaches that limit within hours —
the field report behind this module. RESUMEs are free; only IDENTIFYs count.

The rule is a plain function of the token's recent IDENTIFY times, the limit Discord last
reported, and a time passed in. The first couple of IDENTIFYs in an hour are free; after that
the wait doubles from 5 s to a 15-minute cap, counted from the last IDENTIFY, so a bot that ran
for hours restarts at once while a crash loop slows down. When Discord says only a few session
starts remain (≤ 5 % of the total), the wait lasts until Discord's reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

FREE_PER_HOUR = 2
"""IDENTIFYs within an hour that need no wait (a deploy plus one honest restart)."""
BASE_WAIT = 5.0
"""Seconds of wait for the first IDENTIFY past the free ones; doubles with each further one."""
MAX_WAIT = 15 * 60.0
"""The cap of the exponential back-off, in seconds."""
LOW_SHARE = 0.05
"""At or below this share of ``total`` remaining, wait for Discord's reset."""
WINDOW = timedelta(hours=1)
"""The window the back-off counts IDENTIFYs in."""
KEEP = timedelta(days=1)
"""How long an IDENTIFY is worth remembering: Discord's own limit counts per day."""


@dataclass(frozen=True)
class SessionStartLimit:
    """What ``GET /gateway/bot`` last said about the token's IDENTIFY budget."""

    total: int
    remaining: int
    reset_after: float
    """Seconds from ``seen_at`` until ``remaining`` is back to ``total`` (Discord sends ms)."""
    seen_at: datetime


@dataclass(frozen=True)
class IdentifyWait:
    """How long to wait before the next IDENTIFY, and why (for the log line)."""

    seconds: float
    recent: int
    """IDENTIFYs of this token in the last hour."""
    reason: str
    """``free``, ``backoff`` or ``session_start_limit``."""


def recent_identifies(history: Iterable[datetime], now: datetime) -> list[datetime]:
    """The IDENTIFY times worth keeping at ``now`` (the last day), oldest first."""
    return sorted(t for t in history if now - KEEP < t <= now)


def identify_wait(
    history: Iterable[datetime], now: datetime, limit: SessionStartLimit | None = None
) -> IdentifyWait:
    """How long to wait at ``now`` before this token's next IDENTIFY.

    ``history``: the times of the token's earlier IDENTIFYs (any order; older ones are
    ignored). ``limit``: Discord's last word on the budget, if known.
    """
    hour = [t for t in history if now - WINDOW < t <= now]
    recent = len(hour)
    seconds, reason = 0.0, "free"
    if recent >= FREE_PER_HOUR:
        backoff = min(MAX_WAIT, BASE_WAIT * 2.0 ** (recent - FREE_PER_HOUR))
        since_last = (now - max(hour)).total_seconds()
        seconds, reason = max(0.0, backoff - since_last), "backoff"
    if limit is not None and limit.total > 0 and limit.remaining <= limit.total * LOW_SHARE:
        until_reset = limit.reset_after - (now - limit.seen_at).total_seconds()
        if until_reset > seconds:
            seconds, reason = until_reset, "session_start_limit"
    return IdentifyWait(seconds=seconds, recent=recent, reason=reason)
