"""The audit chain's head, checkpointed outside the store.

The chain's own head lives in the database, so whoever can rewrite the database can cut the
newest records off and move the head back, or empty the table, and the chain alone still
verifies. Every few seconds (and at start and shutdown) Mission Control appends the newest
record's sequence and hash, signed with a key derived from the token key, to
``STATE/audit.checkpoint``; verification compares the store with every line.

The file is append-only text, one checkpoint a line: ``seq hash time keyed_from=K signature``.
Several processes of one server (workers) append to the same file; each line is written whole
with one ``O_APPEND`` write. Replicas on other machines keep their own files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from mcos.domain.audit import BadCheckpoint, Checkpoint, Finding, parse_checkpoint
from mcos.exceptions import McosError
from mcos.store import Store

log = logging.getLogger("mcos.server.audit")
CHECKPOINT_FILE = "audit.checkpoint"


@dataclass
class CheckpointFile:
    """What the checkpoint file holds: the good lines, and a finding for each bad one."""

    path: Path | None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    exists: bool = False

    @property
    def first(self) -> Checkpoint | None:
        """The oldest good line (when the file was begun)."""
        return self.checkpoints[0] if self.checkpoints else None

    @property
    def latest(self) -> Checkpoint | None:
        """The good line with the highest sequence."""
        return max(self.checkpoints, key=lambda c: c.seq) if self.checkpoints else None


class AuditCheckpoints:
    """Appends signed checkpoints of the audit head to a file and reads them back."""

    def __init__(self, store: Store, path: Path | None, key: bytes) -> None:
        self.store = store
        self.path = path
        self._key = key
        self._last_seq: int | None = None
        self._begun = False
        self.written = 0
        """Lines this process appended."""

    async def begin(self) -> None:
        """At start: create the file if there is none, and checkpoint the head."""
        if self.path is None:
            log.warning("no state directory: the audit log's head is not checkpointed")
            return
        path = self.path
        created = await asyncio.to_thread(_create, path)
        self._begun = True
        tip = await self.checkpoint()
        if created and tip is not None and tip.seq > 0:
            log.warning(
                "began a new audit checkpoint file %s with %d records already in the store: "
                "the records before it are checked against it only from now on",
                path,
                tip.seq,
            )

    async def checkpoint(self) -> Checkpoint | None:
        """Append the store's newest record if it moved since the last line; the line written."""
        if self.path is None or not self._begun:
            return None
        tip = await self.store.audit_tip()
        if tip.seq == self._last_seq:
            return None
        line = tip.line(self._key) + "\n"
        try:
            await asyncio.to_thread(_append, self.path, line)
        except FileNotFoundError:
            log.error("the audit checkpoint file %s was deleted; not recreating it", self.path)
            return None
        self._last_seq = tip.seq
        self.written += 1
        return tip

    async def run(self, every: float) -> None:
        """Checkpoint every ``every`` seconds until cancelled (a named task of the server)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.checkpoint()
            except (McosError, OSError) as e:
                log.warning("audit checkpoint failed: %s", getattr(e, "message", e))

    async def read(self) -> CheckpointFile:
        """Every line of the file, its signature checked."""
        if self.path is None:
            return CheckpointFile(
                None,
                problems=[
                    Finding(
                        "checkpoint_missing",
                        None,
                        "the server has no state directory, so the audit head is not "
                        "checkpointed: truncation and a moved-back head cannot be detected",
                    )
                ],
            )
        return await asyncio.to_thread(read_file, self.path, self._key)


def read_file(path: Path, key: bytes) -> CheckpointFile:
    """Parse and check a checkpoint file; a missing file is itself a finding."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return CheckpointFile(
            path,
            problems=[
                Finding(
                    "checkpoint_missing",
                    None,
                    f"the checkpoint file {path} is missing: it was deleted or moved, so "
                    "truncation and a moved-back head cannot be detected",
                )
            ],
        )
    out = CheckpointFile(path, exists=True)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.checkpoints.append(parse_checkpoint(key, line))
        except BadCheckpoint as e:
            seq = line.split(" ", 1)[0]
            out.problems.append(
                Finding(
                    "checkpoint_bad_signature",
                    int(seq) if seq.isdigit() else None,
                    f"line {number} of {path}: {e}",
                )
            )
    return out


def _create(path: Path) -> bool:
    """Create the file (mode 0600) unless it exists; True when this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
