"""What every channel does: receive (with the sender's identity), send, keep to its rate.

A channel is one account (a bot token, a mailbox) bound to one agent or to Mission Control. Its
``run`` receives until cancelled and hands each item to ``deliver``; the item is confirmed to
the source (Telegram's offset, an IMAP flag, a file moved aside) only after ``deliver``
returned, so an item is never lost between the source and Mission Control's store — at worst it
is delivered twice, and ``ref`` makes the second delivery a no-op (idempotency key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Inbound:
    """Something that arrived from outside the fleet: always untrusted content."""

    channel: str
    sender: str
    """The sender as a person reads it (``@alice``, ``Bob <bob@example.com>``)."""
    text: str
    at: datetime
    ref: str = ""
    """The channel's own id for it, unique within the channel (an update id, a Message-ID)."""
    sender_id: str = ""
    """The sender's machine identity (a Telegram user id, an address, a Discord user id): what
    maps a sender to a human of the fleet file."""
    reply_to: str = ""
    """Where a reply goes (a chat id, an address, a Discord channel id)."""
    subject: str = ""
    urgent: bool = False
    """Set by the channel's own triage rules (never by the content's say-so)."""
    labels: tuple[str, ...] = ()
    """What triage did (``flagged``, ``moved:Urgent``), for the log."""
    action: str = ""
    """A button pressed rather than text typed: the button's data (``approve:17``)."""
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outbound:
    """Something posted to a channel."""

    channel: str
    text: str
    to: str = ""
    """A chat id, address or Discord channel id; empty: the channel's first configured chat."""
    subject: str = ""
    buttons: tuple[tuple[str, str], ...] = ()
    """(label, data) pairs shown under the message where the channel can (Telegram)."""
    reply_to_ref: str = ""


Deliver = Callable[[Inbound], Awaitable[None]]
"""Takes one inbound item into Mission Control; an exception means "not taken, keep it"."""


class Channel(Protocol):
    """One channel account."""

    name: str
    kind: str
    redelivers: bool
    """Whether the service offers an item again until it is confirmed (Telegram's offset, an
    IMAP keyword, a file left in the inbox). A channel whose service does not (Discord's
    gateway) has each item held in the agent's durable spool until Mission Control stored it."""

    def exclusive_key(self) -> str | None:
        """The lease key that makes this account's receiver unique across hosts, if any."""
        ...

    async def run(self, deliver: Deliver) -> None:
        """Receive until cancelled, handing each item to ``deliver`` before confirming it."""
        ...

    async def send(self, message: Outbound) -> str:
        """Post (or queue, keeping order) a message; the channel's id for it."""
        ...

    async def aclose(self) -> None:
        """Stop, flushing what is queued where the channel can."""
        ...


EMAIL_KINDS = frozenset({"email", "m365"})
"""Channel kinds that are mailboxes: what they send is external e-mail (governed)."""


def account_key(kind: str, secret: str) -> str:
    """A lease key for an account: the kind and a short hash of its credential, never the
    credential itself (a bot token sits in Telegram's URL path; it must not reach a log)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
    return f"channel:{kind}:{digest}"
