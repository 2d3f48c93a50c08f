"""Cron jobs with a deadline go through Anthropic's Message Batches at half price.

A real Mission Control, the real ``anthropic`` SDK against the fake API (which speaks Message
Batches and bills them at half), the agent's loop on a virtual clock: the weekly report's calls
are sent as batches while the agent keeps answering its messages; the run is parked in the
workspace between a call and its answer, resumed when the batch ends, finished directly when
the deadline comes near, and done once across a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from mcos.client import Calls
from mcos.domain.budget import MICROS, Price
from mcos.domain.messages import Priority
from mcos.domain.prices import price_for
from mcos.models.anthropic import AnthropicModel
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.clock import VirtualClock
from tests.fakes.anthropic_server import (
    BATCH_DISCOUNT,
    FakeAnthropic,
    Overloaded,
    Text,
    ToolUse,
    micros_at,
)
from tests.runtime.conftest import FAST, Rig, RigFactory

KEY = "sk-ant-test-gene"
MODEL = "claude-sonnet-5-5"
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)  # batch prices are dated from 2026-10-14
REPORT = "Weekly report: 14 deliveries, no incidents."


def at(hour: int, minute: int = 0, second: int = 0, days: int = 0) -> datetime:
    """An instant on the virtual Monday (or ``days`` later), UTC."""
    return MONDAY + timedelta(days=days, hours=hour, minutes=minute, seconds=second)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def weekly(deadline: str = "12h", extra: str = "") -> str:
    """Gene's weekly report, Mondays at 06:00 UTC."""
    return (
        '[[agents.gene.cron]]\nname = "weekly-report"\nschedule = "0 6 * * 1"\n'
        f'prompt = "Write the weekly report."\ndeadline = "{deadline}"\n{extra}\n'
    )


