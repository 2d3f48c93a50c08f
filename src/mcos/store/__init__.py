"""Mission Control's storage, behind one protocol with a SQLite and a PostgreSQL implementation."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from mcos.domain.messages import DeliveryPolicy
from mcos.exceptions import InvalidRequest
from mcos.store.protocol import (
    AgentEntry,
    AuditQuery,
    AuditVerification,
    Directory,
    InboxDepth,
    Store,
)

__all__ = [
    "AgentEntry",
    "AuditQuery",
    "AuditVerification",
    "Directory",
    "InboxDepth",
    "Store",
    "make_store",
]


def make_store(
    url: str, policy: DeliveryPolicy | None = None, *, audit_key: bytes | None = None
) -> Store:
    """The store a URL names: ``sqlite:///path/to/file.db`` or ``postgresql://…``.

    ``audit_key`` (:func:`mcos.domain.audit.audit_key` of the server's token key) is needed to
    write or verify audit records; a store without it can read and migrate.

    Not yet opened: call ``await store.open()`` (after ``upgrade()`` where wanted).
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from mcos.store.sqlite import SqliteStore  # noqa: PLC0415 (load one backend only)

        path = parts.path
        if parts.netloc:
            path = parts.netloc + path
        if not path:
            raise InvalidRequest(f"store URL {url!r} names no file: use sqlite:///path/to/mcos.db")
        options = parse_qs(parts.query)
        synchronous = options.get("synchronous", ["full"])[0]
        return SqliteStore(path, policy, synchronous=synchronous, audit_key=audit_key)
    if parts.scheme in {"postgresql", "postgres"}:
        from mcos.store.postgres import PostgresStore  # noqa: PLC0415 (load one backend only)

        return PostgresStore(url, policy, audit_key=audit_key)
    raise InvalidRequest(
        f"store URL {url!r}: unknown scheme {parts.scheme!r} (use sqlite:/// or postgresql://)"
    )
