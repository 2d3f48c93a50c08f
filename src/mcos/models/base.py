"""What every model provider takes and gives: a provider-neutral conversation.

The conversation is kept in Anthropic's shape (content blocks; tool calls answered by tool
results in the next user turn) because it is the richest; each adapter translates it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from mcos.domain.budget import Pricing, Usage
from mcos.domain.heartbeat import CacheTTL

INVALID_ARGUMENTS = "__invalid_json__"
"""Key under which a tool call's unparseable arguments are passed on (the tool refuses it)."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it is for, and its JSON-schema input."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class TextBlock:
    """Plain text in a turn."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer to a call, sent back in the next user turn."""

    call_id: str
    content: str
    is_error: bool = False


Block = TextBlock | ToolCall | ToolResult


@dataclass(frozen=True)
class Turn:
    """One message of the conversation."""

    role: Literal["user", "assistant"]
    blocks: tuple[Block, ...]

    @classmethod
    def user(cls, text: str) -> Turn:
        """A user turn of plain text."""
        return cls("user", (TextBlock(text),))

    @property
    def text(self) -> str:
        """The turn's text blocks joined."""
        return "\n".join(b.text for b in self.blocks if isinstance(b, TextBlock))


@dataclass(frozen=True)
class ModelRequest:
    """One call: a cacheable system prefix, a volatile system tail, the turns and the tools."""

    stable: str
    """The workspace prefix: identical from call to call, so it is what the cache holds."""
    volatile: str
    """What changes every call (time, findings' headlines); after the cache breakpoint."""
    turns: tuple[Turn, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_output: int = 4096
    cache_ttl: CacheTTL = CacheTTL.NONE
    tool_choice: str | None = None
    """The tool the model must call (structured output: the call's input is the answer);
    None: the model chooses."""
    purpose: str = ""
    """What the call is for (``heartbeat``, ``main``…): Mission Control's gateway records it with
    the call's usage."""

    @property
    def prompt_bytes(self) -> int:
        """UTF-8 bytes of everything sent: a bound on the input tokens (see budget rules)."""
        parts: list[str] = [self.stable, self.volatile]
        for t in self.tools:
            parts += [t.name, t.description, repr(t.input_schema)]
        for turn in self.turns:
            for b in turn.blocks:
                if isinstance(b, TextBlock):
                    parts.append(b.text)
                elif isinstance(b, ToolCall):
                    parts += [b.id, b.name, repr(b.input)]
                else:
                    parts += [b.call_id, b.content]
        # Role markers, block framing and tool-schema wrapping cost tokens too.
        overhead = 64 * (len(self.turns) + len(self.tools) + 4)
        return sum(len(p.encode()) for p in parts) + overhead


@dataclass(frozen=True)
class ModelReply:
    """What the model answered, and what it cost in tokens."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    stop_reason: str
    model: str
    blocks: tuple[Block, ...] = field(default=())
    """The assistant turn as it must be replayed (text and tool calls in order)."""
    reservation: int | None = None
    """Mission Control's hold for the call, when its gateway said (the turn trace's link to
    what the gateway metered)."""

    @property
    def turn(self) -> Turn:
        """The assistant turn to append to the conversation."""
        return Turn("assistant", self.blocks or (TextBlock(self.text),))


class ModelProvider(Protocol):
    """A model API. Errors are ``mcos.exceptions.ModelError`` subclasses."""

    provider: str
    """``anthropic``, ``openai`` or ``offline``."""
    model: str
    label: str
    """How output is labelled where people see it (``offline model`` for the offline one)."""
    price: Pricing
    caches: bool
    """Whether ``cache_ttl`` means anything to this provider."""
    metered: bool
    """Mission Control meters this provider's calls (the gateway): the runtime neither reserves
    nor reports."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Make one call (no tool loop: the runtime runs tools between calls)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


_Provider = TypeVar("_Provider", bound=ModelProvider)


def same_client(provider: _Provider, model: str, price: Pricing) -> _Provider:
    """``provider`` asking for another ``model`` over the same client — the same key or route,
    retries and connection pool: how an agent reaches its triage model. Closing either closes
    the shared pool."""
    other = copy.copy(provider)
    other.model = other.label = model
    other.price = price
    return other


@dataclass(frozen=True)
class BatchOutcome:
    """How a one-request batch ended: the reply when it succeeded, else why not."""

    status: Literal["succeeded", "errored", "canceled", "expired"]
    reply: ModelReply | None = None
    detail: str = ""
    """The provider's words when the request errored."""


@runtime_checkable
class BatchingProvider(ModelProvider, Protocol):
    """A provider with a batch API (Anthropic's Message Batches): calls that may wait hours,
    billed at a discount. Errors are ``mcos.exceptions.ModelError`` subclasses."""

    async def submit(self, request: ModelRequest, custom_id: str) -> str:
        """Send ``request`` as a batch of one, named ``custom_id``; the batch's id."""
        ...

    async def outcome(self, batch_id: str, custom_id: str) -> BatchOutcome | None:
        """The request's outcome once the batch has ended; None while it is in progress."""
        ...

    async def cancel(self, batch_id: str) -> None:
        """Stop the batch (one that has ended meanwhile is left as it is)."""
        ...
