"""Memory search: what is indexed, ranking, incremental reindexing, hostile queries, recovery."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.exceptions import ConfigError
from mcos.runtime.memory import (
    MAX_CHUNK,
    Hit,
    MemoryIndex,
    ReindexStats,
    chunk_markdown,
    fts_query,
)

OLD = 1_600_000_000_000_000_000
"""An mtime (2020) far from now, so a test can put a file's stat back exactly."""

MEMORY = """\
# Memory

## People
Alice runs the billing team.

## Infrastructure
The staging cluster lives in Frankfurt.
We deployed the new gateway on Tuesday.
"""

LOG = """\
# 2024-05-01

- 09:00:00 Started the day.
- 09:15:00 Reviewed the invoice backlog.
- 10:30:00 Talked with Bob about the zebrafish project.
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "memory").mkdir(parents=True)
    (root / "MEMORY.md").write_text(MEMORY)
    (root / "memory" / "2024-05-01.md").write_text(LOG)
    return root


@pytest.fixture
def index(workspace: Path) -> Iterator[MemoryIndex]:
    with MemoryIndex(workspace) as idx:
        yield idx


def paths(hits: list[Hit]) -> list[str]:
    return [h.path for h in hits]


class TestSearch:
    """What a search finds, where it says it is, and in which order."""

    def test_word_in_memory_file(self, index: MemoryIndex) -> None:
        """A word in MEMORY.md is found with its file and its own line."""
        hits = index.search("Frankfurt")
        assert [(h.path, h.line) for h in hits] == [("MEMORY.md", 7)]
        assert "[Frankfurt]" in hits[0].snippet

    def test_word_in_daily_log(self, index: MemoryIndex) -> None:
        """A log entry is found under memory/ with the line of that entry."""
        hits = index.search("zebrafish")
        assert [(h.path, h.line) for h in hits] == [("memory/2024-05-01.md", 5)]
        assert "[zebrafish]" in hits[0].snippet

    def test_stemming(self, index: MemoryIndex) -> None:
        """Stemming (porter): "deploys" finds "deployed"."""
        hits = index.search("deploys")
        assert paths(hits) == ["MEMORY.md"]
        assert "[deployed]" in hits[0].snippet

    def test_any_word_matches(self, index: MemoryIndex) -> None:
        """Words are OR-ed: a model's wordy question still finds the one word that matters."""
        assert set(paths(index.search("what do we know about zebrafish or Frankfurt?"))) == {
            "MEMORY.md",
            "memory/2024-05-01.md",
        }

    def test_bm25_ranks_frequent_mentions_first(self, workspace: Path, index: MemoryIndex) -> None:
        """The file that talks about a term most ranks first, and scores are best-first."""
        (workspace / "A.md").write_text("Some notes. The kubernetes cluster is fine.\n")
        (workspace / "B.md").write_text(
            "Kubernetes upgrade: kubernetes nodes, kubernetes pods, kubernetes again.\n"
        )
        hits = index.search("kubernetes")
        assert paths(hits) == ["B.md", "A.md"]
        assert hits[0].score > hits[1].score

    def test_limit(self, workspace: Path, index: MemoryIndex) -> None:
        """At most ``limit`` hits come back; a limit of zero gives none."""
        for i in range(12):
            (workspace / f"N{i}.md").write_text(f"note {i} about penguins\n")
        assert len(index.search("penguins")) == 8
        assert len(index.search("penguins", limit=3)) == 3
        assert index.search("penguins", limit=0) == []

    def test_no_auto_reindex(self, workspace: Path) -> None:
        """With auto_reindex off, a search sees only what the last reindex saw."""
        with MemoryIndex(workspace, auto_reindex=False) as idx:
            assert idx.search("Frankfurt") == []
            idx.reindex()
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]

    def test_missing_workspace_is_a_config_error(self, tmp_path: Path) -> None:
        """A workspace folder that does not exist is refused, naming the folder."""
        with pytest.raises(ConfigError, match="does not exist"):
            MemoryIndex(tmp_path / "nope")


