"""Mission Control as the model gateway: the official SDKs call it with an agent's token, it
calls the provider with the key it keeps, and meters every call.

A real Mission Control (uvicorn, a real store), the fake Anthropic and OpenAI servers as the
providers, the official ``anthropic`` and ``openai`` SDKs as the agents' clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from mcos.client import AsyncClient, Calls
from mcos.config.models import AgentConfig, ModelConfig
from mcos.domain.budget import MICROS, Limits, Price, Usage
from mcos.domain.prices import price_for
from mcos.exceptions import KeyUnavailable, ModelRequestRejected, OverBudget, SpendLimitReached
from mcos.models.base import ModelRequest, Turn
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.server.gateway.keys import GatewayAgent
from tests.api.conftest import LiveServer, raw, serve
from tests.fakes.anthropic_server import (
    ApiError,
    FakeAnthropic,
    Overloaded,
    SpendLimit,
    Text,
)
from tests.fakes.anthropic_server import RateLimited as Limited
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripts import JSON, count_tokens
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import eventually

KEY = "sk-ant-gateway-shared-key-0123456789abcdef"
OTHER_KEY = "sk-ant-gateway-other-key-9876543210fedcba"
OPENAI_KEY = "sk-gateway-openai-key-0123456789abcdefgh"
MODEL = "claude-haiku-4-5"
DEARER = "claude-opus-4-6"
LOCAL = "llama3.1:8b"
HELLO: list[Any] = [{"role": "user", "content": "Status report, please."}]
ASK: Any = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
"""The smallest call of the agent's own model."""
LONG = "word " * 200_000
"""An answer longer than any output limit: every call uses all the output it was granted."""


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys where Mission Control runs (this process): the agents never see them."""
    monkeypatch.setenv("GW_TEST_SHARED_KEY", KEY)
    monkeypatch.setenv("GW_TEST_OTHER_KEY", OTHER_KEY)
    monkeypatch.setenv("GW_TEST_OPENAI_KEY", OPENAI_KEY)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def other() -> Iterator[FakeAnthropic]:
    """The provider as the agent on the other key sees it."""
    with FakeAnthropic(api_key=OTHER_KEY) as server:
        yield server


def claude_agent(
    fake: FakeAnthropic, key: str = "env:GW_TEST_SHARED_KEY", model: str = MODEL
) -> tuple[ModelConfig, GatewayAgent]:
    """An agent on a Claude model served by ``fake``, its key kept by Mission Control."""
    config = ModelConfig(provider="anthropic", id=model, base_url=fake.url)
    return config, GatewayAgent("anthropic", {model: config}, key, "fleet.toml: agents.test")


@contextmanager
def gateway(
    tmp_path: Path,
    agents: dict[str, tuple[ModelConfig, GatewayAgent]],
    store: str = "sqlite",
    **overrides: Any,
) -> Iterator[LiveServer]:
    """Mission Control routing ``agents``' model calls, on a fresh store (migrated on a worker
    thread: the tests' own event loop is running)."""
    url = migrated_database(store, tmp_path)
    try:
        with serve(
            url,
            tmp_path,
            gateway={name: g for name, (_, g) in agents.items()},
            models={name: m for name, (m, _) in agents.items()},
            **overrides,
        ) as server:
            yield server
    finally:
        if store == "postgres":
            drop_pg_database(url)


@contextmanager
def jarvis_on(tmp_path: Path, fake: FakeAnthropic, **overrides: Any) -> Iterator[LiveServer]:
    with gateway(tmp_path, {"jarvis": claude_agent(fake)}, **overrides) as server:
        yield server


@pytest.fixture
def gpt_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=OPENAI_KEY) as server:
        yield server


def local_agent(fake: FakeOpenAI, max_output: int = 4096) -> tuple[ModelConfig, GatewayAgent]:
    """An agent on a local OpenAI-compatible model served by ``fake``."""
    model = ModelConfig(provider="openai", id=LOCAL, base_url=fake.base_url)
    agent = GatewayAgent("openai", {LOCAL: model}, "env:GW_TEST_OPENAI_KEY", "x", max_output)
    return model, agent


