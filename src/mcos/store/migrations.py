"""Versioned schema migrations: numbered ``.sql`` files, one folder per dialect.

A migration file is ``NNNN_name.sql``; its number is the schema version it brings the database
to. Each store applies pending files in order, each in its own transaction together with the row
that records it in ``schema_migrations``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect``, in version order."""
    folder = resources.files("mcos.store") / "sql" / dialect / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        msg = f"{dialect} migrations are not numbered 1..n: {versions}"
        raise RuntimeError(msg)
    return found


def latest(dialect: str) -> int:
    """The schema version this code expects."""
    return len(migrations(dialect))
