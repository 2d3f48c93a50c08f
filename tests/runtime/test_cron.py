"""Cron jobs through the runtime, against a real Mission Control, on a virtual clock.

A job runs at its fires, once however late the loop looks; a job missed while the agent could
not run (over budget, cooling down after a 429, the process not running) runs once when it can,
or is skipped when its fleet-file entry says ``missed = "skip"``; the daily log says which.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mcos.client import AsyncClient, Calls, ServerUnreachable
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Limits
from mcos.models.anthropic import AnthropicModel
from mcos.models.base import ModelProvider
from mcos.models.factory import make_provider
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import VirtualClock
from mcos.runtime.workspace import TurnKind
from mcos.store.sqlite import simulated_clock
from tests.fakes.anthropic_server import FakeAnthropic, Overloaded, RateLimited, SpendLimit, Text
from tests.runtime.conftest import FAST, Rig, RigFactory
from tests.waiting import eventually

KEY = "sk-ant-test-gene"
MODEL = "claude-sonnet-4-6"
DAY = datetime(2026, 3, 5, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0, days: int = 0) -> datetime:
    """An instant on the virtual day (or ``days`` later), UTC."""
    return DAY + timedelta(days=days, hours=hour, minutes=minute, seconds=second)


def job(name: str, schedule: str, extra: str = "") -> str:
    """A ``[[agents.gene.cron]]`` entry."""
    return (
        f'[[agents.gene.cron]]\nname = "{name}"\nschedule = "{schedule}"\n'
        f'prompt = "Do the {name}."\n{extra}\n'
    )


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def claude_toml(fake: FakeAnthropic) -> str:
    model = (
        f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
        'route = "direct" }'
    )
    return f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"'


def claude(rig: Rig) -> AnthropicModel:
    provider = make_provider(
        rig.fleet.agents["gene"], KEY, rig.fleet.price_table(), sleep=_no_sleep
    )
    assert isinstance(provider, AnthropicModel)
    return provider


def gene_on(rig: Rig, clock: VirtualClock, provider: ModelProvider | None = None) -> AgentRuntime:
    """Gene on a virtual clock (the loop's time; Mission Control stays real)."""
    runtime = AgentRuntime(
        "gene", rig.fleet, rig.client("gene"), provider or OfflineModel(), clock, settings=FAST
    )
    rig.runtimes.append(runtime)
    return runtime


def log_of(gene: AgentRuntime, when: datetime) -> str:
    path = gene.workspace.daily_log(when)
    return path.read_text() if path.exists() else ""


async def test_a_job_runs_at_each_fire_once_however_late_the_loop_looks(
    rig_factory: RigFactory,
) -> None:
    """run_due_cron for normal fires: nothing before 09:00, one run at it, none twice; three
    fires passed during one long look run once, and that is not logged as a miss."""
    rig = rig_factory(tail=job("report", "0 9 * * *"))
    clock = VirtualClock(at(8, 59))
    gene = gene_on(rig, clock)
    assert await gene.run_due_cron() == 0
    assert gene.cron_next["report"] == at(9)
    await clock.advance(at(9, 0, 5))
    assert await gene.run_due_cron() == 1
    assert await gene.run_due_cron() == 0
    assert gene.cron_next["report"] == at(9, days=1)
    assert "cron report: scheduled job" in log_of(gene, clock.now())
    await clock.advance(at(9, 30, days=3))  # the loop was busy for three days: one run
    assert await gene.run_due_cron() == 1
    assert await gene.run_due_cron() == 0
    assert gene.stats.turns == 2
    assert "missed" not in log_of(gene, clock.now())


async def test_a_job_due_while_over_budget_runs_once_after_midnight(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """The provider's spend limit stops the 23:30 run, 23:45 passes with no call at all, and
    one run after midnight makes up for both; the log says so."""
    clock = VirtualClock(at(23, 20))
    with simulated_clock(clock.now):  # Mission Control judges the state's "until" on it
        rig = rig_factory({"gene": claude_toml(fake)}, tail=job("sweep", "*/15 * * * *"))
        gene = gene_on(rig, clock, claude(rig))
        fake.script(SpendLimit())
        await clock.advance(at(23, 30, 1))
        assert await gene.run_due_cron() == 0
        assert len(fake.requests) == 1
        assert (await rig.client().do(Calls.agent("gene"))).state == "over_budget"
    await clock.advance(at(23, 45, 1))
    assert await gene.run_due_cron() == 0
    assert len(fake.requests) == 1  # over budget: no call
    fake.script(Text("Sweep done."), Text("Sweep done again."))
    await clock.advance(at(0, 0, 1, days=1))
    assert await gene.run_due_cron() == 1
    assert len(fake.requests) == 2
    assert await gene.run_due_cron() == 0
    text = log_of(gene, clock.now())
    assert (
        "cron sweep missed at 2026-03-05 23:30 UTC while over budget (the provider's spend "
        "limit) (2 fires); running now" in text
    )
    await clock.advance(at(0, 15, 1, days=1))
    assert await gene.run_due_cron() == 1  # the next regular fire
    assert len(fake.requests) == 3
    assert log_of(gene, clock.now()).count("missed") == 1


async def test_a_turn_stopped_by_a_429_runs_once_when_the_cooldown_ends(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """A 429 with retry-after 30 s at the 10:05 fire: no call during the cooldown, the loop is
    woken at its end, and the job runs then, once."""
    rig = rig_factory({"gene": claude_toml(fake)}, tail=job("poll", "*/5 * * * *"))
    clock = VirtualClock(at(10, 0))
    gene = gene_on(rig, clock, claude(rig))
    fake.script(RateLimited(retry_after=30))
    await clock.advance(at(10, 5, 1))
    assert await gene.run_due_cron() == 0
    assert gene.cooling_until == at(10, 5, 31)
    assert gene.next_wake() == at(10, 5, 31)
    await clock.advance(at(10, 5, 20))
    assert await gene.run_due_cron() == 0
    assert len(fake.requests) == 1  # cooling down: no call
    fake.script(Text("Polled."))
    await clock.advance(at(10, 5, 31))
    assert await gene.run_due_cron() == 1
    assert len(fake.requests) == 2
    assert await gene.run_due_cron() == 0
    assert (
        "cron poll missed at 10:05 UTC while rate limited (the model answered 429); running now"
        in log_of(gene, clock.now())
    )


async def test_a_run_the_model_failed_is_retried_after_a_minute_not_on_every_look(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """529 on every retry of the 10:05 run (model unavailable): the job is owed and tried
    again a minute later, not on each pass of the loop, and then runs once."""
    rig = rig_factory({"gene": claude_toml(fake)}, tail=job("poll", "*/5 * * * *"))
    clock = VirtualClock(at(10, 0))
    gene = gene_on(rig, clock, claude(rig))
    await gene.heartbeat()  # a quiet beat: the next is at least 15 minutes away
    fake.script(*[Overloaded()] * 4)  # the provider's four attempts
    await clock.advance(at(10, 5, 1))
    assert await gene.run_due_cron() == 0
    assert len(fake.requests) == 4
    assert gene.next_wake() == at(10, 6, 1)  # the loop wakes for the retry
    await clock.advance(at(10, 5, 30))
    assert await gene.run_due_cron() == 0
    assert len(fake.requests) == 4  # not hammered
    fake.script(Text("Polled."))
    await clock.advance(at(10, 6, 1))
    assert await gene.run_due_cron() == 1
    assert len(fake.requests) == 5
    assert (
        "cron poll missed at 10:05 UTC while the model was unavailable (model_unavailable); "
        "running now" in log_of(gene, clock.now())
    )


async def test_skip_drops_a_missed_fire_until_the_next_regular_one(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """``missed = "skip"``: after the cooldown nothing runs, the log says skipped, and the
    next regular fire runs."""
    rig = rig_factory(
        {"gene": claude_toml(fake)}, tail=job("poll", "*/5 * * * *", 'missed = "skip"')
    )
    clock = VirtualClock(at(10, 0))
    gene = gene_on(rig, clock, claude(rig))
    fake.script(RateLimited(retry_after=30))
    await clock.advance(at(10, 5, 1))
    assert await gene.run_due_cron() == 0
    await clock.advance(at(10, 5, 40))
    assert await gene.run_due_cron() == 0
    assert len(fake.requests) == 1
    assert (
        "cron poll missed at 10:05 UTC while rate limited (the model answered 429); skipped"
        in log_of(gene, clock.now())
    )
    fake.script(Text("Polled."))
    await clock.advance(at(10, 10, 1))
    assert await gene.run_due_cron() == 1
    assert len(fake.requests) == 2


async def test_fires_missed_while_the_process_was_down_run_once_on_start(
    rig_factory: RigFactory,
) -> None:
    """Stopped at 08:30, started again at 11:20: the 09:00, 10:00 and 11:00 fires are owed
    (kept in .mcos/cron_state.json) and run once, then the job is back on its schedule."""
    rig = rig_factory(tail=job("hourly", "0 * * * *"))
    before = VirtualClock(at(8, 30))
    first = gene_on(rig, before)
    assert await first.run_due_cron() == 0
    kept = json.loads((first.workspace.root / ".mcos" / "cron_state.json").read_text())
    assert kept["hourly"]["next_fire"] == at(9).isoformat()
    after = VirtualClock(at(11, 20))
    second = gene_on(rig, after)  # the next process of the agent
    assert await second.run_due_cron() == 1
    assert await second.run_due_cron() == 0
    assert (
        "cron hourly missed at 09:00 UTC while the agent was not running (3 fires); running now"
        in log_of(second, after.now())
    )
    await after.advance(at(12, 0, 2))
    assert await second.run_due_cron() == 1
    third = gene_on(rig, VirtualClock(at(12, 10)))  # restarted with nothing missed
    assert await third.run_due_cron() == 0
    assert log_of(third, at(12, 10)).count("missed") == 1


async def test_a_run_cut_short_by_a_crash_is_owed_at_the_next_start(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """While a run is under way the workspace holds the job as owed: a process killed during
    the turn (its state file as the kill left it) runs the job once at its next start."""
    rig = rig_factory({"gene": claude_toml(fake)}, tail=job("report", "0 9 * * *"))
    clock = VirtualClock(at(8, 59))
    state = rig.fleet.workspace_path("gene") / ".mcos" / "cron_state.json"
    mid_turn: list[str] = []

    async def pause(_: float) -> None:  # the provider's retry pause, inside the turn
        mid_turn.append(state.read_text())

    provider = make_provider(rig.fleet.agents["gene"], KEY, rig.fleet.price_table(), sleep=pause)
    gene = gene_on(rig, clock, provider)
    await clock.advance(at(9, 0, 1))
    fake.script(Overloaded(), Text("Report sent."))
    assert await gene.run_due_cron() == 1
    assert json.loads(state.read_text())["report"]["missed_at"] is None  # done: nothing owed
    assert len(mid_turn) == 1
    state.write_text(mid_turn[0])  # as a SIGKILL during the turn would have left it
    fake.script(Text("Report sent (again)."))
    restarted = gene_on(rig, VirtualClock(at(9, 10)), claude(rig))
    assert await restarted.run_due_cron() == 1
    assert await restarted.run_due_cron() == 0
    assert (
        "cron report missed at 09:00 UTC while the agent stopped during the run; running now"
        in log_of(restarted, at(9, 10))
    )


async def _step_through(gene: AgentRuntime, clock: VirtualClock) -> None:
    """One pass of the agent's loop, its sleep on the virtual clock ended at its wake time."""
    stepping = asyncio.create_task(gene.step())

    def asleep() -> datetime | None:
        """The loop's wake time once it reached its sleep (it must not end before)."""
        assert not stepping.done(), stepping
        return clock.next_wake()

    wake = await eventually("the loop to go to sleep", asleep)
    await clock.advance(wake)
    await asyncio.wait_for(stepping, 30)


async def test_a_job_missed_while_paused_runs_once_after_the_resume(
    rig_factory: RigFactory,
) -> None:
    """Through the loop: the breaker pauses gene, two fires pass while it is paused (nothing
    runs), an operator resumes it, and the job runs once with the miss in the log."""
    rig = rig_factory(tail=job("hourly", "0 * * * *"))
    clock = VirtualClock(at(8, 50))
    gene = AgentRuntime(
        "gene",
        rig.fleet,
        rig.client("gene"),
        OfflineModel(),
        clock,
        settings=RuntimeSettings(batch_window=0, visibility=60, breaker_turns=2, pause_poll=60),
    )
    rig.runtimes.append(gene)
    gene.tools.allowed = []  # the offline model has nothing to call: no progress
    for _ in range(2):
        await gene.turn(TurnKind.MAIN, "think about it")
    assert gene.paused
    turns = gene.stats.turns
    await clock.advance(at(8, 59, 30))
    await _step_through(gene, clock)  # looks at 09:00:30, still paused
    await clock.advance(at(9, 59, 30))
    await _step_through(gene, clock)  # looks at 10:00:30
    assert gene.paused
    assert gene.stats.turns == turns  # nothing ran while paused
    assert gene.cron_slots["hourly"].missed_count == 2
    await rig.client().do(Calls.report_state("gene", AgentStatus.IDLE, "resumed by founder"))
    await _step_through(gene, clock)  # 10:01:30: resumed, the job runs once
    assert not gene.paused
    assert gene.stats.turns == turns + 1
    assert "cron hourly missed at 09:00 UTC while paused (2 fires); running now" in log_of(
        gene, clock.now()
    )
    assert await gene.run_due_cron() == 0  # once, not again


@pytest.mark.parametrize(
    ("kept", "owed"),
    [
        ("not json at all {", False),
        ('["a list", "not a table"]', False),
        ('{"hourly": {"schedule": "0 * * * *", "next_fire": "yesterday"}}', False),
        (
            '{"hourly": {"schedule": "*/5 * * * *", "next_fire": "2000-01-01T00:00:00+00:00"}}',
            False,
        ),
        ('{"hourly": {"schedule": "0 * * * *", "next_fire": "2000-01-01T00:00:00+00:00"}}', True),
    ],
)
async def test_a_damaged_or_ancient_state_file_never_runs_a_job_more_than_once(
    rig_factory: RigFactory, kept: str, owed: bool
) -> None:
    """Garbage, the wrong shape, a bad date or another schedule: the job counts from now. A
    state file 26 years old: 1000+ fires owed, and still one run."""
    rig = rig_factory(tail=job("hourly", "0 * * * *"))
    state = rig.fleet.workspace_path("gene") / ".mcos" / "cron_state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(kept)
    clock = VirtualClock(at(8, 30))
    gene = gene_on(rig, clock)
    assert gene.cron_next["hourly"] == at(9)
    assert await gene.run_due_cron() == (1 if owed else 0)
    assert await gene.run_due_cron() == 0
    text = log_of(gene, clock.now())
    if owed:
        assert "cron hourly missed at 2000-01-01 00:00 UTC while the agent was not running " in text
        assert "(1000+ fires); running now" in text
    else:
        assert "missed" not in text
    assert json.loads(state.read_text())["hourly"]["next_fire"] == at(9).isoformat()


async def test_over_mission_controls_budget_the_job_waits_for_the_day_to_turn(
    rig_factory: RigFactory,
) -> None:
    """Mission Control refuses the reservation (402): no model call, the job is owed and the
    loop wakes at UTC midnight for it; while the cap still holds on the new day it stays owed,
    its first miss kept, and is never run twice."""
    clock = VirtualClock(at(23, 0))
    with simulated_clock(clock.now):  # Mission Control judges the state's "until" on it
        rig = rig_factory(
            {"gene": 'heartbeat = { interval = "6h" }'},
            budgets={"gene": Limits(tokens=500)},
            tail=job("sweep", "30 23 * * *"),
        )
        gene = gene_on(rig, clock)
        await gene.heartbeat()  # a quiet beat: the next is hours away
        await clock.advance(at(23, 30, 1))
        assert await gene.run_due_cron() == 0
        assert gene.stats.model_calls == 0
        assert (await rig.client().do(Calls.agent("gene"))).state == "over_budget"
    slot = gene.cron_slots["sweep"]
    assert (slot.missed_at, slot.missed_why) == (at(23, 30), "over budget")
    assert gene.next_wake() == at(0, 0, days=1)
    await clock.advance(at(0, 0, 1, days=1))
    assert await gene.run_due_cron() == 0  # tried once on the new day: still refused
    assert gene.stats.model_calls == 0
    slot = gene.cron_slots["sweep"]
    assert (slot.missed_at, slot.missed_why, slot.missed_count) == (at(23, 30), "over budget", 1)
    assert log_of(gene, clock.now()).count("cron sweep missed at") == 1


async def test_a_run_cut_off_from_mission_control_is_owed_and_made_up_once(
    rig_factory: RigFactory,
) -> None:
    """Mission Control unreachable at the 09:00 run: the error reaches the loop (which backs
    off), the job is kept owed in the workspace, and the next process, with Mission Control
    back, runs it once."""
    rig = rig_factory(tail=job("report", "0 9 * * *"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cut_off = AsyncClient(f"http://127.0.0.1:{port}", "token")
    rig.clients.append(cut_off)
    clock = VirtualClock(at(8, 59))
    gene = AgentRuntime("gene", rig.fleet, cut_off, OfflineModel(), clock, settings=FAST)
    rig.runtimes.append(gene)
    await clock.advance(at(9, 0, 1))
    with pytest.raises(ServerUnreachable):
        await gene.run_due_cron()
    slot = gene.cron_slots["report"]
    assert (slot.missed_at, slot.missed_why) == (at(9), "Mission Control was unreachable")
    assert slot.not_before == at(9, 1, 1)
    back = gene_on(rig, VirtualClock(at(9, 5)))
    assert await back.run_due_cron() == 1
    assert await back.run_due_cron() == 0
    assert (
        "cron report missed at 09:00 UTC while Mission Control was unreachable; running now"
        in log_of(back, at(9, 5))
    )
