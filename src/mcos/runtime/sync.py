"""The workspace follows the agent: pushed to Mission Control after each turn, pulled at start.

The agent process itself pulls, at start, before it reads anything from its workspace — not its
supervisor — because only then is it certain to read the last version anyone may write: the
process runs under the fence its supervisor was just granted, every push of an older instance is
refused from the moment that lease was granted (the commit is checked against the lease row in
one transaction), and the pull is a call of the instance itself (a fenced-out one cannot pull).
It also works the same for an agent started by hand, and needs no supervisor (host) token to
read an agent's files.

A push uploads the blobs Mission Control lacks, in batches of up to 4 MiB of files (a larger
file alone), and commits the manifest (path → sha256) as a new version; nothing is sent when
nothing changed. Files are hashed only when their size or mtime moved. ``.mcos/`` and the
``[workspace_sync] exclude`` patterns are never synced; a file over ``max_file_bytes`` (or past
``max_total_bytes``) is skipped with one warning in the log. A pull fetches the blobs it lacks in
batches too and writes only files whose hash differs, atomically; a local file it would replace
or delete that was never synced is kept in ``.mcos/workspace-sync/kept/`` (see
:func:`mcos.domain.workspace_sync.plan_pull`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pathspec

from mcos.api_workspace import BlobUpload, FileIn, ManifestOut
from mcos.client import AsyncClient, Calls
from mcos.config.models import Fleet, WorkspaceSyncConfig
from mcos.domain.workspace_sync import (
    MAX_BATCH_BLOBS,
    MAX_BATCH_BYTES,
    RESERVED,
    Action,
    Base,
    batches,
    path_problem,
    plan_pull,
)
from mcos.exceptions import Fenced, InvalidRequest, McosError
from mcos.logs import get_logger

log = get_logger("mcos.runtime.sync")

STATE = f"{RESERVED}/workspace_sync.json"
"""The manifest this host last pushed or pulled (its base for the next pull)."""
KEPT = f"{RESERVED}/workspace-sync/kept"
"""Local files a pull replaced or deleted without their being synced first."""
WRITERS = 8
"""Files a pull writes at once: their fsyncs share the file system's journal commits (372
small files: 0.33 s instead of 1.8 s one after another, on the 2-core test machine)."""
CORE = frozenset({"MEMORY.md", "WORKSTATE.md", "SOUL.md", "IDENTITY.md", "USER.md",
                  "AGENTS.md", "TOOLS.md", "GUARDRAILS.md", "HEARTBEAT.md"})  # fmt: skip
"""Kept first when the total is over its cap (then the daily logs, then the rest by size)."""


@dataclass(frozen=True)
class Local:
    """A file of the workspace as a push sends it."""

    sha256: str
    size: int


@dataclass
class Scan:
    """What a push would send, and what it leaves out (with why)."""

    files: dict[str, Local] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rank(path: str, size: int) -> tuple[int, int]:
    """Keep order under the total cap: core files, then daily logs, then small before large."""
    return (0 if path in CORE else 1 if path.startswith("memory/") else 2, size)


def write_atomic(path: Path, content: bytes) -> None:
    """Write through a temporary file in the same folder, then rename over: a reader (or a
    crash) sees the old bytes or the new ones, never half of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class WorkspaceSync:
    """One agent's workspace, kept in step with Mission Control."""

    def __init__(
        self, agent: str, root: Path, config: WorkspaceSyncConfig, client: AsyncClient
    ) -> None:
        self.agent = agent
        self.root = root
        self.config = config
        self.client = client
        self.exclude = pathspec.GitIgnoreSpec.from_lines(config.exclude)
        self.remote: ManifestOut | None = None
        """The latest version as far as this process knows (None: not pulled yet)."""
        self._hashes: dict[str, tuple[int, int, str]] = {}
        """path → (size, mtime_ns, sha256): a file is hashed again only when these move."""
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, fleet: Fleet, agent: str, client: AsyncClient) -> WorkspaceSync | None:
        """The agent's sync, or None when its ``[workspace_sync]`` is off."""
        config = fleet.workspace_sync_for(agent)
        if not config.enabled:
            return None
        return cls(agent, fleet.workspace_path(agent), config, client)

    # --- local files ----------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        """Every regular file under the workspace that is not excluded (symlinks are not
        followed: what they point at belongs to this host)."""
        found = []
        for folder, dirs, files in os.walk(self.root):
            rel = Path(folder).relative_to(self.root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            dirs[:] = sorted(
                d for d in dirs
                if not (prefix == "" and d == RESERVED)
                and not os.path.islink(os.path.join(folder, d))
                and not self.exclude.match_file(prefix + d + "/")
            )  # fmt: skip
            for name in sorted(files):
                path = prefix + name
                full = os.path.join(folder, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                if self.exclude.match_file(path) or path_problem(path) is not None:
                    continue
                found.append(path)
        return found

    def _hash(self, path: str) -> Local | None:
        """The file's hash and size (None: gone), from the cache while it has not moved."""
        full = self.root / path
        try:
            st = full.stat()
        except OSError:
            return None
        cached = self._hashes.get(path)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return Local(cached[2], st.st_size)
        try:
            sha = _sha256(full)
        except OSError:
            return None
        self._hashes[path] = (st.st_size, st.st_mtime_ns, sha)
        return Local(sha, st.st_size)

    def scan(self) -> Scan:
        """What a push sends now: every file not excluded, within the size limits."""
        scan = Scan()
        sized: list[tuple[str, int]] = []
        for path in self._candidates():
            try:
                size = (self.root / path).stat().st_size
            except OSError:
                continue
            if size > self.config.max_file_bytes:
                scan.skipped[path] = (
                    f"{size} bytes, over [workspace_sync] max_file_bytes "
                    f"({self.config.max_file_bytes})"
                )
                continue
            sized.append((path, size))
        total = 0
        for path, size in sorted(sized, key=lambda p: _rank(*p)):
            if total + size > self.config.max_total_bytes:
                scan.skipped[path] = (
                    f"would take the workspace past [workspace_sync] max_total_bytes "
                    f"({self.config.max_total_bytes})"
                )
                continue
            local = self._hash(path)
            if local is not None:
                total += local.size
                scan.files[path] = local
        for path, why in scan.skipped.items():
            if (path, why) not in self._warned:
                self._warned.add((path, why))
                log.warning("workspace file not synced: %s: %s", path, why, agent=self.agent)
        return scan

    # --- this host's base -------------------------------------------------------------------------
    def base(self) -> Base:
        """The manifest this host last pushed or pulled (version 0 when none, or unreadable)."""
        try:
            data = json.loads((self.root / STATE).read_text())
            return Base(int(data["version"]), {str(k): str(v) for k, v in data["files"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Base(0, {})

    def _remember(self, manifest: ManifestOut) -> None:
        self.remote = manifest
        text = json.dumps(
            {"version": manifest.version, "files": {f.path: f.sha256 for f in manifest.files}}
        )
        write_atomic(self.root / STATE, text.encode())

    def _inside(self, path: str) -> bool:
        """Whether writing ``path`` stays in the workspace: no folder on the way, nor the file
        itself, is a symlink (Mission Control checks paths; a pull never trusts blindly)."""
        root = self.root.resolve()
        target = self.root / path
        if target.is_symlink():
            return False
        return target.parent.resolve().is_relative_to(root)

    def _keep(self, path: str, version: int) -> None:
        """Move a local file a pull is about to replace or delete into the kept folder."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.root / KEPT / f"{stamp}-v{version}" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.root / path, target)

    # --- pull and push ----------------------------------------------------------------------------
    async def pull(self) -> dict[str, Action]:
        """Bring the workspace to Mission Control's latest version; what was done per file."""
        manifest = await self.client.do(Calls.workspace())
        base = self.base()
        remote = {f.path: f.sha256 for f in manifest.files}
        local = {}
        for path in set(remote) | set(base.files):
            if path_problem(path) is None and (found := self._hash(path)) is not None:
                local[path] = found.sha256
        plan = plan_pull(local, base, manifest.version, remote)
        wanted: dict[str, list[str]] = {}  # sha256 → the paths to write it to
        for path, action in sorted(plan.items()):
            if path_problem(path) is not None or not self._inside(path):
                log.warning("workspace file not pulled: %s is not a plain path inside the "
                            "workspace", path, agent=self.agent)  # fmt: skip
                continue
            if action in (Action.WRITE_KEEP_LOCAL, Action.DELETE):
                self._keep(path, manifest.version)
            if action is Action.DELETE:
                (self.root / path).unlink(missing_ok=True)
            elif action in (Action.WRITE, Action.WRITE_KEEP_LOCAL):
                wanted.setdefault(remote[path], []).append(path)
        sizes = {f.sha256: f.size for f in manifest.files}
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="workspace-pull") as pool:
            for group in batches([(sha, sizes[sha]) for sha in wanted]):
                await self._fetch(group, wanted, pool)
        if manifest.version >= base.version:
            self._remember(manifest)
        else:
            self.remote = manifest
        if plan:
            done = ", ".join(f"{p} ({a.value})" for p, a in sorted(plan.items()))
            log.info("workspace pulled (version %d): %s", manifest.version, done, agent=self.agent)
        return plan

    async def push(self) -> ManifestOut | None:
        """Send what changed since the last version (None: nothing to send). Raises
        :class:`~mcos.exceptions.Fenced` when another instance runs the agent now."""
        if self.remote is None:
            await self.pull()  # never overwrite a version this process has not seen
            assert self.remote is not None
        scan = self.scan()
        known = {f.path: f.sha256 for f in self.remote.files}
        if known == {p: f.sha256 for p, f in scan.files.items()}:
            return None
        held = set(known.values())
        batch: list[BlobUpload] = []
        size = 0
        for path, local in sorted(scan.files.items()):
            if local.sha256 in held:
                continue
            try:
                content = (self.root / path).read_bytes()
            except OSError:
                del scan.files[path]  # gone since the scan: the manifest goes without it
                continue
            sha = hashlib.sha256(content).hexdigest()
            if sha != local.sha256:  # written since the scan: send what was read
                self._hashes.pop(path, None)
                if len(content) > self.config.max_file_bytes:
                    del scan.files[path]
                    continue
                scan.files[path] = Local(sha, len(content))
            if sha in held:
                continue
            if batch and (size + len(content) > MAX_BATCH_BYTES or len(batch) >= MAX_BATCH_BLOBS):
                await self.client.do(Calls.put_workspace_blobs(batch))
                batch, size = [], 0
            batch.append(BlobUpload.of(sha, content, path))
            size += len(content)
            held.add(sha)
        if batch:
            await self.client.do(Calls.put_workspace_blobs(batch))
        files = [
            FileIn(path=p, sha256=f.sha256, size=f.size) for p, f in sorted(scan.files.items())
        ]
        manifest = await self.client.do(Calls.commit_workspace(files))
        self._remember(manifest)
        return manifest

    async def _fetch(
        self, hashes: list[str], wanted: dict[str, list[str]], pool: ThreadPoolExecutor
    ) -> None:
        """Download ``hashes`` (one batch, asking again for what an answer left) and write each
        to its paths, its hash checked first, several files at once on ``pool``."""
        while hashes:
            writes: list[tuple[Path, bytes]] = []
            answer = await self.client.do(Calls.fetch_workspace_blobs(hashes))
            if not answer.blobs or len(answer.left) >= len(hashes):
                msg = f"Mission Control answered none of the {len(hashes)} workspace blobs asked"
                raise InvalidRequest(msg, asked=len(hashes))
            for blob in answer.blobs:
                paths = wanted.get(blob.sha256)
                if paths is None:
                    msg = f"Mission Control answered workspace blob {blob.sha256}, never asked"
                    raise InvalidRequest(msg, sha256=blob.sha256)
                content = blob.data()
                if hashlib.sha256(content).hexdigest() != blob.sha256:
                    msg = f"workspace blob of {paths[0]} does not match its hash {blob.sha256}"
                    raise InvalidRequest(msg, path=paths[0])
                writes.extend((self.root / path, content) for path in paths)
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(pool, write_atomic, full, content)
                                   for full, content in writes))  # fmt: skip
            hashes = answer.left

    async def push_quietly(self) -> None:
        """A push after a turn: a failure is logged and left to the next turn's push; being
        fenced out is not swallowed (the agent stops)."""
        try:
            await self.push()
        except Fenced:
            raise
        except (McosError, OSError) as e:
            message = e.message if isinstance(e, McosError) else str(e)
            log.warning("workspace push failed; the next turn tries again: %s", message,
                        agent=self.agent)  # fmt: skip


async def start_sync(fleet: Fleet, agent: str, client: AsyncClient) -> WorkspaceSync | None:
    """The agent's sync, its workspace pulled (None: sync is off). A pull that fails — Mission
    Control unreachable, or this instance already fenced out — is logged and the agent starts
    with the files it has: its first push pulls again before sending anything (and a fenced-out
    instance is stopped by its first call)."""
    sync = WorkspaceSync.open(fleet, agent, client)
    if sync is None:
        return None
    try:
        await sync.pull()
    except (McosError, OSError) as e:
        message = e.message if isinstance(e, McosError) else str(e)
        log.warning("workspace pull failed: %s", message, agent=agent)
    return sync
