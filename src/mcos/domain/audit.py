"""The tamper-evident audit chain.

Each record carries the hash of the one before it; the hash covers every field, so editing a
row changes its hash and breaks the link from its successor, and deleting one breaks the link
too. Verification walks the chain in order; these functions are the whole of the rule.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mcos.domain.bounded import StoredJson

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEvent:
    """A state change to record: the store adds the time, the sequence and the chain hash."""

    actor: str
    action: str
    targets: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


@dataclass(frozen=True)
class AuditRecord:
    """A stored audit record."""

    seq: int
    at: datetime
    actor: str
    action: str
    targets: dict[str, Any]
    detail: dict[str, Any]
    outcome: str
    prev_hash: str
    hash: str


def canonical(value: Any) -> str:
    """The one JSON encoding hashed and stored, so both stores hash identical bytes."""
    if isinstance(value, StoredJson):
        return value.text  # stored by this very function; kept as text since too deep to show
    if isinstance(value, dict) and any(isinstance(v, StoredJson) for v in value.values()):
        # A record holding such a value: its text goes in where a one-off marker was encoded.
        marker = f"\0{secrets.token_hex(16)}:"
        texts = {marker + k: v.text for k, v in value.items() if isinstance(v, StoredJson)}
        marked = {k: marker + k if isinstance(v, StoredJson) else v for k, v in value.items()}
        encoded = canonical(marked)
        for placeholder, text in texts.items():
            encoded = encoded.replace(canonical(placeholder), text)
        return encoded
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    targets: dict[str, Any],
    detail: dict[str, Any],
    outcome: str,
    prev_hash: str,
) -> str:
    """The hash of one record, chained to ``prev_hash``."""
    body = canonical(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "targets": targets,
            "detail": detail,
            "outcome": outcome,
            "prev": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """Where and how the chain fails to verify."""

    seq: int
    problem: str


def verify_chain(records: list[AuditRecord], head_seq: int | None = None) -> list[ChainBreak]:
    """Every break in ``records`` (ordered by seq); empty when the chain is intact.

    ``head_seq`` is the last sequence the store says it wrote; a chain that ends before it has
    lost its tail.
    """
    breaks: list[ChainBreak] = []
    prev_hash = GENESIS
    expected_seq = 1
    for r in records:
        if r.seq != expected_seq:
            breaks.append(ChainBreak(r.seq, f"records {expected_seq}..{r.seq - 1} are missing"))
        if r.prev_hash != prev_hash:
            breaks.append(ChainBreak(r.seq, "does not link to the record before it"))
        computed = record_hash(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            targets=r.targets,
            detail=r.detail,
            outcome=r.outcome,
            prev_hash=r.prev_hash,
        )
        if computed != r.hash:
            breaks.append(ChainBreak(r.seq, "contents were changed after it was written"))
        prev_hash = r.hash
        expected_seq = r.seq + 1
    if head_seq is not None and head_seq >= expected_seq:
        breaks.append(ChainBreak(head_seq, f"records {expected_seq}..{head_seq} are missing"))
    return breaks
