"""The rules of workspace sync, as plain data: which paths a manifest may name, and what a host
starting an agent does with each file when it pulls the latest version.

A workspace version is a manifest, path → sha256 of the file's bytes. The host keeps the
manifest it last pushed or pulled (its *base*), so a pull is a three-way decision per file:
a file this host changed since its base is never overwritten silently — when the fleet's
version moved on too, the fleet's copy wins (it is the one the live instance wrote) and the
local one is kept aside for a human.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from mcos.domain.leases import FENCE_HEADER, Lease
from mcos.exceptions import Fenced, InvalidRequest

MAX_PATH = 1_000
"""Characters of a workspace path."""
RESERVED = ".mcos"
"""The runtime's own folder (its databases, spools and this sync's state): never synced."""
SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
MAX_FILES = 10_000
"""Files one manifest may name."""


@dataclass(frozen=True)
class SyncLimits:
    """What Mission Control accepts of one agent's pushes (its ``[workspace_sync]``)."""

    enabled: bool = True
    max_file_bytes: int = 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024


def path_problem(path: str) -> str | None:  # noqa: PLR0911 (one answer per rule)
    """Why ``path`` cannot name a file of a workspace manifest, or None if it can: relative,
    POSIX separators, no ``..``, no empty or ``.`` parts, nothing under ``.mcos/``."""
    if not path:
        return "is empty"
    if len(path) > MAX_PATH:
        return f"is {len(path)} characters long; the limit is {MAX_PATH}"
    if "\0" in path or any(ord(c) < 32 for c in path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash (use / between folders)"
    if path.startswith("/") or re.match(r"\A[A-Za-z]:", path):
        return "is absolute (workspace paths are relative to the workspace folder)"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out of the workspace (..)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' part"
    if parts[0] == RESERVED:
        return f"is under {RESERVED}/, the runtime's own state, which is never synced"
    return None


def hash_problem(sha256: str) -> str | None:
    """Why ``sha256`` is not a hash a manifest may name (64 lowercase hex digits)."""
    if SHA256.match(sha256):
        return None
    return "is not a sha256 (64 lowercase hexadecimal digits)"


class Action(StrEnum):
    """What a pull does with one file."""

    WRITE = "write"
    """The fleet's version is newer: written (atomically)."""
    WRITE_KEEP_LOCAL = "write_keep_local"
    """Both changed: the fleet's version is written, the local one kept aside."""
    KEEP_LOCAL = "keep_local"
    """Only this host changed it since its last sync: kept (the next push sends it)."""
    DELETE = "delete"
    """Deleted by the live instance and unchanged here since: removed (kept aside)."""


@dataclass(frozen=True)
class Base:
    """The manifest this host last pushed or pulled, and its version (0: none yet)."""

    version: int
    files: Mapping[str, str]


def plan_pull(
    local: Mapping[str, str], base: Base, remote_version: int, remote: Mapping[str, str]
) -> dict[str, Action]:
    """For each file that needs it, what a pull does: ``local`` and ``remote`` map paths to
    hashes (the files on this host, the fleet's latest manifest). Files equal on both sides,
    and files only this host has and never synced, are left alone. A fleet version older than
    this host's base (a store restored from an old backup) changes nothing here: the next push
    sends this host's files again."""
    if remote_version < base.version:
        return {}
    moved_on = remote_version != base.version
    plan: dict[str, Action] = {}
    for path, theirs in remote.items():
        mine = local.get(path)
        if mine == theirs:
            continue
        if mine is None or mine == base.files.get(path):
            plan[path] = Action.WRITE  # missing here, or unchanged here since the last sync
        elif not moved_on:
            plan[path] = Action.KEEP_LOCAL  # edited here after our last sync; fleet unchanged
        else:
            plan[path] = Action.WRITE_KEEP_LOCAL
    for path, mine in local.items():
        if path not in remote and moved_on and base.files.get(path) == mine:
            plan[path] = Action.DELETE
    return plan


@dataclass(frozen=True)
class WorkspaceFile:
    """One file of a manifest: where it is in the workspace, its content's hash and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WorkspaceManifest:
    """An agent's latest workspace version (0 and no files: nothing pushed yet)."""

    agent: str
    version: int
    files: tuple[WorkspaceFile, ...] = ()
    fence: int | None = None
    """The fence of the instance that pushed it."""
    updated_at: datetime | None = None

    @property
    def bytes(self) -> int:
        """The size of every file together."""
        return sum(f.size for f in self.files)

    def hashes(self) -> dict[str, str]:
        """Path → sha256."""
        return {f.path: f.sha256 for f in self.files}


def push_refusal(agent: str, fence: int | None, lease: Lease | None) -> Fenced | None:
    """Why a push carrying ``fence`` must not become ``agent``'s workspace, given its current
    ``lease`` (None: it may). An instance older than the lease was fenced out by another; a
    push without a fence, once one was issued, comes from outside the one live instance."""
    if lease is None or lease.fence <= 0:
        return None
    where = f"{lease.holder} on {lease.host or '?'} runs it now (fence {lease.fence})"
    if fence is None:
        return Fenced(
            f"workspace push of {agent} without a fencing token ({FENCE_HEADER} missing): "
            f"{where}; nothing was overwritten",
            presented=None, current=lease.fence, missing=FENCE_HEADER,
        )  # fmt: skip
    if fence < lease.fence:
        return Fenced(
            f"workspace push of {agent} refused: its fencing token {fence} is stale, {where}; "
            "nothing was overwritten",
            presented=fence, current=lease.fence,
        )  # fmt: skip
    return None


def missing_blob(files: Sequence[WorkspaceFile], held: Set[str]) -> InvalidRequest | None:
    """The refusal of a manifest naming a blob the agent never uploaded (None: all held)."""
    for i, f in enumerate(files):
        if f.sha256 not in held:
            return InvalidRequest(
                f"files[{i}] ({f.path}): no blob {f.sha256} was uploaded; "
                "PUT /v1/workspace/blobs/{sha256} first",
                field=f"files[{i}].sha256", path=f.path,
            )  # fmt: skip
    return None


@dataclass(frozen=True)
class Change:
    """What a commit writes: paths gone, files new or changed, and the hashes no file names
    any more (their blobs are swept)."""

    removed: list[str]
    written: list[WorkspaceFile]
    unnamed: list[str]


def change(current: Sequence[WorkspaceFile], new: Sequence[WorkspaceFile]) -> Change:
    """The difference between the latest manifest and the next: a push that appended to one
    daily log writes one row, not the whole workspace again."""
    before = {f.path: f for f in current}
    after = {f.path: f for f in new}
    removed = sorted(set(before) - set(after))
    written = sorted((f for p, f in after.items() if before.get(p) != f), key=lambda f: f.path)
    named = {f.sha256 for f in new}
    unnamed = sorted({f.sha256 for f in current} - named)
    return Change(removed, written, unnamed)


# --- batched blob transfer ---------------------------------------------------------------------
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""File bytes one batched upload or fetch carries (5.3 MiB as base64, inside the 12 MiB body
limit of ``/v1/workspace``). A file larger than this travels alone, in a batch of one, still
held to ``[workspace_sync] max_file_bytes``."""
MAX_BATCH_BLOBS = 1_000
"""Blobs one batched upload or fetch names."""


def batches(
    items: Sequence[tuple[str, int]],
    max_bytes: int = MAX_BATCH_BYTES,
    max_count: int = MAX_BATCH_BLOBS,
) -> list[list[str]]:
    """``(key, size)`` items grouped, in their order, into batches of at most ``max_count``
    items and ``max_bytes`` together; an item larger than ``max_bytes`` is a batch alone."""
    out: list[list[str]] = []
    batch: list[str] = []
    total = 0
    for key, size in items:
        if batch and (total + size > max_bytes or len(batch) >= max_count):
            out.append(batch)
            batch, total = [], 0
        batch.append(key)
        total += size
    if batch:
        out.append(batch)
    return out


@dataclass(frozen=True)
class BlobBatch:
    """What a batched fetch of blobs found: the bytes of the first hashes asked that fit one
    batch (in the order asked), the hashes asked after them (ask again), and the hashes the
    agent holds no blob for (then nothing is answered)."""

    found: dict[str, bytes]
    left: list[str]
    unknown: list[str]


def fetch_plan(
    hashes: Sequence[str], sizes: Mapping[str, int], max_bytes: int
) -> tuple[list[str], list[str], list[str]]:
    """Of the ``hashes`` asked (``sizes``: those held, by hash), ``(take, left, unknown)``:
    the first that fit one batch of ``max_bytes``, the ones after them, and those not held
    (when any is unknown nothing is taken: the asker's manifest is out of date)."""
    unknown = [h for h in hashes if h not in sizes]
    if unknown or not hashes:
        return [], [], unknown
    take, *rest = batches([(h, sizes[h]) for h in hashes], max_bytes, max_count=len(hashes))
    return take, [h for batch in rest for h in batch], []
