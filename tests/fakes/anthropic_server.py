"""A faithful local fake of the Anthropic Messages API, for the real ``anthropic`` SDK.

The fake speaks the real wire format over real HTTP: the same headers, the same validation
rules and error shapes, and a prompt cache that bills ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` the way the real API does (breakpoints, TTLs, the 20-block
lookback, expiry refreshed on read). Tests script what the model answers; the rest behaves like
the service, so code that passes here has met the rules the real API enforces.

Usage::

    with FakeAnthropic(api_key="sk-ant-test") as fake:
        fake.script(ToolUse("read_file", {"path": "a.txt"}), Text("done"))
        client = anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tests.fakes.scripts import (
    JSON,
    ApiError,
    Overloaded,
    RateLimited,
    RecordedRequest,
    Reply,
    ScriptedServer,
    SpendLimit,
    Text,
    ToolUse,
    count_tokens,
    dumps,
    new_id,
    pieces,
    seconds_header,
    sse,
)

__all__ = [
    "ApiError",
    "FakeAnthropic",
    "Overloaded",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "SpendLimit",
    "Text",
    "ToolUse",
]

# The API is versioned by date: 2023-06-01 for years, 2026-10-21 as sent by anthropic 2.x.
VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SPEND_LIMIT_MESSAGE = (
    "You have reached your specified workspace API usage limits. "
    "You will regain access on 2026-12-01 at 00:00 UTC."
)
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4
MODELS = (
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)

MESSAGES_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "cache_control",
        "diagnostics",
        "speed",
        "user_profile_id",
        "workspace_id",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "thinking",
        "service_tier",
        "container",
        "context_management",
        "mcp_servers",
        "output_config",
        "output_format",
        "inference_geo",
    }
)
COUNT_TOKENS_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "cache_control",
        "speed",
        "tools",
        "tool_choice",
        "thinking",
        "context_management",
        "mcp_servers",
        "output_config",
        "output_format",
    }
)
BLOCK_FIELDS = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "tool_use": frozenset(
        {"type", "id", "name", "input", "cache_control", "caller", "toolset_name"}
    ),
    "tool_result": frozenset(
        {"type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"}
    ),
}
# Real block types this fake refuses rather than pretends to understand.
UNSUPPORTED_BLOCKS = frozenset(
    {
        "image",
        "document",
        "search_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "container_upload",
    }
)
TOOL_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "allowed_callers",
        "defer_loading",
        "eager_input_streaming",
        "input_examples",
    }
)
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")


class Refusal(Exception):
    """An error response, in the real shape: status, error type, message, extra headers."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}
        self.details = details


def invalid(path: str, message: str) -> Refusal:
    """A 400 ``invalid_request_error`` naming the offending field, as the real API does."""
    return Refusal(400, "invalid_request_error", f"{path}: {message}" if path else message)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- validation ------------------------------------------------------------------------------


