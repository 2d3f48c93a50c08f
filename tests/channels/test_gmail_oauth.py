"""Gmail-style XOAUTH2: access tokens from a standing refresh token at Google's token endpoint.

The token endpoint is tests/fakes/google.py over TLS (authlib's httpx client, given the test
CA); IMAP is a real dovecot whose oauth2 passdb checks each token at the same fake's
introspection endpoint, so only tokens the fake issued (and has not expired) log in; SMTP is
aiosmtpd offering XOAUTH2 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult
from typer.testing import CliRunner

from mcos.channels.base import Outbound
from mcos.channels.email import EmailChannel
from mcos.channels.factory import GMAIL_SCOPES, open_channel
from mcos.channels.oauth_refresh import ATTEMPTS, RefreshTokens
from mcos.cli import app
from mcos.config.loader import load_fleet
from mcos.config.models import GOOGLE_TOKEN_URL, CalendarConfig, ChannelConfig, OAuthConfig
from mcos.config.secrets import key_uses, resolve_all
from mcos.exceptions import ChannelError, ChannelMisconfigured
from tests import waiting
from tests.api.conftest import free_port
from tests.channels.conftest import Dovecot, RecordingHandler, append, make_mail, run_dovecot
from tests.channels.test_email import Collector
from tests.fakes.google import MAIL_SCOPE, FakeGoogle


@pytest.fixture
def google(tmp_path: Path) -> Iterator[FakeGoogle]:
    """Google's token endpoint; alice consented to the Gmail scope."""
    with FakeGoogle(tmp_path) as fake:
        yield fake


def oauth(google: FakeGoogle) -> OAuthConfig:
    """The fleet file's ``oauth`` table for the fake (secrets by reference)."""
    return OAuthConfig.model_validate(
        {
            "provider": "oauth2",
            "client_id": google.client_id,
            "client_secret": "env:GMAIL_SECRET",
            "refresh_token": "env:GMAIL_REFRESH",
            "token_url": google.token_url,
        }
    )


def tokens(google: FakeGoogle, **kw: Any) -> RefreshTokens:
    """The channel's token source with the secrets resolved, trusting the fake's CA."""
    return RefreshTokens(
        "alice-gmail",
        oauth(google),
        refresh_token=google.refresh_token,
        secret=google.client_secret,
        scopes=GMAIL_SCOPES,
        verify=str(google.ca_file),
        backoff=0.01,
        **kw,
    )


class TestTokens:
    """The refresh_token grant, renewal before expiry, errors sorted."""

    async def test_token_is_fetched_once_and_reused(self, google: FakeGoogle) -> None:
        """One grant with the client's secret in the body; the hour's token is reused."""
        source = tokens(google)
        first = await source.token()
        assert await source.token() == first
        assert first in google.tokens
        [form] = google.requests
        assert form["grant_type"] == "refresh_token"
        assert form["refresh_token"] == google.refresh_token
        assert form["client_id"] == google.client_id
        assert form["client_secret"] == google.client_secret
        assert form["scope"] == MAIL_SCOPE

    async def test_token_is_renewed_before_it_expires(self, tmp_path: Path) -> None:
        """A token within the leeway (60 s) of its expiry is replaced before it is used."""
        with FakeGoogle(tmp_path, token_lifetime=30) as google:
            source = tokens(google)
            first = await source.token()
            second = await source.token()
        assert first != second
        assert len(google.requests) == 2

    async def test_revoked_consent_is_misconfigured(self, google: FakeGoogle) -> None:
        """invalid_grant is no transient failure: one request, and a person is asked."""
        google.revoke()
        with pytest.raises(ChannelMisconfigured, match=r"invalid_grant.*expired or revoked"):
            await tokens(google).token()
        assert len(google.requests) == 1

    async def test_wrong_client_secret_is_misconfigured(self, google: FakeGoogle) -> None:
        """invalid_client (401) names the client settings to fix."""
        source = RefreshTokens(
            "alice-gmail",
            oauth(google),
            refresh_token=google.refresh_token,
            secret="wrong",
            verify=str(google.ca_file),
        )
        with pytest.raises(ChannelMisconfigured, match=r"invalid_client.*client_secret"):
            await source.token()

    async def test_throttling_and_server_errors_are_retried(self, google: FakeGoogle) -> None:
        """A 429 and a 503 are tried again (with backoff) until the grant succeeds."""
        google.fail(429, retry_after=1)
        google.fail(503)
        token = await tokens(google).token()
        assert token in google.tokens
        assert len(google.requests) == 3
        first, second, _ = google.request_times
        assert second - first >= 1.0  # the 429's Retry-After was waited out

    async def test_a_failing_endpoint_is_transient_after_the_retries(
        self, google: FakeGoogle
    ) -> None:
        """Still 500 after every try: a ChannelError (retry later), not misconfigured."""
        google.fail(500, times=ATTEMPTS)
        with pytest.raises(ChannelError, match="HTTP 500") as caught:
            await tokens(google).token()
        assert not isinstance(caught.value, ChannelMisconfigured)
        assert len(google.requests) == ATTEMPTS

    async def test_an_unreachable_endpoint_is_transient(self, google: FakeGoogle) -> None:
        """Nothing listening: a ChannelError naming the endpoint."""
        config = oauth(google).model_copy(
            update={"token_url": f"https://127.0.0.1:{free_port()}/token"}
        )
        source = RefreshTokens("alice-gmail", config, refresh_token="r", secret="s", backoff=0.01)
        with pytest.raises(ChannelError, match="unreachable"):
            await source.token()


