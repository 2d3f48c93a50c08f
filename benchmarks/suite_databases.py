"""What a test's migrated database costs: `upgrade()` of an empty one vs a copy of a migrated
template (`tests/store/conftest.py:migrated_database`), on PostgreSQL and SQLite.

Run from the repository root: ``.venv/bin/python benchmarks/suite_databases.py [--rounds N]``
(PostgreSQL at $MCOS_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.store.conftest import (
    create_pg_database,
    drop_pg_database,
    drop_templates,
    migrated_database,
)

from mcos.store import make_store


async def _upgrade(url: str) -> None:
    store = make_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


def _timed(make: Callable[[], str], rounds: int) -> tuple[float, list[str]]:
    """Median seconds of ``make`` over ``rounds``, and what it made."""
    took, made = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        made.append(make())
        took.append(time.perf_counter() - start)
    return statistics.median(took), made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    scratch = Path(tempfile.mkdtemp(prefix="mcos-bench-db-"))
    counter = iter(range(10**6))

    def sqlite_upgraded() -> str:
        url = f"sqlite:///{scratch}/up{next(counter)}.db"
        asyncio.run(_upgrade(url))
        return url

    def sqlite_copied() -> str:
        folder = scratch / f"copy{next(counter)}"
        folder.mkdir()
        return migrated_database("sqlite", folder)

    def pg_upgraded() -> str:
        url = create_pg_database()
        asyncio.run(_upgrade(url))
        return url

    migrated_database("postgres", scratch)  # the templates, made once per test process
    drop_pg_database(migrated_database("postgres", scratch))
    print(f"median of {rounds} rounds, seconds per migrated database")
    print(f"{'backend':<12}{'upgrade()':>12}{'template copy':>16}")
    for backend, upgraded, copied in (
        ("sqlite", sqlite_upgraded, sqlite_copied),
        ("postgres", pg_upgraded, lambda: migrated_database("postgres", scratch)),
    ):
        up, made_up = _timed(upgraded, rounds)
        cp, made_cp = _timed(copied, rounds)
        print(f"{backend:<12}{up:>12.3f}{cp:>16.3f}")
        if backend == "postgres":
            for url in made_up + made_cp:
                drop_pg_database(url)
    drop_templates()


if __name__ == "__main__":
    main()
