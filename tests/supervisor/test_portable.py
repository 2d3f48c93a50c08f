"""The portable process path (macOS's), forced on Linux: agents started as fresh interpreters
instead of forks, and every child noticing its parent's death by watching, not through
``PR_SET_PDEATHSIG`` — `mcos run` killed with SIGKILL leaves nothing behind either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from mcos.client import Calls, Client
from mcos.exceptions import McosError
from mcos.supervisor import portable
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import MCOS, mcos
from tests.waiting import wait_until

FORCED = {portable.PORTABLE_ENV: "1"}

WATCHER = """
import signal
from mcos.supervisor.portable import watch_parent_from_env
watch = watch_parent_from_env()
print("watching" if watch is not None else "not watching", flush=True)
signal.pause()
"""

LAUNCHER = """
import signal, sys
from pathlib import Path
from mcos.supervisor.local import spawn
child = spawn("watcher", [sys.executable, "-c", sys.argv[1]], Path(sys.argv[2]))
print(child.process.pid, flush=True)
signal.pause()
"""


class TestChoice:
    """The platform decides; the variable forces the portable path on Linux."""

    def test_linux_is_native_unless_forced(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On Linux the kernel watches (no parent pid handed down); forced, the child watches."""
        monkeypatch.delenv(portable.PORTABLE_ENV, raising=False)
        monkeypatch.setattr(sys, "platform", "linux")
        assert portable.native()
        assert portable.child_env() == {}
        monkeypatch.setenv(portable.PORTABLE_ENV, "1")
        assert not portable.native()
        assert portable.child_env() == {portable.PARENT_ENV: str(os.getpid())}

    def test_macos_is_portable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """On macOS there is no prctl: the portable path, with no variable set."""
        monkeypatch.delenv(portable.PORTABLE_ENV, raising=False)
        monkeypatch.setattr(sys, "platform", "darwin")
        assert not portable.native()
        portable.die_with_parent()  # a no-op, not an AttributeError on a missing prctl


class TestParentWatch:
    """A child started with the portable environment dies with its parent."""

    def test_the_child_notices_its_parent_die(self, tmp_path: Path) -> None:
        """The launcher spawns a watcher (no prctl), then is SIGKILLed: the watcher exits."""
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, WATCHER, str(tmp_path / "watcher.log")],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **FORCED},
        )
        try:
            assert launcher.stdout is not None
            watcher = int(launcher.stdout.readline())
            log = tmp_path / "watcher.log"
            wait_until("the watcher watching", lambda: "watching" in log.read_text())
            assert log.read_text().strip() == "watching"
            assert psutil.Process(watcher).environ()[portable.PARENT_ENV] == str(launcher.pid)
        finally:
            launcher.send_signal(signal.SIGKILL)
            launcher.wait(30)
        wait_until("the watcher gone after its parent's death", lambda: not _alive(watcher))

    def test_the_variable_is_not_inherited(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Read once and removed, so the watcher's own children do not watch the wrong pid."""
        monkeypatch.setenv(portable.PARENT_ENV, str(os.getppid()))
        watch = portable.watch_parent_from_env()
        assert watch is not None
        try:
            assert portable.PARENT_ENV not in os.environ
            assert not watch.gone.is_set()
        finally:
            watch.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)  # `mcos run` on a loaded machine; the waits have their own deadlines
def test_mcos_run_on_the_portable_path_leaves_nothing_behind(tmp_path: Path) -> None:
    """`mcos run` forced portable: agents are fresh interpreters, children of the supervisor
    (no fork server); SIGKILL to `mcos run` — no signal handler runs — and Mission Control and
    every agent still go, each having noticed its parent's death itself."""
    home = tmp_path / "small"
    mcos("init", str(home), "--template", "small")
    port = free_port()
    fleet = home / "fleet.toml"
    fleet.write_text(fleet.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    with (tmp_path / "run.out").open("wb") as out:
        run = subprocess.Popen(
            [*MCOS, "run", str(home)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FORCED},
        )
    launcher = psutil.Process(run.pid)
    try:

        def ready() -> bool:
            """Asked over HTTP: an `mcos status` process per poll cost a second of CPU each,
            on the cores the agents start on."""
            if run.poll() is not None:
                pytest.fail(f"mcos run exited {run.returncode}")
            token = home / "state" / "operator.token"
            if not token.exists():
                return False
            try:
                with Client(f"http://127.0.0.1:{port}", token.read_text().strip()) as operator:
                    agents = operator.do(Calls.agents())
            except (McosError, httpx.HTTPError):
                return False
            return len(agents) == 3 and all(a.state == "idle" for a in agents)

        wait_until("three agents idle", ready, timeout=90, interval=0.3)
        children = launcher.children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        assert not any("mcos.supervisor.zygote" in c for c in commands), commands
        agents = [c for c in children if "mcos agent" in " ".join(c.cmdline())]
        assert len(agents) == 3, commands
        assert {a.ppid() for a in agents} == {run.pid}  # started by the supervisor, not forked
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(30)

    wait_until(
        "Mission Control and every agent gone",
        lambda: not [c.pid for c in children if _alive(c.pid)],
        timeout=60,
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
