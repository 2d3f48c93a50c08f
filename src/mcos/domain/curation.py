"""Curating memory: when the daily logs are distilled into MEMORY.md, and what a new one must keep.

Daily logs (``memory/YYYY-MM-DD.md``) are raw, append-only notes; MEMORY.md is the distilled,
long-lived part, and the model rewrites it from the logs at a cadence (or sooner when much has
piled up). A rewrite may drop what is stale but never a guardrail: the lines this module calls
guardrails must survive verbatim, or the new version is refused and the old one stays. Plain
functions over plain data, time passed in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DAILY_LOG = re.compile(r"^\d{4}-\d{2}-\d{2}\.md$")
"""A daily log's file name in ``memory/``."""
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_GUARD_HEADING = re.compile(r"\b(?:guardrails?|never|rules?)\b", re.IGNORECASE)
_GUARD_LINE = re.compile(
    r"^(?:(?:[-*+]|\d+[.)])\s+)?(?:\[[ xX]\]\s+)?(?:\*\*|__)?\s*"
    r"(?:never|always|do not|don't|must not)\b",
    re.IGNORECASE,
)


def guardrail_lines(memory: str) -> tuple[str, ...]:
    """The lines of a MEMORY.md that a curated version must keep verbatim (whitespace at the
    ends aside), in order, without repeats.

    A line is a guardrail when it begins — after a list marker, a checkbox or bold markers —
    with NEVER, ALWAYS, DO NOT, DON'T or MUST NOT (any case); or when it sits under a heading
    that contains "guardrail", "never" or "rule" (the heading itself included), up to the next
    heading of the same or a higher level.
    """
    kept: list[str] = []
    guarded_level = 0
    for raw in memory.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            if guarded_level and level <= guarded_level:
                guarded_level = 0
            if not guarded_level and _GUARD_HEADING.search(heading.group(2)):
                guarded_level = level
        if line and (guarded_level or _GUARD_LINE.match(line)) and line not in kept:
            kept.append(line)
    return tuple(kept)


def refusal(old: str, new: str, cap: int) -> str | None:
    """Why a curated MEMORY.md ``new`` may not replace ``old``, or None when it may.

    Refused: an empty version, one over ``cap`` characters, one that drops a guardrail line of
    ``old`` (:func:`guardrail_lines`).
    """
    if not new.strip():
        return "the new MEMORY.md is empty"
    if len(new) > cap:
        return f"the new MEMORY.md has {len(new):,} characters; at most {cap:,}"
    present = {line.strip() for line in new.splitlines()}
    missing = [g for g in guardrail_lines(old) if g not in present]
    if missing:
        listed = "; ".join(repr(m[:120]) for m in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return (
            f"the new MEMORY.md drops {len(missing)} guardrail line(s), which must be kept "
            f"verbatim: {listed}{more}"
        )
    return None


@dataclass(frozen=True)
class LogMark:
    """How far the daily logs have been curated: every log before ``file``, and ``file`` up to
    byte ``offset`` (the logs are append-only, so the offset stays true)."""

    file: str
    offset: int


@dataclass(frozen=True)
class Span:
    """Bytes ``[start, end)`` of one daily log not yet curated."""

    file: str
    start: int
    end: int

    @property
    def size(self) -> int:
        """Its length in bytes."""
        return self.end - self.start


def uncurated(logs: Sequence[tuple[str, int]], mark: LogMark | None) -> list[Span]:
    """What of the daily logs ``(file name, size in bytes)`` lies past ``mark``, oldest first.

    Only daily logs by name (``YYYY-MM-DD.md``) count. A log that shrank below the mark (it was
    replaced by hand) is read again from its start.
    """
    spans: list[Span] = []
    for name, size in sorted(logs):
        if not DAILY_LOG.match(name):
            continue
        if mark is None or name > mark.file:
            start = 0
        elif name == mark.file:
            start = mark.offset if mark.offset <= size else 0
        else:
            continue
        if size > start:
            spans.append(Span(name, start, size))
    return spans


def take(spans: Sequence[Span], budget: int) -> list[Span]:
    """The oldest spans up to ``budget`` bytes in all, the last one cut short if need be (the
    runtime cuts that one back to a line end); always some of the first when there is any."""
    taken: list[Span] = []
    left = max(budget, 1)
    for span in spans:
        if left <= 0:
            break
        end = min(span.end, span.start + left)
        taken.append(Span(span.file, span.start, end))
        left -= end - span.start
    return taken


class Reason(StrEnum):
    """Why a curation is due."""

    CADENCE = "cadence"
    """Its interval passed since the last curation."""
    SIZE = "size"
    """The daily logs since the last curation grew past the size that triggers one early."""


def curation_due(
    *,
    last: datetime,
    now: datetime,
    every: timedelta | None,
    new_bytes: int,
    after_bytes: int,
    retry_at: datetime | None = None,
    grace: timedelta = timedelta(0),
) -> Reason | None:
    """Whether to curate now, and why.

    Nothing new in the logs: never (no model call to rewrite what did not change). A curation
    refused or failed waits for ``retry_at``. Otherwise due when ``every`` (less ``grace``, half
    a beat) has passed since ``last`` — the last curation, or when the agent first counted —
    or when the new logs reach ``after_bytes``. ``every`` None switches curation off.
    """
    if every is None or new_bytes <= 0:
        return None
    if retry_at is not None and now < retry_at:
        return None
    if now - last >= every - grace:
        return Reason.CADENCE
    if new_bytes >= after_bytes:
        return Reason.SIZE
    return None
