"""Helper processes an agent owns: started with it, in its process group, restarted when they
exit, and gone with it.

They stay in the agent's process group on purpose: when the agent dies, its supervisor kills
the group, so a sidecar (a channel poller) can never outlive the agent and poll beside the
next instance — the field report's duplicate Telegram pollers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from mcos.config.models import SidecarConfig
from mcos.logs import get_logger

log = get_logger("mcos.runtime")


@dataclass
class Sidecars:
    """The sidecars of one agent."""

    agent: str
    configs: list[SidecarConfig]
    cwd: Path
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def start(self) -> None:
        """Start each sidecar under a keeper task that restarts it with backoff."""
        for config in self.configs:
            self.tasks.append(
                asyncio.create_task(self._keep(config), name=f"sidecar-{config.name}")
            )

    async def _keep(self, config: SidecarConfig) -> None:
        delay = 1.0
        while True:
            process = await asyncio.create_subprocess_exec(
                *config.command,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "MCOS_AGENT": self.agent, "MCOS_SIDECAR": config.name},
            )
            self.processes[config.name] = process
            log.info("sidecar %s started (pid %d)", config.name, process.pid, agent=self.agent)
            code = await process.wait()
            log.warning("sidecar %s exited with %s", config.name, code, agent=self.agent)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the keepers, then the processes (SIGTERM, grace, SIGKILL)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    async with asyncio.timeout(grace):
                        await process.wait()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