class TestWhatIsIndexed:
    """Only the agent's markdown is searched: no frontmatter, no BOOTSTRAP.md, no hidden files."""

    def test_frontmatter_not_indexed(self, workspace: Path, index: MemoryIndex) -> None:
        """Frontmatter is metadata; the body below it keeps its real line numbers."""
        (workspace / "USER.md").write_text("---\ntitle: platypus\n---\n\nLikes the platypus.\n")
        hits = index.search("platypus")
        assert [(h.path, h.line) for h in hits] == [("USER.md", 5)]
        assert "title" not in hits[0].snippet

    def test_bootstrap_not_indexed(self, workspace: Path, index: MemoryIndex) -> None:
        """BOOTSTRAP.md is OpenClaw's first-run script, not memory."""
        (workspace / "BOOTSTRAP.md").write_text("Say hello to the axolotl.\n")
        assert index.search("axolotl") == []

    def test_hidden_and_other_folders_not_indexed(
        self, workspace: Path, index: MemoryIndex
    ) -> None:
        """Hidden files and folders and other subfolders are not memory."""
        (workspace / ".draft.md").write_text("narwhal\n")
        (workspace / ".git").mkdir()
        (workspace / ".git" / "x.md").write_text("narwhal\n")
        (workspace / "notes").mkdir()
        (workspace / "notes" / "x.md").write_text("narwhal\n")
        assert index.search("narwhal") == []

    def test_invalid_utf8_is_read_with_replacement(
        self, workspace: Path, index: MemoryIndex
    ) -> None:
        """A file with broken bytes is still indexed."""
        (workspace / "TOOLS.md").write_bytes(b"caf\xe9 \xff\xfe wombat\n")
        assert paths(index.search("wombat")) == ["TOOLS.md"]


class TestIncremental:
    """Reindexing does only the work the changes need, and the index follows the files."""

    def test_second_reindex_changes_nothing(self, index: MemoryIndex) -> None:
        """A reindex right after another finds every file unchanged."""
        first = index.reindex()
        assert first == ReindexStats(files_added=2, chunks=first.chunks)
        assert first.chunks >= 2
        assert index.reindex() == ReindexStats(files_unchanged=2)

    def test_touch_without_change(self, workspace: Path, index: MemoryIndex) -> None:
        """A new mtime with the same content is unchanged after the hash check."""
        index.reindex()
        os.utime(workspace / "MEMORY.md", ns=(OLD, OLD))
        assert index.reindex() == ReindexStats(files_unchanged=2)
        assert index.reindex() == ReindexStats(files_unchanged=2)

    def test_same_size_and_mtime_is_not_read(self, workspace: Path, index: MemoryIndex) -> None:
        """The cheap check trusts size and mtime: a file whose stat is the same is not reread."""
        path = workspace / "MEMORY.md"
        os.utime(path, ns=(OLD, OLD))
        index.reindex()
        path.write_text(MEMORY.replace("Frankfurt", "Amsterdam"))
        os.utime(path, ns=(OLD, OLD))
        assert index.reindex() == ReindexStats(files_unchanged=2)
        assert paths(index.search("Frankfurt")) == ["MEMORY.md"]

    def test_append_to_daily_log(self, workspace: Path, index: MemoryIndex) -> None:
        """An appended entry updates the log and is found at its line."""
        index.reindex()
        with (workspace / "memory" / "2024-05-01.md").open("a") as f:
            f.write("- 11:00:00 Ordered a new espresso machine.\n")
        stats = index.reindex()
        assert (stats.files_updated, stats.files_unchanged) == (1, 1)
        hits = index.search("espresso")
        assert [(h.path, h.line) for h in hits] == [("memory/2024-05-01.md", 6)]

    def test_new_log_file(self, workspace: Path, index: MemoryIndex) -> None:
        """A new day's log is added."""
        index.reindex()
        (workspace / "memory" / "2024-05-02.md").write_text("- 08:00:00 Met the capybara.\n")
        assert index.reindex().files_added == 1
        assert paths(index.search("capybara")) == ["memory/2024-05-02.md"]

    def test_rewritten_file_loses_old_words(self, workspace: Path, index: MemoryIndex) -> None:
        """A changed file's old chunks are replaced, not kept beside the new ones."""
        index.reindex()
        (workspace / "MEMORY.md").write_text("The staging cluster moved to Dublin.\n")
        assert index.reindex().files_updated == 1
        assert index.search("Frankfurt") == []
        assert paths(index.search("Dublin")) == ["MEMORY.md"]

    def test_deleted_file(self, workspace: Path, index: MemoryIndex) -> None:
        """A deleted file's hits disappear."""
        assert index.search("zebrafish")
        (workspace / "memory" / "2024-05-01.md").unlink()
        assert index.reindex() == ReindexStats(files_removed=1, files_unchanged=1)
        assert index.search("zebrafish") == []

    def test_index_survives_reopening(self, workspace: Path) -> None:
        """The index is kept on disk: a new instance finds everything unchanged."""
        with MemoryIndex(workspace) as idx:
            idx.reindex()
        assert (workspace / ".mcos" / "memory.db").is_file()
        with MemoryIndex(workspace) as idx:
            assert idx.reindex() == ReindexStats(files_unchanged=2)
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]

    def test_opened_on_first_use(self, workspace: Path) -> None:
        """An agent starting creates no index (it is healthy sooner); the first search does,
        and closing an index never used writes nothing."""
        db = workspace / ".mcos" / "memory.db"
        with MemoryIndex(workspace):
            pass
        assert not db.exists()
        with MemoryIndex(workspace) as idx:
            assert not db.exists()
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]
            assert db.is_file()

    def test_index_folder_not_indexed(self, workspace: Path, index: MemoryIndex) -> None:
        """The index's own folder (.mcos) is hidden and never indexed."""
        index.reindex()
        assert not {f.name for f in (workspace / ".mcos").iterdir()} & {"MEMORY.md"}
        assert index.reindex().files_unchanged == 2


