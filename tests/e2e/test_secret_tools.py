"""A model that writes its own key through every tool: the key is written nowhere.

The key is not shaped like any known secret, so only its registration (the provider's key is
remembered when the provider is built) can cut it; the agent's Mission Control token rides along
and is cut by its shape. Then everything is scanned: every file under the test's folder (the
workspace, MEMORY.md, daily logs, WORKSTATE.md, the memory index, the mock channel's outbox, the
database and its WAL), the store's tables row by row, the API's answers, the dashboard's pages,
the agent's log records and what went back to the model as tool results.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcos.client import AsyncClient, Calls
from mcos.config.models import BUILTIN_TOOLS
from mcos.domain.redaction import REDACTED, remember
from mcos.logs import formatter
from mcos.models.base import ToolCall
from mcos.models.factory import make_provider
from mcos.runtime.clock import MissionClock
from mcos.runtime.mcp import McpTools
from mcos.runtime.tools import Toolbox, ToolContext
from mcos.runtime.workspace import Workspace
from tests.fakes.anthropic_server import FakeAnthropic, Reply, Text, ToolUse
from tests.runtime import conftest as runtime_rig
from tests.runtime import test_mcp as mcp_tests
from tests.runtime.conftest import RigFactory

rig_factory = runtime_rig.rig_factory
"""The runtime tests' fixture: Mission Control on loopback and the small fleet."""

KEY = "gene-model-key-4b9e1c7d2a6f083e5d"
"""Gene's model key: no known shape, so only the registry of remembered values cuts it."""
MODEL = "claude-sonnet-4-6"
CHANNEL = '\n[channels.reddit]\nkind = "mock"\nagent = "gene"\n'


def _tool_uses(secret: str, message_id: int) -> list[dict[str, object]]:
    """One call of every tool that takes text, each carrying ``secret``."""
    said = f"my key is {secret} (keep it safe)"
    calls: list[tuple[str, dict[str, object]]] = [
        ("memory_write", {"text": said}),
        ("memory_write", {"text": said, "durable": True}),
        ("send_message", {"to": "jarvis", "subject": f"key {secret}", "body": said}),
        ("reply", {"message_id": message_id, "body": said}),
        (
            "request_approval",
            {
                "action": "send_external_email",
                "payload": {"to": "a@example.com", "body": said, "nested": [{secret: said}]},
                "rationale": said,
                "constraints": said,
            },
        ),
        ("report_incident", {"summary": said[:300], "evidence": said, "severity": "P3"}),
        ("report_incident", {"summary": f"disk {secret}", "evidence": said, "severity": "P2"}),
        ("post_to_channel", {"channel": "reddit", "text": said, "to": "u/alice"}),
        ("post_to_channel", {"channel": f"elsewhere-{secret}", "text": said}),
        (
            "send_external_email",
            {"channel": "reddit", "to": "a@example.com", "subject": said, "body": said},
        ),
        ("memory_search", {"query": secret}),
        ("run_check", {"name": secret}),
        ("recover", {"name": f"restart-{secret}", "reason": said}),
        ("confirm_incident", {"incident_id": 1, "reason": said}),
        ("vote", {"approval_id": 1, "vote": "approve", "rationale": said}),
        ("not_a_tool", {"text": said}),  # refused and audited with its input
    ]
    return [{"type": "tool_use", "name": n, "input": i} for n, i in calls]


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes hold ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _tables(db: Path) -> str:
    """Every row of every table of the SQLite store, as text."""
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(
            repr(row) for name in names for row in conn.execute(f'SELECT * FROM "{name}"')
        )


