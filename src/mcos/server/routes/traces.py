"""Turn traces: each agent posts one per model turn; operators (and the agent itself) read them.

A trace's cost is what Mission Control's meter recorded for the turn's calls, found by their
reservation ids; calls the meter has no record of count at the agent's own figure, and the
trace's ``cost_source`` says which it is. Traces older than ``[server] trace_days`` are deleted
by the server's periodic sweep.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query

from mcos.api_models import MAX_ID
from mcos.api_traces import CostSource, TraceIn, TraceModelCall, TraceOut, TraceSummary
from mcos.domain.budget import MICROS
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Conflict, Forbidden, InvalidRequest, McosError, NotFound
from mcos.server.context import MissionControl
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS
from mcos.store.protocol import StoredTrace

router = APIRouter(prefix="/v1/traces", tags=["traces"])
log = logging.getLogger("mcos.server.traces")
TRACE_ERRORS = {**ERRORS, 413: ERRORS[409]}
MAX_FUTURE = timedelta(minutes=5)
"""A trace may not start further ahead of Mission Control's clock than this."""
MAX_AGE = timedelta(days=3650)
"""Nor further back than this (no retention keeps it longer)."""


async def metered_cost(
    mc: MissionControl, agent: str, trace: TraceIn
) -> tuple[TraceIn, int, CostSource, int]:
    """The trace with each call's metered price, the turn's cost in micro-dollars, where it
    comes from, and how many calls were metered: a call held under a reservation Mission Control
    recorded for ``agent`` counts at the meter's price (each reservation once), every other call
    at the agent's own figure."""
    held = [c.reservation_id for c in trace.calls if c.reservation_id is not None]
    recorded = await mc.store.metered_calls(agent, held) if held else {}
    total = metered = 0
    calls: list[TraceModelCall] = []
    for call in trace.calls:
        micros = recorded.pop(call.reservation_id, None) if call.reservation_id else None
        if micros is not None:
            total += micros
            metered += 1
        else:
            total += round(call.reported_usd * MICROS)
        usd = None if micros is None else micros / MICROS
        calls.append(call.model_copy(update={"metered_usd": usd}))
    if not trace.calls:
        source: CostSource = "none"
    elif metered == len(trace.calls):
        source = "metered"
    else:
        source = "reported" if metered == 0 else "mixed"
    return trace.model_copy(update={"calls": calls}), total, source, metered


def _summary(t: StoredTrace) -> dict[str, object]:
    body = t.body
    calls = body.get("calls", [])
    return {
        "id": t.id,
        "agent": t.agent,
        "kind": t.kind,
        "woke_by": body.get("woke_by", "other"),
        "woke_messages": list(t.woke),
        "sent_messages": list(t.sent),
        "started_at": t.started_at,
        "received_at": t.received_at,
        "latency_ms": body.get("latency_ms", 0),
        "outcome": t.outcome,
        "cost_usd": t.cost_micros / MICROS,
        "cost_source": t.cost_source,
        **{
            f"{kind}_tokens": sum(int(c.get(f"{kind}_tokens", 0)) for c in calls)
            for kind in ("input", "output", "cache_read", "cache_write")
        },
        "model_calls": len(calls),
        "tool_calls": len(body.get("tools", [])),
    }


def summary_of(t: StoredTrace) -> TraceSummary:
    """A stored trace as lists show it."""
    return TraceSummary.model_validate(_summary(t))


def trace_of(t: StoredTrace) -> TraceOut:
    """A stored trace whole."""
    body = t.body
    return TraceOut.model_validate(
        {
            **_summary(t),
            **{
                k: body.get(k, default)
                for k, default in (
                    ("woke_detail", ""),
                    ("error", ""),
                    ("sections", []),
                    ("calls", []),
                    ("tools", []),
                    ("governance", []),
                    ("final_text", ""),
                    ("truncated", False),
                    ("metered_calls", 0),
                )
            },
        }
    )


