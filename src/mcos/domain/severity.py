"""Severity on the bus: which agent-sent messages may arrive as alarms.

Only Mission Control's gates turn an observation into an alarm for the fleet (a confirmed
incident). An agent's own message at priority ``urgent`` or ``high`` is a claim, and these pure
rules bound how far it can carry:

- to a **topic**, or to **several recipients** at once (a batch naming more than one, or more than
  ``fanout_max`` distinct agents within ``fanout_window``), it is the governed action
  :data:`BROADCAST_ACTION` of the authority matrix (default: the orchestrator or a human alone,
  anyone else with an approved request);
- **directly** to one agent, it is allowed only along the chain of command (to the sender's
  manager, ``reports_to``, or to an agent that reports to the sender), or as a reply to a
  message that recipient sent it, at no higher priority than that message.
  A message to a human is never an alarm for the fleet and is not limited here.

Humans and operators are not limited. Messages at ``normal`` or ``low`` priority pass these rules;
the per-pair limit (:func:`pair_over`) applies to every priority.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mcos.domain.messages import Priority, RecipientKind

BROADCAST_ACTION = "broadcast_urgent"
"""The governed action of sending an alarm (urgent/high) to a topic or to several recipients."""
ALARM_PRIORITIES = frozenset({Priority.URGENT, Priority.HIGH})
RESERVED_META = frozenset({"incident", "severity", "gate"})
"""Meta keys only Mission Control sets: they mark an incident it confirmed or a gate's request."""


def is_alarm(priority: Priority) -> bool:
    """Whether a message at ``priority`` would arrive as an alarm (wakes its recipient at once)."""
    return priority in ALARM_PRIORITIES


@dataclass(frozen=True)
class Answered:
    """The message a reply answers: who sent it, to whom, and at which priority."""

    sender: str
    recipient: str
    priority: Priority


def direct_alarm_refusal(
    sender: str,
    reports_to: str | None,
    recipient: str,
    recipient_kind: RecipientKind,
    priority: Priority,
    answered: Answered | None,
    reports: Collection[str] = (),
) -> str | None:
    """Why an agent may not send this alarm directly to one recipient; None when it may.

    Only alarms to an agent are judged: allowed along the chain of command (to the sender's
    manager, or to one of its own ``reports``), or as a reply to that agent's own message at
    no higher priority than the message answered.
    """
    if not is_alarm(priority) or recipient_kind is not RecipientKind.AGENT:
        return None
    if recipient == reports_to or recipient in reports:
        return None
    if (
        answered is not None
        and answered.sender == recipient
        and answered.recipient == sender
        and priority.rank <= answered.priority.rank
    ):
        return None
    return (
        f"an agent sends {priority.value} messages to another agent only along its chain of "
        f"command (its manager {reports_to or '(none)'} or its own reports) or as a reply to "
        f"that agent's message of at least that priority; {recipient} is neither: send it at "
        "normal priority, report an incident for the gate, or ask for " + BROADCAST_ACTION
    )


def fanout_over(
    recent: Sequence[tuple[datetime, str]],
    recipients: Sequence[str],
    now: datetime,
    window: timedelta,
    limit: int,
) -> int | None:
    """The distinct agents alarmed within ``window`` if sending to ``recipients`` passes ``limit``.

    ``recent`` holds the sender's earlier direct alarms as (when, recipient). None when the
    fan-out stays within the limit.
    """
    seen = {r for at, r in recent if now - at < window}
    seen.update(recipients)
    return len(seen) if len(seen) > limit else None


def pair_over(
    recent: Sequence[tuple[datetime, int]],
    now: datetime,
    window: timedelta,
    limit: int,
    adding: int = 1,
) -> int | None:
    """How many messages one sender would have sent one recipient within ``window``, if that
    passes ``limit``; None otherwise. ``recent`` holds (when, how many) counts."""
    count = sum(n for at, n in recent if now - at < window) + adding
    return count if count > limit else None


@dataclass(frozen=True)
class SendLimits:
    """Per-sender limits on agents' messages (the fleet file's ``[messaging]``)."""

    fanout_max: int = 3
    """Distinct agents one agent may alarm (urgent/high, directly) within ``fanout_window``;
    more is a broadcast (:data:`BROADCAST_ACTION`)."""
    fanout_window: timedelta = timedelta(minutes=10)
    pair_max: int = 30
    """Messages one agent may send one recipient within ``pair_window`` (any priority)."""
    pair_window: timedelta = timedelta(minutes=10)
