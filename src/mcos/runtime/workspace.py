"""An agent's workspace: the markdown files that are its identity and memory, as prompts see them.

Files load in one fixed order. SOUL … MEMORY.md are the stable part of the system prompt: the
same bytes for every kind of turn, call after call, so one cache entry serves them all.
HEARTBEAT.md (heartbeat turns) and WORKSTATE.md, which change, come after the cache breakpoint.
Each file is capped, and the whole is capped; a cut keeps the head and the tail and leaves a
marker naming the file, and every cut is reported — never silent. Workspaces made for OpenClaw
load unchanged: YAML frontmatter is metadata, not prompt, and BOOTSTRAP.md (its first-run
script) is listed but not loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from mcos.domain.redaction import redact
from mcos.exceptions import ConfigError

ORDER = (
    "SOUL.md",
    "IDENTITY.md",
    "USER.md",
    "AGENTS.md",
    "TOOLS.md",
    "GUARDRAILS.md",
    "MEMORY.md",
    "HEARTBEAT.md",
    "WORKSTATE.md",
)
AFTER_BREAKPOINT = frozenset({"HEARTBEAT.md", "WORKSTATE.md"})
"""Files that change more often than the rest (or ride one kind of turn): they follow the cached
prefix instead of ending it, so writing them never costs the cache of everything before."""
OPTIONAL = frozenset({"IDENTITY.md", "TOOLS.md"})
PROTECTED = ("SOUL.md", "GUARDRAILS.md")
"""Cut last when the total is over its cap: who the agent is and what it must never do."""
NOT_LOADED = frozenset({"BOOTSTRAP.md"})
MAX_GUARDRAILS = 15
FLOOR = 1_000
"""A file cut for the total cap keeps at least this many characters."""

_FRONTMATTER = re.compile(r"\A---[ \t]*\n.*?\n---[ \t]*(\n|\Z)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+\S")


class TurnKind(StrEnum):
    """What a model turn is for; it decides which files the prompt carries."""

    MAIN = "main"
    """A turn of the main session: messages, directives, cron jobs run in the main session."""
    HEARTBEAT = "heartbeat"
    """A heartbeat's turn (main session) — the only kind that carries HEARTBEAT.md."""
    ISOLATED = "isolated"
    """A fresh context (an isolated cron job): none of the session's turns, but the same
    workspace prefix, MEMORY.md included — the agent's own memory, and one cache entry for all."""


@dataclass(frozen=True)
class Limits:
    """Caps on what the workspace may put into a prompt, in characters."""

    file_cap: int = 20_000
    total_cap: int = 60_000


@dataclass(frozen=True)
class Truncation:
    """One cut: which file, how long it was, how much the prompt kept, and why."""

    file: str
    original: int
    kept: int
    reason: str

    def describe(self) -> str:
        """One line for `mcos status` and logs."""
        return f"{self.file}: kept {self.kept:,} of {self.original:,} characters ({self.reason})"


@dataclass(frozen=True)
class Section:
    """One workspace file as the prompt carries it."""

    file: str
    text: str


