"""An agent's memory search: BM25-ranked full-text search over its workspace's markdown files.

The index is SQLite FTS5 (``porter unicode61``, so "deploys" finds "deployed") over the
top-level ``*.md`` files and the daily logs ``memory/*.md``, cut into chunks of at most
~1,500 characters. It is derived data, a cache of those files: it is never migrated or
repaired — a file that is not a SQLite database, is corrupt, or has another schema is deleted
and rebuilt from the workspace. Reindexing is incremental (size and mtime first, then a
content hash), so a search can reindex first at the cost of a few ``stat`` calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from mcos.domain.redaction import redact
from mcos.exceptions import ConfigError
from mcos.runtime.workspace import NOT_LOADED, strip_frontmatter
from mcos.sqlite_wal import connect_wal

T = TypeVar("T")

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; an index with any other version is rebuilt."""
MAX_CHUNK = 1_500
"""A chunk's size cap in characters: big enough for a section, small enough to rank well."""
ENTRIES_PER_CHUNK = 5
"""Daily-log entries (``- HH:MM:SS text``) per chunk, so a hit points near its entry."""
SNIPPET_TOKENS = 24
MAX_QUERY_TERMS = 32
"""Terms kept from a query: an OR of hundreds of terms is slow and hits FTS5's depth limit."""
BUSY_TIMEOUT = 5.0
"""Seconds to wait for another process's write transaction before giving up."""
RACY_NS = 2_000_000_000
"""A file modified this recently may change again within the same mtime tick, unseen."""

