"""Severity on the bus: which agent-sent messages may arrive as alarms, the per-sender limits,
the broadcast action in the matrix and the ``[messaging]`` section of the fleet file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.config import load_fleet
from mcos.domain.authority import Matrix, Party
from mcos.domain.messages import Priority, RecipientKind
from mcos.domain.pingpong import Hop
from mcos.domain.severity import (
    BROADCAST_ACTION,
    Answered,
    direct_alarm_refusal,
    fanout_over,
    is_alarm,
    pair_over,
)
from mcos.exceptions import ConfigErrors
from mcos.server.limits import SendWindows

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
AGENT = RecipientKind.AGENT


class TestDirectAlarms:
    """An agent alarms another agent directly only upward or in answer."""

    def test_normal_and_low_always_pass(self) -> None:
        """Priorities below high are never judged here."""
        for p in (Priority.NORMAL, Priority.LOW):
            assert not is_alarm(p)
            assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, p, None) is None

    def test_to_the_manager_passes(self) -> None:
        """Urgent to one's own reports_to is escalation, the normal way up."""
        assert direct_alarm_refusal("sentinel", "jarvis", "jarvis", AGENT, Priority.URGENT,
                                    None) is None  # fmt: skip

    def test_to_ones_own_reports_passes(self) -> None:
        """A manager (the CTO) may alarm the agents that report to it, not others."""
        assert direct_alarm_refusal("elon", "jarvis", "forge", AGENT, Priority.URGENT, None,
                                    reports={"forge"}) is None  # fmt: skip
        assert direct_alarm_refusal("elon", "jarvis", "gene", AGENT, Priority.URGENT, None,
                                    reports={"forge"})  # fmt: skip

    def test_to_a_peer_is_refused_naming_the_rule(self) -> None:
        """Urgent to a peer is refused; the reason names the manager and the way out."""
        why = direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.URGENT, None)
        assert why is not None
        assert "jarvis" in why
        assert "gene" in why
        assert BROADCAST_ACTION in why
        assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.HIGH, None)

    def test_humans_and_topics_are_not_judged_here(self) -> None:
        """A human is never an alarm for the fleet; a topic is the broadcast rule's."""
        for kind in (RecipientKind.HUMAN, RecipientKind.TOPIC):
            assert direct_alarm_refusal("sentinel", None, "x", kind, Priority.URGENT, None) is None

    def test_a_reply_may_match_the_priority_it_answers(self) -> None:
        """Gene asked urgently: sentinel may answer urgently, not louder, and only gene."""
        asked = Answered("gene", "sentinel", Priority.HIGH)
        assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.HIGH,
                                    asked) is None  # fmt: skip
        assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.URGENT, asked)
        assert direct_alarm_refusal("sentinel", "jarvis", "elon", AGENT, Priority.HIGH, asked)

    def test_a_reply_to_a_calm_message_cannot_raise_an_alarm(self) -> None:
        """Replying to a normal message does not open a path for an urgent one."""
        calm = Answered("gene", "sentinel", Priority.NORMAL)
        assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.URGENT, calm)

    def test_a_reply_to_someone_elses_message_is_no_excuse(self) -> None:
        """Only the recipient's own message to the sender counts as an invitation."""
        other = Answered("gene", "elon", Priority.URGENT)
        assert direct_alarm_refusal("sentinel", "jarvis", "gene", AGENT, Priority.URGENT, other)


class TestLimits:
    """Fan-out and per-pair windows."""

    def test_fanout_counts_distinct_recipients_in_the_window(self) -> None:
        """Three distinct agents pass a limit of 3; the fourth is over; old ones drop out."""
        w = timedelta(minutes=10)
        recent = [(T0, "a"), (T0, "a"), (T0 + timedelta(minutes=1), "b")]
        now = T0 + timedelta(minutes=2)
        assert fanout_over(recent, ["c"], now, w, 3) is None
        assert fanout_over([*recent, (now, "c")], ["d"], now, w, 3) == 4
        later = T0 + timedelta(minutes=10, seconds=30)
        assert fanout_over([*recent, (now, "c")], ["d"], later, w, 3) is None

    def test_pair_limit(self) -> None:
        """The limit-th message passes, the next is over, and the window forgets."""
        w = timedelta(minutes=10)
        sent = [(T0 + timedelta(seconds=i), 1) for i in range(3)] + [(T0 + timedelta(seconds=3), 2)]
        now = T0 + timedelta(seconds=10)
        assert pair_over(sent[:3], now, w, 5) is None
        assert pair_over(sent, now, w, 5) == 6
        assert pair_over(sent, now, w, 5, adding=0) is None
        assert pair_over(sent, now, w, 5, adding=100) == 105
        assert pair_over(sent, T0 + timedelta(minutes=11), w, 5) is None


