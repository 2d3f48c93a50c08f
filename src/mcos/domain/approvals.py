"""Approval requests: a governed action, its payload, the committee that decides, the votes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from mcos.exceptions import Conflict

DEFAULT_EXPIRY = timedelta(hours=24)


class ApprovalState(StrEnum):
    """Where a request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    VETOED = "vetoed"


@dataclass(frozen=True)
class Approval:
    """A request for a governed action and how it was decided."""

    id: int
    action: str
    payload: dict[str, Any]
    requester: str
    rationale: str
    quorum: str
    state: ApprovalState
    executor: str | None
    constraints: str
    report_every: str | None
    """Cron schedule of the reports the executing agent promised (None: no reports)."""
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str
    reason: str
    directive_id: int | None
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class Vote:
    """One member's vote, with its rationale."""

    approval_id: int
    voter: str
    vote: str
    rationale: str
    at: datetime


def payload_hash(action: str, payload: dict[str, Any]) -> str:
    """Identity of a request: the same action and payload is the same request."""
    canonical = json.dumps({"action": action, "payload": payload}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def duplicate_request(open_: Approval) -> Conflict:
    """The refusal of a second request for the same action and payload, pointing at the first."""
    return Conflict(
        f"request {open_.id} for {open_.action} with the same payload is already pending "
        f"(by {open_.requester}, expires {open_.expires_at:%Y-%m-%d %H:%M} UTC): vote on it "
        "instead",
        open_request=open_.id,
    )