@router.post("", status_code=201, response_model=TraceOut, responses=TRACE_ERRORS)
async def post_trace(trace: TraceIn, mc: MC, caller: Caller) -> TraceOut:
    """An agent records one of its own turns (at most ``MAX_TRACE_BYTES`` of JSON: 413 beyond).

    Posting the same id again returns the stored trace unchanged. The cost stored is what
    Mission Control metered for the calls whose reservation ids it knows.
    """
    if caller.kind is not PrincipalKind.AGENT:
        rule = "a trace is posted by the agent whose turn it was"
        await mc.refuse(caller, "trace.write", rule)
        raise Forbidden(rule, rule=rule)
    now = await mc.store.now()
    if trace.started_at < now - MAX_AGE:
        raise InvalidRequest(
            f"started_at: {trace.started_at.isoformat()} is more than {MAX_AGE.days} days ago",
            field="started_at",
        )
    if trace.started_at > now + MAX_FUTURE:
        raise InvalidRequest(
            f"started_at: {trace.started_at.isoformat()} is ahead of Mission Control's clock "
            f"({now.isoformat()})",
            field="started_at",
        )
    trace, cost, source, metered = await metered_cost(mc, caller.name, trace)
    body = trace.model_dump(mode="json")
    body["metered_calls"] = metered
    stored = await mc.store.save_trace(
        StoredTrace(
            id=trace.id,
            agent=caller.name,
            kind=trace.kind,
            outcome=trace.outcome,
            started_at=trace.started_at,
            cost_micros=cost,
            cost_source=source,
            body=body,
            woke=tuple(trace.woke_messages),
            sent=tuple(trace.sent_messages),
        )
    )
    if stored.agent != caller.name:
        raise Conflict(f"trace {trace.id} was posted by another agent", trace=trace.id)
    return trace_of(stored)


async def _readable_agent(mc: MissionControl, caller: Principal, agent: str | None) -> str | None:
    """Operators read every agent's traces; an agent only its own."""
    if caller.kind is PrincipalKind.OPERATOR:
        return agent
    if caller.kind is PrincipalKind.AGENT and agent in (None, caller.name):
        return caller.name
    rule = "an agent may read only its own traces"
    await mc.refuse(caller, "trace.read", rule, agent=agent or "")
    raise Forbidden(rule, rule=rule)


@router.get("", response_model=list[TraceSummary], responses=ERRORS)
async def list_traces(
    mc: MC,
    caller: Caller,
    agent: Annotated[str | None, Query(max_length=100)] = None,
    thread: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    message: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Turns woken by it or that sent it.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Turns started at or after.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TraceSummary]:
    """Turn traces, newest first: of one agent, touching a thread, or one message (the turn
    that handled it and the turn that sent it)."""
    agent = await _readable_agent(mc, caller, agent)
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since: give a time zone (e.g. 2026-01-01T00:00:00Z)", field="since")
    found = await mc.store.traces(
        agent=agent, thread=thread, message=message, since=since, limit=limit
    )
    return [summary_of(t) for t in found]


@router.get("/{trace_id}", response_model=TraceOut, responses=ERRORS)
async def get_trace(
    trace_id: Annotated[str, Path(max_length=64)], mc: MC, caller: Caller
) -> TraceOut:
    """One turn trace whole."""
    found = await mc.store.trace(trace_id)
    if found is None:
        raise NotFound(f"no trace {trace_id!r}", trace=trace_id)
    await _readable_agent(mc, caller, found.agent)
    return trace_of(found)


async def sweep(mc: MissionControl) -> None:
    """Delete traces older than ``trace_days``, as often as the other sweeps."""
    while True:
        await asyncio.sleep(mc.settings.sweep_seconds)
        try:
            await delete_old(mc)
        except McosError as e:
            log.warning("trace retention sweep failed: %s", e.message)


async def delete_old(mc: MissionControl) -> int:
    """Delete traces of turns started more than ``trace_days`` ago; how many."""
    cutoff = await mc.store.now() - timedelta(days=mc.settings.trace_days)
    gone = await mc.store.delete_traces_before(cutoff)
    if gone:
        log.info("deleted %d turn trace(s) started before %s", gone, cutoff.isoformat())
    return gone
