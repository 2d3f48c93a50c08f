"""Rows ↔ domain objects, shared by both stores once times are datetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from mcos.domain.audit import AuditRecord
from mcos.domain.bounded import decode_stored
from mcos.domain.budget import Usage
from mcos.domain.messages import (
    Delivery,
    DeliveryState,
    Message,
    MessageKind,
    Priority,
    RecipientKind,
)
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.store.protocol import UsageRow


class Row(Protocol):
    """A database row addressable by column name (``sqlite3.Row``, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def _json(value: Any) -> Any:
    """Decode a JSON column that one driver returns as text and another as objects (JSON
    too deep to show stays text, in a placeholder: see :func:`decode_stored`)."""
    if isinstance(value, str):
        return decode_stored(value)
    return value


json_column = _json
"""The public name of :func:`_json`, for the stores' own row readers."""


def message(row: Row, created_at: datetime) -> Message:
    """A message from a ``messages`` row (columns may be prefixed ``m_`` in joins)."""
    return Message(
        id=row["id"],
        sender=row["sender"],
        recipient=row["recipient"],
        recipient_kind=RecipientKind(row["recipient_kind"]),
        kind=MessageKind(row["kind"]),
        priority=Priority.from_rank(row["priority"]),
        subject=row["subject"],
        body=row["body"],
        thread_id=row["thread_id"],
        reply_to=row["reply_to"],
        idempotency_key=row["idempotency_key"],
        created_at=created_at,
        meta=_json(row["meta"]) or {},
    )


def delivery(
    row: Row,
    msg: Message,
    visible_at: datetime,
    deadline: datetime | None,
    expires_at: datetime | None = None,
) -> Delivery:
    """A delivery from a ``deliveries`` row joined to its message."""
    return Delivery(
        id=row["delivery_id"],
        inbox=row["inbox"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        visible_at=visible_at,
        deadline=deadline,
        receipt=row["receipt"],
        last_error=row["last_error"],
        message=msg,
        deferrals=row["deferrals"],
        expires_at=expires_at,
    )


def token(
    row: Row,
    created_at: datetime,
    expires_at: datetime | None,
    revoked_at: datetime | None,
) -> TokenRecord:
    """A token record from a ``tokens`` row."""
    return TokenRecord(
        id=row["id"],
        prefix=row["prefix"],
        digest=row["digest"],
        kind=PrincipalKind(row["kind"]),
        name=row["name"],
        label=row["label"],
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def audit(row: Row, at: datetime) -> AuditRecord:
    """An audit record from an ``audit`` row."""
    return AuditRecord(
        seq=row["seq"],
        at=at,
        actor=row["actor"],
        action=row["action"],
        targets=_json(row["targets"]),
        detail=_json(row["detail"]),
        outcome=row["outcome"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def usage_row(r: Any) -> UsageRow:
    """A usage row of either store."""
    return UsageRow(
        day=str(r["day"]),
        agent=r["agent"],
        calls=int(r["calls"]),
        usage=Usage(
            input=int(r["input"]),
            output=int(r["output"]),
            cache_read=int(r["cache_read"]),
            cache_write=int(r["cache_write"]),
        ),
        cost_micros=int(r["cost"]),
        held_micros=int(r["held"]),
    )