def on_claude(fake: FakeAnthropic, route: str = "direct") -> dict[str, str]:
    """Gene on Claude, served by ``fake``: calling it with its own key (``direct``) or through
    Mission Control (``gateway``)."""
    model = (
        f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
        f'route = "{route}" }}'
    )
    return {"gene": f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"'}


async def _no_sleep(_: float) -> None:
    return None


def gene_on(rig: Rig, clock: VirtualClock) -> AgentRuntime:
    """Gene on Claude (the fake) and a virtual clock; Mission Control stays real. In gateway
    mode the provider holds gene's token and no key: Mission Control calls the fake."""
    config = rig.fleet.agents["gene"]
    if config.model.through_gateway:
        access = GatewayAccess(rig.server.url, rig.server.tokens["gene"])
        provider = make_provider(
            config, None, rig.fleet.price_table(), sleep=_no_sleep, gateway=access
        )
    else:
        provider = make_provider(config, KEY, rig.fleet.price_table(), sleep=_no_sleep)
    assert isinstance(provider, AnthropicModel)
    gene = AgentRuntime("gene", rig.fleet, rig.client("gene"), provider, clock, settings=FAST)
    rig.runtimes.append(gene)
    return gene


def log_of(gene: AgentRuntime) -> str:
    path = gene.workspace.daily_log(gene.clock.now())
    return path.read_text() if path.exists() else ""


def rates(price: Price) -> dict[str, float]:
    """A price as the fake's bill takes it."""
    return {
        "input": price.input,
        "output": price.output,
        "cache_read": price.cache_read,
        "cache_write_5m": price.cache_write_5m,
        "cache_write_1h": price.cache_write_1h,
    }


async def recorded_micros(rig: Rig) -> tuple[int, int]:
    """What Mission Control recorded as gene's spend, and what it still holds, in micros."""
    days = await rig.client().do(Calls.usage(agent="gene"))
    spent = sum(round(d.cost_usd * MICROS) for d in days)
    return spent, sum(round(d.held_usd * MICROS) for d in days)


async def look_until_done(gene: AgentRuntime, clock: VirtualClock) -> int:
    """Move the clock from look to look at the parked batches until no run is parked; how
    many looks it took."""
    looks = 0
    while gene.parked:
        wake = gene.parked_wake()
        assert wake is not None
        await clock.advance(wake)
        await gene.run_parked()
        looks += 1
        assert looks < 500, "the parked run never finished"
    return looks


@pytest.mark.parametrize("route", ["direct", "gateway"])
async def test_the_weekly_report_goes_by_batch_while_the_agent_works(
    rig_factory: RigFactory, fake: FakeAnthropic, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """06:00 Monday: the report's first call is sent as a batch and the run parked; an urgent
    message meanwhile is answered directly at once; the batch's answer (a memory search) is
    resumed and the next call batched again; the report is done from the second batch. The
    batch calls are billed at half the direct price — Mission Control's record equals the
    fake API's own bill — and the daily log says the path and the saving. The same with the
    agent holding its key (``direct``: it reserves and reports) and through Mission Control's
    gateway (``gateway``: Mission Control holds the key and meters each batch request)."""
    monkeypatch.setenv("GENE_ANTHROPIC_KEY", KEY)  # where Mission Control runs
    rig = rig_factory(on_claude(fake, route), tail=weekly())
    clock = VirtualClock(at(5, 59))
    gene = gene_on(rig, clock)
    await clock.advance(at(6, 0, 1))
    assert await gene.run_due_cron() == 1
    (batch,) = fake.batches()
    assert batch.status == "in_progress"
    assert fake.requests == []  # nothing called directly
    assert [p.job for p in gene.parked] == ["weekly-report"]
    kept = json.loads((gene.workspace.root / ".mcos" / "parked_turns.json").read_text())
    assert kept[0]["batch_id"] == batch.id
    assert gene.parked_wake() == at(6, 0, 31)  # the loop wakes to look at it

    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "Is the VPN up?", priority=Priority.URGENT))
    fake.script(Text("The VPN is up."))
    await gene.step()  # the loop goes on: the urgent message is handled at once, directly
    assert gene.stats.handled == 1
    (direct,) = fake.requests
    assert direct.batch_id is None
    assert fake.batches()[0].status == "in_progress"
    assert gene.parked

    fake.script(ToolUse("memory_search", {"query": "deliveries this week"}), Text(REPORT))
    fake.end_batches()
    await clock.advance(gene.parked_wake() or at(23))
    assert await gene.run_parked() == 0  # answered; the search ran; the next call is batched
    first, second = fake.batches()
    assert (first.status, second.status) == ("ended", "in_progress")
    assert fake.requests[-1].batch_id == first.id
    fake.end_batches()
    await look_until_done(gene, clock)
    assert not gene.parked
    assert [r.batch_id for r in fake.requests] == [None, first.id, second.id]
    assert second.results["call-2"]["message"]["content"][0]["text"] == REPORT

    price = price_for("anthropic", MODEL, {})
    assert price is not None
    standard, batch_rates = price.rates(0, clock.now()), price.batched().rates(0, clock.now())
    assert rates(batch_rates) == {k: v / 2 for k, v in rates(standard).items()}
    spent, held = await recorded_micros(rig)
    assert spent == fake.spend_micros(rates(standard))  # the API's bill, batch at half
    if route == "gateway":  # the provider saw Mission Control's key, never gene's token
        token = rig.server.tokens["gene"]
        assert all(r.headers.get("x-api-key") == KEY for r in fake.requests)
        assert all(token not in str(r.headers) for r in fake.requests)
    batched_usage = [r.usage for r in fake.requests if r.batch_id and r.usage]
    saved = sum(
        micros_at(u, rates(standard), Fraction(1)) - micros_at(u, rates(standard), BATCH_DISCOUNT)
        for u in batched_usage
    )
    assert gene.stats.batch_calls == 2
    assert gene.stats.batch_saved_micros == saved > 0
    assert held == 0
    text = log_of(gene)
    assert "call 1 sent as batch" in text
    assert "cron weekly-report done: 2 of 2 model calls by batch" in text
    assert f"${saved / MICROS:.4f} less than direct calls" in text
    assert await gene.run_due_cron() == 0  # done once
    assert gene.cron_next["weekly-report"] == at(6, days=7)