@pytest.fixture
def google_dovecot(tmp_path: Path, google: FakeGoogle) -> Iterator[Dovecot]:
    """dovecot taking XOAUTH2 tokens the fake Google says are active."""
    yield from run_dovecot(tmp_path, f"{google.start_plain()}/introspect")


def channel(google: FakeGoogle, server: Dovecot, **settings: Any) -> EmailChannel:
    """alice's IMAP channel on XOAUTH2 with tokens from her refresh token."""
    values: dict[str, Any] = {
        "kind": "email",
        "imap_host": server.host,
        "imap_port": server.port,
        "imap_tls": "none",
        "username": "alice",
        "oauth": oauth(google).model_dump(exclude_defaults=True),
        "address": "alice@example.com",
        "poll": "1s",
        "idle": False,
    }
    values.update(settings)
    config = ChannelConfig.model_validate(values)
    return EmailChannel("alice-gmail", config, "", tokens=tokens(google))


@contextlib.asynccontextmanager
async def running(mail: EmailChannel, got: Collector) -> AsyncIterator[asyncio.Task[None]]:
    """run() as a task, cancelled on the way out."""
    task = asyncio.create_task(mail.run(got), name="test-run:gmail")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelMisconfigured):
            await task
        await mail.aclose()


class TestImap:
    """dovecot lets the channel in on the refreshed token alone."""

    async def test_mail_arrives_over_xoauth2(
        self, google: FakeGoogle, google_dovecot: Dovecot
    ) -> None:
        """No password: the token from the refresh grant logs in; the mail is delivered."""
        await append(google_dovecot, "alice", make_mail("over gmail oauth"))
        got = Collector()
        async with running(channel(google, google_dovecot), got):
            await waiting.eventually(
                "the mail delivered", lambda: got.subjects() == ["over gmail oauth"]
            )
        assert "alice" in google.introspected
        assert [f["grant_type"] for f in google.requests] == ["refresh_token"]

    async def test_revoked_refresh_token_ends_the_run_as_misconfigured(
        self, google: FakeGoogle, google_dovecot: Dovecot
    ) -> None:
        """invalid_grant: run() ends with ChannelMisconfigured at once, no retry loop."""
        google.revoke()
        mail = channel(google, google_dovecot)
        try:
            with pytest.raises(ChannelMisconfigured, match="invalid_grant"):
                await asyncio.wait_for(mail.run(Collector()), 30)
        finally:
            await mail.aclose()
        assert len(google.requests) == 1


