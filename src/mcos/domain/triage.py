"""E-mail triage: which rule of the fleet file decides what happens to one message.

Pure: the channel parses the message and applies the decision; this module only reads the
rules. Urgency comes from the rules alone — a mail that shouts "URGENT" is not urgent unless
a rule the humans wrote says so, because the content is untrusted. And a ``from`` rule trusts
the From address only when the receiving server authenticated it (``authenticated``: its
Authentication-Results said DKIM or SPF passed aligned with From, or DMARC passed — see
:func:`mcos.channels.email.sender_authenticated`): anyone can write any From header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the domain imports nothing at run time; config imports the domain
    from mcos.config.models import TriageRule

Action = Literal["urgent", "model", "ignore"]


@dataclass(frozen=True)
class Triage:
    """What to do with one message."""

    action: Action
    """``urgent``: to the agent at once (and paged); ``model``: at its next turn; ``ignore``:
    never shown to a model."""
    move_to: str | None = None
    """The folder the message goes to once triaged."""
    flag: bool = False
    """Set ``\\Flagged`` once triaged."""
    rule: int | None = None
    """The index of the rule that matched; None: no rule did (the default, ``model``)."""


def rule_matches(
    rule: TriageRule, sender: str, subject: str, body: str, *, authenticated: bool = False
) -> bool:
    """True when every field the rule gives matches; a rule that gives none matches all. A
    ``from`` glob never matches an address the receiving server did not authenticate."""
    if rule.sender is not None and (
        not authenticated or not fnmatchcase(sender.strip().lower(), rule.sender.lower())
    ):
        return False
    if rule.subject is not None and not re.search(rule.subject, subject, re.IGNORECASE):
        return False
    return rule.body is None or re.search(rule.body, body, re.IGNORECASE) is not None


def triage(
    rules: Sequence[TriageRule],
    sender: str,
    subject: str,
    body: str,
    *,
    authenticated: bool = False,
) -> Triage:
    """The first matching rule's decision; no match sends the message to the model.

    ``sender`` is the bare address (``bob@bank.example``), never the display name, which
    anyone can set to anything; ``authenticated``: whether the receiving server vouched for it
    (without that, rules with a ``from`` glob are skipped).
    """
    for index, rule in enumerate(rules):
        if rule_matches(rule, sender, subject, body, authenticated=authenticated):
            return Triage(rule.action, rule.move_to, rule.flag, index)
    return Triage("model")
