"""Ping-pong: agents messaging each other back and forth with no outside progress.

Mission Control sees every message, so it judges loops there. The rule is a pure function of the
messages that reached agents within a window:

- *outside input* to an agent is a message from a human, an operator, Mission Control itself or
  one of the agent's channels; it is progress, and exchanges before it do not count;
- starting from the newest message (agent A → agent B), the group is {A, B}; walking back in
  time over the messages that reached the group, a message from another agent X lets X join the
  group when the group also wrote to X within the window (a cycle A → B → X → A); otherwise
  it is third-party input, i.e. progress, and the walk stops;
- the group is caught when at least ``turns`` *turns* passed within the group since the last
  progress, and every member both sent and received one of them. A turn is a run of messages
  from one sender: a manager handing out five tasks in a row and its report answering once is
  two turns, not six messages — delegation is not a loop, an answer to every answer is.

A legitimate long exchange that keeps getting input from a human, a channel or a third agent
never trips it, however long it goes on.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Hop:
    """One message reaching an agent: when, from whom, to whom; ``outside`` for input from a
    human, operator, Mission Control or a channel."""

    at: datetime
    sender: str
    recipient: str
    outside: bool = False


@dataclass(frozen=True)
class PingPongRule:
    """How many messages within which window make a loop."""

    turns: int = 8
    """Turns taken within the group (runs of messages from one sender), with no outside
    progress, that make a loop."""
    window: timedelta = timedelta(minutes=30)
    """Only messages this recent count."""


def caught(hops: Sequence[Hop], now: datetime, rule: PingPongRule) -> frozenset[str]:
    """The agents caught in a loop by the newest hop (oldest first in ``hops``); empty if none.

    ``hops`` are the messages that reached agents, oldest first; those older than the window
    are ignored.
    """
    if not hops:
        return frozenset()
    inbound: dict[str, list[Hop]] = {}
    for h in hops:
        inbound.setdefault(h.recipient, []).append(h)
    return caught_by(hops[-1], inbound, now, rule)


def caught_by(
    newest: Hop, inbound: Mapping[str, Sequence[Hop]], now: datetime, rule: PingPongRule
) -> frozenset[str]:
    """:func:`caught` over the hops indexed by recipient (each list oldest first), as Mission
    Control keeps them: the cost is the traffic into the group, not the fleet's."""
    if newest.outside or newest.sender == newest.recipient or now - newest.at > rule.window:
        return frozenset()
    group = {newest.sender, newest.recipient}
    while True:
        chain, stranger = _walk(inbound, group, now - rule.window)
        if stranger is None or not _wrote_to(inbound, group, stranger, now - rule.window):
            break
        group.add(stranger)
    senders = {h.sender for h in chain}
    receivers = {h.recipient for h in chain}
    if _turns(chain) >= rule.turns and group <= senders and group <= receivers:
        return frozenset(group)
    return frozenset()


def _walk(
    inbound: Mapping[str, Sequence[Hop]], group: set[str], start: datetime
) -> tuple[list[Hop], str | None]:
    """The hops that reached ``group`` from within it since the last progress, newest first,
    and the agent outside the group whose message stopped the walk (None: outside input or the
    start of the window stopped it)."""
    chain: list[Hop] = []
    into = [hops for a in sorted(group) if (hops := inbound.get(a))]
    # One agent of the group received anything (a one-way flood): its hops are already in
    # order, no merge to pay for on every send.
    newest_first: Iterable[Hop] = (
        reversed(into[0])
        if len(into) == 1
        else heapq.merge(*(reversed(h) for h in into), key=_at, reverse=True)
    )
    for h in newest_first:
        if h.at < start:
            break
        if h.outside or h.sender == h.recipient:
            return chain, None
        if h.sender not in group:
            return chain, h.sender
        chain.append(h)
    return chain, None


def _at(hop: Hop) -> datetime:
    return hop.at


def _wrote_to(
    inbound: Mapping[str, Sequence[Hop]], group: set[str], agent: str, start: datetime
) -> bool:
    return any(
        h.sender in group and not h.outside and h.at >= start for h in inbound.get(agent, ())
    )


def _turns(chain: Sequence[Hop]) -> int:
    """How many turns a chain holds: each change of sender starts one (consecutive messages
    from one agent, e.g. several tasks handed out at once, are a single turn)."""
    return sum(1 for i, h in enumerate(chain) if i == 0 or h.sender != chain[i - 1].sender)
