"""Mission Control's channel routes: the one-receiver lease over HTTP, inbound items only from
the bound agent, and Telegram's webhook with its secret-token header checked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mcos.channels.base import Inbound, account_key
from mcos.channels.factory import lease_key, open_channel
from mcos.channels.mock import MockChannel
from mcos.client import Calls
from mcos.config import load_fleet
from mcos.domain.messages import Priority
from mcos.domain.paging import PageRoute
from mcos.exceptions import Forbidden, LeaseHeld, NotFound
from mcos.runtime.channels import inbound_body
from mcos.server.context import ChannelBinding
from mcos.server.factory import channel_bindings
from tests.api.conftest import LiveServer, migrate, serve
from tests.api.test_dashboard import _sign_in
from tests.waiting import stays, wait_until

SECRET = "webhook-secret-0123456789"
KEY = account_key("telegram", "123:ABC")
OTHER = account_key("telegram", "456:DEF")
UNRESOLVED = "env:OPS_TG: the variable OPS_TG is not set"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    with serve(
        url,
        tmp_path,
        channels={
            "tg": ChannelBinding("telegram", "gene", KEY),
            "hook": ChannelBinding("telegram", "gene"),
            "notes": ChannelBinding("mock", "gene"),
            "ops-tg": ChannelBinding("telegram", "jarvis", lease_key_problem=UNRESOLVED),
        },
        webhook_secrets={"hook": SECRET},
    ) as live:
        yield live


def test_one_receiver_per_account_over_http(server: LiveServer) -> None:
    """gene's two processes contend: the second is told who holds it; jarvis may not ask."""
    with server.client("gene") as gene, server.client("jarvis") as jarvis:
        first = gene.do(Calls.acquire_channel_lease("tg", KEY, "gene@a:1", "a", 15))
        with pytest.raises(LeaseHeld):
            gene.do(Calls.acquire_channel_lease("tg", KEY, "gene@b:2", "b", 15))
        gene.do(Calls.renew_channel_lease("tg", KEY, "gene@a:1", first.fence, 15))
        gene.do(Calls.release_channel_lease("tg", KEY, "gene@a:1", first.fence))
        second = gene.do(Calls.acquire_channel_lease("tg", KEY, "gene@b:2", "b", 15))
        assert second.fence > first.fence
        with pytest.raises(Forbidden, match="only gene acts for channel tg"):
            jarvis.do(Calls.acquire_channel_lease("tg", KEY, "jarvis@a:1", "a", 15))
        with pytest.raises(NotFound):
            gene.do(Calls.acquire_channel_lease("nope", KEY, "gene@a:1", "a", 15))


def test_a_channel_leases_only_its_own_accounts_key(server: LiveServer) -> None:
    """Before: gene, bound to the mock channel notes, took the Telegram account's lease through
    it (200), and through tg the lease of any other Telegram account. Now 403, audited."""
    with server.client("gene") as gene, server.client("jarvis") as jarvis:
        with pytest.raises(Forbidden, match="channel notes \\(mock\\) takes no lease"):
            gene.do(Calls.acquire_channel_lease("notes", KEY, "gene@a:1", "a", 15))
        with pytest.raises(Forbidden, match="for its own account's key only"):
            gene.do(Calls.acquire_channel_lease("tg", OTHER, "gene@a:1", "a", 15))
        with pytest.raises(Forbidden, match="for its own account's key only"):
            gene.do(Calls.renew_channel_lease("tg", OTHER, "gene@a:1", 1, 15))
        with pytest.raises(Forbidden, match="for its own account's key only"):
            gene.do(Calls.release_channel_lease("tg", OTHER, "gene@a:1", 1))
        with pytest.raises(Forbidden, match="cannot derive channel ops-tg's lease key"):
            jarvis.do(Calls.acquire_channel_lease("ops-tg", OTHER, "jarvis@a:1", "a", 15))
        assert gene.do(Calls.acquire_channel_lease("tg", KEY, "gene@a:1", "a", 15)).fence == 1
    with server.client() as operator:
        refused = [r for r in operator.do(Calls.audit(action="channel.lease"))
                   if r.outcome == "refused"]  # fmt: skip
        assert len(refused) == 5
        assert {"channel": "notes", "key": KEY} in [r.targets for r in refused]
        assert OTHER not in {lease.agent for lease in operator.do(Calls.leases())}


