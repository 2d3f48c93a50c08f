"""Workspace versions on both stores: content-addressed blobs, a manifest per agent, a commit
fenced against the lease in its own transaction."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from mcos.domain.workspace_sync import WorkspaceFile
from mcos.exceptions import Fenced, InvalidRequest
from mcos.store import Store

TTL = timedelta(seconds=15)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def put(store: Store, agent: str, files: dict[str, bytes]) -> list[WorkspaceFile]:
    for content in files.values():
        await store.put_workspace_blob(agent, sha(content), content)
    return [WorkspaceFile(p, sha(c), len(c)) for p, c in files.items()]


class TestWorkspaceVersions:
    """Commit, read back, retry, sweep."""

    async def test_nothing_pushed_is_version_zero(self, store: Store) -> None:
        """An agent that never pushed has version 0 and no files."""
        empty = await store.workspace_manifest("gene")
        assert (empty.version, empty.files, empty.fence) == (0, (), None)

    async def test_commit_read_back_retry_and_sweep(self, store: Store) -> None:
        """Each new manifest is a version; the same one again is not; a blob no manifest
        names is swept; a blob uploaded twice is kept once; agents' blobs are apart."""
        files = await put(store, "gene", {"MEMORY.md": b"m1", "memory/d.md": b"log"})
        assert await store.put_workspace_blob("gene", sha(b"m1"), b"m1") is False
        first = await store.commit_workspace("gene", None, files)
        assert (first.version, first.bytes) == (1, 5)
        assert first.updated_at is not None
        again = await store.commit_workspace("gene", None, list(reversed(files)))
        assert again.version == 1
        read = await store.workspace_manifest("gene")
        assert read.hashes() == {"MEMORY.md": sha(b"m1"), "memory/d.md": sha(b"log")}
        assert await store.workspace_blob("gene", sha(b"log")) == b"log"
        assert await store.workspace_blob("jarvis", sha(b"log")) is None
        second = await store.commit_workspace(
            "gene", None, await put(store, "gene", {"MEMORY.md": b"m2"})
        )
        assert second.version == 2
        assert await store.workspace_blob("gene", sha(b"log")) is None  # swept
        assert await store.workspace_blob("gene", sha(b"m2")) == b"m2"

    async def test_a_manifest_naming_a_missing_blob_is_refused(self, store: Store) -> None:
        """Nothing is committed when a file's blob was never uploaded; the error names it."""
        files = [WorkspaceFile("notes.md", sha(b"never sent"), 10)]
        with pytest.raises(InvalidRequest, match=r"files\[0\] \(notes.md\)"):
            await store.commit_workspace("gene", None, files)
        assert (await store.workspace_manifest("gene")).version == 0


class TestFencedPushes:
    """A push carries the instance's fence; the lease decides."""

    async def test_an_older_fence_never_overwrites(self, store: Store) -> None:
        """After a takeover, the old instance's commit is refused and the version stays."""
        old = await store.acquire_lease("gene", "sup-a", "mini", TTL)
        await store.commit_workspace("gene", old.fence, await put(store, "gene", {"M": b"a"}))
        await store.release_lease("gene", "sup-a", old.fence)
        new = await store.acquire_lease("gene", "sup-b", "vps", TTL)
        late = await put(store, "gene", {"M": b"late"})
        with pytest.raises(Fenced, match="stale") as refused:
            await store.commit_workspace("gene", old.fence, late)
        assert refused.value.details == {"presented": old.fence, "current": new.fence}
        with pytest.raises(Fenced, match="without a fencing token"):
            await store.commit_workspace("gene", None, late)
        kept = await store.workspace_manifest("gene")
        assert (kept.version, kept.fence, kept.hashes()) == (1, old.fence, {"M": sha(b"a")})
        done = await store.commit_workspace("gene", new.fence, late)
        assert (done.version, done.fence) == (2, new.fence)
