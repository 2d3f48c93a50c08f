"""A cheap first look: what a triage model may settle, and what its answer means.

An agent with a ``triage_model`` shows what woke it to that cheaper model first, which answers
through one forced tool call (``triage_decision``: structured output) whether the main model is
needed. Pure rules, no I/O: which items the first look may settle at all (:func:`must_see`),
which model pairs can be reached (:func:`route_problem`), and how an answer is read
(:func:`read_decision`). Every doubt goes to the main model: a missing, malformed or partial
answer never drops an item, it only costs the main call triage would have saved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

TOOL = "triage_decision"
"""The tool the triage model is made to call; its input is the decision."""
TOOL_DESCRIPTION = (
    "Record whether the agent's main model must handle these items. needs_main is true when "
    "any item asks the agent to do, answer, decide or change anything, reports a problem, or "
    "you are unsure; false only when every item is purely informational and needs no action."
)
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "needs_main": {
            "type": "boolean",
            "description": "Whether the main model must handle these items.",
        },
        "reason": {"type": "string", "description": "Why, in one short sentence."},
        "items": {
            "type": "array",
            "description": "One decision per item, named as shown (for example 'message 12').",
            "items": {
                "type": "object",
                "properties": {
                    "item": {"type": "string"},
                    "needs_main": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
                "required": ["item", "needs_main", "reason"],
            },
        },
    },
    "required": ["needs_main", "reason"],
}
"""The decision's JSON schema, as the tool's input schema (Anthropic and OpenAI alike)."""

SETTLEABLE_KINDS = frozenset({"report", "reply"})
"""Message kinds that inform rather than ask: the only ones a first look may settle."""
SETTLEABLE_PRIORITIES = frozenset({"low", "normal"})


@dataclass(frozen=True)
class Item:
    """One thing that woke the agent, as the rules see it."""

    ref: str
    """How the prompt names it: ``message 12``, ``check web``."""
    kind: str
    """The message kind (``report``, ``request``…), or ``check`` / ``cron`` / ``routine``."""
    priority: str = "normal"
    from_agent: bool = False
    """Sent by another agent of the fleet (not a human, not Mission Control, not a channel)."""
    outside: bool = False
    """Came in on a channel, or carries content from outside the fleet (untrusted)."""
    governance: bool = False
    """Part of an approval, an incident or a gate."""


def must_see(item: Item) -> str | None:
    """Why the main model must see ``item`` itself; None when a first look may settle it.

    As an operator would have it: anything urgent, any directive, request or alert (someone
    waits for an act or an answer), anything from a human or a channel, anything carrying
    outside content (a first look must not be talked out of showing it), every approval,
    incident and governance item, failing checks, cron jobs and routine items go to the main
    model. What remains is another agent's report or reply at normal or low priority: news.
    """
    if not item.ref.startswith("message "):
        return f"{item.ref} is a {item.kind} item"
    reasons = (
        (item.priority not in SETTLEABLE_PRIORITIES, f"is {item.priority}"),
        (item.kind not in SETTLEABLE_KINDS, f"is a {item.kind}"),
        (item.governance, "is part of an approval or incident"),
        (item.outside, "came from outside the fleet"),
        (not item.from_agent, "is not from an agent of the fleet"),
    )
    for applies, why in reasons:
        if applies:
            return f"{item.ref} {why}"
    return None


def route_problem(
    main_provider: str,
    triage_provider: str,
    triage_base_url: str | None,
    main_base_url: str | None,
) -> str | None:
    """Why a triage model on ``triage_provider`` cannot be reached by an agent whose model is
    on ``main_provider``; None when it can. The triage model is called with the agent's own
    credential and route (its key, or Mission Control's gateway), so it must be on the same
    provider — except the offline model (no network) and an OpenAI-compatible server of its
    own (``base_url``: a local server that needs no key)."""
    if triage_provider in ("offline", main_provider):
        return None
    if triage_provider == "openai" and triage_base_url and triage_base_url != main_base_url:
        return None
    return (
        f"a {triage_provider} triage model needs the agent's model on {triage_provider} too: "
        f"it is called with the agent's own key and route (the agent's model is on "
        f"{main_provider}); use a {main_provider} model, the offline model, or an "
        "OpenAI-compatible server with its own base_url"
    )


class ItemDecision(BaseModel):
    """The triage model's word on one item."""

    model_config = ConfigDict(extra="ignore")

    item: str
    needs_main: bool
    reason: str


class Decision(BaseModel):
    """The triage model's answer (the input of its ``triage_decision`` call)."""

    model_config = ConfigDict(extra="ignore")

    needs_main: bool
    reason: str
    items: list[ItemDecision] = []


@dataclass(frozen=True)
class Verdict:
    """What the runtime does with an answer."""

    needs_main: bool
    reason: str
    settled: tuple[tuple[str, str], ...] = ()
    """Each item settled without the main model, with the reason (empty when it is needed)."""
    usable: bool = True
    """False: the answer was missing or malformed, so the main model decides (fail open)."""


_NUMBER = re.compile(r"\d+")


def _ref(text: str) -> str:
    """``[message 12]``, ``Message 12`` and ``12`` all name ``message 12`` (only messages are
    ever shown to a first look)."""
    found = _NUMBER.search(text)
    return f"message {found[0]}" if found else text.strip().lower()


def read_decision(answer: object, refs: Sequence[str]) -> Verdict:
    """The verdict on items ``refs`` from the tool input ``answer`` (None: no tool call).

    The main model is needed when the answer says so overall or for any item, when it is
    missing or malformed, or when several items were shown and one has no decision of its
    own; otherwise every item is settled with its reason (or the overall one).
    """
    if answer is None:
        return Verdict(True, f"no decision: the triage model did not call {TOOL}", usable=False)
    try:
        decision = Decision.model_validate(answer)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        return Verdict(True, f"malformed decision ({where}: {first['msg']})", usable=False)
    reason = decision.reason.strip() or "(no reason given)"
    per_item = {_ref(d.item): d for d in decision.items}
    wanted = [per_item[r] for r in refs if r in per_item and per_item[r].needs_main]
    if decision.needs_main or wanted:
        because = "; ".join(f"{d.item}: {d.reason.strip()}" for d in wanted) or reason
        return Verdict(True, because)
    missing = [r for r in refs if r not in per_item]
    if len(refs) > 1 and missing:
        return Verdict(True, f"no decision for {', '.join(missing)}")
    settled = tuple(
        (r, (per_item[r].reason.strip() if r in per_item else "") or reason) for r in refs
    )
    return Verdict(False, reason, settled)
