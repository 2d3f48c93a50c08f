"""Reading server-sent events as they pass through, for the usage they carry."""

from __future__ import annotations

import json
from typing import Any

MAX_EVENT = 4 * 1024 * 1024
"""An event longer than this is dropped unread (no usage event is anywhere near it)."""


class EventReader:
    """Collects the JSON ``data:`` payloads of an SSE stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """The complete events ``chunk`` finishes, as JSON objects (others are skipped:
        ``[DONE]``, comments, pings without data)."""
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        *complete, self._buffer = self._buffer.split(b"\n\n")
        if len(self._buffer) > MAX_EVENT:
            self._buffer = b""
        events = []
        for raw in complete:
            data = b"\n".join(
                line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")
            )
            if not data or data == b"[DONE]":
                continue
            try:
                value = json.loads(data)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
        return events
