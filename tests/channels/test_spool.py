"""The spool and outbox on their own: bounded, duplicates held once, damage set aside, refusals
told and outages retried. (Through SIGKILLs and outages: test_durable.py.)"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mcos.channels.base import Inbound, Outbound
from mcos.channels.factory import open_channel
from mcos.channels.outbox import Outbox, OutboxedChannel
from mcos.channels.spool import Spool, SpoolError, SpoolFull
from mcos.client import Calls
from mcos.exceptions import ChannelError, ChannelRefused
from mcos.models.base import ToolCall
from mcos.runtime.channels import AgentChannels
from tests.fakes.telegram_server import FakeTelegram
from tests.runtime.conftest import RigFactory, rig_factory  # noqa: F401 (the fixture)
from tests.waiting import eventually

CHAT = "77"


def inbound(ref: str) -> dict[str, Any]:
    return {"sender": "a", "text": "t", "at": datetime.now(UTC).isoformat(), "ref": ref}


class TestSpool:
    """The spool file on its own: bounded, duplicates held once, damage set aside."""

    def test_an_item_is_held_once_and_a_full_spool_says_so(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path / "s.sqlite", max_inbound=2, max_outbound=1)
        assert spool.hold("dc", "1", inbound("1"))
        assert not spool.hold("dc", "1", inbound("1"))
        assert spool.hold("dc", "2", inbound("2"))
        with pytest.raises(SpoolFull, match=r"is full \(2 inbound items wait.*dc item 3"):
            spool.hold("dc", "3", inbound("3"))
        spool.queue("tg", CHAT, {"text": "x"})
        with pytest.raises(SpoolFull, match=r"outbox .* is full"):
            spool.queue("tg", CHAT, {"text": "y"})
        assert [h.ref for h in spool.waiting()] == ["1", "2"]

    def test_an_unreadable_file_is_set_aside_not_a_crash(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sqlite"
        path.write_bytes(b"this is not a database, it was torn" * 100)
        spool = Spool(path)
        assert spool.hold("dc", "1", inbound("1"))
        assert spool.set_aside is not None
        assert spool.set_aside.read_bytes().startswith(b"this is not a database")

    async def test_a_corrupt_post_is_reported_and_the_next_goes_out(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path / "s.sqlite")
        spool.queue("tg", CHAT, {"text": 17})  # as if a bad write: no text
        sent: list[str] = []
        reports: list[tuple[str, str]] = []

        class Recorder:
            name, kind, redelivers = "tg", "telegram", True

            async def send(self, message: Outbound) -> str:
                sent.append(message.text)
                return str(len(sent))

        async def report(what: str, detail: str) -> None:
            reports.append((what, detail))

        outbox = Outbox(spool, {"tg": Recorder()}, report, settle=5)
        assert await outbox.post("tg", Outbound("tg", "after it", to=CHAT)) == "1"
        assert sent == ["after it"]
        assert reports[0][0] == "outbox_corrupt"
        assert spool.counts() == {"outbound_corrupt": 1, "outbound_sent": 1}

    async def test_refused_posts_fail_and_outages_are_retried(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path / "s.sqlite")
        answers: list[BaseException | None] = [ChannelError("down"), None]
        sent: list[str] = []

        class Flaky:
            name, kind, redelivers = "tg", "telegram", True

            async def send(self, message: Outbound) -> str:
                if message.text == "refused":
                    raise ChannelRefused("chat 9 is not one of its chats")
                error = answers.pop(0)
                if error is not None:
                    raise error
                sent.append(message.text)
                return "m1"

        async def report(what: str, detail: str) -> None:
            pass

        outbox = Outbox(spool, {"tg": Flaky()}, report, settle=5, backoff=(0.01, 0.05))
        with pytest.raises(ChannelRefused, match="not one of its chats"):
            await outbox.post("tg", Outbound("tg", "refused", to="9"))
        assert await outbox.post("tg", Outbound("tg", "ok", to=CHAT)) == "m1"
        assert sent == ["ok"]
        assert spool.counts() == {"outbound_failed": 1, "outbound_sent": 1}


def test_a_spool_over_its_byte_bound_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_bytes=1)
    with pytest.raises(SpoolFull, match=r"bytes\): dc item 1 was not taken"):
        spool.hold("dc", "1", inbound("1"))
    with pytest.raises(SpoolFull, match="the post to tg was not queued"):
        spool.queue("tg", CHAT, {"text": "x"})


TG = "123456789:AAH-runtime_outbox_token_00000000001"


async def test_the_agents_posts_and_replies_go_through_its_outbox(
    rig_factory: RigFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runtime's ``post_to_channel`` (and a reply to a Telegram item, which goes back out
    on the channel) is queued in the workspace's spool and marked sent once Telegram took it."""
    monkeypatch.setenv("MCOS_TEST_TG_TOKEN", TG)
    with FakeTelegram({TG: "gene_bot"}) as telegram:
        rig = rig_factory(
            tail=f'[channels.tg]\nkind = "telegram"\nagent = "gene"\n'
            f'token = "env:MCOS_TEST_TG_TOKEN"\napi_url = "{telegram.url}"\nchats = ["{CHAT}"]\n'
        )
        gene = rig.runtime("gene")
        assert isinstance(gene.ctx.channels["tg"], OutboxedChannel)
        posted = await gene.tools.call(
            ToolCall("t1", "post_to_channel", {"channel": "tg", "text": "hello", "to": CHAT})
        )
        assert posted.content == "posted to tg (1)"
        item = Inbound("tg", "@founder", "are we up?", datetime.now(UTC), ref="9", reply_to=CHAT)
        await gene.channel_host.deliver_to("tg")(item)
        assert await gene.claim()
        (delivery,) = gene.pending.values()
        replied = await gene.tools.call(
            ToolCall("t2", "reply", {"message_id": delivery.message.id, "body": "we are up"})
        )
        assert replied.content == "posted to tg (2)"
        assert telegram.texts(TG, CHAT) == ["hello", "we are up"]
        assert gene.channel_host.spooled() == {"outbound_sent": 2}
        other = Spool(gene.workspace.root / ".mcos" / "channels.sqlite")
        with pytest.raises(SpoolError, match=r"in use by another process \(pid \d+\)"):
            other.counts()  # a second sender from one outbox would send twice
        await gene.channel_host.stop()


