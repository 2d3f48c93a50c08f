"""The strategies of the fleet-day benchmark: the runtime, and the runtime with its beat overridden.

Each baseline is ``AgentRuntime`` with one decision changed — when, and how many, model calls a
heartbeat makes — and nothing else: the loop (``step``), message handling (urgent at once,
normal within the batch window), checks, cron jobs, routines, prompts, caching and metering are
the runtime's own. A baseline's cache setting is forced (5-minute or 1-hour breakpoints) so each
runs at both; mcos picks its own.
"""

from __future__ import annotations

import re

from mcos.domain.heartbeat import CacheTTL, Finding, Outcome
from mcos.runtime.agent import AgentRuntime
from mcos.runtime.turns import TurnStopped
from mcos.runtime.workspace import TurnKind, strip_frontmatter

_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+(.+)$", re.MULTILINE)
BEAT = "scheduled heartbeat: work through every item of HEARTBEAT.md"


class Mcos(AgentRuntime):
    """(c) and (c+): the runtime as it ships (the fleet file gives (c+) its triage_model)."""

    forced_ttl: CacheTTL | None = None
    """A cache setting forced on every call, or None for the runtime's own rule."""

    def _cache_ttl(self) -> CacheTTL:
        return super()._cache_ttl() if self.forced_ttl is None else self.forced_ttl

    def checklist(self) -> list[str]:
        """HEARTBEAT.md's checklist items (none when the file is missing or says nothing)."""
        if self.workspace.heartbeat_disabled():
            return []
        text = (self.workspace.root / "HEARTBEAT.md").read_text(encoding="utf-8")
        return _ITEM.findall(strip_frontmatter(text))

    async def beat_call(self, text: str) -> None:
        """One model call for the beat, in the main session (with any pending messages)."""
        await self.handle_messages(extra=[Finding("heartbeat", text)])


class EveryBeat(Mcos):
    """(b): the runtime's beat, then a model call if it made none — one call on every active
    beat with the whole checklist (as OpenClaw does, an effectively empty HEARTBEAT.md is
    skipped)."""

    async def heartbeat(self) -> Outcome:
        outcome = await super().heartbeat()
        if outcome is Outcome.OK and self.checklist():
            await self.beat_call(BEAT)
            return Outcome.TURN
        return outcome


class PerItem(Mcos):
    """(a): a model call per checklist item on every active beat; the first in the main session
    (with the beat's findings, if the runtime made that call), the others each in a fresh one."""

    async def heartbeat(self) -> Outcome:
        outcome = await super().heartbeat()
        items = self.checklist()
        if outcome not in (Outcome.OK, Outcome.TURN) or not items:
            return outcome
        if outcome is Outcome.OK:
            await self.beat_call(f"scheduled check 1/{len(items)}: {items[0]}")
        for i, item in enumerate(items[1:], start=2):
            text = f"- [heartbeat] scheduled check {i}/{len(items)}: {item}"
            try:
                await self.turn(TurnKind.ISOLATED, text, main=False)
            except TurnStopped:  # over budget or cooling down: the rest waits for the next beat
                break
        return Outcome.TURN


class IsolatedBeat(EveryBeat):
    """(d): OpenClaw's ``heartbeat.isolatedSession``: (b), with every heartbeat turn in a fresh
    session (HEARTBEAT.md and the beat's findings, none of the main session's history)."""

    async def turn(self, kind: TurnKind, text: str, *, main: bool = True) -> str:
        return await super().turn(kind, text, main=main and kind is not TurnKind.HEARTBEAT)
