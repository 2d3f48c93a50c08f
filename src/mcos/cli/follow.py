"""A growing file read line by line, as ``tail -f`` does (``mcos logs``, ``channel tail``)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

POLL_SECONDS = 0.5


def lines(path: Path, *, follow: bool, last: int | None = None) -> Iterator[str]:
    """The lines of ``path`` (only the ``last`` ones if given), then — with ``follow`` — each
    line appended later, until interrupted. A file that shrinks (rotated, truncated) is read
    again from its start; one that does not exist yet is waited for."""
    offset = 0
    if last is not None and path.exists():
        with path.open("rb") as f:
            tail = deque(f, maxlen=last)
            offset = f.tell()
        yield from (raw.decode(errors="replace").rstrip("\n") for raw in tail)
    pending = b""
    while True:
        if path.exists():
            if path.stat().st_size < offset:
                offset, pending = 0, b""
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            *complete, pending = (pending + chunk).split(b"\n")
            yield from (raw.decode(errors="replace") for raw in complete)
        if not follow:
            if pending:
                yield pending.decode(errors="replace")
            return
        time.sleep(POLL_SECONDS)