def test_a_spool_it_cannot_write_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """A disk the spool cannot be written on: a ChannelError naming the file (the tool answers
    with it, a receiver logs it), never a crash."""
    (tmp_path / "not-a-folder").write_text("a file where the .mcos folder should be")
    spool = Spool(tmp_path / "not-a-folder" / "channels.sqlite")
    with pytest.raises(SpoolError, match=r"channel spool .*not-a-folder/channels.sqlite"):
        spool.hold("dc", "1", inbound("1"))
    with pytest.raises(SpoolError, match="channel spool"):
        spool.queue("tg", CHAT, {"text": "x"})


async def test_a_corrupt_held_item_is_set_aside_and_the_next_is_stored(
    rig_factory: RigFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A held Discord item whose row cannot be read (a torn write, a hand edit) is reported and
    set aside; the item after it still reaches Mission Control and the agent, once."""
    monkeypatch.setenv("MCOS_TEST_DC_TOKEN", "MTIz.spool-test.token")
    rig = rig_factory(
        tail='[channels.dc]\nkind = "discord"\nagent = "gene"\n'
        'token = "env:MCOS_TEST_DC_TOKEN"\nchats = ["1"]\n'
    )
    channel = open_channel("dc", rig.fleet)
    reports: list[tuple[str, str]] = []

    async def report(what: str, detail: str) -> None:
        reports.append((what, detail))

    path = tmp_path / "gene-spool.sqlite"
    spool = Spool(path)
    spool.hold("dc", "41", inbound("41"))
    spool.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE inbound SET body = '{torn' WHERE ref = '41'")
    host = AgentChannels("gene", {"dc": channel}, rig.client("gene"), report, spool=path)
    try:
        item = Inbound("dc", "alice", "after the torn one", datetime.now(UTC), ref="42")
        await host.deliver_to("dc")(item)
        await host.deliver_to("dc")(item)  # a repeat of the same item is held once
        await eventually(
            "the held items delivered or set aside",
            lambda: not host.spooled().get("inbound_waiting", 0),
        )
        assert host.spooled() == {"inbound_corrupt": 1}
        assert [w for w, _ in reports] == ["spool_corrupt"]
        assert "spooled item 41 is unreadable" in reports[0][1]
        inbox = await rig.client("gene").do(Calls.inbox(limit=10))
        assert [d.message.body for d in inbox.deliveries] == ["after the torn one"]
    finally:
        await host.stop()
