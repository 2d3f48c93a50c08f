"""The Discord channel against a faithful local Discord, driven by the real discord.py."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import discord.client
import pytest

from mcos.channels.base import Inbound, Outbound, account_key
from mcos.channels.discord import DiscordChannel
from mcos.config.models import ChannelConfig
from mcos.exceptions import AuthError, InvalidRequest
from tests.fakes.discord_server import FakeDiscord
from tests.waiting import eventually

T = TypeVar("T")
TOKEN = "MTIzNDU2Nzg5.fake-bot.token-that-must-never-be-written"
OPS, ALERTS, RANDOM = "100000000000000001", "100000000000000002", "100000000000000003"


class Clock:
    """A fake clock whose ``sleep`` records the wait and moves time on, without waiting."""

    def __init__(self) -> None:
        self.at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at += timedelta(seconds=seconds)
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for observable state (the fake's, on its own thread), failing after ``timeout``."""
    await eventually("the fake Discord to reach the state", condition, timeout=timeout)


def make_fake(**options: object) -> FakeDiscord:
    return FakeDiscord(
        {TOKEN: "mcos-bot"},
        {OPS: "ops", ALERTS: "alerts", RANDOM: "random"},
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with make_fake() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


def config(fake: FakeDiscord) -> ChannelConfig:
    return ChannelConfig(
        kind="discord", token="env:DISCORD_TOKEN", api_url=fake.api_url, chats=[OPS, ALERTS]
    )


class Harness:
    """Channels made for one test, closed at its end."""

    def __init__(self, fake: FakeDiscord, state: Path, clock: Clock) -> None:
        self.fake, self.state, self.clock = fake, state, clock
        self.made: list[DiscordChannel] = []

    def channel(self, token: str = TOKEN) -> DiscordChannel:
        ch = DiscordChannel(
            "ops",
            config(self.fake),
            token,
            state_dir=self.state,
            sleep=self.clock.sleep,
            now=self.clock.now,
        )
        self.made.append(ch)
        return ch


@pytest.fixture
async def harness(fake: FakeDiscord, tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    h = Harness(fake, tmp_path / "state", clock)
    yield h
    for ch in h.made:
        await ch.aclose()


async def start(
    ch: DiscordChannel, fake: FakeDiscord, received: list[Inbound]
) -> asyncio.Task[None]:
    """Run the channel until its session is up."""

    async def deliver(item: Inbound) -> None:
        received.append(item)

    before = fake.identifies
    task = asyncio.create_task(ch.run(deliver), name="discord-run")
    await until(lambda: fake.identifies > before and fake.connected > 0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


class TestReceive:
    """Messages from the gateway reach ``deliver``, filtered to the configured channels."""

    async def test_message_in_configured_channel_is_delivered(
        self, fake: FakeDiscord, harness: Harness
    ) -> None:
        """Only configured channels, never the bot's own posts; identity and ids carried."""
        ch = harness.channel()
        received: list[Inbound] = []
        task = await start(ch, fake, received)
        alice = fake.inject_message(OPS, "alice", "the deploy is red")
        fake.inject_message(RANDOM, "bob", "not for the bot")
        await ch.send(Outbound("ops", "looking into it", to=OPS))
        last = fake.inject_message(ALERTS, "carol", "marker")
        await until(lambda: any(r.text == "marker" for r in received))
        await stop(task)
        assert [r.text for r in received] == ["the deploy is red", "marker"]
        first = received[0]
        assert (first.channel, first.sender, first.reply_to, first.ref) == (
            "ops",
            "Alice",
            OPS,
            alice["id"],
        )
        assert first.sender_id == alice["author"]["id"]
        assert first.at.tzinfo is not None
        assert abs((first.at - datetime.now(UTC)).total_seconds()) < 60
        assert received[1].ref == last["id"]
        assert fake.compression == ["zlib-stream"]
        assert fake.unhandled == []

    async def test_deliver_failure_is_logged_and_the_run_goes_on(
        self, fake: FakeDiscord, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Discord cannot redeliver: a message not taken (the agent's spool full) is logged as
        such, the next one arrives."""
        ch = harness.channel()
        received: list[str] = []

        async def deliver(item: Inbound) -> None:
            if item.text == "first":
                raise RuntimeError("store down")
            received.append(item.text)

        task = asyncio.create_task(ch.run(deliver))
        await until(lambda: fake.connected > 0)
        fake.inject_message(OPS, "alice", "first")
        fake.inject_message(OPS, "alice", "second")
        await until(lambda: received == ["second"])
        await stop(task)
        assert "was not taken (Discord does not redeliver" in caplog.text

    async def test_dropped_connection_resumes_without_identify(
        self, fake: FakeDiscord, harness: Harness
    ) -> None:
        """A dropped socket RESUMEs at ``resume_gateway_url``: no IDENTIFY spent, nothing lost."""
        ch = harness.channel()
        received: list[Inbound] = []
        task = await start(ch, fake, received)
        fake.drop_connections()
        await until(lambda: fake.resumes == 1 and fake.connected == 1)
        fake.inject_message(OPS, "alice", "after the drop")
        await until(lambda: len(received) == 1)
        await stop(task)
        assert fake.identifies == 1
        assert fake.resume_paths == ["/resume-gateway"]

    async def test_invalidated_session_reidentifies_through_the_backoff(
        self, fake: FakeDiscord, harness: Harness, clock: Clock
    ) -> None:
        """A session Discord will not resume costs a recorded IDENTIFY after discord.py's 5 s."""
        ch = harness.channel()
        task = await start(ch, fake, [])
        fake.drop_connections(invalidate=True)
        await until(lambda: fake.identifies == 2 and fake.connected == 1)
        await stop(task)
        assert clock.sleeps == [5.0]
        assert ch._history.load(clock.now()) == [clock.now() - timedelta(seconds=5), clock.now()]

    async def test_aclose_ends_the_run(self, fake: FakeDiscord, harness: Harness) -> None:
        """Closing the channel closes the gateway; ``run`` returns instead of reconnecting."""
        ch = harness.channel()
        task = await start(ch, fake, [])
        await ch.aclose()
        await asyncio.wait_for(task, 5)
        await until(lambda: fake.connected == 0)
        assert fake.identifies == 1


class TestSend:
    """Posting goes to configured chats only, through Discord's REST API."""

    async def test_send_posts_to_the_chat(self, fake: FakeDiscord, harness: Harness) -> None:
        """The fake records the post; the id returned is Discord's; no gateway needed."""
        ch = harness.channel()
        mid = await ch.send(Outbound("ops", "weekly report ready", to=ALERTS))
        default = await ch.send(Outbound("ops", "to the first chat"))
        assert [(p["channel_id"], p["content"]) for p in fake.posted] == [
            (ALERTS, "weekly report ready"),
            (OPS, "to the first chat"),
        ]
        assert [mid, default] == [p["id"] for p in fake.posted]
        assert fake.identifies == 0

    async def test_unconfigured_chat_is_refused(self, fake: FakeDiscord, harness: Harness) -> None:
        """Posting elsewhere fails before any request, naming the allowed chats."""
        ch = harness.channel()
        with pytest.raises(InvalidRequest, match=f"{OPS}, {ALERTS}") as err:
            await ch.send(Outbound("ops", "hi", to=RANDOM))
        assert RANDOM in str(err.value)
        assert fake.post_attempts == 0

    async def test_rate_limit_is_waited_out(self, fake: FakeDiscord, harness: Harness) -> None:
        """A 429 with ``retry_after`` is retried after the wait; one message is posted."""
        fake.rate_limit_next_post(retry_after=0.05)
        ch = harness.channel()
        await ch.send(Outbound("ops", "after the limit"))
        assert (fake.post_attempts, len(fake.posted)) == (2, 1)

    async def test_long_text_is_split(self, fake: FakeDiscord, harness: Harness) -> None:
        """Text over Discord's 2000 characters goes out as several messages, in order."""
        ch = harness.channel()
        mid = await ch.send(Outbound("ops", "x" * 4500))
        assert [len(p["content"]) for p in fake.posted] == [2000, 2000, 500]
        assert mid == fake.posted[0]["id"]


class TestToken:
    """A refused token is an error to report, not a loop; the token is never written down."""

    async def test_bad_token_raises_before_identifying(
        self, fake: FakeDiscord, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        """401 at login: AuthError from ``run``, no IDENTIFY, and no secret in the message."""
        caplog.set_level(logging.DEBUG)
        bad = "MTIz.wrong.token-value"
        ch = harness.channel(bad)
        with pytest.raises(AuthError, match="401") as err:
            await ch.run(lambda _: asyncio.sleep(0))
        assert fake.identifies == 0
        assert bad not in str(err.value)
        assert bad not in caplog.text
        with pytest.raises(AuthError):
            await ch.send(Outbound("ops", "hi"))

    async def test_exclusive_key_and_repr_hide_the_token(self, harness: Harness) -> None:
        """The lease key is the token's hash, and so is what ``repr`` shows."""
        ch = harness.channel()
        assert ch.exclusive_key() == account_key("discord", TOKEN)
        assert TOKEN not in repr(ch)


class TestStop:
    """Cancelling the channel ends it, whatever discord.py does with the cancel."""

    async def test_a_cancel_lost_by_discord_py_still_ends_the_run(
        self, fake: FakeDiscord, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """discord.py connects through ``asyncio.wait_for``, which on Python 3.11 drops a
        cancellation arriving as the connection completes (seen hanging this suite's stops
        under load). Here that loss is made certain: the run must still end, and close."""
        connecting = asyncio.Event()

        async def wait_for_losing_the_cancel(coro: Awaitable[T], timeout: float) -> T:
            inner = asyncio.ensure_future(coro)
            connecting.set()
            try:
                return await asyncio.shield(inner)
            except asyncio.CancelledError:
                return await inner  # the cancel is gone; the gateway loop goes on polling

        lossy = types.SimpleNamespace(**vars(asyncio))
        lossy.wait_for = wait_for_losing_the_cancel
        monkeypatch.setattr(discord.client, "asyncio", lossy)
        ch = harness.channel()
        task = asyncio.create_task(ch.run(lambda _: asyncio.sleep(0)))
        await asyncio.wait_for(connecting.wait(), 10)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, "the cancelled run did not end"
        assert task.cancelled()
        await until(lambda: fake.connected == 0)
        await ch.aclose()


class TestIdentifyBudget:
    """A crash loop must not burn the daily IDENTIFY limit."""

    async def test_crash_loop_backs_off(
        self,
        fake: FakeDiscord,
        harness: Harness,
        clock: Clock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Ten crashes in a row: two free IDENTIFYs, then waits that grow; history is tokenless."""
        caplog.set_level(logging.INFO)
        waits: list[float] = []
        for _ in range(10):
            ch = harness.channel()
            slept = len(clock.sleeps)
            task = await start(ch, fake, [])
            waits.append(sum(clock.sleeps[slept:]))
            await stop(task)
            await ch.aclose()
            clock.at += timedelta(seconds=1)  # the crash and the restart take a second
        assert fake.identifies == 10
        assert waits[:2] == [0.0, 0.0]
        assert all(w > 0 for w in waits[2:])
        assert waits[2:] == sorted(waits[2:])
        assert waits[-1] > 10 * waits[2]
        assert "backing off 4 s before identifying (2 identifies in the last hour)" in caplog.text
        files = list(harness.state.iterdir())
        assert len(files) == 1
        text = files[0].read_text()
        assert TOKEN not in text
        assert TOKEN not in files[0].name
        assert text.count("2025-03-01") == 10

    async def test_kill_during_backoff_keeps_the_backoff(
        self, fake: FakeDiscord, harness: Harness, clock: Clock
    ) -> None:
        """A run killed while it waits spends no IDENTIFY and does not reset the wait."""
        for _ in range(4):
            ch = harness.channel()
            await stop(await start(ch, fake, []))
            await ch.aclose()
        waiting = asyncio.Event()
        forever = asyncio.Event()

        async def hang(seconds: float) -> None:
            clock.sleeps.append(seconds)
            waiting.set()
            await forever.wait()

        ch = harness.channel()
        ch._sleep = hang
        task = asyncio.create_task(ch.run(lambda _: asyncio.sleep(0)))
        await asyncio.wait_for(waiting.wait(), 5)
        await stop(task)
        killed_wait = clock.sleeps[-1]
        assert fake.identifies == 4
        ch = harness.channel()
        await stop(await start(ch, fake, []))
        assert clock.sleeps[-1] == killed_wait
        assert fake.identifies == 5

    async def test_low_session_start_budget_waits_for_reset(
        self, harness: Harness, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With ≤ 5 % of session starts left, the first IDENTIFY waits for Discord's reset."""
        with make_fake(session_start_limit=(1000, 20, 3_600_000)) as low:
            harness.fake = low
            ch = harness.channel()
            await stop(await start(ch, low, []))
            await ch.aclose()
        assert len(clock.sleeps) == 1
        assert 3590 < clock.sleeps[0] <= 3600
        assert "20 of 1000 session starts left" in caplog.text

    async def test_spent_budget_resets_the_token(self, harness: Harness) -> None:
        """Identifying with none left ends in Discord's 4004 and a clear AuthError."""
        with make_fake(session_start_limit=(1000, 0, 3_600_000)) as spent:
            harness.fake = spent
            ch = harness.channel()
            with pytest.raises(AuthError, match="4004"):
                await asyncio.wait_for(ch.run(lambda _: asyncio.sleep(0)), 10)
            await ch.aclose()
            assert spent.bots[TOKEN].revoked
            assert spent.identifies == 1
