"""Mission Control's own line of defence: secret-shaped strings an API client sends (not only
the runtime, which redacts first) are cut before messages, audit events, approvals, incidents
and agent states are stored."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcos.api_models import RuntimeEvent
from mcos.channels.base import Inbound
from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.redaction import REDACTED
from mcos.exceptions import Forbidden
from mcos.runtime.channels import inbound_body
from mcos.server.context import ChannelBinding
from tests.api.conftest import LiveServer, migrate, serve

ANTHROPIC = "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm"
OPENAI = "sk-proj-Q1w2E3r4T5y6U7i8O9p0AaSsDdFfGgHh"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control (SQLite, scanned as a file below) with gene bound to a Telegram bot."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    with serve(url, tmp_path, channels={"tg": ChannelBinding("telegram", "gene")}) as live:
        yield live


def test_secret_shapes_are_cut_before_anything_is_stored(server: LiveServer) -> None:
    token = server.tokens["jarvis"]  # an mcos token, pasted by another agent
    leaked = f"keys: {ANTHROPIC}, {OPENAI} and Bearer {token}"
    secrets = (ANTHROPIC, OPENAI, token, token.split("_", 2)[2])  # the secret may hold "_"
    with server.client("gene") as gene:
        sent = gene.do(
            Calls.send(
                "jarvis", leaked, subject=f"key {ANTHROPIC}", meta={"key": OPENAI},
                idempotency_key="k1",
            )
        )  # fmt: skip
        again = gene.do(
            Calls.send(
                "jarvis", leaked, subject=f"key {ANTHROPIC}", meta={"key": OPENAI},
                idempotency_key="k1",
            )
        )  # fmt: skip
        event = gene.do(
            Calls.record_event(
                RuntimeEvent(
                    action="runtime.tool.refused", targets={"tool": OPENAI},
                    detail={"input": leaked, "nested": {ANTHROPIC: [leaked]}}, outcome="refused",
                )
            )
        )  # fmt: skip
        approval = gene.do(
            Calls.request_approval(
                "send_external_email", {"to": "a@example.com", "body": leaked}, leaked,
                constraints=leaked,
            )
        )  # fmt: skip
        pasted = Inbound(
            "tg", "alice", f"here is my key: {OPENAI}", datetime.now(UTC), ref="1", sender_id="1",
            reply_to="1", subject=f"key {ANTHROPIC}",
        )  # fmt: skip
        inbound = gene.do(Calls.channel_inbound("tg", inbound_body(pasted)))
        incident = gene.do(Calls.report_incident("P2", f"disk {ANTHROPIC}", leaked, leaked))
        gene.do(Calls.report_state("gene", AgentStatus.IDLE, leaked, info={"why": leaked}))
        with server.client() as op:
            assert op.do(Calls.vote(approval.id, "approve", "fine")).state == "approved"
        # The payload approved is the redacted one: a secret-bearing payload never matches it.
        with pytest.raises(Forbidden, match="may not be done alone"):
            gene.do(
                Calls.authorize(
                    "send_external_email", {"to": "a@example.com", "body": leaked}, approval.id
                )
            )
        gene.do(Calls.authorize("send_external_email", approval.payload, approval.id))
    assert sent.message.body == f"keys: {REDACTED}, {REDACTED} and Bearer {REDACTED}"
    assert sent.message.subject == f"key {REDACTED}"
    assert sent.message.meta == {"key": REDACTED}
    assert not again.created  # a repeat still matches the stored (redacted) original
    assert again.message.id == sent.message.id
    assert event.targets == {"tool": REDACTED}
    assert event.detail["nested"] == {REDACTED: [sent.message.body]}
    assert approval.payload["body"] == sent.message.body
    assert approval.rationale == sent.message.body
    assert incident.summary == f"disk {REDACTED}"
    with server.client("gene") as gene:
        chat = gene.do(Calls.message(inbound.message_id))
    assert (chat.subject, chat.body) == (f"key {REDACTED}", f"here is my key: {REDACTED}")
    with server.client() as op:
        shown = [
            str(op.do(call))
            for call in (
                Calls.agents(),
                Calls.approvals(),
                Calls.incidents(),
                Calls.audit(limit=1000),
                Calls.thread(sent.message.thread_id),
            )
        ]
    with sqlite3.connect(server.state_dir.parent / "mcos.db") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = "\n".join(
            repr(row) for name in names for row in conn.execute(f'SELECT * FROM "{name}"')
        )
    assert REDACTED in rows
    for secret in secrets:
        assert secret not in rows
        assert not [s[:100] for s in shown if secret in s]
