"""Reading, exporting and verifying the audit log (operators)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from mcos.api_models import (
    MAX_ID,
    AuditCheckpointInfo,
    AuditFinding,
    AuditOut,
    AuditVerifyResult,
    RuntimeEvent,
)
from mcos.domain.audit import AuditEvent, canonical
from mcos.domain.redaction import scrub
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden
from mcos.server.audit_checkpoint import AuditCheckpoints
from mcos.server.routes.deps import MC, Caller, require_operator
from mcos.server.routes.messages import ERRORS
from mcos.store import AuditQuery

router = APIRouter(prefix="/v1", tags=["audit"])
_CSV_FIELDS = ["seq", "at", "actor", "action", "targets", "detail", "outcome", "prev_hash", "hash"]


@router.get("/audit", response_model=list[AuditOut], responses=ERRORS)
async def read_audit(
    mc: MC,
    caller: Caller,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Only records after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    format: Literal["json", "csv"] = "json",
) -> Response | list[AuditOut]:
    """Audit records in chain order, filtered; ``format=csv`` exports them."""
    await require_operator(mc, caller, "audit.read")
    records = await mc.store.audit(
        AuditQuery(
            actor=actor, action=action, since=since, until=until, after_seq=after, limit=limit
        )
    )
    out = [AuditOut.of(r) for r in records]
    if format == "json":
        return out
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS)
    writer.writeheader()
    for r, record in zip(out, records, strict=True):
        row = r.model_dump(mode="json")
        # The stored text itself: a value too deep to show is exported whole, not as placeholder.
        row["targets"] = canonical(record.targets)
        row["detail"] = canonical(record.detail)
        writer.writerow(row)
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get("/audit/verify", response_model=AuditVerifyResult, responses=ERRORS)
async def verify(mc: MC, caller: Caller) -> AuditVerifyResult:
    """Walk the whole chain and compare it with the signed checkpoint file: every edited,
    deleted, reordered or cut-off record, a moved-back head, a dropped trigger and an edited
    or missing checkpoint file is reported by kind."""
    await require_operator(mc, caller, "audit.verify")
    checkpoints = mc.checkpoints or AuditCheckpoints(mc.store, None, b"")
    file = await checkpoints.read()
    result = await mc.store.verify_audit(file.checkpoints if file.exists else None)
    findings = [*result.findings, *file.problems]
    first, latest = file.first, file.latest
    return AuditVerifyResult(
        intact=not findings,
        records=result.records,
        head_seq=result.head_seq,
        keyed_from=result.keyed_from,
        legacy_records=min(result.records, result.keyed_from - 1),
        findings=[AuditFinding(kind=f.kind, seq=f.seq, message=f.message) for f in findings],
        checkpoint=AuditCheckpointInfo(
            path=None if file.path is None else str(file.path),
            lines=len(file.checkpoints),
            first_seq=first.seq if first else None,
            first_at=first.at if first else None,
            latest_seq=latest.seq if latest else None,
            latest_hash=latest.hash if latest else None,
            latest_at=latest.at if latest else None,
        ),
    )


@router.post("/audit/events", status_code=201, response_model=AuditOut, responses=ERRORS)
async def record_runtime_event(event: RuntimeEvent, mc: MC, caller: Caller) -> AuditOut:
    """An agent's runtime records what it did or refused (a tool call outside its allowlist).

    The actor is the token's owner and the action must start with ``runtime.``, so an agent
    cannot write records that look like Mission Control's own.
    """
    if caller.kind is not PrincipalKind.AGENT:
        rule = "runtime events are recorded by agents"
        raise Forbidden(rule, rule=rule)
    record = await mc.store.record(
        AuditEvent(
            actor=caller.actor,
            action=event.action,
            targets=scrub(dict(event.targets)),
            detail=scrub(dict(event.detail)),  # no secret-shaped string is ever stored
            outcome=event.outcome,
        )
    )
    return AuditOut.of(record)
