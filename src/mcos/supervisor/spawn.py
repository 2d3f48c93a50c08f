"""Agents started as fresh interpreters: the supervisor's starter where the fork server cannot
run (macOS: no ``SOCK_SEQPACKET`` Unix sockets, and forking after Apple's frameworks are loaded
is unsafe), with the fork server's interface: ``start``, ``spawn`` → pid, exits reported to
``on_exit``, ``stop``.

Each agent is ``python -m mcos.runtime.main NAME`` in its own session, its output in its log
file, its token, fence and liveness socket passed as that entry point expects, and its
supervisor's pid given for it to watch (:mod:`mcos.supervisor.portable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from mcos.runtime.main import FENCE_ENV, LIVENESS_ENV, LIVENESS_EVERY_ENV, TOKEN_ENV
from mcos.supervisor.portable import child_env


class SpawnStarter:
    """Start agents as new processes; hear of their exits."""

    def __init__(self, on_exit: Callable[[int, int], None]) -> None:
        self.on_exit = on_exit
        self._running: dict[int, asyncio.subprocess.Process] = {}
        self._waits: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to start ahead (the fork server's counterpart warms up here)."""

    async def spawn(self, request: dict[str, Any], fds: list[int]) -> int:
        """Start the agent ``request`` names, output to ``fds[0]``, liveness to ``fds[1]``;
        its pid."""
        log, liveness = fds
        env = {
            **os.environ,
            **request["env"],
            **child_env(),
            TOKEN_ENV: request["token"],
            LIVENESS_ENV: str(liveness),
            LIVENESS_EVERY_ENV: str(request.get("liveness_every", 2.0)),
        }
        if request.get("fence") is not None:
            env[FENCE_ENV] = str(request["fence"])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "mcos.runtime.main", request["name"],
            "--fleet", request["fleet"],
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            pass_fds=(liveness,), start_new_session=True, env=env,
        )  # fmt: skip
        self._running[process.pid] = process
        task = asyncio.create_task(self._wait(process), name=f"wait-{request['name']}")
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)
        return process.pid

    async def _wait(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self._running.pop(process.pid, None)
        self.on_exit(process.pid, code)

    async def stop(self) -> None:
        """Kill the process group of any agent still running (the supervisor has already
        stopped them gracefully) and reap it."""
        for pid in list(self._running):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self._waits:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*self._waits, return_exceptions=True)
