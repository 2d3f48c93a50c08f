"""A kill during the WORKSTATE flush leaves the previous file whole, never a torn one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WRITER = """
import sys
from pathlib import Path
from mcos.runtime.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
versions = [("A" * 400_000) + "\\n", ("B" * 400_000) + "\\n"]
print("ready", flush=True)
i = 0
while True:
    ws.write_atomic("WORKSTATE.md", versions[i % 2])
    i += 1
"""


def test_kill_minus_nine_during_flushes_never_tears_workstate(tmp_path: Path) -> None:
    (tmp_path / "WORKSTATE.md").write_text("previous\n")
    whole = {"previous\n", "A" * 400_000 + "\n", "B" * 400_000 + "\n"}
    for attempt in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(0.01 + attempt * 0.013)  # land the kill at different points of a write
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert (tmp_path / "WORKSTATE.md").read_text() in whole
