"""Microsoft Graph over httpx: a bearer token from msal on each call, throttling honoured.

Graph answers 429 (and 503/504 when busy) with ``Retry-After``: the call waits that long and
tries again, a few times (tenacity), before giving up for this look. ``@odata.nextLink`` pages
are followed by :meth:`Graph.pages`. A 401/403 that says the token or the app's permissions do
not cover the call is a :class:`~mcos.exceptions.ChannelMisconfigured`: no retry fixes it.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from mcos.exceptions import ChannelError, ChannelMisconfigured

if TYPE_CHECKING:  # msal and requests (0.3 s of imports) only where tokens are made
    from mcos.channels.oauth import OAuthTokens

RETRIED: Final = frozenset({429, 503, 504})
MAX_RETRY_AFTER = 300.0
"""Seconds at most waited on one Retry-After (a longer one is capped)."""


class GraphError(ChannelError):
    """Graph refused a call; carries the HTTP status and Graph's error code."""

    def __init__(self, message: str, *, channel: str, status_code: int, error: str) -> None:
        super().__init__(message, channel=channel, status_code=status_code, error=error)
        self.status_code = status_code
        self.error = error


class Throttled(GraphError):
    """429/503/504: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, channel: str, status_code: int, retry_after: float) -> None:
        super().__init__(message, channel=channel, status_code=status_code, error="throttled")
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    return error.retry_after if isinstance(error, Throttled) else 1.0


class Graph:
    """One account's Graph client."""

    def __init__(
        self,
        name: str,
        base_url: str,
        tokens: OAuthTokens,
        *,
        verify: str | bool = True,
        attempts: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.tokens = tokens
        self.attempts = attempts
        self.sleep = sleep
        self.throttled = 0
        """How many throttled answers were waited out (for tests and logs)."""
        trust = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._http = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/v1.0/", verify=trust, timeout=30.0
        )

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call (a path under ``/v1.0/`` or a full link Graph gave); its JSON body, or
        ``{}`` for 202/204. Throttling is waited out; other refusals raise ``GraphError``."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Throttled),
            wait=_wait,
            stop=stop_after_attempt(self.attempts),
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, url, json=json, params=params, headers=headers)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def _once(
        self,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        token = await self.tokens.token()
        sent = {
            "Authorization": f"Bearer {token}",
            "client-request-id": str(uuid.uuid4()),
            **(headers or {}),
        }
        try:
            response = await self._http.request(method, url, json=json, params=params, headers=sent)
        except httpx.HTTPError as e:
            msg = f"{self.name}: Graph is unreachable ({type(e).__name__}: {e})"
            raise ChannelError(msg, channel=self.name) from None
        if response.status_code in RETRIED:
            self.throttled += 1
            wait = _retry_after(response)
            msg = (
                f"{self.name}: Graph throttled {method} {response.url.path} "
                f"({response.status_code}); waiting {wait:g}s"
            )
            raise Throttled(
                msg, channel=self.name, status_code=response.status_code, retry_after=wait
            )
        if response.is_success and (response.status_code in (202, 204) or not response.content):
            return {}
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_success:
            return body if isinstance(body, dict) else {}
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = str(error.get("code", "")) if isinstance(error, dict) else ""
        said = str(error.get("message", "")) if isinstance(error, dict) else ""
        msg = (
            f"{self.name}: Graph refused {method} {response.url.path}: "
            f"{response.status_code} {code}: {said[:300]}"
        )
        if response.status_code in (401, 403):
            raise ChannelMisconfigured(
                msg + " (check the app's permissions and admin consent)", channel=self.name
            )
        raise GraphError(msg, channel=self.name, status_code=response.status_code, error=code)

    async def pages(
        self,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Each page of a collection, following ``@odata.nextLink`` to the last one (whose
        ``@odata.deltaLink``, for a delta query, is where the next round starts)."""
        link: str | None = url
        while link:
            page = await self.call("GET", link, params=params, headers=headers)
            params = None  # a next link carries its own query
            yield page
            link = page.get("@odata.nextLink")

    async def aclose(self) -> None:
        """Close the HTTP connections (Graph's and the token endpoint's)."""
        await self._http.aclose()
        self.tokens.close()


def user_path(mailbox: str | None) -> str:
    """``users/{id}`` for a named mailbox, ``me`` for the signed-in user's own."""
    return f"users/{mailbox}" if mailbox else "me"
