"""Model use and budgets on both stores: reservations that can never overrun a cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from mcos.domain.budget import MICROS, Limits, Usage, Verdict, WorstCase
from mcos.exceptions import Conflict, OverBudget
from mcos.store import Store
from mcos.store.protocol import BudgetAsk, ModelCall

DOLLAR = Limits(usd_micros=MICROS)
NONE = Limits()


def ask(agent: str = "gene", cents: int = 10, tokens: int = 1000) -> BudgetAsk:
    return BudgetAsk(agent, WorstCase.fixed(cents * 10_000, tokens), "heartbeat")


def call_ask(agent: str = "gene", prompt: int = 10_000, output: int = 8_000) -> BudgetAsk:
    """A call on a $1 input / $5 output model: 1 micro-dollar a prompt token, 5 an output one."""
    worst = WorstCase(prompt, prompt, Fraction(5), output, 1_024)
    return BudgetAsk(agent, worst, "heartbeat", "test-model")


def call(agent: str = "gene", cents: int = 3) -> ModelCall:
    usage = Usage(input=100, output=50, cache_read=800, cache_write=0)
    return ModelCall(agent, "anthropic", "claude-sonnet-4-5", usage, cents * 10_000, "heartbeat")


class TestReservations:
    """Reserve the worst case, settle the actual."""

    async def test_reserve_and_settle(self, store: Store) -> None:
        """A settled call counts at its actual cost; its reservation no longer holds."""
        r = await store.reserve_budget(ask(cents=10), DOLLAR, NONE)
        assert r.verdict is Verdict.GRANTED
        assert r.committed.usd_micros == 100_000
        today = datetime.now(UTC).date().isoformat()
        [held] = await store.usage(today)
        assert held.held_micros == 100_000
        assert held.calls == 0
        await store.settle(r.id, call(cents=3))
        [row] = await store.usage(today)
        assert row.agent == "gene"
        assert row.calls == 1
        assert row.cost_micros == 30_000
        assert row.held_micros == 0
        assert row.usage.cache_read == 800

    async def test_refused_over_the_cap_and_nothing_held(self, store: Store) -> None:
        """A call whose worst case passes the cap is refused, naming the cap; nothing is held."""
        await store.reserve_budget(ask(cents=70), DOLLAR, NONE)
        with pytest.raises(OverBudget) as err:
            await store.reserve_budget(ask(cents=40), DOLLAR, NONE)
        assert "gene is at its daily budget" in err.value.message
        assert err.value.details["scope"] == "agent"
        today = datetime.now(UTC).date().isoformat()
        [row] = await store.usage(today)
        assert row.held_micros == 700_000

    async def test_warning_from_eighty_percent(self, store: Store) -> None:
        """The reservation that takes the day to 80% of the cap comes back with a warning."""
        assert (await store.reserve_budget(ask(cents=70), DOLLAR, NONE)).verdict is Verdict.GRANTED
        assert (await store.reserve_budget(ask(cents=10), DOLLAR, NONE)).verdict is Verdict.WARNING

    async def test_token_cap_and_fleet_cap(self, store: Store) -> None:
        """Token caps and the fleet's cap refuse too, each naming its scope."""
        with pytest.raises(OverBudget):
            await store.reserve_budget(ask(tokens=5_000), Limits(tokens=4_000), NONE)
        await store.reserve_budget(ask("gene", cents=60), NONE, DOLLAR)
        with pytest.raises(OverBudget) as err:
            await store.reserve_budget(ask("jarvis", cents=60), NONE, DOLLAR)
        assert err.value.details["scope"] == "fleet"

    async def test_settle_only_what_you_hold(self, store: Store) -> None:
        """Settling twice, or another agent's reservation, is a conflict."""
        r = await store.reserve_budget(ask(), DOLLAR, NONE)
        with pytest.raises(Conflict):
            await store.settle(r.id, call(agent="jarvis"))
        await store.settle(r.id, call())
        with pytest.raises(Conflict):
            await store.settle(r.id, call())

    async def test_concurrent_reservations_never_overrun(self, store: Store) -> None:
        """Twenty concurrent 10-cent reservations under a 1-dollar cap: exactly ten granted."""
        results = await asyncio.gather(
            *(store.reserve_budget(ask(cents=10), DOLLAR, NONE) for _ in range(20)),
            return_exceptions=True,
        )
        granted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, OverBudget)]
        assert len(granted) == 10
        assert len(refused) == 10

    async def test_the_output_is_clamped_to_what_the_cap_has_left(self, store: Store) -> None:
        """Past the point where the whole worst case fits, the hold grants the output the rest of
        the cap pays for, down to the floor; below it the call is refused. Never past the cap."""
        cap = Limits(usd_micros=100_000)  # 10 cents
        whole = [await store.reserve_budget(call_ask(), cap, NONE) for _ in range(2)]
        assert [r.max_output for r in whole] == [8_000, 8_000]
        assert whole[1].committed.usd_micros == 2 * 50_000
        for r in whole:
            await store.settle(r.id, call(cents=1))  # 20,000 spent, 80,000 left
        assert (await store.reserve_budget(call_ask(), cap, NONE)).max_output == 8_000
        clamped = await store.reserve_budget(call_ask(), cap, NONE)  # 30,000 left
        assert clamped.max_output == (30_000 - 10_000) // 5
        assert clamped.usd_micros == 30_000
        assert clamped.committed.usd_micros == 100_000
        with pytest.raises(OverBudget) as err:
            await store.reserve_budget(call_ask(prompt=0), cap, NONE)
        assert "cut to 1,024 tokens" in err.value.message
        held = await store.settle(clamped.id, call(cents=0))
        assert held is not None
        assert (held.model, held.prompt_tokens, held.max_output) == ("test-model", 10_000, 4_000)
        assert held.usd_micros == 30_000

    async def test_concurrent_clamped_holds_never_pass_the_cap(self, store: Store) -> None:
        """Thirty concurrent calls against a cap that pays for a few: the holds sum to at most
        the cap, the last ones granted are clamped, and none is granted below the floor."""
        cap = Limits(usd_micros=200_000)
        results = await asyncio.gather(
            *(store.reserve_budget(call_ask(), cap, NONE) for _ in range(30)),
            return_exceptions=True,
        )
        granted = [r for r in results if not isinstance(r, BaseException)]
        assert all(isinstance(r, OverBudget) for r in results if isinstance(r, BaseException))
        assert sum(r.usd_micros for r in granted) <= 200_000
        assert 200_000 - sum(r.usd_micros for r in granted) < 10_000 + 5 * 1_024
        assert min(r.max_output for r in granted) >= 1_024

    async def test_call_without_reservation(self, store: Store) -> None:
        """A free call (the offline model) is recorded without a reservation."""
        await store.settle(None, call(cents=0))
        today = datetime.now(UTC).date().isoformat()
        [row] = await store.usage(today, agent="gene")
        assert row.calls == 1
        assert await store.usage(today, agent="jarvis") == []


