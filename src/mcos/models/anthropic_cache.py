"""Anthropic's prompt cache: where the breakpoints of a Messages request go, and where not.

The API caches the prompt in the order tools → system → messages, up to each block marked
``cache_control`` (at most four a request). mcos marks at most three:

1. the stable system block — the tools and the workspace prefix (SOUL … MEMORY.md), the same
   bytes for every kind of turn, so heartbeats, messages and isolated jobs share one entry;
2. where the previous call's prompt ended — the last block of the user message before the last
   assistant message — which that call wrote: read back exactly, whatever the 20-block lookback
   would find, so a tool loop's next call and the session's next turn pay 0.1 for the history;
3. the end of this call's conversation, written for the next call.

What changes every call (the time, HEARTBEAT.md, WORKSTATE.md) comes after the last one.
A prefix shorter than the model's minimum is never cached, so a breakpoint on it would only
spend one of the four: none is placed where the prefix, estimated low from its bytes, is shorter.
"""

from __future__ import annotations

import json
from typing import Any

MIN_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-5", 512),
    ("claude-sonnet-5-5", 512),
    ("claude-sonnet-5", 1_024),
    ("claude-fable-5", 512),
    ("claude-mythos-5", 512),
    ("claude-opus-4-8", 1_024),
    ("claude-opus-4-7", 4_096),
    ("claude-opus-4-6", 4_096),
    ("claude-opus-4-5", 4_096),
    ("claude-opus-4", 1_024),
    ("claude-sonnet-4", 1_024),
    ("claude-3-7-sonnet", 1_024),
    ("claude-haiku-4-5", 4_096),
    ("claude-3-5-haiku", 2_048),
    ("claude-3-haiku", 2_048),
)
"""Anthropic's "minimum cacheable prompt length" by model-id prefix (the longest match wins),
as the prompt-caching docs gave it in October 2026."""
DEFAULT_MIN_CACHEABLE_TOKENS = 4_096
"""For a model the table does not name (claude-haiku-5-5's minimum was not published yet): the
largest minimum of any Claude model, so a breakpoint goes only where every model caches."""
BYTES_PER_TOKEN = 4
"""A prefix's tokens are estimated as its bytes / 4. Claude's tokenizers make a token of about
3–4 bytes of English prose and fewer of JSON, code or other scripts, so the estimate errs low:
never a breakpoint on a prefix the API finds too short, at worst none on one just long enough."""
MAX_BREAKPOINTS = 4


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model`` caches, by the longest matching id prefix in the table."""
    matches = [(len(p), tokens) for p, tokens in MIN_CACHEABLE_TOKENS if model.startswith(p)]
    return max(matches)[1] if matches else DEFAULT_MIN_CACHEABLE_TOKENS


def block_bytes(block: dict[str, Any]) -> int:
    """UTF-8 bytes of what a content block or a tool definition carries (framing left out)."""
    kind = block.get("type")
    if kind == "text":
        return len(str(block["text"]).encode())
    if kind == "tool_use":
        return len(json.dumps(block["input"], ensure_ascii=False).encode())
    if kind == "tool_result":
        return len(str(block.get("content", "")).encode())
    shown = {k: v for k, v in block.items() if k != "cache_control"}  # a tool definition
    return len(json.dumps(shown, ensure_ascii=False).encode())


def place_breakpoints(body: dict[str, Any], control: dict[str, str]) -> list[str]:
    """Mark ``body``'s breakpoints with ``control`` where the prefix is long enough to cache;
    returns where (``system.0``, ``messages.4``). ``body["system"]`` is a list of blocks, the
    first one the stable block; every message's content is a list of blocks."""
    minimum = min_cacheable_tokens(str(body["model"])) * BYTES_PER_TOKEN
    system: list[dict[str, Any]] = body["system"]
    messages: list[dict[str, Any]] = body["messages"]
    size = sum(block_bytes(t) for t in body.get("tools", ())) + block_bytes(system[0])
    candidates: list[tuple[str, int, dict[str, Any]]] = [("system.0", size, system[0])]
    size += sum(block_bytes(b) for b in system[1:])
    ends = {len(messages) - 1}
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if assistants and assistants[-1] > 0:
        ends.add(assistants[-1] - 1)  # where the previous call's prompt ended
    for i, message in enumerate(messages):
        size += sum(block_bytes(b) for b in message["content"])
        if i in ends and message["content"]:
            candidates.append((f"messages.{i}", size, message["content"][-1]))
    placed = []
    for where, prefix, block in candidates[:MAX_BREAKPOINTS]:
        if prefix >= minimum:
            block["cache_control"] = dict(control)
            placed.append(where)
    return placed
