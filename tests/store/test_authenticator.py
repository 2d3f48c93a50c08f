"""Bearer tokens through the server's authenticator, on both stores: expiry is judged on Mission
Control's clock whether the token came from the cache or the store, and a cached token far
from its expiry costs no store round trip (the per-request cost of the bus's hot path)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mcos.domain import tokens
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import AuthError
from mcos.server.auth import Authenticator
from mcos.store import Store
from tests.waiting import past

KEY = b"k" * 32


class CountingStore:
    """The store, counting the calls the authenticator makes (a proxy, not a fake)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str] = []

    async def find_token(self, prefix: str) -> object:
        self.calls.append("find_token")
        return await self.store.find_token(prefix)

    async def now(self) -> datetime:
        self.calls.append("now")
        return await self.store.now()


async def _bearer(store: Store, expires_at: datetime | None = None) -> str:
    clear, prefix = tokens.new_token()
    await store.create_token(
        prefix=prefix,
        digest=tokens.digest(KEY, clear),
        kind=PrincipalKind.AGENT,
        name="gene",
        expires_at=expires_at,
    )
    return f"Bearer {clear}"


class TestAuthenticator:
    """The token cache keeps every refusal of an uncached lookup."""

    async def test_a_cached_token_far_from_expiry_needs_no_round_trip(self, store: Store) -> None:
        """After the first lookup, a token without expiry (or expiring in 30 days) is answered
        from memory: no token lookup, no clock reading."""
        counting = CountingStore(store)
        auth = Authenticator(counting, KEY, cache_seconds=60)  # type: ignore[arg-type]
        for expires in (None, await store.now() + timedelta(days=30)):
            bearer = await _bearer(store, expires)
            assert (await auth.principal(bearer)).name == "gene"
            counting.calls.clear()
            assert (await auth.principal(bearer)).name == "gene"
            assert counting.calls == []

    async def test_an_expired_token_is_refused(self, store: Store) -> None:
        """A token past its expiry is refused, saying so."""
        auth = Authenticator(store, KEY)
        bearer = await _bearer(store, await store.now() - timedelta(seconds=1))
        with pytest.raises(AuthError, match="expired"):
            await auth.principal(bearer)

    async def test_a_cached_token_is_refused_from_its_expiry(self, store: Store) -> None:
        """A token expiring within the cache's lifetime is accepted before its expiry and
        refused after it, though its cache entry still holds: its clock is read each time."""
        counting = CountingStore(store)
        auth = Authenticator(counting, KEY, cache_seconds=60)  # type: ignore[arg-type]
        expires = await store.now() + timedelta(seconds=1)
        bearer = await _bearer(store, expires)
        assert (await auth.principal(bearer)).name == "gene"
        await past(store.now, expires)
        counting.calls.clear()
        with pytest.raises(AuthError, match="expired"):
            await auth.principal(bearer)
        assert counting.calls == ["now"]  # from the cache, judged on a fresh clock reading
