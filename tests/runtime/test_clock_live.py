"""Time-based flags are judged on a live reading of Mission Control's clock, in-process.

The host clock is stepped between two measurements (the wall the runtime's ``MissionClock``
reads is moved, as NTP or ``date -s`` would move it); the runtime's cached offset is then wrong,
and nothing may be flagged on it. ``tests/e2e/test_clock_skew.py`` does the same to a real agent
process with libfaketime.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mcos.client import AsyncClient, Calls
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.clock import MissionClock
from tests.runtime.conftest import FAST, Rig

SECONDS = re.compile(r"clock unhealthy on host \S+: ([+-]\d+(?:\.\d+)?)s")


@dataclass
class Host:
    """The host's wall clock: the true time plus ``step``."""

    step: timedelta = timedelta(0)

    def wall(self) -> datetime:
        return datetime.now(UTC) + self.step


def gene_on(rig: Rig, host: Host, client: AsyncClient | None = None) -> AgentRuntime:
    runtime = AgentRuntime(
        "gene",
        rig.fleet,
        client or rig.client("gene"),
        OfflineModel(),
        MissionClock(host.wall),
        settings=FAST,
    )
    rig.runtimes.append(runtime)
    return runtime


async def clock_incidents(rig: Rig) -> list[str]:
    return [i.summary for i in await rig.client().do(Calls.incidents()) if "clock" in i.summary]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_an_offset_gone_stale_before_the_p3_is_not_flagged_and_a_true_skew_is(
    rig: Rig,
) -> None:
    """Measured 7 h off at start, then NTP steps the host into line before the clock
    discipline runs: the live reading disagrees, so no P3. A later true 3-hour skew is
    flagged on its live reading."""
    host = Host(timedelta(hours=7))
    gene = gene_on(rig, host)
    assert isinstance(gene.clock, MissionClock)
    client = rig.client("gene")

    async def server_time() -> datetime:
        return (await client.do(Calls.time())).now

    sample = await gene.clock.measure(server_time)  # as the agent process does at start
    assert abs(sample.offset + timedelta(hours=7)) < timedelta(minutes=1)
    host.step = timedelta(0)
    await gene.discipline_clock(sample.offset)
    assert await clock_incidents(rig) == []
    assert abs(gene.clock.offset) < timedelta(seconds=5)  # the live reading was adopted
    assert not gene.clock_reported

    host.step = timedelta(hours=-3)
    await gene.discipline_clock()
    summaries = await clock_incidents(rig)
    assert len(summaries) == 1
    found = SECONDS.search(summaries[0])
    assert found is not None, summaries
    assert abs(float(found.group(1)) - 3 * 3600) < 60, summaries


async def test_a_message_is_flagged_future_dated_only_if_a_live_reading_agrees(
    rig: Rig,
) -> None:
    """The host falls 7 h behind after the offset was measured: on the cached offset every
    message looks 7 h ahead, but a live reading says it is not, and nothing is logged. A
    message truly dated ahead of Mission Control's clock is still flagged."""
    host = Host()
    gene = gene_on(rig, host)
    await gene.discipline_clock()
    host.step = timedelta(hours=-7)
    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "status?", subject="status"))
    assert await gene.claim() == 1
    log = gene.workspace.daily_log(gene.clock.now())
    assert "dated ahead" not in (log.read_text() if log.exists() else "")
    (delivery,) = gene.pending.values()
    assert not gene.future_dated(delivery)  # the live offset was adopted
    ahead = delivery.message.model_copy(
        update={"created_at": delivery.message.created_at + timedelta(hours=1)}
    )
    forged = delivery.model_copy(update={"message": ahead})
    assert await gene.confirm_future_dated([delivery, forged]) == [forged]


async def test_with_no_live_reading_nothing_is_flagged(rig: Rig) -> None:
    """Mission Control unreachable when a message looks future-dated on the cached offset:
    no live answer, no flag."""
    host = Host()
    gene = gene_on(rig, host)
    await gene.discipline_clock()
    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "status?", subject="status"))
    assert await gene.claim() == 1
    (delivery,) = gene.pending.values()
    offline = AsyncClient(f"http://127.0.0.1:{_closed_port()}", "token")
    rig.clients.append(offline)
    cut_off = gene_on(rig, Host(timedelta(hours=-7)), offline)
    assert isinstance(cut_off.clock, MissionClock)
    assert cut_off.future_dated(delivery)  # on its (zero) cached offset
    assert await cut_off.confirm_future_dated([delivery]) == []
