"""The store fixture: every store test runs on SQLite and on PostgreSQL.

Each test gets its own database, so tests never see each other's rows. A migrated one is a copy
of a template this test process migrated once (`migrated_database`): migrating costs about a
second on PostgreSQL (more on a loaded machine), a copy a tenth of that.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
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


def _drop_now(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_background = ThreadPoolExecutor(1, thread_name_prefix="pg-databases")
"""Drops test databases while the next tests run: a DROP DATABASE waits 0.2-1 s on the server's
disk (its backend uses no CPU), which was a fifth of an API test's time on PostgreSQL. (Making
the next test's copy there too was slower: the copies then queued behind the drops.)"""


_drops: list[Future[None]] = []


def drop_pg_database(url: str) -> None:
    """Drop a test database (in the background), closing whatever still holds it.

    Only teardowns call it: the name is unique and nothing opens it again. The session's end
    waits for every drop (:func:`drop_templates`).
    """
    _drops.append(_background.submit(_drop_now, url))


_templates: dict[str, str] = {}
"""Per test process: "postgres" -> the migrated template database's name, "sqlite" -> the
migrated template file."""
_templates_lock = threading.Lock()


def _migrate_in_thread(url: str) -> None:
    """Migrate ``url`` on a thread of its own (the caller's event loop may be running)."""

    async def run() -> None:
        store = make_store(url)
        try:
            await store.upgrade()
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def _template(kind: str) -> str:
    """The migrated template of ``kind``, made on first use in this process."""
    with _templates_lock:
        if kind in _templates:
            return _templates[kind]
        if kind == "sqlite":
            made = str(Path(tempfile.mkdtemp(prefix="mcos-template-")) / "template.db")
            _migrate_in_thread(f"sqlite:///{made}")
        else:
            url = create_pg_database()
            _migrate_in_thread(url)
            made = url.rsplit("/", 1)[1]
        _templates[kind] = made
        return made


def migrated_database(kind: str, tmp_path: Path) -> str:
    """A new database of ``kind`` ("sqlite": ``tmp_path/mcos.db``, or "postgres") at the latest
    schema, exactly as `upgrade()` of an empty one leaves it: a copy of this process's migrated
    template. Drop a PostgreSQL one with :func:`drop_pg_database`."""
    if kind == "sqlite":
        tmp_path.mkdir(parents=True, exist_ok=True)  # as upgrade() would make it
        target = tmp_path / "mcos.db"
        if target.exists():
            raise FileExistsError(f"{target}: a test database is already there")
        source = sqlite3.connect(_template("sqlite"))
        with closing(source), closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
        return f"sqlite:///{target}"
    template = _template("postgres")
    with _templates_lock:
        spare = _spare.pop() if _spare else None
        _spare.append(_copies.submit(_copy_now, template))
    return spare.result() if spare is not None else _copy_now(template)


def _copy_now(template: str) -> str:
    name = f"mcos_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return pg_admin_url(name)


_copies = ThreadPoolExecutor(1, thread_name_prefix="pg-copies")
"""Copies the template for the next test while this one runs: a CREATE DATABASE ... TEMPLATE
waits 0.3-0.5 s on the server's disk (its backend uses little CPU), which was most of a
PostgreSQL API test's setup. Its own thread: behind the drops (`_background`), the copies
queued and came late."""

_spare: list[Future[str]] = []
"""The copy made ahead for the next test that asks (a fresh database nothing has opened)."""


def drop_templates() -> None:
    """Remove this process's templates, once every background drop is done (at the end of
    the session)."""
    with _templates_lock:
        _copies.shutdown(wait=True)
        while _spare:
            _background.submit(_drop_now, _spare.pop().result())
        _background.shutdown(wait=True)
        if "postgres" in _templates:
            _drop_now(pg_admin_url(_templates.pop("postgres")))
        if "sqlite" in _templates:
            shutil.rmtree(Path(_templates.pop("sqlite")).parent, ignore_errors=True)
    for dropped in _drops:
        dropped.result()  # a drop that failed says so here, as it did in its teardown


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a new database of each backend: empty, or — for a test that takes the `store`
    fixture too, which migrates it anyway — a copy of the migrated template."""
    migrated = "store" in request.fixturenames
    if request.param == "sqlite":
        if migrated:
            yield migrated_database("sqlite", tmp_path)
        else:
            yield f"sqlite:///{tmp_path}/mcos.db"
        return
    url = migrated_database("postgres", tmp_path) if migrated else create_pg_database()
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
