"""Telegram through the real aiogram against a faithful local Bot API server.

One poller per token (leases, restarts, an outside poller's 409), delivery before confirmation,
order and no loss under flood control, the rate kept per chat, the token never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from mcos.channels.base import Inbound, Outbound
from mcos.channels.runner import ChannelRunner
from mcos.channels.telegram import TelegramChannel, parse_update
from mcos.config.models import ChannelConfig
from mcos.server.app import StoreLeases
from mcos.store import Store, make_store
from tests.fakes.telegram_server import FakeTelegram
from tests.store.conftest import AUDIT_KEY
from tests.waiting import eventually

TOKEN = "123456789:AAH-test_token_for_the_local_fake_0001"
OTHER = "987654321:AAH-test_token_for_the_local_fake_0002"


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram({TOKEN: "ops_bot", OTHER: "other_bot"}) as fake:
        yield fake


def channel(fake: FakeTelegram, token: str = TOKEN, **settings: object) -> TelegramChannel:
    config = ChannelConfig.model_validate(
        {"kind": "telegram", "agent": "gene", "token": "env:TG", "api_url": fake.url} | settings
    )
    return TelegramChannel("tg", config, token)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite:///{tmp_path}/leases.db"
    s = make_store(url, audit_key=AUDIT_KEY)
    await s.upgrade()
    await s.open()
    yield s
    await s.close()


async def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    await eventually("the fake Telegram or the channel to reach the state", predicate, timeout)


class TestReceiving:
    """Updates reach ``deliver`` before Telegram is told they were taken."""

    async def test_messages_and_button_presses_arrive_once(self, telegram: FakeTelegram) -> None:
        """A text and a button press are delivered once each, with the sender's ids."""
        tg = channel(telegram)
        got: list[Inbound] = []

        async def deliver(item: Inbound) -> None:
            got.append(item)

        telegram.push(TOKEN, "is the beta open?", chat_id=77)
        telegram.press(TOKEN, "approve:3", user_id=77)
        task = asyncio.create_task(tg.run(deliver))
        await wait_for(lambda: len(got) == 2)
        telegram.push(TOKEN, "thanks", chat_id=77)
        await wait_for(lambda: len(got) == 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tg.aclose()
        assert [(i.text, i.sender_id, i.reply_to, i.action) for i in got] == [
            ("is the beta open?", "77", "77", ""),
            ("(pressed a button: approve:3)", "77", "77", "approve:3"),
            ("thanks", "77", "77", ""),
        ]
        assert len({i.ref for i in got}) == 3

    async def test_an_update_not_taken_is_offered_again(self, telegram: FakeTelegram) -> None:
        """Mission Control unreachable: the update is not confirmed, and comes back."""
        tg = channel(telegram)
        got: list[str] = []
        failures = [1]

        async def deliver(item: Inbound) -> None:
            if failures:
                failures.pop()
                raise OSError("Mission Control unreachable")
            got.append(item.ref)

        telegram.push(TOKEN, "hello")
        with pytest.raises(OSError, match="unreachable"):
            await tg.run(deliver)
        task = asyncio.create_task(tg.run(deliver))
        await wait_for(lambda: got == ["1"])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tg.aclose()

    async def test_unlisted_chats_are_ignored(self, telegram: FakeTelegram) -> None:
        """With ``chats`` configured, only those chats reach the agent."""
        tg = channel(telegram, chats=["-100"])
        got: list[str] = []

        async def deliver(item: Inbound) -> None:
            got.append(item.text)

        telegram.push(TOKEN, "from a stranger", chat_id=5)
        telegram.push(TOKEN, "from the group", chat_id=-100)
        task = asyncio.create_task(tg.run(deliver))
        await wait_for(lambda: got == ["from the group"])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tg.aclose()

    def test_garbage_is_not_an_update(self) -> None:
        """A payload that is no update is refused with the problem named."""
        with pytest.raises(ValueError, match="not a Telegram update"):
            parse_update("tg", {"update_id": "x"})
        assert parse_update("tg", {"update_id": 5}) is None  # a kind we do not take


class TestOnePoller:
    """Exactly one process polls a token: the lease first, Telegram's 409 as the last word."""

    async def test_restarts_and_two_contenders_never_overlap(
        self, telegram: FakeTelegram, store: Store
    ) -> None:
        """Two receivers contend for one token through restarts: no 409, nothing lost."""
        got: list[str] = []
        events: list[tuple[str, str]] = []

        async def deliver(item: Inbound) -> None:
            got.append(item.ref)

        async def report(what: str, detail: str) -> None:
            events.append((what, detail))

        def contender(holder: str) -> tuple[ChannelRunner, TelegramChannel]:
            tg = channel(telegram)
            # 6 s: the holder renews every 2 s, so its lease lapses only if a renewal is 4 s
            # late. With 1.5 s, a loaded machine starving this event loop for a second let the
            # lease lapse with the holder's getUpdates in flight, and the other contender's poll
            # met it (a 409 from the lease's TTL, not from the runner). The waiting contender
            # tries again every 2 s, which also gives the fake time to see a cancelled poll go.
            runner = ChannelRunner(tg, deliver, StoreLeases(store), holder, report, ttl=6.0)
            return runner, tg

        runners = [contender("host-a:1"), contender("host-b:1")]
        tasks = [asyncio.create_task(r.run()) for r, _ in runners]
        for round_ in range(3):
            await wait_for(lambda: any(r.receiving for r, _ in runners))
            telegram.push(TOKEN, f"round {round_}")
            await wait_for(lambda n=round_ + 1: len(set(got)) == n)  # type: ignore[misc]
            holder = next(i for i, (r, _) in enumerate(runners) if r.receiving)
            assert not runners[1 - holder][0].receiving
            tasks[holder].cancel()  # the holder restarts (its lease is released on the way out)
            await asyncio.gather(tasks[holder], return_exceptions=True)
            await runners[holder][1].aclose()
            runners[holder] = contender(f"host-{'ab'[holder]}:{round_ + 2}")
            tasks[holder] = asyncio.create_task(runners[holder][0].run())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, tg in runners:
            await tg.aclose()
        assert telegram.conflicts == 0
        assert sorted(set(got)) == ["1", "2", "3"]

    async def test_an_outside_poller_fences_us_out(
        self, telegram: FakeTelegram, store: Store
    ) -> None:
        """Someone outside mcos polls the token: we stop, report, and do not fight for it."""
        events: list[tuple[str, str]] = []
        pauses: list[float] = []

        async def report(what: str, detail: str) -> None:
            events.append((what, detail))

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            await asyncio.sleep(0.05 if seconds < 60 else 3600)

        async def deliver(item: Inbound) -> None:
            pass

        tg = channel(telegram)
        runner = ChannelRunner(tg, deliver, StoreLeases(store), "host-a:1", report, sleep=sleep)
        task = asyncio.create_task(runner.run())
        await wait_for(lambda: runner.receiving)
        await wait_for(lambda: telegram.bots[TOKEN].polling)  # our getUpdates is in flight
        outsider = channel(telegram)
        polling = asyncio.create_task(outsider.bot.get_updates(timeout=2))
        await wait_for(lambda: any(w == "fenced" for w, _ in events))
        await asyncio.gather(polling, return_exceptions=True)
        # It waits at least a full minute before trying again, and meanwhile does not poll.
        await wait_for(lambda: 60.0 in pauses)
        assert not telegram.bots[TOKEN].polling
        fenced = next(d for w, d in events if w == "fenced")
        assert "terminated by other getUpdates" in fenced
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tg.aclose()
        await outsider.aclose()
        lease = await store.lease(tg.exclusive_key() or "")
        assert lease is not None
        assert lease.expires_at <= await store.now()  # released, not left to expire


class TestSending:
    """Order within a chat, nothing lost under 429, Telegram's rates kept."""

    async def test_order_kept_and_nothing_lost_under_flood_control(
        self, telegram: FakeTelegram
    ) -> None:
        """Every third send is a 429 (retry_after 1 s): all arrive, in order, per chat."""
        telegram.flood_every = 3
        tg = channel(telegram, rate_per_chat=50, rate_overall=100)
        texts = [f"update {i}" for i in range(8)]
        refs = await asyncio.gather(
            *(tg.send(Outbound("tg", t, to="77")) for t in texts),
            tg.send(Outbound("tg", "to the group", to="-100")),
        )
        await tg.aclose()
        assert telegram.texts(TOKEN, 77) == texts
        assert telegram.texts(TOKEN, -100) == ["to the group"]
        assert telegram.throttled >= 2
        assert tg.retried_after == telegram.throttled
        assert len(set(refs)) == 9

    async def test_one_message_a_second_per_chat(self, telegram: FakeTelegram) -> None:
        """At the default rate, Telegram's per-chat limit (1/s) is never hit."""
        telegram.min_gap = 0.9
        tg = channel(telegram)
        await asyncio.gather(*(tg.send(Outbound("tg", f"m{i}", to="77")) for i in range(3)))
        await tg.aclose()
        assert telegram.texts(TOKEN, 77) == ["m0", "m1", "m2"]
        assert telegram.throttled == 0

    async def test_buttons_go_as_an_inline_keyboard(self, telegram: FakeTelegram) -> None:
        """Approve/deny buttons carry their data to Telegram."""
        tg = channel(telegram)
        await tg.send(Outbound("tg", "deploy?", to="77", buttons=(("Approve", "approve:4"),)))
        await tg.aclose()
        (sent,) = telegram.bots[TOKEN].sent
        keyboard = sent["reply_markup"]["inline_keyboard"]
        assert keyboard == [[{"text": "Approve", "callback_data": "approve:4"}]]

    async def test_refusals_are_clear_and_the_token_never_logged(
        self, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bad chat and a revoked token: clear errors; the token appears nowhere."""
        caplog.set_level(logging.DEBUG)
        tg = channel(telegram, chats=["77"])
        with pytest.raises(Exception, match=r"chat 12 is not one of its chats \(77\)"):
            await tg.send(Outbound("tg", "hi", to="12"))
        await tg.aclose()
        revoked = channel(telegram, token="111111111:AAH-revoked_token_that_telegram_refuses")
        with pytest.raises(Exception, match="refused") as e:
            await revoked.send(Outbound("tg", "hi", to="77"))
        await revoked.aclose()
        assert "111111111:AAH" not in str(e.value)
        assert "111111111:AAH" not in caplog.text
        assert TOKEN not in caplog.text
