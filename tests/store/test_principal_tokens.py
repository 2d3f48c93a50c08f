"""The last active operator token is never revoked, on both stores — decided inside the
revoking transaction, so two revocations racing for the last two tokens leave one; and host
tokens are stored (migration 0010 keeps every earlier token)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from mcos.domain import tokens
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.exceptions import LastOperatorToken
from mcos.store import Store, make_store
from tests.store.conftest import FAST_POLICY

KEY = b"k" * 32


async def _token(
    store: Store, kind: PrincipalKind = PrincipalKind.OPERATOR, name: str = "founder", **kw: object
) -> TokenRecord:
    clear, prefix = tokens.new_token()
    return await store.create_token(
        prefix=prefix,
        digest=tokens.digest(KEY, clear),
        kind=kind,
        name=name,
        **kw,  # type: ignore[arg-type]
    )


async def _active_operators(store: Store) -> list[int]:
    now = await store.now()
    return [
        t.id
        for t in await store.list_tokens()
        if t.kind is PrincipalKind.OPERATOR and t.usable(now)
    ]


async def test_the_last_active_operator_token_is_refused(store: Store) -> None:
    first = await _token(store)
    expired = await _token(store, expires_at=(await store.now()) - timedelta(seconds=1))
    await _token(store, PrincipalKind.AGENT, "gene")  # agent tokens do not count
    with pytest.raises(LastOperatorToken, match=f"token {first.id} is the last active operator"):
        await store.revoke_token(first.id, audit=AuditEvent("operator:founder", "token.revoke"))
    assert await _active_operators(store) == [first.id]
    assert (await store.get_token(expired.id)).revoked_at is None
    await store.revoke_token(expired.id)  # an expired one may go: it opens nothing
    second = await _token(store, name="ops")
    await store.revoke_token(first.id)
    assert await _active_operators(store) == [second.id]
    with pytest.raises(LastOperatorToken):
        await store.revoke_token(second.id)
    await store.revoke_token(first.id)  # revoking a revoked one again stays idempotent


async def test_racing_revocations_of_the_last_two_leave_one(store: Store, store_url: str) -> None:
    """Five rounds of two stores (two connections) revoking the last two operator tokens at
    once: each round exactly one revocation wins and one active operator token is left."""
    other = make_store(store_url, FAST_POLICY)
    await other.open()
    try:
        survivor = await _token(store)
        for _ in range(5):
            fresh = await _token(store)
            results = await asyncio.gather(
                store.revoke_token(survivor.id),
                other.revoke_token(fresh.id),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, LastOperatorToken)]
            assert len(refused) == 1, results
            (left,) = await _active_operators(store)
            survivor = await store.get_token(left)
    finally:
        await other.close()


async def test_host_tokens_are_stored_and_earlier_tokens_survive_migration_0010(
    store_url: str,
) -> None:
    s = make_store(store_url, FAST_POLICY)
    await s.upgrade(target=9)
    try:
        clear, prefix = tokens.new_token()
        before = await s.create_token(
            prefix=prefix, digest=tokens.digest(KEY, clear), kind=PrincipalKind.AGENT, name="gene"
        )
        assert await s.upgrade(target=10) == [10]
        await s.upgrade()  # and every later migration keeps it
        await s.open()
        assert await s.find_token(prefix) == before
        host = await _token(s, PrincipalKind.HOST, "mini")
        assert (await s.get_token(host.id)).kind is PrincipalKind.HOST
        after = await _token(s, PrincipalKind.AGENT, "gene")
        assert after.id > before.id
    finally:
        await s.close()
