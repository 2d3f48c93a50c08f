"""Request limits: the body size, enforced before the body is read into memory, and the
recent-send windows behind the per-sender message limits and the ping-pong rule."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcos.domain.pingpong import Hop


class BodyTooLarge(Exception):
    """Raised inside the receive wrapper when a streamed body passes the limit."""


class BodySizeLimit:
    """Refuses request bodies over ``limit`` bytes with 413 in the one error shape."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send, int(value))
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body is {size} bytes; the limit is {self.limit}",
                    "details": {"limit": self.limit},
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

    def forget(self, agents: Iterable[str]) -> None:
        """Paused agents start afresh: their exchanges so far no longer count for the rule."""
        gone = set(agents)
        for a in gone:
            self.inbound.pop(a, None)
        for a, hops in self.inbound.items():
            if any(h.sender in gone for h in hops):
                kept = (h for h in hops if h.sender not in gone)
                self.inbound[a] = deque(kept, maxlen=self.HOPS_PER_AGENT)
