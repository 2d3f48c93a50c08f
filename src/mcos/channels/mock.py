"""A directory-backed channel for rehearsals: drop files in ``inbox/``, read ``outbox/``.

Revenue agents burned tokens on channels that did not exist yet; with a mock channel they can
be rehearsed end to end first. An inbound message is a file in ``inbox/`` (``*.txt``: the
text, the sender taken from a ``From: name`` first line if present; ``*.json``:
``{"from", "text"}``); once Mission Control has it, it moves to ``inbox/taken/``. Each post
is one JSON line in ``outbox/posts.jsonl``, which ``mcos channel tail NAME`` follows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from mcos.channels.base import Deliver, Inbound, Outbound

MAX_FILE = 64 * 1024
_BUTTON = re.compile(r"^(ack|approve|deny):\d+$")
"""A file whose whole text is a button's data (``ack:3``) presses that button."""


class MockChannel:
    """A channel that is a folder."""

    kind = "mock"
    redelivers = True

    def __init__(self, name: str, root: Path, *, poll: float = 1.0) -> None:
        self.name = name
        self.root = root
        self.poll = poll
        self.inbox = root / "inbox"
        self.taken = self.inbox / "taken"
        self.outbox = root / "outbox" / "posts.jsonl"
        for folder in (self.inbox, self.taken, self.outbox.parent):
            folder.mkdir(parents=True, exist_ok=True)

    def exclusive_key(self) -> str | None:
        """A folder needs no lease: a file is moved aside by whoever takes it first."""
        return None

    def _read(self, path: Path) -> Inbound:
        raw = path.read_bytes()[:MAX_FILE].decode(errors="replace")
        sender, text = "unknown", raw
        if path.suffix == ".json":
            try:
                data = json.loads(raw)
                sender, text = str(data.get("from", "unknown")), str(data.get("text", ""))
            except (json.JSONDecodeError, AttributeError):
                text = raw
        elif raw.startswith("From:"):
            first, _, rest = raw.partition("\n")
            sender, text = first.removeprefix("From:").strip() or "unknown", rest
        text = text.strip()
        return Inbound(
            self.name,
            sender,
            text,
            datetime.now(UTC),
            ref=path.name,
            sender_id=sender,
            reply_to=sender,
            action=text if _BUTTON.match(text) else "",
        )

    def waiting(self) -> list[Path]:
        """The inbox's files, oldest first."""
        return sorted(
            (p for p in self.inbox.iterdir() if p.is_file() and p.suffix in (".txt", ".json")),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )

    async def receive_once(self, deliver: Deliver) -> int:
        """Deliver every waiting file, each moved aside only once delivered."""
        count = 0
        for path in self.waiting():
            await deliver(self._read(path))
            os.replace(path, self.taken / path.name)
            count += 1
        return count

    async def run(self, deliver: Deliver) -> None:
        """Look at the inbox every ``poll`` seconds until cancelled."""
        while True:
            await self.receive_once(deliver)
            await asyncio.sleep(self.poll)

    async def send(self, message: Outbound) -> str:
        """Append one post to ``outbox/posts.jsonl`` (one write, so lines never interleave)."""
        at = datetime.now(UTC)
        line = json.dumps(
            {
                "at": at.isoformat(),
                "to": message.to,
                "subject": message.subject,
                "text": message.text,
                "buttons": [list(b) for b in message.buttons],
            }
        )
        fd = os.open(self.outbox, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        return f"{self.name}:{at.timestamp():.6f}"

    async def aclose(self) -> None:
        """Nothing is queued."""