def test_mission_control_derives_each_key_as_the_channel_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key Mission Control expects is the one the channel's receiver asks for; a token it
    cannot resolve leaves the key unknown and says why."""
    monkeypatch.setenv("MCOS_TEST_LEASE_TG", "123:ABC")
    monkeypatch.setenv("MCOS_TEST_LEASE_HOOK", "456:DEF")
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(
        '[hosts.a]\n[agents.gene]\nrole = "ops"\nhost = "a"\n'
        '[channels.tg]\nkind = "telegram"\nagent = "gene"\ntoken = "env:MCOS_TEST_LEASE_TG"\n'
        '[channels.hook]\nkind = "telegram"\nagent = "gene"\ntoken = "env:MCOS_TEST_LEASE_HOOK"\n'
        'mode = "webhook"\nwebhook_secret = "env:MCOS_TEST_LEASE_HOOK"\n'
        '[channels.mail]\nkind = "email"\nagent = "gene"\nimap_host = "imap.example"\n'
        'username = "gene"\npassword = "env:MCOS_TEST_LEASE_TG"\naddress = "g@example"\n'
        '[channels.notes]\nkind = "mock"\nagent = "gene"\n'
        '[channels.lost]\nkind = "telegram"\nagent = "gene"\ntoken = "env:MCOS_TEST_UNSET"\n'
    )
    fleet = load_fleet(fleet_file)

    async def opened() -> dict[str, str | None]:
        keys = {}
        for name in ("tg", "hook", "mail", "notes"):
            channel = open_channel(name, fleet)
            keys[name] = channel.exclusive_key()
            close = getattr(channel, "aclose", None)
            if close is not None and name != "mail":
                await close()
        return keys

    assert {n: lease_key(n, fleet) for n in ("tg", "hook", "mail", "notes")} == asyncio.run(
        opened()
    )
    bindings = channel_bindings(fleet)
    assert bindings["tg"].lease_key == KEY
    assert bindings["notes"].lease_key is None
    assert (bindings["lost"].lease_key, bindings["lost"].lease_key_problem) == (
        None,
        "env:MCOS_TEST_UNSET: the variable MCOS_TEST_UNSET is not set",
    )


def test_the_webhook_checks_telegrams_secret(server: LiveServer) -> None:
    """Wrong or missing secret: 401, audited, nothing stored; right one: gene has the message."""
    update = {
        "update_id": 9,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": 77, "type": "private"},
            "from": {"id": 77, "is_bot": False, "first_name": "Ann", "username": "ann"},
            "text": "hello from Telegram",
        },
    }
    hook = f"{server.url}/v1/channels/hook/telegram"
    header = "X-Telegram-Bot-Api-Secret-Token"
    assert httpx.post(hook, json=update).status_code == 401
    assert httpx.post(hook, json=update, headers={header: "guess"}).status_code == 401
    bad = httpx.post(hook, json={"update_id": "x"}, headers={header: SECRET})
    assert bad.status_code == 422
    assert "not a Telegram update" in bad.text
    assert httpx.post(hook, json=update, headers={header: SECRET}).status_code == 200
    assert httpx.post(hook, json=update, headers={header: SECRET}).status_code == 200  # again
    assert httpx.post(f"{server.url}/v1/channels/tg/telegram", json=update).status_code == 404
    with server.client("gene") as gene, server.client() as operator:
        got = gene.do(Calls.inbox(wait=0)).deliveries
        assert [d.message.body for d in got] == ["hello from Telegram"]  # once, not twice
        assert got[0].message.meta["origin"] == "telegram channel hook (from @ann)"
        refused = operator.do(Calls.audit(action="channel.webhook"))
        assert len(refused) == 2


def test_an_urgent_item_reaches_the_agent_and_pages_the_human(tmp_path: Path) -> None:
    """A triage rule's urgent mail: gene is woken urgently and the founder is paged, once."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    pager = MockChannel("pager", tmp_path / "pager")
    with serve(
        url,
        tmp_path,
        channels={"mail": ChannelBinding("email", "gene"), "pager": ChannelBinding("mock", None)},
        page_routes={"founder": (PageRoute("pager", "mock", "founder"),)},
        own_channels={"pager": pager},
    ) as live:
        item = Inbound(
            "mail", "Bank <alerts@bank.example>", "Wire pending approval", datetime.now(UTC),
            ref="INBOX/1/7", sender_id="alerts@bank.example", reply_to="alerts@bank.example",
            subject="Wire pending", urgent=True, labels=("flagged", "moved:Urgent"),
        )  # fmt: skip
        with live.client("gene") as gene, live.client() as operator:
            first = gene.do(Calls.channel_inbound("mail", inbound_body(item)))
            again = gene.do(Calls.channel_inbound("mail", inbound_body(item)))
            assert (first.created, first.paged, again.created, again.paged) == (True, 1, False, 0)
            (delivery,) = gene.do(Calls.inbox(wait=0)).deliveries
            assert delivery.message.priority.value == "urgent"
            (page,) = operator.do(Calls.pages())
            assert (page.kind, page.state, page.channel) == ("urgent", "sent", "pager")
        posts = pager.outbox.read_text().splitlines()
        assert len(posts) == 1
        assert "Wire pending" in posts[0]


