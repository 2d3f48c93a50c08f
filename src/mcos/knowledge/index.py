"""The search index of an agent's knowledge folders: BM25 over chunks, fused with embeddings.

One SQLite file per agent (``<workspace>/.mcos/knowledge.db``, beside the memory index). Like
that index it is derived data, a cache of the folders: never migrated, rebuilt when foreign or
corrupt. The documents live on the agent's host, so the agent indexes them there; Mission
Control (the only process that touches the store) never sees them.

- **Incremental**: a file is read only when its size or mtime changed, and re-chunked only when
  its SHA-256 did; a deleted file's chunks go. A document that cannot be converted is recorded
  with its problem (and retried when it changes), never fatal to the others.
- **Chunks cite**: each chunk keeps its file (``folder/relative/path``), its PDF page, its
  section heading and, for text formats, its line.
- **BM25**: FTS5 ``bm25()`` over section and text (``porter unicode61``).
- **Embeddings** (when an :class:`~mcos.knowledge.embeddings.Embedder` is given): each chunk's
  vector is stored as float32; a query is compared with all of them (exact, brute force: a few
  thousand chunks take milliseconds), and the two rankings are fused by reciprocal rank. If the
  embedder fails, chunks stay unembedded, are retried at the next reindex, and search answers
  from BM25 alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import TracebackType
from typing import Self, TypeVar

import numpy as np

from mcos.domain.fusion import reciprocal_rank_fusion
from mcos.domain.redaction import redact
from mcos.knowledge.convert import SUFFIXES, ConversionError, convert
from mcos.knowledge.embeddings import Embedder, EmbeddingError
from mcos.runtime.memory import chunk_markdown, fts_query
from mcos.sqlite_wal import connect_wal

T = TypeVar("T")

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; an index with any other version is rebuilt."""
MAX_CHUNK = 1_200
"""A chunk's size cap in characters (a page of a PDF is usually two or three chunks)."""
CANDIDATES = 50
"""Chunks each ranking contributes to the fusion."""
MAX_FILE_BYTES = 50_000_000
"""A bigger file is recorded as skipped rather than read into memory."""
EMBED_BATCH = 64
BUSY_TIMEOUT = 5.0
RACY_NS = 2_000_000_000
"""A file modified this recently may change again within the same mtime tick, unseen."""

