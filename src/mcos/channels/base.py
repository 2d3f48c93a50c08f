"""What every channel does: receive (with the sender's identity), send, keep to its rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Inbound:
    """Something that arrived from outside the fleet: always untrusted content."""

    channel: str
    sender: str
    """The sender as the channel identifies them (a chat id, an address, a file's author)."""
    text: str
    at: datetime
    ref: str = ""
    """The channel's own id for it (to reply, or to avoid taking it twice)."""


@dataclass(frozen=True)
class Outbound:
    """Something an agent posts to a channel."""

    channel: str
    text: str
    to: str = ""


class Channel(Protocol):
    """One channel account bound to one agent."""

    name: str
    kind: str

    async def receive(self) -> list[Inbound]:
        """What arrived since the last call (each item once)."""
        ...

    async def send(self, message: Outbound) -> str:
        """Post a message; the channel's id for it."""
        ...
