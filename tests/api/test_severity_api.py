"""Severity and loops through the API, on both stores: alarms to topics and peers refused and
audited, the approved broadcast, the per-pair limit, reserved incident marks, and ping-pong
pausing two agents together with their manager told once.

The test directory: jarvis (orchestrator), gene (ops) and sentinel (security) both report to
jarvis; founder (human); topic ``alerts`` (jarvis, sentinel, founder).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.api_models import ChannelInboundIn
from mcos.client import Calls, Client
from mcos.domain.agent_state import AgentStatus
from mcos.domain.messages import Priority
from mcos.domain.pingpong import PingPongRule
from mcos.domain.severity import SendLimits
from mcos.exceptions import Forbidden, TooManyMessages
from mcos.server.context import ChannelBinding
from tests.api.conftest import LiveServer, migrate, serve
from tests.store.conftest import drop_pg_database, migrated_database

LIMITS = SendLimits(pair_max=12)
LOOP = PingPongRule(turns=4, window=timedelta(minutes=15))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def mc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control with a small loop rule (4 messages) and a pair limit of 12."""
    url = migrated_database(request.param, tmp_path)
    try:
        with serve(url, tmp_path, send_limits=LIMITS, pingpong=LOOP) as server:
            yield server
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _refused(server: LiveServer, actor: str) -> list[tuple[str, dict[str, object], str]]:
    with server.client() as op:
        records = op.do(Calls.audit(actor=actor, action="message.send", limit=500))
    return [(r.action, r.targets, r.detail["rule"]) for r in records if r.outcome == "refused"]


def _alarms(server: LiveServer, name: str) -> list[str]:
    """The subjects of the urgent/high messages waiting for ``name``."""
    with server.client(name) as c:
        got = c.do(Calls.inbox(limit=100)).deliveries
    return [
        d.message.subject for d in got if d.message.priority in (Priority.URGENT, Priority.HIGH)
    ]


class TestAlarms:
    """Who may send urgent/high where."""

    def test_a_topic_alarm_from_an_agent_is_a_governed_broadcast(self, mc: LiveServer) -> None:
        """Gene's urgent message to a topic is refused and audited; jarvis's goes through."""
        with mc.client("gene") as gene, pytest.raises(Forbidden, match="broadcast_urgent"):
            gene.do(Calls.send("alerts", "P0", subject="P0 ATTACK", priority=Priority.URGENT))
        refusals = _refused(mc, "agent:gene")
        assert [t["governed"] for _, t, _ in refusals] == ["broadcast_urgent"]
        assert "topic alerts is a broadcast" in str(refusals[0][2])
        assert _alarms(mc, "sentinel") == []
        with mc.client("jarvis") as jarvis:
            sent = jarvis.do(Calls.send("alerts", "x", subject="confirmed", priority=Priority.HIGH))
        assert sent.deliveries == 3
        assert _alarms(mc, "sentinel") == ["confirmed"]

    def test_normal_priority_to_a_topic_passes(self, mc: LiveServer) -> None:
        """Only alarms are governed: news at normal priority reaches the topic."""
        with mc.client("gene") as gene:
            assert gene.do(Calls.send("alerts", "fyi", subject="fyi")).deliveries == 3

    def test_direct_alarms_go_up_or_answer(self, mc: LiveServer) -> None:
        """Sentinel may alarm jarvis (its manager) but not gene (a peer); sentinel may answer
        jarvis's urgent message urgently; jarvis's agents may be alarmed by jarvis."""
        with mc.client("sentinel") as sentinel:
            sentinel.do(Calls.send("jarvis", "look", subject="up", priority=Priority.URGENT))
            with pytest.raises(Forbidden, match="chain of command"):
                sentinel.do(Calls.send("gene", "P0", subject="P0", priority=Priority.URGENT))
        with mc.client("jarvis") as jarvis:
            asked = jarvis.do(Calls.send("sentinel", "status?", priority=Priority.URGENT))
        with mc.client("sentinel") as sentinel:
            sentinel.do(Calls.send("jarvis", "fine", priority=Priority.URGENT,
                                   reply_to=asked.message.id))  # fmt: skip
        assert _alarms(mc, "gene") == []
        assert [t["to"] for _, t, _ in _refused(mc, "agent:sentinel")] == ["gene"]

    def test_an_approved_broadcast_goes_out_once_approved(self, mc: LiveServer) -> None:
        """Gene asks for broadcast_urgent to alerts; once the founder approves, the send naming
        the approval passes, and only for that recipient."""
        with mc.client("gene") as gene:
            ask = Calls.request_approval("broadcast_urgent", {"to": "alerts"}, "web-1 is down")
            request = gene.do(ask)
            ref = {"approval": str(request.id)}
            with pytest.raises(Forbidden):  # not approved yet
                gene.do(Calls.send("alerts", "down", priority=Priority.HIGH, meta=ref))
        with mc.client() as founder:
            assert founder.do(Calls.vote(request.id, "approve", "seen")).state == "approved"
        with mc.client("gene") as gene:
            gene.do(Calls.send("alerts", "down", subject="web-1", priority=Priority.HIGH,
                               meta=ref))  # fmt: skip
            with pytest.raises(Forbidden):
                gene.do(Calls.send("sentinel", "down", priority=Priority.HIGH, meta=ref))
        with mc.client("sentinel") as sentinel, pytest.raises(Forbidden):  # not its request
            sentinel.do(Calls.send("alerts", "P0", priority=Priority.URGENT, meta=ref))
        assert _alarms(mc, "sentinel") == ["web-1"]

    def test_an_agent_cannot_mark_its_message_as_an_incident(self, mc: LiveServer) -> None:
        """meta.incident is Mission Control's: refused, naming the key."""
        with mc.client("gene") as gene, pytest.raises(Forbidden, match=r"meta\.incident"):
            gene.do(Calls.send("sentinel", "x", meta={"incident": "9", "severity": "P0"}))

    def test_humans_are_not_limited(self, mc: LiveServer) -> None:
        """The founder (an operator) alarms a topic and any agent."""
        with mc.client() as founder:
            founder.do(Calls.send("alerts", "drill", subject="drill", priority=Priority.URGENT))
            founder.do(Calls.send("gene", "drill", subject="drill", priority=Priority.URGENT))
        assert _alarms(mc, "gene") == ["drill"]