def reject_extra(obj: JSON, allowed: Iterable[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise invalid(f"{path}.{key}" if path else key, "Extra inputs are not permitted")


def check_cache_control(value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise invalid(path, "Input should be a valid dictionary")
    reject_extra(value, ("type", "ttl"), path)
    if value.get("type") != "ephemeral":
        raise invalid(f"{path}.type", "Input should be 'ephemeral'")
    if value.get("ttl", "5m") not in TTL_SECONDS:
        raise invalid(f"{path}.ttl", "Input should be '5m' or '1h'")


def check_text_block(block: JSON, path: str) -> None:
    reject_extra(block, BLOCK_FIELDS["text"], path)
    text = block.get("text")
    if not isinstance(text, str):
        problem = "Field required" if text is None else "Input should be a valid string"
        raise invalid(f"{path}.text", problem)
    if not text:
        raise invalid(f"{path}.text", "text content blocks must be non-empty")
    if "cache_control" in block:
        check_cache_control(block["cache_control"], f"{path}.cache_control")


def block_type(block: object, path: str) -> str:
    """The block's tag, refusing what the fake does not model."""
    if not isinstance(block, dict):
        raise invalid(path, "Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid(path, "Unable to extract tag using discriminator 'type'")
    if kind in UNSUPPORTED_BLOCKS:
        raise invalid(f"{path}.type", f"{kind} content blocks are not supported by this fake")
    if kind not in BLOCK_FIELDS:
        expected = ", ".join(f"'{t}'" for t in (*BLOCK_FIELDS, *sorted(UNSUPPORTED_BLOCKS)))
        raise invalid(
            f"{path}.type",
            f"Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            f"{expected}",
        )
    return kind


def check_tool_use(block: JSON, path: str) -> None:
    for key in ("id", "name"):
        if not isinstance(block.get(key), str):
            raise invalid(f"{path}.{key}", "Field required")
    if not ID_PATTERN.match(block["id"]):
        raise invalid(f"{path}.id", f"String should match pattern '{ID_PATTERN.pattern}'")
    if not NAME_PATTERN.match(block["name"]):
        raise invalid(f"{path}.name", f"String should match pattern '{NAME_PATTERN.pattern}'")
    if not isinstance(block.get("input"), dict):
        raise invalid(f"{path}.input", "Input should be a valid dictionary")


def check_tool_result(block: JSON, path: str) -> None:
    if not isinstance(block.get("tool_use_id"), str):
        raise invalid(f"{path}.tool_use_id", "Field required")
    if not isinstance(block.get("is_error", False), bool):
        raise invalid(f"{path}.is_error", "Input should be a valid boolean")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(f"{path}.content", "Input should be a valid string or list of blocks")
    for k, inner in enumerate(content):
        inner_path = f"{path}.content.{k}"
        if block_type(inner, inner_path) != "text":
            raise invalid(f"{inner_path}.type", "tool_result content may only hold text blocks")
        check_text_block(inner, inner_path)


def check_block(block: object, path: str, role: str) -> JSON:
    """Validate one message content block; returns it."""
    kind = block_type(block, path)
    assert isinstance(block, dict)
    if kind == "text":
        check_text_block(block, path)
        return block
    reject_extra(block, BLOCK_FIELDS[kind], path)
    if "cache_control" in block:
        check_cache_control(block["cache_control"], f"{path}.cache_control")
    owner = "assistant" if kind == "tool_use" else "user"
    if role != owner:
        raise invalid(path, f"{kind} blocks may only appear in {owner} messages")
    if kind == "tool_use":
        check_tool_use(block, path)
    else:
        check_tool_result(block, path)
    return block


def message_blocks(content: object) -> list[JSON]:
    """A message's content as blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def check_message(message: object, i: int, previous_role: str | None, last: bool) -> list[JSON]:
    """One message's shape and role; returns its content as blocks."""
    path = f"messages.{i}"
    if not isinstance(message, dict):
        raise invalid(path, "Input should be a valid dictionary")
    reject_extra(message, ("role", "content"), path)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"{path}.role", "Input should be 'user' or 'assistant'")
    if previous_role is None and role != "user":
        raise invalid(f"{path}.role", 'first message must use the "user" role')
    if role == previous_role:
        raise invalid(
            f"{path}.role",
            'roles must alternate between "user" and "assistant", '
            f'but found multiple "{role}" roles in a row',
        )
    content = message.get("content")
    if isinstance(content, str):
        blocks = message_blocks(content)
    elif isinstance(content, list):
        blocks = [check_block(b, f"{path}.content.{j}", role) for j, b in enumerate(content)]
    else:
        problem = "Field required" if content is None else "Input should be a string or a list"
        raise invalid(f"{path}.content", problem)
    final_assistant = last and role == "assistant"
    if not blocks and not final_assistant:
        raise invalid(
            path,
            "all messages must have non-empty content "
            "except for the optional final assistant message",
        )
    if final_assistant and blocks and blocks[-1]["type"] == "text":
        text = blocks[-1]["text"]
        if text != text.rstrip():
            raise invalid(
                f"{path}.content", "final assistant content cannot end with trailing whitespace"
            )
    return blocks


def check_messages(messages: object) -> None:
    """Shapes, role alternation and the tool_use ↔ tool_result pairing rules."""
    if not isinstance(messages, list):
        problem = "Field required" if messages is None else "Input should be a valid list"
        raise invalid("messages", problem)
    if not messages:
        raise invalid("messages", "at least one message is required")
    roles: list[str] = []
    blocks_of: list[list[JSON]] = []
    for i, message in enumerate(messages):
        last = i == len(messages) - 1
        blocks_of.append(check_message(message, i, roles[-1] if roles else None, last))
        roles.append(message["role"])
    check_tool_pairing(roles, blocks_of)


def check_tool_pairing(roles: list[str], blocks_of: list[list[JSON]]) -> None:
    """Every tool_result answers a tool_use of the message just before, and vice versa; in a
    user message the tool results come first, any text after them."""
    seen: set[str] = set()
    for i, blocks in enumerate(blocks_of):
        for j, block in enumerate(blocks):
            if block["type"] == "tool_use":
                if block["id"] in seen:
                    raise invalid(
                        f"messages.{i}.content.{j}.id",
                        f"`tool_use` ids must be unique: {block['id']}",
                    )
                seen.add(block["id"])
    for i, blocks in enumerate(blocks_of):
        if roles[i] != "user":
            continue
        asked = [b["id"] for b in blocks_of[i - 1] if b["type"] == "tool_use"] if i > 0 else []
        for j, block in enumerate(blocks):
            if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                raise invalid(
                    f"messages.{i}.content.{j}.tool_use_id",
                    f"unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block['tool_use_id']}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.",
                )
        results = [j for j, b in enumerate(blocks) if b["type"] == "tool_result"]
        others = [j for j, b in enumerate(blocks) if b["type"] != "tool_result"]
        if results and others and others[0] < results[-1]:
            raise invalid(
                f"messages.{i}.content",
                "`tool_result` blocks must come first in a user message, before any text",
            )
        answered = {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"}
        missing = [tool_id for tool_id in asked if tool_id not in answered]
        if missing:
            raise invalid(
                f"messages.{i}.content",
                "`tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message.",
            )


def check_system(system: object) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system", "Input should be a valid string or a list of text blocks")
    for i, block in enumerate(system):
        path = f"system.{i}"
        if block_type(block, path) != "text":
            raise invalid(f"{path}.type", "Input should be 'text'")
        check_text_block(block, path)


def check_tool(tool: object, path: str) -> str:
    """One custom tool definition; returns its name."""
    if not isinstance(tool, dict):
        raise invalid(path, "Input should be a valid dictionary")
    if tool.get("type", "custom") != "custom":
        raise invalid(f"{path}.type", f"server tool {tool['type']!r} is not supported")
    reject_extra(tool, TOOL_FIELDS, path)
    name = tool.get("name")
    if not isinstance(name, str):
        raise invalid(f"{path}.name", "Field required")
    if not NAME_PATTERN.match(name):
        raise invalid(f"{path}.name", f"String should match pattern '{NAME_PATTERN.pattern}'")
    if not isinstance(tool.get("description", ""), str):
        raise invalid(f"{path}.description", "Input should be a valid string")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise invalid(f"{path}.input_schema", "Field required")
    if schema.get("type") != "object":
        raise invalid(f"{path}.input_schema.type", "Input should be 'object'")
    if "cache_control" in tool:
        check_cache_control(tool["cache_control"], f"{path}.cache_control")
    return name


def check_tools(tools: object, tool_choice: object) -> None:
    if tools is not None and not isinstance(tools, list):
        raise invalid("tools", "Input should be a valid list")
    names = [check_tool(tool, f"tools.{i}") for i, tool in enumerate(tools or [])]
    if len(set(names)) != len(names):
        raise invalid("tools", "Tool names must be unique.")
    if tool_choice is None:
        return
    if not isinstance(tool_choice, dict):
        raise invalid("tool_choice", "Input should be a valid dictionary")
    kind = tool_choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    reject_extra(tool_choice, ("type", "name", "disable_parallel_tool_use"), "tool_choice")
    if kind in ("any", "tool") and not names:
        raise invalid("tool_choice", "tool_choice may only be specified while providing tools.")
    if kind == "tool" and tool_choice.get("name") not in names:
        raise invalid("tool_choice.name", f"Tool '{tool_choice.get('name')}' not found in tools")


def check_sampling(body: JSON) -> None:
    for key in ("temperature", "top_p"):
        if key in body and not (is_number(body[key]) and 0 <= body[key] <= 1):
            raise invalid(key, "Input should be a number between 0 and 1")
    if "top_k" in body and not (is_int(body["top_k"]) and body["top_k"] >= 0):
        raise invalid("top_k", "Input should be a non-negative integer")
    stops = body.get("stop_sequences", [])
    if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise invalid("stop_sequences", "Input should be a list of strings")
    for key in ("metadata", "thinking"):
        if key in body and not isinstance(body[key], dict):
            raise invalid(key, "Input should be a valid dictionary")


def check_request(body: JSON, *, count_only: bool) -> None:
    """Validate a Messages (or count_tokens) body the way the real API does."""
    reject_extra(body, COUNT_TOKENS_FIELDS if count_only else MESSAGES_FIELDS, "")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "Field required" if model is None else "Input should be a string")
    if not count_only:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise invalid("max_tokens", "Field required")
        if not is_int(max_tokens):
            raise invalid("max_tokens", "Input should be a valid integer")
        if max_tokens < 1:
            raise invalid("max_tokens", "Input should be greater than or equal to 1")
        if not isinstance(body.get("stream", False), bool):
            raise invalid("stream", "Input should be a valid boolean")
    if body.get("cache_control") is not None:
        check_cache_control(body["cache_control"], "cache_control")
    check_messages(body.get("messages"))
    check_system(body.get("system"))
    check_tools(body.get("tools"), body.get("tool_choice"))
    check_sampling(body)


# -- the prompt, as the cache sees it --------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One block of the prompt in cache order: its tokens, identity and breakpoint TTL."""

    tokens: int
    fingerprint: str
    ttl: str | None


def without_cache_control(block: JSON) -> JSON:
    return {k: v for k, v in block.items() if k != "cache_control"}


def ttl_of(block: JSON) -> str | None:
    control = block.get("cache_control")
    return str(control.get("ttl", "5m")) if isinstance(control, dict) else None


def block_tokens(block: JSON) -> int:
    """Tokens of one content block: its text, its tool input JSON, its tool result text."""
    kind = block.get("type")
    if kind == "text":
        return count_tokens(str(block.get("text", "")))
    if kind == "tool_use":
        return count_tokens(dumps(block.get("input", {})))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return count_tokens(content)
        if isinstance(content, list):
            return sum(count_tokens(str(b.get("text", ""))) for b in content)
    return 0


def layout(body: JSON) -> list[Segment]:
    """The prompt in the real cache order, tools → system → messages, one segment per block."""
    segments = [
        Segment(
            count_tokens(dumps(without_cache_control(tool))),
            "tool:" + dumps(without_cache_control(tool)),
            ttl_of(tool),
        )
        for tool in body.get("tools") or []
    ]
    system = body.get("system")
    if isinstance(system, str) and system:
        system = [{"type": "text", "text": system}]  # the same prompt as one text block
    if isinstance(system, list):
        segments.extend(
            Segment(block_tokens(b), "system:" + dumps(without_cache_control(b)), ttl_of(b))
            for b in system
        )
    # tool_choice and thinking settings are part of what the messages cache depends on.
    context = dumps({"tool_choice": body.get("tool_choice"), "thinking": body.get("thinking")})
    for i, message in enumerate(body["messages"]):
        for j, block in enumerate(message_blocks(message["content"])):
            head = context if i == j == 0 else ""
            fingerprint = f"{head}|{i}:{message['role']}:" + dumps(without_cache_control(block))
            segments.append(Segment(block_tokens(block), fingerprint, ttl_of(block)))
    automatic = body.get("cache_control")
    if isinstance(automatic, dict) and segments[-1].ttl is None:
        # Top-level cache_control marks the last block of the prompt.
        segments[-1] = replace(segments[-1], ttl=str(automatic.get("ttl", "5m")))
    check_breakpoints(segments)
    return segments


def check_breakpoints(segments: list[Segment]) -> None:
    """At most four breakpoints, and no 1h breakpoint after a 5m one (real API rules)."""
    ttls = [s.ttl for s in segments if s.ttl]
    if len(ttls) > MAX_BREAKPOINTS:
        raise invalid(
            "",
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(ttls)}.",
        )
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise invalid(
            "",
            "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. "
            "Note that blocks are processed in the following order: `tools`, `system`, "
            "`messages`.",
        )


def prefix_keys(segments: list[Segment], scope: str) -> list[str]:
    """For each block, a hash of the prompt up to and including it (scoped to key and model)."""
    running = hashlib.sha256(scope.encode())
    keys = []
    for segment in segments:
        data = segment.fingerprint.encode()
        running.update(len(data).to_bytes(8, "big") + data)
        keys.append(running.copy().hexdigest())
    return keys


@dataclass
class CacheEntry:
    expires_at: float
    ttl_seconds: float


# -- the answer ------------------------------------------------------------------------------


def answer_content(answer: Text | ToolUse | Reply) -> tuple[list[JSON], str]:
    """Content blocks and stop reason for a scripted answer."""
    if isinstance(answer, Text):
        return [{"type": "text", "text": answer.text}], "end_turn"
    if isinstance(answer, ToolUse):
        blocks: list[JSON] = [{"type": "text", "text": answer.text}] if answer.text else []
        blocks.append(
            {
                "type": "tool_use",
                "id": answer.id or new_id("toolu_01", 22),
                "name": answer.name,
                "input": answer.input,
            }
        )
        return blocks, "tool_use"
    blocks = [
        {**b, "id": new_id("toolu_01", 22)} if b.get("type") == "tool_use" and "id" not in b else b
        for b in answer.content
    ]
    return blocks, answer.stop_reason


def truncate(content: list[JSON], max_tokens: int) -> tuple[list[JSON], bool]:
    """Cut the answer at ``max_tokens``; a tool call that does not fit whole is dropped."""
    kept: list[JSON] = []
    budget = max_tokens
    for block in content:
        cost = block_tokens(block)
        if cost <= budget:
            kept.append(block)
            budget -= cost
            continue
        if block.get("type") == "text" and budget > 0:
            kept.append({**block, "text": block["text"][: budget * 4]})
        return kept, True
    return kept, False


def refusal_for(answer: RateLimited | Overloaded | SpendLimit | ApiError) -> Refusal:
    """The real error response for a scripted failure."""
    if isinstance(answer, RateLimited):
        seconds = answer.retry_after
        reset = datetime.now(UTC) + timedelta(seconds=seconds)
        return Refusal(
            429,
            "rate_limit_error",
            answer.message,
            {
                "retry-after": seconds_header(seconds),
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
    if isinstance(answer, Overloaded):
        return Refusal(529, "overloaded_error", answer.message)
    if isinstance(answer, SpendLimit):
        if answer.code is not None:
            return Refusal(
                429,
                "rate_limit_error",
                answer.message or "This request would exceed your organization's spend limit.",
                details={"error_code": answer.code},
            )
        return Refusal(400, "invalid_request_error", answer.message or SPEND_LIMIT_MESSAGE)
    return Refusal(answer.status, answer.type, answer.message, dict(answer.headers))


def error_response(refusal: Refusal, request_id: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": "error",
            "error": {"type": refusal.type, "message": refusal.message}
            | ({"details": refusal.details} if refusal.details else {}),
            "request_id": request_id,
        },
        status_code=refusal.status,
        headers={"request-id": request_id, **refusal.headers},
    )


# -- the server ------------------------------------------------------------------------------


class FakeAnthropic(ScriptedServer):
    """The Anthropic Messages API on a loopback port, answering from a script.

    ``min_cacheable_tokens``: prompt prefixes shorter than this are never cached (the real
    minimum is 1024 tokens for Sonnet and Opus, more for some models). ``lookback_blocks``: how
    many blocks before each breakpoint the cache looks for an earlier hit (real: about 20).
    ``clock``: seconds as a float; replace it to drive cache expiry in virtual time.
    """

    def __init__(
        self,
        api_key: str = "sk-ant-test",
        *,
        min_cacheable_tokens: int = 1024,
        lookback_blocks: int = 20,
        clock: Callable[[], float] = time.monotonic,
        max_recorded: int | None = None,
    ) -> None:
        super().__init__(max_recorded=max_recorded)
        self.api_key = api_key
        self.min_cacheable_tokens = min_cacheable_tokens
        self.lookback_blocks = lookback_blocks
        self.clock = clock
        self._cache: dict[str, CacheEntry] = {}

    def clear_cache(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._cache.clear()

    def reset(self) -> None:
        """Forget the script, the recorded requests, the default answer and the cache."""
        super().reset()
        self.clear_cache()

    # -- HTTP ------------------------------------------------------------------------------

    def build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/v1/messages")
        async def messages(request: Request) -> Response:
            raw = await request.body()
            return await run_in_threadpool(self.create_message, dict(request.headers), raw)

        @app.post("/v1/messages/count_tokens")
        async def count(request: Request) -> Response:
            raw = await request.body()
            return await run_in_threadpool(self.count_message_tokens, dict(request.headers), raw)

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            return self.list_models(dict(request.headers), None)

        @app.get("/v1/models/{model_id}")
        async def model(request: Request, model_id: str) -> Response:
            return self.list_models(dict(request.headers), model_id)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
            kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
            return error_response(Refusal(exc.status_code, kind, str(exc.detail)), request_id())

        return app

    def create_message(self, headers: dict[str, str], raw: bytes) -> Response:
        """``POST /v1/messages``: validate, answer from the script, bill with the cache."""
        rid = request_id()
        body: JSON = {}
        try:
            body = self.admit(headers, raw)
            check_request(body, count_only=False)
            segments = layout(body)
            answer = self.next_answer(body)
            if isinstance(answer, RateLimited | Overloaded | SpendLimit | ApiError):
                raise refusal_for(answer)
        except Refusal as refusal:
            self.record(RecordedRequest(body, headers, refusal.status))
            return error_response(refusal, rid)
        content, stop_reason = answer_content(answer)
        content, cut = truncate(content, body["max_tokens"])
        output_tokens = body["max_tokens"] if cut else sum(block_tokens(b) for b in content)
        usage = self.bill(segments, body["model"])
        usage["output_tokens"] = max(1, output_tokens)
        self.record(RecordedRequest(body, headers, 200, usage))
        message = {
            "id": new_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "max_tokens" if cut else stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream"):
            return StreamingResponse(
                self.stream_events(message),
                media_type="text/event-stream",
                headers={"request-id": rid, "cache-control": "no-cache"},
            )
        return JSONResponse(message, headers={"request-id": rid})

    def stream_events(self, message: JSON) -> Iterator[bytes]:
        """A message as the real API streams it: ``message_start`` (the input usage),
        each block's start, deltas and stop, ``message_delta`` (stop reason, cumulative usage
        with the output tokens), ``message_stop``; a ``ping`` after the start."""
        usage = message["usage"]
        first_usage = {**usage, "output_tokens": 1}
        start = {**message, "content": [], "stop_reason": None, "usage": first_usage}
        yield sse({"type": "message_start", "message": start}, "message_start")
        yield sse({"type": "ping"}, "ping")
        gated = False
        for index, block in enumerate(message["content"]):
            if block["type"] == "tool_use":
                opening = {**block, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in pieces(json.dumps(block["input"]))
                ]
            else:
                opening = {**block, "text": ""}
                deltas = [{"type": "text_delta", "text": part} for part in pieces(block["text"])]
            yield sse(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
            for delta in deltas:
                yield sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
                if not gated:
                    gated = True
                    self.wait_at_gate()
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        final_usage = {
            k: v for k, v in usage.items() if k not in ("cache_creation", "service_tier")
        }
        yield sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": final_usage,
            },
            "message_delta",
        )
        yield sse({"type": "message_stop"}, "message_stop")

    def count_message_tokens(self, headers: dict[str, str], raw: bytes) -> Response:
        """``POST /v1/messages/count_tokens``: the prompt's tokens, with no cache effect."""
        rid = request_id()
        try:
            body = self.admit(headers, raw)
            check_request(body, count_only=True)
            total = sum(s.tokens for s in layout(body))
        except Refusal as refusal:
            return error_response(refusal, rid)
        return JSONResponse({"input_tokens": total}, headers={"request-id": rid})

    def list_models(self, headers: dict[str, str], model_id: str | None) -> Response:
        """``GET /v1/models`` and ``GET /v1/models/{id}``."""
        rid = request_id()
        try:
            self.authenticate(headers)
        except Refusal as refusal:
            return error_response(refusal, rid)
        data = [
            {
                "type": "model",
                "id": mid,
                "display_name": name,
                "created_at": created,
                "lifecycle": "active",
                "max_input_tokens": 200_000,
                "max_tokens": 64_000,
            }
            for mid, name, created in MODELS
        ]
        if model_id is None:
            return JSONResponse(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                },
                headers={"request-id": rid},
            )
        for entry in data:
            if entry["id"] == model_id:
                return JSONResponse(entry, headers={"request-id": rid})
        return error_response(Refusal(404, "not_found_error", f"model: {model_id}"), rid)

    def authenticate(self, headers: dict[str, str]) -> None:
        """Key from ``x-api-key``, or ``Authorization: Bearer`` as anthropic 2.x sends it."""
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "")
        if key is None and bearer.lower().startswith("bearer "):
            key = bearer[len("bearer ") :].strip()
        if key is None:
            raise Refusal(401, "authentication_error", "x-api-key header is required")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise Refusal(401, "authentication_error", "invalid x-api-key")

    def admit(self, headers: dict[str, str], raw: bytes) -> JSON:
        """Authentication, API version and a JSON object body, in the real API's order."""
        self.authenticate(headers)
        version = headers.get("anthropic-version")
        if not version:
            raise invalid("anthropic-version", "header is required")
        if not VERSION_PATTERN.match(version):
            raise invalid("anthropic-version", f"invalid version {version!r}")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise invalid("", f"There was an error parsing the body: {exc}") from None
        if not isinstance(body, dict):
            raise invalid("", "Input should be a valid dictionary")
        return body

    # -- the prompt cache ------------------------------------------------------------------

    def bill(self, segments: list[Segment], model: str) -> JSON:
        """Input usage for one request, reading and writing the prompt cache.

        The longest cached prefix found at a breakpoint, or up to ``lookback_blocks`` blocks
        before one, is read (and its expiry refreshed); from there to the last breakpoint is
        written, billed to the TTL of the breakpoint that covers it; the rest is plain input.
        """
        keys = prefix_keys(segments, f"{self.api_key}\0{model}")
        ends: list[int] = []
        total = 0
        for segment in segments:
            total += segment.tokens
            ends.append(total)
        breakpoints = [i for i, s in enumerate(segments) if s.ttl]
        written = {"5m": 0, "1h": 0}
        with self._lock:
            now = self.clock()
            self._cache = {k: e for k, e in self._cache.items() if e.expires_at > now}
            hit = -1
            for b in breakpoints:
                for p in range(b, max(b - self.lookback_blocks, -1), -1):
                    if p <= hit:
                        break
                    if keys[p] in self._cache:
                        hit = p
                        break
            read = ends[hit] if hit >= 0 else 0
            covered = read
            # Reading a prefix refreshes it, and the cached breakpoints inside it.
            for p in (b for b in [*breakpoints, hit] if 0 <= b <= hit):
                entry = self._cache.get(keys[p])
                if entry is not None:
                    entry.expires_at = now + entry.ttl_seconds
            for b in breakpoints:
                if b <= hit or ends[b] < self.min_cacheable_tokens:
                    continue
                ttl = segments[b].ttl or "5m"
                written[ttl] += ends[b] - covered
                covered = ends[b]
                self._cache[keys[b]] = CacheEntry(now + TTL_SECONDS[ttl], TTL_SECONDS[ttl])
        return {
            "input_tokens": total - covered,
            "output_tokens": 0,
            "cache_creation_input_tokens": written["5m"] + written["1h"],
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written["5m"],
                "ephemeral_1h_input_tokens": written["1h"],
            },
            "service_tier": "standard",
        }


def request_id() -> str:
    return new_id("req_011C", 20)
