"""Bearer-token authentication.

A token is found by its indexed prefix and checked against the stored keyed hash in constant
time — one index probe per request, never a scan over every principal's hash. Verified tokens
are cached for a couple of seconds; a revocation through this server drops its entry at once.

A request answered from the cache costs no round trip at all: expiry is judged on Mission
Control's clock (the store's), read at the lookup; a token whose expiry falls within a minute
of that reading has the clock read again on every request, as an uncached one does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from mcos.domain import tokens
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import Principal, TokenRecord
from mcos.exceptions import AuthError
from mcos.store import Store

NEAR_EXPIRY = timedelta(minutes=1)
"""A cached token expiring this close to the clock reading of its lookup (plus the cache's
lifetime) has the clock read on every request; any other is judged without a round trip."""


@dataclass(frozen=True)
class _Cached:
    record: TokenRecord
    digest: str
    until: float
    far_from_expiry: bool
    """Unexpired at the lookup and not expiring within the cache's lifetime and a margin."""


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises ``AuthError``."""

    def __init__(self, store: Store, key: bytes, cache_seconds: float = 2.0) -> None:
        self._store = store
        self._key = key
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """The caller named by a ``Bearer`` header."""
        if not authorization:
            raise AuthError("missing bearer token: send `Authorization: Bearer <token>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be `Bearer <token>`")
        token = token.strip()
        prefix = tokens.parse_prefix(token)
        if prefix is None:
            raise AuthError("the bearer token is malformed (expected mcos_<prefix>_<secret>)")
        record, far_from_expiry = await self._lookup(prefix)
        if record is None or not tokens.matches(self._key, token, record.digest):
            raise AuthError("the bearer token is not valid")
        if record.revoked_at is None and far_from_expiry:
            return Principal(record.kind, record.name, record.id)
        now = await self._store.now()
        if record.revoked_at is not None:
            # A revoked token that still knocks is worth a record: who held it, and when.
            await self._store.record(
                AuditEvent(
                    actor=f"{record.kind}:{record.name}",
                    action="auth.revoked_token_used",
                    targets={"token": record.id},
                    detail={"rule": "a revoked token is refused from the moment of revocation"},
                    outcome="refused",
                )
            )
            raise AuthError("the bearer token was revoked", token_id=record.id)
        if not record.usable(now):
            raise AuthError("the bearer token has expired", token_id=record.id)
        return Principal(record.kind, record.name, record.id)

    async def _lookup(self, prefix: str) -> tuple[TokenRecord | None, bool]:
        """The token and whether it is far from expiry (its expiry needs no clock reading)."""
        hit = self._cache.get(prefix)
        clock = time.monotonic()
        if hit is not None and hit.until > clock:
            return hit.record, hit.far_from_expiry
        record = await self._store.find_token(prefix)
        if record is None:
            self._cache.pop(prefix, None)
            return None, False
        if len(self._cache) > 10_000:
            self._cache.clear()
        far = record.expires_at is None or self._far(record.expires_at, await self._store.now())
        self._cache[prefix] = _Cached(record, record.digest, clock + self._cache_seconds, far)
        return record, far

    def _far(self, expires_at: datetime, now: datetime) -> bool:
        return expires_at - now > timedelta(seconds=self._cache_seconds) + NEAR_EXPIRY

    def forget(self, prefix: str) -> None:
        """Drop a cached token (after it was revoked or rotated through this server)."""
        self._cache.pop(prefix, None)
