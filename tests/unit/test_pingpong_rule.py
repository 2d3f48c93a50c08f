"""The ping-pong rule: agents messaging only each other, with no outside progress, are caught
together; any outside input (a human, a channel, a third agent) is progress."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import event, given
from hypothesis import strategies as st

from mcos.domain.pingpong import Hop, PingPongRule, caught, caught_by
from mcos.server.limits import SendWindows

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
RULE = PingPongRule(turns=6, window=timedelta(minutes=15))


def pingpong(n: int, a: str = "elon", b: str = "gene", start: int = 0) -> list[Hop]:
    """``n`` messages alternating a → b, b → a, one every 10 s."""
    return [
        Hop(T0 + timedelta(seconds=10 * (start + i)), *((a, b) if i % 2 == 0 else (b, a)))
        for i in range(n)
    ]


def at_end(hops: list[Hop]) -> datetime:
    return hops[-1].at


class TestCaught:
    """What trips it."""

    def test_two_agents_back_and_forth(self) -> None:
        """Six messages between two agents with nothing else: both are caught together."""
        hops = pingpong(6)
        assert caught(hops, at_end(hops), RULE) == {"elon", "gene"}

    def test_one_short_is_not_a_loop(self) -> None:
        """Five messages are a conversation, not yet a loop."""
        hops = pingpong(5)
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_a_cycle_of_three(self) -> None:
        """A → B → C → A → … is caught with all three."""
        names = ["elon", "gene", "flow"]
        hops = [Hop(T0 + timedelta(seconds=i), names[i % 3], names[(i + 1) % 3]) for i in range(9)]
        assert caught(hops, at_end(hops), RULE) == {"elon", "gene", "flow"}

    def test_old_messages_fall_out_of_the_window(self) -> None:
        """Six messages spread over more than the window are not a loop."""
        hops = [
            Hop(T0 + timedelta(minutes=4 * i), *(("elon", "gene") if i % 2 else ("gene", "elon")))
            for i in range(6)
        ]
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_one_sided_chatter_is_not_ping_pong(self) -> None:
        """One agent sending six messages to another that never answers is not a loop (the
        per-pair limit handles a flood)."""
        hops = [Hop(T0 + timedelta(seconds=i), "elon", "gene") for i in range(8)]
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_delegation_is_counted_in_turns_not_messages(self) -> None:
        """A manager handing out tasks in runs and its report answering once per run is four
        turns however many messages the runs hold: not a loop."""
        hops = [Hop(T0 + timedelta(seconds=i), "jarvis", "gene") for i in range(5)]
        hops.append(Hop(T0 + timedelta(seconds=6), "gene", "jarvis"))
        hops += [Hop(T0 + timedelta(seconds=7 + i), "jarvis", "gene") for i in range(4)]
        hops.append(Hop(T0 + timedelta(seconds=12), "gene", "jarvis"))
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_unrelated_traffic_does_not_hide_a_loop(self) -> None:
        """Other agents talking among themselves are not input to the looping pair."""
        hops = pingpong(6)
        noise = [Hop(h.at, "vault", "scout") for h in hops]
        mixed = sorted([*hops, *noise], key=lambda h: h.at)
        mixed.append(hops[-1])
        assert caught(mixed, at_end(mixed), RULE) == {"elon", "gene"}


class TestProgress:
    """What keeps a long exchange legitimate."""

    def test_a_human_in_the_middle_resets_the_count(self) -> None:
        """The founder's message to one of them is progress: only what follows counts."""
        hops = [*pingpong(4), Hop(T0 + timedelta(seconds=45), "founder", "gene", outside=True)]
        hops += pingpong(5, start=5)
        assert caught(hops, at_end(hops), RULE) == frozenset()
        hops.append(Hop(T0 + timedelta(seconds=100), "gene", "elon"))  # the sixth turn
        assert caught(hops, at_end(hops), RULE) == {"elon", "gene"}

    def test_a_channel_item_is_progress(self) -> None:
        """An item from the agent's own channel (sender = recipient) is outside input."""
        hops = [*pingpong(5), Hop(T0 + timedelta(seconds=55), "gene", "gene", outside=True)]
        hops += pingpong(5, start=6)
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_a_third_agent_bringing_news_is_progress(self) -> None:
        """A third agent the pair never wrote to brings input from outside the loop."""
        hops = [*pingpong(5), Hop(T0 + timedelta(seconds=55), "atlas", "elon")]
        hops += pingpong(5, start=6)
        assert caught(hops, at_end(hops), RULE) == frozenset()

    def test_the_newest_message_from_outside_trips_nothing(self) -> None:
        """The rule looks at the exchange the newest message continues."""
        hops = [*pingpong(8), Hop(T0 + timedelta(seconds=90), "founder", "elon", outside=True)]
        assert caught(hops, at_end(hops), RULE) == frozenset()

    @given(
        st.integers(min_value=1, max_value=RULE.turns - 1),
        st.integers(min_value=RULE.turns, max_value=80),
        st.sampled_from(["human", "channel"]),
    )
    def test_a_long_exchange_with_regular_outside_input_never_trips(
        self, every: int, length: int, source: str
    ) -> None:
        """However long two agents talk, outside input at least every ``turns - 1`` messages
        keeps them free, at every point of the exchange."""
        hops: list[Hop] = []
        for i, h in enumerate(pingpong(length)):
            if i % every == 0:
                sender = "founder" if source == "human" else h.recipient
                hops.append(Hop(h.at - timedelta(seconds=1), sender, h.recipient, outside=True))
            hops.append(h)
            assert caught(hops, h.at, RULE) == frozenset(), f"tripped at message {i}"

    @given(st.integers(min_value=RULE.turns, max_value=60))
    def test_without_outside_input_it_always_trips(self, length: int) -> None:
        """The same exchange with no outside input is caught once it reaches ``turns``."""
        hops = pingpong(length)
        assert caught(hops, at_end(hops), RULE) == {"elon", "gene"}


