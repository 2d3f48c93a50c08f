"""The Mission Control dashboard: server-rendered pages over the same store and rules.

Every page renders without JavaScript; a few lines of script refresh the page's main content
when Mission Control announces a change over Server-Sent Events. Decisions made here (confirm
an incident, approve a request) go through the same governance code as the API, as the signed-in
operator.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mcos.domain import tokens
from mcos.domain.audit import AuditEvent
from mcos.domain.budget import MICROS
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import AuthError, McosError
from mcos.runtime.workspace import TurnKind, Workspace
from mcos.server.access_log import PRINCIPAL
from mcos.server.context import MissionControl, mission_control
from mcos.server.dashboard import health, session
from mcos.server.dashboard.audit_view import describe
from mcos.server.dashboard.charts import spend_chart
from mcos.server.governance import Governance
from mcos.store import AuditQuery

HERE = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
router = APIRouter(include_in_schema=False)


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


templates.filters["age"] = _age
templates.filters["since"] = lambda iso, now: _age(datetime.fromisoformat(iso), now) if iso else "—"


def _until(iso: str, now: datetime) -> str:
    """When a future instant comes: ``in 12m (03:45 UTC)``."""
    then = datetime.fromisoformat(iso)
    seconds = int((then - now).total_seconds())
    if seconds <= 0:
        return f"due ({then:%H:%M} UTC)"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"in {seconds // size}{unit} ({then:%H:%M} UTC)"
    return f"in {seconds}s ({then:%H:%M} UTC)"


templates.filters["until"] = _until


class NotSignedIn(Exception):
    """Redirect to the login page."""


async def _session(request: Request, mc: MissionControl) -> tuple[str, Principal]:
    """The live session of this request and its operator, or ``NotSignedIn``.

    Looked up in the store on every request: a session ends at sign-out, at its expiry, and the
    moment its token expires or is revoked (the session is then marked ended too).
    """
    sid = session.session_id(mc.settings.token_key, request.cookies.get(session.COOKIE))
    if sid is None:
        raise NotSignedIn
    digest = session.id_hash(sid)
    found = await mc.store.find_session(digest)
    now = await mc.store.now()
    if found is None or not found.live(now):
        raise NotSignedIn
    try:
        record = await mc.store.get_token(found.token_id)
    except McosError:
        raise NotSignedIn from None
    if record.kind is not PrincipalKind.OPERATOR or not record.usable(now):
        await mc.store.end_session(digest)
        raise NotSignedIn
    who = Principal(PrincipalKind.OPERATOR, found.operator, found.token_id)
    setattr(request.state, PRINCIPAL, who)  # for the access log
    return sid, who


async def _page(request: Request, template: str, **context: Any) -> Response:
    mc = mission_control(request)
    try:
        sid, who = await _session(request, mc)
    except NotSignedIn:
        return RedirectResponse("/login", status_code=303)
    from mcos.server.routes.agents import list_agents  # noqa: PLC0415

    agents = context.pop("agents", None) or await list_agents(mc, DASHBOARD)
    shown: dict[str, Any] = {
        "done": request.query_params.get("done", ""),
        "error": request.query_params.get("error", ""),
        **context,
    }
    html = templates.get_template(template).render(
        who=who,
        csrf=session.csrf_token(mc.settings.token_key, sid),
        now=await mc.store.now(),
        path=request.url.path,
        health=await health.summary(mc, agents),
        agents=agents,
        **shown,
    )
    return HTMLResponse(html)


DASHBOARD = Principal(PrincipalKind.OPERATOR, "dashboard")
"""Who reads for a page (reads only: every action runs as the signed-in operator)."""


async def _form_guard(request: Request, csrf: str | None) -> tuple[MissionControl, Principal]:
    """A state-changing form: signed in, and carrying this session's CSRF token."""
    mc = mission_control(request)
    sid, who = await _session(request, mc)
    if not session.csrf_ok(mc.settings.token_key, sid, csrf):
        rule = "a form must carry the session's CSRF token"
        await mc.refuse(who, "dashboard.form", rule, path=request.url.path)
        raise CsrfRefused(rule)
    return mc, who


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token (403)."""


async def _to_login(_: Request, __: Exception) -> Response:
    return RedirectResponse("/login", status_code=303)


async def _csrf_refused(_: Request, exc: Exception) -> Response:
    return HTMLResponse(f"<h1>403</h1><p>{exc}</p>", status_code=403)


def install(app: FastAPI) -> None:
    """Mount the dashboard and its error handling on the app."""
    app.include_router(router)
    app.include_router(operate.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(NotSignedIn, _to_login)
    app.add_exception_handler(CsrfRefused, _csrf_refused)


# --- sign in and out -----------------------------------------------------------------------------
@router.get("/login")
async def login_page(request: Request, error: str = "") -> Response:
    """The sign-in form: an operator token."""
    html = templates.get_template("login.html").render(error=error, who=None, path="/login")
    return HTMLResponse(html)


def _client(request: Request) -> str:
    """The caller's address (a trusted proxy's X-Forwarded-For only when the server is told to
    trust that proxy: see ``[server] trusted_proxies``)."""
    return request.client.host if request.client else "unknown"


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()]) -> Response:
    """Exchange an operator token for a session; failures are throttled, audited and counted."""
    mc = mission_control(request)
    clear = token.strip()
    client, prefix = _client(request), tokens.parse_prefix(clear)
    wait = mc.throttle.retry_after(client=client, prefix=prefix)
    if wait is not None:
        mc.metrics.login_failures.labels(reason="throttled").inc()
        html = templates.get_template("login.html").render(
            error=f"Too many failed sign-ins: try again in {wait} s.", who=None, path="/login"
        )
        return HTMLResponse(html, status_code=429, headers={"Retry-After": str(wait)})
    try:
        who = await mc.auth.principal(f"Bearer {clear}")
    except AuthError as e:
        mc.throttle.failed(client=client, prefix=prefix)
        mc.metrics.login_failures.labels(reason="bad_token").inc()
        await mc.store.record(
            AuditEvent(
                actor=f"client:{client}",
                action="dashboard.login_failed",
                targets={"prefix": prefix or "(malformed)"},
                detail={"reason": e.message},
                outcome="refused",
            )
        )
        return RedirectResponse("/login?error=That+token+is+not+valid.", status_code=303)
    if who.kind is not PrincipalKind.OPERATOR:
        mc.metrics.login_failures.labels(reason="agent_token").inc()
        await mc.refuse(who, "dashboard.login", "agents' tokens cannot open the dashboard")
        return RedirectResponse(
            "/login?error=Agent+tokens+cannot+open+the+dashboard.", status_code=303
        )
    assert who.token_id is not None
    sid = session.new_id()
    await mc.store.create_session(
        session.id_hash(sid), who.token_id, who.name, timedelta(seconds=session.LIFETIME)
    )
    await mc.store.record(AuditEvent(actor=who.actor, action="dashboard.login"))
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        session.COOKIE,
        session.cookie(mc.settings.token_key, sid),
        max_age=session.LIFETIME,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str | None, Form()] = None) -> Response:
    """End the session: its id is refused from now on, whoever still holds the cookie."""
    mc, who = await _form_guard(request, csrf)
    sid = session.session_id(mc.settings.token_key, request.cookies.get(session.COOKIE))
    assert sid is not None
    await mc.store.end_session(session.id_hash(sid))
    await mc.store.record(AuditEvent(actor=who.actor, action="dashboard.logout"))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/")
    return response


# --- pages ---------------------------------------------------------------------------------------
@router.get("/")
async def fleet(request: Request) -> Response:
    """Every agent at a glance."""
    mc = mission_control(request)
    from mcos.server.routes.agents import list_agents  # noqa: PLC0415

    agents = await list_agents(mc, DASHBOARD)
    leases = {x.agent: x for x in await mc.store.leases()}
    return await _page(request, "fleet.html", agents=agents, leases=leases)


@router.get("/agents/{name}")
async def agent_page(request: Request, name: str) -> Response:
    """One agent: state, lease, recent model use."""
    mc = mission_control(request)
    from mcos.server.routes.agents import list_agents  # noqa: PLC0415

    agents = await list_agents(mc, DASHBOARD)
    agent = next((a for a in agents if a.name == name), None)
    if agent is None:
        return HTMLResponse("<h1>404</h1><p>No such agent.</p>", status_code=404)
    since = ((await mc.store.now()).date() - timedelta(days=13)).isoformat()
    usage = await mc.store.usage(since, name)
    files, log = _workspace(mc, name, await mc.store.now())
    return await _page(
        request,
        "agent.html",
        agents=agents,
        agent=agent,
        lease=await mc.store.lease(name),
        usage=usage,
        files=files,
        log=log,
    )


@router.post("/dead-letters/{delivery_id}/requeue")
async def requeue(
    request: Request, delivery_id: int, csrf: Annotated[str | None, Form()] = None
) -> Response:
    """Put a dead letter back in its inbox (operators)."""
    mc, who = await _form_guard(request, csrf)
    try:
        await mc.store.requeue(
            delivery_id,
            audit=AuditEvent(who.actor, "dead_letter.requeue", {"delivery": delivery_id}),
        )
    except McosError as e:
        return RedirectResponse(f"/messages?error={e.message[:200]}", status_code=303)
    return RedirectResponse("/messages", status_code=303)


def _workspace(mc: MissionControl, name: str, now: datetime) -> tuple[list[Any], str]:
    """The agent's workspace as its prompt carries it (truncations visible) and today's log,
    when the workspace is on this machine (read-only)."""
    root = mc.settings.workspaces.get(name)
    if root is None or not Path(root).is_dir():
        return [], ""
    workspace = Workspace(Path(root))
    try:
        prompt = workspace.prompt(TurnKind.MAIN)
    except McosError as e:
        return [("error", e.message)], ""
    cut = {t.file: t.describe() for t in prompt.truncations}
    files = [(s.file, s.text, cut.get(s.file, "")) for s in prompt.sections]
    today = workspace.daily_log(now)
    return files, today.read_text(errors="replace")[-20_000:] if today.exists() else ""


@router.get("/incidents")
async def incidents(request: Request) -> Response:
    """Incidents at their gates, with their timelines."""
    mc = mission_control(request)
    gov = Governance(mc)
    found = await mc.store.incidents(limit=100)
    rows = [(i, await mc.store.incident_events(i.id), gov.matrix.gate(i.severity)) for i in found]
    return await _page(request, "incidents.html", rows=rows)


@router.post("/incidents/{incident_id}/{decision}")
async def decide_incident(
    request: Request,
    incident_id: int,
    decision: str,
    reason: Annotated[str, Form()],
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    """Confirm, resolve or dismiss, with a reason (as the signed-in human)."""
    mc, who = await _form_guard(request, csrf)
    gov = Governance(mc)
    try:
        if decision == "confirm":
            await gov.confirm(who, incident_id, None, reason)
        elif decision in ("resolve", "dismiss"):
            state = "resolved" if decision == "resolve" else "dismissed"
            await gov.close(who, incident_id, state, reason)
    except McosError as e:
        return RedirectResponse(f"/incidents?error={e.message[:200]}", status_code=303)
    return RedirectResponse("/incidents", status_code=303)


@router.get("/approvals")
async def approvals(request: Request) -> Response:
    """Requests waiting for a decision, and recent ones."""
    mc = mission_control(request)
    await Governance(mc).sweep()
    found = await mc.store.approvals(limit=100)
    rows = [(a, await mc.store.votes(a.id)) for a in found]
    return await _page(request, "approvals.html", rows=rows)


@router.post("/approvals/{approval_id}/{decision}")
async def decide_approval(
    request: Request,
    approval_id: int,
    decision: str,
    reason: Annotated[str, Form()],
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    """Approve, deny or veto, with a reason."""
    mc, who = await _form_guard(request, csrf)
    gov = Governance(mc)
    try:
        if decision == "veto":
            await gov.veto(who, approval_id, reason)
        elif decision in ("approve", "deny"):
            await gov.vote(who, approval_id, decision, reason)
    except McosError as e:
        return RedirectResponse(f"/approvals?error={e.message[:200]}", status_code=303)
    return RedirectResponse("/approvals", status_code=303)


@router.get("/pages")
async def pages(request: Request) -> Response:
    """Pages to people, newest first, with their acknowledgements."""
    mc = mission_control(request)
    found = await mc.store.pages(limit=200)
    return await _page(request, "pages.html", pages=found)


@router.post("/pages/{page_id}/ack")
async def ack_page(
    request: Request, page_id: int, csrf: Annotated[str | None, Form()] = None
) -> Response:
    """The signed-in person acknowledges a page sent to them."""
    mc, who = await _form_guard(request, csrf)
    page = await mc.store.page(page_id)
    if page is None or page.human != who.name:
        return RedirectResponse("/pages?error=that page is not yours", status_code=303)
    done = await mc.store.ack_page(page_id, who.name)
    if done is not None:
        await mc.store.record(
            AuditEvent(
                actor=who.actor,
                action="page.acked",
                targets={"page": str(page_id)},
                detail={"key": done.key, "via": "dashboard"},
            )
        )
    return RedirectResponse("/pages", status_code=303)


@router.get("/spend")
async def spend(request: Request) -> Response:
    """Tokens and dollars per agent per day, the last 14 days."""
    mc = mission_control(request)
    today = (await mc.store.now()).date()
    since = today - timedelta(days=13)
    rows = await mc.store.usage(since.isoformat())
    days = [(since + timedelta(days=i)).isoformat() for i in range(14)]
    chart = spend_chart(rows, days)  # dollars, or tokens when no call cost anything
    read = sum(r.usage.cache_read for r in rows)
    prompt = sum(r.usage.input + r.usage.cache_read + r.usage.cache_write for r in rows)
    share = read / prompt if prompt else 0.0
    total = sum(r.cost_micros for r in rows) / MICROS
    return await _page(request, "spend.html", chart=chart, rows=rows, share=share, total=total)


@router.get("/audit-log")
async def audit_log(
    request: Request, actor: str = "", action: str = "", since: str = ""
) -> Response:
    """The audit log, filtered."""
    mc = mission_control(request)
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            when = None
    records = await mc.store.audit(
        AuditQuery(actor=actor or None, action=action or None, since=when, limit=300)
    )
    return await _page(
        request,
        "audit.html",
        records=[(r, describe(r)) for r in reversed(records)],
        actor=actor,
        action=action,
        since=since,
    )


@router.get("/events")
async def events(request: Request) -> Response:
    """Server-Sent Events: ``change`` whenever the audit log or the bus moved."""
    mc = mission_control(request)
    try:
        await _session(request, mc)
    except NotSignedIn:
        return Response(status_code=401)

    async def stream() -> AsyncIterator[str]:
        # The first fingerprint is taken before the stream opens: a change made the moment
        # the browser has it (between opening and the first poll) is announced, not missed.
        last = await _version(mc)
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            await asyncio.sleep(1.0)
            try:
                await _session(request, mc)  # signed out or token gone: the stream ends
            except NotSignedIn:
                return
            marker = await _version(mc)
            if marker != last:
                yield f"event: change\ndata: {marker}\n\n"
                last = marker

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _version(mc: MissionControl) -> str:
    """A cheap fingerprint of what the pages show: states, queues, incidents, requests."""
    depths = await mc.store.inbox_depths()
    states = await mc.store.agent_states()
    incidents = await mc.store.incidents(limit=50)
    requests = await mc.store.approvals(limit=50)
    parts = [
        max((s.updated_at.isoformat() for s in states), default=""),
        str(sum(d.queued + d.claimed + d.dead for d in depths)),
        ",".join(f"{i.id}:{i.state.value}:{i.severity}" for i in incidents),
        ",".join(f"{a.id}:{a.state.value}:{a.acknowledged_at is not None}" for a in requests),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers that ask without reading the page's icon link get the SVG."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


from mcos.server.dashboard import operate  # noqa: E402  (its pages use _page and _form_guard)
