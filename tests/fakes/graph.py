"""A local Microsoft identity platform and Microsoft Graph, for the parts mcos uses, over TLS.

Identity (what msal calls): the tenant's OpenID discovery
(``/{tenant}/v2.0/.well-known/openid-configuration``), the token endpoint
(``/{tenant}/oauth2/v2.0/token``: client credentials, device code, refresh token) and the
device-code endpoint (``/{tenant}/oauth2/v2.0/devicecode``). Access tokens are opaque, expire
after ``token_lifetime`` seconds, and Graph refuses an unknown or expired one with 401
``InvalidAuthenticationToken`` as the real one does. ``revoke_consent()`` makes every grant
answer ``invalid_grant`` / AADSTS65001.

Graph (``/v1.0``), per mailbox: mail folders with messages; ``messages/delta`` with
``$select``, ``@odata.nextLink`` pages of ``page_size`` and an ``@odata.deltaLink`` that
returns only what changed since (moved-out messages as ``@removed``); a message GET with
``$select`` (``internetMessageHeaders`` only when selected); PATCH of categories and flag;
``/move``; ``mailFolders`` with ``$filter=displayName eq '...'`` and POST; ``/sendMail``;
``/calendarView`` over a window, paged. ``throttle(n, retry_after)`` answers the next ``n``
Graph calls with 429 and ``Retry-After``.

Ids are immutable (as with ``Prefer: IdType="ImmutableId"``): a move keeps a message's id.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import trustme
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

WELL_KNOWN = ("inbox", "archive", "deleteditems", "drafts", "junkemail", "outbox", "sentitems")
CONSENT = (
    "AADSTS65001: The user or administrator has not consented to use the application with ID "
    "'{client}'. Send an interactive authorization request for this user and resource."
)


@dataclass
class Message:
    """One message of a mailbox."""

    id: str
    folder: str
    subject: str
    sender: str
    sender_name: str
    body: str
    content_type: str = "text"
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    internet_id: str = ""
    categories: list[str] = field(default_factory=list)
    flag: str = "notFlagged"
    headers: list[dict[str, str]] = field(default_factory=list)
    changed: int = 0

    def resource(self, select: set[str] | None) -> dict[str, Any]:
        """The Graph resource, limited to ``select`` (id always) as Graph does."""
        full: dict[str, Any] = {
            "id": self.id,
            "subject": self.subject,
            "from": {"emailAddress": {"name": self.sender_name, "address": self.sender}},
            "body": {"contentType": self.content_type, "content": self.body},
            "internetMessageId": self.internet_id,
            "receivedDateTime": self.received.isoformat().replace("+00:00", "Z"),
            "categories": list(self.categories),
            "flag": {"flagStatus": self.flag},
            "parentFolderId": self.folder,
            "internetMessageHeaders": list(self.headers),
        }
        if select is None:
            full.pop("internetMessageHeaders")  # only returned when asked for
            return full
        return {k: v for k, v in full.items() if k == "id" or k in select}


@dataclass
class Event:
    """One calendar event."""

    id: str
    subject: str
    start: datetime
    end: datetime
    location: str = ""
    body: str = ""

    def resource(self) -> dict[str, Any]:
        """The Graph event resource (UTC times, as with ``Prefer: outlook.timezone="UTC"``)."""
        return {
            "id": self.id,
            "subject": self.subject,
            "start": {
                "dateTime": self.start.strftime("%Y-%m-%dT%H:%M:%S.0000000"),
                "timeZone": "UTC",
            },
            "end": {"dateTime": self.end.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
            "location": {"displayName": self.location},
            "bodyPreview": self.body[:255],
            "isAllDay": False,
        }


@dataclass
class Mailbox:
    """One user's mail folders, sent mail and calendar."""

    user: str
    folders: dict[str, str] = field(default_factory=dict)
    """Folder id -> display name (well-known folders use their name as id)."""
    messages: dict[str, Message] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)
    """(change, folder, id) of messages that left a folder."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class Issued:
    """An access token the fake issued."""

    expires: float
    user: str | None
    """The signed-in user (delegated), None for an app token."""


class FakeGraph:
    """The identity platform and Graph on one TLS port; use as a context manager."""

    def __init__(
        self,
        tmp: Path,
        *,
        tenant: str = "contoso.example",
        client_id: str = "app-1",
        client_secret: str = "s3cret",
        users: tuple[str, ...] = ("donna@contoso.example",),
        app_login: str = "",
        token_lifetime: int = 3600,
        page_size: int = 2,
    ) -> None:
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.app_login = app_login
        """The IMAP/SMTP login an app (client-credentials) token is good for, as Exchange
        grants an app a mailbox; introspection reports it as the token's username."""
        self.introspected: list[str] = []
        """The usernames of tokens introspected (by dovecot), active or not ("" if not)."""
        self.token_lifetime = token_lifetime
        self.page_size = page_size
        self.port = free_port()
        self.mailboxes = {u.lower(): Mailbox(u, {w: w for w in WELL_KNOWN}) for u in users}
        self.tokens: dict[str, Issued] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.grants: list[str] = []
        """grant_type of every token request, in order."""
        self.graph_calls: list[tuple[str, str, float]] = []
        """(method, path, monotonic time) of every Graph call, throttled ones too."""
        self.throttled_at: list[float] = []
        self.delta_queries: list[str] = []
        """The query string of every delta call (a deltaLink's carries ``$deltatoken``)."""
        self.consent_revoked = False
        self.unauthorized = 0
        """Graph calls refused for an unknown or expired token."""
        self._throttle = 0
        self._retry_after = 1
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._ca = trustme.CA()
        self.ca_file = tmp / "graph-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._cert_file, self._key_file = tmp / "graph-cert.pem", tmp / "graph-key.pem"
        cert.cert_chain_pems[0].write_to_path(str(self._cert_file))
        cert.private_key_pem.write_to_path(str(self._key_file))
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._plain: tuple[uvicorn.Server, threading.Thread] | None = None

    @property
    def url(self) -> str:
        """The base URL (authority and Graph alike)."""
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake's CA (for IMAP/SMTP-style clients)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    # --- what tests do ---------------------------------------------------------------------

    def box(self, user: str) -> Mailbox:
        """The mailbox of ``user``."""
        return self.mailboxes[user.lower()]

    def deliver(
        self,
        user: str,
        subject: str,
        *,
        sender: str = "alice@partner.example",
        name: str = "Alice",
        body: str = "Hello",
        folder: str = "inbox",
        headers: dict[str, str] | None = None,
        html: bool = False,
    ) -> str:
        """A new message arrives in ``folder``; its id."""
        with self._lock:
            n = next(self._seq)
            mid = f"AAMk{n:06d}{secrets.token_hex(4)}"
            self.box(user).messages[mid] = Message(
                id=mid,
                folder=folder,
                subject=subject,
                sender=sender,
                sender_name=name,
                body=body,
                content_type="html" if html else "text",
                internet_id=f"<{mid}@partner.example>",
                headers=[{"name": k, "value": v} for k, v in (headers or {}).items()],
                changed=n,
            )
            return mid

    def add_event(self, user: str, subject: str, start: datetime, end: datetime, **kw: str) -> str:
        """A calendar event; its id."""
        with self._lock:
            eid = f"EV{next(self._seq):06d}"
            self.box(user).events.append(Event(eid, subject, start, end, **kw))
            return eid

    def folder_named(self, user: str, name: str) -> str | None:
        """The id of the folder shown as ``name``."""
        for fid, shown in self.box(user).folders.items():
            if shown.lower() == name.lower():
                return fid
        return None

    def in_folder(self, user: str, folder: str) -> list[Message]:
        """The messages of a folder (by id or well-known name)."""
        with self._lock:
            return [m for m in self.box(user).messages.values() if m.folder == folder]

    def throttle(self, calls: int, retry_after: int = 1) -> None:
        """Answer the next ``calls`` Graph calls with 429 and ``Retry-After``."""
        with self._lock:
            self._throttle, self._retry_after = calls, retry_after

    def revoke_consent(self) -> None:
        """Every grant from now on fails with invalid_grant (AADSTS65001); issued access
        tokens stop working too."""
        with self._lock:
            self.consent_revoked = True
            self.tokens.clear()

    def approve_device(self, user_code: str, user: str) -> None:
        """The person signs in as ``user`` and enters ``user_code``."""
        with self._lock:
            for flow in self.devices.values():
                if flow["user_code"] == user_code:
                    flow["user"] = user

    # --- identity ----------------------------------------------------------------------------

    def _issue(self, user: str | None, scope: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = Issued(time.time() + self.token_lifetime, user)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": token,
            "scope": scope,
        }
        if user is not None:
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = user
            oid = f"oid-{user}"
            now = int(time.time())
            claims = {
                "iss": f"{self.url}/{self.tenant}/v2.0",
                "sub": oid,
                "aud": self.client_id,
                "exp": now + 3600,
                "iat": now,
                "oid": oid,
                "tid": self.tenant,
                "preferred_username": user,
                "name": user,
            }
            answer["refresh_token"] = refresh
            answer["id_token"] = ".".join(
                [_b64(json.dumps({"alg": "none", "typ": "JWT"})), _b64(json.dumps(claims)), ""]
            )
            answer["client_info"] = _b64(json.dumps({"uid": oid, "utid": self.tenant}))
        return answer

    def _token(self, form: dict[str, str]) -> JSONResponse:  # noqa: PLR0911 - one per grant
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if form.get("client_id") != self.client_id:
            return _oauth_error(
                "unauthorized_client",
                f"AADSTS700016: application {form.get('client_id')!r} not found",
            )
        if self.consent_revoked:
            return _oauth_error("invalid_grant", CONSENT.format(client=self.client_id))
        scope = form.get("scope", "")
        if grant == "client_credentials":
            if form.get("client_secret") != self.client_secret:
                return _oauth_error(
                    "invalid_client", "AADSTS7000215: Invalid client secret provided.", 401
                )
            return JSONResponse(self._issue(None, scope))
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            flow = self.devices.get(form.get("device_code", ""))
            if flow is None:
                return _oauth_error(
                    "expired_token",
                    "AADSTS70020: The provided value for the input parameter 'device_code' "
                    "is not valid.",
                )
            if flow.get("user") is None:
                return _oauth_error(
                    "authorization_pending",
                    "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.",
                )
            del self.devices[form["device_code"]]
            return JSONResponse(self._issue(str(flow["user"]), scope))
        if grant == "refresh_token":
            user = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if user is None:
                return _oauth_error(
                    "invalid_grant", "AADSTS70008: The refresh token has expired due to inactivity."
                )
            return JSONResponse(self._issue(user, scope))
        return _oauth_error(
            "unsupported_grant_type", f"AADSTS70003: grant type {grant!r} unsupported"
        )

    # --- Graph -------------------------------------------------------------------------------

    def _caller(self, request: Request) -> Issued | JSONResponse:
        auth = request.headers.get("authorization", "")
        issued = self.tokens.get(auth.removeprefix("Bearer ").strip())
        if issued is None or issued.expires < time.time():
            self.unauthorized += 1
            return _graph_error(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
            )
        return issued

    def _mailbox(self, who: str, caller: Issued) -> Mailbox | JSONResponse:
        user = caller.user if who == "me" else who
        if user is None or user.lower() not in self.mailboxes:
            return _graph_error(404, "ErrorInvalidUser", f"The requested user '{who}' is invalid.")
        if caller.user is not None and caller.user.lower() != user.lower():
            return _graph_error(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )
        return self.mailboxes[user.lower()]

    def _delta(self, box: Mailbox, folder: str, request: Request) -> JSONResponse:
        params = request.query_params
        self.delta_queries.append(request.url.query)
        select = set(params.get("$select", "").split(",")) - {""} or None
        since = int(params.get("$deltatoken", "0"))
        # A round is a snapshot: it lists changes up to the sequence number current when it
        # began (``top``); the skiptoken is the last change listed. What changes meanwhile
        # (a message categorised, moved) comes in the next round, as with Graph.
        after, _, top_text = params.get("$skiptoken", "").partition(":")
        top = int(top_text) if top_text else self._current()
        fid = folder.lower() if folder.lower() in WELL_KNOWN else folder
        if fid not in box.folders:
            return _graph_error(404, "ErrorInvalidIdMalformed", f"folder {folder!r} not found")
        changes: list[tuple[int, dict[str, Any]]] = [
            (m.changed, m.resource(select))
            for m in box.messages.values()
            if m.folder == fid and since < m.changed <= top
        ]
        if since:  # a first round lists what is there; later ones what left too
            changes += [
                (n, {"id": mid, "@removed": {"reason": "deleted"}})
                for n, f, mid in box.removed
                if f == fid and since < n <= top
            ]
        changes.sort(key=lambda c: c[0])
        rest = [c for c in changes if c[0] > int(after or "0")]
        page = rest[: self.page_size]
        base = f"{self.url}/v1.0/{request.url.path.split('/v1.0/', 1)[1]}"
        sel = f"$select={','.join(sorted(select))}&" if select else ""
        body: dict[str, Any] = {"value": [c[1] for c in page]}
        if len(rest) > self.page_size:
            body["@odata.nextLink"] = (
                f"{base}?{sel}$deltatoken={since}&$skiptoken={page[-1][0]}:{top}"
            )
        else:
            body["@odata.deltaLink"] = f"{base}?{sel}$deltatoken={top}"
        return JSONResponse(body)

    def _current(self) -> int:
        """The latest change's sequence number."""
        latest = [m.changed for b in self.mailboxes.values() for m in b.messages.values()]
        latest += [n for b in self.mailboxes.values() for n, _, _ in b.removed]
        return max(latest, default=0)

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/{tenant}/v2.0/.well-known/openid-configuration")
        async def discovery(tenant: str) -> JSONResponse:
            base = f"{self.url}/{tenant}"
            return JSONResponse(
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "jwks_uri": f"{base}/discovery/v2.0/keys",
                    "response_types_supported": ["code", "id_token", "code id_token"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "tenant_region_scope": "EU",
                }
            )

        @app.post("/{tenant}/oauth2/v2.0/token")
        async def token(tenant: str, request: Request) -> JSONResponse:
            form = {k: str(v) for k, v in (await request.form()).items()}
            with self._lock:
                if tenant != self.tenant:
                    return _oauth_error(
                        "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found."
                    )
                return self._token(form)

        @app.post("/{tenant}/oauth2/v2.0/devicecode")
        async def devicecode(tenant: str, request: Request) -> JSONResponse:
            form = {k: str(v) for k, v in (await request.form()).items()}
            with self._lock:
                if form.get("client_id") != self.client_id:
                    return _oauth_error("unauthorized_client", "AADSTS700016: unknown application")
                code = secrets.token_urlsafe(16)
                user_code = secrets.token_hex(4).upper()
                self.devices[code] = {
                    "user_code": user_code,
                    "user": None,
                    "scope": form.get("scope", ""),
                }
            return JSONResponse(
                {
                    "device_code": code,
                    "user_code": user_code,
                    "verification_uri": "https://microsoft.com/devicelogin",
                    "expires_in": 900,
                    "interval": 1,
                    "message": "To sign in, use a web browser to open the page "
                    "https://microsoft.com/devicelogin and enter the code "
                    f"{user_code} to authenticate.",
                }
            )

        @app.post("/introspect")
        async def introspect(request: Request) -> JSONResponse:
            form = {k: str(v) for k, v in (await request.form()).items()}
            with self._lock:
                issued = self.tokens.get(form.get("token", ""))
                if issued is None or issued.expires < time.time():
                    self.introspected.append("")
                    return JSONResponse({"active": "false"})
                user = issued.user or self.app_login
                self.introspected.append(user)
                return JSONResponse(
                    {"active": "true", "username": user, "client_id": self.client_id}
                )

        @app.api_route("/v1.0/{path:path}", methods=["GET", "POST", "PATCH"])
        async def graph(path: str, request: Request) -> Response:
            raw = await request.body()
            payload = json.loads(raw) if raw else {}
            with self._lock:
                self.graph_calls.append((request.method, path, time.monotonic()))
                if self._throttle > 0:
                    self._throttle -= 1
                    self.throttled_at.append(time.monotonic())
                    return JSONResponse(
                        {"error": {"code": "TooManyRequests", "message": "Too many requests"}},
                        status_code=429,
                        headers={"Retry-After": str(self._retry_after)},
                    )
                caller = self._caller(request)
                if isinstance(caller, JSONResponse):
                    return caller
                return self._route(request, path, payload, caller)

        return app

    def _route(  # noqa: PLR0911, PLR0912 - Graph's routes, one branch each
        self, request: Request, path: str, payload: dict[str, Any], caller: Issued
    ) -> Response:
        match = re.fullmatch(r"(?:users/([^/]+)|(me))/(.*)", path)
        if match is None:
            return _graph_error(400, "BadRequest", f"Resource not found for the segment '{path}'.")
        box = self._mailbox(match[1] or "me", caller)
        if isinstance(box, JSONResponse):
            return box
        rest, method = match[3], request.method
        if m := re.fullmatch(r"mailFolders/([^/]+)/messages/delta", rest):
            return self._delta(box, m[1], request)
        if rest == "mailFolders" and method == "GET":
            wanted = re.fullmatch(r"displayName eq '(.*)'", request.query_params.get("$filter", ""))
            found = [
                {"id": fid, "displayName": name}
                for fid, name in box.folders.items()
                if wanted is None or name == wanted[1].replace("''", "'")
            ]
            return JSONResponse({"value": found})
        if rest == "mailFolders" and method == "POST":
            name = str(payload.get("displayName", ""))
            if any(n == name for n in box.folders.values()):
                return _graph_error(
                    409, "ErrorFolderExists", "A folder with the specified name already exists."
                )
            fid = f"AQMk{next(self._seq):06d}"
            box.folders[fid] = name
            return JSONResponse({"id": fid, "displayName": name}, status_code=201)
        if m := re.fullmatch(r"messages/([^/]+)", rest):
            msg = box.messages.get(m[1])
            if msg is None:
                return _graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            if method == "GET":
                select = set(request.query_params.get("$select", "").split(",")) - {""} or None
                return JSONResponse(msg.resource(select))
            if method == "PATCH":
                if "categories" in payload:
                    msg.categories = [str(c) for c in payload["categories"]]
                if "flag" in payload:
                    msg.flag = str(payload["flag"].get("flagStatus", "notFlagged"))
                msg.changed = next(self._seq)
                return JSONResponse(msg.resource(None))
        if (m := re.fullmatch(r"messages/([^/]+)/move", rest)) and method == "POST":
            msg = box.messages.get(m[1])
            if msg is None:
                return _graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            target = str(payload.get("destinationId", ""))
            target = target.lower() if target.lower() in WELL_KNOWN else target
            if target not in box.folders:
                return _graph_error(404, "ErrorInvalidIdMalformed", "Id is malformed.")
            n = next(self._seq)
            box.removed.append((n, msg.folder, msg.id))
            msg.folder, msg.changed = target, n
            return JSONResponse(msg.resource(None), status_code=201)
        if rest == "sendMail" and method == "POST":
            message = payload.get("message")
            if not isinstance(message, dict) or not message.get("toRecipients"):
                return _graph_error(
                    400, "ErrorInvalidRecipients", "At least one recipient is not valid."
                )
            box.sent.append(payload)
            return Response(status_code=202)
        if rest == "calendarView" and method == "GET":
            return self._calendar_view(box, request)
        return _graph_error(400, "BadRequest", f"Unsupported request {method} {path}")

    def _calendar_view(self, box: Mailbox, request: Request) -> JSONResponse:
        params = request.query_params
        try:
            start = _parse_time(params["startDateTime"])
            end = _parse_time(params["endDateTime"])
        except (KeyError, ValueError):
            return _graph_error(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string "
                "parameters StartDateTime and EndDateTime.",
            )
        skip = int(params.get("$skip", "0"))
        hits = sorted(
            (e for e in box.events if e.start < end and e.end > start), key=lambda e: e.start
        )
        page = hits[skip : skip + self.page_size]
        body: dict[str, Any] = {"value": [e.resource() for e in page]}
        if skip + self.page_size < len(hits):
            body["@odata.nextLink"] = (
                f"{self.url}/v1.0/{request.url.path.split('/v1.0/', 1)[1]}?startDateTime="
                f"{params['startDateTime']}&endDateTime={params['endDateTime']}"
                f"&$skip={skip + self.page_size}"
            )
        return JSONResponse(body)

    # --- serving ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve over TLS in a background thread until :meth:`stop`."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            ssl_certfile=str(self._cert_file),
            ssl_keyfile=str(self._key_file),
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_serving(self._server, self._thread, "the fake Graph server")
        return self

    def start_plain(self) -> str:
        """Serve the same endpoints over plain HTTP too (for a client that cannot be given
        the test CA, as dovecot's introspection); that URL."""
        port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_serving(server, thread, "the fake Graph server (plain HTTP)")
        self._plain = (server, thread)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Shut the servers down."""
        servers = [(self._server, self._thread)]
        if self._plain is not None:
            servers.append(self._plain)
        for server, _ in servers:
            if server is not None:
                server.should_exit = True
        for _, thread in servers:
            if thread is not None:
                thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {
            "error": error,
            "error_description": description,
            "error_codes": [int(re.search(r"AADSTS(\d+)", description)[1])]  # type: ignore[index]
            if "AADSTS" in description
            else [],
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        },
        status_code=status,
    )


def _graph_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
