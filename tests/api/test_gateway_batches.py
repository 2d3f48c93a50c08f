"""Message Batches through Mission Control's gateway: reserved at the batch rates, an agent's
own batches only, each result metered once.

A real Mission Control, the fake Anthropic API (which speaks Message Batches and bills them at
half) behind it, the official ``anthropic`` SDK as the agent's client with its own token.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from mcos.client import AsyncClient, Calls
from mcos.domain.budget import MICROS, Limits, Usage
from mcos.domain.prices import price_for
from tests.api.conftest import LiveServer, migrate, raw, serve
from tests.api.test_gateway import anthropic_usage, claude_agent, gateway, usage_of
from tests.fakes.anthropic_server import BATCH_DISCOUNT, FakeAnthropic, Text, micros_at

KEY = "sk-ant-gateway-shared-key-0123456789abcdef"
MODEL = "claude-haiku-4-5"
REPORT: Any = [{"role": "user", "content": "Write the weekly report."}]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key where Mission Control runs (this process): the agents never see it."""
    monkeypatch.setenv("GW_TEST_SHARED_KEY", KEY)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


def sdk(server: LiveServer, agent: str) -> anthropic.AsyncAnthropic:
    """The official SDK as ``agent`` uses it: Mission Control's URL, its own token."""
    return anthropic.AsyncAnthropic(
        base_url=f"{server.url}/v1/gateway/anthropic",
        auth_token=server.tokens[agent],
        max_retries=0,
    )


def one(custom_id: str = "report", max_tokens: int = 400) -> list[Any]:
    return [
        {
            "custom_id": custom_id,
            "params": {"model": MODEL, "max_tokens": max_tokens, "messages": REPORT},
        }
    ]


async def held_micros(server: LiveServer, agent: str) -> int:
    """What Mission Control holds for ``agent``'s calls in flight."""
    async with AsyncClient(server.url, server.operator_token) as c:
        rows = await c.do(Calls.usage(agent=agent))
    return round(sum(r.held_usd for r in rows) * MICROS)


