"""A long model outage loses nothing: "could not try" is a deferral, never a dead letter.

The runtime drives the real ``anthropic`` SDK against the local fake of the Messages API, which
answers 429 with a retry-after for 30 minutes, then 529 for 10 minutes, then "spend limit
reached" until the next UTC day, then recovers. The hours pass in virtual time: the runtime's
:class:`VirtualClock` is also Mission Control's (``simulated_clock`` puts the embedded store on
it), so a not-before or a claim deadline is judged on the same clock that the agent sleeps on;
the loop itself is the real ``AgentRuntime.step``, each step run until it sleeps on that clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from mcos.channels.mock import MockChannel
from mcos.client import AsyncClient, Calls
from mcos.domain.budget import Limits
from mcos.domain.paging import PageRoute
from mcos.models.anthropic import AnthropicModel
from mcos.models.factory import make_provider
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.clock import VirtualClock
from mcos.runtime.workspace import TurnKind
from mcos.server.context import ChannelBinding
from mcos.store.sqlite import simulated_clock
from tests.fakes.anthropic_server import (
    ApiError,
    FakeAnthropic,
    Overloaded,
    RateLimited,
    SpendLimit,
    Text,
)
from tests.fakes.scripts import JSON, Scripted
from tests.runtime.conftest import FAST, Rig, RigFactory
from tests.waiting import eventually

KEY = "sk-ant-test-gene"
MODEL = "claude-sonnet-4-6"
RETRY_AFTER = 30.0
"""Seconds the fake's 429s ask the agent to wait."""


class SteppedClock(VirtualClock):
    """A virtual clock that says when someone went to sleep on it (so time may move)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.asleep = asyncio.Event()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Read from the fake's and the server's threads too."""
        with self._lock:
            return super().now()

    async def sleep(self, seconds: float) -> None:
        """Sleep in virtual time, flagging the driver that this task waits on the clock."""
        if seconds > 0:
            self.asleep.set()
        await super().sleep(seconds)


def later_noon() -> datetime:
    """Noon UTC two days on: far from a UTC midnight, where a budget day turns. A start at
    "now" made the over-budget test's three days end at midnight when run after 23:30 UTC
    (the agent then rightly reads "budget day over", idle)."""
    day = datetime.now(UTC).date() + timedelta(days=2)
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)


async def step_until_asleep(rt: AgentRuntime, clock: SteppedClock) -> None:
    """Run one ``step()``; whenever it sleeps on the clock, move time to its wake-up."""
    task = asyncio.create_task(rt.step(), name="step")
    while not task.done():
        napping = asyncio.create_task(clock.asleep.wait(), name="asleep")
        await asyncio.wait({task, napping}, return_when=asyncio.FIRST_COMPLETED)
        napping.cancel()
        if clock.asleep.is_set():
            clock.asleep.clear()
            wake = clock.next_wake()
            if wake is not None:
                await clock.advance(wake)
    task.result()


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, min_cacheable_tokens=100) as server:
        yield server


def claude_toml(fake: FakeAnthropic) -> str:
    model = (
        f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}", '
        'route = "direct" }'
    )
    return f'{model}\nkey = "env:GENE_ANTHROPIC_KEY"\n'


def claude(rig: Rig, clock: VirtualClock) -> AnthropicModel:
    """Gene's provider as the factory builds it; the SDK adapter's backoff sleeps virtually."""
    provider = make_provider(rig.fleet.agents["gene"], KEY, rig.fleet.price_table(),
                             sleep=clock.sleep)  # fmt: skip
    assert isinstance(provider, AnthropicModel)
    return provider


def last_user_text(body: JSON) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")


class Outage:
    """What the stand-in API answers at each virtual instant, and when each request came."""

    def __init__(self, clock: VirtualClock, start: datetime) -> None:
        self.clock = clock
        self.rate_limited_until = start + timedelta(minutes=30)
        self.overloaded_until = self.rate_limited_until + timedelta(minutes=10)
        day = start.date() + timedelta(days=1)
        self.recovers_at = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.seen: list[tuple[datetime, str]] = []

    def __call__(self, body: JSON) -> Scripted:
        now = self.clock.now()
        answer: Scripted
        if now < self.rate_limited_until:
            answer = RateLimited(retry_after=RETRY_AFTER)
        elif now < self.overloaded_until:
            answer = Overloaded()
        elif now < self.recovers_at:
            answer = SpendLimit()
        else:
            answer = Text("Handled every waiting message.")
        self.seen.append((now, type(answer).__name__))
        return answer


