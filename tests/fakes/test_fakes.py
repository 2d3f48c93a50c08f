"""The fake model APIs, driven by the real ``anthropic`` and ``openai`` SDKs over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripts import (
    ApiError,
    Overloaded,
    RateLimited,
    Reply,
    SpendLimit,
    Text,
    ToolUse,
    count_tokens,
    dumps,
)

KEY = "sk-ant-test"
MODEL = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "hi"}]
READ_FILE: Any = {
    "name": "read_file",
    "description": "Read a file from the workspace.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
# About 1250 tokens: above the 1024-token minimum a prefix needs to be cached.
STABLE = "You are Jarvis, the orchestrator of a fleet of agents. " * 90


class VirtualClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    """One server for the module: starting and stopping uvicorn costs a fifth of a second."""
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def fake(anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The module's server, with a fresh script, record, cache and real clock."""
    anthropic_server.reset()
    yield anthropic_server
    anthropic_server.reset()
    anthropic_server.clock = time.monotonic


@pytest.fixture
def clock(fake: FakeAnthropic) -> VirtualClock:
    clock = VirtualClock()
    fake.clock = clock
    return clock


@pytest.fixture
async def claude(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
        yield client


def text_of(message: anthropic.types.Message) -> str:
    """The text of a reply made of one text block."""
    (block,) = message.content
    assert block.type == "text"
    return block.text


def system(ttl: str, text: str = STABLE) -> list[Any]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


class TestAnthropicMessages:
    """Replies, tool loops and bookkeeping, as the SDK sees them."""

    async def test_text_reply_carries_usage(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A scripted text comes back as a Message whose usage the SDK types expose."""
        fake.script(Text("Hello there."))
        message = await claude.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
        assert message.id.startswith("msg_")
        assert message.model == MODEL
        assert message.stop_reason == "end_turn"
        assert text_of(message) == "Hello there."
        assert message.usage.input_tokens == count_tokens("hi")
        assert message.usage.output_tokens == count_tokens("Hello there.")
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_creation is not None
        assert message.usage.cache_creation.ephemeral_1h_input_tokens == 0

    async def test_tool_loop(self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
        """ToolUse stops for the tool; the client's tool_result is accepted; Text ends the turn."""
        fake.script(ToolUse("read_file", {"path": "notes.txt"}, text="Let me look."), Text("Hi."))
        messages: list[Any] = [{"role": "user", "content": "What does notes.txt say?"}]
        first = await claude.messages.create(
            model=MODEL, max_tokens=200, messages=messages, tools=[READ_FILE]
        )
        assert first.stop_reason == "tool_use"
        assert [b.type for b in first.content] == ["text", "tool_use"]
        call = first.content[1]
        assert call.type == "tool_use"
        assert call.id.startswith("toolu_")
        assert (call.name, call.input) == ("read_file", {"path": "notes.txt"})
        messages += [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "hello"}],
            },
        ]
        second = await claude.messages.create(
            model=MODEL, max_tokens=200, messages=messages, tools=[READ_FILE]
        )
        assert second.stop_reason == "end_turn"
        assert text_of(second) == "Hi."
        assert fake.requests[1].body["messages"][2]["content"][0]["tool_use_id"] == call.id
        assert fake.pending == 0

    def test_sync_client_and_responder(self, fake: FakeAnthropic) -> None:
        """The sync client works too; a callable answer sees the request body."""
        fake.script(lambda body: Text(f"you said {body['messages'][-1]['content']}"))
        with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
            message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
        assert text_of(message) == "you said hi"

    async def test_default_answers_when_script_is_empty(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """With nothing scripted the default answers, and it can be replaced."""
        first = await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        fake.default = lambda body: Text(f"{len(body['messages'])} message(s)")
        second = await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert (text_of(first), text_of(second)) == ("ok", "1 message(s)")

    async def test_reply_and_max_tokens(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """Raw blocks pass through; an answer longer than max_tokens is cut with max_tokens."""
        fake.script(
            Reply([{"type": "tool_use", "name": "read_file", "input": {}}], "tool_use"),
            Text("x" * 100),
        )
        raw = await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        cut = await claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert raw.content[0].type == "tool_use"
        assert raw.content[0].id.startswith("toolu_")
        assert cut.stop_reason == "max_tokens"
        assert text_of(cut) == "x" * 20
        assert cut.usage.output_tokens == 5

    async def test_requests_are_recorded(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """Each request keeps its body, headers, status and billed usage."""
        await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO, system="Be brief.")
        (record,) = fake.requests
        assert record.body["system"] == "Be brief."
        assert record.headers["anthropic-version"]
        assert record.response_status == 200
        assert record.usage is not None
        assert record.usage["input_tokens"] == count_tokens("Be brief.") + count_tokens("hi")

    def test_count_tokens_and_models(self, fake: FakeAnthropic) -> None:
        """count_tokens uses the fake's counting; the model list has the real page shape."""
        with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0) as client:
            counted = client.messages.count_tokens(
                model=MODEL, messages=HELLO, system="Be brief.", tools=[READ_FILE]
            )
            models = client.models.list()
        expected = count_tokens(dumps(READ_FILE)) + count_tokens("Be brief.") + count_tokens("hi")
        assert counted.input_tokens == expected
        assert [m.type for m in models.data] == ["model"] * len(models.data)
        assert MODEL in [m.id for m in models.data]
        assert fake.requests == []

    async def test_broken_responder_is_a_500(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A responder that raises fails that request with api_error, and the fake carries on."""
        fake.script(lambda body: Text(body["no such key"]))
        with pytest.raises(anthropic.InternalServerError, match="KeyError"):
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        message = await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert text_of(message) == "ok"

    def test_max_recorded(self) -> None:
        """A long-lived fake can keep only the latest requests."""
        with FakeAnthropic(max_recorded=2) as fake:
            headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
            for n in range(3):
                body = {"model": MODEL, "max_tokens": n + 1, "messages": HELLO}
                httpx.post(f"{fake.url}/v1/messages", json=body, headers=headers)
        assert [r.body["max_tokens"] for r in fake.requests] == [2, 3]

    def test_lifecycle(self) -> None:
        """start() and stop() serve and release a port; the URL exists only while serving."""
        fake = FakeAnthropic()
        fake.start()
        try:
            response = httpx.get(f"{fake.url}/v1/models", headers={"x-api-key": "sk-ant-test"})
            assert response.status_code == 200
        finally:
            fake.stop()
        with pytest.raises(RuntimeError, match="not running"):
            _ = fake.url
        fake.stop()


class TestAnthropicCaching:
    """Prompt caching billed like the real API: breakpoints, TTLs, refresh on read."""

    async def test_one_hour_system_block(
        self, fake: FakeAnthropic, clock: VirtualClock, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A 1h breakpoint writes once, is read within the hour, and is written again after."""
        stable = count_tokens(STABLE)

        async def call() -> anthropic.types.Usage:
            message = await claude.messages.create(
                model=MODEL, max_tokens=10, system=system("1h"), messages=HELLO
            )
            return message.usage

        first = await call()
        assert first.cache_creation_input_tokens == stable
        assert first.cache_creation is not None
        assert first.cache_creation.ephemeral_1h_input_tokens == stable
        assert first.cache_creation.ephemeral_5m_input_tokens == 0
        assert (first.cache_read_input_tokens, first.input_tokens) == (0, count_tokens("hi"))
        clock.advance(30)
        second = await call()
        assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (stable, 0)
        clock.advance(61)
        third = await call()
        assert (third.cache_read_input_tokens, third.cache_creation_input_tokens) == (0, stable)
        assert fake.requests[0].body["system"][0]["cache_control"] == {
            "type": "ephemeral",
            "ttl": "1h",
        }

    async def test_five_minutes_expire(
        self, clock: VirtualClock, claude: anthropic.AsyncAnthropic
    ) -> None:
        """With a 5m TTL and six minutes between calls, every call writes the cache."""
        for _ in range(3):
            message = await claude.messages.create(
                model=MODEL, max_tokens=10, system=system("5m"), messages=HELLO
            )
            assert message.usage.cache_creation_input_tokens == count_tokens(STABLE)
            assert message.usage.cache_read_input_tokens == 0
            assert message.usage.cache_creation is not None
            assert message.usage.cache_creation.ephemeral_5m_input_tokens == count_tokens(STABLE)
            clock.advance(6)

    async def test_reading_refreshes_expiry(
        self, clock: VirtualClock, claude: anthropic.AsyncAnthropic
    ) -> None:
        """Calls four minutes apart keep a 5m entry alive; a ten-minute gap loses it."""
        reads = []
        for gap in (0, 4, 4, 10):
            clock.advance(gap)
            message = await claude.messages.create(
                model=MODEL, max_tokens=10, system=system("5m"), messages=HELLO
            )
            reads.append(message.usage.cache_read_input_tokens)
        stable = count_tokens(STABLE)
        assert reads == [0, stable, stable, 0]

    async def test_conversation_breakpoint_moves(
        self, fake: FakeAnthropic, clock: VirtualClock, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A breakpoint on the newest turn reads the previous turn's prefix (block lookback)."""
        five = {"type": "ephemeral", "ttl": "5m"}
        turn1: list[Any] = [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a" * 400, "cache_control": five}],
            }
        ]
        first = await claude.messages.create(
            model=MODEL, max_tokens=10, system=system("1h"), messages=turn1
        )
        assert first.usage.cache_creation is not None
        assert first.usage.cache_creation.ephemeral_1h_input_tokens == count_tokens(STABLE)
        assert first.usage.cache_creation.ephemeral_5m_input_tokens == 100
        turn2: list[Any] = [
            {"role": "user", "content": [{"type": "text", "text": "a" * 400}]},
            {"role": "assistant", "content": "b" * 40},
            {
                "role": "user",
                "content": [{"type": "text", "text": "c" * 80, "cache_control": five}],
            },
        ]
        clock.advance(1)
        second = await claude.messages.create(
            model=MODEL, max_tokens=10, system=system("1h"), messages=turn2
        )
        assert second.usage.cache_read_input_tokens == count_tokens(STABLE) + 100
        assert second.usage.cache_creation_input_tokens == 10 + 20
        assert second.usage.input_tokens == 0

    async def test_top_level_cache_control(
        self, clock: VirtualClock, claude: anthropic.AsyncAnthropic
    ) -> None:
        """Top-level cache_control marks the last block of the prompt."""
        usages = []
        for _ in range(2):
            message = await claude.messages.create(
                model=MODEL,
                max_tokens=10,
                system=STABLE,
                messages=HELLO,
                cache_control={"type": "ephemeral"},
            )
            usages.append(message.usage)
        whole = count_tokens(STABLE) + count_tokens("hi")
        assert [u.cache_creation_input_tokens for u in usages] == [whole, 0]
        assert [u.cache_read_input_tokens for u in usages] == [0, whole]

    async def test_short_prefixes_are_not_cached(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A prefix under min_cacheable_tokens is billed as plain input, every time."""
        for _ in range(2):
            message = await claude.messages.create(
                model=MODEL, max_tokens=10, system=system("1h", "short"), messages=HELLO
            )
            assert message.usage.cache_creation_input_tokens == 0
            assert message.usage.cache_read_input_tokens == 0
            assert message.usage.input_tokens == count_tokens("short") + count_tokens("hi")

    async def test_clear_cache(self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
        """clear_cache() forgets what was written."""
        for _ in range(2):
            fake.clear_cache()
            message = await claude.messages.create(
                model=MODEL, max_tokens=10, system=system("5m"), messages=HELLO
            )
            assert message.usage.cache_read_input_tokens == 0

    async def test_breakpoint_rules(self, claude: anthropic.AsyncAnthropic) -> None:
        """At most four breakpoints, and a 1h one may not follow a 5m one."""
        blocks = [system("5m", f"part {i}")[0] for i in range(5)]
        with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks"):
            await claude.messages.create(model=MODEL, max_tokens=10, system=blocks, messages=HELLO)
        mixed = [*system("5m", "first"), *system("1h", "second")]
        with pytest.raises(anthropic.BadRequestError, match=r"ttl='1h'.*must not come after"):
            await claude.messages.create(model=MODEL, max_tokens=10, system=mixed, messages=HELLO)


class TestAnthropicErrors:
    """Errors in the real shape, raised by the SDK as the real service would make it raise."""

    async def test_rate_limited(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """429 raises RateLimitError carrying retry-after; the next request gets the next step."""
        fake.script(RateLimited(retry_after=7), Text("after"))
        with pytest.raises(anthropic.RateLimitError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert caught.value.response.headers["retry-after"] == "7"
        assert caught.value.response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert caught.value.type == "rate_limit_error"
        assert caught.value.request_id is not None
        assert caught.value.request_id.startswith("req_")
        message = await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert text_of(message) == "after"
        assert [r.response_status for r in fake.requests] == [429, 200]

    async def test_overloaded(self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
        """529 raises OverloadedError, a subclass of InternalServerError."""
        fake.script(Overloaded())
        with pytest.raises(anthropic.OverloadedError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert isinstance(caught.value, anthropic.InternalServerError)
        assert caught.value.status_code == 529
        assert caught.value.type == "overloaded_error"

    async def test_spend_limit(self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
        """The workspace spend limit is a 400 whose message names the usage limits."""
        fake.script(SpendLimit())
        with pytest.raises(anthropic.BadRequestError, match="usage limits") as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert caught.value.type == "invalid_request_error"

    async def test_enforced_spend_limit(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """The organisation's enforced limit is a 429 the SDK maps by its error code."""
        fake.script(SpendLimit(code="enforced_spend_limit_reached"))
        with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert caught.value.status_code == 429

    async def test_custom_error(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """ApiError sends any status, type and headers."""
        fake.script(ApiError(403, "permission_error", "no access", {"x-extra": "1"}))
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert caught.value.response.headers["x-extra"] == "1"

    async def test_unknown_tool_result_id(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """A tool_result must answer a tool_use of the message before; the 400 names the field."""
        fake.script(Text("kept"))
        messages: list[Any] = [
            {"role": "user", "content": "read it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_a", "name": "read_file", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "x"}],
            },
        ]
        with pytest.raises(
            anthropic.BadRequestError, match=r"messages\.2\.content\.0\.tool_use_id"
        ):
            await claude.messages.create(model=MODEL, max_tokens=10, messages=messages)
        assert fake.pending == 1, "an invalid request does not consume the script"
        assert fake.requests[0].response_status == 400

    async def test_tool_results_come_before_text(self, claude: anthropic.AsyncAnthropic) -> None:
        """In a user message the tool results come first; text may only follow them."""
        use = {"type": "tool_use", "id": "toolu_a", "name": "read_file", "input": {}}
        result = {"type": "tool_result", "tool_use_id": "toolu_a", "content": "x"}
        note = {"type": "text", "text": "and now?"}
        asked: list[Any] = [{"role": "user", "content": "read it"}]
        asked.append({"role": "assistant", "content": [use]})
        with pytest.raises(anthropic.BadRequestError, match=r"messages\.2\.content: `tool_result`"):
            await claude.messages.create(
                model=MODEL,
                max_tokens=10,
                messages=[*asked, {"role": "user", "content": [note, result]}],
            )
        answer = await claude.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[*asked, {"role": "user", "content": [result, note]}],
        )
        assert answer.content

    @pytest.mark.parametrize(
        ("messages", "field"),
        [
            ([], "messages: at least one message"),
            ([{"role": "assistant", "content": "hi"}], "messages.0.role"),
            ([*HELLO, {"role": "user", "content": "again"}], "messages.1.role: roles must"),
            ([{"role": "user", "content": [{"type": "image"}]}], "messages.0.content.0.type"),
            ([{"role": "user", "content": [{"type": "text", "text": ""}]}], "must be non-empty"),
        ],
    )
    async def test_invalid_messages(
        self, claude: anthropic.AsyncAnthropic, messages: list[Any], field: str
    ) -> None:
        """Malformed conversations are refused with the field path, as the real API does."""
        with pytest.raises(anthropic.BadRequestError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=messages)
        assert field in str(caught.value)

    async def test_streams_the_real_event_sequence(
        self, fake: FakeAnthropic, claude: anthropic.AsyncAnthropic
    ) -> None:
        """``stream: true`` answers with the real SSE events, which the SDK's
        ``messages.stream()`` assembles into the same message and usage as a plain call."""
        words = "A streamed answer, long enough to arrive in several deltas."
        fake.script(
            Reply(
                [
                    {"type": "text", "text": words},
                    {"type": "tool_use", "name": "read_file", "input": {"path": "a.txt"}},
                ],
                "tool_use",
            )
        )
        kinds: list[str] = []
        async with claude.messages.stream(
            model=MODEL, max_tokens=200, messages=HELLO, tools=[READ_FILE]
        ) as stream:
            async for event in stream:
                kinds.append(event.type)
            message = await stream.get_final_message()
        assert kinds[0] == "message_start"
        assert kinds[-2:] == ["message_delta", "message_stop"]
        assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
        assert [b.type for b in message.content] == ["text", "tool_use"]
        assert message.content[0].type == "text"
        assert message.content[0].text == words
        call = message.content[1]
        assert call.type == "tool_use"
        assert call.input == {"path": "a.txt"}
        assert message.stop_reason == "tool_use"
        billed = fake.requests[-1].usage
        assert billed is not None
        assert message.usage.input_tokens == billed["input_tokens"]
        assert message.usage.output_tokens == billed["output_tokens"] > 1

    async def test_wrong_key(self, fake: FakeAnthropic) -> None:
        """A wrong key raises AuthenticationError."""
        async with anthropic.AsyncAnthropic(
            base_url=fake.url, api_key="sk-ant-wrong", max_retries=0
        ) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert fake.requests[0].response_status == 401

    def test_wire_shape(self, fake: FakeAnthropic) -> None:
        """x-api-key works; a missing anthropic-version is a 400 in the real error shape."""
        url = f"{fake.url}/v1/messages"
        body = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
        ok = httpx.post(
            url, json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        )
        assert ok.status_code == 200
        assert ok.json()["usage"]["cache_creation"] == {
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 0,
        }
        bad = httpx.post(url, json=body, headers={"x-api-key": KEY})
        assert bad.status_code == 400
        payload = bad.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
        assert "anthropic-version" in payload["error"]["message"]
        assert payload["request_id"] == bad.headers["request-id"]
        missing = httpx.get(f"{fake.url}/v1/nothing", headers={"x-api-key": KEY})
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as server:
        yield server


@pytest.fixture
def openai_fake(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@pytest.fixture
async def gpt(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=openai_fake.url + "/v1", api_key="sk-test", max_retries=0
    ) as client:
        yield client


WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class TestOpenAI:
    """Chat Completions through the real openai SDK."""

    async def test_text(self, openai_fake: FakeOpenAI, gpt: openai.AsyncOpenAI) -> None:
        """A scripted text is the choice's content, with usage counted."""
        openai_fake.script(Text("Hello there."))
        response = await gpt.chat.completions.create(
            model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}]
        )
        assert response.id.startswith("chatcmpl-")
        choice = response.choices[0]
        assert (choice.message.content, choice.finish_reason) == ("Hello there.", "stop")
        assert response.usage is not None
        assert response.usage.prompt_tokens == count_tokens("hi")
        assert response.usage.completion_tokens == count_tokens("Hello there.")
        assert response.usage.total_tokens == response.usage.prompt_tokens + 3

    async def test_tool_calls_round_trip(
        self, openai_fake: FakeOpenAI, gpt: openai.AsyncOpenAI
    ) -> None:
        """ToolUse becomes tool_calls; the tool message answering it is accepted."""
        openai_fake.script(ToolUse("get_weather", {"city": "Paris"}), Text("Sunny."))
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = await gpt.chat.completions.create(
            model="llama3.1:8b", messages=messages, tools=[WEATHER]
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        (call,) = choice.message.tool_calls
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21°C"},
        ]
        second = await gpt.chat.completions.create(
            model="llama3.1:8b", messages=messages, tools=[WEATHER]
        )
        assert second.choices[0].message.content == "Sunny."
        assert openai_fake.requests[1].body["messages"][2]["tool_call_id"] == call.id

    async def test_unknown_tool_call_id(self, gpt: openai.AsyncOpenAI) -> None:
        """A tool message must answer a tool call of the assistant message before it."""
        messages: list[Any] = [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_nope", "content": "x"},
        ]
        with pytest.raises(openai.BadRequestError) as caught:
            await gpt.chat.completions.create(model="llama3.1:8b", messages=messages)
        assert caught.value.param == "messages.[1].tool_call_id"

    async def test_wrong_key(self, openai_fake: FakeOpenAI) -> None:
        """A wrong bearer key raises AuthenticationError with the invalid_api_key code."""
        async with openai.AsyncOpenAI(
            base_url=openai_fake.base_url, api_key="sk-wrong", max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="m", messages=[HELLO[0]])
        assert caught.value.code == "invalid_api_key"

    async def test_rate_limited_and_quota(
        self, openai_fake: FakeOpenAI, gpt: openai.AsyncOpenAI
    ) -> None:
        """429 carries retry-after; an exhausted quota is a 429 with insufficient_quota."""
        openai_fake.script(RateLimited(retry_after=2.5), SpendLimit())
        with pytest.raises(openai.RateLimitError) as limited:
            await gpt.chat.completions.create(model="m", messages=[HELLO[0]])
        assert limited.value.response.headers["retry-after"] == "2.5"
        with pytest.raises(openai.RateLimitError) as quota:
            await gpt.chat.completions.create(model="m", messages=[HELLO[0]])
        assert quota.value.code == "insufficient_quota"

    async def test_overloaded(self, openai_fake: FakeOpenAI, gpt: openai.AsyncOpenAI) -> None:
        """Overloaded is a 503, which the SDK raises as InternalServerError."""
        openai_fake.script(Overloaded())
        with pytest.raises(openai.InternalServerError) as caught:
            await gpt.chat.completions.create(model="m", messages=[HELLO[0]])
        assert caught.value.status_code == 503

    async def test_streams_chunks_and_usage_when_asked(
        self, openai_fake: FakeOpenAI, gpt: openai.AsyncOpenAI
    ) -> None:
        """``stream: true`` answers with chunks; the usage chunk comes only with
        ``stream_options.include_usage``, which is refused without ``stream``."""
        openai_fake.script(Text("A streamed answer in several small deltas."), Text("again"))
        stream = await gpt.chat.completions.create(
            model="m",
            messages=[HELLO[0]],
            stream=True,
            stream_options={"include_usage": True},
        )
        texts, usage = [], None
        async for chunk in stream:
            texts += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(texts) == "A streamed answer in several small deltas."
        assert usage is not None
        assert usage.completion_tokens == count_tokens("A streamed answer in several small deltas.")
        quiet = await gpt.chat.completions.create(model="m", messages=[HELLO[0]], stream=True)
        assert [chunk.usage async for chunk in quiet if chunk.usage is not None] == []
        with pytest.raises(openai.BadRequestError, match="only allowed when 'stream'"):
            await gpt.chat.completions.create(
                model="m", messages=[HELLO[0]], stream_options={"include_usage": True}
            )

    async def test_any_key_when_none_is_configured(self) -> None:
        """api_key=None accepts any key, as Ollama does."""
        with FakeOpenAI(api_key=None) as server:
            async with openai.AsyncOpenAI(
                base_url=server.base_url, api_key="ollama", max_retries=0
            ) as client:
                response = await client.chat.completions.create(model="m", messages=[HELLO[0]])
        assert response.choices[0].message.content == "ok"
