"""What differs between the model APIs the gateway speaks: one implementation per provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from starlette.responses import JSONResponse

from mcos.domain.budget import Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.server.gateway.sse import EventReader
from mcos.server.gateway.upstream import Upstream

JSON = dict[str, Any]


def count(value: object) -> int:
    """A token count from an answer: a non-negative integer, anything else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class EventUsage:
    """Usage read from a streamed answer's events as they pass; each provider reads its own
    events (:meth:`read`) into ``usage``."""

    def __init__(self) -> None:
        self._reader = EventReader()
        self.raw: JSON = {}
        """The provider's usage object, as far as the events have told it."""
        self.started = False
        self.finished = False

    def feed(self, chunk: bytes) -> None:
        """Read the events ``chunk`` completes."""
        for event in self._reader.feed(chunk):
            self.started = True
            self.read(event)

    def read(self, event: JSON) -> None:
        """Take what one event says of the usage (set ``finished`` on the final usage)."""
        raise NotImplementedError


class StreamUsage(Protocol):
    """Usage read from a streamed answer's events as they pass."""

    def feed(self, chunk: bytes) -> None:
        """Read the events ``chunk`` completes."""
        ...

    @property
    def started(self) -> bool:
        """The provider began answering (its first event arrived)."""
        ...

    @property
    def finished(self) -> bool:
        """The final usage arrived (``message_delta``, the ``include_usage`` chunk)."""
        ...

    def usage(self) -> Usage:
        """What the events said so far."""
        ...


class Dialect(Protocol):
    """One provider's wire protocol, as far as the gateway needs to understand it."""

    provider: str
    """``anthropic`` or ``openai``: the part of the gateway's path that names the API."""
    default_base_url: str
    """Where the real API is when the agent's ``model.base_url`` says nothing."""

    def url(self, base_url: str, endpoint: str) -> str:
        """The upstream URL of ``endpoint`` (``messages``, ``count_tokens``, …)."""
        ...

    def outgoing_headers(self, incoming: Mapping[str, str], key: str | None) -> dict[str, str]:
        """The headers sent upstream: the key and the protocol's own, nothing of the agent's."""
        ...

    async def prompt_tokens(
        self, upstream: Upstream, base_url: str, headers: Mapping[str, str], body: JSON
    ) -> int:
        """The prompt's input tokens: exact where the provider counts them, else never low."""
        ...

    def cache_ttl(self, body: JSON) -> CacheTTL:
        """The longest prompt-cache lifetime the body asks for (what a write may cost)."""
        ...

    def max_output(self, body: JSON, default: int) -> int:
        """The output tokens the body allows (``default`` when it names none)."""
        ...

    def limit_output(self, body: JSON, granted: int) -> None:
        """Lower the body's output limit to ``granted`` (set it when it names none)."""
        ...

    def prepare_stream(self, body: JSON) -> None:
        """Make a streamed answer carry its usage."""
        ...

    def usage(self, answer: JSON) -> Usage | None:
        """A whole answer's usage (None when it has none)."""
        ...

    def stream_usage(self) -> StreamUsage:
        """A reader of a streamed answer's usage."""
        ...

    def spend_limit(self, status: int, answer: JSON) -> bool:
        """Whether an error answer says the account's spend limit or quota is reached."""
        ...

    def error(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        """An error of the gateway in this provider's own error shape."""
        ...