_SCHEMA = (
    """CREATE TABLE files (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        problem TEXT
    )""",
    """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        page INTEGER,
        section TEXT NOT NULL,
        line INTEGER,
        text TEXT NOT NULL,
        vector BLOB
    )""",
    "CREATE INDEX chunks_path ON chunks (path)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Files written or removed since Mission Control last took their chunks (PostgreSQL fleets).
    "CREATE TABLE unsynced (path TEXT PRIMARY KEY, gen INTEGER NOT NULL)",
    """CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        section, text, content='chunks', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER chunks_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, section, text) VALUES (new.id, new.section, new.text);
    END""",
    """CREATE TRIGGER chunks_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, section, text)
        VALUES ('delete', old.id, old.section, old.text);
    END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_BM25 = """
    SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?
    ORDER BY bm25(chunks_fts, 2.0, 1.0), rowid LIMIT ?
"""
_TEXT_FORMATS = (".md", ".markdown", ".txt")
"""Formats whose chunk lines are lines of the file itself (worth citing)."""


@dataclass(frozen=True)
class KnowledgeHit:
    """One search result: where it is (file, page, section, line) and the chunk's text.

    ``page`` is the 1-based PDF page (None for formats without pages); ``line`` the first line
    of the chunk in a Markdown or text file (None otherwise). ``ranks`` holds the chunk's
    1-based rank in each search that found it (``bm25``, ``vector``).
    """

    path: str
    page: int | None
    section: str
    line: int | None
    text: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def citation(self) -> str:
        """``folder/file.pdf, page 3, "Heading"``: what a reader needs to open the place."""
        parts = [self.path]
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.section:
            shown = self.section if len(self.section) <= 80 else self.section[:79] + "…"
            parts.append(f"section {shown!r}")
        return ", ".join(parts)


@dataclass(frozen=True)
class IndexStats:
    """What one reindex did, by file; ``chunks`` counts the chunks it (re)wrote, ``embedded``
    the chunks it embedded; ``problems`` the files that could not be read, with why."""

    files_added: int = 0
    files_updated: int = 0
    files_removed: int = 0
    files_unchanged: int = 0
    chunks: int = 0
    embedded: int = 0
    problems: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Seen:
    path: str
    absolute: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Stored:
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class _Chunk:
    page: int | None
    section: str
    line: int | None
    text: str


@dataclass
class _Plan:
    """What a reindex will write: converted files (with digest, stat, chunks or problem),
    files whose stat only is refreshed, the paths still present, the unchanged count."""

    files: list[tuple[_Seen, str, int, int, list[_Chunk] | None, str | None]] = field(
        default_factory=list
    )
    refresh: list[tuple[int, int, str]] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    unchanged: int = 0


class _Rebuild(Exception):
    """The index file is foreign, corrupt or of another schema: rebuild it."""


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def chunk_document(path: str, data: bytes) -> list[_Chunk]:
    """The file's chunks, each with its page, section heading and (text formats) line.

    Raises :class:`~mcos.knowledge.convert.ConversionError` if the file cannot be read.
    """
    cite_lines = PurePath(path).suffix.lower() in _TEXT_FORMATS
    out: list[_Chunk] = []
    section = ""
    for part in convert(path, data):
        for chunk in chunk_markdown(part.text, max_chars=MAX_CHUNK):
            first = chunk.text.lstrip().split("\n", 1)[0]
            if first.startswith("#"):
                section = first.lstrip("#").strip()[:200]
            line = chunk.line if cite_lines else None
            out.append(_Chunk(part.page, section, line, chunk.text))
    return out


class KnowledgeIndex:
    """The index of one agent's knowledge folders (``label → folder``).

    Safe to share between threads (calls are serialised). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        folders: dict[str, Path],
        db_path: Path,
        *,
        embedder: Embedder | None = None,
        auto_reindex: bool = True,
        remote: bool = False,
    ) -> None:
        self.folders = dict(folders)
        self.remote = remote
        """BM25 is Mission Control's (PostgreSQL full-text over the synced chunks): see
        :mod:`mcos.knowledge.remote`. The local FTS5 index answers only when it cannot."""
        self.db_path = db_path
        self.embedder = embedder
        self.auto_reindex = auto_reindex
        self.last_embedding_problem: str | None = None
        """Why the last embedding attempt failed (None: it did not, or none was needed)."""
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = self._open()
        if remote:  # once per process: a store restored or replaced meanwhile is refilled
            with self._conn:
                self._conn.execute(
                    "INSERT OR REPLACE INTO unsynced (path, gen) SELECT path, ? FROM files",
                    (time.time_ns(),),
                )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; the index file stays for the next run."""
        with self._lock:
            self._conn.close()

    def reindex(self) -> IndexStats:
        """Bring the index up to date with the folders (then embed what is not yet embedded)."""
        with self._lock:
            return self._guarded(self._reindex)

    def search(self, query: str, k: int = 5) -> list[KnowledgeHit]:
        """The best ``k`` chunks for free-text ``query``: BM25, fused with embeddings when an
        embedder is configured and answers. Never a syntax error."""
        if k <= 0 or not query.strip():
            return []

        def reindexed_search() -> list[KnowledgeHit]:
            if self.auto_reindex:
                self._reindex()
            return self._search(query, k)

        with self._lock:
            return self._guarded(reindexed_search)

    def pending_sync(self) -> list[tuple[str, int, list[KnowledgeHit] | None]]:
        """Files whose chunks Mission Control has not taken yet: path, generation and chunks
        in file order (as hits with score 0; None: the file is gone, forget it)."""
        with self._lock:
            pending = self._conn.execute("SELECT path, gen FROM unsynced ORDER BY path").fetchall()
            out: list[tuple[str, int, list[KnowledgeHit] | None]] = []
            for path, gen in pending:
                known = self._conn.execute("SELECT 1 FROM files WHERE path = ?", (path,))
                if known.fetchone() is None:
                    out.append((path, gen, None))
                    continue
                rows = self._conn.execute(
                    "SELECT page, section, line, text FROM chunks WHERE path = ? ORDER BY id",
                    (path,),
                )
                hits = [KnowledgeHit(path, pg, sec, ln, text, 0.0) for pg, sec, ln, text in rows]
                out.append((path, gen, hits))
            return out

    def synced(self, path: str, gen: int) -> None:
        """Mission Control took ``path``'s chunks of generation ``gen`` (a later write stays)."""
        with self._lock:
            self._conn.execute("DELETE FROM unsynced WHERE path = ? AND gen = ?", (path, gen))

    def fuse(self, query: str, k: int, bm25: list[tuple[str, int]]) -> list[KnowledgeHit]:
        """The best ``k`` chunks from a BM25 ranking made elsewhere (``(path, place in file)``,
        best first), fused with the local embeddings when configured."""
        with self._lock:
            ids: list[int] = []
            for path, seq in bm25:
                row = self._conn.execute(
                    "SELECT id FROM chunks WHERE path = ? ORDER BY id LIMIT 1 OFFSET ?",
                    (path, seq),
                ).fetchone()
                if row is not None:  # else: changed since it was synced; resynced next time
                    ids.append(int(row[0]))
            return self._search(query, k, bm25=ids)

    def problems(self) -> dict[str, str]:
        """Files that could not be indexed, with the reason."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, problem FROM files WHERE problem IS NOT NULL ORDER BY path"
            )
            return dict(rows.fetchall())

    # -- internals ---------------------------------------------------------------------------

    def _guarded(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; if the index turns out to be corrupt, rebuild it and run it again."""
        try:
            return operation()
        except sqlite3.DatabaseError as error:
            if not _is_corrupt(error):
                raise
        self._conn.close()
        self._discard()
        self._conn = self._open()
        return operation()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except _Rebuild:
            pass
        except sqlite3.DatabaseError as error:
            if not _is_corrupt(error):
                raise
        self._discard()
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = connect_wal(self.db_path, BUSY_TIMEOUT, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                if version != 0 or conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                    raise _Rebuild
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if not {"files", "chunks", "chunks_fts", "meta", "unsynced"} <= names:
                raise _Rebuild
        except BaseException:
            conn.close()
            raise
        return conn

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    def _files(self) -> list[_Seen]:
        """Every supported, non-hidden regular file under the folders (symlinks not followed)."""
        found: list[_Seen] = []
        for label, root in sorted(self.folders.items()):
            for absolute in _walk(root):
                try:
                    st = absolute.lstat()
                except OSError:
                    continue  # removed while we looked
                if stat.S_ISREG(st.st_mode):
                    relative = absolute.relative_to(root).as_posix()
                    found.append(_Seen(f"{label}/{relative}", absolute, st.st_size, st.st_mtime_ns))
        return found

    def _stored(self) -> dict[str, _Stored]:
        rows = self._conn.execute("SELECT path, size, mtime_ns, sha256 FROM files")
        return {path: _Stored(size, mtime, digest) for path, size, mtime, digest in rows}

    def _reindex(self) -> IndexStats:
        seen = self._files()
        stored = self._stored()
        unchanged = set(stored) == {s.path for s in seen} and all(
            (s.size, s.mtime_ns) == (stored[s.path].size, stored[s.path].mtime_ns) for s in seen
        )
        stats = IndexStats(files_unchanged=len(seen)) if unchanged else self._write(seen, stored)
        embedded = self._embed_missing()
        if embedded:
            return dataclasses.replace(stats, embedded=embedded)
        return stats

    def _write(self, seen: list[_Seen], stored: dict[str, _Stored]) -> IndexStats:
        """Convert what changed (outside the write lock: PDFs are slow), then write it all."""
        plan = self._plan(seen, stored)
        plans, refresh = plan.files, plan.refresh
        gone = sorted(set(stored) - plan.present)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", refresh)
            written = 0
            for file, digest, size, mtime_ns, chunks, problem in plans:
                conn.execute("DELETE FROM chunks WHERE path = ?", (file.path,))
                conn.executemany(
                    "INSERT INTO chunks (path, page, section, line, text) VALUES (?, ?, ?, ?, ?)",
                    # A secret pasted into a document is neither indexed nor shown.
                    [(file.path, c.page, redact(c.section), c.line, redact(c.text))
                     for c in chunks or ()],
                )  # fmt: skip
                conn.execute(
                    "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, problem) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (file.path, size, mtime_ns, digest, problem),
                )
                written += len(chunks or ())
            for path in gone:
                conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
                conn.execute("DELETE FROM files WHERE path = ?", (path,))
            gen = time.time_ns()
            conn.executemany(
                "INSERT OR REPLACE INTO unsynced (path, gen) VALUES (?, ?)",
                [(p[0].path, gen) for p in plans] + [(path, gen) for path in gone],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return IndexStats(
            files_added=sum(1 for p in plans if p[0].path not in stored),
            files_updated=sum(1 for p in plans if p[0].path in stored),
            files_removed=len(gone),
            files_unchanged=plan.unchanged,
            chunks=written,
            problems={p[0].path: p[5] for p in plans if p[5] is not None},
        )

    def _plan(self, seen: list[_Seen], stored: dict[str, _Stored]) -> _Plan:
        """Read, hash and convert the files whose size or mtime changed."""
        plan = _Plan()
        plans, present, refresh = plan.files, plan.present, plan.refresh
        for file in seen:
            old = stored.get(file.path)
            if old is not None and (old.size, old.mtime_ns) == (file.size, file.mtime_ns):
                present.add(file.path)
                plan.unchanged += 1
                continue
            read = _read(file.absolute)
            if read is None:
                continue  # vanished or unreadable: treated as removed below
            data, size, mtime_ns = read
            present.add(file.path)
            digest = hashlib.sha256(data).hexdigest()
            if time.time_ns() - mtime_ns < RACY_NS:
                mtime_ns = 0  # may change again unseen within this mtime tick: hash next time
            if old is not None and old.sha256 == digest:
                refresh.append((size, mtime_ns, file.path))
                plan.unchanged += 1
                continue
            problem: str | None
            if size > MAX_FILE_BYTES:
                problem = f"skipped: {size} bytes is over the {MAX_FILE_BYTES}-byte limit"
                plans.append((file, digest, size, mtime_ns, None, problem))
                continue
            try:
                chunks: list[_Chunk] | None = chunk_document(file.path, data)
                problem = None
            except ConversionError as error:
                chunks, problem = None, error.problem
            plans.append((file, digest, size, mtime_ns, chunks, problem))
        return plan

    def _embed_missing(self) -> int:
        """Embed the chunks without a vector (all of them after a change of model)."""
        if self.embedder is None:
            return 0
        conn = self._conn
        row = conn.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
        if row is None or row[0] != self.embedder.name:
            with conn:  # vectors of another model are never compared with this one's
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE chunks SET vector = NULL")
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('embedder', ?)",
                    (self.embedder.name,),
                )
        done = 0
        while True:
            rows = conn.execute(
                "SELECT id, section, text FROM chunks WHERE vector IS NULL ORDER BY id LIMIT ?",
                (EMBED_BATCH,),
            ).fetchall()
            if not rows:
                self.last_embedding_problem = None
                return done
            try:
                vectors = self.embedder.embed([_embedded_text(s, t) for _, s, t in rows])
            except EmbeddingError as error:
                self.last_embedding_problem = error.message
                return done
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE chunks SET vector = ? WHERE id = ?",
                    [(v.tobytes(), r[0]) for v, r in zip(vectors, rows, strict=True)],
                )
            done += len(rows)

    def _search(self, query: str, k: int, bm25: list[int] | None = None) -> list[KnowledgeHit]:
        rankings: dict[str, list[int]] = {}
        match = fts_query(query)
        if bm25 is not None:
            rankings["bm25"] = bm25
        elif match is not None:
            rows = self._conn.execute(_BM25, (match, CANDIDATES)).fetchall()
            rankings["bm25"] = [r[0] for r in rows]
        if self.embedder is not None and self.last_embedding_problem is None:
            rankings["vector"] = self._nearest(query)
        fused = reciprocal_rank_fusion(list(rankings.values()))[:k]
        hits: list[KnowledgeHit] = []
        for chunk_id, score in fused:
            path, page, section, line, text = self._conn.execute(
                "SELECT path, page, section, line, text FROM chunks WHERE id = ?", (chunk_id,)
            ).fetchone()
            ranks = {n: r.index(chunk_id) + 1 for n, r in rankings.items() if chunk_id in r}
            hits.append(KnowledgeHit(path, page, section, line, text, score, ranks))
        return hits

    def _nearest(self, query: str) -> list[int]:
        """Chunk ids by cosine similarity to ``query``, best first ([] if the embedder fails)."""
        assert self.embedder is not None
        rows = self._conn.execute(
            "SELECT id, vector FROM chunks WHERE vector IS NOT NULL"
        ).fetchall()
        if not rows:
            return []
        try:
            wanted = self.embedder.embed([query])[0]
        except EmbeddingError as error:
            self.last_embedding_problem = error.message
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        matrix = matrix.reshape(len(rows), -1)
        if matrix.shape[1] != wanted.shape[0]:
            return []  # a model of another width answered: re-embedded at the next reindex
        similarity = matrix @ wanted
        best = np.argsort(-similarity, kind="stable")[:CANDIDATES]
        return [int(rows[i][0]) for i in best]


def _embedded_text(section: str, text: str) -> str:
    """What a chunk is embedded as: its heading gives a page of a long section its context."""
    return f"{section}\n{text}" if section and not text.startswith("#") else text


def _walk(root: Path) -> Iterator[Path]:
    """Supported files under ``root``, hidden files and folders left out, sorted."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and PurePath(name).suffix.lower() in SUFFIXES:
                yield Path(folder) / name


def _read(path: Path) -> tuple[bytes, int, int] | None:
    """A file's bytes with the size and mtime seen *before* reading (so no change is missed)."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            return f.read(), st.st_size, st.st_mtime_ns
    except OSError:
        return None
