"""Incidents and their gates: a report is a hypothesis until its gate's confirmers say otherwise.

In the field one security agent declared a fleet-wide P0 from one unconfirmed observation and
the whole fleet acted as if it were on fire. Here a report above P3 reaches only the agents
and humans who can confirm it; only a confirmed P1 or P0 reaches the rest of the fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

SEVERITIES = ("P3", "P2", "P1", "P0")
"""Least to most severe."""
REPORTS_PER_HOUR = 5
"""Default cap on one reporter's incident reports in any hour."""
RATE_WINDOW = timedelta(hours=1)


def rank(severity: str) -> int:
    """0 for P3 up to 3 for P0."""
    return SEVERITIES.index(severity)


class IncidentState(StrEnum):
    """Where an incident stands."""

    REPORTED = "reported"
    CONFIRMED = "confirmed"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


OPEN = frozenset({IncidentState.REPORTED, IncidentState.CONFIRMED, IncidentState.ESCALATED})


@dataclass(frozen=True)
class Incident:
    """One incident: the current severity and state, and who first reported it."""

    id: int
    severity: str
    reported_as: str
    state: IncidentState
    summary: str
    evidence: str
    reporter: str
    fingerprint: str
    reports: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class IncidentEvent:
    """A step in an incident's timeline: who, when, what, at which severity, and why."""

    incident_id: int
    at: datetime
    actor: str
    action: str
    """reported, grouped, confirm (a vote), confirmed, escalated, resolved, dismissed, expired
    (dismissed by Mission Control: nobody confirmed it in time)."""
    severity: str
    reason: str


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset({"a", "an", "the", "is", "are", "on", "in", "of", "at", "to", "for", "and"})


def fingerprint(observation: str) -> str:
    """The key that groups reports of one observation: its words, lowercased and sorted.

    "Metric directories missing fleet-wide" and "fleet-wide: metric directories missing" are
    one observation, reported twice — grouped, not multiplied.
    """
    words = sorted({w for w in _WORD.findall(observation.lower()) if w not in _STOP})
    return " ".join(words)[:500]


def reporters(events: list[IncidentEvent]) -> set[str]:
    """Everyone who reported (or re-reported) the observation: none of them may confirm it."""
    return {e.actor for e in events if e.action in ("reported", "grouped")}


def claimed(events: list[IncidentEvent], severity: str) -> set[str]:
    """The reporters who themselves claimed at least ``severity``: only their report may fill
    a seat at that level (a P2 report is no one's P0 confirmation). A re-report (``grouped``)
    claims the severity its reason starts with (``"P1: ..."``)."""
    found: set[str] = set()
    for e in events:
        if e.action == "reported":
            said = e.severity
        elif e.action == "grouped":
            said = e.reason.partition(":")[0]
        else:
            continue
        if said in SEVERITIES and rank(said) >= rank(severity):
            found.add(e.actor)
    return found


def votes_at(events: list[IncidentEvent], severity: str) -> list[str]:
    """Actors who voted to confirm at ``severity``, each once, in order."""
    seen: list[str] = []
    for e in events:
        if e.action == "confirm" and e.severity == severity and e.actor not in seen:
            seen.append(e.actor)
    return seen


def broadcast(severity: str) -> bool:
    """Whether a confirmed incident of this severity reaches every agent (P1 and P0)."""
    return rank(severity) >= rank("P1")
