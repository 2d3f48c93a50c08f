"""Every model turn leaves a trace in Mission Control: what woke it, its prompt by section, each
call and tool call (a secret in the arguments never reaches the trace), what was refused, what
it sent, and a cost equal to what Mission Control metered for its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from mcos.api_traces import MAX_TRACE_BYTES, TraceCalls, TraceIn, TraceToolCall
from mcos.client import AsyncClient, Calls
from mcos.domain.messages import MessageKind
from mcos.models.anthropic import AnthropicModel
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.runtime.tracing import fit, post
from tests.api.conftest import free_port
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse
from tests.runtime.conftest import Rig, RigFactory

KEY = "sk-ant-trace-gateway-key-0123456789abcdef"
MODEL = "claude-haiku-4-5"
SECRET = "sk-ant-api03-TopSecretValueThatMustNeverLeak0123456789"


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def _through_gateway(rig: Rig) -> AnthropicModel:
    provider = make_provider(
        rig.fleet.agents["gene"],
        None,
        rig.fleet.price_table(),
        sleep=_no_sleep,
        gateway=GatewayAccess(rig.server.url, rig.server.tokens["gene"]),
    )
    assert isinstance(provider, AnthropicModel)
    return provider


async def test_a_gateway_turn_is_traced_with_metered_cost_and_redacted_arguments(
    rig_factory: RigFactory, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACE_GENE_KEY", KEY)
    model = f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}" }}'
    rig = rig_factory({"gene": f'{model}\nkey = "env:TRACE_GENE_KEY"\n'})
    gene = rig.runtime("gene", _through_gateway(rig))
    jarvis = rig.client("jarvis")
    asked = (await jarvis.do(Calls.send("gene", "Is the VPS healthy?", subject="VPS"))).message
    fake.script(
        ToolUse("delete_everything", {"token": SECRET}),
        ToolUse("reply", {"message_id": asked.id, "body": f"Healthy. Key: {SECRET}"}),
    )
    await gene.claim()
    assert await gene.handle_messages()
    operator = rig.client()
    [summary] = await operator.do(TraceCalls.find(message=asked.id))
    trace = await operator.do(TraceCalls.get(summary.id))
    thread = await jarvis.do(Calls.thread(asked.thread_id))
    # What woke it, and what it sent.
    assert (trace.agent, trace.kind, trace.woke_by, trace.outcome) == (
        "gene",
        "main",
        "message",
        "ok",
    )
    assert trace.woke_messages == [asked.id]
    assert trace.sent_messages == [thread[-1].id]
    assert [t.id for t in await operator.do(TraceCalls.find(message=thread[-1].id))] == [trace.id]
    # The prompt by section, with token estimates.
    sections = {s.name: s for s in trace.sections}
    assert {"SOUL.md", "MEMORY.md", "tools", "history", "turn"} <= set(sections)
    assert sections["SOUL.md"].tokens > 0
    assert sections["turn"].tokens > 0
    # Each call, and its cost as Mission Control metered it at the gateway.
    assert len(trace.calls) == len(fake.requests) == 2
    assert all(c.reservation_id for c in trace.calls)
    billed = [r.usage for r in fake.requests if r.usage is not None]
    assert [c.input_tokens for c in trace.calls] == [u["input_tokens"] for u in billed]
    [day] = await operator.do(Calls.usage(agent="gene"))
    assert trace.cost_source == "metered"
    assert trace.metered_calls == 2
    assert trace.cost_usd == pytest.approx(day.cost_usd)
    assert trace.cost_usd > 0
    # Tool calls, redacted; the refusal is shown.
    assert [t.name for t in trace.tools] == ["delete_everything", "reply"]
    assert trace.tools[0].refused
    assert trace.tools[0].is_error
    assert "[redacted]" in trace.tools[0].arguments
    assert any("delete_everything" in g for g in trace.governance)
    assert not trace.tools[1].refused
    async with httpx.AsyncClient() as http:
        raw = await http.get(
            f"{rig.server.url}/v1/traces/{trace.id}",
            headers={"Authorization": f"Bearer {rig.server.operator_token}"},
        )
    assert raw.status_code == 200
    assert SECRET not in raw.text
    assert trace.latency_ms >= sum(c.latency_ms for c in trace.calls) > 0


async def test_an_offline_turn_is_traced_and_its_cost_is_the_metered_one(rig: Rig) -> None:
    """Direct mode: the runtime reserves each call itself and the trace names the holds."""
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(
        Calls.send("gene", "Rotate the backup disks.", subject="Rotate", kind=MessageKind.DIRECTIVE)
    )
    await gene.claim()
    assert await gene.handle_messages()
    [summary] = await rig.client("gene").do(TraceCalls.find())
    trace = await rig.client().do(TraceCalls.get(summary.id))
    assert trace.woke_messages == [sent.message.id]
    assert trace.cost_source == "metered"
    assert trace.metered_calls == len(trace.calls) == gene.stats.model_calls
    day = await rig.client().do(Calls.usage(agent="gene"))
    assert trace.cost_usd == pytest.approx(sum(d.cost_usd for d in day))
    assert trace.input_tokens == gene.stats.tokens["input"]
    assert trace.sent_messages


async def test_a_trace_that_cannot_be_posted_never_fails_the_turn() -> None:
    """Mission Control unreachable: the post says so and returns; nothing is raised."""
    trace = TraceIn(
        id="abcdef0123",
        kind="main",
        woke_by="heartbeat",
        started_at=datetime.now(UTC),
        latency_ms=1,
        outcome="ok",
    )
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", "mcos_token", timeout=2) as c:
        assert not await post(c, trace, "gene")


def test_an_over_size_trace_is_cut_to_fit() -> None:
    tool = TraceToolCall(name="memory_search", arguments="a" * 4000, result="r" * 4000)
    trace = TraceIn(
        id="abcdef0123",
        kind="main",
        woke_by="message",
        started_at=datetime.now(UTC),
        latency_ms=1,
        outcome="ok",
        tools=[tool] * 200,
        final_text="f" * 4000,
    )
    assert len(trace.model_dump_json()) > MAX_TRACE_BYTES
    cut = fit(trace)
    assert len(cut.model_dump_json().encode()) <= MAX_TRACE_BYTES
    assert cut.truncated
    assert len(cut.tools) == 200  # texts are cut before any tool call is dropped
    small = fit(trace, limit=2_000)
    assert len(small.model_dump_json().encode()) <= 2_000
    assert len(small.tools) < 200