def gpt(server: LiveServer, agent: str) -> openai.AsyncOpenAI:
    """The official OpenAI SDK as agent ``agent`` uses it through Mission Control."""
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1/gateway/openai/v1", api_key=server.tokens[agent], max_retries=0
    )


PRICE = Price.flat(1.0, 2.0)


@pytest.fixture
async def sdk_clients() -> AsyncIterator[list[anthropic.AsyncAnthropic]]:
    """SDK clients a test opens, closed at its end."""
    opened: list[anthropic.AsyncAnthropic] = []
    yield opened
    for client in opened:
        await client.close()


def claude(
    server: LiveServer, agent: str, opened: list[anthropic.AsyncAnthropic]
) -> anthropic.AsyncAnthropic:
    """The official SDK as agent ``agent`` uses it: Mission Control's URL, its own token."""
    client = anthropic.AsyncAnthropic(
        base_url=f"{server.url}/v1/gateway/anthropic",
        auth_token=server.tokens[agent],
        max_retries=0,
        timeout=60,  # given: the SDK then lets a non-streamed call ask for any max_tokens
    )
    opened.append(client)
    return client


async def usage_of(server: LiveServer, agent: str) -> tuple[int, Usage, int]:
    """Calls, tokens and micro-dollars Mission Control recorded for ``agent`` today."""
    async with AsyncClient(server.url, server.operator_token) as c:
        rows = await c.do(Calls.usage(agent=agent))
    calls, cost = sum(r.calls for r in rows), round(sum(r.cost_usd for r in rows) * MICROS)
    usage = Usage(
        input=sum(r.input_tokens for r in rows),
        output=sum(r.output_tokens for r in rows),
        cache_read=sum(r.cache_read_tokens for r in rows),
        cache_write=sum(r.cache_write_tokens for r in rows),
    )
    return calls, usage, cost


def billed(fake: FakeAnthropic | FakeOpenAI) -> list[JSON]:
    """The usage the provider billed for each successful call."""
    return [r.usage for r in fake.requests if r.usage is not None]


def anthropic_usage(raw_usage: JSON) -> Usage:
    return Usage(
        input=raw_usage["input_tokens"],
        output=raw_usage["output_tokens"],
        cache_read=raw_usage["cache_read_input_tokens"],
        cache_write=raw_usage["cache_creation_input_tokens"],
        cache_write_1h=raw_usage["cache_creation"]["ephemeral_1h_input_tokens"],
    )


