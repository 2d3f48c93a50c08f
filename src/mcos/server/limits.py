"""Request limits: the body size, enforced before the body is read into memory, and the
recent-send windows behind the per-sender message limits and the ping-pong rule."""

from __future__ import annotations

import json
from collections import defaultdict, deque
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
    several servers each judges the messages it saw). Entries older than ``keep`` are dropped.
    """

    def __init__(self, keep: timedelta = timedelta(hours=1)) -> None:
        self.keep = keep
        self.alarms: dict[str, deque[tuple[datetime, str]]] = defaultdict(deque)
        """Sender → its direct alarms to agents: (when, recipient)."""
        self.pairs: dict[tuple[str, str], deque[datetime]] = defaultdict(deque)
        """(sender, recipient) → when each message was sent."""
        self.inbound: dict[str, deque[Hop]] = defaultdict(deque)
        """Agent → the messages that reached it, oldest first (for the ping-pong rule)."""
        self._pruned_at: datetime | None = None

    def _prune(self, now: datetime) -> None:
        """Drop what is older than ``keep`` (every entry at most once a minute)."""
        if self._pruned_at is not None and now - self._pruned_at < timedelta(minutes=1):
            return
        self._pruned_at = now
        cut = now - self.keep
        for key in [k for k, q in self.alarms.items() if not q or q[-1][0] < cut]:
            del self.alarms[key]
        for pair in [k for k, times in self.pairs.items() if not times or times[-1] < cut]:
            del self.pairs[pair]
        for agent in [a for a, q in self.inbound.items() if not q or q[-1].at < cut]:
            del self.inbound[agent]
        for alarms in self.alarms.values():
            while alarms and alarms[0][0] < cut:
                alarms.popleft()
        for times in self.pairs.values():
            while times and times[0] < cut:
                times.popleft()
        for hops in self.inbound.values():
            while hops and hops[0].at < cut:
                hops.popleft()

    def sent(self, now: datetime, sender: str, recipient: str, *, alarm: bool) -> None:
        """Count a message of an agent to a recipient."""
        self._prune(now)
        self.pairs[(sender, recipient)].append(now)
        if alarm:
            self.alarms[sender].append((now, recipient))

    def reached(self, hop: Hop) -> None:
        """A message reached an agent."""
        self._prune(hop.at)
        self.inbound[hop.recipient].append(hop)

    def forget(self, agents: Iterable[str]) -> None:
        """Paused agents start afresh: their exchanges so far no longer count for the rule."""
        gone = set(agents)
        for a in gone:
            self.inbound.pop(a, None)
        for a, hops in self.inbound.items():
            if any(h.sender in gone for h in hops):
                self.inbound[a] = deque(h for h in hops if h.sender not in gone)
