"""Request limits: the body size, enforced before the body is read into memory, and the
recent-send windows behind the per-sender message limits and the ping-pong rule."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcos.domain.bounded import text_depth
from mcos.domain.pingpong import Hop


class BodyTooLarge(Exception):
    """Raised inside the receive wrapper when a streamed body passes the limit."""


class BodySizeLimit:
    """Refuses request bodies over ``limit`` bytes with 413 in the one error shape.

    A declared ``Content-Length`` over the limit is refused before reading; a chunked body is
    counted as it streams. Whoever reads it and however they handle the error (FastAPI turns any
    failure while reading into its own 400), the response is this 413.
    """

    def __init__(self, app: ASGIApp, limit: int, wider: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.wider = dict(wider or {})
        """Path prefixes with a limit of their own (the model gateway's long conversations)."""

    def limit_for(self, path: str) -> int:
        """The body limit of a request to ``path``."""
        for prefix, limit in self.wider.items():
            if path.startswith(prefix):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(send, int(value), limit)
                return
        seen = 0
        started = False
        too_large = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send, seen, limit)
                return  # whatever the app answered to a body it could not read is replaced
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, seen, limit)

    async def _refuse(self, send: Send, size: int, limit: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body is {size} bytes; the limit is {limit}",
                    "details": {"limit": limit},
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class JsonBodyGuard:
    """Refuses, before parsing, a JSON body that is not UTF-8 (400) or nests deeper than
    ``depth`` levels (422): the parser would recurse once per level, and a body nested a
    thousand deep fails inside it (FastAPI answers a bare 400) rather than reaching validation.

    Sits inside :class:`BodySizeLimit`, so the body it reads is already bounded.
    """

    def __init__(self, app: ASGIApp, depth: int) -> None:
        self.app = app
        self.depth = depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        kind = dict(scope["headers"]).get(b"content-type", b"application/json").lower()
        if not (kind.startswith(b"application/json") or b"+json" in kind):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_problem(body, self.depth)
        if problem is not None:
            status, code, text = problem
            await _send_error(send, status, code, text, {"field": "body"})
            return
        replayed: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay([replayed], receive), send)


def json_problem(body: bytes, depth: int) -> tuple[int, str, str] | None:
    """``(status, code, message)`` when ``body`` cannot be a JSON body we accept."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return (
            400,
            "bad_encoding",
            f"request body is not UTF-8 (invalid byte at offset {e.start}); send JSON as UTF-8",
        )
    nesting = text_depth(body)
    if nesting > depth:
        return 422, "invalid_request", f"body: JSON nested {nesting} levels; the limit is {depth}"
    return None


def replay(first: list[Message], receive: Receive) -> Receive:
    """A receive that hands out ``first``, then whatever ``receive`` does (a disconnect)."""
    pending = list(first)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _send_error(
    send: Send, status: int, code: str, message: str, details: dict[str, object]
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SendWindows:
    """What each agent sent recently, for the per-sender limits and the ping-pong rule.

    Kept in this Mission Control process's memory (a restart starts the windows afresh; with
    several servers each judges the messages it saw). Memory stays bounded under any load:
    entries older than the longest window are dropped, a pair's messages are counted per second,
    and the ping-pong rule looks at most ``HOPS_PER_AGENT`` messages into each agent.
    """

    HOPS_PER_AGENT = 256

    def __init__(self) -> None:
        self.keep = timedelta(hours=1)
        self.alarms: dict[str, deque[tuple[datetime, str]]] = {}
        """Sender → its direct alarms to agents: (when, recipient)."""
        self.pairs: dict[tuple[str, str], deque[tuple[datetime, int]]] = {}
        """(sender, recipient) → how many messages were sent in each second: (second, count)."""
        self.inbound: dict[str, deque[Hop]] = {}
        """Agent → the messages that reached it, oldest first (for the ping-pong rule)."""
        self.last_sent: dict[str, datetime] = {}
        """Agent → when the newest of its messages reached another agent (outside input
        aside): see :meth:`sent_since`."""
        self._pruned_at: datetime | None = None

    def configure(self, longest: timedelta) -> None:
        """Keep entries as long as the longest window."""
        self.keep = longest

    def _prune(self, now: datetime) -> None:
        """Drop what is older than ``keep`` (a sweep at most once a minute)."""
        if self._pruned_at is not None and now - self._pruned_at < timedelta(minutes=1):
            return
        self._pruned_at = now
        cut = now - self.keep
        for key in [k for k, q in self.alarms.items() if not q or q[-1][0] < cut]:
            del self.alarms[key]
        for pair in [k for k, counts in self.pairs.items() if not counts or counts[-1][0] < cut]:
            del self.pairs[pair]
        for agent in [a for a, q in self.inbound.items() if not q or q[-1].at < cut]:
            del self.inbound[agent]
        for agent in [a for a, at in self.last_sent.items() if at < cut]:
            del self.last_sent[agent]

    def sent(self, now: datetime, sender: str, recipient: str, count: int = 1) -> None:
        """Count messages of an agent to a recipient (before they are stored, so concurrent
        sends see each other)."""
        self._prune(now)
        counts = self.pairs.setdefault((sender, recipient), deque())
        second = now.replace(microsecond=0)
        if counts and counts[-1][0] == second:
            counts[-1] = (second, counts[-1][1] + count)
        else:
            counts.append((second, count))
        while counts and counts[0][0] < now - self.keep:
            counts.popleft()

    def alarmed(self, now: datetime, sender: str, recipient: str) -> None:
        """Count a direct alarm of an agent to another agent."""
        self.alarms.setdefault(sender, deque(maxlen=1000)).append((now, recipient))

    def reached(self, hop: Hop) -> None:
        """A message reached an agent."""
        self._prune(hop.at)
        self.inbound.setdefault(hop.recipient, deque(maxlen=self.HOPS_PER_AGENT)).append(hop)
        if not hop.outside and hop.at > self.last_sent.get(hop.sender, hop.at - self.keep):
            self.last_sent[hop.sender] = hop.at

    def sent_since(self, agent: str, start: datetime) -> bool:
        """Whether a message of ``agent`` (no outside input) reached an agent since ``start``.

        A loop needs each of its agents to have sent within the window, the newest message's
        recipient too: without that, the ping-pong rule has nothing to find, and a one-way
        flood into an agent skips its walk over that agent's last messages on every send.
        """
        last = self.last_sent.get(agent)
        return last is not None and last >= start

    def forget(self, agents: Iterable[str]) -> None:
        """Paused agents start afresh: their exchanges so far no longer count for the rule."""
        gone = set(agents)
        for a in gone:
            self.inbound.pop(a, None)
            self.last_sent.pop(a, None)
        for a, hops in self.inbound.items():
            if any(h.sender in gone for h in hops):
                kept = (h for h in hops if h.sender not in gone)
                self.inbound[a] = deque(kept, maxlen=self.HOPS_PER_AGENT)
