"""The bus's hot statements on connections of their own: asyncpg, each statement prepared.

psycopg spends about 200 µs of Python on each execution of the one-statement send; asyncpg, on a
connection of its own with the statement prepared, about half: a whole send request measured in
process went from 891 to 707 µs (interleaved blocks). asyncpg's pool costs more per acquire
than that saves, so the lanes keep a short list of idle connections and never wait: a statement
that finds none idle and the lanes at their size goes through the pool. The single send, the
claim and the ack — what every message costs — run here, and so do the sends that go together
(one pipelined transaction: :meth:`Lanes.fetchmany`) and a NOTIFY no send carried.

Everything this cannot do falls back, before anything is sent, to the store's psycopg pool
(:class:`NoLane`): a store URL with parameters beyond host, port, user, password and database
(TLS, libpq options), a pool already marked down, a database that refuses a new connection
(then for :data:`RETRY_AFTER` seconds). A failure once the statement was sent is the pool's
answer to the same failure: the statement refused → ``StoreError``, the connection lost →
``StoreUnavailable`` (the message may or may not be stored, as with any connection lost at
commit). Each connection gets the pool's liveness settings (keepalives, a 5 s TCP user
timeout), so a database cut off is noticed as soon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg.prepared_stmt import PreparedStatement
from psycopg.conninfo import conninfo_to_dict

from mcos.domain.bounded import decode_stored
from mcos.exceptions import StoreError, StoreUnavailable

log = logging.getLogger("mcos.store.lanes")

PLAIN = frozenset({"host", "port", "user", "password", "dbname"})
"""The URL parameters the lanes connect with themselves; with any other the pool runs all."""
APPLICATION_NAME = "mcos-lane"
"""The ``application_name`` of the lanes' connections (in pg_stat_activity)."""
RETRY_AFTER = 5.0
"""Seconds the lanes stand aside after a connection they could not open."""
NAMED = re.compile(r"%\((\w+)\)s")


class NoLane(Exception):
    """Nothing was sent: the caller sends through the pool."""


