"""A kill during the WORKSTATE flush leaves the previous file whole, never a torn one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.waiting import wait_until

WRITER = """
import sys
from pathlib import Path

from tests.waiting import wait_until
from mcos.runtime.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
versions = [("A" * 400_000) + "\\n", ("B" * 400_000) + "\\n"]
print("ready", flush=True)
i = 0
while True:
    ws.write_atomic("WORKSTATE.md", versions[i % 2])
    i += 1
"""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # replaced or not yet there
        return -1


def test_kill_minus_nine_during_flushes_never_tears_workstate(tmp_path: Path) -> None:
    (tmp_path / "WORKSTATE.md").write_text("previous\n")
    whole = {"previous\n", "A" * 400_000 + "\n", "B" * 400_000 + "\n"}
    full = 400_001
    # The kill lands at a point seen on disk, not after a guessed time: as a flush's temporary
    # file appears, once it holds some text, and during a flush after one replaced the file.
    points = [
        ("a flush begun", lambda tmp: _size(tmp) >= 0),
        ("a flush under way", lambda tmp: _size(tmp) > 0),
        (
            "a flush after a completed one",
            lambda tmp: _size(tmp_path / "WORKSTATE.md") == full and _size(tmp) >= 0,
        ),
    ]
    for attempt in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            what, reached = points[attempt % len(points)]
            tmp = tmp_path / f".WORKSTATE.md.tmp-{child.pid}"
            wait_until(what, lambda reached=reached, tmp=tmp: reached(tmp), interval=0.001)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert (tmp_path / "WORKSTATE.md").read_text() in whole
