"""The fleet-day benchmark stays honest by construction: its baselines change only the beat, its
"calls needed" is a true lower bound, and its scripted model's curation passes the runtime's
own rules (a refused curation would make every strategy retry, hiding what curation costs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.fleet_day import START, curated, stabbing
from benchmarks.fleet_strategies import EveryBeat, IsolatedBeat, Mcos, PerItem

from mcos.domain.curation import Reason, guardrail_lines
from mcos.models.base import ToolCall
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.curation import Curator
from mcos.runtime.memory import MemoryIndex
from mcos.runtime.workspace import Workspace

BEAT_ONLY = frozenset({"heartbeat", "turn", "_cache_ttl"})
"""What a strategy may override: when and how many model calls a beat makes, and the cache."""


def test_the_strategies_override_only_when_a_beat_calls_the_model() -> None:
    runtime = {name for cls in AgentRuntime.__mro__ for name in vars(cls)}
    for strategy in (Mcos, EveryBeat, PerItem, IsolatedBeat):
        overridden = {
            name for name in vars(strategy) if name in runtime and not name.startswith("__")
        }
        assert overridden <= BEAT_ONLY, f"{strategy.__name__} overrides {overridden - BEAT_ONLY}"


def at(minute: int) -> datetime:
    return datetime(2026, 11, 30, tzinfo=UTC) + timedelta(minutes=minute)


def test_the_fewest_calls_cover_every_window() -> None:
    assert stabbing([]) == 0
    assert stabbing([(at(0), at(0))]) == 1
    assert stabbing([(at(0), at(0)), (at(0), at(0))]) == 1  # two urgent messages at once
    assert stabbing([(at(0), at(10)), (at(5), at(20)), (at(8), at(30))]) == 1
    assert stabbing([(at(0), at(10)), (at(11), at(20))]) == 2
    assert stabbing([(at(0), at(60)), (at(1), at(2)), (at(3), at(4))]) == 2  # nested


def test_the_scripted_curation_is_accepted_and_keeps_every_guardrail(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    (root / "memory").mkdir(parents=True)
    memory = "\n".join(
        [
            "# Long-term memory",
            "## Routing rules learned",
            "- Outage from a customer → gene, copy elon.",
            "NEVER send bank details by mail.",
            "## Notes (distilled from the daily logs)",
            *(f"- 2026-10-{d % 28 + 1:02d}: note {d} " + "x" * 120 for d in range(120)),
        ]
    )
    (root / "MEMORY.md").write_text(memory + "\n")
    day = START - timedelta(days=1)
    (root / "memory" / f"{day:%Y-%m-%d}.md").write_text(
        "".join(f"- 09:{m:02d}:00 main turn: handled a request {m}\n" for m in range(40))
    )
    with MemoryIndex(root) as index:
        curator = Curator.load(Workspace(root), index, START, every=timedelta(days=1),
                               after_bytes=20_000, cap=16_000)  # fmt: skip
        batch = curator.prepare(Reason.CADENCE)
        assert batch is not None
        answer = curated(curator.prompt(batch))
        result = curator.apply(batch, ToolCall("toolu_1", answer.name, answer.input), START)
    assert result.refused is None
    assert result.written is not None
    new = (root / "MEMORY.md").read_text()
    assert len(new) <= 16_000
    assert set(guardrail_lines(memory)) <= {line.strip() for line in new.splitlines()}
    assert "distilled: 09:39:00 main turn: handled a request 39" in new
