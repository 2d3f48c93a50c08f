"""What a turn trace adds to a turn: building it, cutting an over-size one, and posting it.

Run: ``.venv/bin/python benchmarks/trace_overhead.py [--posts N]``. It serves a real Mission
Control (uvicorn, SQLite in a temporary folder) and prints one table to stdout: the median and
95th percentile of building a typical trace (8 sections, 4 calls, 10 tool calls), of cutting an
over-size one (200 tool calls of 4,000-character results) to 128 KiB, and of posting each.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mcos.api_traces import TraceIn, TraceSection  # noqa: E402
from mcos.client import AsyncClient, Calls, Client  # noqa: E402
from mcos.domain.budget import Usage  # noqa: E402
from mcos.domain.tokens import PrincipalKind  # noqa: E402
from mcos.models.base import ModelReply, ToolCall, ToolResult  # noqa: E402
from mcos.runtime.tracing import TurnTrace, Woke, post  # noqa: E402
from mcos.server import ServerSettings, create_app  # noqa: E402
from mcos.store import Directory, make_store  # noqa: E402
from mcos.store.protocol import AgentEntry  # noqa: E402


def _trace(tools: int, result_chars: int) -> TraceIn:

    t = TurnTrace("main", Woke("message", (1, 2)), datetime.now(UTC))
    t.sections = [TraceSection(name=f"FILE{i}.md", chars=4000, tokens=1000) for i in range(8)]
    reply = ModelReply("ok", (), Usage(input=1200, output=300, cache_read=9000), "end_turn", "m")
    for _ in range(4):
        t.called("m", "main", 0.8, reply, cost_micros=1234, reservation=7)
    for i in range(tools):
        call = ToolCall(f"c{i}", "memory_search", {"query": "backups " * 20})
        t.tool(call, ToolResult(f"c{i}", "x" * result_chars), 0.01, refused="")
    return t.finish("ok", final="Done." * 100, sent=[3])


def _time(fn: Callable[[], object], n: int) -> tuple[float, float]:
    took = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1]


async def _posts(url: str, token: str, big: bool, n: int) -> tuple[float, float]:
    took = []
    async with AsyncClient(url, token) as c:
        for _ in range(n):
            trace = _trace(200, 4000) if big else _trace(10, 500)
            trace = trace.model_copy(update={"id": secrets.token_hex(12)})
            began = time.perf_counter()
            assert await post(c, trace, "bench")
            took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/mcos.db"
        store = make_store(url)
        asyncio.run(store.upgrade())
        asyncio.run(store.close())
        settings = ServerSettings(
            token_key=secrets.token_bytes(32),
            directory=Directory([AgentEntry("bench", "bench", "local")], ["founder"], {}),
            bootstrap_operator="founder",
            state_dir=f"{tmp}/state",
        )
        server = uvicorn.Server(
            uvicorn.Config(create_app(make_store(url), settings), port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        operator = Path(f"{tmp}/state/operator.token").read_text().strip()
        with Client(base, operator) as c:
            token = c.do(Calls.create_token(PrincipalKind.AGENT, "bench")).token
        typical, big = _trace(10, 500), _trace(200, 4000)
        rows = [
            ("build a typical trace", *_time(lambda: _trace(10, 500), 200)),
            ("build and cut an over-size one", *_time(lambda: _trace(200, 4000), 50)),
            ("post a typical trace", *asyncio.run(_posts(base, token, False, args.posts))),
            ("post a cut over-size trace", *asyncio.run(_posts(base, token, True, args.posts))),
        ]
        server.should_exit = True
        thread.join(10)
    print(f"typical trace: {len(typical.model_dump_json()):,} bytes; "
          f"over-size cut to {len(big.model_dump_json()):,} bytes")  # fmt: skip
    print(f"{'step':<34} {'median ms':>10} {'p95 ms':>8}")
    for name, median, p95 in rows:
        print(f"{name:<34} {median:>10.2f} {p95:>8.2f}")


if __name__ == "__main__":
    main()
