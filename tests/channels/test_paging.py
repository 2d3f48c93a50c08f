"""Paging humans: approvals, P0s and urgent messages reach the founder's Telegram, once each,
with buttons whose presses go through the governance API — only from the founder's own id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mcos.channels.telegram import TelegramChannel
from mcos.client import Calls, Client
from mcos.config.models import ChannelConfig
from mcos.domain.messages import Priority
from mcos.domain.paging import PageRoute
from mcos.exceptions import Conflict, Forbidden
from mcos.server.context import ChannelBinding
from tests.api.conftest import LiveServer, migrate, serve
from tests.fakes.telegram_server import FakeTelegram
from tests.waiting import wait_until

TOKEN = "222222222:AAH-paging_bot_token_for_the_local_fake01"
FOUNDER = 555
STRANGER = 666


@pytest.fixture
def paged(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeTelegram]]:
    """Mission Control with its own Telegram channel ``pager``; the founder paged on it."""
    with FakeTelegram({TOKEN: "mc_bot"}) as telegram:
        config = ChannelConfig.model_validate(
            {"kind": "telegram", "token": "env:TG", "api_url": telegram.url}
        )
        url = f"sqlite:///{tmp_path}/mcos.db"
        asyncio.run(migrate(url))
        with serve(
            url,
            tmp_path,
            channels={"pager": ChannelBinding("telegram", None)},
            page_routes={"founder": (PageRoute("pager", "telegram", str(FOUNDER)),)},
            own_channels={"pager": TelegramChannel("pager", config, TOKEN)},
        ) as server:
            yield server, telegram


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    wait_until("the page, the button or the vote", predicate, timeout)


def buttons(telegram: FakeTelegram) -> list[list[str]]:
    return [
        [b["callback_data"] for row in m["reply_markup"]["inline_keyboard"] for b in row]
        for m in telegram.bots[TOKEN].sent
        if "reply_markup" in m
    ]


def test_an_approval_is_paged_and_approved_by_button(
    paged: tuple[LiveServer, FakeTelegram],
) -> None:
    """gene asks to e-mail a customer; the founder approves from Telegram; a stranger cannot."""
    server, telegram = paged
    with server.client("gene") as gene, server.client() as founder:
        asked = gene.do(
            Calls.request_approval(
                "send_external_email",
                {"to": "customer@example.com", "subject": "Your refund"},
                "the customer asked for a refund",
            )
        )
        number = asked.id
        wait_for(lambda: buttons(telegram))
        (first,) = buttons(telegram)
        assert first[:2] == [f"approve:{number}", f"deny:{number}"]
        assert telegram.texts(TOKEN, FOUNDER)[0].startswith("[APPROVAL] Approval needed")

        telegram.press(TOKEN, f"approve:{number}", user_id=STRANGER)
        wait_for(lambda: len(telegram.bots[TOKEN].answered) == 1)
        assert gene.do(Calls.approval(number)).state == "pending"
        refused = founder.do(Calls.audit(action="page.answer"))
        assert refused
        assert refused[0].outcome == "refused"

        telegram.press(TOKEN, f"approve:{number}", user_id=FOUNDER)
        wait_for(lambda: gene.do(Calls.approval(number)).state == "approved")
        approval = gene.do(Calls.approval(number))
        assert [(v.voter, v.rationale) for v in approval.votes] == [
            ("operator:founder", "approved via pager")
        ]
        wait_for(lambda: len(telegram.bots[TOKEN].answered) == 2)
        assert "recorded" in telegram.bots[TOKEN].answered[1]["text"]
        (page,) = founder.do(Calls.pages(human="founder"))
        assert (page.kind, page.state) == ("approval", "acked")


def test_p0_and_urgent_pages_once_each_with_acknowledgement(
    paged: tuple[LiveServer, FakeTelegram],
) -> None:
    """A P0 report pages the founder once however often it is raised; ack by button and API."""
    server, telegram = paged
    with (
        server.client("sentinel") as sentinel,
        server.client("gene") as gene,
        server.client() as founder,
    ):
        sentinel.do(Calls.report_incident("P0", "customer data exposed", "bucket is public"))
        gene.do(Calls.report_incident("P0", "customer data exposed", "bucket is public"))
        wait_for(lambda: len(founder.do(Calls.pages())) == 1)
        gene.do(
            Calls.send("founder", "the payment provider is down", subject="payments down",
                       priority=Priority.URGENT)
        )  # fmt: skip
        gene.do(Calls.send("founder", "fyi: weekly numbers", subject="weekly"))
        wait_for(lambda: len(founder.do(Calls.pages())) == 2)
        wait_for(lambda: len(telegram.texts(TOKEN, FOUNDER)) == 2)
        urgent, p0 = founder.do(Calls.pages())
        assert (p0.kind, urgent.kind) == ("p0", "urgent")
        assert all(p.state == "sent" and p.channel == "pager" for p in (p0, urgent))

        telegram.press(TOKEN, f"ack:{p0.id}", user_id=FOUNDER)
        wait_for(lambda: founder.do(Calls.pages(state="acked")) != [])
        assert founder.do(Calls.ack_page(urgent.id)).acked_by == "founder"
        with pytest.raises(Conflict, match="already acknowledged"):
            founder.do(Calls.ack_page(urgent.id))
        refused = [r for r in founder.do(Calls.audit(action="page.ack")) if r.outcome == "refused"]
        assert [r.detail["rule"] for r in refused] == [f"page {urgent.id} was already acknowledged"]
    with Client(server.url, server.operator_token) as founder:
        assert {p.state for p in founder.do(Calls.pages())} == {"acked"}


def test_agents_cannot_read_or_ack_pages(paged: tuple[LiveServer, FakeTelegram]) -> None:
    """Pages are the humans' business: an agent is refused (403)."""
    server, _ = paged
    with server.client("gene") as gene:
        with pytest.raises(Forbidden):
            gene.do(Calls.pages())
        with pytest.raises(Forbidden):
            gene.do(Calls.ack_page(1))
