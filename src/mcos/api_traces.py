"""The wire shape of a turn trace: what an agent posts at the end of each model turn, and what
Mission Control answers about it (``/v1/traces``).

A trace says what woke the turn, what the prompt held section by section, each model call, each
tool call (arguments and results already redacted and cut by the runtime), what was refused,
what the turn sent, how long it took and how it ended. Its cost is what Mission Control metered
for the turn's calls (linked by their reservation ids) wherever the meter has them; a call the
meter does not know is counted at the agent's own figure and the trace says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from mcos.api_models import MAX_ID
from mcos.client import Call

MAX_TRACE_BYTES = 128 * 1024
"""A posted trace's JSON is at most this long (413 beyond); the runtime cuts to fit first."""
MAX_TEXT = 4_000
"""Longest free text of a trace (a tool result, the final answer), in characters."""
MAX_USD = 1_000_000.0
"""No one call costs more than this (a bound that keeps sums exact)."""
MAX_COUNT = 2**53
"""Every count of a trace (tokens, characters, milliseconds) is at most this."""
MAX_ITEMS = 200
"""Most entries of any list of a trace (sections, calls, tool calls, message ids)."""

MessageId = Annotated[int, Field(ge=1, le=MAX_ID)]
Outcome = Literal["ok", "error", "refused", "skipped"]
WokeBy = Literal["message", "heartbeat", "cron", "routine", "curation", "flush", "other"]
CostSource = Literal["metered", "reported", "mixed", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceSection(_Strict):
    """One part of the prompt and its size."""

    name: str = Field(max_length=100, description="SOUL.md, MEMORY.md, history, tools, turn…")
    chars: int = Field(ge=0, le=MAX_COUNT)
    tokens: int = Field(ge=0, le=MAX_COUNT, description="An estimate (bytes / 4).")


class TraceModelCall(_Strict):
    """One call of the model during the turn."""

    model: str = Field(max_length=200)
    purpose: str = Field(default="", max_length=100)
    input_tokens: int = Field(default=0, ge=0, le=MAX_COUNT)
    output_tokens: int = Field(default=0, ge=0, le=MAX_COUNT)
    cache_read_tokens: int = Field(default=0, ge=0, le=MAX_COUNT)
    cache_write_tokens: int = Field(default=0, ge=0, le=MAX_COUNT)
    reported_usd: float = Field(
        default=0.0, ge=0, le=MAX_USD, allow_inf_nan=False, description="The agent's own price."
    )
    metered_usd: float | None = Field(
        default=None,
        ge=0,
        le=MAX_USD * 1000,
        allow_inf_nan=False,
        description="What Mission Control metered for it (set by Mission Control; None: unknown).",
    )
    latency_ms: int = Field(default=0, ge=0, le=MAX_COUNT)
    stop_reason: str = Field(default="", max_length=100)
    error: str = Field(default="", max_length=MAX_TEXT)
    reservation_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="The call's hold, when known."
    )


class TraceToolCall(_Strict):
    """One tool call: its (redacted) arguments and (redacted, cut) result."""

    name: str = Field(max_length=200)
    arguments: str = Field(default="", max_length=MAX_TEXT)
    result: str = Field(default="", max_length=MAX_TEXT)
    is_error: bool = False
    refused: bool = False
    latency_ms: int = Field(default=0, ge=0, le=MAX_COUNT)


class TraceIn(_Strict):
    """What an agent posts about one of its turns (``POST /v1/traces``)."""

    id: str = Field(
        min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Chosen by the agent."
    )
    kind: str = Field(max_length=50, description="main, heartbeat, cron, curation…")
    woke_by: WokeBy
    woke_detail: str = Field(default="", max_length=500, description="The cron job, the check…")
    woke_messages: list[MessageId] = Field(default_factory=list, max_length=MAX_ITEMS)
    started_at: AwareDatetime
    latency_ms: int = Field(ge=0, le=MAX_COUNT)
    outcome: Outcome
    error: str = Field(default="", max_length=MAX_TEXT)
    sections: list[TraceSection] = Field(default_factory=list, max_length=MAX_ITEMS)
    calls: list[TraceModelCall] = Field(default_factory=list, max_length=MAX_ITEMS)
    tools: list[TraceToolCall] = Field(default_factory=list, max_length=MAX_ITEMS)
    governance: list[str] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Refusals and decisions met."
    )
    sent_messages: list[MessageId] = Field(default_factory=list, max_length=MAX_ITEMS)
    final_text: str = Field(default="", max_length=MAX_TEXT)
    truncated: bool = Field(default=False, description="The runtime cut the trace to fit.")


class TraceSummary(_Strict):
    """A trace as lists show it."""

    id: str
    agent: str
    kind: str
    woke_by: WokeBy
    woke_messages: list[int]
    sent_messages: list[int]
    started_at: datetime
    received_at: datetime
    latency_ms: int
    outcome: Outcome
    cost_usd: float
    cost_source: CostSource
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    model_calls: int
    tool_calls: int


class TraceOut(TraceSummary):
    """A whole trace (``GET /v1/traces/{id}``): the summary plus everything posted."""

    woke_detail: str
    error: str
    sections: list[TraceSection]
    calls: list[TraceModelCall]
    tools: list[TraceToolCall]
    governance: list[str]
    final_text: str
    truncated: bool
    metered_calls: int
    """How many of the calls Mission Control's meter priced (the rest are as reported)."""


_SUMMARIES = TypeAdapter(list[TraceSummary])
_TRACE = TypeAdapter(TraceOut)


class TraceCalls:
    """The ``/v1/traces`` endpoints as client calls (see :class:`mcos.client.Calls`)."""

    @staticmethod
    def post(trace: TraceIn) -> Call[TraceOut]:
        """An agent records one of its turns."""
        return Call(
            "POST",
            "/v1/traces",
            lambda r: _TRACE.validate_json(r.content),
            json=trace.model_dump(mode="json"),
        )

    @staticmethod
    def find(
        *,
        agent: str | None = None,
        thread: int | None = None,
        message: int | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> Call[list[TraceSummary]]:
        """Traces newest first, filtered."""
        params = {
            "agent": agent,
            "thread": thread,
            "message": message,
            "since": None if since is None else since.isoformat(),
            "limit": limit,
        }
        return Call(
            "GET",
            "/v1/traces",
            lambda r: _SUMMARIES.validate_json(r.content),
            params={k: v for k, v in params.items() if v is not None},
        )

    @staticmethod
    def get(trace_id: str) -> Call[TraceOut]:
        """One trace whole."""
        return Call("GET", f"/v1/traces/{trace_id}", lambda r: _TRACE.validate_json(r.content))
