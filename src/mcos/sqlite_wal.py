"""Opening a SQLite file in WAL mode when other processes may be opening it at the same moment.

Switching a new file to WAL takes an exclusive lock, and SQLite answers ``database is locked``
at once instead of waiting in its busy handler when another connection is in the middle of the
same switch or of creating the schema. So the switch is retried (tenacity) for as long as the
caller's busy timeout allows; every other statement already waits in the busy handler.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put ``conn``'s database in WAL mode, waiting up to ``timeout`` s for a racing opener."""
    for attempt in Retrying(
        retry=retry_if_exception(_locked),
        stop=stop_after_delay(timeout),
        wait=wait_random_exponential(multiplier=0.005, max=0.1),
        reraise=True,
    ):
        with attempt:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()


def connect_wal(
    path: Path, timeout: float, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode, with ``timeout`` as its busy timeout."""
    conn = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        enable_wal(conn, timeout)
    except BaseException:
        conn.close()
        raise
    return conn