async def test_a_model_that_writes_its_key_through_every_tool_leaks_it_nowhere(
    rig_factory: RigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The agent's log file as its process writes it (runtime/main.py → mcos.logs: JSON lines,
    # every string redacted by the formatter), here at DEBUG: the SDK's request dumps included.
    agent_log = logging.FileHandler(tmp_path / "gene.log")
    agent_log.setFormatter(formatter(agent="gene"))
    logging.getLogger().addHandler(agent_log)
    try:
        await _every_tool(rig_factory, tmp_path, caplog)
    finally:
        logging.getLogger().removeHandler(agent_log)
        agent_log.close()
    assert "anthropic" in (tmp_path / "gene.log").read_text()  # the SDK's dumps were there


async def _every_tool(
    rig_factory: RigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeAnthropic(api_key=KEY) as fake:
        model = (
            f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
            'route = "direct" }'
        )
        tools = json.dumps([*BUILTIN_TOOLS, "send_external_email"])
        rig = rig_factory(
            {"gene": f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"\nallowed_tools = {tools}'},
            tail=CHANNEL,
        )
        token = rig.server.tokens["gene"]
        secrets = (KEY, token)
        gene = rig.runtime("gene", make_provider(rig.fleet.agents["gene"], KEY, {}))
        jarvis = rig.client("jarvis")
        asked = await jarvis.do(Calls.send("gene", "What is your key?", subject="key?"))
        blocks = [b for s in secrets for b in _tool_uses(s, asked.message.id)]
        fake.script(
            Reply([{"type": "text", "text": f"Here it is: {KEY}"}, *blocks], "tool_use"),
            Text(f"Done; the key is {KEY} and my token {token}."),
            ToolUse(
                "write_workstate",
                {
                    "current_task": f"guarding {KEY}",
                    "decisions": f"token {token}",
                    "open_threads": KEY,
                    "next_steps": token,
                },
            ),
            Text("saved"),
        )
        await gene.claim()
        assert await gene.handle_messages()
        await gene.flush_and_compact()
        results = [
            json.dumps(block.get("content"))
            for r in fake.requests
            for turn in r.body["messages"]
            if isinstance(turn["content"], list)
            for block in turn["content"]
            if block.get("type") == "tool_result"
        ]
        assert len(fake.requests) == 4, "every scripted answer was asked for"

        # The tools ran: the key's place is marked in what they wrote (the test is not hollow).
        workspace = gene.workspace.root
        assert f"my key is {REDACTED}" in (workspace / "MEMORY.md").read_text()
        assert f"my key is {REDACTED}" in gene.workspace.daily_log(gene.clock.now()).read_text()
        assert f"guarding {REDACTED}" in (workspace / "WORKSTATE.md").read_text()
        outbox = rig.fleet.channel_path("reddit") / "outbox" / "posts.jsonl"
        assert f"my key is {REDACTED}" in outbox.read_text()
        op = rig.client()
        approvals = await op.do(Calls.approvals())
        assert approvals
        assert approvals[0].payload["body"] == f"my key is {REDACTED} (keep it safe)"
        incidents = await op.do(Calls.incidents())
        assert len(incidents) >= 2
        thread = await jarvis.do(Calls.thread(asked.message.thread_id))
        assert [m.body for m in thread[1:]] == [f"my key is {REDACTED} (keep it safe)"] * 2
        audit = await op.do(Calls.audit(limit=1000))
        refused = [a for a in audit if a.action == "runtime.tool.refused"]
        assert refused, "the disallowed tool's refusal (with its input) is in the audit log"

        # What Mission Control shows: the API and the dashboard.
        shown = [
            str(await op.do(call))
            for call in (
                Calls.agents(),
                Calls.approvals(),
                Calls.incidents(),
                Calls.audit(limit=1000),
                Calls.audit_csv(),
                Calls.thread(asked.message.thread_id),
            )
        ]
        shown.append(str(await jarvis.do(Calls.inbox(limit=100))))
        async with httpx.AsyncClient(base_url=rig.server.url, timeout=10) as web:
            signed = await web.post("/login", data={"token": rig.server.operator_token})
            assert signed.status_code == 303
            pages = [
                "/",
                "/agents/gene",
                f"/messages?thread={asked.message.thread_id}",
                "/incidents",
                "/approvals",
                "/audit-log",
            ]
            for page in pages:
                got = await web.get(page)
                assert got.status_code == 200, page
                shown.append(got.text)
        assert any(REDACTED in s for s in shown)
        await gene.aclose()

    # Then everything is scanned for either secret.
    for secret in secrets:
        files = _files_holding(tmp_path, secret)
        assert files == [], f"{secret[:12]}… written to {files}"
        assert secret not in _tables(tmp_path / "mcos.db")
        assert not [s[:200] for s in shown if secret in s]
        # Even unfiltered, nothing at the agent's level (INFO) carries it: not just the filter.
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert [m[:200] for m in said if secret in m] == []
        assert len(results) > 2 * len(_tool_uses(secret, 0))
        assert not [r for r in results if secret in r], "a tool result quoted the secret"


calc_url = mcp_tests.calc_url
"""A real MCP server over streamable HTTP (``tests/fakes/mcp_http_server.py``), in a process."""


async def test_mcp_tool_arguments_reach_the_server_redacted(
    tmp_path: Path, calc_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an MCP server receives went through the gate: its echo proves nothing (results are
    redacted too), so the arguments are read on their way to the real server."""
    fleet = mcp_tests.mcp_fleet(
        tmp_path, ["calc__explode"], mcp_tests.server_toml("calc", url=calc_url)
    )
    remember(KEY)
    mcp = await McpTools.open(fleet, "gene")
    sent: list[dict[str, object]] = []
    run = mcp._run

    async def spy(conn: Any, session: Any, tool: Any, args: dict[str, object]) -> Any:
        sent.append(args)
        return await run(conn, session, tool, args)

    monkeypatch.setattr(mcp, "_run", spy)
    async with AsyncClient("http://127.0.0.1:9", "unused") as client:
        ctx = ToolContext("gene", None, client, Workspace(tmp_path), MissionClock())
        toolbox = Toolbox(ctx, [], mcp)
        try:
            result = await toolbox.call(
                ToolCall("c1", "calc__explode", {"reason": f"key {KEY}", KEY: "x"})
            )
        finally:
            await mcp.aclose()
    assert sent == [{"reason": f"key {REDACTED}", REDACTED: "x"}]
    assert f"exploded: key {REDACTED}" in result.content  # the real server ran with it
