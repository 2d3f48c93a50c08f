"""The fork server: imports the agent runtime once, then forks every agent from that warm state.

Starting a hundred agents as fresh interpreters costs a hundred imports (a third of a CPU
second each); forking them from one process that already imported the runtime costs
milliseconds each, and the imported code is shared between them until written.

The supervisor talks to it over a ``SOCK_SEQPACKET`` socket pair: a request (JSON) carries the
agent's log file and liveness socket as file descriptors (``SCM_RIGHTS``); the answer is the
child's pid, and later its exit code. The fork server stays single-threaded and runs no event
loop, so a fork copies nothing half-done. It dies with the supervisor (``PR_SET_PDEATHSIG``),
and each agent dies with it in turn. Linux only: elsewhere the supervisor starts each agent as a
fresh interpreter (:class:`SpawnStarter`, same interface; see :mod:`mcos.supervisor.portable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# What every agent imports on its first request (httpx loads its transport lazily, anyio its
# asyncio backend and its events): imported here instead, once, rather than after the fork in
# each agent (a third of a second each before; the backend alone was ~10 ms of CPU an agent).
import anyio._backends._asyncio
import anyio._core._synchronization
import anyio.lowlevel  # noqa: F401
import httpcore  # noqa: F401

import mcos.runtime.process  # noqa: F401 (imported once here, shared by every fork)
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.exceptions import McosError
from mcos.logs import configure as configure_logging
from mcos.runtime.main import title
from mcos.supervisor.portable import die_with_parent
from mcos.tls import verified_context

SOCKET_ENV = "MCOS_ZYGOTE_FD"
MAX_MESSAGE = 1 << 20


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _child(request: dict[str, Any], fds: list[int], fleet: Fleet, sock: socket.socket) -> int:
    """In the forked child: become the agent (never returns to the server loop)."""
    import asyncio  # noqa: PLC0415

    from mcos.runtime.process import run_agent  # noqa: PLC0415

    sock.close()
    os.setsid()
    die_with_parent()
    log_fd, liveness_fd = fds
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(devnull)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.update(request["env"])
    name = request["name"]
    title(name, fleet.path, request.get("fence"))
    configure_logging(agent=name)
    return asyncio.run(
        run_agent(
            fleet,
            name,
            request["token"],
            fence=request.get("fence"),
            liveness_fd=liveness_fd,
            liveness_every=request.get("liveness_every", 2.0),
            own_process=True,
        )
    )


def serve(sock: socket.socket) -> None:
    """Answer spawn requests until the supervisor hangs up; reap and report exits."""
    verified_context()  # built once here, inherited by every agent (~30 ms of CPU each)
    fleets: dict[str, tuple[float, Fleet]] = {}
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([sock], [], [], 0.1)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            _send(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
        if not readable:
            continue
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
        if not data:  # the supervisor is gone: take the agents with us
            for pid in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            return
        request = json.loads(data)
        path = request["fleet"]
        mtime = Path(path).stat().st_mtime
        if path not in fleets or fleets[path][0] != mtime:
            fleets[path] = (mtime, load_fleet(path))
        # Everything alive now moves to the collector's permanent generation: a child's
        # collections then never walk (and so never write to, and copy) the pages it shares.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                code = _child(request, fds, fleets[path][1], sock)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        _send(sock, {"started": request["id"], "pid": pid})


def main() -> None:
    """Entry point: the socket's descriptor comes in the environment."""
    sock = socket.socket(fileno=int(os.environ[SOCKET_ENV]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    try:
        serve(sock)
    finally:
        sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()


class ForkServer:
    """The supervisor's end: start the fork server, ask it for agents, hear of their exits."""

    def __init__(self, on_exit: Callable[[int, int], None]) -> None:
        self.on_exit = on_exit
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._next = 0

    async def start(self) -> None:
        """Start it and wait until it listens."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "mcos.supervisor.zygote",
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, SOCKET_ENV: str(child.fileno())},
            pass_fds=(child.fileno(),), preexec_fn=die_with_parent,
        )  # fmt: skip
        child.close()
        parent.setblocking(False)
        self.sock = parent
        asyncio.get_running_loop().add_reader(parent, self._readable)

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock)
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(McosError("the fork server exited"))
            return
        message = json.loads(data)
        if "started" in message:
            key: int = message["started"]
            future = self._waiting.pop(key) if key in self._waiting else None
            if future is not None and not future.done():
                future.set_result(message["pid"])
            else:  # its spawn timed out and will be tried again: this one must not run too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(message["pid"], signal.SIGKILL)
        elif "exited" in message:
            self.on_exit(message["exited"], message["code"])

    async def spawn(self, request: dict[str, Any], fds: list[int]) -> int:
        """Fork an agent; its pid."""
        if self.sock is None:
            msg = "the fork server is not running"
            raise McosError(msg)
        self._next += 1
        key = self._next
        request = {**request, "id": key}
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        try:
            async with asyncio.timeout(30):
                return await future
        except TimeoutError:
            self._waiting.pop(key, None)  # a late answer's agent is killed (_readable)
            msg = f"the fork server did not start {request['name']} within 30 s"
            raise McosError(msg) from None

    async def stop(self) -> None:
        """Hang up (it kills what is left of the agents and exits) and wait for it."""
        if self.sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        if self.process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.process.wait()