async def test_an_outage_of_hours_dead_letters_nothing(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """429s for 30 min, 529s for 10 min, a spend limit until the next UTC day: 0 dead letters,
    each message handled exactly once after recovery, cooldowns within 10 % of the retry-after,
    and the status never shows a cooldown that has ended."""
    today = datetime.now(UTC).date() + timedelta(days=1)
    start = datetime(today.year, today.month, today.day, 20, 0, tzinfo=UTC)
    clock = SteppedClock(start)
    outage = Outage(clock, start)
    fake.default = outage
    with simulated_clock(clock.now):
        rig = rig_factory({"gene": claude_toml(fake)})
        gene = AgentRuntime("gene", rig.fleet, rig.client("gene"), claude(rig, clock), clock,
                            settings=FAST)  # fmt: skip
        rig.runtimes.append(gene)
        jarvis, operator = rig.client("jarvis"), rig.client()
        sent: list[int] = []
        later = {  # more mail arrives during the 529s and during the spend limit
            start + timedelta(minutes=35): 2,
            start + timedelta(hours=2): 2,
        }

        async def send(n: int) -> None:
            for _ in range(n):
                m = await jarvis.do(Calls.send("gene", f"task {len(sent)}",
                                               subject=f"task {len(sent)}"))  # fmt: skip
                sent.append(m.message.id)

        await send(3)
        await gene.start()
        steps = 0
        while gene.stats.handled < len(sent) or later:
            for at in sorted(later):
                if clock.now() >= at:
                    await send(later.pop(at))
            await step_until_asleep(gene, clock)
            steps += 1
            assert steps < 2_000, f"no end in sight at {clock.now()}"
            shown = await operator.do(Calls.agent("gene"))
            if shown.state_until is not None:
                assert shown.state_until > clock.now(), "status shows a cooldown already over"

        assert await operator.do(Calls.dead_letters()) == []
        me = await operator.do(Calls.agent("gene"))
        assert (me.queued, me.claimed, me.dead) == (0, 0, 0)

    # Every message reached the model in exactly one successful call, after recovery.
    ok = [r for r in fake.requests if r.response_status == 200]
    for message_id in sent:
        handled = [r for r in ok if f"[message {message_id}]" in last_user_text(r.body)]
        assert len(handled) == 1, f"message {message_id} handled {len(handled)} times"
    assert all(at >= outage.recovers_at for at, kind in outage.seen if kind == "Text")

    # Cooldowns end on time: consecutive 429s are the retry-after apart, within 10 %.
    limited = [at for at, kind in outage.seen if kind == "RateLimited"]
    assert len(limited) >= 50  # 30 minutes of them, one per cooldown
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(limited)]
    assert all(RETRY_AFTER <= g <= RETRY_AFTER * 1.1 for g in gaps), sorted(gaps)[-3:]

    # The 529s were retried with a growing backoff, not hammered, and not given up on.
    overloaded = [at for at, kind in outage.seen if kind == "Overloaded"]
    assert 4 <= len(overloaded) <= 60
    # The spend limit was asked about once, then the agent slept to the UTC day's end.
    assert sum(1 for _, kind in outage.seen if kind == "SpendLimit") == 1


async def test_deferrals_past_max_attempts_never_dead_letter(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """Six 429s in a row (the bus dead-letters at 3 attempts): the message still arrives,
    attempts used by each claim are given back."""
    clock = SteppedClock(later_noon())
    with simulated_clock(clock.now):
        rig = rig_factory({"gene": claude_toml(fake)})
        gene = AgentRuntime("gene", rig.fleet, rig.client("gene"), claude(rig, clock), clock,
                            settings=FAST)  # fmt: skip
        rig.runtimes.append(gene)
        jarvis, operator = rig.client("jarvis"), rig.client()
        await jarvis.do(Calls.send("gene", "status?", subject="status"))
        fake.script(*[RateLimited(retry_after=5)] * 6, Text("All fine."))
        await gene.start()
        for _ in range(40):
            if gene.stats.handled:
                break
            await step_until_asleep(gene, clock)
        assert gene.stats.handled == 1
        assert fake.pending == 0
        assert await operator.do(Calls.dead_letters()) == []


def posts(outbox: Path) -> list[dict[str, str]]:
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]