class TestHostileQueries:
    """Whatever a model writes as a query, search answers and never raises."""

    @pytest.mark.parametrize(
        "query",
        [
            '"',
            '"unterminated',
            "AND OR NOT",
            "NOT",
            "*",
            "zebra*",
            "(",
            "())",
            "col:x",
            "text:zebrafish",
            "NEAR(a b, 3)",
            "^start",
            "a + b - c",
            "'; DROP TABLE files; --",
            "",
            "   ",
            "?!.,;:",
            "emoji 🦓 ünïcödé 日本語",
            "word " * 5_000,
            " ".join(f"w{i}" for i in range(2_000)),
        ],
    )
    def test_never_raises(self, index: MemoryIndex, query: str) -> None:
        """The query becomes plain words; operators and syntax mean nothing."""
        assert isinstance(index.search(query), list)

    def test_operators_are_words(self, workspace: Path, index: MemoryIndex) -> None:
        """FTS5 keywords and column filters are searched as ordinary words."""
        (workspace / "X.md").write_text("Either this OR that, NOT both.\n")
        assert paths(index.search("OR")) == ["X.md"]
        assert paths(index.search("text:zebrafish")) == ["memory/2024-05-01.md"]

    def test_punctuation_only_gives_nothing(self, index: MemoryIndex) -> None:
        """A query without words has no hits."""
        assert index.search("") == []
        assert index.search('"*()"') == []

    def test_fts_query(self) -> None:
        """Each distinct word quoted, case-folded, joined with OR."""
        assert fts_query('Deploy "prod" AND deploy*') == '"deploy" OR "prod" OR "and"'
        assert fts_query(" ?! ") is None


