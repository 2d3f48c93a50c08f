"""Tokens and the tamper-evident audit log on both stores."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mcos.domain import tokens
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import NotFound
from mcos.store import AuditQuery, Store
from tests.store.raw import execute_raw

KEY = b"k" * 32


class TestTokens:
    """Token digests are stored, found by prefix, and revoked."""

    async def test_create_and_find(self, store: Store) -> None:
        """A created token is found by its prefix and its digest matches the clear token."""
        clear, prefix = tokens.new_token()
        record = await store.create_token(
            prefix=prefix, digest=tokens.digest(KEY, clear), kind=PrincipalKind.AGENT, name="gene"
        )
        found = await store.find_token(prefix)
        assert found == record
        assert tokens.matches(KEY, clear, found.digest)
        assert found.usable(await store.now())

    async def test_expiry(self, store: Store) -> None:
        """A token past its expiry is not usable."""
        clear, prefix = tokens.new_token()
        now = await store.now()
        record = await store.create_token(
            prefix=prefix,
            digest=tokens.digest(KEY, clear),
            kind=PrincipalKind.OPERATOR,
            name="founder",
            expires_at=now + timedelta(hours=1),
        )
        assert record.usable(now)
        assert not record.usable(now + timedelta(hours=2))

    async def test_revoke(self, store: Store) -> None:
        """A revoked token is not usable; revoking twice keeps the first time."""
        clear, prefix = tokens.new_token()
        record = await store.create_token(
            prefix=prefix, digest=tokens.digest(KEY, clear), kind=PrincipalKind.AGENT, name="gene"
        )
        first = await store.revoke_token(record.id)
        second = await store.revoke_token(record.id)
        assert first.revoked_at is not None
        assert second.revoked_at == first.revoked_at
        assert not second.usable(await store.now())

    async def test_revoke_unknown(self, store: Store) -> None:
        """Revoking a token that does not exist says so."""
        with pytest.raises(NotFound):
            await store.revoke_token(424242)

    async def test_list(self, store: Store) -> None:
        """Tokens list per principal."""
        for name in ("gene", "gene", "jarvis"):
            clear, prefix = tokens.new_token()
            await store.create_token(
                prefix=prefix, digest=tokens.digest(KEY, clear), kind=PrincipalKind.AGENT, name=name
            )
        assert len(await store.list_tokens("gene")) == 2
        assert len(await store.list_tokens()) == 3


class TestAudit:
    """Every record chains to the one before; edits and deletions are detected."""

    async def test_records_chain(self, store: Store) -> None:
        """Records get increasing sequence numbers, server time, and verify intact."""
        a = await store.record(AuditEvent("operator:founder", "token.create", {"agent": "gene"}))
        b = await store.record(AuditEvent("agent:gene", "message.refused", outcome="denied"))
        assert (a.seq, b.seq) == (1, 2)
        assert b.prev_hash == a.hash
        assert b.at >= a.at
        result = await store.verify_audit()
        assert result.intact
        assert result.records == 2

    async def test_change_and_audit_together(self, store: Store) -> None:
        """A token created with an audit event records it in the same transaction."""
        clear, prefix = tokens.new_token()
        record = await store.create_token(
            prefix=prefix,
            digest=tokens.digest(KEY, clear),
            kind=PrincipalKind.AGENT,
            name="gene",
            audit=AuditEvent("operator:founder", "token.create", {"principal": "gene"}),
        )
        [entry] = await store.audit(AuditQuery(action="token.create"))
        assert entry.targets == {"principal": "gene", "token": record.id}
        assert entry.actor == "operator:founder"

    async def test_filters(self, store: Store) -> None:
        """The audit log filters by actor, action, time and position."""
        for i in range(5):
            await store.record(AuditEvent(f"agent:a{i % 2}", f"act.{i % 3}"))
        assert len(await store.audit(AuditQuery(actor="agent:a0"))) == 3
        assert len(await store.audit(AuditQuery(action="act.0"))) == 2
        assert [r.seq for r in await store.audit(AuditQuery(after_seq=3))] == [4, 5]
        assert len(await store.audit(AuditQuery(limit=2))) == 2
        later = (await store.now()) + timedelta(minutes=1)
        assert await store.audit(AuditQuery(since=later)) == []

    async def test_sql_edits_refused(self, store: Store, store_url: str) -> None:
        """The database itself refuses UPDATE and DELETE on audit rows."""
        await store.record(AuditEvent("agent:gene", "x"))
        with pytest.raises(Exception, match="append-only"):
            await execute_raw(store_url, "UPDATE audit SET actor = 'agent:evil'")
        with pytest.raises(Exception, match="append-only"):
            await execute_raw(store_url, "DELETE FROM audit")

    async def test_tampering_detected(self, store: Store, store_url: str) -> None:
        """An edit made behind the triggers' back is found by verification, naming the record."""
        for i in range(4):
            await store.record(AuditEvent("agent:gene", f"step.{i}"))
        await execute_raw(
            store_url,
            "DROP TRIGGER audit_no_update" + (" ON audit" if "postgres" in store_url else ""),
        )
        await execute_raw(store_url, "UPDATE audit SET actor = 'agent:evil' WHERE seq = 2")
        result = await store.verify_audit()
        assert not result.intact
        assert result.breaks[0][0] == 2

    async def test_deletion_detected(self, store: Store, store_url: str) -> None:
        """Deleting a middle record or the newest one is found by verification."""
        for i in range(4):
            await store.record(AuditEvent("agent:gene", f"step.{i}"))
        if "postgres" in store_url:
            await execute_raw(store_url, "DROP TRIGGER audit_no_update ON audit")
        else:
            await execute_raw(store_url, "DROP TRIGGER audit_no_delete")
        await execute_raw(store_url, "DELETE FROM audit WHERE seq = 4")
        tail = await store.verify_audit()
        assert not tail.intact
        await execute_raw(store_url, "DELETE FROM audit WHERE seq = 2")
        middle = await store.verify_audit()
        assert any(seq == 3 for seq, _ in middle.breaks)
