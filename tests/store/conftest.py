"""The store fixture: every store test runs on SQLite and on PostgreSQL.

Each PostgreSQL test gets its own freshly created database (cloned from a migrated template),
so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from mcos.domain.audit import audit_key
from mcos.domain.messages import DeliveryPolicy
from mcos.store import Directory, Store, make_store
from mcos.store.protocol import AgentEntry
from tests.conftest import PG_URL, pg_unreachable

DIRECTORY = Directory(
    agents=[
        AgentEntry("jarvis", "orchestrator", "local"),
        AgentEntry("gene", "ops", "local", reports_to="jarvis"),
        AgentEntry("sentinel", "security", "local", reports_to="jarvis"),
    ],
    humans=["founder"],
    topics={"alerts": ["jarvis", "sentinel", "founder"], "empty": []},
)

FAST_POLICY = DeliveryPolicy(max_attempts=3)
AUDIT_KEY = audit_key(b"t" * 32)
"""The audit chain's key of test stores (a server derives it from its token key)."""


def pg_admin_url(database: str = "postgres") -> str:
    """The machine's PostgreSQL, a given database."""
    base = PG_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


def create_pg_database() -> str:
    """A fresh empty database on the shared server; returns its URL."""
    name = f"mcos_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pg_unreachable(str(exc).strip())
    return pg_admin_url(name)


def drop_pg_database(url: str) -> None:
    """Drop a test database, closing whatever still holds it."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mcos.db"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated, opened store with the test directory loaded."""
    s = make_store(store_url, FAST_POLICY, audit_key=AUDIT_KEY)
    await s.upgrade()
    await s.open()
    await s.sync_directory(DIRECTORY)
    yield s
    await s.close()