class TestRecovery:
    """The index is derived data: an unusable index file is rebuilt, not reported."""

    def test_garbage_file_is_rebuilt(self, workspace: Path) -> None:
        """A file that is not SQLite is replaced by a fresh index."""
        db = workspace / ".mcos" / "memory.db"
        db.parent.mkdir()
        db.write_bytes(b"this is not a database\n" * 200)
        with MemoryIndex(workspace) as idx:
            assert paths(idx.search("zebrafish")) == ["memory/2024-05-01.md"]

    def test_other_schema_is_rebuilt(self, workspace: Path, tmp_path: Path) -> None:
        """An older or foreign SQLite database at the index path is rebuilt."""
        db = tmp_path / "old.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE chunks (x)")
        conn.execute("PRAGMA user_version = 0")
        conn.commit()
        conn.close()
        with MemoryIndex(workspace, db) as idx:
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]

    def test_newer_version_is_rebuilt(self, workspace: Path, tmp_path: Path) -> None:
        """An index of another schema version is rebuilt too."""
        db = tmp_path / "v9.db"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 9")
        conn.close()
        with MemoryIndex(workspace, db) as idx:
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]

    def test_custom_path_folder_is_created(self, workspace: Path, tmp_path: Path) -> None:
        """An index path in a folder that does not exist yet works."""
        with MemoryIndex(workspace, tmp_path / "a" / "b" / "m.db") as idx:
            assert paths(idx.search("Frankfurt")) == ["MEMORY.md"]

    def test_corruption_found_later_is_rebuilt(
        self, index: MemoryIndex, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A damaged index reported in the middle of a search is rebuilt, and the search retried."""
        real = MemoryIndex._search
        calls: list[str] = []

        def damaged_once(self: MemoryIndex, match: str, limit: int) -> list[Hit]:
            calls.append(match)
            if len(calls) == 1:
                error = sqlite3.DatabaseError("database disk image is malformed")
                error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
                raise error
            return real(self, match, limit)

        monkeypatch.setattr(MemoryIndex, "_search", damaged_once)
        assert paths(index.search("Frankfurt")) == ["MEMORY.md"]
        assert len(calls) == 2

    def test_busy_is_not_corruption(
        self, index: MemoryIndex, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Other SQLite errors (a lock held too long) are raised, and the index is kept."""

        def locked(self: MemoryIndex, match: str, limit: int) -> list[Hit]:
            raise sqlite3.OperationalError("database is locked")

        index.reindex()
        monkeypatch.setattr(MemoryIndex, "_search", locked)
        with pytest.raises(sqlite3.OperationalError):
            index.search("Frankfurt")
        monkeypatch.undo()
        assert index.reindex() == ReindexStats(files_unchanged=2)

    def test_concurrent_instances(self, workspace: Path) -> None:
        """Two instances (as two processes would) share one index file without errors."""
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                with MemoryIndex(workspace) as idx:
                    for i in range(10):
                        (workspace / "memory" / f"t{n}-{i}.md").write_text(f"- 10:00:00 yak{n}\n")
                        idx.search(f"yak{n}")
            except BaseException as e:  # reported by the assert below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with MemoryIndex(workspace) as idx:
            assert len(idx.search("yak0 yak1 yak2", limit=100)) == 30


class TestChunking:
    """Files are cut where a reader would cut them, with true line numbers."""

    def test_sections_start_chunks(self) -> None:
        """A heading starts a chunk; the paragraphs under it stay together."""
        chunks = chunk_markdown("# A\none\n\ntwo\n\n# B\nthree\n")
        assert [(c.line, c.text) for c in chunks] == [(1, "# A\none\n\ntwo"), (6, "# B\nthree")]

    def test_log_entries_grouped(self) -> None:
        """Daily-log entries are grouped a few per chunk."""
        text = "".join(f"- 09:{i:02d}:00 entry {i}\n" for i in range(12))
        chunks = chunk_markdown(text)
        assert [c.line for c in chunks] == [1, 6, 11]
        assert chunks[0].text.count("\n") == 4

    def test_size_cap(self) -> None:
        """No chunk is over the cap, whether paragraphs, long lines or one huge word."""
        para = "word " * 100
        text = "\n\n".join([para] * 40) + "\n\n" + "x" * 5_000 + "\n" + "long " * 2_000
        chunks = chunk_markdown(text)
        assert all(len(c.text) <= MAX_CHUNK for c in chunks)
        assert sum(c.text.count("word") for c in chunks) == 4_000
        assert sum(c.text.count("x") for c in chunks) == 5_000

    def test_frontmatter_offset_and_crlf(self) -> None:
        """Frontmatter is dropped, CRLF files keep their line numbers."""
        chunks = chunk_markdown("---\r\na: b\r\n---\r\n\r\nhello\r\n")
        assert [(c.line, c.text) for c in chunks] == [(5, "hello")]

    def test_fenced_code_stays_whole(self) -> None:
        """A code block's comment lines are not headings and its blank lines do not split it."""
        chunks = chunk_markdown("```\n# not a heading\n\ncode\n```\n")
        assert [c.line for c in chunks] == [1]


def test_performance_sanity(tmp_path: Path) -> None:
    """A large workspace (200 files x 50 paragraphs) indexes, rechecks and searches.

    No timing assert; the whole test takes about 0.1 s here, so the load is in the unit tier.
    """
    root = tmp_path / "big"
    root.mkdir()
    files, paragraphs = 200, 50
    for f in range(files):
        body = "\n\n".join(
            f"Paragraph {p} of file {f}: the service deployed build {f * 100 + p} "
            "after the nightly review, with notes on latency and cost."
            for p in range(paragraphs)
        )
        (root / f"F{f:03d}.md").write_text(f"# File {f}\n\n{body}\n")
    with MemoryIndex(root) as idx:
        stats = idx.reindex()
        assert stats.files_added == files
        assert idx.reindex().files_unchanged == files
        hits = idx.search("deploys latency build 4217")
        assert hits
        assert (hits[0].path, hits[0].line) == ("F042.md", 37)