def test_an_unacknowledged_page_is_sent_again_then_stops(tmp_path: Path) -> None:
    """Nobody acknowledges: the page goes out again (as a reminder) up to its limit."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    pager = MockChannel("pager", tmp_path / "pager")
    with (
        serve(
            url,
            tmp_path,
            channels={"pager": ChannelBinding("mock", None)},
            page_routes={"founder": (PageRoute("pager", "mock", "founder"),)},
            own_channels={"pager": pager},
            sweep_seconds=0.2,
            repage_after=timedelta(seconds=0.5),
            max_page_attempts=3,
        ) as live,
        live.client("gene") as gene,
        live.client() as operator,
    ):
        gene.do(
            Calls.send("founder", "disk full on db-1", subject="disk", priority=Priority.URGENT)
        )

        def posts() -> list[str]:
            return pager.outbox.read_text().splitlines() if pager.outbox.exists() else []

        wait_until("the page and two reminders", lambda: len(posts()) >= 3)
        # Then no more: watch for twice the re-page interval (sweeps every 0.2 s).
        stays("no fourth post", lambda: len(posts()) == 3, duration=1.0)
        assert "[REMINDER, URGENT]" in posts()[1]
        (page,) = operator.do(Calls.pages())
        assert (page.attempts, page.state) == (3, "sent")


def test_the_dashboard_shows_pages_and_takes_the_acknowledgement(tmp_path: Path) -> None:
    """The founder sees the page on /pages and acknowledges it there (with the CSRF token)."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    with serve(
        url,
        tmp_path,
        channels={"pager": ChannelBinding("mock", None)},
        page_routes={"founder": (PageRoute("pager", "mock", "founder"),)},
        own_channels={"pager": MockChannel("pager", tmp_path / "pager")},
    ) as live:
        with live.client("gene") as gene:
            gene.do(Calls.send("founder", "db down", subject="db", priority=Priority.URGENT))
        with httpx.Client(base_url=live.url, follow_redirects=False, timeout=10) as web:
            _, csrf = _sign_in(live, web)
            page = web.get("/pages").text
            assert "from gene: db" in page
            assert 'action="/pages/1/ack"' in page
            assert web.post("/pages/1/ack", data={}).status_code == 403  # no CSRF token
            assert web.post("/pages/1/ack", data={"csrf": csrf}).status_code == 303
            assert 'action="/pages/1/ack"' not in web.get("/pages").text
        with live.client() as operator:
            (acked,) = operator.do(Calls.pages(state="acked"))
            assert acked.acked_by == "founder"
