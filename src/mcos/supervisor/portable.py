"""How a child process follows its parent, on Linux and elsewhere (macOS).

Linux asks the kernel: ``PR_SET_PDEATHSIG`` sends the child SIGTERM the moment its parent
dies, and the supervisor forks agents from a warm fork server over a ``SOCK_SEQPACKET``
socket. Neither exists on macOS (no ``prctl``; no sequenced-packet Unix sockets, and forking
a process that has touched Apple's frameworks is unsafe), so there:

- the parent passes its pid in ``$MCOS_PARENT_PID``, and the child polls ``getppid()`` from a
  daemon thread: when it changes (re-parented to launchd or a subreaper) the child sends
  itself SIGTERM — the same signal, within :data:`POLL_SECONDS`;
- the supervisor starts each agent as a fresh interpreter (``python -m mcos.runtime.main``)
  instead of forking it.

The choice is made by platform; ``MCOS_PORTABLE_PROCESSES=1`` forces the portable path on
Linux, which is how the tests exercise it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

PORTABLE_ENV = "MCOS_PORTABLE_PROCESSES"
"""Set to 1 to use the portable path on Linux too (tests, or a kernel without prctl)."""
PARENT_ENV = "MCOS_PARENT_PID"
"""The parent's pid, given to a child that must watch for the parent's death itself."""
POLL_SECONDS = 0.5
"""How often a portable child looks at its parent: the most a parent's death goes unnoticed."""
PR_SET_PDEATHSIG = 1


def native() -> bool:
    """True where the kernel notices a parent's death for us (Linux, unless forced portable)."""
    forced = os.environ.get(PORTABLE_ENV, "").strip().lower() in ("1", "true", "yes")
    return sys.platform.startswith("linux") and not forced


def die_with_parent() -> None:
    """In the child, before exec (``preexec_fn``): SIGTERM when the parent dies — Linux's
    ``prctl``; elsewhere nothing (the child watches its parent: :func:`watch_parent_from_env`)."""
    if not native():
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env() -> dict[str, str]:
    """Environment for a child that must die with this process: on the portable path, this
    process's pid for the child to watch; on Linux nothing (the kernel watches)."""
    return {} if native() else {PARENT_ENV: str(os.getpid())}


class ParentWatch:
    """A daemon thread that sends this process SIGTERM once its parent is gone."""

    def __init__(self, parent: int, *, every: float = POLL_SECONDS) -> None:
        self.parent = parent
        self.every = every
        self.gone = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="parent-watch", daemon=True)

    def start(self) -> ParentWatch:
        """Start watching (an already dead parent is noticed at once)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the process is exiting anyway)."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            if os.getppid() != self.parent:
                self.gone.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self._stop.wait(self.every)


def watch_parent_from_env() -> ParentWatch | None:
    """In a child started with :func:`child_env`: watch the parent it names. The variable is
    removed, so the child's own children (tools, sidecars) do not watch the wrong process."""
    value = os.environ.pop(PARENT_ENV, "").strip()
    if not value.isdigit():
        return None
    return ParentWatch(int(value)).start()
