"""Telemetry figures: what the span hooks of one turn cost, off and on, and what logging a
turn's lines costs.

One "turn" here is the hooks a real turn runs: an ``invoke_agent`` span around two ``chat``
spans and one ``execute_tool`` span, plus ``trace_meta()`` for the reply — without the model or
Mission Control, so the figure is the hooks' own cost. "On" exports to a local OTLP/HTTP
receiver (``tests/fakes/otlp_server.py``) in the SDK's background thread. Logging: the turn's
three JSON lines (``turn started``, ``tool called``, ``turn ended``) rendered to a string.

    .venv/bin/python benchmarks/telemetry.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.otlp_server import FakeCollector

from mcos.config.models import Fleet
from mcos.domain.budget import Usage
from mcos.logs import formatter, get_logger
from mcos.models.base import ModelReply
from mcos.runtime.telemetry import Telemetry, trace_meta

REPLY = ModelReply("ok", (), Usage(input=800, output=90, cache_read=3000), "end_turn", "m")


def turn_hooks(t: Telemetry) -> None:
    with t.turn("main", "anthropic", "m") as span:
        for _ in range(2):
            with t.chat("anthropic", "m", 1024, "main") as chat:
                chat.reply(REPLY)
        with t.tool("reply", "toolu_1"):
            trace_meta()
        span.set({"mcos.cost_usd": 0.004})


def per_turn_us(t: Telemetry, n: int) -> float:
    for _ in range(min(n, 200)):  # warm up
        turn_hooks(t)
    started = time.perf_counter()
    for _ in range(n):
        turn_hooks(t)
    return (time.perf_counter() - started) / n * 1e6


def log_lines_us(n: int) -> float:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(agent="gene"))
    logger = logging.getLogger("bench.telemetry")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log = get_logger("bench.telemetry")
    started = time.perf_counter()
    for i in range(n):
        log.info("turn started", agent="gene", kind="main", messages=[i])
        log.info("tool called", agent="gene", tool="reply", duration_ms=1.5)
        log.info("turn ended", agent="gene", kind="main", outcome="done", cost_usd=0.004,
                 model_calls=2, tokens={"input": 800, "output": 90}, duration_s=3.2)  # fmt: skip
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    n = 2_000 if parser.parse_args().quick else 20_000
    with tempfile.TemporaryDirectory() as tmp, FakeCollector() as collector:
        fleet = Fleet.model_validate({"telemetry": {"otlp_endpoint": collector.endpoint}})
        fleet._path = Path(tmp) / "fleet.toml"
        off = Telemetry("gene")
        on = Telemetry.open(fleet, "gene")
        off_us = per_turn_us(off, n)
        on_us = per_turn_us(on, n)
        on.close()
        received = len(collector.spans)
    print(f"turns: {n:,} (4 spans each)")
    print(f"span hooks per turn, telemetry off: {off_us:8.2f} µs")
    print(f"span hooks per turn, telemetry on:  {on_us:8.2f} µs  ({received:,} spans received)")
    print(f"three JSON log lines per turn:      {log_lines_us(n):8.2f} µs")


if __name__ == "__main__":
    main()
