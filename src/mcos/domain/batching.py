"""When a cron job that can wait sends its model calls as batches, and how often to look.

A job with a ``deadline`` may send each model call as a one-request batch (Anthropic's Message
Batches bill half the standard rates) while the deadline leaves room: more than the job's
``batch_window`` before it. The runtime looks at a parked batch at a backoff — most batches end
within the hour, some take many — and gives up on it at ``deadline - batch_window``: the batch
is canceled and the job finished with direct calls, in time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_LOOK = timedelta(seconds=30)
"""The first look at a batch comes this long after it is sent…"""
LONGEST_GAP = timedelta(minutes=10)
"""…each gap doubles, up to this."""


def batch_until(deadline: datetime, window: timedelta, now: datetime) -> datetime | None:
    """Until when a call sent now may wait for its batch (``deadline - window``); None when
    that is not in the future: the call is made directly."""
    give_up = deadline - window
    return give_up if now < give_up else None


def next_look(now: datetime, looks: int, give_up: datetime) -> datetime:
    """When to look at a batch again after ``looks`` looks found it in progress: the backoff,
    never past the time to give up on it."""
    gap = min(LONGEST_GAP, FIRST_LOOK * (1 << min(looks, 16)))
    return min(now + gap, give_up)