class TestBatchMetering:
    """Each request is held at the batch rates and settled once from its result."""

    async def test_a_batch_is_held_at_batch_rates_and_metered_once(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        """The batch reaches the provider on Mission Control's key; its request is held until
        the results are read, then recorded at the batch rates — half the standard price, the
        provider's own bill — and a second read of the results records nothing more."""
        fake.script(Text("Weekly report: all quiet. " * 10))
        with gateway(tmp_path, {"jarvis": claude_agent(fake)}) as server:
            async with sdk(server, "jarvis") as client:
                batch = await client.messages.batches.create(requests=one())
                assert batch.processing_status == "in_progress"
                assert await held_micros(server, "jarvis") > 0
                assert (await usage_of(server, "jarvis"))[0] == 0
                fake.end_batches()
                ended = await client.messages.batches.retrieve(batch.id)
                assert ended.results_url == (
                    f"{server.url}/v1/gateway/anthropic/v1/messages/batches/{batch.id}/results"
                )
                first = [r async for r in await client.messages.batches.results(batch.id)]
                after_first = await usage_of(server, "jarvis")
                again = [r async for r in await client.messages.batches.results(batch.id)]
                after_second = await usage_of(server, "jarvis")
                assert await held_micros(server, "jarvis") == 0
        assert [r.result.type for r in first] == [r.result.type for r in again] == ["succeeded"]
        (sent,) = fake.requests
        assert sent.batch_id == batch.id
        assert sent.headers["x-api-key"] == KEY
        assert sent.usage is not None
        price = price_for("anthropic", MODEL, {})
        assert price is not None
        usage = anthropic_usage(sent.usage)
        calls, recorded, cost = after_first
        assert (calls, recorded) == (1, Usage(usage.input, usage.output))
        standard = price.rates(0)
        rates = {k: getattr(standard, k) for k in ("input", "output", "cache_read")}
        assert cost == price.batched().cost(usage) == micros_at(sent.usage, rates, BATCH_DISCOUNT)
        assert cost * 2 in (price.cost(usage), price.cost(usage) + 1)
        assert after_second == after_first  # read twice, metered once

    async def test_a_batch_the_budget_cannot_pay_for_holds_and_sends_nothing(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        """One request of two over what the cap has left: 402 in Anthropic's error shape,
        nothing sent, nothing held."""
        tiny = {"jarvis": Limits(usd_micros=3_000)}
        with gateway(tmp_path, {"jarvis": claude_agent(fake)}, budgets=tiny) as server:
            async with sdk(server, "jarvis") as client:
                with pytest.raises(anthropic.APIStatusError) as refused:
                    await client.messages.batches.create(
                        requests=one("small", 1_024) + one("huge", 64_000)
                    )
                assert await held_micros(server, "jarvis") == 0
        assert refused.value.status_code == 402
        assert "mcos_over_budget" in str(refused.value.body)
        assert fake.batches() == []

    async def test_a_canceled_batch_releases_its_holds(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        """Canceled before it ran: the results say canceled, the hold is released, and the
        day's spend is nothing."""
        with gateway(tmp_path, {"jarvis": claude_agent(fake)}) as server:
            async with sdk(server, "jarvis") as client:
                batch = await client.messages.batches.create(requests=one())
                canceling = await client.messages.batches.cancel(batch.id)
                assert canceling.processing_status == "canceling"
                results = [r async for r in await client.messages.batches.results(batch.id)]
                assert await held_micros(server, "jarvis") == 0
                spent = (await usage_of(server, "jarvis"))[2]
        assert [r.result.type for r in results] == ["canceled"]
        assert spent == 0
        assert fake.requests == []


class TestBadBatches:
    """A batch the gateway cannot meter is refused before anything is held or sent."""

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            ({"requests": []}, "requests: a non-empty list is required"),
            ({"requests": [{"custom_id": "a"}]}, "requests.0: needs a custom_id"),
            ({"requests": one(), "stream": True}, "stream: Extra inputs are not permitted"),
            (
                {"requests": [{"custom_id": "a", "params": {"model": "claude-opus-4-6"}}]},
                "may call only its configured models",
            ),
        ],
    )
    async def test_refused_with_the_problem_named(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path, body: Any, problem: str
    ) -> None:
        """Each refusal names what is wrong, in Anthropic's error shape."""
        with gateway(tmp_path, {"jarvis": claude_agent(fake)}) as server:
            answer = await asyncio.to_thread(
                raw,
                server,
                "POST",
                "/v1/gateway/anthropic/v1/messages/batches",
                server.tokens["jarvis"],
                json=body,
            )
            assert await held_micros(server, "jarvis") == 0
        assert answer.status_code in (400, 403)
        assert answer.json()["type"] == "error"
        assert problem in answer.json()["error"]["message"]
        assert fake.batches() == []


class TestOwnBatchesOnly:
    """An agent sees, cancels and reads its own batches, no other's."""

    async def test_another_agents_batch_is_not_found(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        """Gene, on the same key, cannot retrieve, cancel or read jarvis's batch: 404, as if it
        did not exist; the batch goes on untouched."""
        agents = {"jarvis": claude_agent(fake), "gene": claude_agent(fake)}
        with gateway(tmp_path, agents) as server:
            async with sdk(server, "jarvis") as jarvis, sdk(server, "gene") as gene:
                batch = await jarvis.messages.batches.create(requests=one())
                for attempt in (
                    gene.messages.batches.retrieve(batch.id),
                    gene.messages.batches.cancel(batch.id),
                    gene.messages.batches.results(batch.id),
                ):
                    with pytest.raises(anthropic.NotFoundError, match=batch.id):
                        await attempt
        (kept,) = fake.batches()
        assert kept.status == "in_progress"


async def test_results_read_after_mission_control_restarted_are_metered_once(
    keys: None, fake: FakeAnthropic, tmp_path: Path
) -> None:
    """Mission Control restarts while the batch runs: the next one knows the batch from the
    audit log, meters its result, and a second read counts nothing more."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    await asyncio.to_thread(asyncio.run, migrate(url))
    config, agent = claude_agent(fake)
    settings: dict[str, Any] = {
        "gateway": {"jarvis": agent},
        "models": {"jarvis": config},
        "token_key": secrets.token_bytes(32),  # the same Mission Control, started again
    }
    fake.script(Text("Weekly report."))
    with serve(url, tmp_path, **settings) as first:
        async with sdk(first, "jarvis") as client:
            batch = await client.messages.batches.create(requests=one())
    fake.end_batches()
    with serve(url, tmp_path, **settings) as second:
        async with sdk(second, "jarvis") as client:
            read = [r async for r in await client.messages.batches.results(batch.id)]
            metered = await usage_of(second, "jarvis")
            [r async for r in await client.messages.batches.results(batch.id)]
            assert await usage_of(second, "jarvis") == metered
            assert await held_micros(second, "jarvis") == 0
    assert [r.result.type for r in read] == ["succeeded"]
    assert metered[0] == 1
    assert metered[2] > 0
