"""Vendor SDKs are imported where they are used, not when a process starts: the suite starts
hundreds of `mcos` processes, and users start agents by the hundred (`benchmarks/startup.py`)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("anthropic", "openai", "msal", "requests", "aiogram", "discord", "playwright", "caldav")
"""SDKs that cost from a tenth of a second to seconds to import, none needed to start."""

ENTRY_POINTS = {
    "the mcos command": "import mcos.cli",
    "Mission Control": "import mcos.server.factory",
    "an agent process": "import mcos.runtime.main, mcos.runtime.process",
}


def test_starting_a_process_imports_no_vendor_sdk() -> None:
    """`mcos`, Mission Control and the agent runtime start without any heavy vendor SDK."""
    script = (
        "import json, sys\n"
        f"entry_points, heavy = {ENTRY_POINTS!r}, {HEAVY!r}\n"
        "found = {}\n"
        "for name, statement in entry_points.items():\n"
        "    exec(statement)\n"
        "    found[name] = sorted(m for m in heavy if m in sys.modules)\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    assert loaded == {name: [] for name in ENTRY_POINTS}, loaded