class TestAgentStates:
    """What runtimes report about themselves."""

    async def test_upsert_and_list(self, store: Store) -> None:
        """The latest report wins; until and info round-trip."""
        await store.set_agent_state("gene", "running")
        until = datetime(2030, 1, 1, 12, tzinfo=UTC)
        state = await store.set_agent_state(
            "gene", "cooling_down", "429 from the model API", until, {"retry_after": 30}
        )
        assert state.until == until
        [listed] = await store.agent_states()
        assert listed.state == "cooling_down"
        assert listed.info == {"retry_after": 30}
        assert listed.updated_at > datetime.now(UTC) - timedelta(minutes=1)

    async def test_read_for_some_agents_only(self, store: Store) -> None:
        """A state report answers about one agent from reads of that one, not of the fleet."""
        for name, state in (("gene", "running"), ("jarvis", "idle"), ("sentinel", "failed")):
            await store.set_agent_state(name, state)
        assert [s.name for s in await store.agent_states()] == ["gene", "jarvis", "sentinel"]
        picked = await store.agent_states(["sentinel", "gene", "nobody"])
        assert [(s.name, s.state) for s in picked] == [("gene", "running"), ("sentinel", "failed")]
        assert await store.agent_states([]) == []
        assert [a.name for a in await store.list_agents(["sentinel", "alerts", "x"])] == [
            "sentinel"
        ]  # a topic or an unknown name is no agent
        assert [a.name for a in await store.list_agents()] == ["gene", "jarvis", "sentinel"]
