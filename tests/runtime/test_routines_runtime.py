"""Routine work and memory curation through the runtime, on a virtual clock, against a real
Mission Control: the offline model, or the fake Anthropic API driven by the real SDK.

HEARTBEAT.md items run at their own cadence, batched into one heartbeat turn, and not at all when
the file is empty; their clocks survive a restart and a failed turn leaves them due. Curation
distils the daily logs into MEMORY.md at its cadence (or early, on size), keeps the previous
version and every guardrail, refuses a version that breaks either, and calls no model between.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mcos.client import Calls
from mcos.domain.curation import guardrail_lines
from mcos.domain.heartbeat import Outcome
from mcos.domain.messages import Priority
from mcos.models.anthropic import AnthropicModel
from mcos.models.base import ModelProvider
from mcos.models.factory import make_provider
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.clock import VirtualClock
from mcos.runtime.curation import PREVIOUS, RETRY
from tests.fakes.anthropic_server import FakeAnthropic, Overloaded, Text, ToolUse
from tests.runtime.conftest import FAST, Rig, RigFactory

KEY = "sk-ant-test-gene"
MODEL = "claude-sonnet-4-6"
DAY = datetime(2026, 12, 2, tzinfo=UTC)

HEARTBEAT = """# Heartbeat

tasks:

- name: mail
  interval: 1h
  prompt: "Sort the mail that came since the last look."
- name: calendar
  interval: 2h
  prompt: "Check the calendar for the next 24 hours."

# Additional instructions

- Keep alerts short.
"""
MEMORY = """# MEMORY

## Guardrails
- Deploys go through staging first.

## People
- The founder prefers short messages.
- NEVER share the customer list outside the fleet.

