"""Direct SQL against a test database, for what the store API deliberately cannot do."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg


async def execute_raw(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement outside the store and return its rows (if any)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            cursor = conn.execute(sql, params)
            return cursor.fetchall()
        finally:
            conn.close()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql.replace("?", "%s"), params)
        return await cur.fetchall() if cur.description else []
