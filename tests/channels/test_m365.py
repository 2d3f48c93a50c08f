"""The Microsoft 365 channel against the local identity platform and Graph (tests/fakes/graph.py),
driven by the real msal client over TLS: delta query, triage, categories, flags, moves,
sendMail, deltaLinks kept across restarts, token refresh, 429 with Retry-After, and consent
withdrawn (the channel reports itself misconfigured and waits, instead of a retry loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcos.channels.base import Inbound, Outbound
from mcos.channels.m365 import TRIAGED, M365Channel
from mcos.channels.oauth import OAuthTokens
from mcos.channels.runner import ChannelRunner
from mcos.cli import app
from mcos.config.models import ChannelConfig, OAuthConfig, TriageRule
from mcos.exceptions import ChannelMisconfigured
from tests import waiting
from tests.channels.test_email import Collector
from tests.fakes.graph import FakeGraph

USER = "donna@contoso.example"
MX = "mx.contoso.example"
RULES = [
    TriageRule.model_validate(
        {"from": "*@bank.example", "action": "urgent", "flag": True, "move_to": "Urgent"}
    ),
    TriageRule(subject="newsletter", action="ignore", move_to="Archive"),
]


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[FakeGraph]:
    """The fake identity platform and Graph, serving over TLS on a free port."""
    with FakeGraph(tmp_path) as fake:
        yield fake


def oauth(fake: FakeGraph, flow: str = "client_credentials") -> OAuthConfig:
    """The OAuth settings of an account on the fake tenant."""
    values: dict[str, Any] = {
        "tenant": fake.tenant,
        "client_id": fake.client_id,
        "authority_url": fake.url,
        "flow": flow,
    }
    if flow == "client_credentials":
        values["client_secret"] = "env:MCOS_TEST_GRAPH_SECRET"
    return OAuthConfig.model_validate(values)


def tokens_for(fake: FakeGraph, tmp: Path, flow: str = "client_credentials") -> OAuthTokens:
    """msal tokens for the fake tenant, its cache in ``tmp``."""
    scopes = ("Mail.ReadWrite", "Mail.Send") if flow == "device_code" else ()
    return OAuthTokens(
        "donna-mail",
        oauth(fake, flow),
        secret=fake.client_secret if flow == "client_credentials" else None,
        cache_path=tmp / "oauth" / "donna-mail.json",
        scopes=scopes,
        verify=str(fake.ca_file),
    )


def channel_for(
    fake: FakeGraph, tmp: Path, *, flow: str = "client_credentials", **settings: Any
) -> M365Channel:
    """An m365 channel on the fake's mailbox, looking every second."""
    values: dict[str, Any] = {
        "kind": "m365",
        "oauth": oauth(fake, flow).model_dump(),
        "graph_url": fake.url,
        "address": USER,
        "poll": "1s",
        "authserv_id": MX,
        "rules": [r.model_dump(by_alias=True, exclude_none=True) for r in RULES],
    }
    if flow == "client_credentials":
        values["mailbox"] = USER
    values.update(settings)
    config = ChannelConfig.model_validate(values)
    return M365Channel(
        "donna-mail",
        config,
        tokens_for(fake, tmp, flow),
        state_dir=tmp,
        verify=str(fake.ca_file),
    )


