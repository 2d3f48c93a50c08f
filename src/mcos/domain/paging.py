"""Pages to humans: urgent items, P0 incidents and approval requests reach a person's channel.

A page is keyed by what it is about (``approval:17``, ``incident:4:P0``, ``channel:mail:…``),
so the same subject pages one person once however many times it is raised; the person's
acknowledgement is recorded against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PageKind(StrEnum):
    """Why a person is paged."""

    URGENT = "urgent"
    P0 = "p0"
    APPROVAL = "approval"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Page:
    """One page to one person."""

    id: int
    human: str
    key: str
    kind: PageKind
    subject: str
    body: str
    state: str
    """``pending`` → ``sent`` | ``failed`` → ``acked``."""
    channel: str
    ref: str
    attempts: int
    error: str
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    acked_by: str


@dataclass(frozen=True)
class PageRoute:
    """One channel a person is paged on, with their address there."""

    channel: str
    kind: str
    address: str


ACK = "ack"
"""Button data prefixes: ``ack:<page>``, ``approve:<approval>``, ``deny:<approval>``."""


def parse_button(data: str) -> tuple[str, int] | None:
    """``"approve:17"`` → ``("approve", 17)``; anything else → None (never trusted further)."""
    verb, sep, number = data.partition(":")
    if not sep or verb not in (ACK, "approve", "deny") or not number.isdigit():
        return None
    return verb, int(number)