@dataclass
class GoogleXOAuth2(RecordingHandler):
    """Records mail; AUTH XOAUTH2 succeeds for a live token the fake Google issued."""

    google: FakeGoogle | None = None
    logins: list[str] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTPServer, args: list[str]) -> AuthResult:
        """aiosmtpd's hook for ``AUTH XOAUTH2 <initial response>``."""
        assert self.google is not None
        fields = dict(
            part.split("=", 1)
            for part in base64.b64decode(args[1]).decode().split("\x01")
            if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ")
        if token not in self.google.tokens:
            return AuthResult(success=False, handled=False)
        self.logins.append(fields.get("user", ""))
        return AuthResult(success=True, auth_data=fields.get("user"))


class TestSmtp:
    """Sending authenticates with AUTH XOAUTH2 and the refreshed token."""

    async def test_send_over_xoauth2(self, google: FakeGoogle, tmp_path: Path) -> None:
        """A server offering XOAUTH2 only accepts the mail."""
        handler = GoogleXOAuth2(google=google)
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
        server = Dovecot("127.0.0.1", free_port(), {}, tmp_path / "none", tmp_path / "none")
        mail = channel(google, server, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
        try:
            await mail.send(Outbound("alice-gmail", "Hi from Gmail", to="bob@example.org"))
        finally:
            await mail.aclose()
            controller.stop()
        assert handler.logins == ["alice"]
        [received] = handler.received
        assert received.recipients == ["bob@example.org"]


GMAIL_FLEET = (
    '[hosts.h]\n[agents.donna]\nrole = "comms"\nhost = "h"\n'
    '[channels.gmail]\nkind = "email"\nagent = "donna"\nimap_host = "imap.gmail.com"\n'
    'username = "donna@gmail.com"\naddress = "donna@gmail.com"\n'
    'smtp_host = "smtp.gmail.com"\n'
    'oauth = { provider = "google", client_id = "1234.apps.googleusercontent.com", '
    'client_secret = "env:GMAIL_SECRET", refresh_token = "env:GMAIL_REFRESH" }\n'
)


class TestConfig:
    """The fleet file's ``oauth`` for Google: validated, its secrets checked and resolved."""

    def test_secrets_are_checked_and_resolved(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`mcos config check` sees the refresh token; open_channel resolves both secrets."""
        path = tmp_path / "fleet.toml"
        path.write_text(GMAIL_FLEET)
        fleet = load_fleet(path)
        uses = {u.where: u.reference for u in key_uses(fleet)}
        assert uses["channels.gmail.oauth.refresh_token"] == "env:GMAIL_REFRESH"
        assert uses["channels.gmail.oauth.client_secret"] == "env:GMAIL_SECRET"
        missing = {r.use.where for r in resolve_all(fleet, env={}) if r.problem}
        assert "channels.gmail.oauth.refresh_token" in missing
        monkeypatch.setenv("GMAIL_SECRET", "s")
        monkeypatch.setenv("GMAIL_REFRESH", "r")
        mail = open_channel("gmail", fleet)
        assert isinstance(mail, EmailChannel)
        source = mail._tokens  # which token source the factory chose
        assert isinstance(source, RefreshTokens)
        assert source.url == GOOGLE_TOKEN_URL
        assert source.scopes == list(GMAIL_SCOPES)

    @pytest.mark.parametrize(
        ("oauth_table", "problem"),
        [
            (
                '{ provider = "google", client_id = "c", client_secret = "env:S" }',
                "needs refresh_token",
            ),
            (
                '{ provider = "google", client_id = "c", refresh_token = "env:R" }',
                "needs client_secret",
            ),
            (
                '{ provider = "oauth2", client_id = "c", refresh_token = "env:R" }',
                "needs token_url",
            ),
            (
                '{ provider = "google", tenant = "t", client_id = "c", client_secret = "env:S", '
                'refresh_token = "env:R" }',
                "tenant: not a setting of provider google",
            ),
            (
                '{ tenant = "t", client_id = "c", client_secret = "env:S", '
                'refresh_token = "env:R" }',
                "refresh_token: not a setting of provider microsoft",
            ),
            (
                '{ provider = "google", client_id = "c", client_secret = "env:S", '
                'refresh_token = "R" }',
                "refresh_token",
            ),
        ],
    )
    def test_bad_oauth_is_refused(self, oauth_table: str, problem: str) -> None:
        """Each mistake is named."""
        with pytest.raises(ValueError, match=problem):
            OAuthConfig.model_validate(tomllib.loads(f"o = {oauth_table}")["o"])

    def test_m365_refuses_google(self) -> None:
        """Graph needs Microsoft's tokens."""
        with pytest.raises(ValueError, match=r"needs oauth\.provider microsoft"):
            ChannelConfig.model_validate(
                {
                    "kind": "m365",
                    "address": "a@b.example",
                    "oauth": {
                        "provider": "google",
                        "client_id": "c",
                        "client_secret": "env:S",
                        "refresh_token": "env:R",
                    },
                }
            )

    def test_m365_login_refuses_a_google_account(self, tmp_path: Path) -> None:
        """A refresh-token account does not sign in with a device code; the CLI says so."""
        path = tmp_path / "fleet.toml"
        path.write_text(GMAIL_FLEET)
        result = CliRunner().invoke(app, ["m365", "login", "gmail", "--fleet", str(path)])
        assert result.exit_code != 0
        assert "provider google signs in with its refresh_token" in result.output

    def test_graph_calendar_refuses_google(self) -> None:
        """A Graph calendar needs Microsoft's tokens too."""
        with pytest.raises(ValueError, match=r"graph calendar needs oauth\.provider microsoft"):
            CalendarConfig.model_validate(
                {
                    "kind": "graph",
                    "mailbox": "a@b.example",
                    "oauth": {
                        "provider": "google",
                        "client_id": "c",
                        "client_secret": "env:S",
                        "refresh_token": "env:R",
                    },
                }
            )
