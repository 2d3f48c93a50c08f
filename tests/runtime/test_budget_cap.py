"""The budget test of issue 16 in direct mode, with a real Mission Control and the runtime on the
fake Messages API: repeated turns until the first refusal use the cap to at least 90% and never
pass it; a runtime that lies (declares its own price or cost, reports without a reservation or
for another model, settles twice) cannot move the recorded spend off what Mission Control
computes; a provider Mission Control meters is neither reserved nor reported, and its refusal
stops the turn like a refused reservation. (The gateway variant, where the runtime holds no key,
is the gateway's test.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from mcos.client import Calls
from mcos.domain.budget import MICROS, Limits, Usage
from mcos.domain.prices import listed
from mcos.exceptions import OverBudget
from mcos.models.anthropic import AnthropicModel
from mcos.models.base import ModelReply, ModelRequest
from mcos.models.factory import make_provider
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.turns import TurnStopped
from mcos.runtime.workspace import TurnKind
from tests.api.conftest import raw
from tests.fakes.anthropic_server import FakeAnthropic, Text
from tests.fakes.scripts import JSON, RecordedRequest
from tests.runtime.conftest import FAST, Rig, RigFactory

KEY = "sk-ant-test-gene"
MODEL = "claude-haiku-5-5"
CAP = 0.05
"""Dollars: some twenty calls of Haiku 5.5 that each write their whole 4,096 output tokens."""


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def _long_answer(_body: JSON) -> Text:
    """An answer longer than any output cap: every call is billed its whole ``max_tokens``."""
    return Text("all quiet on the disks. " * 4_000)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        server.default = _long_answer
        yield server


@pytest.fixture
def capped(rig_factory: RigFactory, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """Gene on Claude Haiku 5.5 in direct mode (its own key) under a $0.05 daily cap."""
    monkeypatch.setenv("GENE_ANTHROPIC_KEY", KEY)
    model = (
        f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
        'route = "direct" }'
    )
    return rig_factory(
        {"gene": f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"'},
        budgets={"gene": Limits.of(CAP, None)},
    )


def _gene(rig: Rig) -> AgentRuntime:
    """Gene's runtime; the same quiet answer turn after turn must not trip the breaker here."""
    config = rig.fleet.agents["gene"]
    provider = make_provider(config, KEY, rig.fleet.price_table(), sleep=_no_sleep)
    assert isinstance(provider, AnthropicModel)
    return rig.runtime("gene", provider, replace(FAST, breaker_turns=1_000))


def _billed(requests: list[RecordedRequest]) -> int:
    """What the fake's own count of the calls it answered costs at today's list price."""
    price = listed("anthropic", MODEL)
    assert price is not None
    total = 0
    for r in requests:
        if r.usage is None:
            continue
        u = r.usage
        total += price.cost(
            Usage(
                input=u["input_tokens"],
                output=u["output_tokens"],
                cache_read=u["cache_read_input_tokens"],
                cache_write=u["cache_creation_input_tokens"],
                cache_write_1h=u["cache_creation"]["ephemeral_1h_input_tokens"],
            )
        )
    return total


async def _recorded(rig: Rig) -> tuple[int, int]:
    """Gene's recorded spend and holds today, in micro-dollars."""
    rows = await rig.client().do(Calls.usage(agent="gene"))
    return (
        round(sum(r.cost_usd for r in rows) * MICROS),
        round(sum(r.held_usd for r in rows) * MICROS),
    )


