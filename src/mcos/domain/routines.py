"""Routine work from HEARTBEAT.md: which items need the model's judgement, and when.

A deterministic check finds what it can (messages, failing checks) on every beat; an item such
as "review the mail and the calendar" needs the model, but not every beat. HEARTBEAT.md declares
such items the way OpenClaw does, in a ``tasks:`` block, each with its own ``interval``::

    tasks:

    - name: inbox-triage
      interval: 30m
      prompt: "Check for urgent unread emails and flag anything time sensitive."

A file without a ``tasks:`` block is one item, the ``checklist``; with one, the rest of the file
is context for the tasks. The fleet file may set or override any item's cadence, and gives the
default for items without one. Plain functions over plain data, time passed in: the runtime
keeps when each item last ran (or was first seen) and asks :func:`due_tasks` on every beat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

CHECKLIST = "checklist"
"""The name of the one item a HEARTBEAT.md without a ``tasks:`` block stands for."""
CHECKLIST_PROMPT = "Work through the checklist in HEARTBEAT.md."
DEFAULT_INTERVAL = timedelta(days=1)
"""The cadence of an item that names none (the fleet file's ``task_interval`` changes it)."""
OFF = "off"
"""An interval that switches an item off: it stays in HEARTBEAT.md as context, never due."""

_TASKS = "tasks:"
_NAME = "- name:"
_FRONTMATTER = re.compile(r"\A---[ \t]*\n.*?\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^#+(?:\s|$)")
_EMPTY_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s*(?:\[[\sxX]?\]\s*)?$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", re.IGNORECASE)
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_WORDS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}


def parse_interval(text: str) -> timedelta | None:
    """An item's cadence: ``30m``, ``2h``, ``1d``, ``1h30m``, ``45`` (minutes, as OpenClaw
    reads a bare number), ``hourly``/``daily``/``weekly``; ``off`` gives None (never due).

    Raises ValueError saying what is wrong.
    """
    value = text.strip().strip("\"'").strip().lower()
    if value == OFF:
        return None
    if value in _WORDS:
        return _WORDS[value]
    compact = value.replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        result = timedelta(minutes=float(compact))
    elif compact and _PART.sub("", compact) == "":
        result = sum(
            (float(n) * _UNITS[u.lower()] for n, u in _PART.findall(compact)), timedelta(0)
        )
    else:
        msg = f"{text.strip()!r} is not an interval (use e.g. 30m, 2h, 1d, daily or off)"
        raise ValueError(msg)
    if result <= timedelta(0):
        msg = f"{text.strip()!r} must be longer than zero (use off to switch an item off)"
        raise ValueError(msg)
    return result


@dataclass(frozen=True)
class Task:
    """One item of routine work: what the model is asked, and how often."""

    name: str
    prompt: str
    interval: timedelta | None
    """None: switched off (``off``), never due."""
    line: int = 0
    """Where HEARTBEAT.md declares it (1-based; 0: not from a line of the file)."""


@dataclass(frozen=True)
class Routines:
    """What HEARTBEAT.md asks for at a cadence, and what in it could not be read."""

    tasks: tuple[Task, ...] = ()
    problems: tuple[str, ...] = ()
    """``HEARTBEAT.md line 7: …`` — one line each, for the daily log."""


def _blanked(text: str) -> list[str]:
    """The file's lines with frontmatter and HTML comments blanked (line numbers kept)."""

    def blank(match: re.Match[str]) -> str:
        return "\n" * match.group(0).count("\n")

    return _COMMENT.sub(blank, _FRONTMATTER.sub(blank, text, count=1)).splitlines()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _says_something(line: str) -> bool:
    """Whether a line outside the tasks block is content: not blank, a heading or an empty stub."""
    stripped = line.strip()
    return bool(stripped) and not _HEADING.match(stripped) and not _EMPTY_ITEM.match(stripped)


def _in_block(line: str) -> bool:
    """Whether a line continues a ``tasks:`` block: blank, indented, or a list item."""
    return not line.strip() or line[:1] in " \t" or line.strip().startswith("-")


def _read_task(
    lines: list[str], start: int
) -> tuple[str, dict[str, tuple[str, int]], list[str], int]:
    """The task whose ``- name:`` line is ``lines[start]``: its name, its fields (value, line)
    and the lines read (up to the next task or the end of the block)."""
    name = _unquote(lines[start].strip()[len(_NAME) :])
    fields: dict[str, tuple[str, int]] = {}
    unknown: list[str] = []
    end = start + 1
    while end < len(lines):
        raw = lines[end]
        stripped = raw.strip()
        if stripped.startswith(_NAME) or (stripped and raw[:1] not in " \t"):
            break
        key, colon, value = stripped.partition(":")
        if colon and key in ("interval", "prompt"):
            fields[key] = (_unquote(value), end + 1)
        elif stripped:
            unknown.append(key if colon else stripped[:40])
        end += 1
    return name, fields, unknown, end


