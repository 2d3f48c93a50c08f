"""Access tokens from a standing refresh token (Gmail, or any OAuth 2.0 token endpoint).

Google gives a mail account no client-credentials grant: a person consents once, the refresh
token that consent yields is kept as a secret, and each access token (an hour's) comes from the
``refresh_token`` grant at ``https://oauth2.googleapis.com/token``. authlib's httpx client does
the protocol (the grant, the expiry check with a leeway, RFC 6749 error answers); this module
adds what mcos needs around it: renewal a minute before expiry, 429/5xx and unreachable
endpoints retried with backoff (tenacity), and errors sorted into *misconfigured*
(``invalid_grant``: consent withdrawn or the refresh token revoked; a wrong client) and
*transient*. The same ``token()`` / ``close()`` shape as the msal tokens of ``oauth.py``.
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Final

import anyio
import httpx2
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
    OAuthError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from mcos.channels.oauth import PERMANENT
from mcos.config.models import OAuthConfig
from mcos.exceptions import ChannelError, ChannelMisconfigured

LEEWAY: Final = 60
"""Seconds before its expiry an access token is renewed."""
ATTEMPTS: Final = 5
"""Token requests per renewal when the endpoint throttles (429), fails (5xx) or is down."""


RETRY_AFTER_CAP: Final = 60.0
"""The longest ``Retry-After`` waited out inside one renewal (longer: the look fails)."""


class _Busy(Exception):
    """The token endpoint said 429 or 5xx: worth another try after a pause."""

    def __init__(self, status: int, body: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {' '.join(body.split())[:200]}")
        self.status = status
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number of seconds; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _retryable(e: BaseException) -> bool:
    return isinstance(e, (_Busy, httpx2.TransportError))


class RefreshTokens:
    """Tokens of one account from its refresh token; ``await token()`` gives a valid one."""

    def __init__(
        self,
        name: str,
        config: OAuthConfig,
        *,
        refresh_token: str,
        secret: str | None,
        scopes: tuple[str, ...] = (),
        verify: str | bool = True,
        backoff: float = 1.0,
    ) -> None:
        """``refresh_token``, ``secret``: the resolved secrets; ``scopes``: asked for when the
        config names none; ``verify``: a CA bundle for the endpoint's TLS (tests, a private
        CA); ``backoff``: the first pause between retries, in seconds (doubling, jittered)."""
        self.name = name
        self.config = config
        self.url = config.endpoint
        self.scopes = list(config.scopes) or list(scopes)
        self._secret = secret
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._backoff_wait = wait_exponential(multiplier=backoff, max=30 * backoff) + wait_random(
            0, backoff
        )
        self._token: dict[str, Any] = {
            "access_token": "",
            "token_type": "Bearer",
            "refresh_token": refresh_token,
            "expires_at": 0,  # none yet: the first call refreshes
        }
        self._lock = anyio.Lock()
        self.refreshes = 0
        """Token requests made (retries included)."""

    async def token(self) -> str:
        """A valid access token: the current one until a minute before it expires."""
        async with self._lock:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_retryable),
                    wait=self._wait,
                    stop=stop_after_attempt(ATTEMPTS),
                    reraise=True,
                ):
                    with attempt:
                        await self._ensure()
            except OAuthError as e:
                raise self._refused(str(e.error), str(e.description or "")) from None
            except _Busy as e:
                msg = (
                    f"{self.name}: the token endpoint {self.url} is failing ({e}) after "
                    f"{ATTEMPTS} tries; trying again later"
                )
                raise ChannelError(msg, channel=self.name, http_status=e.status) from None
            except (httpx2.HTTPError, ValueError) as e:
                msg = f"{self.name}: the token endpoint {self.url} is unreachable: {e}"
                raise ChannelError(msg, channel=self.name) from None
            return str(self._token["access_token"])

    def _wait(self, state: RetryCallState) -> float:
        """The endpoint's ``Retry-After`` (capped) when it gave one, else doubling backoff."""
        failed = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failed, _Busy) and failed.retry_after is not None:
            return min(failed.retry_after, RETRY_AFTER_CAP)
        return self._backoff_wait(state)

    async def _ensure(self) -> None:
        """authlib renews the token when it is expired (or within ``LEEWAY`` of it)."""
        async with AsyncOAuth2Client(
            self.config.client_id,
            self._secret,
            token_endpoint=self.url,
            token_endpoint_auth_method="client_secret_post" if self._secret else "none",
            scope=" ".join(self.scopes) or None,
            token=self._token,
            leeway=LEEWAY,
            verify=self._verify,
            timeout=30,
        ) as client:
            client.register_compliance_hook("refresh_token_response", self._count)
            await client.ensure_active_token(client.token)
            token = dict(client.token)
        if not token.get("access_token"):
            msg = f"{self.name}: the token endpoint {self.url} answered without an access_token"
            raise ChannelError(msg, channel=self.name)
        if not isinstance(token.get("expires_at"), int):  # no expires_in: assume Google's hour
            token["expires_at"] = int(time.time()) + 3600
        self._token = token

    def _count(self, response: httpx2.Response) -> httpx2.Response:
        """Count the request; a throttled or failing endpoint is retried, not parsed."""
        self.refreshes += 1
        if response.status_code == 429 or response.status_code >= 500:
            after = _retry_after(response.headers.get("retry-after"))
            raise _Busy(response.status_code, response.text, after)
        return response

    def _refused(self, error: str, said: str) -> ChannelError:
        said = " ".join(said.split())[:300]
        if error in PERMANENT:
            msg = (
                f"{self.name}: the token endpoint {self.url} refused the refresh token "
                f"({error}: {said}); a person must fix it: consent again and store the new "
                "refresh token (oauth.refresh_token), or correct oauth.client_id/client_secret"
            )
            return ChannelMisconfigured(msg, channel=self.name, error=error)
        msg = f"{self.name}: no token ({error}: {said}); trying again later"
        return ChannelError(msg, channel=self.name, error=error)

    def close(self) -> None:
        """Nothing held open: each renewal uses its own short-lived HTTP client."""
