"""The turn trace: what one model turn saw, called and cost, built during the turn and posted to
Mission Control at its end (``POST /v1/traces``).

The turn loop (turns.py) calls the builder at a few points: the first request (the prompt by
section), each model call, each tool call, and the end. Everything that leaves the process is
redacted and cut here; a trace too long for Mission Control is cut further until it fits. A
failed post is logged and never stops, fails or slows the turn much (a short timeout).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mcos.api_traces import (
    MAX_ITEMS,
    MAX_TEXT,
    MAX_TRACE_BYTES,
    Outcome,
    TraceCalls,
    TraceIn,
    TraceModelCall,
    TraceSection,
    TraceToolCall,
    WokeBy,
)
from mcos.client import AsyncClient
from mcos.domain.budget import MICROS
from mcos.domain.redaction import redact
from mcos.exceptions import McosError
from mcos.models.anthropic_cache import BYTES_PER_TOKEN
from mcos.models.base import ModelReply, ModelRequest, TextBlock, ToolCall, ToolResult, Turn
from mcos.runtime.workspace import Prompt, TurnKind

log = logging.getLogger("mcos.runtime")
POST_TIMEOUT = 5.0
"""Longest a trace's post may hold up the loop, in seconds."""
TOOL_TEXT = 2_000
"""A tool call's arguments and result are cut to this many characters in the trace."""
CUTS = (1_000, 300, 80)
"""Shorter and shorter texts tried, in turn, when a trace is over ``MAX_TRACE_BYTES``."""


@dataclass(frozen=True)
class Woke:
    """What woke a turn: messages (their ids), a heartbeat, a cron job, a routine…"""

    by: WokeBy
    messages: tuple[int, ...] = ()
    detail: str = ""


WOKE_BY_KIND: dict[str, WokeBy] = {"heartbeat": "heartbeat", "isolated": "cron"}


def woke_by_kind(kind: TurnKind) -> Woke:
    """What woke a turn whose caller did not say: told by its kind alone."""
    return Woke(WOKE_BY_KIND.get(kind.value, "other"))


def stopped_outcome(why: str) -> Outcome:
    """How a turn stopped early ended: ``refused`` (the budget), ``skipped`` (paused, cooling
    down: nothing was tried) or ``error`` (the model failed or was rate limited)."""
    if why == "over budget":
        return "refused"
    if why.startswith(("paused", "cooling down")):
        return "skipped"
    return "error"


