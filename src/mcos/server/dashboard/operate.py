"""Dashboard pages that act: find messages, send one as the signed-in human, and pause, resume
or restart an agent. Each action is the API's own code path run as the signed-in operator —
the same authority rules, the same audit records — behind the session's CSRF token."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from mcos.api_models import SendRequest
from mcos.domain.message_search import MessageSearch, MessageState
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import McosError
from mcos.server.context import mission_control
from mcos.server.dashboard import _form_guard, _page
from mcos.server.routes import agent_control
from mcos.server.routes import messages as message_routes
from mcos.server.routes.deps import Writer
from mcos.server.routes.message_search import search

router = APIRouter(include_in_schema=False)
FILTERS = ("q", "from", "to", "kind", "priority", "state", "since", "until")
PAGE = 50


def _when(text: str, name: str) -> datetime | None:
    """A filter's time: ISO 8601 (a date alone is its midnight UTC); a clear error otherwise."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        example = "2026-12-03 or 2026-12-03T09:30"
        raise ValueError(f"{name}: {text!r} is not a date or time ({example})") from None


def _query(args: dict[str, str], before: int | None, thread: int | None) -> MessageSearch:
    """The search the form describes; ValueError names the field that is wrong."""
    kind, priority, state = args["kind"], args["priority"], args["state"]
    try:
        return MessageSearch(
            text=args["q"] or None,
            sender=args["from"] or None,
            recipient=args["to"] or None,
            kind=MessageKind(kind) if kind else None,
            priority=Priority(priority) if priority else None,
            state=MessageState(state) if state else None,
            since=_when(args["since"], "since"),
            until=_when(args["until"], "until"),
            thread_id=thread,
            before=before,
            limit=PAGE,
        )
    except McosError as e:
        raise ValueError(e.message) from None


@router.get("/messages")
async def messages(
    request: Request,
    thread: int | None = None,
    before: int | None = None,
    error: str = "",
    sent: int | None = None,
    reply_to: int | None = None,
) -> Response:
    """Find messages (filters, text, pages), read a thread, send one; queues and dead letters."""
    mc = mission_control(request)
    args = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    operator = Principal(PrincipalKind.OPERATOR, "dashboard")
    problem = error
    found, next_before = [], None
    try:
        page = await search(mc, operator, _query(args, before, None))
        found, next_before = page.messages, page.next_before
    except ValueError as e:
        problem = str(e)
    shown = await mc.store.thread(thread) if thread is not None else []
    replying = next((m for m in shown if m.id == reply_to), shown[-1] if shown else None)
    kept = {k: v for k, v in args.items() if v}
    agents = await mc.store.list_agents()
    return await _page(
        request,
        "messages.html",
        args=args,
        found=found,
        older=f"/messages?{urlencode({**kept, 'before': next_before})}" if next_before else "",
        newest=f"/messages?{urlencode(kept)}" if before else "",
        paged=before is not None,
        thread=shown,
        thread_id=thread,
        replying=replying,
        error=problem,
        sent=sent,
        depths=await mc.store.inbox_depths(),
        dead=await mc.store.dead_letters(limit=100),
        names=sorted({a.name for a in agents} | set(mc.settings.human_roles)),
        kinds=[k.value for k in MessageKind],
        priorities=[p.value for p in Priority],
        states=[s.value for s in MessageState],
        form_key=secrets.token_urlsafe(12),
    )


@router.post("/messages/send")
async def send(
    request: Request,
    to: Annotated[str, Form()],
    body: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "request",
    priority: Annotated[str, Form()] = "normal",
    reply_to: Annotated[str, Form()] = "",
    key: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    """Send as the signed-in human through the API's own send: a directive is governed
    (``issue_directive``), a refusal is audited and shown; a form sent twice sends once."""
    mc, who = await _form_guard(request, csrf)
    try:
        ask = SendRequest(
            to=to.strip(),
            kind=MessageKind(kind),
            priority=Priority(priority),
            subject=subject,
            body=body,
            reply_to=int(reply_to) if reply_to.strip() else None,
            idempotency_key=f"dashboard-{key}"[:200] if key else None,
        )
    except (ValueError, ValidationError) as e:
        return _back(f"not sent: {_first_error(e)}")
    try:
        result = await message_routes.send(ask, mc, Writer(who, None), Response())
    except McosError as e:
        return _back(f"not sent: {e.message}")
    m = result.message
    return RedirectResponse(f"/messages?thread={m.thread_id}&sent={m.id}#m{m.id}", status_code=303)


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(e)


def _back(error: str, to: str = "/messages") -> Response:
    return RedirectResponse(f"{to}?{urlencode({'error': error[:300]})}", status_code=303)


@router.post("/agents/{name}/{action}")
async def control(
    request: Request,
    name: str,
    action: str,
    reason: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    """Pause, resume or restart an agent as the signed-in operator (audited)."""
    mc, who = await _form_guard(request, csrf)
    steps = {
        "pause": agent_control.pause,
        "resume": agent_control.resume,
        "restart": agent_control.request_restart,
    }
    step = steps.get(action)
    if step is None:
        return _back(f"no action {action!r}: pause, resume or restart", f"/agents/{name}")
    try:
        await step(mc, who, name, reason[:500])
    except McosError as e:
        return _back(e.message, f"/agents/{name}")
    done = {"pause": "paused", "resume": "resumed", "restart": "restart requested"}[action]
    return RedirectResponse(f"/agents/{name}?{urlencode({'done': done})}", status_code=303)
