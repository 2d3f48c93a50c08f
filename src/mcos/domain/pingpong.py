"""Ping-pong: agents messaging each other back and forth with no outside progress.

Mission Control sees every message, so it judges loops there. The rule is a pure function of the
messages that reached agents within a window:

- *outside input* to an agent is a message from a human, an operator, Mission Control itself or
  one of the agent's channels; it is progress, and exchanges before it do not count;
- starting from the newest message (agent A → agent B), the group is {A, B}; walking back in
  time over the messages that reached the group, a message from another agent X lets X join the
  group when the group also wrote to X within the window (a cycle A → B → X → A); otherwise
  it is third-party input, i.e. progress, and the walk stops;
- the group is caught when at least ``turns`` messages reached it from within the group since the
  last progress, and every member both sent and received one of them.

A legitimate long exchange that keeps getting input from a human, a channel or a third agent
never trips it, however long it goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Messages exchanged within the group, with no outside progress, that make a loop."""
    window: timedelta = timedelta(minutes=30)
    """Only messages this recent count."""


def caught(hops: Sequence[Hop], now: datetime, rule: PingPongRule) -> frozenset[str]:
    """The agents caught in a loop by the newest hop (oldest first in ``hops``); empty if none.

    ``hops`` are the messages that reached agents, oldest first; those older than the window
    are ignored.
    """
    recent = [h for h in hops if now - h.at <= rule.window]
    if not recent:
        return frozenset()
    newest = recent[-1]
    if newest.outside or newest.sender == newest.recipient:
        return frozenset()
    group = {newest.sender, newest.recipient}
    while True:
        chain, stranger = _walk(recent, group)
        if stranger is None or not _wrote_to(recent, group, stranger):
            break
        group.add(stranger)
    senders = {h.sender for h in chain}
    receivers = {h.recipient for h in chain}
    if len(chain) >= rule.turns and group <= senders and group <= receivers:
        return frozenset(group)
    return frozenset()


def _walk(recent: Sequence[Hop], group: set[str]) -> tuple[list[Hop], str | None]:
    """The hops that reached ``group`` from within it since the last progress, newest first,
    and the agent outside the group whose message stopped the walk (None: outside input or the
    start of the window stopped it)."""
    chain: list[Hop] = []
    for h in reversed(recent):
        if h.recipient not in group:
            continue
        if h.outside or h.sender == h.recipient:
            return chain, None
        if h.sender not in group:
            return chain, h.sender
        chain.append(h)
    return chain, None


def _wrote_to(recent: Sequence[Hop], group: set[str], agent: str) -> bool:
    return any(h.sender in group and h.recipient == agent and not h.outside for h in recent)