## Projects
- The shop opens on 2026-12-10.
"""
GUARDRAILS = "# GUARDRAILS\n\n- Never deploy on Fridays.\n"


def at(hour: float, days: int = 0) -> datetime:
    """An instant on the virtual day (or ``days`` later), UTC."""
    return DAY + timedelta(days=days, hours=hour)


def hb(extra: str = "") -> dict[str, str]:
    """Gene's heartbeat table: beats every 30 minutes, one second of jitter, and ``extra``."""
    return {"gene": f'heartbeat = {{ interval = "30m", jitter = "1s"{extra} }}'}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def claude_toml(fake: FakeAnthropic, extra: str = "") -> dict[str, str]:
    model = f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}" }}'
    heartbeat = hb(extra)["gene"]
    return {"gene": f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"\n{heartbeat}'}


async def _no_sleep(_: float) -> None:
    return None


def claude(rig: Rig) -> AnthropicModel:
    provider = make_provider(
        rig.fleet.agents["gene"], KEY, rig.fleet.price_table(), sleep=_no_sleep
    )
    assert isinstance(provider, AnthropicModel)
    return provider


def gene_on(rig: Rig, clock: VirtualClock, provider: ModelProvider | None = None) -> AgentRuntime:
    runtime = AgentRuntime(
        "gene",
        rig.fleet,
        rig.client("gene"),
        provider or OfflineModel(),
        clock,
        settings=FAST,
        rng=random.Random(16),
    )
    rig.runtimes.append(runtime)
    return runtime


def workspace_file(rig: Rig, name: str, text: str) -> None:
    path = rig.fleet.workspace_path("gene") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def beats_until(gene: AgentRuntime, clock: VirtualClock, end: datetime) -> list[Outcome]:
    """Every beat up to ``end``, as the loop would run them."""
    outcomes = []
    while gene.next_beat_at <= end:
        await clock.advance(gene.next_beat_at)
        outcomes.append(await gene.heartbeat())
    return outcomes


def log_of(gene: AgentRuntime, days: int = 0) -> str:
    path = gene.workspace.daily_log(DAY + timedelta(days=days))
    return path.read_text() if path.exists() else ""


class TestRoutineItems:
    """HEARTBEAT.md's items that need judgement reach the model at their cadence."""

    async def test_items_run_at_their_cadence_batched_into_one_turn(
        self, rig_factory: RigFactory
    ) -> None:
        """Mail hourly, calendar every two hours, beats every 30 minutes: over four hours,
        nine beats make four turns (mail at 9, 10, 11 and 12; calendar with it at 10 and 12),
        one model call each; the offline model logs that each item was looked at."""
        rig = rig_factory(hb())
        workspace_file(rig, "HEARTBEAT.md", HEARTBEAT)
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock)
        outcomes = await beats_until(gene, clock, at(12, 0) + timedelta(minutes=5))
        assert len(outcomes) == 9
        assert outcomes.count(Outcome.TURN) == 4
        assert (gene.stats.routine_turns, gene.stats.turns, gene.stats.model_calls) == (4, 4, 4)
        log = log_of(gene)
        assert log.count("routine items run in one heartbeat turn: mail (1h), calendar (2h)") == 2
        assert log.count("routine items run in one heartbeat turn: mail (1h)\n") == 2
        assert log.count("looked at routine calendar: Check the calendar") == 2
        assert log.count("looked at routine mail: Sort the mail") == 4

    async def test_nothing_when_the_file_is_empty(self, rig_factory: RigFactory) -> None:
        """An effectively empty HEARTBEAT.md: a day of beats, no model call, no curation (the
        little it logged is below the size that would curate anyway)."""
        rig = rig_factory(hb())
        workspace_file(rig, "HEARTBEAT.md", "# Heartbeat\n\n<!-- parked: nothing to do -->\n")
        workspace_file(rig, "MEMORY.md", MEMORY)
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock)
        gene.workspace.append_log(clock.now(), "noted: the shop opens on the 10th")
        outcomes = await beats_until(gene, clock, at(9, days=1))
        assert len(outcomes) >= 48
        assert set(outcomes) == {Outcome.OK}
        assert (gene.stats.turns, gene.stats.model_calls) == (0, 0)
        assert (rig.fleet.workspace_path("gene") / "MEMORY.md").read_text() == MEMORY

    async def test_a_fleet_file_cadence_wins_and_a_plain_checklist_is_one_item(
        self, rig_factory: RigFactory
    ) -> None:
        """The small template's checklist (no tasks block) at the cadence the fleet file gives
        it: every 2 hours over 6 hours is three turns, not one per beat."""
        rig = rig_factory(hb(', tasks = { checklist = "2h" }'))
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock)
        outcomes = await beats_until(gene, clock, at(14, 0) + timedelta(minutes=5))
        assert len(outcomes) == 13
        assert gene.stats.routine_turns == outcomes.count(Outcome.TURN) == 3
        assert log_of(gene).count("looked at routine checklist: Work through the checklist") == 3

    async def test_a_restart_neither_reruns_nor_forgets(self, rig_factory: RigFactory) -> None:
        """The last runs are kept in the workspace: a new process at 9:10 (beats 9:10, 9:40,
        10:10) runs nothing until mail is due again, and calendar — seen at 8:00, before the
        restart — with it."""
        rig = rig_factory(hb())
        workspace_file(rig, "HEARTBEAT.md", HEARTBEAT)
        clock = VirtualClock(at(8))
        first = gene_on(rig, clock)
        await beats_until(first, clock, at(9, 0) + timedelta(minutes=5))
        assert first.stats.routine_turns == 1  # mail at 9:00
        await clock.advance(at(9, 0) + timedelta(minutes=10))
        again = gene_on(rig, clock)
        assert again.routine_since == first.routine_since
        outcomes = await beats_until(again, clock, at(9, 0) + timedelta(minutes=45))
        assert outcomes == [Outcome.OK, Outcome.OK]
        await beats_until(again, clock, at(10, 0) + timedelta(minutes=15))
        assert again.stats.routine_turns == 1
        assert "mail (1h), calendar (2h)" in log_of(again)

    async def test_a_failed_turn_leaves_them_due(
        self, rig_factory: RigFactory, fake: FakeAnthropic
    ) -> None:
        """The model unavailable through every retry at 9:00: mail stays due (and is said so),
        and runs at the next beat, through the SDK, its prompt in the turn."""
        rig = rig_factory(claude_toml(fake))
        workspace_file(rig, "HEARTBEAT.md", HEARTBEAT)
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock, claude(rig))
        await gene.heartbeat()  # 8:00: the items are seen
        await beats_until(gene, clock, at(8, 0) + timedelta(minutes=35))
        assert len(fake.requests) == 0
        fake.script(*[Overloaded()] * 4)  # the provider's four attempts
        await beats_until(gene, clock, at(9, 0) + timedelta(minutes=5))
        assert len(fake.requests) == 4
        assert "routine items mail (1h) stay due: their turn did not complete" in log_of(gene)
        fake.script(Text("Mail sorted: nothing urgent."))
        await beats_until(gene, clock, at(9, 0) + timedelta(minutes=35))
        assert len(fake.requests) == 5
        assert "[routine mail] Sort the mail that came since the last look." in str(
            fake.requests[-1].body["messages"][-1]
        )
        assert gene.stats.routine_turns == 1
        assert gene.routine_since["mail"] == gene.clock.now()