class TestMetering:
    """Every call is reserved, forwarded with Mission Control's key and priced from the
    provider's own usage."""

    @pytest.mark.parametrize(
        "store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
    )
    async def test_a_call_is_priced_from_the_providers_usage(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        store: str,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """The SDK gets the provider's answer unchanged; Mission Control records the provider's
        usage at its own price; the provider saw Mission Control's key, not the agent's token."""
        fake.script(Text("All systems nominal."))
        with jarvis_on(tmp_path, fake, store=store) as server:
            client = claude(server, "jarvis", sdk_clients)
            message = await client.messages.create(model=MODEL, max_tokens=300, messages=HELLO)
            calls, usage, cost = await usage_of(server, "jarvis")
        assert message.content[0].type == "text"
        assert message.content[0].text == "All systems nominal."
        (sent,) = fake.requests
        assert sent.headers["x-api-key"] == KEY
        assert server.tokens["jarvis"] not in str(sent.headers)
        assert "x-mcos-fence" not in sent.headers
        assert sent.usage is not None
        provider_usage = anthropic_usage(sent.usage)
        assert message.usage.input_tokens == provider_usage.input
        assert (calls, usage) == (1, Usage(provider_usage.input, provider_usage.output))
        price = price_for("anthropic", MODEL, {}, None)
        assert price is not None
        assert cost == price.cost(provider_usage) > 0

    async def test_cache_writes_are_priced_at_their_ttl(
        self, keys: None, tmp_path: Path, sdk_clients: list[anthropic.AsyncAnthropic]
    ) -> None:
        """A 1-hour cache write then a read: both as the provider billed them."""
        with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as fake:
            fake.default = lambda _body: Text("ok")
            system = [
                {
                    "type": "text",
                    "text": "You are Jarvis. " * 200,
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ]
            with jarvis_on(tmp_path, fake) as server:
                client = claude(server, "jarvis", sdk_clients)
                for _ in range(2):
                    await client.messages.create(
                        model=MODEL, max_tokens=50, system=system, messages=HELLO
                    )
                calls, usage, cost = await usage_of(server, "jarvis")
        first, second = (anthropic_usage(u) for u in billed(fake))
        assert first.cache_write_1h == first.cache_write > 0
        assert second.cache_read == first.cache_write
        assert calls == 2
        assert (usage.cache_write, usage.cache_read) == (first.cache_write, second.cache_read)
        price = price_for("anthropic", MODEL, {}, None)
        assert price is not None
        assert cost == price.cost(first) + price.cost(second)

    async def test_max_tokens_is_lowered_to_what_the_budget_pays_for(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """A client asking for 100,000 output tokens on a 2-cent budget: the provider is asked
        for what the budget can pay, and the call fits the cap."""
        fake.default = lambda _body: Text(LONG)
        cap = Limits(usd_micros=20_000)
        with jarvis_on(tmp_path, fake, budgets={"jarvis": cap}) as server:
            client = claude(server, "jarvis", sdk_clients)
            message = await client.messages.create(model=MODEL, max_tokens=100_000, messages=HELLO)
            _, _, cost = await usage_of(server, "jarvis")
        (sent,) = fake.requests
        assert 0 < sent.body["max_tokens"] < 100_000
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == sent.body["max_tokens"]
        assert cost <= 20_000

    async def test_a_failed_call_releases_its_hold(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """An upstream error is passed through as it came, and nothing is spent or held."""
        fake.script(Overloaded())
        with jarvis_on(tmp_path, fake, budgets={"jarvis": Limits(usd_micros=100_000)}) as server:
            client = claude(server, "jarvis", sdk_clients)
            with pytest.raises(anthropic.APIStatusError) as caught:
                await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
            async with AsyncClient(server.url, server.operator_token) as c:
                rows = await c.do(Calls.usage(agent="jarvis"))
        assert caught.value.status_code == 529
        assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert sum(r.cost_usd for r in rows) == 0
        assert sum(r.held_usd for r in rows) == 0


class TestBudget:
    """In gateway mode the agent has no key: whatever its client sends, the cap holds."""

    async def test_no_client_can_pass_the_cap(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """Huge max_tokens, a loop, then a burst in parallel: spend reaches at least 90% of
        the cap and never passes it; every refusal is a 402 ``mcos_over_budget``."""
        fake.default = lambda _body: Text(LONG)
        cap = 100_000  # 10 cents
        with jarvis_on(tmp_path, fake, budgets={"jarvis": Limits(usd_micros=cap)}) as server:
            client = claude(server, "jarvis", sdk_clients)
            refusal: Any = None
            for _ in range(40):
                try:
                    await client.messages.create(model=MODEL, max_tokens=3_000, messages=HELLO)
                except anthropic.APIStatusError as e:
                    refusal = e.body
                    break
            _, _, before_burst = await usage_of(server, "jarvis")

            async def one() -> int:
                try:
                    await client.messages.create(model=MODEL, max_tokens=100_000, messages=HELLO)
                except anthropic.APIStatusError as e:
                    return e.status_code
                return 200

            burst = await asyncio.gather(*(one() for _ in range(8)))
            calls, _, spent = await usage_of(server, "jarvis")
        assert refusal is not None, "the loop ends on a refusal before 40 calls"
        assert refusal["error"]["type"] == "mcos_over_budget"
        assert before_burst >= 0.9 * cap
        assert spent <= cap
        assert set(burst) <= {200, 402}
        assert calls == len(billed(fake))
        price = price_for("anthropic", MODEL, {}, None)
        assert price is not None
        assert spent == sum(price.cost(anthropic_usage(u)) for u in billed(fake))

    async def test_the_manager_hears_of_80_percent_once(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """The runtime never sees a reservation through the gateway, so Mission Control tells
        the agent's manager itself when its spend passes 80% of the cap — once that day,
        however many calls follow."""
        fake.default = lambda _body: Text(LONG)
        cap = 100_000
        with gateway(
            tmp_path, {"gene": claude_agent(fake)}, budgets={"gene": Limits(usd_micros=cap)}
        ) as server:
            client = claude(server, "gene", sdk_clients)
            for _ in range(40):
                try:
                    await client.messages.create(model=MODEL, max_tokens=3_000, messages=HELLO)
                except anthropic.APIStatusError:
                    break
            async with AsyncClient(server.url, server.operator_token) as c:
                got = await c.do(Calls.inbox(inbox="jarvis", limit=50))
        warnings = [d.message for d in got.deliveries if "80%" in d.message.subject]
        assert len(warnings) == 1
        assert warnings[0].sender == "mission-control"
        assert warnings[0].subject == "gene: 80% of today's model budget used"
        assert "0.10 USD" in warnings[0].body


class TestWhoMayCall:
    """Only an agent, with its own token, for its own configured model."""

    async def test_a_dearer_model_is_refused_and_audited(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        with jarvis_on(tmp_path, fake) as server:
            client = claude(server, "jarvis", sdk_clients)
            with pytest.raises(anthropic.PermissionDeniedError) as caught:
                await client.messages.create(model=DEARER, max_tokens=10, messages=HELLO)
            async with AsyncClient(server.url, server.operator_token) as c:
                audit = await c.do(Calls.audit(action="gateway.model"))
        assert MODEL in caught.value.message
        assert DEARER in caught.value.message
        assert fake.requests == []
        (row,) = audit
        assert (row.actor, row.outcome) == ("agent:jarvis", "refused")

    async def test_the_agents_triage_model_is_its_own_too(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """An agent with a cheaper triage model may call either; Mission Control meters both."""
        main = ModelConfig(provider="anthropic", id=DEARER, base_url=fake.url)
        cheap = ModelConfig(provider="anthropic", id=MODEL, base_url=fake.url)
        both = GatewayAgent(
            "anthropic", {DEARER: main, MODEL: cheap}, "env:GW_TEST_SHARED_KEY", "x"
        )
        with gateway(tmp_path, {"jarvis": (main, both)}, triage_models={"jarvis": cheap}) as server:
            client = claude(server, "jarvis", sdk_clients)
            await client.messages.create(**ASK)
            await client.messages.create(**{**ASK, "model": DEARER})
            calls, _, cost = await usage_of(server, "jarvis")
        assert [r.body["model"] for r in fake.requests] == [MODEL, DEARER]
        assert calls == 2
        assert cost > 0

    async def test_another_agents_token_cannot_spend_this_agents_budget(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """Each call is charged to the token's agent, which may only ask for its own models:
        gene (another model) and sentinel (offline, no gateway) cannot make jarvis's calls;
        an operator token is no agent, and no token is no caller."""
        gene_model = ModelConfig(provider="anthropic", id=DEARER, base_url=fake.url)
        gene = GatewayAgent("anthropic", {DEARER: gene_model}, "env:GW_TEST_SHARED_KEY", "x")
        agents = {"jarvis": claude_agent(fake), "gene": (gene_model, gene)}
        with gateway(tmp_path, agents) as server:
            for agent in ("gene", "sentinel"):
                with pytest.raises(anthropic.PermissionDeniedError):
                    await claude(server, agent, sdk_clients).messages.create(**ASK)
            path = "/v1/gateway/anthropic/v1/messages"
            body = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
            as_operator = raw(server, "POST", path, server.operator_token, json=body)
            nobody = raw(server, "POST", path, json=body)
            calls, _, _ = await usage_of(server, "jarvis")
        assert as_operator.status_code == 403
        assert nobody.status_code == 401
        assert fake.requests == []
        assert calls == 0


class TestRateLimits:
    """A 429 rests its key for every agent that shares it, as long as the provider asked."""

    async def test_a_429_is_shared_by_the_agents_on_one_key(
        self,
        keys: None,
        fake: FakeAnthropic,
        other: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        fake.script(Limited(retry_after=30))
        agents = {
            "jarvis": claude_agent(fake),
            "gene": claude_agent(fake),
            "sentinel": claude_agent(other, key="env:GW_TEST_OTHER_KEY"),
        }
        with gateway(tmp_path, agents) as server:
            with pytest.raises(anthropic.RateLimitError) as first:
                await claude(server, "jarvis", sdk_clients).messages.create(**ASK)
            with pytest.raises(anthropic.RateLimitError) as second:
                await claude(server, "gene", sdk_clients).messages.create(**ASK)
            elsewhere = await claude(server, "sentinel", sdk_clients).messages.create(**ASK)
            calls, _, _ = await usage_of(server, "gene")
        assert first.value.response.headers["retry-after"] == "30"
        waited = int(second.value.response.headers["retry-after"])
        assert 25 <= waited <= 30
        assert 25_000 <= int(second.value.response.headers["retry-after-ms"]) <= 30_000
        assert second.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert len(fake.requests) == 1, "the second agent's call never reached the provider"
        assert elsewhere.content[0].type == "text"
        assert len(other.requests) == 1, "another key is not held"
        assert calls == 0

    async def test_the_key_is_used_again_once_the_wait_is_over(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        fake.script(Limited(retry_after=0.5), Text("back"))
        with jarvis_on(tmp_path, fake) as server:
            client = claude(server, "jarvis", sdk_clients)
            with pytest.raises(anthropic.RateLimitError):
                await client.messages.create(**ASK)

            async def answered() -> str | None:
                try:
                    message = await client.messages.create(**ASK)
                except anthropic.RateLimitError:
                    return None
                block = message.content[0]
                return block.text if block.type == "text" else None

            assert await eventually("the key's rest to end", answered) == "back"
        assert len(fake.requests) == 2

    async def test_a_spend_limit_rests_no_key_and_is_not_retried(
        self, keys: None, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        """The runtime's adapter through the gateway: a spend limit (a 429 with its code, or a
        400 naming the credit) is SpendLimitReached after one call; a wrong key is rejected
        after one call; an overload is retried by the adapter alone."""
        fake.script(SpendLimit(code="enforced_spend_limit_reached"), SpendLimit())
        with jarvis_on(tmp_path, fake) as server:
            provider = gateway_provider(server, "jarvis")
            try:
                for _ in range(2):
                    with pytest.raises(SpendLimitReached):
                        await provider.complete(request())
                assert len(fake.requests) == 2, "nothing retried, and no cooldown set"
                fake.script(Overloaded(), Overloaded(), Text("up again"))
                reply = await provider.complete(request())
                assert reply.text == "up again"
                assert len(fake.requests) == 5
            finally:
                await provider.aclose()

    async def test_a_wrong_key_is_not_retried(
        self, monkeypatch: pytest.MonkeyPatch, fake: FakeAnthropic, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("GW_TEST_SHARED_KEY", "sk-ant-gateway-wrong-key-000000000000000")
        with jarvis_on(tmp_path, fake) as server:
            provider = gateway_provider(server, "jarvis")
            try:
                with pytest.raises(ModelRequestRejected) as caught:
                    await provider.complete(request())
            finally:
                await provider.aclose()
        assert caught.value.status_code == 401
        assert len(fake.requests) == 1


def gateway_provider(server: LiveServer, agent: str) -> Any:
    """The runtime's provider for ``agent`` in gateway mode, as the factory builds it."""
    config = ModelConfig(provider="anthropic", id=MODEL)
    agent_config = AgentConfig(role="ops", host="local", model=config)

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return make_provider(
        agent_config,
        None,
        {},
        sleep=no_sleep,
        gateway=GatewayAccess(server.url, server.tokens[agent]),
    )


def request(max_output: int = 100) -> ModelRequest:
    return ModelRequest("You are Jarvis.", "", (Turn.user("Status?"),), max_output=max_output)


class TestStreaming:
    """``stream: true`` passes the provider's events through as they arrive, metered."""

    async def test_a_stream_arrives_as_it_is_sent_and_is_metered(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        words = "A streamed status report, in many small pieces. " * 5
        fake.script(Text(words))
        gate = threading.Event()
        fake.stream_gate = gate
        with jarvis_on(tmp_path, fake) as server:
            client = claude(server, "jarvis", sdk_clients)
            async with client.messages.stream(
                model=MODEL, max_tokens=400, messages=HELLO
            ) as stream:
                seen = []
                async for event in stream:
                    seen.append(event.type)
                    if event.type == "content_block_delta":
                        # The provider holds the rest until the gate opens: this event came
                        # through the gateway as it was sent, not after the whole answer.
                        gate.set()
                message = await stream.get_final_message()
            calls, usage, cost = await usage_of(server, "jarvis")
        assert message.content[0].type == "text"
        assert message.content[0].text == words
        assert fake.gate_opened == [True], "a delta arrived while the provider held the rest"
        assert seen[0] == "message_start"
        assert seen[-1] == "message_stop"
        (provider_usage,) = (anthropic_usage(u) for u in billed(fake))
        assert (calls, usage) == (1, Usage(provider_usage.input, provider_usage.output))
        assert provider_usage.output == count_tokens(words)
        price = price_for("anthropic", MODEL, {}, None)
        assert price is not None
        assert cost == price.cost(provider_usage)

    async def test_an_openai_stream_is_metered_from_its_usage_chunk(
        self, keys: None, gpt_fake: FakeOpenAI, tmp_path: Path
    ) -> None:
        """The gateway asks for the usage chunk (include_usage) the client did not ask for."""
        fake = gpt_fake
        fake.script(Text("Streamed through Mission Control."))
        with gateway(tmp_path, {"jarvis": local_agent(fake)}, prices={LOCAL: PRICE}) as server:
            async with gpt(server, "jarvis") as client:
                stream = await client.chat.completions.create(
                    model=LOCAL, messages=[HELLO[0]], stream=True
                )
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            calls, usage, cost = await usage_of(server, "jarvis")
        (sent,) = fake.requests
        assert text == "Streamed through Mission Control."
        assert sent.body["stream_options"] == {"include_usage": True}
        assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert isinstance(sent.body["max_tokens"], int)
        assert sent.usage is not None
        assert calls == 1
        assert usage == Usage(sent.usage["prompt_tokens"], sent.usage["completion_tokens"])
        assert cost == PRICE.cost(usage)


class TestKeys:
    """The key stays with Mission Control: a missing one is named, a leaked one is cut."""

    async def test_a_missing_key_names_the_agent_and_the_reference(
        self, fake: FakeAnthropic, tmp_path: Path, sdk_clients: list[anthropic.AsyncAnthropic]
    ) -> None:
        agents = {"jarvis": claude_agent(fake, key="env:GW_TEST_KEY_NOBODY_SET")}
        with gateway(tmp_path, agents) as server:
            with pytest.raises(anthropic.InternalServerError) as caught:
                await claude(server, "jarvis", sdk_clients).messages.create(**ASK)
            provider = gateway_provider(server, "jarvis")
            try:
                with pytest.raises(KeyUnavailable) as unavailable:
                    await provider.complete(request())
            finally:
                await provider.aclose()
        assert caught.value.body["error"]["type"] == "mcos_misconfigured"  # type: ignore[index]
        for said in (caught.value.message, unavailable.value.message):
            assert "GW_TEST_KEY_NOBODY_SET" in said
            assert "jarvis" in said
        assert fake.requests == []

    async def test_the_key_never_reaches_an_answer_a_log_or_the_audit(
        self,
        keys: None,
        fake: FakeAnthropic,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        sdk_clients: list[anthropic.AsyncAnthropic],
    ) -> None:
        """Even a provider that quotes the key back: the agent sees it cut out."""
        caplog.set_level(logging.DEBUG)
        fake.script(
            ApiError(400, "invalid_request_error", f"this key is not allowed here: {KEY}"),
            Limited(retry_after=1),
        )
        answers: list[httpx.Response] = []
        with jarvis_on(tmp_path, fake) as server:
            path = "/v1/gateway/anthropic/v1/messages"
            body = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
            headers = {"anthropic-version": "2023-06-01"}
            for _ in range(3):
                answers.append(
                    raw(server, "POST", path, server.tokens["jarvis"], headers, json=body)
                )
            answers.append(
                raw(
                    server,
                    "POST",
                    path + "/count_tokens",
                    server.tokens["jarvis"],
                    headers,
                    json={"model": MODEL, "messages": HELLO},
                )
            )
            async with AsyncClient(server.url, server.operator_token) as c:
                audit = await c.do(Calls.audit(limit=1000))
        assert [a.status_code for a in answers] == [400, 429, 429, 200]
        assert "[redacted]" in answers[0].text
        for answer in answers:
            assert KEY not in answer.text
            assert KEY not in str(answer.headers)
        assert KEY not in str([a.model_dump() for a in audit])
        assert KEY not in caplog.text


class TestOpenAI:
    """The OpenAI-compatible route: the same gateway for Chat Completions."""

    async def test_a_completion_is_metered_and_bounded(
        self, keys: None, gpt_fake: FakeOpenAI, tmp_path: Path
    ) -> None:
        """No output limit in the body: the agent's own cap is set before forwarding."""
        fake = gpt_fake
        fake.script(Text("Done."))
        agents = {"jarvis": local_agent(fake, max_output=777)}
        with gateway(tmp_path, agents, prices={LOCAL: PRICE}) as server:
            async with gpt(server, "jarvis") as client:
                completion = await client.chat.completions.create(model=LOCAL, messages=[HELLO[0]])
                with pytest.raises(openai.PermissionDeniedError):
                    await client.chat.completions.create(model="gpt-5", messages=[HELLO[0]])
            calls, usage, _ = await usage_of(server, "jarvis")
        (sent,) = fake.requests
        assert completion.choices[0].message.content == "Done."
        assert sent.body["max_tokens"] == 777
        assert sent.usage is not None
        assert (calls, usage.output) == (1, sent.usage["completion_tokens"])

    async def test_over_budget_is_a_402_the_adapter_knows(
        self, keys: None, gpt_fake: FakeOpenAI, tmp_path: Path
    ) -> None:
        model, agent = local_agent(gpt_fake)
        with gateway(
            tmp_path,
            {"jarvis": (model, agent)},
            prices={LOCAL: Price.flat(1000.0, 1000.0)},
            budgets={"jarvis": Limits(usd_micros=1)},
        ) as server:
            provider = make_provider(
                AgentConfig(role="ops", host="local", model=model),
                None,
                {},
                gateway=GatewayAccess(server.url, server.tokens["jarvis"]),
            )
            try:
                with pytest.raises(OverBudget):
                    await provider.complete(request())
            finally:
                await provider.aclose()
        assert gpt_fake.requests == []