@dataclass
class Prompt:
    """The workspace as one turn's prompt carries it, and what was cut or missing."""

    sections: list[Section]
    truncations: list[Truncation] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Every file: each under its own heading, in the fixed order."""
        return render(self.sections)

    @property
    def stable(self) -> str:
        """SOUL … MEMORY.md: the cached prefix, the same bytes for every kind of turn."""
        return render([s for s in self.sections if s.file not in AFTER_BREAKPOINT])

    @property
    def tail(self) -> str:
        """HEARTBEAT.md (heartbeat turns) and WORKSTATE.md: after the cache breakpoint."""
        return render([s for s in self.sections if s.file in AFTER_BREAKPOINT])


def render(sections: list[Section]) -> str:
    """Sections as the prompt shows them: each file under its own heading."""
    return "\n\n".join(f"# {s.file}\n\n{s.text.strip()}" for s in sections)


def strip_frontmatter(text: str) -> str:
    """The file without a leading YAML frontmatter block (``---`` … ``---``)."""
    return _FRONTMATTER.sub("", text, count=1)


def is_effectively_empty(text: str) -> bool:
    """Whether a file says nothing: only frontmatter, headings, HTML comments and blank lines.

    OpenClaw's stock HEARTBEAT.md is such a file ("keep this file empty … to skip heartbeat
    API calls"); so is a template whose placeholders were never filled.
    """
    body = _HTML_COMMENT.sub("", strip_frontmatter(text))
    return all(not line.strip() or line.lstrip().startswith("#") for line in body.splitlines())


def guardrail_entries(text: str) -> int:
    """The number of top-level list items (``-``, ``*``, ``1.``) in GUARDRAILS.md."""
    body = _HTML_COMMENT.sub("", strip_frontmatter(text))
    return sum(1 for line in body.splitlines() if _LIST_ITEM.match(line))


def cut(file: str, text: str, keep: int, reason: str) -> tuple[str, Truncation | None]:
    """``text`` cut to ``keep`` characters, marker included: its head and tail around the marker."""
    if len(text) <= keep:
        return text, None

    def marker(removed: int) -> str:
        return (
            f"\n\n[… mcos cut {removed:,} characters from the middle of {file} ({reason}); "
            "the file itself is unchanged …]\n\n"
        )

    room = max(keep - len(marker(len(text))), 0)
    head = room * 3 // 4
    tail = room - head
    kept = text[:head] + marker(len(text) - room) + (text[-tail:] if tail else "")
    return kept, Truncation(file, len(text), room, reason)


def assemble(files: dict[str, str], kind: TurnKind, limits: Limits = Limits()) -> Prompt:
    """The workspace part of the prompt from file contents (pure: no I/O), for a turn of ``kind``.

    The caps are applied to every file of the order whatever the kind (HEARTBEAT.md counted on
    every turn), so the stable prefix is cut the same way — the same bytes — for every kind;
    ``truncations`` lists every cut the workspace's prompts make.
    """
    wanted = [n for n in ORDER if not (n == "HEARTBEAT.md" and kind is not TurnKind.HEARTBEAT)]
    prompt = Prompt(sections=[])
    prompt.missing = [n for n in wanted if n not in files and n not in OPTIONAL]
    prompt.ignored = sorted(n for n in files if n in NOT_LOADED)
    texts: dict[str, str] = {}
    for name in ORDER:
        if name not in files:
            continue
        body, trunc = cut(name, strip_frontmatter(files[name]), limits.file_cap, "per-file cap")
        texts[name] = body
        if trunc:
            prompt.truncations.append(trunc)
    over = sum(len(t) for t in texts.values()) - limits.total_cap
    if over > 0:
        # Cut from the end of the order (working state before identity), protected files last.
        victims = [n for n in reversed(ORDER) if n in texts and n not in PROTECTED]
        victims += [n for n in PROTECTED if n in texts]
        for name in victims:
            if over <= 0:
                break
            room = len(texts[name]) - FLOOR
            if room <= 0:
                continue
            keep = len(texts[name]) - min(room, over)
            original = len(texts[name])
            texts[name], trunc = cut(name, texts[name], keep, "total cap")
            over -= original - len(texts[name])
            if trunc:
                prompt.truncations.append(trunc)
    prompt.sections = [Section(n, texts[n]) for n in wanted if n in texts]
    return prompt


def check_guardrails(path: Path) -> None:
    """Refuse a GUARDRAILS.md with more entries than an agent can keep in mind."""
    if not path.exists():
        return
    count = guardrail_entries(path.read_text(encoding="utf-8", errors="replace"))
    if count > MAX_GUARDRAILS:
        raise ConfigError(
            file=str(path),
            key="",
            problem=(
                f"{count} entries; at most {MAX_GUARDRAILS} (keep the mistakes never to repeat, "
                "move the rest to AGENTS.md)"
            ),
        )


class Workspace:
    """An agent's workspace folder."""

    def __init__(self, root: Path, limits: Limits = Limits()) -> None:
        self.root = root
        self.limits = limits

    def read(self) -> dict[str, str]:
        """Every top-level markdown file the prompt might carry, by name."""
        if not self.root.is_dir():
            raise ConfigError(
                file=str(self.root), key="", problem="the workspace folder does not exist"
            )
        return {
            p.name: p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(self.root.glob("*.md"))
            if p.is_file()
        }

    def prompt(self, kind: TurnKind) -> Prompt:
        """The workspace part of the prompt of a turn of ``kind`` (read now, from disk)."""
        check_guardrails(self.root / "GUARDRAILS.md")
        return assemble(self.read(), kind, self.limits)

    def heartbeat_disabled(self) -> bool:
        """Whether HEARTBEAT.md is missing or says nothing (no model turns on heartbeats)."""
        path = self.root / "HEARTBEAT.md"
        return not path.exists() or is_effectively_empty(path.read_text(encoding="utf-8"))

    def daily_log(self, day: datetime) -> Path:
        """The daily log file of ``day`` (a local date of the agent's time zone)."""
        return self.root / "memory" / f"{day:%Y-%m-%d}.md"

    def append_log(self, now: datetime, text: str) -> Path:
        """Append one timestamped entry to today's log (``now`` from Mission Control's clock).

        Append-only: opened with O_APPEND and written in one call, so concurrent writers and
        crashes never rewrite what is there. Nothing secret-shaped or known secret is written.
        """
        path = self.daily_log(now)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = f"- {now:%H:%M:%S} {redact(text).strip()}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, entry)
        finally:
            os.close(fd)
        return path

    def write_atomic(self, name: str, text: str) -> None:
        """Replace a workspace file (``name`` may be a relative path) so a crash leaves either
        the old or the new one, whole. Nothing secret-shaped or known secret is written."""
        text = redact(text)
        path = self.root / name
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
