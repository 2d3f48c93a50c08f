"""A cheap first look: the triage model reads what woke the agent before the main model runs.

Through the real Anthropic SDK against the local fake of the Messages API (one server, two model
ids: the main model and the triage model) and a real Mission Control that meters both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mcos.cli.status import notes as _notes
from mcos.client import AsyncClient, Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Limits, Usage, cost_micros
from mcos.domain.first_look import TOOL
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.prices import price_for
from mcos.models.factory import make_provider
from mcos.models.openai_compat import OpenAICompatModel
from mcos.runtime.agent import AgentRuntime
from mcos.server.severity import PAUSED_BY
from tests.fakes.anthropic_server import ApiError, FakeAnthropic, RateLimited, Text, ToolUse
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripts import Scripted, ScriptedServer
from tests.runtime.conftest import Rig, RigFactory

KEY = "sk-ant-test-gene"
MAIN = "claude-sonnet-5-5"
TRIAGE = "claude-haiku-5-5"


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def triaged_toml(fake: FakeAnthropic) -> str:
    """Gene on Claude with a cheaper Claude taking the first look, both served by the fake;
    direct mode (the runtime reserves and reports each call, Mission Control prices it)."""
    return (
        f'model = {{ provider = "anthropic", id = "{MAIN}", base_url = "{fake.url}", '
        'route = "direct" }\n'
        f'triage_model = {{ provider = "anthropic", id = "{TRIAGE}" }}\n'
        'key = "env:GENE_ANTHROPIC_KEY"'
    )


@pytest.fixture
def triaged(rig_factory: RigFactory, fake: FakeAnthropic) -> Rig:
    return rig_factory({"gene": triaged_toml(fake)})


def gene_of(rig: Rig) -> AgentRuntime:
    """Gene as the process builds it: the main provider from the factory, the triage model
    from the fleet file's ``triage_model`` (nothing else to wire)."""
    provider = make_provider(
        rig.fleet.agents["gene"], KEY, rig.fleet.price_table(), sleep=_no_sleep
    )
    return rig.runtime("gene", provider)


def decision(needs_main: bool, reason: str, *items: tuple[int, bool, str]) -> ToolUse:
    """The triage model's forced tool call."""
    return ToolUse(
        TOOL,
        {
            "needs_main": needs_main,
            "reason": reason,
            "items": [{"item": f"message {i}", "needs_main": n, "reason": r} for i, n, r in items],
        },
    )


async def fyi(jarvis: AsyncClient, subject: str, body: str = "All green.") -> int:
    sent = await jarvis.do(Calls.send("gene", body, subject=subject, kind=MessageKind.REPORT))
    return sent.message.id


async def wake(gene: AgentRuntime, fake: ScriptedServer | None = None, *answers: Scripted) -> bool:
    """Gene claims its inbox and handles what it holds, the model API answering ``answers``."""
    if fake is not None:
        fake.script(*answers)
    await gene.claim()
    return await gene.handle_messages()


def daily_log(gene: AgentRuntime) -> str:
    return gene.workspace.daily_log(gene.clock.now()).read_text()


