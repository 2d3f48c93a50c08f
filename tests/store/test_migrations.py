"""Schema migrations on both stores."""

from __future__ import annotations

import pytest

from mcos.domain.messages import NewMessage
from mcos.exceptions import SchemaOutOfDate
from mcos.store import make_store
from mcos.store.migrations import latest
from tests.store.conftest import DIRECTORY
from tests.store.raw import execute_raw


class TestUpgrade:
    """`mcos db upgrade` brings any older database to the current schema, keeping its data."""

    async def test_empty_database(self, store_url: str) -> None:
        """An empty database upgrades through every version and then opens."""
        store = make_store(store_url)
        try:
            assert await store.schema_version() == 0
            applied = await store.upgrade()
            assert applied == list(range(1, latest(store.dialect) + 1))
            assert await store.schema_version() == latest(store.dialect)
            assert await store.upgrade() == []
            await store.open()
        finally:
            await store.close()

    async def test_previous_version_keeps_data(self, store_url: str) -> None:
        """A database at the previous version, holding a queued message, upgrades with it intact."""
        store = make_store(store_url)
        try:
            previous = latest(store.dialect) - 1
            await store.upgrade(target=previous)
            assert await store.schema_version() == previous
            with pytest.raises(SchemaOutOfDate, match="mcos db upgrade"):
                await store.open()
            # A queued message written by the older version, as that version's rows.
            now = "1700000000000000" if store.dialect == "sqlite" else "clock_timestamp()"
            await execute_raw(
                store_url,
                "INSERT INTO recipients (name, kind, created_at) VALUES ('jarvis', 'agent', "
                f"{now})",
            )
            await execute_raw(
                store_url,
                "INSERT INTO messages (sender, recipient, recipient_kind, kind, priority, subject,"
                " body, thread_id, content_hash, created_at) VALUES ('gene', 'jarvis', 'agent',"
                f" 'request', 1, 'old', 'kept', 1, 'h', {now})",
            )
            await execute_raw(
                store_url,
                "INSERT INTO deliveries (message_id, inbox, priority, state, attempts, visible_at,"
                " created_at, updated_at)"
                f" VALUES (1, 'jarvis', 1, 'queued', 0, {now}, {now}, {now})",
            )
            assert await store.upgrade() == [latest(store.dialect)]
            await store.open()
            await store.sync_directory(DIRECTORY)
            [d] = await store.claim("jarvis")
            assert d.message.subject == "old"
            assert d.message.body == "kept"
            await store.ack("jarvis", d.id, d.receipt or "")
            new = await store.send(NewMessage(sender="gene", recipient="jarvis"))
            assert new.message.id > 1
        finally:
            await store.close()

    async def test_newer_database_refused(self, store_url: str) -> None:
        """A database migrated by a newer mcos is refused rather than misread."""
        store = make_store(store_url)
        try:
            await store.upgrade()
            version = latest(store.dialect) + 1
            now = "1" if store.dialect == "sqlite" else "clock_timestamp()"
            await execute_raw(
                store_url,
                "INSERT INTO schema_migrations (version, name, applied_at)"
                f" VALUES ({version}, 'future', {now})",
            )
            with pytest.raises(SchemaOutOfDate, match="newer"):
                await store.open()
        finally:
            await store.close()
