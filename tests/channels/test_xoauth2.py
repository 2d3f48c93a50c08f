"""The e-mail channel logging in with SASL XOAUTH2 and an msal token instead of a password.

IMAP: a real dovecot whose oauth2 passdb checks each token at the fake identity platform's
introspection endpoint (RFC 7662, POST) — the token comes from msal's client-credentials grant
against the same fake (tests/fakes/graph.py), over TLS. SMTP: aiosmtpd with an XOAUTH2
mechanism that checks the bearer token against the tokens the fake issued.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult

from mcos.channels.base import Outbound
from mcos.channels.email import EmailChannel
from mcos.channels.oauth import OAuthTokens
from mcos.config.models import ChannelConfig
from mcos.exceptions import ChannelMisconfigured
from tests import waiting
from tests.api.conftest import free_port
from tests.channels.conftest import Dovecot, RecordingHandler, append, make_mail, run_dovecot
from tests.channels.test_email import Collector
from tests.channels.test_m365 import oauth
from tests.fakes.graph import FakeGraph

APP_SCOPES = ("https://outlook.office365.com/.default",)


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[FakeGraph]:
    """The fake identity platform; its app tokens are good for alice's mailbox."""
    with FakeGraph(tmp_path, app_login="alice") as fake:
        yield fake


@pytest.fixture
def oauth_dovecot(tmp_path: Path, graph: FakeGraph) -> Iterator[Dovecot]:
    """dovecot taking XOAUTH2 tokens the fake's introspection endpoint says are active."""
    plain = graph.start_plain()
    yield from run_dovecot(tmp_path, f"{plain}/introspect")


@dataclass
class XOAuth2Handler(RecordingHandler):
    """Records mail; AUTH XOAUTH2 succeeds for a token the fake issued and has not expired."""

    graph: FakeGraph | None = None
    logins: list[str] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTPServer, args: list[str]) -> AuthResult:
        """aiosmtpd's hook for ``AUTH XOAUTH2 <initial response>``."""
        assert self.graph is not None
        fields = dict(
            part.split("=", 1)
            for part in base64.b64decode(args[1]).decode().split("\x01")
            if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ")
        if token not in self.graph.tokens:
            return AuthResult(success=False, handled=False)
        self.logins.append(fields.get("user", ""))
        return AuthResult(success=True, auth_data=fields.get("user"))


@pytest.fixture
def smtp_oauth(graph: FakeGraph) -> Iterator[tuple[int, XOAuth2Handler]]:
    """aiosmtpd requiring AUTH (XOAUTH2 over loopback, no TLS in the test); port, handler."""
    handler = XOAuth2Handler(graph=graph)
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=["PLAIN", "LOGIN"],
    )
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def channel(graph: FakeGraph, server: Dovecot, tmp: Path, **settings: Any) -> EmailChannel:
    """alice's IMAP channel on XOAUTH2, tokens from the fake by client credentials."""
    values: dict[str, Any] = {
        "kind": "email",
        "imap_host": server.host,
        "imap_port": server.port,
        "imap_tls": "none",
        "username": "alice",
        "oauth": oauth(graph).model_dump(),
        "address": "alice@example.com",
        "poll": "1s",
        "idle": False,
    }
    values.update(settings)
    tokens = OAuthTokens(
        "alice-mail",
        oauth(graph),
        secret=graph.client_secret,
        cache_path=tmp / "oauth" / "alice-mail.json",
        scopes=APP_SCOPES,
        verify=str(graph.ca_file),
    )
    return EmailChannel("alice-mail", ChannelConfig.model_validate(values), "", tokens=tokens)


@contextlib.asynccontextmanager
async def running(mail: EmailChannel, got: Collector) -> AsyncIterator[asyncio.Task[None]]:
    """run() as a task, cancelled on the way out."""
    task = asyncio.create_task(mail.run(got), name="test-run:xoauth2")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelMisconfigured):
            await task
        await mail.aclose()


class TestImap:
    """dovecot's oauth2 passdb lets the channel in on the token alone."""

    async def test_mail_arrives_over_an_xoauth2_login(
        self, graph: FakeGraph, oauth_dovecot: Dovecot, tmp_path: Path
    ) -> None:
        """No password configured: the msal token logs in and the mail is delivered."""
        await append(oauth_dovecot, "alice", make_mail("over oauth"))
        got = Collector()
        async with running(channel(graph, oauth_dovecot, tmp_path), got):
            await waiting.eventually("the mail delivered", lambda: got.subjects() == ["over oauth"])
        assert "alice" in graph.introspected
        assert graph.grants == ["client_credentials"]

    async def test_withdrawn_consent_ends_the_run_as_misconfigured(
        self, graph: FakeGraph, oauth_dovecot: Dovecot, tmp_path: Path
    ) -> None:
        """No token can be had: run() ends with ChannelMisconfigured at once, no retry loop."""
        graph.revoke_consent()
        mail = channel(graph, oauth_dovecot, tmp_path)
        try:
            with pytest.raises(ChannelMisconfigured, match="AADSTS65001"):
                await asyncio.wait_for(mail.run(Collector()), 30)
        finally:
            await mail.aclose()
        assert graph.grants == ["client_credentials"]


class TestSmtp:
    """Sending authenticates with AUTH XOAUTH2."""

    async def test_send_over_xoauth2(
        self,
        graph: FakeGraph,
        smtp_oauth: tuple[int, XOAuth2Handler],
        tmp_path: Path,
    ) -> None:
        """The mail is accepted by a server that offers XOAUTH2 only."""
        port, handler = smtp_oauth
        server = Dovecot("127.0.0.1", free_port(), {}, tmp_path / "none", tmp_path / "none")
        mail = channel(
            graph, server, tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none"
        )
        try:
            await mail.send(
                Outbound("alice-mail", "Hello over OAuth", to="bob@example.org", subject="Hi")
            )
        finally:
            await mail.aclose()
        assert handler.logins == ["alice"]
        [received] = handler.received
        assert received.recipients == ["bob@example.org"]
        assert received.message["Subject"] == "Hi"