async def test_the_cap_is_used_to_90_percent_before_the_first_refusal_and_never_passed(
    capped: Rig, fake: FakeAnthropic
) -> None:
    gene = _gene(capped)
    cap = round(CAP * MICROS)
    refused: TurnStopped | None = None
    turns = 0
    while refused is None and turns < 200:
        turns += 1
        try:
            await gene.turn(TurnKind.MAIN, "check the disks", main=False)
        except TurnStopped as stopped:
            refused = stopped
        spent, held = await _recorded(capped)
        assert spent <= cap
        assert held == 0
    assert refused is not None
    assert "over budget" in str(refused)
    spent, held = await _recorded(capped)
    assert held == 0
    assert 0.9 * cap <= spent <= cap, f"{spent / cap:.1%} of the cap after {turns} turns"
    # Every call the fake answered is recorded at exactly its own count, priced by Mission
    # Control; the last calls asked for only the output the rest of the cap paid for.
    answered = [r for r in fake.requests if r.usage is not None]
    assert len(answered) == turns - 1  # the refused turn made no call
    assert _billed(fake.requests) == spent
    asked = [r.body["max_tokens"] for r in answered]
    assert asked[0] == capped.fleet.agents["gene"].max_output_tokens
    assert min(asked) < asked[0], "no call was clamped to what the cap had left"
    assert min(asked) >= 1_024
    assert (await capped.client().do(Calls.agent("gene"))).state == "over_budget"


async def test_a_lying_runtime_cannot_move_the_recorded_spend(
    capped: Rig, fake: FakeAnthropic
) -> None:
    """One honest call, then every lie the direct-mode routes can be told: each refused with a
    clear error, nothing recorded; the spend stays what Mission Control computed."""
    gene = _gene(capped)
    await gene.turn(TurnKind.MAIN, "check the disks", main=False)
    spent, _ = await _recorded(capped)
    assert spent == _billed(fake.requests) > 0
    server, token = capped.server, capped.server.tokens["gene"]
    tokens = {"input_tokens": 10, "output_tokens": 10}
    hold = (await capped.client("gene").do(Calls.reserve(MODEL, 1_000, 100))).id
    lies: list[tuple[str, dict[str, Any], int, str]] = [
        ("reservations", {"max_usd": 0.0, "max_tokens": 10}, 422, "max_usd"),
        ("reservations", {"model": "offline-1", "prompt_tokens": 10, "max_output": 10}, 403,
         "not 'offline-1'"),
        ("calls", {"provider": "anthropic", "model": MODEL, **tokens}, 422, "reservation_id"),
        ("calls", {"reservation_id": hold, "provider": "anthropic", "model": MODEL,
                   "cost_usd": 0.0, **tokens}, 422, "cost_usd"),
        ("calls", {"reservation_id": hold, "provider": "offline", "model": "offline-1",
                   **tokens}, 403, "not 'offline-1'"),
        ("calls", {"reservation_id": 1, "provider": "anthropic", "model": MODEL, **tokens}, 409,
         "not held by gene"),
    ]  # fmt: skip
    for path, body, status, says in lies:
        response = raw(server, "POST", f"/v1/usage/{path}", token, json=body)
        assert (response.status_code, says in response.text) == (status, True), body
    assert await _recorded(capped) == (spent, 1_000 // 10 + 100 // 2)  # $0.10 / $0.50 per M
    audit = await capped.client().do(Calls.audit(actor="agent:gene"))
    assert sum(a.outcome == "refused" for a in audit) == 2


class GatewayModel(OfflineModel):
    """A provider Mission Control meters (as the gateway's is): the runtime neither reserves nor
    reports; past ``allowed`` calls the gateway answers over budget (``OverBudget``)."""

    metered = True

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        if self.calls > self.allowed:
            raise OverBudget("gene is at its daily budget", scope="agent")
        return await super().complete(request)


async def test_a_metered_provider_is_neither_reserved_nor_reported_and_its_refusal_stops_turns(
    rig: Rig,
) -> None:
    model = GatewayModel(allowed=2)
    gene = rig.runtime("gene", model, replace(FAST, breaker_turns=1_000))
    for _ in range(2):
        await gene.turn(TurnKind.MAIN, "check the disks", main=False)
    assert gene.stats.model_calls == 2
    assert await rig.client().do(Calls.usage(agent="gene")) == []  # the gateway records them
    with pytest.raises(TurnStopped, match="over budget"):
        await gene.turn(TurnKind.MAIN, "check the disks", main=False)
    assert (await rig.client().do(Calls.agent("gene"))).state == "over_budget"
    with pytest.raises(TurnStopped, match="over budget"):
        await gene.turn(TurnKind.MAIN, "and again", main=False)
    assert model.calls == 3  # blocked until the day turns: no further call
