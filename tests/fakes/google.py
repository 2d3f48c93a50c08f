"""A local stand-in for Google's OAuth 2.0 token endpoint (``https://oauth2.googleapis.com/token``).

It speaks the wire protocol Google documents for the ``refresh_token`` grant: a form POST with
``client_id``, ``client_secret`` (in the body, or HTTP Basic), ``refresh_token`` and an
optional ``scope`` no wider than the consent; the answer ``{"access_token", "expires_in",
"scope", "token_type": "Bearer"}`` (no new refresh token), or Google's errors:
``invalid_grant`` "Token has been expired or revoked." (400), ``invalid_client``
"Unauthorized" (401), ``invalid_scope`` (400), ``unsupported_grant_type`` (400). Served over
TLS (a trustme CA) and, for dovecot, plain HTTP too, with an RFC 7662 introspection endpoint
(``/introspect``) reporting the tokens it issued, as Gmail's servers check them. Faults can be
queued: the next N token requests answer 429 or 5xx.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import trustme
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

MAIL_SCOPE = "https://mail.google.com/"


@dataclass
class Issued:
    """An access token the fake issued."""

    expires: float
    user: str


class FakeGoogle:
    """Google's token endpoint for one OAuth client and one consented user; a context manager."""

    def __init__(
        self,
        tmp: Path,
        *,
        client_id: str = "1234-abc.apps.googleusercontent.com",
        client_secret: str = "GOCSPX-secret",
        user: str = "alice",
        scope: str = MAIL_SCOPE,
        token_lifetime: int = 3599,
    ) -> None:
        self.client_id, self.client_secret, self.user = client_id, client_secret, user
        self.scope = scope
        self.token_lifetime = token_lifetime
        self.refresh_token = "1//0g" + secrets.token_urlsafe(32)
        """The refresh token the user's consent yielded."""
        self.revoked = False
        self.tokens: dict[str, Issued] = {}
        self.requests: list[dict[str, str]] = []
        """The form of every token request (secrets included), in order."""
        self.request_times: list[float] = []
        """The monotonic time of every token request."""
        self.introspected: list[str] = []
        """The usernames of tokens introspected ("" for an unknown or expired one)."""
        self.faults: list[tuple[int, dict[str, str]]] = []
        """Queued answers (status, headers) for the next token requests."""
        self._lock = threading.Lock()
        self._ca = trustme.CA()
        self.ca_file = tmp / "google-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._cert_file, self._key_file = tmp / "google-cert.pem", tmp / "google-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(self._cert_file))
        cert.private_key_pem.write_to_path(str(self._key_file))
        self.port = free_port()
        self.app = self._build()
        self._servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    @property
    def token_url(self) -> str:
        """The token endpoint (TLS)."""
        return f"https://127.0.0.1:{self.port}/token"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def revoke(self) -> None:
        """The user withdrew access (or the refresh token expired): tokens stop working."""
        with self._lock:
            self.revoked = True
            self.tokens.clear()

    def fail(self, status: int, times: int = 1, retry_after: int | None = None) -> None:
        """The next ``times`` token requests answer ``status`` (429, 500, 503...)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self.faults += [(status, headers)] * times

    def expire_all(self) -> None:
        """Every access token issued so far expires now (introspection calls it inactive)."""
        with self._lock:
            for issued in self.tokens.values():
                issued.expires = 0

    def _client(self, request: Request, form: dict[str, str]) -> tuple[str, str]:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            return cid, secret
        return form.get("client_id", ""), form.get("client_secret", "")

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
                return _error("invalid_request", "Bad Request")
            form = {k: str(v) for k, v in (await request.form()).items()}
            with self._lock:
                self.requests.append(form)
                self.request_times.append(time.monotonic())
                if self.faults:
                    status, headers = self.faults.pop(0)
                    body = {"error": "rate_limit_exceeded"} if status == 429 else {}
                    return JSONResponse(body, status_code=status, headers=headers)
                return self._grant(request, form)

        @app.post("/introspect")
        async def introspect(request: Request) -> JSONResponse:
            form = {k: str(v) for k, v in (await request.form()).items()}
            with self._lock:
                issued = self.tokens.get(form.get("token", ""))
                if issued is None or issued.expires < time.time():
                    self.introspected.append("")
                    return JSONResponse({"active": "false"})
                self.introspected.append(issued.user)
                return JSONResponse(
                    {"active": "true", "username": issued.user, "scope": self.scope}
                )

        return app

    def _grant(self, request: Request, form: dict[str, str]) -> JSONResponse:
        """The refresh_token grant, as Google answers it (called under the lock)."""
        if form.get("grant_type") != "refresh_token":
            return _error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        cid, secret = self._client(request, form)
        if cid != self.client_id or secret != self.client_secret:
            return _error("invalid_client", "Unauthorized", 401)
        if self.revoked or form.get("refresh_token") != self.refresh_token:
            return _error("invalid_grant", "Token has been expired or revoked.")
        asked = set(form.get("scope", self.scope).split())
        if not asked <= set(self.scope.split()):
            return _error("invalid_scope", "Some requested scopes were invalid.")
        access = "ya29." + secrets.token_urlsafe(48)
        self.tokens[access] = Issued(time.time() + self.token_lifetime, self.user)
        body: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.token_lifetime,
            "scope": " ".join(sorted(asked)),
            "token_type": "Bearer",
        }
        return JSONResponse(body, headers={"Cache-Control": "no-cache, no-store"})

    # --- serving ----------------------------------------------------------------------------

    def _serve(self, port: int, *, tls: bool) -> None:
        extra = {"ssl_certfile": str(self._cert_file), "ssl_keyfile": str(self._key_file)}
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=2, **(extra if tls else {}),
        )  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self._servers.append((server, thread))
        wait_serving(server, thread, "the fake Google token endpoint")

    def start(self) -> Self:
        """Serve over TLS in a background thread until :meth:`stop`."""
        self._serve(self.port, tls=True)
        return self

    def start_plain(self) -> str:
        """Serve over plain HTTP too (dovecot's introspection cannot be given the CA); its URL."""
        port = free_port()
        self._serve(port, tls=False)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Shut the servers down."""
        for server, _ in self._servers:
            server.should_exit = True
        for _, thread in self._servers:
            thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
