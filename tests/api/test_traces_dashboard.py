"""The dashboard's turn pages over real HTTP: an agent's turns, one turn in full with its links
to the messages that woke it and those it sent, and a message's turns."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mcos.api_traces import TraceCalls, TraceIn, TraceModelCall, TraceSection, TraceToolCall
from mcos.client import Calls
from tests.api.conftest import LiveServer, serve_on
from tests.api.test_dashboard import _signed_in


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with serve_on("sqlite", tmp_path) as (live, _):
        yield live


def test_an_agents_turns_and_one_turn_in_full(server: LiveServer) -> None:
    with server.client("jarvis") as jarvis, server.client("gene") as gene:
        asked = jarvis.do(Calls.send("gene", "Is the VPS healthy?", subject="VPS")).message
        answer = gene.do(Calls.send("jarvis", "Healthy.", reply_to=asked.id)).message
        posted = gene.do(
            TraceCalls.post(
                TraceIn(
                    id="turn-0123456789",
                    kind="main",
                    woke_by="message",
                    woke_messages=[asked.id],
                    started_at=datetime.now(UTC),
                    latency_ms=2500,
                    outcome="ok",
                    sections=[TraceSection(name="SOUL.md", chars=4000, tokens=1000)],
                    calls=[TraceModelCall(model="offline", input_tokens=1234, reported_usd=0.5)],
                    tools=[TraceToolCall(name="reply", arguments='{"body": "<b>Healthy.</b>"}')],
                    governance=["send_message: refused by the ping-pong rule"],
                    sent_messages=[answer.id],
                    final_text="Done.",
                )
            )
        )
    with httpx.Client(base_url=server.url, follow_redirects=False) as web:
        assert web.get(f"/turns/{posted.id}").headers["location"] == "/login"
    with _signed_in(server) as (web, _):
        assert 'href="/agents/gene/turns"' in web.get("/agents/gene").text
        listing = web.get("/agents/gene/turns").text
        assert f'href="/turns/{posted.id}"' in listing
        assert "1234" in listing
        assert "reported" in listing  # no hold named: the agent's own figure, and said so
        page = web.get(f"/turns/{posted.id}")
        assert page.status_code == 200
        text = html.unescape(page.text)
        for shown in ("SOUL.md", "1000", "reply", "ping-pong rule", "$0.500000", "2.50 s", "Done."):
            assert shown in text, shown
        assert '{"body": "<b>Healthy.</b>"}' in text  # shown as text, escaped in the page
        assert "<b>Healthy.</b>" not in page.text
        assert f'href="/messages?thread={asked.thread_id}">message #{asked.id}' in page.text
        assert f"message #{answer.id}" in page.text
        by_message = web.get(f"/turns?message={answer.id}").text
        assert f'href="/turns/{posted.id}"' in by_message
        assert web.get("/turns/no-such-turn").status_code == 404
        assert "No turns recorded" in web.get("/agents/jarvis/turns").text
