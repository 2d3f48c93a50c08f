"""Messages and their delivery rules.

A message is stored once; each recipient inbox (one for an agent or a human, one per subscriber
for a topic) gets its own *delivery*, which moves through ``queued → claimed → acked`` or, after
too many attempts, ``dead``. The functions here decide ordering, retry delays and what a claim
may take; the stores apply them in SQL and the property tests check both agree.

A claim ends in one of three ways. *Ack*: handled. *Nack*: the recipient tried and failed; the
claim counts as an attempt and at ``max_attempts`` the delivery is dead-lettered. *Defer*: the
recipient could not try (its model is rate limited or down, it is over budget, paused, cooling
down or shutting down); the claim's attempt is given back and the delivery waits until a
not-before time, however many times that happens. The only other way out of a queue is the
sender's optional expiry (``expires_at``), dead-lettered with the reason ``expired``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from mcos.exceptions import InvalidRequest, in_batch


class MessageKind(StrEnum):
    """What a message is for (SPEC §2)."""

    DIRECTIVE = "directive"
    REQUEST = "request"
    REPLY = "reply"
    REPORT = "report"
    ALERT = "alert"


class Priority(StrEnum):
    """Delivery order: higher priorities are claimed first, FIFO within one priority."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """The integer stored in the database; larger is claimed first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        """The priority stored as ``rank``."""
        return _RANK_PRIORITY[rank]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.URGENT: 3}
_RANK_PRIORITY = {v: k for k, v in _PRIORITY_RANK.items()}


class RecipientKind(StrEnum):
    """Who a message is addressed to; names are unique across the three kinds."""

    AGENT = "agent"
    TOPIC = "topic"
    HUMAN = "human"


class DeliveryState(StrEnum):
    """Where one delivery of a message to one inbox stands."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    ACKED = "acked"
    DEAD = "dead"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long claims last, how retries back off and when a delivery is dead-lettered."""

    max_attempts: int = 5
    """Deliveries claimed this many times without an ack go to the dead-letter list."""
    visibility: timedelta = timedelta(seconds=30)
    """Default time a claimant has to ack before the delivery is offered again."""
    retry_base: timedelta = timedelta(seconds=1)
    """First nack delay; it doubles with each attempt."""
    retry_cap: timedelta = timedelta(minutes=5)
    """Longest nack delay."""

    def retry_delay(self, attempts: int) -> timedelta:
        """Delay before a delivery nacked after ``attempts`` claims becomes claimable again."""
        exponent = max(attempts - 1, 0)
        # 2**30 seconds already exceeds any sensible cap; keep the arithmetic bounded.
        delay: timedelta = self.retry_base * (2 ** min(exponent, 30))
        return min(delay, self.retry_cap)

    def exhausted(self, attempts: int) -> bool:
        """Whether a delivery that has been claimed ``attempts`` times must be dead-lettered."""
        return attempts >= self.max_attempts


@dataclass(frozen=True)
class NewMessage:
    """A message as a sender submits it; the server stamps sender and time."""

    sender: str
    recipient: str
    kind: MessageKind = MessageKind.REQUEST
    priority: Priority = Priority.NORMAL
    subject: str = ""
    body: str = ""
    reply_to: int | None = None
    idempotency_key: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    """Past this instant an undelivered copy is dead-lettered as ``expired`` (never a default)."""
    ttl: timedelta | None = None
    """The same as a span from when Mission Control stores the message (its clock, not ours)."""

    def content_hash(self) -> str:
        """Digest of everything the sender chose, to tell a true repeat from a key reuse."""
        payload: dict[str, object] = {
            "recipient": self.recipient,
            "kind": str(self.kind),
            "priority": str(self.priority),
            "subject": self.subject,
            "body": self.body,
            "reply_to": self.reply_to,
            "meta": self.meta,
        }
        if self.expires_at is not None:  # absent from older hashes, so they stay valid
            payload["expires_at"] = self.expires_at.isoformat()
        if self.ttl is not None:
            payload["ttl"] = self.ttl.total_seconds()
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class Message:
    """A stored message."""

    id: int
    sender: str
    recipient: str
    recipient_kind: RecipientKind
    kind: MessageKind
    priority: Priority
    subject: str
    body: str
    thread_id: int
    reply_to: int | None
    idempotency_key: str | None
    created_at: datetime
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One delivery of a message to one inbox."""

    id: int
    inbox: str
    state: DeliveryState
    attempts: int
    visible_at: datetime
    deadline: datetime | None
    receipt: str | None
    last_error: str | None
    message: Message
    deferrals: int = 0
    """Claims handed back because the recipient could not act (they used no attempt)."""
    expires_at: datetime | None = None
    """The sender's deadline for this delivery, if any."""