class TestBroadcastAction:
    """broadcast_urgent is in the matrix: the orchestrator and humans alone, others ask."""

    def test_defaults(self) -> None:
        """Only the orchestrator and humans broadcast alarms alone."""
        m = Matrix.build({})
        assert m.may_alone(BROADCAST_ACTION, Party.agent("jarvis", "orchestrator")) is None
        assert m.may_alone(BROADCAST_ACTION, Party.human("founder", "founder")) is None
        why = m.may_alone(BROADCAST_ACTION, Party.agent("sentinel", "security"))
        assert why is not None
        assert "broadcast_urgent" in why
        rule = m.rule(BROADCAST_ACTION)
        assert rule.approve is not None
        assert rule.approve.admits(Party.human("founder", "founder"))
        assert not rule.approve.admits(Party.agent("sentinel", "security"))

    def test_the_fleet_file_may_widen_it(self) -> None:
        """A fleet may let its security agent broadcast alone."""
        m = Matrix.build({BROADCAST_ACTION: {"alone": ["role:security", "human"]}})
        assert m.may_alone(BROADCAST_ACTION, Party.agent("sentinel", "security")) is None


FLEET = """
[hosts.mini]
[humans.founder]
role = "founder"
[agents.jarvis]
role = "orchestrator"
host = "mini"
"""


class TestConfig:
    """The [messaging] section: sane defaults, errors naming the key path."""

    def test_defaults(self, tmp_path: Path) -> None:
        """Without the section the limits and the loop rule have their defaults."""
        (tmp_path / "fleet.toml").write_text(FLEET)
        fleet = load_fleet(tmp_path / "fleet.toml")
        limits, rule = fleet.messaging.limits(), fleet.messaging.pingpong()
        assert (limits.fanout_max, limits.pair_max) == (3, 30)
        assert (rule.turns, rule.window) == (10, timedelta(minutes=15))

    def test_values(self, tmp_path: Path) -> None:
        """Every key is read."""
        (tmp_path / "fleet.toml").write_text(
            FLEET + '[messaging]\nfanout_max = 5\nfanout_window = "1h"\npair_max = 7\n'
            'pair_window = "90s"\npingpong_turns = 4\npingpong_window = "5m"\n'
        )
        m = load_fleet(tmp_path / "fleet.toml").messaging
        limits, rule = m.limits(), m.pingpong()
        assert (limits.fanout_max, limits.fanout_window) == (5, timedelta(hours=1))
        assert (limits.pair_max, limits.pair_window) == (7, timedelta(seconds=90))
        assert (rule.turns, rule.window) == (4, timedelta(minutes=5))

    def test_bad_values_name_the_key(self, tmp_path: Path) -> None:
        """A bad duration, a zero limit and an unknown key each name their key path."""
        (tmp_path / "fleet.toml").write_text(
            FLEET + '[messaging]\nfanout_window = "soon"\npair_max = 0\npingpong = 3\n'
        )
        with pytest.raises(ConfigErrors) as err:
            load_fleet(tmp_path / "fleet.toml")
        keys = sorted(e.details["key"] for e in err.value.errors)
        assert keys == ["messaging.fanout_window", "messaging.pair_max", "messaging.pingpong"]
        assert any("'soon' is not a duration" in e.message for e in err.value.errors)


class TestWindows:
    """Mission Control's in-memory windows stay bounded under a flood."""

    def test_a_flood_keeps_one_count_per_second_and_forgets_the_old(self) -> None:
        """20 messages a second for 20 minutes: at most one entry per second of the window,
        and the pair limit still sees every message of the window."""
        windows = SendWindows()
        windows.configure(timedelta(minutes=10))
        for second in range(20 * 60):
            for _ in range(20):
                windows.sent(T0 + timedelta(seconds=second), "elon", "gene")
        counts = windows.pairs[("elon", "gene")]
        assert len(counts) <= 10 * 60 + 1
        now = T0 + timedelta(seconds=20 * 60 - 1)
        seen = pair_over(counts, now, timedelta(minutes=10), 1, adding=0)
        assert seen == 10 * 60 * 20

    def test_hops_per_agent_are_capped(self) -> None:
        """However many messages reach one agent, the ping-pong rule keeps the latest few."""
        windows = SendWindows()
        for i in range(5000):
            windows.reached(Hop(T0 + timedelta(milliseconds=i), f"a{i % 7}", "gene"))
        assert len(windows.inbound["gene"]) == SendWindows.HOPS_PER_AGENT
