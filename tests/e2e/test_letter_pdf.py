"""The orchestrator drafts a letter to a PDF and the founder is paged to review it: a small fleet
of its own (jarvis with ``render_pdf`` and ``send_message``; the founder paged on a mock
channel), a scripted model through the real Anthropic SDK, Mission Control on loopback, the PDF
printed by Debian's chromium."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader

from mcos.channels.factory import open_channel
from mcos.client import AsyncClient, Calls
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.models.factory import make_provider
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.clock import MissionClock
from mcos.runtime.workspace import TurnKind
from mcos.server.factory import channel_bindings, page_routes
from mcos.server.gateway.keys import gateway_agents
from tests.api.conftest import LiveServer, migrate, serve
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse
from tests.runtime.conftest import FAST
from tests.runtime.test_render_pdf import LETTER, need_chromium
from tests.waiting import eventually

KEY = "sk-ant-test-jarvis"
MODEL = "claude-sonnet-4-6"


def letters_fleet(root: Path, model_url: str) -> Fleet:
    """The small fleet; the founder paged on ``founder-pager`` (a mock channel); jarvis on a
    Claude model served by the fake, allowed to render PDFs and send messages."""
    path = init_fleet(root, template="small")
    text = path.read_text()
    text = text.replace(
        '[humans.founder]\nrole = "founder"\n',
        '[humans.founder]\nrole = "founder"\npage = ["founder-pager"]\n',
    )
    jarvis = (
        f'[agents.jarvis]\nmodel = {{ provider = "anthropic", id = "{MODEL}", '
        f'base_url = "{model_url}", route = "direct" }}\nkey = "env:JARVIS_ANTHROPIC_KEY"\n'
        'allowed_tools = ["render_pdf", "send_message", "memory_write"]\n'
    )
    start = text.index("[agents.jarvis]\n")
    kept = [
        line
        for line in text[start : text.index("\n[", start)].splitlines()[1:]
        if not line.startswith("model =")
    ]
    end = text.index("\n[", start)
    text = text[:start] + jarvis + "\n".join(kept) + text[end:]
    text += '\n[channels.founder-pager]\nkind = "mock"\n'
    path.write_text(text)
    return load_fleet(path)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def mission(tmp_path: Path, fake: FakeAnthropic) -> Iterator[tuple[Fleet, LiveServer]]:
    """Mission Control for the letters fleet, paging over its own mock channel."""
    fleet = letters_fleet(tmp_path / "fleet", fake.url)
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    with serve(
        url,
        tmp_path,
        channels=channel_bindings(fleet),
        page_routes=page_routes(fleet),
        own_channels={"founder-pager": open_channel("founder-pager", fleet)},
        gateway=gateway_agents(fleet),
        models={n: a.model for n, a in fleet.agents.items()},
        prices=fleet.price_table(),
    ) as server:
        yield fleet, server


async def test_jarvis_drafts_a_letter_and_pages_the_founder(
    mission: tuple[Fleet, LiveServer], fake: FakeAnthropic
) -> None:
    """render_pdf writes the letter into jarvis's workspace; an urgent request to the founder
    with its path becomes a page on the founder's channel; the render is audited."""
    need_chromium()
    fleet, server = mission
    client = AsyncClient(server.url, server.tokens["jarvis"], timeout=45)
    operator = AsyncClient(server.url, server.operator_token, timeout=45)
    provider = make_provider(fleet.agents["jarvis"], KEY, fleet.price_table())
    jarvis = AgentRuntime("jarvis", fleet, client, provider, MissionClock(), settings=FAST)
    try:
        await jarvis.start()
        fake.script(
            ToolUse("render_pdf", {"path": "letters/acme-demand.pdf", "content": LETTER,
                                   "title": "Demand to Acme Supplies"}),
            ToolUse("send_message", {"to": "founder", "kind": "request", "priority": "urgent",
                                     "subject": "Review: demand letter to Acme",
                                     "body": "Please review letters/acme-demand.pdf before it "
                                             "goes out."}),
        )  # fmt: skip
        await jarvis.turn(TurnKind.MAIN, "Draft the demand letter to Acme for the founder.")
        assert len(fake.requests) == 2  # the message was the round's only act: the turn ends
        rendered = [
            b
            for b in fake.requests[1].body["messages"][-1]["content"]
            if b["type"] == "tool_result"
        ]
        assert "wrote letters/acme-demand.pdf in your workspace" in rendered[0]["content"]

        letter = fleet.workspace_path("jarvis") / "letters" / "acme-demand.pdf"
        assert "Invoice 2291" in PdfReader(letter).pages[0].extract_text()

        async def paged() -> list[str]:
            pages = await operator.do(Calls.pages(human="founder"))
            return [p.kind for p in pages if p.state == "sent"]

        assert await eventually("the founder paged", paged) == ["urgent"]
        outbox = fleet.channel_path("founder-pager") / "outbox" / "posts.jsonl"
        [post] = [json.loads(line) for line in outbox.read_text().splitlines()]
        assert post["to"] == "founder"
        assert "letters/acme-demand.pdf" in post["text"]
        audit = await operator.do(Calls.audit(action="runtime.pdf.render"))
        assert [(e.actor, e.targets["path"]) for e in audit] == [
            ("agent:jarvis", "letters/acme-demand.pdf")
        ]
    finally:
        await jarvis.aclose()
        await client.aclose()
        await operator.aclose()