class TestCuration:
    """The daily logs distilled into MEMORY.md at its cadence, never losing a guardrail."""

    def setup_memory(self, rig: Rig) -> None:
        workspace_file(rig, "MEMORY.md", MEMORY)
        workspace_file(rig, "GUARDRAILS.md", GUARDRAILS)

    async def test_curation_at_its_cadence_keeps_the_previous_version_and_guardrails(
        self, rig_factory: RigFactory
    ) -> None:
        """A day of beats with the checklist switched off: one model call, the curation at
        08:00 the next day. MEMORY.md gains the day's notes and keeps every guardrail line;
        the old version is beside it; GUARDRAILS.md is untouched; the index finds the new
        text; and the beats after call no model."""
        rig = rig_factory(hb(', tasks = { checklist = "off" }'))
        self.setup_memory(rig)
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock)
        await beats_until(gene, clock, at(12))
        gene.workspace.append_log(clock.now(), "decided: the shop ships with free returns")
        await beats_until(gene, clock, at(7, days=1) + timedelta(minutes=50))
        assert gene.stats.model_calls == 0
        await beats_until(gene, clock, at(8, days=1) + timedelta(minutes=5))
        assert (gene.stats.curation_turns, gene.stats.model_calls) == (1, 1)
        root = rig.fleet.workspace_path("gene")
        memory = (root / "MEMORY.md").read_text()
        assert all(line in memory.splitlines() for line in guardrail_lines(MEMORY))
        assert "decided: the shop ships with free returns" in memory
        assert len(memory) <= rig.fleet.agents["gene"].heartbeat.memory_cap
        previous = list((root / PREVIOUS).glob("MEMORY-*.md"))
        assert [p.read_text() for p in previous] == [MEMORY]
        assert (root / "GUARDRAILS.md").read_text() == GUARDRAILS
        assert any(h.path == "MEMORY.md" for h in gene.memory.search("free returns"))
        log = log_of(gene, days=1)
        assert f"MEMORY.md {len(MEMORY):,} → {len(memory):,} characters" in log
        assert "kept 3 guardrail line(s); previous version at memory/previous/MEMORY-" in log
        await beats_until(gene, clock, at(7, days=2))
        assert gene.stats.model_calls == 1

    async def test_refused_versions_keep_the_old_memory(
        self, rig_factory: RigFactory, fake: FakeAnthropic
    ) -> None:
        """Through the SDK: a version over the cap and one that drops a guardrail are refused
        (the model is told, and tries again); MEMORY.md stays, the log says why, and no model
        call comes until the retry an hour later, when a good version is written."""
        rig = rig_factory(claude_toml(fake, ', tasks = { checklist = "off" }, curate = "2h"'))
        self.setup_memory(rig)
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock, claude(rig))
        gene.workspace.append_log(clock.now(), "decided: the shop ships with free returns")
        cap = rig.fleet.agents["gene"].heartbeat.memory_cap
        dropped = MEMORY.replace("- NEVER share the customer list outside the fleet.\n", "")
        fake.script(
            ToolUse("curate_memory", {"text": "# MEMORY\n" + "x" * cap}),
            ToolUse("curate_memory", {"text": dropped + "- free returns\n"}),
            Text("I could not make it fit."),
        )
        await beats_until(gene, clock, at(10) + timedelta(minutes=5))
        assert len(fake.requests) == 3
        first = fake.requests[0].body
        assert [t["name"] for t in first["tools"]] == ["curate_memory"]
        asked = str(first["messages"][0])
        assert "CURATE MEMORY" in asked
        assert "decided: the shop ships with free returns" in asked
        assert all(line in asked for line in guardrail_lines(MEMORY))
        root = rig.fleet.workspace_path("gene")
        assert (root / "MEMORY.md").read_text() == MEMORY
        assert not (root / PREVIOUS).exists()
        answers = str(fake.requests[1].body["messages"][-1])
        assert f"refused: the new MEMORY.md has {cap + 9:,} characters; at most {cap:,}" in (
            answers
        )
        assert "drops 1 guardrail line(s)" in str(fake.requests[2].body["messages"][-1])
        log = log_of(gene)
        assert "curation refused (cadence): the new MEMORY.md drops 1 guardrail line(s)" in log
        assert "'- NEVER share the customer list outside the fleet.'" in log
        assert "MEMORY.md kept as it was" in log
        await beats_until(gene, clock, at(10) + RETRY - timedelta(minutes=10))
        assert len(fake.requests) == 3
        good = MEMORY + "- The shop ships with free returns.\n"
        fake.script(ToolUse("curate_memory", {"text": good}))
        await beats_until(gene, clock, at(10) + RETRY + timedelta(minutes=5))
        assert len(fake.requests) == 4
        assert (root / "MEMORY.md").read_text() == good
        assert [p.read_text() for p in (root / PREVIOUS).glob("MEMORY-*.md")] == [MEMORY]
        assert gene.stats.curation_turns == 2

    async def test_size_triggers_it_early_even_with_an_empty_heartbeat_file(
        self, rig_factory: RigFactory
    ) -> None:
        """A busy hour logs past ``curate_after``: the next beat curates (reason: size), even
        though HEARTBEAT.md asks for nothing; after it, the same logs are not read again, by
        this process or the next."""
        rig = rig_factory(hb(", curate_after = 1000"))
        self.setup_memory(rig)
        workspace_file(rig, "HEARTBEAT.md", "# Heartbeat\n")
        clock = VirtualClock(at(8))
        gene = gene_on(rig, clock)
        await beats_until(gene, clock, at(8, 0) + timedelta(minutes=40))
        for i in range(20):
            gene.workspace.append_log(clock.now(), f"handled order {i}: shipped with tracking")
        assert gene.stats.model_calls == 0
        await beats_until(gene, clock, at(9, 0) + timedelta(minutes=5))
        assert gene.stats.curation_turns == 1
        assert "curation (size)" in log_of(gene)
        mark = gene.curator.mark
        again = gene_on(rig, clock)
        assert again.curator.mark == mark
        await beats_until(again, clock, at(20))
        assert again.stats.model_calls == 0


