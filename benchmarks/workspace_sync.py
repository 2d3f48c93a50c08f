"""What workspace sync costs an agent, measured: the push after a turn (nothing changed, the
daily log appended, the first push of a whole workspace) and the pull of a failover host with
no files, through a real Mission Control (uvicorn) on SQLite or PostgreSQL.

The workspace is a year of an agent's life: the identity files, MEMORY.md and WORKSTATE.md, and
365 daily logs of 8 KiB (about 3 MiB in all). One request is made before anything is timed (a
fresh server's first request pays for warming up, which is no part of a sync), and the requests
of the first push and of the pull are counted.

    .venv/bin/python benchmarks/workspace_sync.py [--postgres] [--days 365] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.conftest import migrate, serve  # noqa: E402
from tests.store.conftest import create_pg_database, drop_pg_database  # noqa: E402

from mcos.client import AsyncClient, Call, Calls  # noqa: E402
from mcos.config.models import WorkspaceSyncConfig  # noqa: E402
from mcos.runtime.sync import WorkspaceSync  # noqa: E402

CORE = ("SOUL.md", "USER.md", "AGENTS.md", "GUARDRAILS.md", "HEARTBEAT.md", "MEMORY.md",
        "WORKSTATE.md")  # fmt: skip


def year(root: Path, days: int) -> None:
    for name in CORE:
        (root / name).write_text(f"# {name}\n" + "a line of the agent's own words\n" * 100)
    (root / "memory").mkdir()
    first = date(2026, 1, 1)
    for i in range(days):
        day = first + timedelta(days=i)
        entry = f"- 09:00:00 main turn (offline model): handled message {i}\n"
        (root / "memory" / f"{day}.md").write_text(entry * (8192 // len(entry)))


T = TypeVar("T")


class Counting(AsyncClient):
    """A client that counts the requests it makes."""

    requests = 0

    async def do(self, call: Call[T]) -> T:
        self.requests += 1
        return await super().do(call)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


async def measure(url: str, days: int, runs: int) -> None:
    await asyncio.to_thread(lambda: asyncio.run(migrate(url)))
    with tempfile.TemporaryDirectory() as tmp:
        here, there = Path(tmp) / "mini", Path(tmp) / "vps"
        here.mkdir()
        there.mkdir()
        year(here, days)
        config = WorkspaceSyncConfig()
        with serve(url, Path(tmp) / "mc") as mc:
            token = mc.tokens["gene"]
            async with Counting(mc.url, token, timeout=60) as a, Counting(mc.url, token) as b:
                await a.do(Calls.workspace())  # warm up (not timed, not counted)
                a.requests = 0
                sync = WorkspaceSync("gene", here, config, a)
                start = time.perf_counter()
                first = await sync.push()
                whole = time.perf_counter() - start
                pushed = a.requests
                assert first is not None
                unchanged, appended = [], []
                log = here / "memory" / f"{date(2026, 1, 1) + timedelta(days=days - 1)}.md"
                for i in range(runs):
                    start = time.perf_counter()
                    assert await sync.push() is None
                    unchanged.append(time.perf_counter() - start)
                    with log.open("a") as f:
                        f.write(f"- 10:00:{i % 60:02d} another turn\n")
                    start = time.perf_counter()
                    assert await sync.push() is not None
                    appended.append(time.perf_counter() - start)
                start = time.perf_counter()
                await WorkspaceSync("gene", there, config, b).pull()
                pull = time.perf_counter() - start
                pulled = b.requests
        size = first.bytes / 1024 / 1024
        store = url.split(":", maxsplit=1)[0]
        print(
            f"| {store} | {len(first.files)} files, {size:.1f} MiB | {whole:.2f} s ({pushed}) | "
            f"{ms(unchanged)} | {ms(appended)} | {pull:.2f} s ({pulled}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(
        "| store | workspace | first push (requests) | push, nothing changed | push, log appended "
        "| pull onto an empty host (requests) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(f"sqlite:///{tmp}/mcos.db", args.days, args.runs))
    if args.postgres:
        url = create_pg_database()
        try:
            asyncio.run(measure(url, args.days, args.runs))
        finally:
            drop_pg_database(url)


if __name__ == "__main__":
    main()