class TestSentSince:
    """Mission Control skips the rule's walk when the newest message's recipient sent nothing
    within the window (``SendWindows.sent_since``): never when the rule would catch a loop."""

    @given(st.randoms(use_true_random=False))
    def test_the_skip_never_hides_a_loop(self, rng: random.Random) -> None:
        """Over any traffic of three agents (a message every 0-90 s, one in twenty from
        outside), recorded as Mission Control records it and forgetting paused agents now and
        then, a skipped message is one the rule would not catch; such traffic closes a loop
        in about four runs of ten, so a wrong skip is found."""
        windows = SendWindows()
        windows.configure(RULE.window)
        at = T0
        agents = ["elon", "gene", "kim"]
        for _ in range(80):
            at += timedelta(seconds=rng.randint(0, 90))
            hop = Hop(at, rng.choice(agents), rng.choice(agents), outside=rng.randint(0, 19) == 0)
            windows.reached(hop)
            if rng.randint(0, 30) == 0:
                windows.forget([rng.choice(agents)])
            looped = caught_by(hop, windows.inbound, hop.at, RULE)
            event("a loop caught" if looped else "no loop")
            if not windows.sent_since(hop.recipient, hop.at - RULE.window):
                assert looped == frozenset()

    def test_a_one_way_flood_is_skipped_and_an_answer_is_not(self) -> None:
        """An agent that never answers: skipped; once it answers, the rule looks again."""
        windows = SendWindows()
        for i in range(10):
            windows.reached(Hop(T0 + timedelta(seconds=i), "elon", "gene"))
        assert not windows.sent_since("gene", T0)
        windows.reached(Hop(T0 + timedelta(seconds=11), "gene", "elon"))
        assert windows.sent_since("gene", T0)
        assert not windows.sent_since("gene", T0 + timedelta(seconds=12))
