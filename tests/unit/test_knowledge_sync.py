"""The agent's side of knowledge on PostgreSQL fleets: which files wait to be synced, how a
file's chunks are batched, and the local index answering when Mission Control cannot."""

from __future__ import annotations

from pathlib import Path

from mcos.client import AsyncClient
from mcos.knowledge import remote
from mcos.knowledge.index import KnowledgeHit, KnowledgeIndex
from tests.api.conftest import free_port


def test_written_and_removed_files_wait_until_taken(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("# A\n\nalpha text\n")
    (kb / "b.md").write_text("# B\n\nbeta text\n")
    with KnowledgeIndex({"kb": kb}, tmp_path / "k.db", remote=True) as index:
        index.reindex()
        pending = index.pending_sync()
        assert [(p, [c.text for c in chunks or []]) for p, _, chunks in pending] == [
            ("kb/a.md", ["# A\n\nalpha text"]),
            ("kb/b.md", ["# B\n\nbeta text"]),
        ]
        for path, gen, _ in pending:
            index.synced(path, gen)
        assert index.pending_sync() == []

        (kb / "a.md").write_text("# A\n\nalpha changed\n")
        (kb / "b.md").unlink()
        index.reindex()
        again = {p: (gen, chunks) for p, gen, chunks in index.pending_sync()}
        assert again["kb/b.md"][1] is None  # gone: to be deleted in Mission Control
        assert [c.text for c in again["kb/a.md"][1] or []] == ["# A\n\nalpha changed"]
        index.synced("kb/a.md", again["kb/a.md"][0] - 1)  # an older generation clears nothing
        assert {p for p, _, _ in index.pending_sync()} == {"kb/a.md", "kb/b.md"}
        for path, gen, _ in index.pending_sync():
            index.synced(path, gen)
    # A new process sends every file once more (the store may have been restored meanwhile).
    with KnowledgeIndex({"kb": kb}, tmp_path / "k.db", remote=True) as index:
        assert [p for p, _, _ in index.pending_sync()] == ["kb/a.md"]
        # A ranking made elsewhere (path, place in file) maps onto the local chunks.
        hits = index.fuse("alpha", 3, [("kb/a.md", 0), ("kb/b.md", 0), ("kb/a.md", 7)])
        assert [h.citation for h in hits] == ["kb/a.md, line 1, section 'A'"]


def test_batches_stay_under_the_body_limit() -> None:
    chunks = [KnowledgeHit("kb/x.md", None, "S", i + 1, "é" * 1_200, 0.0) for i in range(100)]
    batches = remote._batches(chunks)
    assert sum(len(b) for b in batches) == 100
    assert [c.line for b in batches for c in b] == list(range(1, 101))
    assert all(sum(len(c.text) + len(c.section) for c in b) <= remote.BATCH_CHARS for b in batches)
    assert len(batches) == 4


async def test_the_local_index_answers_when_mission_control_cannot(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("# Leave\n\nTwenty days of paid leave.\n")
    with KnowledgeIndex({"kb": kb}, tmp_path / "k.db", remote=True) as index:
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", "t", timeout=2) as client:
            hits = await remote.search(index, client, "paid leave", 3)
        assert [h.path for h in hits] == ["kb/a.md"]
        assert [p for p, _, _ in index.pending_sync()] == ["kb/a.md"]  # sent next time
