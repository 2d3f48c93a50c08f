"""Where the Messages request's cache breakpoints go: per-model minimums, the growing history,
the volatile text after them all, and the same bytes for what a later call reads back."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.heartbeat import CacheTTL
from mcos.models.anthropic import request_body
from mcos.models.anthropic_cache import (
    BYTES_PER_TOKEN,
    DEFAULT_MIN_CACHEABLE_TOKENS,
    MAX_BREAKPOINTS,
    min_cacheable_tokens,
)
from mcos.models.base import ModelRequest, TextBlock, ToolCall, ToolResult, ToolSpec, Turn

TOOLS = (ToolSpec("memory_search", "Search.", {"type": "object", "properties": {}}),)


def request(
    turns: list[Turn], stable: str = "S" * 8_000, ttl: CacheTTL = CacheTTL.FIVE_MINUTES
) -> ModelRequest:
    return ModelRequest(stable, "Now: 2026-12-02 21:00 UTC.", tuple(turns), TOOLS, 1024, ttl)


def marks(body: dict[str, Any]) -> list[str]:
    found = [f"system.{i}" for i, b in enumerate(body["system"]) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        found += [f"messages.{i}.{j}" for j, b in enumerate(m["content"]) if "cache_control" in b]
    return found


def unmarked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [unmarked(v) for v in value]
    return value


def loop(rounds: int) -> list[list[Turn]]:
    """The turns of each call of a tool loop of ``rounds`` rounds."""
    turns = [Turn.user("question")]
    calls = [list(turns)]
    for i in range(rounds):
        call = ToolCall(f"toolu_{i}", "memory_search", {"query": f"q{i}", "limit": 5})
        turns += [Turn("assistant", (TextBlock("looking"), call))]
        turns += [Turn("user", (ToolResult(f"toolu_{i}", f"result {i} " * 50),))]
        calls.append(list(turns))
    return calls


class TestMinimums:
    """Each model family's minimum, by the longest id prefix; a documented default."""

    def test_longest_prefix_wins(self) -> None:
        assert min_cacheable_tokens("claude-opus-4-5-20251101") == 4_096
        assert min_cacheable_tokens("claude-opus-4-1-20250805") == 1_024
        assert min_cacheable_tokens("claude-opus-4-8") == 1_024
        assert min_cacheable_tokens("claude-sonnet-5") == 1_024
        assert min_cacheable_tokens("claude-sonnet-5-5") == 512
        assert min_cacheable_tokens("claude-opus-5-5") == 512
        assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4_096

    def test_an_unknown_model_gets_the_largest_minimum(self) -> None:
        assert min_cacheable_tokens("claude-haiku-5-5") == DEFAULT_MIN_CACHEABLE_TOKENS
        assert min_cacheable_tokens("some-proxy-model") == DEFAULT_MIN_CACHEABLE_TOKENS


class TestBreakpoints:
    """The stable block, the previous call's end and this call's end; never a short prefix."""

    def test_first_call_marks_the_stable_block_and_the_question(self) -> None:
        body = request_body("claude-sonnet-5-5", request([Turn.user("question")]))
        assert marks(body) == ["system.0", "messages.0.0"]
        assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
        # The volatile text is the last block, after every breakpoint.
        assert body["messages"][0]["content"][-1] == {
            "type": "text",
            "text": "Now: 2026-12-02 21:00 UTC.",
        }

    def test_a_later_call_marks_where_the_last_one_ended(self) -> None:
        calls = loop(3)
        body = request_body("claude-sonnet-5-5", request(calls[3], ttl=CacheTTL.ONE_HOUR))
        assert marks(body) == ["system.0", "messages.4.0", "messages.6.0"]
        assert len(marks(body)) <= MAX_BREAKPOINTS
        assert {b["cache_control"]["ttl"] for b in _marked(body)} == {"1h"}
        # The last user turn holds the tool result first, then the volatile text.
        assert [b["type"] for b in body["messages"][-1]["content"]] == ["tool_result", "text"]

    def test_no_breakpoint_on_a_prefix_shorter_than_the_minimum(self) -> None:
        short = "S" * (512 * BYTES_PER_TOKEN // 2)
        body = request_body("claude-sonnet-5-5", request([Turn.user("hi")], stable=short))
        assert marks(body) == []
        # Haiku 4.5 needs 4,096 tokens: the same 8,000-byte prefix is too short for it…
        body = request_body("claude-haiku-4-5", request([Turn.user("hi")]))
        assert marks(body) == []
        # …until the conversation makes it long enough: only that end is marked.
        long = Turn.user("report " * 2_000)
        body = request_body("claude-haiku-4-5", request([long]))
        assert marks(body) == ["messages.0.0"]

    def test_no_cache_ttl_no_marks(self) -> None:
        body = request_body("claude-sonnet-5-5", request(loop(2)[2], ttl=CacheTTL.NONE))
        assert marks(body) == []
        assert "cache_control" not in json.dumps(body)

    @given(st.integers(1, 12))
    def test_each_call_resends_what_the_last_one_sent_byte_for_byte(self, rounds: int) -> None:
        """Call k+1's prompt starts with call k's (volatile text aside), tool ids and results
        unchanged, and marks the block where call k's last breakpoint was."""
        calls = loop(rounds)
        bodies = [request_body("claude-sonnet-5-5", request(turns)) for turns in calls]
        for before, after in pairwise(bodies):
            sent = unmarked(before["messages"])
            sent[-1]["content"] = sent[-1]["content"][:-1]  # the volatile text
            assert unmarked(after["messages"][: len(sent)]) == sent
            assert unmarked(after["system"]) == unmarked(before["system"])
            assert after["tools"] == before["tools"]
            end = f"messages.{len(sent) - 1}.{len(sent[-1]['content']) - 1}"
            assert end in marks(after)
            assert marks(before)[-1] == end


def _marked(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [*body["system"], *(b for m in body["messages"] for b in m["content"])]
    return [b for b in blocks if "cache_control" in b]