@contextlib.asynccontextmanager
async def running(channel: M365Channel, deliver: Collector) -> AsyncIterator[asyncio.Task[None]]:
    """run() as a task, cancelled (and the channel closed) on the way out."""
    task = asyncio.create_task(channel.run(deliver), name=f"test-run:{channel.name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelMisconfigured):
            await task
        await channel.aclose()


async def delivered(collector: Collector, count: int) -> None:
    """Until ``count`` items were delivered."""
    await waiting.eventually(
        lambda: f"{count} items delivered (got {collector.subjects()})",
        lambda: len(collector.items) >= count,
    )


class TestMailByDeltaQuery:
    """New mail found by delta query is triaged by the fleet file's rules, in the mailbox."""

    async def test_urgent_ignored_and_model_mail(self, graph: FakeGraph, tmp_path: Path) -> None:
        """Urgent bank mail (its DKIM vouched for by the receiving server) is flagged and moved
        to a folder made for it, the newsletter is archived unseen, the rest goes to the
        model; each is categorised McosTriaged, and a forged From is not urgent."""
        auth = {"Authentication-Results": f"{MX}; dkim=pass header.d=bank.example"}
        graph.deliver(USER, "Payment due", sender="alerts@bank.example", headers=auth)
        graph.deliver(USER, "Weekly newsletter #12")
        graph.deliver(USER, "Lunch?", body="<p>Shall <b>we</b>?</p>", html=True)
        graph.deliver(USER, "Wire now", sender="ceo@bank.example")  # no vouching header
        got = Collector()
        async with running(channel_for(graph, tmp_path), got):
            await delivered(got, 3)
            await waiting.eventually(
                "every message categorised",
                lambda: all(TRIAGED in m.categories for m in graph.box(USER).messages.values()),
            )
        by_subject = {i.subject: i for i in got.items}
        assert set(by_subject) == {"Payment due", "Lunch?", "Wire now"}
        assert by_subject["Payment due"].urgent
        assert by_subject["Payment due"].labels == ("flagged", "moved:Urgent")
        assert not by_subject["Wire now"].urgent
        assert by_subject["Lunch?"].text == "Shall we?"
        assert by_subject["Lunch?"].sender == "Alice <alice@partner.example>"
        urgent = graph.folder_named(USER, "Urgent")
        assert urgent is not None
        moved = graph.in_folder(USER, urgent)
        assert [m.subject for m in moved] == ["Payment due"]
        assert moved[0].flag == "flagged"
        assert [m.subject for m in graph.in_folder(USER, "archive")] == ["Weekly newsletter #12"]

    async def test_a_restart_resumes_from_the_kept_delta_link(
        self, graph: FakeGraph, tmp_path: Path
    ) -> None:
        """The deltaLink is kept in the run dir (0600); a new channel asks Graph only for
        what changed since, and delivers nothing twice."""
        for n in range(3):
            graph.deliver(USER, f"first {n}")
        first = Collector()
        async with running(channel_for(graph, tmp_path), first):
            await delivered(first, 3)
            kept = tmp_path / "m365" / "donna-mail.json"
            await waiting.eventually("the deltaLink kept", kept.exists)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert "$deltatoken=" in kept.read_text()
        queries = len(graph.delta_queries)
        second = Collector()
        graph.deliver(USER, "after the restart")
        async with running(channel_for(graph, tmp_path), second):
            await delivered(second, 1)
        assert second.subjects() == ["after the restart"]
        assert first.subjects() == ["first 0", "first 1", "first 2"]
        resumed = graph.delta_queries[queries]
        assert re.search(r"\$deltatoken=[1-9]", resumed), resumed

    async def test_a_refused_delivery_is_offered_again(
        self, graph: FakeGraph, tmp_path: Path
    ) -> None:
        """A message deliver refused keeps no category and comes back at the next look."""
        graph.deliver(USER, "flaky")
        graph.deliver(USER, "fine")
        refusals = 0

        def fail(item: Inbound) -> bool:
            nonlocal refusals
            if item.subject == "flaky" and refusals < 2:
                refusals += 1
                return True
            return False

        got = Collector(fail)
        async with running(channel_for(graph, tmp_path), got):
            await delivered(got, 2)
            await waiting.eventually(
                "both categorised",
                lambda: all(TRIAGED in m.categories for m in graph.box(USER).messages.values()),
            )
        assert sorted(got.subjects()) == ["fine", "flaky"]
        assert len(got.refused) == 2


class TestSending:
    """send() goes out through Graph's sendMail."""

    async def test_send_mail(self, graph: FakeGraph, tmp_path: Path) -> None:
        """The mail reaches sendMail with its recipient, subject and body."""
        channel = channel_for(graph, tmp_path)
        try:
            ref = await channel.send(
                Outbound(
                    "donna-mail", "See you at 3.", to="bob@partner.example", subject="Re: Lunch?"
                )
            )
        finally:
            await channel.aclose()
        assert ref.startswith("sendMail:")
        [sent] = graph.box(USER).sent
        assert sent["message"]["toRecipients"] == [
            {"emailAddress": {"address": "bob@partner.example"}}
        ]
        assert sent["message"]["subject"] == "Re: Lunch?"
        assert sent["message"]["body"]["content"] == "See you at 3."


class TestTokensAndThrottling:
    """msal renews tokens as they expire; Graph's throttling is waited out as it asks."""

    async def test_token_refreshed_on_expiry(self, tmp_path: Path) -> None:
        """With tokens that msal sees expiring after a second (it renews 5 minutes before the
        end), the channel keeps reading with fresh tokens and Graph never sees a stale one."""
        with FakeGraph(tmp_path, token_lifetime=301) as graph:
            graph.deliver(USER, "one")
            got = Collector()
            async with running(channel_for(graph, tmp_path), got):
                await delivered(got, 1)
                first_grants = len(graph.grants)
                expiry = datetime.now(UTC) + timedelta(seconds=1.5)

                async def now() -> datetime:
                    return datetime.now(UTC)

                await waiting.past(now, expiry)
                graph.deliver(USER, "two")
                await delivered(got, 2)
            assert first_grants >= 1
            assert len(graph.grants) > first_grants
            assert set(graph.grants) == {"client_credentials"}
            assert graph.unauthorized == 0

    async def test_429_retry_after_is_honoured(self, graph: FakeGraph, tmp_path: Path) -> None:
        """Two 429s with Retry-After: 1 are each waited out (at least a second before the next
        call), and the mail still arrives."""
        graph.deliver(USER, "through the throttle")
        graph.throttle(2, retry_after=1)
        channel = channel_for(graph, tmp_path)
        got = Collector()
        try:
            await channel.look("inbox", got)
        finally:
            await channel.aclose()
        assert got.subjects() == ["through the throttle"]
        assert len(graph.throttled_at) == 2
        times = [t for _, _, t in graph.graph_calls]
        for throttled in graph.throttled_at:
            following = min(t for t in times if t > throttled)
            assert following - throttled >= 1.0
        assert channel.graph.throttled == 2


class TestConsent:
    """Consent withdrawn or expired is a misconfiguration, reported once, not retried in a loop."""

    async def test_expired_consent_reports_misconfigured(
        self, graph: FakeGraph, tmp_path: Path
    ) -> None:
        """invalid_grant (AADSTS65001) ends the receiver with ChannelMisconfigured; the runner
        reports ``misconfigured`` and pauses for an hour instead of restarting it."""
        graph.revoke_consent()
        channel = channel_for(graph, tmp_path)
        reports: list[tuple[str, str]] = []
        pauses: list[float] = []
        parked = asyncio.Event()

        async def report(what: str, detail: str) -> None:
            reports.append((what, detail))

        async def sleep(seconds: float) -> None:
            if seconds < 60:  # the lease keeper's renewal ticks: real, short
                await asyncio.sleep(seconds)
                return
            pauses.append(seconds)
            parked.set()
            await asyncio.Event().wait()  # the test ends here

        class NoLeases:
            async def acquire(self, key: str, holder: str, ttl: float) -> int:
                return 1

            async def renew(self, key: str, holder: str, fence: int, ttl: float) -> None:
                return None

            async def release(self, key: str, holder: str, fence: int) -> None:
                return None

        runner = ChannelRunner(channel, Collector(), NoLeases(), "donna@test", report, sleep=sleep)
        task = asyncio.create_task(runner.run(), name="test-runner")
        try:
            await asyncio.wait_for(parked.wait(), 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await channel.aclose()
        assert [w for w, _ in reports] == ["receiving", "misconfigured"]
        assert "AADSTS65001" in reports[1][1]
        assert "consent" in reports[1][1]
        assert pauses == [runner.misconfigured_pause]
        assert runner.misconfigured is not None
        assert graph.grants == ["client_credentials"]  # asked once, not in a loop


class TestDeviceCode:
    """A delegated mailbox: a person signs in once with a device code; the tokens persist."""

    async def test_sign_in_then_read_own_mailbox_after_restart(
        self, graph: FakeGraph, tmp_path: Path
    ) -> None:
        """The sign-in's tokens go to a 0600 cache file; a later channel (a new process) reads
        ``/me`` with them, refreshing through the refresh token without asking anyone."""
        tokens = tokens_for(graph, tmp_path, "device_code")
        shown: list[str] = []

        def show(message: str) -> None:
            shown.append(message)
            code = re.search(r"enter the code (\w+)", message)
            assert code is not None
            graph.approve_device(code[1], USER)

        try:
            await asyncio.to_thread(tokens.device_login, show)
        finally:
            tokens.close()
        cache = tmp_path / "oauth" / "donna-mail.json"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert "microsoft.com/devicelogin" in shown[0]
        graph.tokens.clear()  # every access token gone: only the refresh token can help
        graph.deliver(USER, "for donna")
        got = Collector()
        async with running(channel_for(graph, tmp_path, flow="device_code"), got):
            await delivered(got, 1)
        assert got.subjects() == ["for donna"]
        assert graph.grants[0] == "urn:ietf:params:oauth:grant-type:device_code"
        assert "refresh_token" in graph.grants
        assert any(p.startswith("me/") for _, p, _ in graph.graph_calls)

    async def test_nobody_signed_in_is_misconfigured(
        self, graph: FakeGraph, tmp_path: Path
    ) -> None:
        """Without a sign-in the channel says how to sign in, as a misconfiguration."""
        channel = channel_for(graph, tmp_path, flow="device_code")
        try:
            with pytest.raises(ChannelMisconfigured, match="mcos m365 login donna-mail"):
                await channel.look("inbox", Collector())
        finally:
            await channel.aclose()


class TestLoginCommand:
    """``mcos m365 login NAME`` signs a person in for a device-code channel of the fleet file."""

    def test_login_keeps_tokens_in_the_run_dir(
        self, graph: FakeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command prints the code, waits for the sign-in, and leaves a 0600 cache under
        the fleet's state dir; a channel opened from the fleet file then reads ``/me``."""
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            '[hosts.h]\n[agents.donna]\nrole = "comms"\nhost = "h"\n'
            f'[channels.donna-mail]\nkind = "m365"\nagent = "donna"\naddress = "{USER}"\n'
            f'graph_url = "{graph.url}"\n'
            f'oauth = {{ tenant = "{graph.tenant}", client_id = "{graph.client_id}", '
            f'flow = "device_code", authority_url = "{graph.url}" }}\n'
        )
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(graph.ca_file))  # msal trusts the fake

        def approve() -> None:
            def pending() -> list[str]:
                return [str(f["user_code"]) for f in graph.devices.values()]

            code = waiting.wait_until("a device code issued", pending)[0]
            graph.approve_device(code, USER)

        approver = threading.Thread(target=approve, daemon=True)
        approver.start()
        result = CliRunner().invoke(app, ["m365", "login", "donna-mail", "--fleet", str(fleet)])
        approver.join(30)
        assert result.exit_code == 0, result.output
        assert "microsoft.com/devicelogin" in result.output
        cache = tmp_path / "state" / "oauth" / "donna-mail.json"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert "signed in" in result.output


class TestConfig:
    """The fleet file's m365 and XOAUTH2 settings are checked where they are written."""

    @pytest.mark.parametrize(
        ("values", "said"),
        [
            ({"kind": "m365", "address": USER}, "a m365 channel needs oauth"),
            (
                {"kind": "m365", "address": USER, "oauth": {"tenant": "t", "client_id": "c"}},
                "client_credentials flow needs client_secret",
            ),
            (
                {
                    "kind": "m365",
                    "address": USER,
                    "oauth": {"tenant": "t", "client_id": "c", "client_secret": "env:S"},
                },
                "needs mailbox",
            ),
            (
                {"kind": "email", "imap_host": "h", "username": "u", "address": USER},
                "exactly one of password or oauth",
            ),
            ({"kind": "m365", "imap_host": "h"}, "imap_host: not a setting of a m365 channel"),
        ],
    )
    def test_refused(self, values: dict[str, Any], said: str) -> None:
        """Each wrong combination is refused with a message naming the setting."""
        with pytest.raises(ValueError, match=said):
            ChannelConfig.model_validate(values)

    def test_device_code_needs_no_mailbox(self) -> None:
        """A delegated mailbox is the signed-in user's own (``/me``)."""
        config = ChannelConfig.model_validate(
            {
                "kind": "m365",
                "address": USER,
                "oauth": {"tenant": "t", "client_id": "c", "flow": "device_code"},
            }
        )
        assert config.mailbox is None
