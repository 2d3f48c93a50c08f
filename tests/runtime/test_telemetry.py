"""OpenTelemetry export: a message → the turn that handles it → its reply, in one trace, as
spans named and attributed by the GenAI semantic conventions, received over OTLP/HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from mcos.client import Calls
from mcos.domain.messages import MessageKind
from mcos.exceptions import ConfigError
from mcos.runtime.telemetry import Telemetry
from tests.fakes.otlp_server import FakeCollector
from tests.runtime.conftest import RigFactory
from tests.waiting import wait_until

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


def _telemetry(endpoint: str) -> str:
    return f'[telemetry]\notlp_endpoint = "{endpoint}"\nservice_name = "fleet-under-test"\n'


async def test_a_message_its_turn_and_the_reply_share_one_trace(
    rig_factory: RigFactory, collector: FakeCollector
) -> None:
    """The turn is a child of the first message's span and links the second; its model call
    and tool call are its children; the reply carries the reply tool's span as its parent."""
    rig = rig_factory(tail=_telemetry(collector.endpoint))
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    first = await jarvis.do(
        Calls.send("gene", "Rotate the backup disks today.", subject="Rotate backups",
                   kind=MessageKind.DIRECTIVE,
                   meta={"traceparent": f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"})
    )  # fmt: skip
    await jarvis.do(
        Calls.send("gene", "And check the UPS.", subject="UPS",
                   meta={"traceparent": f"00-{OTHER_TRACE}-{OTHER_SPAN}-01"})
    )  # fmt: skip
    assert await gene.claim() == 2
    assert await gene.handle_messages()
    gene.telemetry.close()  # flushes the batch

    (turn,) = wait_until("the turn's span", lambda: collector.named("invoke_agent"))
    assert turn.name == "invoke_agent gene"
    assert (turn.trace_id, turn.parent_span_id) == (SENDER_TRACE, SENDER_SPAN)
    assert turn.links == [(OTHER_TRACE, OTHER_SPAN)]
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["gen_ai.agent.name"] == "gene"
    assert turn.attributes["gen_ai.provider.name"] == gene.provider.provider
    assert turn.attributes["gen_ai.request.model"] == gene.provider.model
    assert turn.attributes["gen_ai.conversation.id"] == str(first.message.thread_id)
    assert turn.attributes["mcos.message.ids"] == [first.message.id, first.message.id + 1]
    assert turn.attributes["mcos.outcome"] == "done"
    assert turn.resource["service.name"] == "fleet-under-test"
    assert turn.resource["service.instance.id"] == "gene"

    chats = collector.named("chat ")
    assert chats
    assert {c.name for c in chats} == {f"chat {gene.provider.model}"}
    for chat in chats:
        assert (chat.trace_id, chat.parent_span_id, chat.kind) == (
            SENDER_TRACE,
            turn.span_id,
            "client",
        )
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
        assert chat.attributes["gen_ai.response.finish_reasons"]
    assert turn.attributes["gen_ai.usage.input_tokens"] == sum(
        c.attributes["gen_ai.usage.input_tokens"] for c in chats
    )

    tools = collector.named("execute_tool ")
    replies = [t for t in tools if t.attributes["gen_ai.tool.name"] == "reply"]
    assert len(replies) == 2
    for tool in tools:
        assert (tool.trace_id, tool.parent_span_id) == (SENDER_TRACE, turn.span_id)
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.call.id"]
    thread = await jarvis.do(Calls.thread(first.message.thread_id))
    answer = thread[-1]
    assert answer.sender == "gene"
    _, trace_id, parent_id, _ = answer.meta["traceparent"].split("-")
    assert trace_id == SENDER_TRACE
    assert parent_id in {t.span_id for t in replies}


async def test_a_message_without_trace_context_starts_a_trace_its_reply_continues(
    rig_factory: RigFactory, collector: FakeCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No traceparent on the message: the turn is a root span, and the reply still carries
    the turn's trace for whoever handles it next. A header's key reference is resolved."""
    monkeypatch.setenv("MCOS_TEST_OTLP_KEY", "collector-key-123")
    headers = 'headers = { "x-api-key" = "env:MCOS_TEST_OTLP_KEY", "x-team" = "ops" }\n'
    rig = rig_factory(tail=_telemetry(collector.endpoint) + headers)
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(Calls.send("gene", "Status?", subject="Status"))
    assert await gene.claim() == 1
    assert await gene.handle_messages()
    gene.telemetry.close()
    (turn,) = wait_until("the turn's span", lambda: collector.named("invoke_agent"))
    assert turn.parent_span_id == ""
    assert turn.links == []
    thread = await jarvis.do(Calls.thread(sent.message.thread_id))
    assert thread[-1].meta["traceparent"].split("-")[1] == turn.trace_id
    assert collector.headers[0]["x-api-key"] == "collector-key-123"
    assert collector.headers[0]["x-team"] == "ops"


def test_a_header_reference_that_does_not_resolve_is_a_config_error(
    rig_factory: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent does not start half-configured: the error names the fleet file's key."""
    monkeypatch.delenv("MCOS_TEST_OTLP_MISSING", raising=False)
    tail = _telemetry("http://127.0.0.1:9/v1/traces")
    tail += 'headers = { "x-api-key" = "env:MCOS_TEST_OTLP_MISSING" }\n'
    rig = rig_factory(tail=tail)
    with pytest.raises(ConfigError) as caught:
        Telemetry.open(rig.fleet, "gene")
    assert "telemetry.headers" in caught.value.message
    assert "MCOS_TEST_OTLP_MISSING" in caught.value.message


async def test_telemetry_is_off_without_an_endpoint(rig_factory: RigFactory) -> None:
    """No [telemetry] section: nothing exported, no trace context on the reply."""
    rig = rig_factory()
    gene = rig.runtime("gene")
    assert not gene.telemetry.on
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(Calls.send("gene", "Status?", subject="Status"))
    assert await gene.claim() == 1
    assert await gene.handle_messages()
    thread = await jarvis.do(Calls.thread(sent.message.thread_id))
    assert "traceparent" not in thread[-1].meta


def test_an_agent_without_telemetry_never_imports_opentelemetry() -> None:
    """Zero cost when off: the agent process's modules do not load the SDK."""
    code = (
        "import sys, mcos.runtime.main, mcos.runtime.process, mcos.runtime.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
