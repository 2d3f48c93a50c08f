"""What an agent's log says about a turn: the message handled, the tools called, the turn's
start and end with its cost; and Mission Control's access log for the requests it made."""

from __future__ import annotations

import json
import logging

import pytest

from mcos.client import Calls
from mcos.domain.messages import MessageKind
from mcos.logs import formatter
from tests.runtime.conftest import Rig

Line = dict[str, object]


def _json_lines(caplog: pytest.LogCaptureFixture) -> list[Line]:
    return [json.loads(line) for line in caplog.text.splitlines()]


async def test_a_turn_logs_its_message_tools_and_cost(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Every line is a JSON object with the agreed keys; the turn's end carries its cost and
    tokens; the message handled names its id, sender and kind; the access log names the agent,
    never its token."""
    caplog.handler.setFormatter(formatter(json=True))
    caplog.set_level(logging.INFO)
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(
        Calls.send("gene", "Rotate the backup disks today.", subject="Rotate backups",
                   kind=MessageKind.DIRECTIVE)
    )  # fmt: skip
    assert await gene.claim() == 1
    assert await gene.handle_messages()

    lines = _json_lines(caplog)
    for line in lines:
        assert {"timestamp", "level", "event", "logger"} <= set(line)
    mine = [ln for ln in lines if ln.get("agent") == "gene"]
    events = [ln["event"] for ln in mine]
    assert events.index("turn started") < events.index("tool called") < events.index("turn ended")
    started = next(ln for ln in mine if ln["event"] == "turn started")
    assert started["messages"] == [sent.message.id]
    ended = next(ln for ln in mine if ln["event"] == "turn ended")
    assert ended["outcome"] == "done"
    assert ended["cost_usd"] == gene.stats.cost_micros / 1_000_000
    assert ended["model_calls"] == gene.stats.model_calls >= 1
    assert isinstance(ended["tokens"], dict)
    assert ended["tokens"]["output"] > 0
    tool = next(ln for ln in mine if ln["event"] == "tool called")
    assert tool["tool"] == "reply"
    handled = next(ln for ln in mine if ln["event"] == "message handled")
    assert (handled["message_id"], handled["sender"], handled["kind"]) == (
        sent.message.id,
        "jarvis",
        "directive",
    )

    access = [ln for ln in lines if ln["logger"] == "mcos.server.access"]
    sends = [a for a in access if a["method"] == "POST" and a["path"] == "/v1/messages"]
    assert [(a["status"], a["principal"]) for a in sends] == [
        (201, "agent:jarvis"),
        (201, "agent:gene"),  # the reply
    ]
    assert all(isinstance(a["latency_ms"], float) for a in access)
    for secret in rig.server.tokens.values():
        assert secret not in caplog.text
