"""The agent's durable channel spool: what a channel received and Mission Control has not stored
yet, and what the agent posted and the service has not accepted yet.

One small SQLite file in the agent's workspace (``.mcos/channels.sqlite``), WAL with
``synchronous=FULL``: a row is on disk before the call that wrote it returns, so a SIGKILL of
the agent right after loses nothing. Every call is one short transaction (a millisecond or
two); the event loop is not handed to a thread for it.

- **inbound**: an item of a channel whose service does not offer it again (Discord's gateway)
  is *held* here before anything else happens to it, and deleted only once Mission Control
  answered that it stored it. ``(channel, ref)`` is unique: the same item held twice is one row.
- **outbound**: a post is *queued* here before the service is called, marked *sending* just
  before each call and *sent* (with the service's id) right after it succeeded. On a restart
  queued and sending posts go out again, in the order they were queued; sent ones never do.

A file that is not a database (a torn copy, a disk error) is moved aside as
``channels.sqlite.corrupt-<time>`` and a fresh one started; a row whose body cannot be read is
set aside as ``corrupt`` and reported, never retried, never a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mcos.exceptions import ChannelError
from mcos.sqlite_wal import connect_wal

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    ref TEXT NOT NULL,
    body TEXT NOT NULL,
    held_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',   -- waiting | refused | corrupt
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    UNIQUE (channel, ref)
);
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    chat TEXT NOT NULL,
    body TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',    -- queued | sending | sent | failed | corrupt
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at TEXT,
    service_ref TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbound_unsent ON outbound (channel, chat, id)
    WHERE state IN ('queued', 'sending');
"""

KEEP_SENT = timedelta(days=7)
"""Sent posts are kept this long (for ``sent`` counts and inspection), then pruned on open."""


class SpoolError(ChannelError):
    """The spool file could not be read or written (a full or read-only disk, a lock)."""


class SpoolFull(ChannelError):
    """The spool holds as many items as it may; the item was not taken."""


