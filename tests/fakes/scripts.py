"""What a fake model API answers, and the live-server scaffolding both fakes share.

A test scripts the answers it needs (``fake.script(Text("hi"), ToolUse(...))``); each request to
the fake pops one, in order. Each fake translates these vendor-neutral answers into its own wire
format, so a test reads the same whether it drives the Anthropic or the OpenAI fake.
"""

from __future__ import annotations

import json
import math
import secrets
import string
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from fastapi import FastAPI

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

JSON = dict[str, Any]


@dataclass(frozen=True)
class Text:
    """A plain text answer that ends the turn."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """The model calls one tool, optionally saying ``text`` first; the turn stops for the tool.

    ``id`` is generated (``toolu_…`` / ``call_…``) unless given, for tests that want to name it.
    """

    name: str
    input: JSON
    text: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """Raw Anthropic content blocks, for shapes the other answers do not cover.

    A ``tool_use`` block without an ``id`` gets one. The OpenAI fake maps ``text`` blocks to
    ``content``, ``tool_use`` blocks to ``tool_calls`` and the stop reason to a finish reason.
    """

    content: list[JSON]
    stop_reason: str = "end_turn"


@dataclass(frozen=True)
class RateLimited:
    """HTTP 429 with a ``retry-after`` header of ``retry_after`` seconds."""

    retry_after: float = 1.0
    message: str = "Number of request tokens has exceeded your per-minute rate limit."


@dataclass(frozen=True)
class Overloaded:
    """The provider is overloaded (Anthropic 529 ``overloaded_error``, OpenAI 503)."""

    message: str = "Overloaded"


@dataclass(frozen=True)
class SpendLimit:
    """The account's spend limit is reached: retrying will not help.

    Anthropic answers 400 ``invalid_request_error`` naming the date access returns, or — with
    ``code`` (``enforced_spend_limit_reached``, ``contract_spend_limit_reached``) — 429
    ``rate_limit_error`` carrying ``error.details.error_code``, which the SDK maps to its own
    error class; OpenAI answers 429 ``insufficient_quota``. ``message`` replaces the wording.
    """

    message: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class ApiError:
    """Any error the provider can send: an HTTP status, an error type, a message, headers."""

    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


Scripted = Text | ToolUse | Reply | RateLimited | Overloaded | SpendLimit | ApiError
"""One answer to one request."""

ANSWER_TYPES = (Text, ToolUse, Reply, RateLimited, Overloaded, SpendLimit, ApiError)

Responder = Callable[[JSON], Scripted]
"""Computes the answer from the request body, for answers that depend on what was asked."""

Step = Scripted | Responder
"""What ``fake.script`` accepts: an answer, or a function that computes it."""


@dataclass
class RecordedRequest:
    """One request the fake received, what it answered and the usage it billed (on success)."""

    body: JSON
    headers: dict[str, str]
    response_status: int
    usage: JSON | None = None


def dumps(value: object) -> str:
    """Canonical JSON, so equal content hashes and counts the same."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def count_tokens(text: str) -> int:
    """The fakes' deterministic tokenizer: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def seconds_header(seconds: float) -> str:
    """Seconds as a ``retry-after`` value: ``7`` rather than ``7.0``."""
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def new_id(prefix: str, length: int = 24) -> str:
    """A random identifier shaped like the provider's (``msg_01…``, ``call_…``)."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def sse(data: object, event: str | None = None) -> bytes:
    """One server-sent event: Anthropic names each event, OpenAI sends ``data:`` lines only."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def pieces(text: str, size: int = 16) -> list[str]:
    """A text cut into the small deltas a streamed answer arrives in."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def default_responder(_body: JSON) -> Scripted:
    """What a fake answers when nothing is scripted."""
    return Text("ok")


class ScriptedServer:
    """A FastAPI app on a loopback uvicorn in a background thread, answering from a script.

    Subclasses build the app; this class owns the thread, the script queue, the record of
    requests and the lock that guards them (uvicorn serves requests from a thread pool).
    """

    def __init__(self, *, max_recorded: int | None = None) -> None:
        self._lock = threading.Lock()
        self.max_recorded = max_recorded
        """Keep only this many recent requests (a long benchmark run); ``None`` keeps all."""
        self._queue: deque[Step] = deque()
        self.default: Step = default_responder
        """Answers when the script is empty; settable."""
        self.requests: list[RecordedRequest] = []
        """Every model request received, in order, for assertions."""
        self.stream_gate: threading.Event | None = None
        """When set to an Event, a streamed answer sends its first events, then waits for the
        event to be set before the rest (a test sees what a proxy passes on as it arrives)."""
        self.gate_opened: list[bool] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def build_app(self) -> FastAPI:
        """The vendor's HTTP API."""
        raise NotImplementedError

    # -- scripting ---------------------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        """Queue answers; each model request pops one, first in first out."""
        with self._lock:
            self._queue.extend(steps)

    @property
    def pending(self) -> int:
        """How many scripted answers no request has consumed yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget the script, the recorded requests and the default answer."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.default = default_responder

    def next_answer(self, body: JSON) -> Scripted:
        """Pop the next scripted step (or use the default) and resolve it against ``body``."""
        with self._lock:
            step = self._queue.popleft() if self._queue else self.default
        if not callable(step):
            return step
        # A responder runs outside the lock: it may be slow, or script further answers.
        try:
            answer = step(body)
        except Exception as exc:  # a broken responder must fail the request, not the server
            return ApiError(500, "api_error", f"the fake's responder raised {exc!r}")
        if not isinstance(answer, ANSWER_TYPES):
            return ApiError(500, "api_error", f"the fake's responder returned {answer!r}")
        return answer

    def wait_at_gate(self) -> None:
        """Hold a stream at the gate, if a test set one (at most 30 s: never a hung server);
        ``gate_opened`` records whether it opened (True) or the wait ran out (False)."""
        gate = self.stream_gate
        if gate is not None:
            self.gate_opened.append(gate.wait(30))

    def record(self, record: RecordedRequest) -> None:
        """Keep ``record`` for the test to inspect."""
        with self._lock:
            self.requests.append(record)
            if self.max_recorded is not None and len(self.requests) > self.max_recorded:
                del self.requests[: len(self.requests) - self.max_recorded]

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` while running."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        """Serve on a free loopback port; returns once the server accepts connections."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.url}")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                self.build_app(),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        thread = threading.Thread(target=server.run, name=type(self).__name__, daemon=True)
        thread.start()
        wait_serving(server, thread, f"{type(self).__name__} on port {port}")
        self._server, self._thread, self._port = server, thread, port
        return self

    def stop(self) -> None:
        """Stop serving; a no-op when not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._port = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
