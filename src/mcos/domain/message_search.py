"""Finding messages: the filters the dashboard and ``GET /v1/messages`` offer, and what a hit
carries (the message and where its copies stand), so both stores answer the same question."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mcos.domain.messages import Message, MessageKind, Priority
from mcos.exceptions import InvalidRequest

MAX_PAGE = 200


class MessageState(StrEnum):
    """Where a message's copies stand, worst first: one dead copy makes the message ``dead``."""

    DEAD = "dead"
    CLAIMED = "claimed"
    QUEUED = "queued"
    ACKED = "acked"
    """Every copy was handled (acknowledged)."""
    UNROUTED = "unrouted"
    """No copy was ever queued: a message to a topic nobody subscribes to."""


@dataclass(frozen=True)
class MessageSearch:
    """Filters, all optional and combined with AND; newest first, ``before`` pages back.

    ``text`` matches the subject or the body, case-insensitively, as a substring (SQL ``LIKE``
    on SQLite, ``ILIKE`` on PostgreSQL; ``%`` and ``_`` are matched literally).
    """

    text: str | None = None
    sender: str | None = None
    recipient: str | None = None
    kind: MessageKind | None = None
    priority: Priority | None = None
    state: MessageState | None = None
    since: datetime | None = None
    until: datetime | None = None
    thread_id: int | None = None
    before: int | None = None
    """Only messages with a smaller id (the last id of the previous page)."""
    limit: int = 50

    def __post_init__(self) -> None:
        # One more than a page is allowed: a caller asks for it to learn whether a next page exists.
        if not 1 <= self.limit <= MAX_PAGE + 1:
            raise InvalidRequest(f"limit must be 1..{MAX_PAGE}, not {self.limit}", field="limit")
        for name in ("since", "until"):  # a time without a zone is UTC, on both stores
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.since and self.until and self.since > self.until:
            raise InvalidRequest("since is after until", field="since")

    def like(self) -> str | None:
        """``text`` as a LIKE pattern (escape character ``\\``)."""
        if not self.text:
            return None
        escaped = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"%{escaped}%"


@dataclass(frozen=True)
class MessageHit:
    """One message found, with the state of its copies."""

    message: Message
    state: MessageState