def _task(
    lines: list[str], start: int, default: timedelta | None, taken: set[str]
) -> tuple[Task | None, list[str], int]:
    """The task whose ``- name:`` line is ``lines[start]`` (None if it cannot run), what is
    wrong with it, and where the next one starts."""
    name, fields, unknown, end = _read_task(lines, start)
    where = f"HEARTBEAT.md line {start + 1}"
    problems = [f"{where}: task {name!r}: unknown field(s) {unknown} ignored"] if unknown else []
    prompt = fields.get("prompt", ("", 0))[0]
    if not name:
        return None, [*problems, f"{where}: a task without a name; ignored"], end
    if name in taken:
        return None, [*problems, f"{where}: a second task named {name!r}; ignored"], end
    if not prompt:
        return None, [*problems, f"{where}: task {name!r} has no prompt; ignored"], end
    interval = default
    if "interval" in fields:
        value, at = fields["interval"]
        try:
            interval = parse_interval(value)
        except ValueError as e:
            problems.append(
                f"HEARTBEAT.md line {at}: task {name!r}: {e}; it runs at the default "
                f"({show_interval(default)})"
            )
    return Task(name, prompt, interval, start + 1), problems, end


def parse_routines(
    text: str,
    *,
    default: timedelta | None = DEFAULT_INTERVAL,
    overrides: Mapping[str, timedelta | None] | None = None,
) -> Routines:
    """The items of a HEARTBEAT.md, each with its cadence: the fleet file's override for its
    name first, then its own ``interval``, then ``default``.

    Read as OpenClaw reads it (a file written for OpenClaw works unchanged): a line ``tasks:``
    opens a block that runs until a line that is neither blank, indented nor a list item; each
    task starts ``- name:`` with ``interval:`` and ``prompt:`` on the lines under it. mcos also
    takes a task without an interval (the default applies). Outside any block, anything that
    is not blank, a heading, a comment or an empty list stub makes the file a checklist — one
    item, :data:`CHECKLIST` — when it has no ``tasks:`` block; with one, it is context.
    """
    overrides = dict(overrides or {})
    lines = _blanked(text)
    tasks: list[Task] = []
    problems: list[str] = []
    seen_block, checklist_line = False, 0
    i = 0
    while i < len(lines):
        if lines[i].strip() != _TASKS:
            if not checklist_line and _says_something(lines[i]):
                checklist_line = i + 1
            i += 1
            continue
        seen_block = True
        i += 1
        while i < len(lines) and _in_block(lines[i]):
            stripped = lines[i].strip()
            if stripped.startswith(_NAME):
                task, wrong, i = _task(lines, i, default, {t.name for t in tasks})
                tasks += [task] if task else []
                problems += wrong
                continue
            if stripped:
                problems.append(
                    f"HEARTBEAT.md line {i + 1}: {stripped[:60]!r} is inside the tasks: "
                    "block but is not a task (a task starts with '- name:'); ignored"
                )
            i += 1
    if not seen_block and checklist_line:
        tasks.append(Task(CHECKLIST, CHECKLIST_PROMPT, default, checklist_line))
    names = {t.name for t in tasks}
    tasks = [replace(t, interval=overrides[t.name]) if t.name in overrides else t for t in tasks]
    problems += [
        f"the fleet file sets a cadence for {name!r}, which HEARTBEAT.md does not have"
        for name in sorted(set(overrides) - names)
    ]
    return Routines(tuple(tasks), tuple(problems))


def _show(interval: timedelta) -> str:
    """``30m``, ``2h``, ``1d``, ``1h30m`` — an interval as the files write it."""
    seconds = int(interval.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def show_interval(interval: timedelta | None) -> str:
    """An item's cadence for logs and prompts (``off`` when switched off)."""
    return OFF if interval is None else _show(interval)


def due_tasks(
    routines: Routines,
    since: Mapping[str, datetime],
    now: datetime,
    *,
    grace: timedelta = timedelta(0),
) -> tuple[Task, ...]:
    """The items due at ``now``: at least their interval (less ``grace``) since they last ran.

    ``since`` holds, per item, when it last ran or — never run — when it was first seen: a new
    item first runs one interval after it appears (a fleet that starts does not run every
    routine at once), and one whose turn failed stays due. ``grace`` (half a beat) lets an item
    run at the beat nearest its time rather than the one after it. An item switched off, or
    not yet seen, is never due.
    """
    return tuple(
        t
        for t in routines.tasks
        if t.interval is not None and t.name in since and now - since[t.name] >= t.interval - grace
    )


def seen(routines: Routines, since: Mapping[str, datetime], now: datetime) -> dict[str, datetime]:
    """``since`` for the items HEARTBEAT.md has now: new ones counted from ``now``, removed ones
    forgotten (an item added back later starts again from then)."""
    return {t.name: since.get(t.name, now) for t in routines.tasks}


def ran(
    since: Mapping[str, datetime], tasks: tuple[Task, ...], now: datetime
) -> dict[str, datetime]:
    """``since`` after ``tasks`` ran at ``now`` (their turn completed)."""
    return {**since, **{t.name: now for t in tasks}}