def positional(query: str) -> tuple[str, list[str]]:
    """A psycopg query with ``%(name)s`` parameters as asyncpg's ``$n``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return NAMED.sub(number, query), names


Prepared = dict[str, PreparedStatement]


class Lanes:
    """At most ``size`` connections, each with ``queries`` (psycopg's ``%(name)s`` style,
    by name) prepared, taken one per running statement."""

    def __init__(
        self, url: str, queries: Mapping[str, str], *, size: int, liveness: Mapping[str, int]
    ) -> None:
        self._queries = {name: positional(query) for name, query in queries.items()}
        self._size = size
        self._liveness = dict(liveness)
        self._connect: dict[str, Any] | None = _plain(url)
        self._idle: list[tuple[asyncpg.Connection, Prepared]] = []
        self._open = 0
        self._standing_aside_until = 0.0
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether a send may try the lanes now."""
        return (
            self._connect is not None
            and not self._closed
            and time.monotonic() >= self._standing_aside_until
        )

    async def fetch(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Statement ``name``'s rows for ``params`` (by its parameter names)."""
        order = self._queries[name][1]
        return await self._run(name, lambda statement: statement.fetch(*[params[p] for p in order]))

    async def fetchmany(
        self, name: str, batch: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Statement ``name`` run once for each of ``batch``, pipelined in one transaction (all
        or nothing, one commit): every run's rows, in order."""
        order = self._queries[name][1]
        runs = [[params[p] for p in order] for params in batch]
        return await self._run(name, lambda statement: statement.fetchmany(runs))

    async def _run(
        self, name: str, call: Callable[[PreparedStatement], Awaitable[list[asyncpg.Record]]]
    ) -> list[dict[str, Any]]:
        if not self.usable:
            raise NoLane
        conn, prepared = await self._take()
        try:
            rows = await call(prepared[name])
        except asyncpg.PostgresError as e:
            if conn.is_closed():
                self._gone(conn)
                raise StoreUnavailable(f"PostgreSQL is unavailable: {type(e).__name__}") from e
            await self._give_back(conn, prepared)
            raise StoreError(f"PostgreSQL error: {str(e).strip()}") from e
        except (OSError, asyncpg.InterfaceError, TimeoutError) as e:
            self._gone(conn)
            raise StoreUnavailable(f"PostgreSQL is unavailable: {type(e).__name__}") from e
        except BaseException:  # cancelled mid-statement: its state is unknown, never reused
            self._gone(conn)
            raise
        await self._give_back(conn, prepared)
        return [dict(row.items()) for row in rows]

    async def fetchrow(self, name: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Statement ``name``'s first row, or None."""
        rows = await self.fetch(name, params)
        return rows[0] if rows else None

    async def _give_back(self, conn: asyncpg.Connection, prepared: Prepared) -> None:
        if self._closed:  # closed while this statement ran
            self._open -= 1
            await _close(conn)
        else:
            self._idle.append((conn, prepared))

    def _gone(self, conn: asyncpg.Connection) -> None:
        self._open -= 1
        conn.terminate()

    async def _take(self) -> tuple[asyncpg.Connection, Prepared]:
        while self._idle:
            conn, prepared = self._idle.pop()
            if not conn.is_closed():  # the server closing it (a restart) is seen by the loop
                return conn, prepared
            self._open -= 1
        if self._open >= self._size:
            raise NoLane  # every lane busy: the pool takes this one
        assert self._connect is not None
        self._open += 1
        try:
            conn = await asyncpg.connect(
                **self._connect,
                timeout=self._liveness.get("connect_timeout", 3),
                server_settings={"application_name": APPLICATION_NAME, "TimeZone": "UTC"},
            )
        except BaseException as e:
            self._open -= 1
            if isinstance(
                e, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | TimeoutError
            ):
                self._stand_aside(e)
                raise NoLane from e
            raise
        try:
            self._keep_alive(conn)
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=decode_stored, schema="pg_catalog"
            )
            prepared = {name: await conn.prepare(sql) for name, (sql, _) in self._queries.items()}
        except BaseException as e:
            self._gone(conn)
            if isinstance(
                e, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | TimeoutError
            ):
                self._stand_aside(e)
                raise NoLane from e
            raise
        return conn, prepared

    def _stand_aside(self, error: BaseException) -> None:
        self._standing_aside_until = time.monotonic() + RETRY_AFTER
        log.info("lanes: no connection (%s); the pool runs their statements for %g s", error,
                 RETRY_AFTER)  # fmt: skip

    def _keep_alive(self, conn: asyncpg.Connection) -> None:
        """The pool's liveness settings on a TCP connection's socket."""
        transport = getattr(conn, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        live = self._liveness
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, live.get("keepalives", 1))
        for option, key in (
            (socket.TCP_KEEPIDLE, "keepalives_idle"),
            (socket.TCP_KEEPINTVL, "keepalives_interval"),
            (socket.TCP_KEEPCNT, "keepalives_count"),
            (socket.TCP_USER_TIMEOUT, "tcp_user_timeout"),
        ):
            if key in live:
                sock.setsockopt(socket.IPPROTO_TCP, option, live[key])

    async def close(self) -> None:
        """Close every idle connection (a running send's closes when it ends)."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        await asyncio.gather(*(_close(conn) for conn, _ in idle), return_exceptions=True)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=1)
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError, TimeoutError):
        conn.terminate()


def _plain(url: str) -> dict[str, Any] | None:
    """asyncpg's connection arguments for a URL of plain parameters only; else None."""
    try:
        given = conninfo_to_dict(url)
    except Exception:  # the pool reports a URL it cannot read
        return None
    if set(given) - PLAIN or "," in str(given.get("host", "")):
        return None
    arguments: dict[str, Any] = {
        "host": given.get("host"),
        "user": given.get("user"),
        "password": given.get("password"),
        "database": given.get("dbname"),
    }
    if "port" in given:
        arguments["port"] = int(str(given["port"]))
    return {k: v for k, v in arguments.items() if v is not None}


__all__: Sequence[str] = ("Lanes", "NoLane", "positional")
