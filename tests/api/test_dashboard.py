"""The dashboard over real HTTP: sign-in, pages, decisions with CSRF, live-update stream."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from mcos.client import Calls
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