@dataclass(frozen=True)
class Held:
    """One inbound item waiting for Mission Control."""

    id: int
    channel: str
    ref: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Post:
    """One outbound post not yet accepted by its service."""

    id: int
    channel: str
    chat: str
    body: str
    state: str
    attempts: int


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Spool:
    """The spool file; opened on first use, so an agent without such channels has none."""

    def __init__(
        self,
        path: Path,
        *,
        max_inbound: int = 10_000,
        max_outbound: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        """At most ``max_inbound`` items waiting, ``max_outbound`` posts unsent, and a file of
        ``max_bytes``: past any of them a new item or post is refused with :class:`SpoolFull`
        (a channel's flood must not fill the disk the agent's workspace lives on)."""
        self.path = path
        self.max_inbound = max_inbound
        self.max_outbound = max_outbound
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.set_aside: Path | None = None
        """Where an unreadable spool file was moved on open, if one was."""

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            db = self._connect()
        except sqlite3.DatabaseError as e:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            self.set_aside = aside
            log.error(
                "channel spool %s is unreadable (%s): moved aside to %s, starting a new one",
                self.path,
                e,
                aside,
            )
            db = self._connect()
        self._db = db
        return db

    def _lock(self) -> None:
        """One process per spool: two would send the same queued post twice. The lock is the
        kernel's (``flock``), so it goes with its process, SIGKILL included."""
        if self._lock_fd is not None or str(self.path) == ":memory:":
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            msg = (
                f"channel spool {self.path} is in use by another process (pid {holder}); "
                "waiting for it to end"
            )
            raise SpoolError(msg, path=str(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _connect(self) -> sqlite3.Connection:
        db = connect_wal(self.path, 10)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            db.execute("PRAGMA quick_check").fetchall()
            db.execute(
                "DELETE FROM outbound WHERE state = 'sent' AND sent_at < ?",
                ((datetime.now(UTC) - KEEP_SENT).isoformat(),),
            )
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's and the disk's errors (full, read-only, locked) as a SpoolError naming the
        file: a tool answers with it, a receiver logs it; nothing crashes the agent."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            msg = f"channel spool {self.path}: {type(e).__name__}: {e}"
            raise SpoolError(msg, path=str(self.path)) from e

    @staticmethod
    def _bytes(db: sqlite3.Connection) -> int:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)

    def close(self) -> None:
        """Close the file (it is reopened on next use)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # -- inbound -----------------------------------------------------------------------------

    def hold(self, channel: str, ref: str, body: dict[str, Any]) -> bool:
        """Keep an inbound item until Mission Control has it; False when it is already held.

        Raises :class:`SpoolFull` when ``max_inbound`` items wait already.
        """
        with self._tx() as db:
            (count,) = db.execute("SELECT count(*) FROM inbound WHERE state = 'waiting'").fetchone()
            if count >= self.max_inbound or self._bytes(db) >= self.max_bytes:
                msg = (
                    f"channel spool {self.path} is full ({count} inbound items wait for "
                    f"Mission Control, {self._bytes(db)} bytes): {channel} item {ref} was not "
                    "taken"
                )
                raise SpoolFull(msg, channel=channel, ref=ref, waiting=count)
            cursor = db.execute(
                "INSERT INTO inbound (channel, ref, body, held_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (channel, ref) DO NOTHING",
                (channel, ref, json.dumps(body), _now()),
            )
            return cursor.rowcount == 1

    def waiting(self, limit: int = 100) -> list[Held]:
        """Inbound items waiting, oldest first."""
        with self._errors():
            rows = self._waiting_rows(limit)
        return [Held(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]

    def _waiting_rows(self, limit: int) -> list[Any]:
        return (
            self._open()
            .execute(
                "SELECT id, channel, ref, body, attempts FROM inbound WHERE state = 'waiting' "
                "ORDER BY id LIMIT ?",
                (limit,),
            )
            .fetchall()
        )

    def taken(self, item_id: int) -> None:
        """Mission Control stored it: forget it."""
        with self._tx() as db:
            db.execute("DELETE FROM inbound WHERE id = ?", (item_id,))

    def attempted(self, item_id: int, error: str) -> None:
        """One more failed attempt, with its reason (for the log and inspection)."""
        with self._tx() as db:
            db.execute(
                "UPDATE inbound SET attempts = attempts + 1, error = ? WHERE id = ?",
                (error[:500], item_id),
            )

    def set_inbound(self, item_id: int, state: str, error: str) -> None:
        """Set an item aside for good (``refused`` by Mission Control, ``corrupt``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE inbound SET state = ?, error = ? WHERE id = ?",
                (state, error[:500], item_id),
            )

    # -- outbound ----------------------------------------------------------------------------

    def queue(self, channel: str, chat: str, body: dict[str, Any]) -> int:
        """Persist a post before anything is sent; its outbox id.

        Raises :class:`SpoolFull` when ``max_outbound`` posts are unsent already.
        """
        with self._tx() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM outbound WHERE state IN ('queued', 'sending')"
            ).fetchone()
            if count >= self.max_outbound or self._bytes(db) >= self.max_bytes:
                msg = (
                    f"channel outbox {self.path} is full ({count} posts not yet sent, "
                    f"{self._bytes(db)} bytes): the post to {channel} was not queued"
                )
                raise SpoolFull(msg, channel=channel, unsent=count)
            cursor = db.execute(
                "INSERT INTO outbound (channel, chat, body, queued_at) VALUES (?, ?, ?, ?)",
                (channel, chat, json.dumps(body), _now()),
            )
            return int(cursor.lastrowid or 0)

    def unsent(self, channel: str | None = None, chat: str | None = None) -> list[Post]:
        """Posts queued or in flight, in the order they were queued."""
        with self._errors():
            rows = self._unsent_rows(channel, chat)
        return [
            Post(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5])) for r in rows
        ]

    def _unsent_rows(self, channel: str | None, chat: str | None) -> list[Any]:
        return (
            self._open()
            .execute(
                "SELECT id, channel, chat, body, state, attempts FROM outbound "
                "WHERE state IN ('queued', 'sending') AND (?1 IS NULL OR channel = ?1) "
                "AND (?2 IS NULL OR chat = ?2) ORDER BY id",
                (channel, chat),
            )
            .fetchall()
        )

    def sending(self, post_id: int) -> None:
        """About to call the service for this post."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbound SET state = 'sending', attempts = attempts + 1 WHERE id = ?",
                (post_id,),
            )

    def sent(self, post_id: int, service_ref: str) -> None:
        """The service accepted it: never sent again."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbound SET state = 'sent', sent_at = ?, service_ref = ?, error = '' "
                "WHERE id = ?",
                (_now(), service_ref[:200], post_id),
            )

    def retry_later(self, post_id: int, error: str) -> None:
        """The service could not take it now: queued again, with the reason."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbound SET state = 'queued', error = ? WHERE id = ?",
                (error[:500], post_id),
            )

    def set_outbound(self, post_id: int, state: str, error: str) -> None:
        """Set a post aside for good (``failed``: the service refused it; ``corrupt``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbound SET state = ?, error = ? WHERE id = ?",
                (state, error[:500], post_id),
            )

    def counts(self) -> dict[str, int]:
        """``inbound_<state>`` and ``outbound_<state>`` counts, for status and tests."""
        found: dict[str, int] = {}
        with self._errors():
            db = self._open()
            for table in ("inbound", "outbound"):
                for state, count in db.execute(
                    f"SELECT state, count(*) FROM {table} GROUP BY state"  # noqa: S608
                ):
                    found[f"{table}_{state}"] = int(count)
        return found
