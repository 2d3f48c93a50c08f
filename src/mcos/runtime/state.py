"""What one agent's runtime holds, declared in one place for the parts that share it.

``AgentRuntime`` (agent.py) is assembled from the turn loop (turns.py) and the schedule
(schedule.py); each part reads and writes the same state. ``AgentState`` declares that state —
``AgentRuntime.__init__`` fills it — and, for the type checker only, the few methods one part
calls on another, so every part type-checks on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from random import Random
from typing import TYPE_CHECKING, Any

import httpx

from mcos.api_models import DeliveryOut, MessageOut
from mcos.client import AsyncClient
from mcos.config.models import AgentConfig, CheckConfig, CronJob, Fleet
from mcos.domain.agent_state import AgentStatus
from mcos.domain.heartbeat import ActiveHours, CronSlot, Finding
from mcos.domain.messages import Priority
from mcos.models.base import ModelProvider, ModelReply, ModelRequest, Turn
from mcos.runtime.channels import AgentChannels
from mcos.runtime.checks import CheckResult
from mcos.runtime.clock import Clock
from mcos.runtime.memory import MemoryIndex
from mcos.runtime.recovery import Recoverer
from mcos.runtime.settings import RuntimeSettings
from mcos.runtime.telemetry import Telemetry
from mcos.runtime.tools import Toolbox, ToolContext
from mcos.runtime.tracing import TurnTrace, Woke
from mcos.runtime.workspace import Prompt, TurnKind, Workspace

if TYPE_CHECKING:
    from mcos.runtime.batched import ParkedTurn
    from mcos.runtime.curation import Curator
    from mcos.runtime.sync import WorkspaceSync
    from mcos.runtime.turns import Stats

CheckRunner = Callable[[CheckConfig], Awaitable[CheckResult]]
"""Runs one health check (swapped for a scripted one in simulations)."""


class AgentState:
    """The agent's state: who it is, what it holds, and what it counts."""

    # --- who the agent is and what it works with
    name: str
    fleet: Fleet
    config: AgentConfig
    client: AsyncClient
    provider: ModelProvider
    clock: Clock
    settings: RuntimeSettings
    rng: Random
    workspace: Workspace
    memory: MemoryIndex
    http: httpx.AsyncClient
    check_runner: CheckRunner
    ctx: ToolContext
    telemetry: Telemetry
    """Spans of turns, model calls and tool calls (off unless ``[telemetry]`` is set)."""
    waking: list[MessageOut]
    """The messages the next turn handles (its span's parent and links); the turn clears it."""
    recoverer: Recoverer
    channel_host: AgentChannels
    tools: Toolbox

    # --- heartbeat and cron
    interval: timedelta
    jitter: timedelta
    active: ActiveHours | None
    next_beat_at: datetime
    last_beat: dict[str, str]
    promised: list[CronJob]
    """Recurring reports promised under acknowledged directives (kept in the workspace)."""
    cron_slots: dict[str, CronSlot]
    """Each cron job's next fire and any miss owed (kept in the workspace, see
    ``_cron_path``), so fires missed while the process was not running are made up for."""
    check_reported: dict[str, datetime]
    """Failing checks already put before the model, and when."""
    routine_since: dict[str, datetime]
    """Each routine item of HEARTBEAT.md: when it last ran, or was first seen (kept in the
    workspace, ``.mcos/routines.json``)."""
    routine_problems: set[str]
    """What in HEARTBEAT.md could not be read, already said in the daily log."""
    curator: Curator
    """The curation of the daily logs into MEMORY.md (its state kept in the workspace)."""

    # --- the inbox
    pending: dict[int, DeliveryOut]
    first_pending_at: datetime | None

    # --- turns, the model and its budget
    history: list[Turn]
    cooling_until: datetime | None
    resume_at: datetime | None
    """When the loop wakes after the cooldown: its end plus a small jitter."""
    unavailable: int
    """Consecutive model calls that failed as unavailable (5xx/529 after retries)."""
    blocked_day: str | None
    """The UTC day on which a cap (ours or the provider's) stopped model calls."""
    warned_days: set[str]
    reported_days: set[str]
    no_progress: deque[datetime]
    paused: bool
    context_tokens: int
    turn_gap: timedelta
    """Typical time between model turns (EMA); until measured, assume turns are rare."""
    calls_per_turn: float
    """Model calls per turn (EMA): one when a round of actions ends the turn."""
    last_turn_at: datetime | None
    stats: Stats
    busy: bool
    parked: list[ParkedTurn]
    """Cron runs waiting for a batch's answer (kept in the workspace, see ``batched.py``)."""

    # --- the turn's trace
    woke: Woke | None
    """What wakes the next turn, set by whoever starts it (messages, a cron job)."""
    trace: TurnTrace | None
    """The trace of the turn under way."""

    # --- reporting and the clock
    _state: tuple[AgentStatus, str] | None
    clock_reported: bool
    clock_checked_at: datetime | None
    extra_info: dict[str, Any]
    """What the process adds to every state report (pid, fence, restarts)."""
    sync: WorkspaceSync | None = None
    """The workspace's sync with Mission Control, pushed after each turn (set by the process:
    ``runtime/process.py``; None: not synced)."""

    if TYPE_CHECKING:
        # Defined by one part, called by another (each defined once, in the module named).

        async def report(  # agent.py
            self, state: AgentStatus, detail: str = "", until: datetime | None = None
        ) -> None: ...

        def _log(self, text: str) -> None: ...  # agent.py

        async def _tell_manager(  # agent.py
            self, subject: str, body: str, priority: Priority
        ) -> None: ...

        async def handle_messages(  # agent.py
            self, extra: list[Finding] | None = None
        ) -> bool: ...

        async def turn(self, kind: TurnKind, text: str, *, main: bool = True) -> str: ...  # turns

        def cooling(self) -> bool: ...  # schedule.py

        async def _call_model(  # turns.py
            self, request: ModelRequest, purpose: str
        ) -> ModelReply: ...

        def _request(self, prompt: Prompt, turns: list[Turn]) -> ModelRequest: ...  # turns.py
        def batch_deadline(  # batched.py
            self, job: CronJob, fired: datetime
        ) -> datetime | None: ...

        async def park(  # batched.py
            self, job: CronJob, text: str, fired: datetime, deadline: datetime
        ) -> None: ...

        def parked_wake(self) -> datetime | None: ...  # batched.py
