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


class TestBatchedBlobs:
    """Many blobs kept in one transaction, and read back a bounded batch at a time."""

    async def test_put_many_says_which_were_new(self, store: Store) -> None:
        """Each blob is kept once; the answer says, in order, which were new (the same blob
        twice in one batch is new once); another agent's blobs are apart."""
        await store.put_workspace_blob("gene", sha(b"held"), b"held")
        blobs = [(sha(c), c) for c in (b"held", b"one", b"two", b"one")]
        assert await store.put_workspace_blobs("gene", blobs) == [False, True, True, False]
        assert await store.put_workspace_blobs("gene", []) == []
        for content in (b"held", b"one", b"two"):
            assert await store.workspace_blob("gene", sha(content)) == content
        assert await store.workspace_blob("jarvis", sha(b"one")) is None

    async def test_a_batch_is_bounded_in_bytes_and_leaves_the_rest(self, store: Store) -> None:
        """The first blobs asked that fit the byte bound come back in the order asked, the rest
        as ``left``; a blob larger than the bound comes alone."""
        sizes = {"a": 40, "b": 50, "c": 20, "d": 150}
        contents = {k: k.encode() * n for k, n in sizes.items()}
        await store.put_workspace_blobs("gene", [(sha(c), c) for c in contents.values()])
        hashes = [sha(contents[k]) for k in ("b", "a", "c", "d")]
        first = await store.workspace_blobs("gene", hashes, 100)
        assert list(first.found) == hashes[:2]  # 50 + 40; with c it would be 110
        assert first.found[hashes[0]] == contents["b"]
        assert (first.left, first.unknown) == (hashes[2:], [])
        second = await store.workspace_blobs("gene", first.left, 100)
        assert (list(second.found), second.left) == ([hashes[2]], [hashes[3]])
        alone = await store.workspace_blobs("gene", second.left, 100)
        assert (alone.found, alone.left) == ({hashes[3]: contents["d"]}, [])

    async def test_unknown_hashes_answer_nothing(self, store: Store) -> None:
        """A hash the agent holds no blob for (another agent's too) comes back as unknown,
        and no bytes with it."""
        await store.put_workspace_blobs("jarvis", [(sha(b"theirs"), b"theirs")])
        await store.put_workspace_blobs("gene", [(sha(b"mine"), b"mine")])
        batch = await store.workspace_blobs("gene", [sha(b"mine"), sha(b"theirs")], 1000)
        assert (batch.found, batch.left, batch.unknown) == ({}, [], [sha(b"theirs")])