async def test_a_deadline_too_close_calls_directly(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """The loop looks at the 06:00 fire only at 07:05: a 2-hour deadline keeping 1 hour for
    direct calls leaves no room for a batch, so the report is written directly."""
    rig = rig_factory(on_claude(fake), tail=weekly("2h"))
    clock = VirtualClock(at(5, 59))
    gene = gene_on(rig, clock)
    fake.script(Text(REPORT))
    await clock.advance(at(7, 5))
    assert await gene.run_due_cron() == 1
    assert fake.batches() == []
    assert [r.batch_id for r in fake.requests] == [None]
    assert not gene.parked
    assert "its deadline (2026-11-30 08:00 UTC) is too close for a batch" in log_of(gene)


async def test_a_batch_not_ended_in_time_is_canceled_and_the_run_finished_directly(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """The batch is still in progress at 17:00 (deadline 18:00, an hour kept for direct
    calls): it is canceled, its hold released, the report written directly — once — and the
    batch was looked at on a backoff, not on every pass."""
    rig = rig_factory(on_claude(fake), tail=weekly())
    clock = VirtualClock(at(5, 59))
    gene = gene_on(rig, clock)
    await clock.advance(at(6, 0, 1))
    assert await gene.run_due_cron() == 1
    fake.script(Text(REPORT))
    looks = await look_until_done(gene, clock)
    assert clock.now() == at(17)
    assert looks < 80  # 30 s, 1, 2, 4, 8 minutes, then every 10 minutes
    (batch,) = fake.batches()
    assert batch.status == "ended"
    assert batch.cancel_initiated_at is not None
    assert batch.results == {"call-1": {"type": "canceled"}}
    assert [r.batch_id for r in fake.requests] == [None]
    spent, held = await recorded_micros(rig)
    assert (spent, held) == (fake.spend_micros(rates(price_rates())), 0)
    assert "had not ended by 2026-11-30 17:00 UTC (deadline 18:00): canceled" in log_of(gene)
    assert "cron weekly-report done: direct model calls only (1)" in log_of(gene)
    assert gene.stats.turns == 1
    assert await gene.run_due_cron() == 0


async def test_an_errored_or_expired_batch_is_replaced_by_a_direct_call(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """A batch whose request errored (the API overloaded) is answered by a direct call; the
    next week's batch expires and is replaced the same way. Nothing is billed for either."""
    rig = rig_factory(on_claude(fake), tail=weekly())
    clock = VirtualClock(at(5, 59))
    gene = gene_on(rig, clock)
    await clock.advance(at(6, 0, 1))
    assert await gene.run_due_cron() == 1
    fake.script(Overloaded(), Text(REPORT))
    fake.end_batches()
    assert await look_until_done(gene, clock) == 1  # the direct call follows at once
    assert clock.now() == at(6, 0, 31)
    assert len(fake.batches()) == 1
    assert [(r.batch_id is None, r.response_status) for r in fake.requests] == [
        (False, 529),
        (True, 200),
    ]
    assert "errored (overloaded_error: Overloaded); the call is made directly" in log_of(gene)
    await clock.advance(at(6, 0, 1, days=7))
    assert await gene.run_due_cron() == 1
    fake.end_batches(outcome="expired")
    fake.script(Text(REPORT))
    assert await look_until_done(gene, clock) == 1
    assert len(fake.batches()) == 2
    assert "expired; the call is made directly" in log_of(gene)
    assert [r.batch_id is None for r in fake.requests] == [False, True, True]
    spent, held = await recorded_micros(rig)
    assert (spent, held) == (fake.spend_micros(rates(price_rates())), 0)
    assert gene.stats.batch_calls == 0


async def test_a_restart_while_parked_resumes_the_run_and_does_not_rerun_the_job(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """The process stops while the report waits for its batch; the next process finds the
    run in the workspace, does not run the job again, and finishes it from the same batch."""
    rig = rig_factory(on_claude(fake), tail=weekly())
    clock = VirtualClock(at(5, 59))
    first = gene_on(rig, clock)
    await clock.advance(at(6, 0, 1))
    assert await first.run_due_cron() == 1
    (batch,) = fake.batches()
    later = VirtualClock(at(6, 20))
    restarted = gene_on(rig, later)
    assert [p.batch_id for p in restarted.parked] == [batch.id]
    assert await restarted.run_due_cron() == 0  # not run again
    assert len(fake.batches()) == 1
    fake.script(Text(REPORT))
    fake.end_batches()
    await look_until_done(restarted, later)
    assert len(fake.batches()) == 1
    assert [r.batch_id for r in fake.requests] == [batch.id]
    assert "cron weekly-report done: 1 of 1 model calls by batch" in log_of(restarted)
    assert "missed" not in log_of(restarted)
    third = gene_on(rig, VirtualClock(at(7)))
    assert third.parked == []
    assert await third.run_due_cron() == 0


def price_rates() -> Price:
    """Claude Sonnet 5.5's standard rates on the virtual Monday."""
    price = price_for("anthropic", MODEL, {})
    assert price is not None
    return price.rates(0, MONDAY)


async def test_a_run_parked_but_still_owed_after_a_crash_is_not_sent_twice(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """A process killed after parking the run but before saving the job as done leaves the
    fire owed; the next process finds the run parked for that fire and sends nothing new."""
    rig = rig_factory(on_claude(fake), tail=weekly())
    clock = VirtualClock(at(5, 59))
    first = gene_on(rig, clock)
    await clock.advance(at(6, 0, 1))
    assert await first.run_due_cron() == 1
    state = first.workspace.root / ".mcos" / "cron_state.json"
    kept = json.loads(state.read_text())
    kept["weekly-report"] |= {
        "missed_at": at(6).isoformat(),
        "missed_count": 1,
        "missed_why": "the agent stopped during the run",
    }
    state.write_text(json.dumps(kept))  # as a kill between the two writes leaves it
    restarted = gene_on(rig, VirtualClock(at(6, 20)))
    await restarted.run_due_cron()
    assert len(fake.batches()) == 1
    assert len(restarted.parked) == 1
    assert "the run for 2026-11-30 06:00 UTC is parked already" in log_of(restarted)
