"""The runtime against a real Mission Control, thinking with the offline model."""

from __future__ import annotations

import socket

from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Limits
from mcos.domain.heartbeat import Outcome
from mcos.domain.messages import MessageKind, Priority
from mcos.runtime.context import is_summary
from mcos.runtime.workspace import TurnKind
from tests.runtime.conftest import Rig, RigFactory


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_directive_is_handled_answered_in_its_thread_and_logged(rig: Rig) -> None:
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    sent = await jarvis.do(
        Calls.send("gene", "Rotate the backup disks today.", subject="Rotate backups",
                   kind=MessageKind.DIRECTIVE)
    )  # fmt: skip
    assert await gene.claim() == 1
    assert await gene.handle_messages()
    thread = await jarvis.do(Calls.thread(sent.message.thread_id))
    assert [m.sender for m in thread] == ["jarvis", "gene"]
    assert thread[1].reply_to == sent.message.id
    assert "offline model" in thread[1].body
    log = gene.workspace.daily_log(gene.clock.now()).read_text()
    assert f"message {sent.message.id} from jarvis (directive): Rotate backups" in log
    me = await jarvis.do(Calls.agent("gene"))
    assert (me.queued, me.claimed) == (0, 0)
    assert gene.stats.turns == 1


async def test_an_idle_heartbeat_never_calls_the_model(rig: Rig) -> None:
    gene = rig.runtime("gene")
    await gene.start()
    for _ in range(3):
        assert await gene.heartbeat() is Outcome.OK
    assert gene.stats.model_calls == 0
    operator = rig.client()
    assert await operator.do(Calls.usage(agent="gene")) == []
    shown = await operator.do(Calls.agent("gene"))
    assert shown.state_detail == "HEARTBEAT_OK"
    assert shown.state_info["last_beat"]["outcome"] == "ok"


async def test_a_failing_check_wakes_the_model_once_for_the_beat(rig_factory: RigFactory) -> None:
    port = _closed_port()
    rig = rig_factory(
        {"gene": f'checks = [{{ name = "db", tcp = "127.0.0.1:{port}", timeout = "1s" }}]'}
    )
    gene = rig.runtime("gene")
    assert await gene.heartbeat() is Outcome.TURN
    assert gene.stats.turns == 1
    log = gene.workspace.daily_log(gene.clock.now()).read_text()
    assert f"check db: failing: no TCP connection to 127.0.0.1:{port}" in log


async def test_messages_that_arrive_together_are_handled_in_one_turn(rig: Rig) -> None:
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    for i in range(3):
        await jarvis.do(Calls.send("gene", f"item {i}", subject=f"task {i}"))
    assert await gene.claim() == 3
    await gene.handle_messages()
    assert gene.stats.turns == 1
    assert gene.stats.handled == 3


async def test_an_agent_is_not_woken_by_its_own_messages(rig: Rig) -> None:
    sentinel = rig.runtime("sentinel")
    me = rig.client("sentinel")
    await me.do(Calls.send("alerts", "disk 91% on vps", subject="disk"))
    assert await sentinel.claim() == 0
    assert sentinel.pending == {}
    shown = await rig.client().do(Calls.agent("sentinel"))
    assert (shown.queued, shown.claimed) == (0, 0)


async def test_urgent_messages_are_due_at_once_and_normal_ones_wait_for_the_window(
    rig: Rig,
) -> None:
    from mcos.runtime.agent import RuntimeSettings

    gene = rig.runtime("gene", settings=RuntimeSettings(batch_window=60))
    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "whenever", subject="normal"))
    await gene.claim()
    assert not gene.batch_due()
    await jarvis.do(Calls.send("gene", "now", subject="urgent", priority=Priority.URGENT))
    await gene.claim()
    assert gene.batch_due()


async def test_at_the_cap_the_agent_stops_reports_once_and_gives_messages_back(
    rig_factory: RigFactory,
) -> None:
    rig = rig_factory(budgets={"gene": Limits(tokens=500)})
    gene = rig.runtime("gene")
    jarvis = rig.client("jarvis")
    await jarvis.do(Calls.send("gene", "first", subject="one"))
    await gene.claim()
    assert not await gene.handle_messages()
    await jarvis.do(Calls.send("gene", "second", subject="two"))
    await gene.claim()
    assert not await gene.handle_messages()
    shown = await jarvis.do(Calls.agent("gene"))
    assert shown.state == "over_budget"
    inbox = await jarvis.do(Calls.inbox(limit=50))
    reports = [d for d in inbox.deliveries if "over budget" in d.message.subject]
    assert len(reports) == 1
    assert gene.stats.model_calls == 0
    operator = rig.client()
    dead_or_waiting = await operator.do(Calls.agent("gene"))
    assert dead_or_waiting.queued == 2  # given back to the inbox, to be handled tomorrow


async def test_a_nearly_full_context_is_flushed_to_workstate_then_compacted(
    rig_factory: RigFactory,
) -> None:
    rig = rig_factory(
        {"gene": 'model = { provider = "offline", id = "offline-1", context_window = 1000 }'}
    )
    gene = rig.runtime("gene")
    before = (gene.workspace.root / "WORKSTATE.md").read_text()
    await gene.turn(TurnKind.MAIN, "- [message 1] from jarvis (directive, normal): Ship it\ngo")
    after = (gene.workspace.root / "WORKSTATE.md").read_text()
    assert after != before
    assert "## Current task" in after
    # The reply to a message Mission Control does not have fails: a second round follows, and
    # the context is flushed before it; the prompt alone fills 85% of 1,000 tokens, so once
    # more after the turn. The second summary replaces the first.
    assert gene.stats.flushes == 2
    assert gene.context_tokens == 0
    assert "WORKSTATE.md now says" in gene.history[0].text
    assert sum(is_summary(b) for b in gene.history[0].blocks) == 1


async def test_a_loop_without_progress_trips_the_breaker_until_an_operator_resumes(
    rig: Rig,
) -> None:
    from mcos.runtime.agent import RuntimeSettings

    gene = rig.runtime(
        "gene", settings=RuntimeSettings(batch_window=0, breaker_turns=3, pause_poll=0.05)
    )
    gene.tools.allowed = []  # the offline model then has nothing to call: no progress
    for _ in range(2):
        await gene.turn(TurnKind.MAIN, "think about it")
    assert not gene.paused
    await gene.turn(TurnKind.MAIN, "think about it")
    assert gene.paused
    jarvis = rig.client("jarvis")
    shown = await jarvis.do(Calls.agent("gene"))
    assert shown.state == "paused"
    assert "circuit breaker" in shown.state_detail
    inbox = await jarvis.do(Calls.inbox(limit=10))
    assert [d.message.subject for d in inbox.deliveries] == ["gene paused (no-progress loop)"]
    await gene.step()
    assert gene.paused  # nobody resumed it yet
    await rig.client().do(Calls.report_state("gene", AgentStatus.IDLE, "resumed by founder"))
    await gene.step()
    assert not gene.paused
