"""Mission Control's meter on both stores: its own price of the agent's configured model, batch
rates, an unpriced model under a dollar cap, and holds that never pass a cap."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from mcos.config.models import ModelConfig
from mcos.domain.budget import Limits, Price, Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.exceptions import ConfigError, Forbidden, OverBudget
from mcos.server.auth import Authenticator
from mcos.server.context import MissionControl, ServerSettings
from mcos.store import Store
from mcos.store.protocol import AuditQuery

HAIKU = ModelConfig(provider="anthropic", id="claude-haiku-5-5", route="direct")
LOCAL = ModelConfig(provider="openai", id="my-local-llm", base_url="http://127.0.0.1:9/v1")


def _mc(store: Store, **settings: object) -> MissionControl:
    key = secrets.token_bytes(32)
    config = ServerSettings(token_key=key, **settings)  # type: ignore[arg-type]
    return MissionControl(store, config, Authenticator(store, key))


async def test_calls_are_priced_with_genai_prices_and_batch_calls_at_its_batch_rates(
    store: Store,
) -> None:
    """Haiku 5.5: $0.10 / $0.50 per million input / output tokens, half in a batch."""
    mc = _mc(store, models={"gene": HAIKU})
    usage = Usage(input=100_000, output=10_000)
    hold = await mc.meter.reserve(
        "gene",
        HAIKU.id,
        prompt_tokens=100_000,
        max_output=10_000,
        cache_ttl=CacheTTL.NONE,
        purpose="heartbeat",
    )
    assert hold.ask_micros == 100_000 // 10 + 10_000 // 2
    standard = await mc.meter.settle("gene", HAIKU.id, hold.id, usage, "hb", provider="anthropic")
    batch = await mc.meter.settle(
        "gene", HAIKU.id, None, usage, "report", provider="anthropic", batch=True
    )
    assert (standard, batch) == (15_000, 7_500)
    [row] = await store.usage((await store.now()).date().isoformat(), "gene")
    assert (row.calls, row.cost_micros, row.held_micros) == (2, 22_500, 0)


async def test_the_model_must_be_the_configured_one_and_priced_under_a_dollar_cap(
    store: Store,
) -> None:
    """Another model is Forbidden (audited); an unpriced one is a ConfigError naming it when a
    dollar cap applies, and free (tokens still counted) when none does."""
    mc = _mc(
        store,
        models={"gene": HAIKU, "jarvis": LOCAL, "sentinel": LOCAL},
        budgets={"jarvis": Limits.of(1.0, None), "sentinel": Limits.of(None, 50_000)},
    )
    with pytest.raises(Forbidden, match="not 'claude-opus-5-5'"):
        await mc.meter.settle(
            "gene", "claude-opus-5-5", None, Usage(input=1), "x", provider="anthropic"
        )
    [refusal] = await store.audit(AuditQuery(action="usage.report"))
    assert (refusal.action, refusal.outcome) == ("usage.report", "refused")
    with pytest.raises(ConfigError, match="'my-local-llm'"):
        mc.meter.pricing("jarvis", LOCAL.id)
    hold = await mc.meter.reserve(
        "sentinel", LOCAL.id, prompt_tokens=40_000, max_output=20_000,
        cache_ttl=CacheTTL.NONE, purpose="",
    )  # fmt: skip
    assert (hold.max_output, hold.ask_micros) == (10_000, 0)  # the token cap clamps it
    with pytest.raises(OverBudget):
        await mc.meter.reserve(
            "sentinel", LOCAL.id, prompt_tokens=1, max_output=10, cache_ttl=CacheTTL.NONE,
            purpose="",
        )  # fmt: skip


async def test_concurrent_holds_of_a_fleet_file_price_never_pass_the_fleet_cap(
    store: Store,
) -> None:
    """Forty concurrent calls of two agents against a $0.10 fleet cap: granted holds sum to at
    most the cap, and what is left is less than one floor-sized call."""
    dear = ModelConfig(provider="anthropic", id="dear-model", route="direct")
    mc = _mc(
        store,
        models={"gene": dear, "jarvis": dear},
        prices={"dear-model": Price(1.0, 5.0, 0.1, 1.25, 2.0)},
        fleet_budget=Limits.of(0.10, None),
    )

    async def call(agent: str) -> int:
        try:
            hold = await mc.meter.reserve(
                agent, "dear-model", prompt_tokens=2_000, max_output=4_096,
                cache_ttl=CacheTTL.FIVE_MINUTES, purpose="",
            )  # fmt: skip
        except OverBudget:
            return 0
        return hold.ask_micros

    held = await asyncio.gather(*(call(("gene", "jarvis")[i % 2]) for i in range(40)))
    floor = 2_000 * 1.25 + 1_024 * 5
    assert 100_000 - floor < sum(held) <= 100_000


async def test_an_agents_triage_model_is_metered_too(store: Store) -> None:
    mc = _mc(store, models={"gene": LOCAL}, triage_models={"gene": HAIKU})
    assert mc.meter.model("gene", HAIKU.id) == HAIKU
    assert mc.meter.model("gene", LOCAL.id) == LOCAL
    with pytest.raises(Forbidden, match="'my-local-llm' or 'claude-haiku-5-5', not 'x'"):
        mc.meter.model("gene", "x")
    with pytest.raises(Forbidden, match="jarvis has no model configured here"):
        mc.meter.model("jarvis", "x")
