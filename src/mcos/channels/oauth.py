"""Access tokens for Microsoft 365 (and other Entra ID OAuth 2.0 accounts), through msal.

msal does the protocol: the authority's OpenID discovery, client credentials, the device-code
flow, the refresh-token grant and the token cache (an access token is reused until close to
its expiry, then renewed). This module adds what mcos needs around it: the cache kept in the
run dir (mode 0600) so a delegated sign-in survives restarts, the blocking calls moved off the
event loop, and msal's error answers sorted into *misconfigured* (consent withdrawn or expired,
a revoked secret, nobody signed in: waiting for a person) and *transient* (retry later).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msal  # type: ignore[import-untyped]
import requests

from mcos.config.models import OAuthConfig
from mcos.exceptions import ChannelError, ChannelMisconfigured

GRAPH_DEFAULT: Final = ("https://graph.microsoft.com/.default",)
"""Client credentials: every application permission granted to the app registration."""
PERMANENT: Final = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "consent_required",
        "interaction_required",
        "invalid_scope",
        "invalid_request",
        "access_denied",
        "expired_token",
    }
)
"""msal ``error`` codes that no retry fixes: a person must sign in, consent or fix a secret."""


class OAuthTokens:
    """Tokens of one account; ``await token()`` gives a valid access token."""

    def __init__(
        self,
        name: str,
        config: OAuthConfig,
        *,
        secret: str | None,
        cache_path: Path | None,
        scopes: tuple[str, ...] = (),
        verify: str | bool = True,
    ) -> None:
        """``secret``: the client secret itself (client credentials); ``cache_path``: where the
        token cache lives (None: in memory); ``scopes``: asked for when the config names none
        (the use's default for its flow);
        ``verify``: a CA bundle for the authority's TLS (tests, a private CA)."""
        self.name = name
        self.config = config
        self.cache_path = cache_path
        self.scopes = list(config.scopes) or list(scopes or GRAPH_DEFAULT)
        self._lock = threading.Lock()
        self._cache = msal.SerializableTokenCache()
        if cache_path is not None and cache_path.exists():
            try:
                self._cache.deserialize(cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                msg = (
                    f"{name}: the token cache {cache_path} is unreadable ({e}); delete it "
                    "and sign in again"
                )
                raise ChannelMisconfigured(msg, channel=name) from None
        self._session = session = requests.Session()
        session.verify = verify
        if verify is not True:  # an explicit CA wins over REQUESTS_CA_BUNDLE and the like
            session.trust_env = False
        authority = f"{config.authority_url.rstrip('/')}/{config.tenant}"
        common: dict[str, Any] = {
            "authority": authority,
            "token_cache": self._cache,
            "http_client": session,
            "validate_authority": False,
            "instance_discovery": False,
            "timeout": 30,
        }
        self._secret = secret
        self._app: msal.ClientApplication | None = None
        self._make: Callable[[], msal.ClientApplication] = (
            (
                lambda: msal.ConfidentialClientApplication(
                    config.client_id, client_credential=secret, **common
                )
            )
            if config.flow == "client_credentials"
            else (lambda: msal.PublicClientApplication(config.client_id, **common))
        )

    def _application(self) -> msal.ClientApplication:
        """msal's application, made on first use (it fetches the authority's discovery)."""
        if self._app is None:
            try:
                self._app = self._make()
            except (requests.RequestException, ValueError, json.JSONDecodeError) as e:
                msg = (
                    f"{self.name}: the authority {self.config.authority_url} is unreachable "
                    f"or answered badly: {e}"
                )
                raise ChannelError(msg, channel=self.name) from None
        return self._app

    async def token(self) -> str:
        """A valid access token (from the cache while it lasts)."""
        return await asyncio.to_thread(self.token_sync)

    def token_sync(self) -> str:
        """``token`` for a caller already off the event loop."""
        with self._lock:
            try:
                result = self._acquire()
            except requests.RequestException as e:
                msg = f"{self.name}: the token endpoint is unreachable: {e}"
                raise ChannelError(msg, channel=self.name) from None
            finally:
                self._save()
        return self._checked(result)

    def _acquire(self) -> dict[str, Any] | None:
        app = self._application()
        if self.config.flow == "client_credentials":
            result: dict[str, Any] | None = app.acquire_token_for_client(scopes=self.scopes)
            return result
        accounts = app.get_accounts()
        if not accounts:
            return None
        return app.acquire_token_silent_with_error(self.scopes, account=accounts[0])  # type: ignore[no-any-return]

    def _checked(self, result: dict[str, Any] | None) -> str:
        if result is None:
            msg = (
                f"{self.name}: nobody is signed in (device-code flow): run "
                f"`mcos m365 login {self.name}` and sign in"
            )
            raise ChannelMisconfigured(msg, channel=self.name)
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", "unknown"))
        said = " ".join(str(result.get("error_description", "")).split())[:300]
        if error in PERMANENT:
            msg = (
                f"{self.name}: Microsoft's identity platform refused ({error}: {said}); a person "
                "must fix it: grant (or renew) consent to the app's permissions, renew the client "
                f"secret, or sign in again with `mcos m365 login {self.name}`"
            )
            raise ChannelMisconfigured(msg, channel=self.name, error=error)
        msg = f"{self.name}: no token ({error}: {said}); trying again later"
        raise ChannelError(msg, channel=self.name, error=error)

    def device_login(self, show: Callable[[str], None]) -> str:
        """Sign a person in with a device code (``show`` tells them where and which code);
        the tokens go to the cache file. Blocks until they did, or the code expired."""
        if self.config.flow != "device_code":
            msg = (
                f"{self.name}: sign-in is for the device_code flow "
                f"(this one uses {self.config.flow})"
            )
            raise ChannelMisconfigured(msg, channel=self.name)
        with self._lock:
            app = self._application()
            flow = app.initiate_device_flow(scopes=self.scopes)
            if "user_code" not in flow:
                return self._checked(flow)
            show(
                str(
                    flow.get("message")
                    or f"Go to {flow['verification_uri']} and enter {flow['user_code']}"
                )
            )
            result = app.acquire_token_by_device_flow(flow)
            self._save()
        return self._checked(result)

    def close(self) -> None:
        """Close msal's HTTP connections."""
        self._session.close()

    def _save(self) -> None:
        """Write the cache when msal changed it: whole (a temporary file renamed), mode 0600."""
        if self.cache_path is None or not self._cache.has_state_changed:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self._cache.serialize())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.cache_path)
        self._cache.has_state_changed = False


def cache_file(state_dir: Path, name: str) -> Path:
    """Where the token cache of account ``name`` lives in the run dir."""
    return state_dir / "oauth" / f"{name}.json"