@dataclass(frozen=True)
class SendResult:
    """What a send stored: the message, its deliveries, and whether it was new."""

    message: Message
    deliveries: int
    created: bool


@dataclass(frozen=True)
class DeliveryView:
    """The fields of a delivery that decide whether it can be claimed, for the pure rules."""

    id: int
    priority_rank: int
    state: DeliveryState
    attempts: int
    visible_at: datetime
    deadline: datetime | None


def claimable(d: DeliveryView, now: datetime) -> bool:
    """Whether a claim at ``now`` may take ``d``: a visible queued delivery or a lapsed claim."""
    if d.state is DeliveryState.QUEUED:
        return d.visible_at <= now
    if d.state is DeliveryState.CLAIMED:
        return d.deadline is not None and d.deadline <= now
    return False


def claim_order(d: DeliveryView) -> tuple[int, int]:
    """Sort key of claims: urgent first, then oldest first (ids grow with send order)."""
    return (-d.priority_rank, d.id)


def lapsed_into_dead_letter(d: DeliveryView, now: datetime, policy: DeliveryPolicy) -> bool:
    """A lapsed claim that has used every attempt is dead-lettered instead of redelivered."""
    return (
        d.state is DeliveryState.CLAIMED
        and d.deadline is not None
        and d.deadline <= now
        and policy.exhausted(d.attempts)
    )


EXPIRED = "expired"
"""The dead-letter reason of a delivery whose sender's expiry passed."""
MAX_DEFERRAL = timedelta(days=7)
"""The furthest a deferral may push a delivery (a longer cause is re-deferred when it lasts)."""


def check_expiries(messages: Sequence[NewMessage], now: datetime) -> None:
    """Refuse a send whose ``expires_at`` has already passed (it could only be dead-lettered
    at once, and would page people for nothing), naming the item of a batch."""
    for i, m in enumerate(messages):
        if m.expires_at is not None and m.expires_at <= now:
            error = InvalidRequest(
                f"expires_at {m.expires_at.isoformat()} has already passed (Mission Control's "
                f"clock reads {now.isoformat()}): give a later time or a ttl_seconds",
                field="expires_at",
            )
            raise error if len(messages) == 1 else in_batch(error, i)


def expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a delivery with the sender's deadline ``expires_at`` has run out of time."""
    return expires_at is not None and expires_at <= now


def defer_until(
    now: datetime, not_before: datetime, max_ahead: timedelta = MAX_DEFERRAL
) -> datetime:
    """When a deferred delivery becomes claimable: ``not_before``, never in the past.

    Raises ``ValueError`` naming the problem when ``not_before`` is further than ``max_ahead``.
    """
    if not_before.tzinfo is None:
        msg = f"not_before {not_before.isoformat()} has no time zone; give it in UTC"
        raise ValueError(msg)
    if not_before - now > max_ahead:
        msg = (
            f"not_before {not_before.isoformat()} is more than {max_ahead} ahead of Mission "
            f"Control's clock ({now.isoformat()}); defer again when the cause lasts"
        )
        raise ValueError(msg)
    return max(now, not_before)


def attempts_after_deferral(attempts: int) -> int:
    """The attempt count once a claim is deferred: the claim's own attempt is given back."""
    return max(attempts - 1, 0)


def dead_reason(attempts: int, expires_at: datetime | None, now: datetime) -> str:
    """Why a delivery goes to the dead-letter list: its expiry, else its attempts."""
    if expired(expires_at, now):
        return EXPIRED
    return f"not acknowledged after {attempts} attempts"


def next_utc_day(now: datetime) -> datetime:
    """The next UTC midnight after ``now`` (when daily budgets and spend limits reset)."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def unavailable_backoff(
    failures: int, base: timedelta = timedelta(seconds=30), cap: timedelta = timedelta(minutes=10)
) -> timedelta:
    """How long to wait after the ``failures``-th consecutive "model unavailable" (5xx/529 after
    the provider's retries): ``base`` doubling each time, at most ``cap``."""
    exponent = min(max(failures - 1, 0), 30)
    delay: timedelta = base * (2**exponent)
    return min(delay, cap)


def resume_at(until: datetime, length: timedelta, u: float) -> datetime:
    """When a loop cooling down until ``until`` (for ``length``) wakes: just after it, with a
    jitter of at most 5 % of the cooldown and at most half a second (``u`` in [0, 1))."""
    jitter = min(length * 0.05, timedelta(seconds=0.5)) * min(max(u, 0.0), 1.0)
    return until + max(jitter, timedelta(0))
