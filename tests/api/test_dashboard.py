"""The dashboard over real HTTP: sign-in, pages, decisions with CSRF, live-update stream."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from mcos.api_models import SendRequest
from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Usage
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import McosError
from mcos.server.dashboard.charts import spend_chart
from mcos.store.protocol import UsageRow
from tests.api.conftest import LiveServer


@contextmanager
def _signed_in(server: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as web:
        yield _sign_in(server, web)


def _sign_in(server: LiveServer, web: httpx.Client) -> tuple[httpx.Client, str]:
    r = web.post("/login", data={"token": server.operator_token})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    page = web.get("/")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf is not None
    return web, csrf[1]


def test_pages_need_a_session_and_agents_cannot_sign_in(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, follow_redirects=False) as web:
        assert web.get("/").headers["location"] == "/login"
        assert web.get("/events").status_code == 401
        r = web.post("/login", data={"token": live_server.tokens["gene"]})
        assert "Agent+tokens+cannot" in r.headers["location"]
        assert "set-cookie" not in r.headers
        assert "not+valid" in web.post("/login", data={"token": "nope"}).headers["location"]
    with live_server.client() as op:
        refused = op.do(Calls.audit(action="dashboard.login"))
    assert [r.outcome for r in refused] == ["refused"]


def test_every_page_renders(live_server: LiveServer) -> None:
    with _signed_in(live_server) as (web, _):
        fleet = web.get("/").text
        for name in ("jarvis", "gene", "sentinel"):
            assert f'href="/agents/{name}"' in fleet
        assert "gene" in web.get("/agents/gene").text
        assert web.get("/agents/nobody").status_code == 404
        assert "<svg" in web.get("/spend").text
        assert "Audit log" in web.get("/audit-log?action=dashboard.login").text
        assert web.get("/incidents").status_code == 200
        assert web.get("/approvals").status_code == 200
        assert "Dead letters" in web.get("/messages").text
        assert web.get("/static/live.js").status_code == 200


def test_an_incident_through_its_gates_in_the_page(live_server: LiveServer) -> None:
    with live_server.client("sentinel") as sentinel:
        made = sentinel.do(Calls.report_incident("P0", "storage array offline", "multipath -ll"))
    with live_server.client("jarvis") as jarvis:
        jarvis.do(Calls.decide_incident(made.id, "confirm", "array down on both paths"))
    with _signed_in(live_server) as (web, csrf):
        assert "storage array offline" in web.get("/incidents").text
        refused = web.post(f"/incidents/{made.id}/confirm", data={"reason": "no token"})
        assert refused.status_code == 403
        done = web.post(
            f"/incidents/{made.id}/confirm",
            data={"reason": "confirmed with the vendor", "csrf": csrf},
        )
        assert done.status_code == 303
    with live_server.client() as op:
        assert op.do(Calls.incident(made.id)).state == "confirmed"
        csrf_refusals = op.do(Calls.audit(action="dashboard.form"))
    assert [r.outcome for r in csrf_refusals] == ["refused"]


def test_a_human_approves_in_the_page_and_the_agent_gets_its_directive(
    live_server: LiveServer,
) -> None:
    with live_server.client("jarvis") as jarvis:
        req = jarvis.do(
            Calls.request_approval(
                "issue_directive",
                {"plan": "p1"},
                "phase one",
                executor="gene",
                constraints="staging only",
            )
        )
    with _signed_in(live_server) as (web, csrf):
        assert "phase one" in web.get("/approvals").text
        web.post(f"/approvals/{req.id}/approve", data={"reason": "go", "csrf": csrf})
        assert "approved" in web.get("/approvals").text
        web.post("/logout", data={"csrf": csrf})
        assert web.get("/").status_code == 303  # signed out
    with live_server.client("gene") as gene:
        got = gene.do(Calls.inbox())
    assert [d.message.kind.value for d in got.deliveries] == ["directive"]


def test_the_event_stream_announces_changes(live_server: LiveServer) -> None:
    with (
        _signed_in(live_server) as (web, _),
        web.stream("GET", "/events", timeout=15) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        with live_server.client("gene") as gene:
            gene.do(Calls.report_incident("P3", "disk 85%", "df"))
        for line in lines:
            if line.startswith("event: change"):
                break
        else:
            pytest.fail("no change event")


# --- dash: search, compose, pause/resume/restart, health, audit, favicon, docs -----------------
def test_messages_are_found_and_a_thread_read(live_server: LiveServer) -> None:
    with live_server.client("jarvis") as jarvis:
        asked = jarvis.do(Calls.send("gene", "rotate the backup keys", subject="keys"))
        jarvis.do(Calls.send("sentinel", "watch disk 7", subject="disk", priority=Priority.HIGH))
    with live_server.client("gene") as gene:
        gene.do(Calls.send("jarvis", "done, 3 keys", subject="Re: keys", reply_to=asked.message.id))
    with _signed_in(live_server) as (web, _):
        found = web.get("/messages", params={"q": "KEYS"}).text
        assert 'id="hit-' in found
        assert found.count('class="msg"') == 2  # the ask and the reply, not the disk alarm
        high = web.get("/messages", params={"priority": "high"}).text
        assert "watch disk 7" in high
        assert "rotate the backup" not in high
        assert (
            web.get("/messages", params={"from": "gene", "state": "queued"}).text.count(
                'class="msg"'
            )
            == 1
        )
        thread = web.get("/messages", params={"thread": asked.message.thread_id}).text
        assert "rotate the backup keys" in thread
        assert "done, 3 keys" in thread
        bad = web.get("/messages", params={"since": "last tuesday"}).text
        assert "since: &#39;last tuesday&#39; is not a date or time" in bad


def test_the_pager_walks_back_by_fifty(live_server: LiveServer) -> None:
    with live_server.client() as op:  # an operator: agents have a per-pair limit
        op.do(
            Calls.send_batch(
                [SendRequest(to="gene", subject=f"n{i}", body="bulk") for i in range(60)]
            )
        )
    with _signed_in(live_server) as (web, _):
        first = web.get("/messages", params={"q": "bulk"}).text
        assert first.count('class="msg"') == 50
        older = re.search(r'href="(/messages\?[^"]+)" rel="next"', first)
        assert older is not None
        second = web.get(older[1].replace("&amp;", "&")).text
        assert second.count('class="msg"') == 10
        assert 'rel="next"' not in second
        assert "Newest" in second


def test_a_directive_sent_from_the_page_is_governed_and_audited(live_server: LiveServer) -> None:
    with _signed_in(live_server) as (web, csrf):
        form = {"to": "gene", "kind": "directive", "priority": "high", "subject": "patch db1",
                "body": "apply the patch tonight", "key": "k1"}  # fmt: skip
        assert web.post("/messages/send", data=form).status_code == 403  # no CSRF token
        sent = web.post("/messages/send", data={**form, "csrf": csrf})
        assert sent.status_code == 303
        assert "/messages?thread=" in sent.headers["location"]
        again = web.post("/messages/send", data={**form, "csrf": csrf})  # the same form twice
        assert again.headers["location"] == sent.headers["location"]
        unknown = web.post(
            "/messages/send", data={**form, "to": "nobody", "key": "k2", "csrf": csrf}
        )
        assert "error=not+sent" in unknown.headers["location"]
        bad = web.post("/messages/send", data={**form, "kind": "shout", "key": "k3", "csrf": csrf})
        assert "error=not+sent" in bad.headers["location"]
    with live_server.client("gene") as gene:
        got = gene.do(Calls.inbox()).deliveries
    assert [(d.message.kind.value, d.message.sender) for d in got] == [("directive", "founder")]
    # An agent whom the matrix does not let issue directives alone is refused the same way.
    with live_server.client("gene") as gene, pytest.raises(McosError):
        gene.do(Calls.send("sentinel", "do it", kind=MessageKind.DIRECTIVE))


def test_pause_resume_and_restart_from_the_page(live_server: LiveServer) -> None:
    with live_server.client("gene") as gene:
        gene.do(Calls.report_state("gene", AgentStatus.IDLE, "waiting", info={"pid": 41}))
    with _signed_in(live_server) as (web, csrf):
        assert web.post("/agents/gene/pause", data={"reason": "x"}).status_code == 403
        done = web.post("/agents/gene/pause", data={"reason": "loops on tickets", "csrf": csrf})
        assert done.headers["location"] == "/agents/gene?done=paused"
        page = web.get("/agents/gene").text
        assert "paused by founder: loops on tickets" in page
        assert ">Resume</button>" in page
        assert "gene paused" in web.get("/").text  # the health banner on every page
        with live_server.client("gene") as gene:  # the runtime's own report changes nothing
            seen = gene.do(Calls.report_state("gene", AgentStatus.RUNNING, "main turn"))
        assert seen.state == "paused"
        web.post("/agents/gene/resume", data={"reason": "fixed", "csrf": csrf})
        again = web.post("/agents/gene/resume", data={"csrf": csrf})
        assert "gene+is+not+paused" in again.headers["location"]
        web.post("/agents/gene/restart", data={"reason": "new SOUL", "csrf": csrf})
    with live_server.client() as op:
        agent = op.do(Calls.agent("gene"))
        assert agent.state == "idle"
        assert agent.state_info["pid"] == 41
        actions = [r.action for r in op.do(Calls.audit(actor="operator:founder"))]
        requests = op.do(Calls.restart_requests(0))
    assert {"agent.pause", "agent.resume", "agent.restart_requested"} <= set(actions)
    assert [(r.agent, r.reason) for r in requests.requests] == [("gene", "new SOUL")]


def test_the_audit_page_lays_records_out(live_server: LiveServer) -> None:
    with live_server.client("gene") as gene, pytest.raises(McosError):
        gene.do(Calls.create_token(PrincipalKind.OPERATOR, "mallory"))
    with _signed_in(live_server) as (web, _):
        page = web.get("/audit-log").text
    assert "{&#39;" not in page
    assert "{'" not in page
    assert '<small class="kind">agent</small> <strong>gene</strong>' in page
    assert "<dt>rule</dt>" in page


def test_favicon_docs_without_a_cdn_and_a_token_chart(live_server: LiveServer) -> None:
    with _signed_in(live_server) as (web, _):
        assert web.get("/static/favicon.svg").headers["content-type"].startswith("image/svg")
        assert web.get("/favicon.ico").status_code == 301
        assert 'rel="icon"' in web.get("/").text
        docs = web.get("/docs")
        assert "cdn" not in docs.text.lower()
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text)
        assert assets
        assert all(web.get(a).status_code == 200 for a in assets)
        assert "cdn" not in docs.headers["content-security-policy"]


def test_the_spend_chart_draws_tokens_when_nothing_cost_a_dollar() -> None:
    days = ["2026-12-01", "2026-12-02"]
    free = [UsageRow("2026-12-02", "gene", 3, Usage(input=1200, output=300), 0, 0)]
    chart = spend_chart(free, days)
    assert 'data-unit="tokens"' in chart
    assert "1,500 tokens" in chart
    assert "<rect" in chart
    paid = [*free, UsageRow("2026-12-01", "jarvis", 1, Usage(input=10), 25_000, 0)]
    chart = spend_chart(paid, days)
    assert 'data-unit="dollars"' in chart
    assert "$0.0250" in chart