class TestPairLimit:
    """Messages from one agent to one recipient are limited per window."""

    def test_past_the_limit_is_429_and_audited(self, mc: LiveServer) -> None:
        """Twelve pass (other recipients unaffected); the thirteenth is refused and audited."""
        with mc.client("gene") as gene:
            for i in range(LIMITS.pair_max):
                gene.do(Calls.send("founder", f"note {i}"))
            with pytest.raises(TooManyMessages) as refused:
                gene.do(Calls.send("founder", "one more"))
            gene.do(Calls.send("jarvis", "still fine"))
        assert refused.value.status == 429
        assert "messaging.pair_max" in refused.value.message
        assert any(t["to"] == "founder" for _, t, _ in _refused(mc, "agent:gene"))


def _state(c: Client, name: str) -> tuple[AgentStatus | None, dict[str, object]]:
    a = c.do(Calls.agent(name))
    return a.state, a.state_info


class TestPingPong:
    """Two agents messaging only each other are paused together; their manager hears once."""

    def _exchange(self, mc: LiveServer, n: int) -> None:
        with mc.client("gene") as gene, mc.client("sentinel") as sentinel:
            for i in range(n):
                sender, to = (gene, "sentinel") if i % 2 == 0 else (sentinel, "gene")
                sender.do(Calls.send(to, f"and you? {i}", subject="ping"))

    def _paused_reports(self, mc: LiveServer) -> list[str]:
        with mc.client("jarvis") as jarvis:
            got = jarvis.do(Calls.inbox(limit=100)).deliveries
        return [d.message.subject for d in got if d.message.meta.get("paused")]

    def test_paused_together_and_the_manager_told_once(self, mc: LiveServer) -> None:
        """Four messages trip it; both are paused with the reason; more messages keep them
        paused without a second report; deliveries wait queued; only an operator resumes."""
        self._exchange(mc, LOOP.turns)
        with mc.client() as op:
            for name in ("gene", "sentinel"):
                state, info = _state(op, name)
                assert state is AgentStatus.PAUSED
                assert info["paused_by"] == "mission-control"
        self._exchange(mc, 3)  # in-flight turns finish: no second report
        assert self._paused_reports(mc) == ["Paused (ping-pong): gene, sentinel"]
        with mc.client("gene") as gene:
            answer = gene.do(Calls.report_state("gene", AgentStatus.IDLE, "all good"))
            assert answer.state is AgentStatus.PAUSED  # the runtime reads the pause here
            assert gene.do(Calls.agent("gene")).queued >= 2  # nothing lost
        with mc.client() as op:
            op.do(Calls.report_state("gene", AgentStatus.IDLE, "resumed by an operator"))
            assert _state(op, "gene")[0] is AgentStatus.IDLE
        with mc.client() as op:
            records = op.do(Calls.audit(action="agent.paused"))
        assert [r.targets["agents"] for r in records] == ["gene, sentinel"]

    def test_a_human_in_the_exchange_keeps_it_going(self, mc: LiveServer) -> None:
        """With the founder writing in every few messages, a long exchange is never paused."""
        for _ in range(4):
            self._exchange(mc, LOOP.turns - 1)
            with mc.client() as founder:
                founder.do(Calls.send("gene", "carry on", subject="founder"))
        with mc.client() as op:
            assert _state(op, "gene")[0] is not AgentStatus.PAUSED
            assert _state(op, "sentinel")[0] is not AgentStatus.PAUSED
        assert self._paused_reports(mc) == []


def test_a_channel_item_is_outside_progress(tmp_path: Path) -> None:
    """Gene and sentinel talk on, but an item from gene's own channel arrives every three
    messages: never paused. Then the items stop, and four messages later both are."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    channels = {"mail": ChannelBinding("mock", "gene")}
    with (
        serve(url, tmp_path, send_limits=LIMITS, pingpong=LOOP, channels=channels) as mc,
        mc.client("gene") as gene,
        mc.client("sentinel") as sentinel,
        mc.client() as op,
    ):
        for i in range(9):
            if i % 3 == 0:
                item = ChannelInboundIn(sender="customer", text="any news?", ref=f"c{i}",
                                        at=datetime.now(UTC))  # fmt: skip
                gene.do(Calls.channel_inbound("mail", item))
            sender, to = (gene, "sentinel") if i % 2 == 0 else (sentinel, "gene")
            sender.do(Calls.send(to, f"and you? {i}"))
        assert _state(op, "gene")[0] is not AgentStatus.PAUSED
        for i in range(LOOP.turns):
            sender, to = (gene, "sentinel") if i % 2 == 0 else (sentinel, "gene")
            sender.do(Calls.send(to, f"still? {i}"))
        assert _state(op, "gene")[0] is AgentStatus.PAUSED
        assert _state(op, "sentinel")[0] is AgentStatus.PAUSED