def estimate_tokens(text: str) -> int:
    """The token estimate the runtime uses everywhere it must guess before a call (the cache's
    breakpoints, the offline model): UTF-8 bytes / ``BYTES_PER_TOKEN``, rounded up."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


def _turn_text(turn: Turn) -> str:
    parts: list[str] = []
    for b in turn.blocks:
        if isinstance(b, TextBlock):
            parts.append(b.text)
        elif isinstance(b, ToolCall):
            parts.append(f"{b.name} {json.dumps(b.input, default=str)}")
        else:
            parts.append(b.content)
    return "\n".join(parts)


def sections(prompt: Prompt, request: ModelRequest) -> list[TraceSection]:
    """The request by section: each workspace file, who the agent is, the volatile tail (the
    time), the tools offered, the session's history and this turn's own text."""
    out: list[tuple[str, str]] = [(s.file, s.text) for s in prompt.sections]
    rest = request.stable[len(prompt.stable) :]
    out.append(("identity and instructions", rest))
    volatile = request.volatile[: len(request.volatile) - len(prompt.tail)]
    out.append(("time and findings", volatile))
    tools = json.dumps([[t.name, t.description, t.input_schema] for t in request.tools])
    out.append(("tools", tools))
    *history, last = request.turns or (Turn.user(""),)
    out.append(("history", "\n".join(_turn_text(t) for t in history)))
    out.append(("turn", _turn_text(last)))
    return [TraceSection(name=n[:100], chars=len(t), tokens=estimate_tokens(t)) for n, t in out]


def _cut(text: str, keep: int) -> str:
    return text if len(text) <= keep else text[: keep - 1] + "…"


SECRET_SPAN = 256
"""No secret the redaction knows is longer: text kept this far past a cut is enough to find any
secret that starts before it."""


def _clean(text: str, keep: int) -> str:
    """``text`` redacted and cut to ``keep`` characters; only what can reach the cut is
    redacted (a long tool result costs no more than a short one)."""
    return _cut(redact(text[: keep + SECRET_SPAN]), keep)


@dataclass
class TurnTrace:
    """A trace under construction: one per turn, started by ``turn()``."""

    kind: str
    woke: Woke
    started_at: datetime
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    began: float = field(default_factory=time.perf_counter)
    sections: list[TraceSection] = field(default_factory=list)
    calls: list[TraceModelCall] = field(default_factory=list)
    tools: list[TraceToolCall] = field(default_factory=list)
    governance: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def saw(self, prompt: Prompt, request: ModelRequest) -> None:
        """The turn's first request, by section (later calls differ only by the turn's rounds)."""
        if not self.sections:
            self.sections = sections(prompt, request)

    def called(
        self,
        model: str,
        purpose: str,
        seconds: float,
        reply: ModelReply | None,
        *,
        cost_micros: int = 0,
        reservation: int | None = None,
        error: str = "",
    ) -> None:
        """One model call: its tokens and the agent's own price of them (Mission Control puts
        its metered price in their place by ``reservation``)."""
        usage = reply.usage if reply else None
        self.calls.append(
            TraceModelCall(
                model=_cut(reply.model if reply else model, 200),
                purpose=_cut(purpose, 100),
                input_tokens=usage.input if usage else 0,
                output_tokens=usage.output if usage else 0,
                cache_read_tokens=usage.cache_read if usage else 0,
                cache_write_tokens=usage.cache_write if usage else 0,
                reported_usd=cost_micros / MICROS,
                latency_ms=round(seconds * 1000),
                stop_reason=_cut(reply.stop_reason if reply else "", 100),
                error=_cut(redact(error), MAX_TEXT),
                reservation_id=reservation,
            )
        )

    def refused_or_failed(
        self, model: str, purpose: str, seconds: float, reservation: int | None, why: str
    ) -> None:
        """A call that stopped the turn: refused before it was made (no reservation, or the
        gateway's refusal), or made and failed."""
        if reservation is None and stopped_outcome(why) != "error":
            self.governance.append(_cut(redact(f"model call ({purpose}): {why}"), 500))
            return
        self.called(model, purpose, seconds, None, reservation=reservation, error=why)

    def tool(self, call: ToolCall, result: ToolResult, seconds: float, *, refused: str) -> None:
        """One tool call: its arguments and result redacted and cut; ``refused``: why it was
        refused (the allowlist or Mission Control's governance), else empty."""
        arguments = json.dumps(call.input, ensure_ascii=False, default=str)
        self.tools.append(
            TraceToolCall(
                name=_cut(call.name, 200),
                arguments=_clean(arguments, TOOL_TEXT),
                result=_clean(result.content, TOOL_TEXT),
                is_error=result.is_error,
                refused=bool(refused),
                latency_ms=round(seconds * 1000),
            )
        )
        if refused:
            self.governance.append(_cut(redact(f"{call.name}: {refused}"), 500))

    def finish(
        self, outcome: Outcome, *, final: str = "", error: str = "", sent: list[int] | None = None
    ) -> TraceIn:
        """The trace to post, cut until it fits ``MAX_TRACE_BYTES``."""
        trace = TraceIn(
            id=self.id,
            kind=self.kind[:50],
            woke_by=self.woke.by,
            woke_detail=_cut(redact(self.woke.detail), 500),
            woke_messages=list(self.woke.messages[:MAX_ITEMS]),
            started_at=self.started_at,
            latency_ms=round((time.perf_counter() - self.began) * 1000),
            outcome=outcome,
            error=_clean(error, MAX_TEXT),
            sections=self.sections[:MAX_ITEMS],
            calls=self.calls[:MAX_ITEMS],
            tools=self.tools[:MAX_ITEMS],
            governance=self.governance[:MAX_ITEMS],
            sent_messages=list((sent or [])[:MAX_ITEMS]),
            final_text=_clean(final, MAX_TEXT),
            truncated=any(
                len(items) > MAX_ITEMS
                for items in (self.calls, self.tools, self.governance, self.woke.messages)
            ),
        )
        return fit(trace)


def _size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, ensure_ascii=False, default=str).encode())


def fit(trace: TraceIn, limit: int = MAX_TRACE_BYTES) -> TraceIn:
    """``trace`` within ``limit`` bytes of JSON: its texts cut shorter and shorter, then its
    tool calls dropped from the end; marked ``truncated`` when anything was cut."""
    if len(trace.model_dump_json().encode()) <= limit:
        return trace
    data = trace.model_dump(mode="json")
    data["truncated"] = True
    for keep in CUTS:
        for key in ("final_text", "error"):
            data[key] = _cut(data[key], keep)
        for tool in data["tools"]:
            tool["arguments"], tool["result"] = (
                _cut(tool["arguments"], keep),
                _cut(tool["result"], keep),
            )
        for call in data["calls"]:
            call["error"] = _cut(call["error"], keep)
        data["governance"] = [_cut(g, keep) for g in data["governance"]]
        if _size(data) <= limit:
            return TraceIn.model_validate(data)
    while _size(data) > limit and (data["tools"] or data["governance"]):
        half = len(data["tools"]) // 2
        data["tools"], data["governance"] = data["tools"][:half], data["governance"][:half]
    return TraceIn.model_validate(data)


async def post(client: AsyncClient, trace: TraceIn, agent: str) -> bool:
    """Send the trace; a failure is logged, never raised (the turn is done either way)."""
    try:
        await client.do(replace(TraceCalls.post(trace), timeout=POST_TIMEOUT))
    except McosError as e:
        log.warning("%s: could not record turn trace %s: %s", agent, trace.id, e.message)
        return False
    except Exception:  # a trace is never worth a failed turn
        log.exception("%s: could not record turn trace %s", agent, trace.id)
        return False
    return True