async def test_real_failures_dead_letter_and_tell_the_manager_and_the_humans(
    rig_factory: RigFactory, fake: FakeAnthropic, tmp_path: Path
) -> None:
    """A turn that runs and fails (the API refuses the request) is a nack: at the bus's
    max_attempts the message is dead-lettered, jarvis (gene's manager) is told by Mission
    Control, and the founder is paged once."""
    pager = tmp_path / "pager"
    rig = rig_factory(
        {"gene": claude_toml(fake)},
        channels={"pager": ChannelBinding("mock", None)},
        page_routes={"founder": (PageRoute("pager", "mock", "founder"),)},
        own_channels={"pager": MockChannel("pager", pager)},
        sweep_seconds=0.2,
    )
    clock = SteppedClock(datetime.now(UTC))
    gene = rig.runtime("gene", claude(rig, clock))
    jarvis: AsyncClient = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "do the thing", subject="the thing"))
    fake.default = ApiError(400, "invalid_request_error", "messages: content must be non-empty")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await rig.client().do(Calls.dead_letters(inbox="gene")):
        assert loop.time() < deadline, "never dead-lettered"
        if await gene.claim(wait=2):
            assert not await gene.handle_messages()
    [dead] = await rig.client().do(Calls.dead_letters(inbox="gene"))
    assert dead.attempts == 3
    assert dead.deferrals == 0
    assert dead.last_error == "not acknowledged after 3 attempts"
    told: list[str] = []

    async def notices() -> bool:
        got = (await jarvis.do(Calls.inbox(limit=20))).deliveries
        told.extend(d.message.subject for d in got if d.message.sender == "mission-control")
        return bool(told)

    await eventually("jarvis to be told", notices)
    assert any("for gene dead-lettered" in s for s in told)
    await eventually("the founder's page", lambda: posts(pager / "outbox" / "posts.jsonl"))
    [page] = posts(pager / "outbox" / "posts.jsonl")
    assert page["to"] == "founder"
    assert "gene" in page["text"]


async def test_a_stopping_agent_hands_its_claims_back_at_once(rig: Rig) -> None:
    """Stopped while messages wait in its batch, the agent defers them for now: they are
    claimable at once, with no attempt used."""
    gene = rig.runtime("gene", settings=replace(FAST, batch_window=3600))
    jarvis, operator = rig.client("jarvis"), rig.client()
    for n in range(3):
        await jarvis.do(Calls.send("gene", f"job {n}", subject=f"job {n}"))
    stop = asyncio.Event()
    running = asyncio.create_task(gene.run(stop), name="gene")
    await eventually("gene to claim the batch", lambda: len(gene.pending) == 3)
    assert (await operator.do(Calls.agent("gene"))).claimed == 3
    stop.set()
    await asyncio.wait_for(running, 60)
    shown = await operator.do(Calls.agent("gene"))
    assert (shown.queued, shown.claimed) == (3, 0)
    again = (await operator.do(Calls.inbox(inbox="gene", limit=10))).deliveries
    assert len(again) == 3
    assert all(d.attempts == 1 and d.deferrals == 1 for d in again)
    assert all(d.last_error == "shutting down" for d in again)


async def test_a_paused_agent_defers_what_it_holds(rig: Rig) -> None:
    """Paused by the breaker with messages claimed, the agent hands them back for a later
    recheck instead of letting the claims lapse (which would use attempts)."""
    gene = rig.runtime("gene", settings=replace(FAST, batch_window=3600, pause_poll=0.05))
    jarvis, operator = rig.client("jarvis"), rig.client()
    await jarvis.do(Calls.send("gene", "job", subject="job"))
    await gene.claim()
    assert gene.pending
    gene.paused = True
    await gene.step()
    assert not gene.pending
    shown = await operator.do(Calls.agent("gene"))
    assert (shown.queued, shown.claimed, shown.dead) == (1, 0, 0)
    # not claimable before the recheck
    assert (await operator.do(Calls.inbox(inbox="gene"))).deliveries == []


