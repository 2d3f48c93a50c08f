"""The dashboard's turn pages: an agent's recent model turns, and one turn in full (its prompt by
section, calls, tool calls, refusals, cost, latency, outcome, and the messages that woke it and
those it sent). Read from the traces agents post (``/v1/traces``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mcos.exceptions import NotFound
from mcos.server.context import mission_control
from mcos.server.dashboard import _page
from mcos.server.routes.traces import summary_of, trace_of

router = APIRouter(include_in_schema=False)
SHOWN = 100
"""Turns listed on a page."""


@router.get("/agents/{name}/turns")
async def agent_turns(request: Request, name: str) -> Response:
    """An agent's recent turns, newest first."""
    mc = mission_control(request)
    found = await mc.store.traces(agent=name, limit=SHOWN)
    return await _page(
        request,
        "turns.html",
        title=f"{name}: turns",
        agent=name,
        turns=[summary_of(t) for t in found],
    )


@router.get("/turns")
async def message_turns(request: Request, message: int) -> Response:
    """The turns a message touched: the one that handled it and the one that sent it."""
    mc = mission_control(request)
    found = await mc.store.traces(message=message, limit=SHOWN)
    return await _page(
        request,
        "turns.html",
        title=f"Turns of message {message}",
        agent=None,
        turns=[summary_of(t) for t in found],
    )


@router.get("/turns/{trace_id}")
async def turn_page(request: Request, trace_id: str) -> Response:
    """One turn in full."""
    mc = mission_control(request)
    found = await mc.store.trace(trace_id[:64])
    if found is None:
        return HTMLResponse("<h1>404</h1><p>No such turn.</p>", status_code=404)
    trace = trace_of(found)
    threads: dict[int, int] = {}
    for message_id in [*trace.woke_messages, *trace.sent_messages]:
        try:
            threads[message_id] = (await mc.store.get_message(message_id)).thread_id
        except NotFound:
            continue
    total_tokens = sum(s.tokens for s in trace.sections)
    return await _page(request, "turn.html", turn=trace, threads=threads, total_tokens=total_tokens)
