"""Allowlisted recovery: the only commands mcos runs to bring a service back, audited, and
stopped when the service flaps.

A recovery is named in the fleet file with its exact command; a check or the model can only
name it. Every run is recorded in the audit log with its exit code and the tail of its
output. A service recovered more than ``max_per_window`` times in its window is flapping:
auto-recovery stops and a P2 report goes to the security gate instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from mcos.api_models import RuntimeEvent
from mcos.client import AsyncClient, Calls
from mcos.config.models import RecoveryConfig, parse_duration
from mcos.domain.redaction import redact
from mcos.exceptions import McosError
from mcos.runtime.clock import Clock

OUTPUT_TAIL = 2_000


@dataclass(frozen=True)
class RecoveryRun:
    """What one recovery attempt did."""

    name: str
    ran: bool
    ok: bool
    detail: str


@dataclass
class Recoverer:
    """One agent's recoveries and their history."""

    agent: str
    recoveries: dict[str, RecoveryConfig]
    client: AsyncClient
    clock: Clock
    history: dict[str, deque[datetime]] = field(default_factory=dict)
    flapping: set[str] = field(default_factory=set)

    async def run(self, name: str, reason: str, *, check: str = "") -> RecoveryRun:
        """Run the allowlisted recovery ``name`` (never anything else)."""
        config = self.recoveries.get(name)
        if config is None:
            await self._audit(
                "runtime.recovery.refused",
                name,
                check,
                "refused",
                rule="not in the fleet file's [recovery] allowlist",
                reason=reason,
            )
            known = ", ".join(sorted(self.recoveries)) or "none"
            return RecoveryRun(name, False, False, f"refused: {name!r} is not an allowlisted "
                               f"recovery (allowlisted: {known})")  # fmt: skip
        if name in self.flapping:
            return RecoveryRun(name, False, False, f"{name} is stopped: the service is flapping")
        now = self.clock.now()
        window = parse_duration(config.window)
        runs = self.history.setdefault(name, deque())
        while runs and now - runs[0] > window:
            runs.popleft()
        if len(runs) >= config.max_per_window:
            await self._flapping(name, config, check)
            return RecoveryRun(name, False, False, f"{name} is stopped: the service is flapping")
        runs.append(now)
        code, output = await self._execute(config)
        ok = code == 0
        await self._audit("runtime.recovery.run", name, check, "ok" if ok else "failed",
                          exit=code, output_tail=output, reason=reason)  # fmt: skip
        return RecoveryRun(name, True, ok, f"exit {code}: {output[-300:]}".strip())

    async def _execute(self, config: RecoveryConfig) -> tuple[int, str]:
        timeout = parse_duration(config.timeout).total_seconds()
        try:
            proc = await asyncio.create_subprocess_exec(
                *config.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as e:
            return 127, f"cannot run {config.command[0]}: {e.strerror or e}"
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return -9, f"killed after {timeout:g}s"
        text = redact(out.decode(errors="replace"))
        return proc.returncode or 0, text[-OUTPUT_TAIL:]

    async def _flapping(self, name: str, config: RecoveryConfig, check: str) -> None:
        self.flapping.add(name)
        await self._audit(
            "runtime.recovery.flapping",
            name,
            check,
            "refused",
            rule=f"more than {config.max_per_window} recoveries in {config.window}",
        )
        with contextlib.suppress(McosError):
            await self.client.do(
                Calls.report_incident(
                    "P2",
                    f"{check or name} is flapping: auto-recovery stopped",
                    f"{self.agent} ran recovery {name!r} {config.max_per_window} times within "
                    f"{config.window}; it keeps failing. A human or the security agent decides "
                    "what next.",
                )
            )  # fmt: skip

    async def _audit(
        self, action: str, name: str, check: str, outcome: str, **detail: object
    ) -> None:
        with contextlib.suppress(McosError):
            await self.client.do(
                Calls.record_event(
                    RuntimeEvent(action=action, targets={"recovery": name, "check": check},
                                 detail=dict(detail), outcome=outcome)
                )
            )  # fmt: skip
