"""Mission Control's PostgreSQL sockets notice a database gone silent: TCP keepalives and a
user timeout on the pool's connections and the LISTEN connection, the store URL's own values
first (tests/netns/test_database_faults.py cuts the database host's link)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from mcos.exceptions import InvalidRequest
from mcos.store.postgres import LIVENESS, PostgresStore
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    url = migrated_database("postgres", tmp_path)
    yield url
    drop_pg_database(url)


def _sockets() -> set[tuple[int, int]]:
    """This process's TCP connections as (file descriptor, local port): a descriptor closed
    after ``before`` was taken can be reused by the store's socket, its local port cannot."""
    return {(c.fd, c.laddr.port) for c in psutil.Process().net_connections(kind="tcp") if c.raddr}


@contextmanager
def _socket(fd: int) -> Iterator[socket.socket]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        yield sock
    finally:
        sock.close()


def _options(fd: int) -> dict[str, int]:
    with _socket(fd) as sock:
        return {
            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }


class TestLiveness:
    """Every socket the store keeps open to PostgreSQL carries the liveness settings."""

    async def test_the_pool_and_the_listen_connection_carry_the_defaults(self, pg_url: str) -> None:
        """A plain URL gets keepalives every second after 5 s idle and a 5 s user timeout."""
        before = _sockets()
        store = PostgresStore(pg_url)
        try:
            await store.open()  # the pool's first connection, then the LISTEN connection
            await store.now()
            opened = await eventually("the pool's and the LISTEN connection", _new(before, 2))
            expected = {k: v for k, v in LIVENESS.items() if k != "connect_timeout"}
            assert [_options(fd) for fd in sorted(opened)] == [expected, expected]
        finally:
            await store.close()

    async def test_the_store_url_s_own_parameters_win(self, pg_url: str) -> None:
        """``?keepalives_idle=30&tcp_user_timeout=20000`` is kept; the rest is added."""
        before = _sockets()
        store = PostgresStore(pg_url + "?keepalives_idle=30&tcp_user_timeout=20000")
        try:
            await store.now()
            (fd,) = await eventually("the pool's connection", _new(before, 1))
            assert _options(fd) == {
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": LIVENESS["keepalives_interval"],
                "keepalives_count": LIVENESS["keepalives_count"],
                "tcp_user_timeout": 20000,
            }
        finally:
            await store.close()

    def test_a_malformed_url_is_refused_naming_it(self) -> None:
        """A URL libpq cannot parse fails at once, naming the URL (its password hidden)."""
        with pytest.raises(InvalidRequest, match=r"postgresql://u:\*\*\*@h/db\?nonsense=1"):
            PostgresStore("postgresql://u:secret@h/db?nonsense=1")


def _new(before: set[tuple[int, int]], count: int) -> Callable[[], set[int] | None]:
    def found() -> set[int] | None:
        new = {fd for fd, _ in _sockets() - before}
        return new if len(new) == count else None

    return found