async def test_messages_held_when_a_cooldown_starts_are_deferred_to_its_end(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """A cron turn hits a 429 while normal messages wait in the batch window: the loop hands
    them back until the cooldown ends instead of letting their claims lapse."""
    clock = SteppedClock(later_noon())
    with simulated_clock(clock.now):
        rig = rig_factory({"gene": claude_toml(fake)})
        gene = AgentRuntime("gene", rig.fleet, rig.client("gene"), claude(rig, clock), clock,
                            settings=replace(FAST, batch_window=3600))  # fmt: skip
        rig.runtimes.append(gene)
        jarvis, operator = rig.client("jarvis"), rig.client()
        await jarvis.do(Calls.send("gene", "later", subject="normal"))
        await gene.claim()
        assert gene.pending
        fake.script(RateLimited(retry_after=900))
        with pytest.raises(Exception, match="rate_limited"):
            await gene.turn(TurnKind.ISOLATED, "cron job", main=False)
        until = gene.cooling_until
        assert until is not None
        task = asyncio.create_task(gene.step())
        await clock.asleep.wait()  # the step sleeps on the cooldown…
        assert not gene.pending  # …having handed the message back first
        shown = await operator.do(Calls.agent("gene"))
        assert (shown.queued, shown.claimed, shown.dead) == (1, 0, 0)
        assert (await operator.do(Calls.inbox(inbox="gene"))).deliveries == []
        clock.asleep.clear()
        await clock.advance(clock.next_wake() or until)
        await task
        assert clock.now() >= until
        [back] = (await operator.do(Calls.inbox(inbox="gene"))).deliveries
        assert (back.attempts, back.deferrals) == (1, 1)


async def test_over_mission_controls_own_budget_messages_wait_for_days_unattempted(
    rig_factory: RigFactory, fake: FakeAnthropic
) -> None:
    """Mission Control's own daily cap (not the provider's) refuses every reservation for
    three days: the four waiting messages are never dead-lettered (the bus dead-letters at 3
    attempts), no attempt is used, the model is never called, and they are all still there."""
    clock = SteppedClock(later_noon())
    with simulated_clock(clock.now):
        rig = rig_factory({"gene": claude_toml(fake)}, budgets={"gene": Limits(tokens=500)})
        gene = AgentRuntime("gene", rig.fleet, rig.client("gene"), claude(rig, clock), clock,
                            settings=FAST)  # fmt: skip
        rig.runtimes.append(gene)
        jarvis, operator = rig.client("jarvis"), rig.client()
        for n in range(4):
            await jarvis.do(Calls.send("gene", f"task {n}", subject=f"task {n}"))
        await gene.start()
        end = clock.now() + timedelta(days=3)
        days = set()
        while clock.now() < end:
            await step_until_asleep(gene, clock)
            days.add(clock.now().date())
        assert len(days) >= 3  # the loop slept through day after day, waking each midnight
        assert fake.requests == []  # refused by Mission Control: the model was never called
        assert await operator.do(Calls.dead_letters()) == []
        me = await operator.do(Calls.agent("gene"))
        assert (me.queued + me.claimed, me.dead) == (4, 0)
        assert me.state == "over_budget"
        # deferred to the next UTC midnight (plus a jitter of at most 0.5 s): look just after
        midnight = datetime.combine(clock.now().date() + timedelta(days=1), time(0), tzinfo=UTC)
        await clock.advance(midnight + timedelta(seconds=1))
        waiting = (await operator.do(Calls.inbox(inbox="gene", limit=10, visibility=1))).deliveries
        assert len(waiting) == 4
        assert all(d.attempts == 1 for d in waiting)  # only this look's claim: none used before
        assert all(d.deferrals >= 3 for d in waiting)  # deferred at least once a day
