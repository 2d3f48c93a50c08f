"""The runtime in gateway mode: its provider holds no key, its turns go through Mission Control,
which meters them; a key Mission Control cannot resolve stops the agent as misconfigured."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mcos.client import Calls
from mcos.config.models import Fleet
from mcos.domain.messages import Priority
from mcos.exceptions import EX_CONFIG
from mcos.models.anthropic import AnthropicModel
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.runtime.process import forget_key_variable, run_agent
from tests.fakes.anthropic_server import FakeAnthropic, RateLimited, ToolUse
from tests.runtime.conftest import Rig, RigFactory

KEY = "sk-ant-runtime-gateway-key-0123456789abcdef"
MODEL = "claude-haiku-4-5"


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def gene_toml(fake: FakeAnthropic, variable: str = "GW_RUNTIME_GENE_KEY") -> str:
    """Gene on a Claude model served by the fake; its key where Mission Control runs."""
    model = f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}" }}'
    return f'{model}\nkey = "env:{variable}"\n'


def through_gateway(rig: Rig, agent: str = "gene") -> AnthropicModel:
    """Gene's provider as its process builds it in gateway mode."""
    provider = make_provider(
        rig.fleet.agents[agent],
        None,
        rig.fleet.price_table(),
        sleep=_no_sleep,
        gateway=GatewayAccess(rig.server.url, rig.server.tokens[agent]),
    )
    assert isinstance(provider, AnthropicModel)
    return provider


async def test_a_turn_goes_through_mission_control_and_is_metered_there(
    rig_factory: RigFactory, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_RUNTIME_GENE_KEY", KEY)
    rig = rig_factory({"gene": gene_toml(fake)})
    provider = through_gateway(rig)
    gene = rig.runtime("gene", provider)
    # The provider holds the agent's token and nothing else.
    assert provider.metered
    assert provider._client.api_key is None
    assert provider._client.auth_token == rig.server.tokens["gene"]
    assert KEY not in repr(vars(provider)) + repr(vars(provider._client))
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(Calls.send("gene", "Is the VPS healthy?", subject="VPS"))
    fake.script(
        ToolUse("read_thread", {"message_id": sent.message.id}),
        ToolUse("reply", {"message_id": sent.message.id, "body": "Healthy."}),
    )
    await gene.claim()
    assert await gene.handle_messages()
    thread = await jarvis.do(Calls.thread(sent.message.thread_id))
    assert thread[-1].body == "Healthy."
    assert len(fake.requests) == 2
    assert all(r.headers["x-api-key"] == KEY for r in fake.requests)
    assert not any("x-mcos-purpose" in r.headers for r in fake.requests)  # Mission Control's own
    rows = await rig.client().do(Calls.usage(agent="gene"))
    billed = [r.usage for r in fake.requests if r.usage is not None]
    assert rows[0].calls == 2
    assert rows[0].input_tokens == sum(u["input_tokens"] for u in billed)
    assert rows[0].output_tokens == sum(u["output_tokens"] for u in billed)
    assert rows[0].cost_usd > 0
    assert gene.stats.model_calls == 2


async def test_a_429_cools_down_every_agent_on_the_key_for_the_time_asked(
    rig_factory: RigFactory, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gene's call meets the provider's 429; jarvis, on the same key, is told by Mission
    Control without a call reaching the provider, and both cool down until the same moment."""
    monkeypatch.setenv("GW_RUNTIME_GENE_KEY", KEY)
    shared = gene_toml(fake) + "shared_key = true\n"
    rig = rig_factory({"gene": shared, "jarvis": shared})
    gene = rig.runtime("gene", through_gateway(rig, "gene"))
    jarvis = rig.runtime("jarvis", through_gateway(rig, "jarvis"))
    fake.script(RateLimited(retry_after=40))
    before = datetime.now(UTC)
    await rig.client("jarvis").do(Calls.send("gene", "status?", subject="status"))
    await rig.client("gene").do(Calls.send("jarvis", "status?", subject="status"))
    await gene.claim()
    assert not await gene.handle_messages()
    await jarvis.claim()
    assert not await jarvis.handle_messages()
    assert gene.cooling_until is not None
    assert jarvis.cooling_until is not None
    assert 35 <= (gene.cooling_until - before).total_seconds() <= 45
    assert abs((jarvis.cooling_until - gene.cooling_until).total_seconds()) < 2
    assert len(fake.requests) == 1, "jarvis's call never reached the provider"
    for agent in ("gene", "jarvis"):
        assert (await rig.client().do(Calls.agent(agent))).state == "cooling_down"


def _pointed_at(fleet: Fleet, url: str) -> Fleet:
    return fleet.model_copy(update={"server": fleet.server.model_copy(update={"url": url})})


async def test_a_key_mission_control_cannot_resolve_stops_the_agent_misconfigured(
    rig_factory: RigFactory, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent starts (it needs no key), makes its first call, is told Mission Control has
    no key for it, and stops: exit 78, shown misconfigured naming the reference."""
    monkeypatch.delenv("GW_RUNTIME_UNSET_KEY", raising=False)
    rig = rig_factory({"gene": gene_toml(fake, "GW_RUNTIME_UNSET_KEY")})
    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "Disk?", subject="disk", priority=Priority.URGENT))
    code = await asyncio.wait_for(
        run_agent(_pointed_at(rig.fleet, rig.server.url), "gene", rig.server.tokens["gene"]),
        timeout=60,
    )
    assert code == EX_CONFIG
    shown = await rig.client().do(Calls.agent("gene"))
    assert shown.state == "misconfigured"
    assert "GW_RUNTIME_UNSET_KEY" in shown.state_detail
    assert "gene" in shown.state_detail
    assert fake.requests == []


def test_an_inherited_key_variable_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway agent's process forgets the key variable it may have inherited."""
    monkeypatch.setenv("GW_RUNTIME_INHERITED", KEY)
    forget_key_variable("env:GW_RUNTIME_INHERITED")
    assert "GW_RUNTIME_INHERITED" not in os.environ
    forget_key_variable("file:/nonexistent")  # other references: nothing to drop
    forget_key_variable(None)
