"""The gateway's pure parts: how long a 429 rests a key, usage read from streams as they pass,
what a body asks for, which headers cross."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.budget import Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.server.gateway.anthropic_messages import AnthropicDialect, MessageStreamUsage
from mcos.server.gateway.openai_chat import ChunkStreamUsage, OpenAIDialect
from mcos.server.gateway.ratelimits import DEFAULT_WAIT, MAX_WAIT, Cooldowns, wait_after_429
from mcos.server.gateway.sse import EventReader
from mcos.server.gateway.upstream import answer_headers, without_key
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import Completion, FakeOpenAI

NOW = datetime(2026, 12, 2, 21, 0, 0, tzinfo=UTC)
KEY = "sk-ant-unit-test-key-000000000000"


class TestWaitAfter429:
    """The wait a 429 asks for, most precise header first."""

    @pytest.mark.parametrize(
        ("headers", "wait"),
        [
            ({"retry-after-ms": "1500", "retry-after": "2"}, timedelta(milliseconds=1500)),
            ({"retry-after": "7"}, timedelta(seconds=7)),
            ({"Retry-After": "0.25"}, timedelta(milliseconds=250)),
            ({"retry-after": "Wed, 02 Dec 2026 21:00:30 GMT"}, timedelta(seconds=30)),
            (
                {
                    "anthropic-ratelimit-requests-remaining": "0",
                    "anthropic-ratelimit-requests-reset": "2026-12-02T21:00:12Z",
                    "anthropic-ratelimit-tokens-remaining": "0",
                    "anthropic-ratelimit-tokens-reset": "2026-12-02T21:00:20Z",
                    "anthropic-ratelimit-input-tokens-remaining": "5000",
                    "anthropic-ratelimit-input-tokens-reset": "2026-12-02T21:00:50Z",
                },
                timedelta(seconds=20),
            ),
            ({}, DEFAULT_WAIT),
            ({"retry-after": "soon"}, DEFAULT_WAIT),
            ({"retry-after": "86400"}, MAX_WAIT),
            ({"retry-after": "Wed, 02 Dec 2026 20:00:00 GMT"}, timedelta(0)),
        ],
    )
    def test_headers(self, headers: dict[str, str], wait: timedelta) -> None:
        assert wait_after_429(headers, NOW) == wait


class TestCooldowns:
    """A key rests until the latest time it was told, then is free again."""

    def test_rest_and_release(self) -> None:
        rests = Cooldowns()
        rests.hold("k", NOW + timedelta(seconds=30))
        rests.hold("k", NOW + timedelta(seconds=10))  # an earlier end does not shorten it
        assert rests.remaining("k", NOW) == timedelta(seconds=30)
        assert rests.remaining("other", NOW) is None
        assert rests.remaining("k", NOW + timedelta(seconds=30)) is None
        assert rests.remaining("k", NOW) is None, "an ended rest is forgotten"


def fake_anthropic_stream(usage: dict[str, Any]) -> bytes:
    """The bytes the fake (the real event sequence) streams for a short text answer."""
    fake = FakeAnthropic()
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "An answer in several deltas, as streamed."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    return b"".join(fake.stream_events(message))


ANTHROPIC_USAGE = {
    "input_tokens": 12,
    "output_tokens": 34,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
    "service_tier": "standard",
}


class TestStreamUsage:
    """Usage read from events however the stream is cut into chunks."""

    @given(st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
    def test_anthropic_in_any_chunks(self, cuts: list[int]) -> None:
        data = fake_anthropic_stream(ANTHROPIC_USAGE)
        reader = MessageStreamUsage()
        points = sorted({c % len(data) for c in cuts} | {0, len(data)})
        for start, end in itertools.pairwise(points):
            reader.feed(data[start:end])
        assert reader.started
        assert reader.finished
        assert reader.usage() == Usage(12, 34, 2000, 1500, 1000)

    def test_anthropic_cut_short(self) -> None:
        """Before message_delta only the input is known."""
        data = fake_anthropic_stream(ANTHROPIC_USAGE)
        reader = MessageStreamUsage()
        reader.feed(data[: data.index(b"event: message_delta")])
        assert reader.started
        assert not reader.finished
        assert reader.usage().input == 12

    def test_openai_usage_chunk(self) -> None:
        fake = FakeOpenAI()
        usage = {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}
        usage["prompt_tokens_details"] = {"cached_tokens": 20}  # type: ignore[assignment]
        head = {"id": "c", "created": 0, "model": "m", "system_fingerprint": "fp"}
        data = b"".join(fake.stream_chunks(head, Completion("Hello there.", [], "stop"), usage))
        reader = ChunkStreamUsage()
        for i in range(0, len(data), 7):
            reader.feed(data[i : i + 7].replace(b"\n", b"\r\n"))
        assert reader.finished
        assert reader.usage() == Usage(input=30, output=7, cache_read=20)

    def test_events_without_json_are_skipped(self) -> None:
        reader = EventReader()
        assert reader.feed(b": comment\n\ndata: [DONE]\n\ndata: {not json\n\n") == []
        assert reader.feed(b'event: x\ndata: {"a":') == []
        assert reader.feed(b" 1}\n\n") == [{"a": 1}]


class TestBodies:
    """What a body asks for: the cache lifetime, the output limit."""

    def test_cache_ttl_is_the_longest_breakpoint(self) -> None:
        dialect = AnthropicDialect()
        five = {"type": "ephemeral"}
        hour = {"type": "ephemeral", "ttl": "1h"}
        assert dialect.cache_ttl({"messages": [{"content": "hi"}]}) is CacheTTL.NONE
        assert dialect.cache_ttl({"system": [{"cache_control": five}]}) is CacheTTL.FIVE_MINUTES
        deep = {"messages": [{"content": [{"type": "text", "text": "x", "cache_control": hour}]}]}
        assert dialect.cache_ttl(deep) is CacheTTL.ONE_HOUR
        assert dialect.cache_ttl({"cache_control": hour}) is CacheTTL.ONE_HOUR

    def test_anthropic_output_is_lowered_never_raised(self) -> None:
        dialect = AnthropicDialect()
        body: dict[str, Any] = {"max_tokens": 100_000}
        dialect.limit_output(body, 3_000)
        assert body["max_tokens"] == 3_000
        dialect.limit_output(body, 5_000)
        assert body["max_tokens"] == 3_000

    def test_openai_output_is_set_when_absent(self) -> None:
        dialect = OpenAIDialect()
        body: dict[str, Any] = {}
        assert dialect.max_output(body, 777) == 777
        dialect.limit_output(body, 500)
        assert body == {"max_tokens": 500}
        both: dict[str, Any] = {"max_tokens": 9_000, "max_completion_tokens": 100}
        assert dialect.max_output(both, 777) == 100
        dialect.limit_output(both, 500)
        assert both == {"max_tokens": 500, "max_completion_tokens": 100}

    def test_openai_stream_always_carries_usage(self) -> None:
        body: dict[str, Any] = {"stream_options": {"include_usage": False, "x": 1}}
        OpenAIDialect().prepare_stream(body)
        assert body["stream_options"] == {"include_usage": True, "x": 1}

    async def test_prompt_bound_counts_every_byte(self) -> None:
        """The OpenAI bound: the UTF-8 bytes of messages and tools, not the characters."""
        messages = [{"role": "user", "content": "héllo " * 100}]
        body = {"messages": messages, "tools": [], "temperature": 0.5}
        bound = len('{"messages": [{"role": "user", "content": "') + len("héllo ".encode()) * 100
        counted = await OpenAIDialect().prompt_tokens(None, "", {}, body)  # type: ignore[arg-type]
        assert counted >= bound


class TestHeaders:
    """Nothing hop-by-hop, no cookie and nothing carrying the key crosses back."""

    def test_answer_headers(self) -> None:
        headers = httpx.Headers(
            {
                "content-type": "application/json",
                "request-id": "req_1",
                "retry-after": "3",
                "connection": "keep-alive",
                "transfer-encoding": "chunked",
                "set-cookie": "session=1",
                "content-length": "10",
                "x-echo": f"you sent {KEY}",
            }
        )
        assert answer_headers(headers, KEY) == {
            "content-type": "application/json",
            "request-id": "req_1",
            "retry-after": "3",
        }

    def test_an_echoed_key_is_cut(self) -> None:
        assert without_key(f'{{"error": "bad key {KEY}"}}'.encode(), KEY) == (
            b'{"error": "bad key [redacted]"}'
        )
        assert without_key(b"plain", None) == b"plain"