async def test_a_simulated_day(rig_factory: RigFactory) -> None:
    """From 06:00 to 07:15 the next day, beats every 30 minutes, active 07:00-23:00: mail
    hourly (07:00 … 22:00, and 07:00 the next day) and calendar every 4 hours (riding along at
    10, 14, 18, 22 and 07) make 17 routine turns; the curation runs once, at 07:00 the next day
    (the first active beat after 24 hours); and no other beat calls the model."""
    rig = rig_factory(hb(', active_hours = "07:00-23:00"'))
    workspace_file(rig, "HEARTBEAT.md", HEARTBEAT.replace("interval: 2h", "interval: 4h"))
    workspace_file(rig, "MEMORY.md", MEMORY)
    clock = VirtualClock(at(6) + timedelta(seconds=10))  # beats drift a second early at most
    gene = gene_on(rig, clock)
    outcomes = await beats_until(gene, clock, at(7, days=1) + timedelta(minutes=15))
    stats = gene.stats
    assert len(outcomes) == stats.beats == 51
    assert outcomes.count(Outcome.INACTIVE) == 18  # 06:00, 06:30, then 23:00 … 06:30
    assert (stats.routine_turns, stats.curation_turns) == (17, 1)
    assert stats.model_calls == stats.turns == 18
    log = log_of(gene) + log_of(gene, days=1)
    assert log.count("calendar (4h)") == 5
    assert "curation (cadence)" in log_of(gene, days=1)


async def test_an_urgent_finding_at_night_does_not_bring_the_routine_along(
    rig_factory: RigFactory,
) -> None:
    """Outside active hours an urgent message wakes the model, alone: the items due by then
    (mail, calendar) wait for the first active beat."""
    rig = rig_factory(hb(', active_hours = "07:00-23:00"'))
    workspace_file(rig, "HEARTBEAT.md", HEARTBEAT)
    clock = VirtualClock(at(21) + timedelta(seconds=10))  # beats drift a second early at most
    gene = gene_on(rig, clock)
    await beats_until(gene, clock, at(23, 0) + timedelta(minutes=45))
    assert gene.stats.routine_turns == 1  # mail at 22:00; 23:00 is outside active hours
    await rig.client().do(
        Calls.send("gene", "The site is down.", subject="down", priority=Priority.URGENT)
    )
    assert await gene.claim() == 1
    assert await gene.heartbeat() is Outcome.TURN
    assert (gene.stats.turns, gene.stats.routine_turns) == (2, 1)
    assert log_of(gene).count("looked at routine") == 1