_SCHEMA = (
    """CREATE TABLE files (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL
    )""",
    """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        line INTEGER NOT NULL,
        text TEXT NOT NULL
    )""",
    "CREATE INDEX chunks_path ON chunks (path)",
    """CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        text, content='chunks', content_rowid='id', tokenize='porter unicode61'
    )""",
    """CREATE TRIGGER chunks_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER chunks_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_SEARCH = """
    SELECT c.path, c.line,
           snippet(chunks_fts, 0, '[', ']', '…', ?),
           highlight(chunks_fts, 0, char(2), char(3)),
           bm25(chunks_fts)
    FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid
    WHERE chunks_fts MATCH ?
    ORDER BY bm25(chunks_fts), c.path, c.line
    LIMIT ?
"""
_MATCHED = re.compile("\x02(.*?)\x03")

_TERM = re.compile(r"\w+")
_HEADING = re.compile(r"^#{1,6}(?:\s|$)")
_ENTRY = re.compile(r"^[-*+]\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s|$)")
_FENCE = re.compile(r"^\s{0,3}(?:```|~~~)")


@dataclass(frozen=True)
class Hit:
    """One search result: where it is, a snippet with the match in ``[`` ``]``, and its score.

    ``line`` is the 1-based line in the file where most query words meet. ``score`` is BM25
    negated, so higher is better; it compares hits of one search, not across searches.
    """

    path: str
    line: int
    snippet: str
    score: float


@dataclass(frozen=True)
class ReindexStats:
    """What one reindex did, by file; ``chunks`` counts the chunks it (re)wrote."""

    files_added: int = 0
    files_updated: int = 0
    files_removed: int = 0
    files_unchanged: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class Chunk:
    """A piece of a file as indexed: its first line (1-based) and its text."""

    line: int
    text: str


@dataclass(frozen=True)
class _Block:
    """Consecutive lines ``[start, end)`` that belong together: heading, paragraph, log entry."""

    start: int
    end: int
    kind: str


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: each word quoted, joined with OR; None if no words.

    Model-written queries contain quotes, ``AND``, ``*``, ``col:x``…; quoting every word as an
    FTS5 string makes them plain words, so a query can never be an FTS5 syntax error.
    """
    terms = list(dict.fromkeys(t.casefold() for t in _TERM.findall(text)))[:MAX_QUERY_TERMS]
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def chunk_markdown(text: str, *, max_chars: int = MAX_CHUNK) -> list[Chunk]:
    """``text`` cut into chunks for the index, with line numbers of the original file.

    Frontmatter is metadata and is left out. A heading starts a new chunk; paragraphs of a
    section share a chunk up to ``max_chars``; daily-log entries are grouped a few at a time.
    A block too long for one chunk is cut between lines, a line too long between words.
    """
    text = text.replace("\r\n", "\n")
    body = strip_frontmatter(text)
    offset = text[: len(text) - len(body)].count("\n")
    lines = body.split("\n")
    chunks: list[Chunk] = []
    group: list[_Block] = []

    def size(blocks: list[_Block]) -> int:
        return sum(len(x) + 1 for x in lines[blocks[0].start : blocks[-1].end]) if blocks else 0

    def flush() -> None:
        if group:
            body_text = "\n".join(lines[group[0].start : group[-1].end])
            chunks.append(Chunk(offset + group[0].start + 1, body_text))
            group.clear()

    for block in _blocks(lines):
        entries = sum(1 for b in group if b.kind == "entry")
        if (
            block.kind == "heading"
            or (block.kind == "entry" and entries >= ENTRIES_PER_CHUNK)
            or size([*group, block]) > max_chars
        ):
            flush()
        if size([block]) > max_chars:
            chunks.extend(_split_long(lines, block, offset, max_chars))
        else:
            group.append(block)
    flush()
    return [c for c in chunks if c.text.strip()]


def _blocks(lines: list[str]) -> Iterator[_Block]:
    """Headings, paragraphs and log entries; a fenced code block stays inside one block."""
    start: int | None = None
    kind = "paragraph"
    fenced = False
    for i, line in enumerate(lines):
        if fenced or _FENCE.match(line):
            if _FENCE.match(line):
                fenced = not fenced
            if start is None:
                start, kind = i, "paragraph"
            continue
        if not line.strip() or _HEADING.match(line) or _ENTRY.match(line):
            if start is not None:
                yield _Block(start, i, kind)
                start = None
            if _HEADING.match(line):
                yield _Block(i, i + 1, "heading")
            elif line.strip():
                start, kind = i, "entry"
        elif start is None:
            start, kind = i, "paragraph"
    if start is not None:
        yield _Block(start, len(lines), kind)


def _split_long(lines: list[str], block: _Block, offset: int, max_chars: int) -> list[Chunk]:
    """A block over the cap as several chunks: whole lines while they fit, long lines cut."""
    out: list[Chunk] = []
    first = block.start
    parts: list[str] = []
    for i in range(block.start, block.end):
        line = lines[i]
        if parts and sum(len(p) + 1 for p in parts) + len(line) > max_chars:
            out.append(Chunk(offset + first + 1, "\n".join(parts)))
            parts = []
        if not parts:
            first = i
        if len(line) <= max_chars:
            parts.append(line)
            continue
        while len(line) > max_chars:
            cut = line.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            out.append(Chunk(offset + i + 1, line[:cut]))
            line = line[cut:].lstrip()
        parts, first = [line], i
    if parts:
        out.append(Chunk(offset + first + 1, "\n".join(parts)))
    return out


@dataclass(frozen=True)
class _Seen:
    """A file found in the workspace, by its ``stat``."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Stored:
    """A file as the index last saw it."""

    size: int
    mtime_ns: int
    sha256: str


class _Rebuild(Exception):
    """The index file is foreign, corrupt or of another schema: rebuild it."""


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is not a database or is damaged (not merely busy)."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class MemoryIndex:
    """The search index of one workspace's memory.

    Safe to share between threads (calls are serialised) and between processes (WAL mode,
    short write transactions). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, workspace: Path, db_path: Path | None = None, *, auto_reindex: bool = True
    ) -> None:
        if not workspace.is_dir():
            raise ConfigError(
                file=str(workspace), key="", problem="the workspace folder does not exist"
            )
        self.workspace = workspace
        self.db_path = db_path if db_path is not None else workspace / ".mcos" / "memory.db"
        self.auto_reindex = auto_reindex
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        """Opened on first use (:attr:`_conn`): an agent starting does not create, switch to WAL
        and check the index before it is healthy — most of a cold start's disk writes — and one
        that never searches its memory never opens it."""

    @property
    def _conn(self) -> sqlite3.Connection:
        """The connection, opened (and the index created or rebuilt) on first use; callers hold
        ``_lock``."""
        if self._connection is None:
            self._connection = self._open()
        return self._connection

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
        """Close the database connection; the index file stays for the next run."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def reindex(self) -> ReindexStats:
        """Bring the index up to date with the workspace files, in one transaction.

        Unchanged size and mtime: skipped unread. Otherwise the file is read and hashed; an
        unchanged hash only refreshes the stored stat, a new one replaces the file's chunks.
        """
        with self._lock:
            return self._guarded(self._reindex)

    def search(self, query: str, limit: int = 8) -> list[Hit]:
        """The best ``limit`` chunks for free-text ``query``, best first; never a syntax error."""
        match = fts_query(query)
        if match is None or limit <= 0:
            return []

        def reindexed_search() -> list[Hit]:
            if self.auto_reindex:
                self._reindex()
            return self._search(match, limit)

        with self._lock:
            return self._guarded(reindexed_search)

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
        self._connection = self._open()
        return operation()

    def _open(self) -> sqlite3.Connection:
        """A connection to a usable index, rebuilding the file once if it is not one."""
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
        """Open the index in WAL mode, creating the schema in an empty file; else _Rebuild."""
        conn = connect_wal(self.db_path, BUSY_TIMEOUT, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._version(conn) != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                version = self._version(conn)  # another process may have created it meanwhile
                if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute("COMMIT")
                elif version != SCHEMA_VERSION:
                    conn.execute("ROLLBACK")
                    raise _Rebuild
                else:
                    conn.execute("ROLLBACK")
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if not {"files", "chunks", "chunks_fts"} <= names:
                raise _Rebuild
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _discard(self) -> None:
        """Delete the index file and its WAL companions, so the next open starts empty."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    def _files(self) -> list[_Seen]:
        """The indexed files: ``*.md`` at the root and in ``memory/``, minus hidden and unloaded."""
        found: list[_Seen] = []
        for folder, prefix in ((self.workspace, ""), (self.workspace / "memory", "memory/")):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.md")):
                if path.name.startswith(".") or (not prefix and path.name in NOT_LOADED):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue  # removed while we looked
                if stat.S_ISREG(st.st_mode):
                    found.append(_Seen(prefix + path.name, st.st_size, st.st_mtime_ns))
        return found

    def _stored(self) -> dict[str, _Stored]:
        rows = self._conn.execute("SELECT path, size, mtime_ns, sha256 FROM files")
        return {path: _Stored(size, mtime, digest) for path, size, mtime, digest in rows}

    def _reindex(self) -> ReindexStats:
        # A cheap look first, outside any transaction: a search on an unchanged workspace
        # never takes the write lock.
        seen = self._files()
        stored = self._stored()
        if set(stored) == {s.path for s in seen} and all(
            (s.size, s.mtime_ns) == (stored[s.path].size, stored[s.path].mtime_ns) for s in seen
        ):
            return ReindexStats(files_unchanged=len(seen))
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            stats = self._apply(self._files(), self._stored())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    conn.execute("ROLLBACK")
            raise
        return stats

    def _apply(self, seen: list[_Seen], stored: dict[str, _Stored]) -> ReindexStats:
        """Write what changed, inside the caller's transaction (the plan is redone under lock)."""
        conn = self._conn
        added = updated = unchanged = written = 0
        present: set[str] = set()
        for file in seen:
            old = stored.get(file.path)
            if old is not None and (old.size, old.mtime_ns) == (file.size, file.mtime_ns):
                present.add(file.path)
                unchanged += 1
                continue
            read = self._read(file.path)
            if read is None:
                continue  # vanished or unreadable: treated as removed below
            data, size, mtime_ns = read
            present.add(file.path)
            digest = hashlib.sha256(data).hexdigest()
            if time.time_ns() - mtime_ns < RACY_NS:
                mtime_ns = 0  # may change again unseen within this mtime tick: hash next time
            if old is not None and old.sha256 == digest:
                conn.execute(
                    "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                    (size, mtime_ns, file.path),
                )
                unchanged += 1
                continue
            chunks = chunk_markdown(data.decode("utf-8-sig", errors="replace"))
            conn.execute("DELETE FROM chunks WHERE path = ?", (file.path,))
            conn.executemany(
                "INSERT INTO chunks (path, line, text) VALUES (?, ?, ?)",
                # A secret a human pasted into a file is not copied into the index nor shown
                # in a search result (the file itself is the human's).
                [(file.path, c.line, redact(c.text)) for c in chunks],
            )
            conn.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                (file.path, size, mtime_ns, digest),
            )
            written += len(chunks)
            if old is None:
                added += 1
            else:
                updated += 1
        gone = sorted(set(stored) - present)
        for path in gone:
            conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
            conn.execute("DELETE FROM files WHERE path = ?", (path,))
        return ReindexStats(
            files_added=added,
            files_updated=updated,
            files_removed=len(gone),
            files_unchanged=unchanged,
            chunks=written,
        )

    def _read(self, relative: str) -> tuple[bytes, int, int] | None:
        """A file's bytes with the size and mtime seen *before* reading (so no change is missed)."""
        try:
            with (self.workspace / relative).open("rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), st.st_size, st.st_mtime_ns
        except OSError:
            return None

    def _search(self, match: str, limit: int) -> list[Hit]:
        rows = self._conn.execute(_SEARCH, (SNIPPET_TOKENS, match, limit)).fetchall()
        hits: list[Hit] = []
        for path, line, snippet, marked, score in rows:
            hits.append(Hit(path, line + _best_line(marked), snippet, -float(score)))
        return hits


def _best_line(marked: str) -> int:
    """The line (0-based in the chunk) with the most distinct matched words, the first on a tie.

    ``marked`` is the chunk as FTS5 ``highlight()`` returns it, each match inside ``\\x02``
    ``\\x03``; like ``snippet()``, a line where more query words meet is the better pointer.
    """
    best, most = 0, 0
    for i, text in enumerate(marked.split("\n")):
        found = len({m.casefold() for m in _MATCHED.findall(text)})
        if found > most:
            best, most = i, found
    return best