async def test_fyi_messages_are_settled_by_one_cheap_call_and_no_main_call(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    second = await fyi(jarvis, "deploy 41 finished", "Deploy 41 is live; nothing to do.")
    fake.script(
        decision(False, "status news only", (first, False, "backup report"),
                 (second, False, "deploy report"))
    )  # fmt: skip
    assert await wake(gene, fake)

    assert len(fake.requests) == 1  # the first look, and no main call
    body = fake.requests[0].body
    assert body["model"] == TRIAGE
    assert body["tool_choice"] == {"type": "tool", "name": TOOL}
    assert [t["name"] for t in body["tools"]] == [TOOL]
    assert "nightly backup done" in body["messages"][0]["content"][0]["text"]
    me = await jarvis.do(Calls.agent("gene"))
    assert (me.queued, me.claimed, me.dead) == (0, 0, 0)  # acknowledged, not dropped
    assert gene.pending == {}
    log = daily_log(gene)
    assert f"triage ({TRIAGE}): main model not needed — status news only" in log
    assert f"message {first}: backup report" in log
    assert gene.triage_stats.info() | {"cost_micros": 0} == {
        "calls": 1, "cost_micros": 0, "settled": 2, "to_main": 0, "unusable": 0, "skipped": 0,
    }  # fmt: skip
    assert gene.stats.turns == 0


async def test_the_triage_call_is_metered_at_the_triage_models_price(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    rig = triaged
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    assert await wake(gene, fake, decision(False, "news", (first, False, "backup report")))
    billed = fake.requests[0].usage
    assert billed is not None
    usage = Usage(input=billed["input_tokens"], output=billed["output_tokens"])
    price = price_for("anthropic", TRIAGE, rig.fleet.price_table())
    dearer = price_for("anthropic", MAIN, rig.fleet.price_table())
    assert price is not None
    assert dearer is not None
    now = gene.clock.now()
    rows = await rig.client().do(Calls.usage(agent="gene"))
    assert rows[0].calls == 1
    assert rows[0].input_tokens == usage.input
    assert rows[0].output_tokens == usage.output
    assert rows[0].cost_usd == pytest.approx(cost_micros(usage, price, now) / 1e6)
    assert rows[0].cost_usd < cost_micros(usage, dearer, now) / 1e6
    assert gene.triage_stats.cost_micros == cost_micros(usage, price, now)
    assert gene.stats.model_calls == 1


@pytest.mark.parametrize(
    ("sender", "kind", "priority"),
    [
        ("jarvis", MessageKind.REPORT, Priority.URGENT),
        ("jarvis", MessageKind.REQUEST, Priority.NORMAL),
        (None, MessageKind.REPORT, Priority.NORMAL),  # an operator: a human
    ],
    ids=["urgent", "request", "human"],
)
async def test_what_must_reach_the_main_model_skips_the_first_look(
    triaged: Rig,
    fake: FakeAnthropic,
    sender: str | None,
    kind: MessageKind,
    priority: Priority,
) -> None:
    rig = triaged
    gene = gene_of(rig)
    await fyi(rig.client("jarvis"), "nightly backup done")  # rides along: news, but not alone
    sent = await rig.client(sender).do(
        Calls.send("gene", "Look at this.", subject="the vps", kind=kind, priority=priority)
    )
    assert await wake(gene, fake, Text("handled"))
    assert [r.body["model"] for r in fake.requests] == [MAIN]
    assert "tool_choice" not in fake.requests[0].body
    assert f"[message {sent.message.id}]" in str(fake.requests[0].body["messages"])
    assert gene.triage_stats.skipped == 1
    assert gene.triage_stats.calls == 0
    assert "triage (" not in daily_log(gene)


async def test_the_main_model_runs_when_the_first_look_says_so(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    second = await fyi(jarvis, "disk", "The backup disk is at 97%; it fails tomorrow.")
    fake.script(
        decision(False, "mostly news", (first, False, "backup report"),
                 (second, True, "a disk about to fill needs a decision")),
        Text("I will ask for a bigger disk."),
    )  # fmt: skip
    assert await wake(gene, fake)
    assert [r.body["model"] for r in fake.requests] == [TRIAGE, MAIN]
    shown = str(fake.requests[1].body["messages"])
    assert f"[message {first}]" in shown  # the main model sees the whole batch
    assert f"[message {second}]" in shown
    assert f"message {second}: a disk about to fill needs a decision" in daily_log(gene)
    assert gene.triage_stats.to_main == 1
    me = await jarvis.do(Calls.agent("gene"))
    assert (me.queued, me.claimed) == (0, 0)


@pytest.mark.parametrize(
    "answer",
    [
        ToolUse(TOOL, {"needs_main": "perhaps", "reason": "unsure"}),
        ToolUse(TOOL, {"reason": "forgot the verdict"}),
        Text("No need to wake the main model."),  # no tool call at all
        ApiError(400, "invalid_request_error", "tool_choice is not supported by this model"),
    ],
    ids=["not-a-bool", "no-verdict", "no-tool-call", "call-refused"],
)
async def test_an_unusable_first_look_lets_the_main_model_decide(
    triaged: Rig, fake: FakeAnthropic, answer: Any
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    await fyi(jarvis, "nightly backup done")
    assert await wake(gene, fake, answer, Text("noted"))
    assert [r.body["model"] for r in fake.requests] == [TRIAGE, MAIN]
    assert "the main model decides" in daily_log(gene)
    assert gene.triage_stats.unusable == 1
    me = await jarvis.do(Calls.agent("gene"))
    assert (me.queued, me.claimed, me.dead) == (0, 0, 0)


async def test_a_batch_with_an_item_left_undecided_goes_to_the_main_model(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    second = await fyi(jarvis, "deploy 41 finished")
    assert await wake(
        gene, fake, decision(False, "news", (first, False, "backup report")), Text("noted")
    )
    assert [r.body["model"] for r in fake.requests] == [TRIAGE, MAIN]
    assert f"no decision for message {second}" in daily_log(gene)


async def test_a_first_look_over_budget_calls_neither_model(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    rig = rig_factory({"gene": triaged_toml(fake)}, budgets={"gene": Limits.of(0.000_01, None)})
    gene = gene_of(rig)
    jarvis = rig.client("jarvis")
    await fyi(jarvis, "nightly backup done")
    assert not await wake(gene, fake)
    assert fake.requests == []  # the triage reservation was refused: no call, and no bypass
    me = await jarvis.do(Calls.agent("gene"))
    assert me.state == "over_budget"
    assert (me.queued, me.claimed, me.dead) == (1, 0, 0)  # deferred, no attempt used


async def test_a_rate_limited_first_look_cools_the_agent_down_without_a_main_call(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    await fyi(jarvis, "nightly backup done")
    assert not await wake(gene, fake, RateLimited(retry_after=30))
    assert [r.body["model"] for r in fake.requests] == [TRIAGE]
    me = await jarvis.do(Calls.agent("gene"))
    assert me.state == "cooling_down"
    assert (me.queued, me.claimed, me.dead) == (1, 0, 0)


async def test_a_pause_mission_control_holds_stops_the_first_look_before_its_call(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    rig = triaged
    gene = gene_of(rig)
    held = {"paused_by": PAUSED_BY}  # as Mission Control holds a ping-pong pair
    await rig.client().do(Calls.report_state("gene", AgentStatus.PAUSED, "ping-pong", info=held))
    await fyi(rig.client("jarvis"), "nightly backup done")
    assert not await wake(gene, fake)
    assert gene.paused
    assert fake.requests == []


async def test_settled_messages_are_named_to_the_main_model_at_its_next_turn(
    triaged: Rig, fake: FakeAnthropic
) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    assert await wake(
        gene, fake, decision(False, "news", (first, False, "backup report")), Text("on it")
    )
    await jarvis.do(Calls.send("gene", "Rotate the keys?", subject="keys"))
    assert await wake(gene, fake)
    assert [r.body["model"] for r in fake.requests] == [TRIAGE, MAIN]
    last = fake.requests[1].body["messages"][-1]["content"]  # the turn's text, then the time
    text = "\n".join(b["text"] for b in last if b["type"] == "text")
    assert f"message {first} from jarvis (report): nightly backup done — backup report" in text
    assert gene.settled_notes == []  # named once


async def test_the_offline_model_takes_a_first_look_by_rule(rig_factory: RigFactory) -> None:
    rig = rig_factory({"gene": 'triage_model = { provider = "offline", id = "offline-1" }'})
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    await fyi(jarvis, "nightly backup done")
    assert await wake(gene)
    assert gene.stats.turns == 0  # settled: no main turn
    assert "main model not needed — only news, nothing to act on (offline model)" in daily_log(gene)
    await fyi(jarvis, "backup size", "It doubled overnight: should we look?")
    assert await wake(gene)
    assert gene.stats.turns == 1  # a question: the main (offline) model answered
    assert gene.triage_stats.settled == 1
    assert gene.triage_stats.to_main == 1


async def test_an_openai_compatible_triage_model_is_forced_to_call_the_decision_tool(
    rig_factory: RigFactory,
) -> None:
    with FakeOpenAI(api_key=None) as server:
        url = server.url + "/v1"
        model = (
            f'model = {{ provider = "openai", id = "llama3.1:70b", base_url = "{url}", '
            'route = "direct" }'
        )
        triage = 'triage_model = { provider = "openai", id = "llama3.2:3b" }'
        rig = rig_factory({"gene": f'{model}\n{triage}\nkey = "env:GENE_OPENAI_KEY"'})
        main = OpenAICompatModel("llama3.1:70b", None, rig.fleet.price_table()["offline"],
                                 base_url=url, sleep=_no_sleep)  # fmt: skip
        gene = rig.runtime("gene", main)
        jarvis = rig.client("jarvis")
        first = await fyi(jarvis, "nightly backup done")
        assert await wake(gene, server, decision(False, "news", (first, False, "backup report")))
        body = server.requests[0].body
        assert body["model"] == "llama3.2:3b"
        assert body["tool_choice"] == {"type": "function", "function": {"name": TOOL}}
        assert len(server.requests) == 1
        assert gene.triage_stats.settled == 1


async def test_status_shows_the_first_looks_counts(triaged: Rig, fake: FakeAnthropic) -> None:
    gene, jarvis = gene_of(triaged), triaged.client("jarvis")
    first = await fyi(jarvis, "nightly backup done")
    assert await wake(gene, fake, decision(False, "news", (first, False, "backup report")))
    await gene.report(AgentStatus.IDLE)
    shown = await jarvis.do(Calls.agent("gene"))
    assert shown.state_info["triage"]["settled"] == 1
    assert shown.state_info["triage"]["calls"] == 1
    assert "first look: 1 settled, 0 to the main model, 0 straight to it" in _notes(shown)
