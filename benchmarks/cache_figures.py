"""What the prompt cache saves on two everyday shapes of work, counted by the fake Messages API.

Gene (small template, MEMORY.md grown to a month of notes, Claude Sonnet 5.5 served by the local
fake through the real SDK, a real Mission Control) runs:

1. a 3-call turn: a message whose answer needs two searches (a tool loop of three calls), in a
   main session that already holds eight earlier turns (each a 3,000-character report);
2. a heartbeat turn, then a message turn two minutes later.

The cache starts empty for each (the first call writes in every version).

For each call it prints the input tokens billed at the base price, written to the cache and
read from it, and the dollars; the 5-minute cache is forced so every version caches. Run it on
two checkouts to compare them (the figures in benchmarks/README.md: before and after the
cache work of issue 16).

    .venv/bin/python benchmarks/cache_figures.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.anthropic_server import FakeAnthropic, Text, ToolUse

from mcos.client import AsyncClient, Calls, Client
from mcos.config import load_fleet
from mcos.config.models import Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.budget import MICROS, Usage
from mcos.domain.heartbeat import CacheTTL
from mcos.domain.prices import price_for
from mcos.domain.tokens import PrincipalKind
from mcos.models.anthropic import AnthropicModel
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import VirtualClock
from mcos.runtime.workspace import TurnKind
from mcos.server.factory import build_app
from mcos.store import make_store

MODEL = "claude-sonnet-5-5"
KEY = "sk-ant-cache-figures"
START = datetime(2026, 12, 2, 9, tzinfo=UTC)
MEMORY_LINE = (
    "- 2026-10-{day:02d}: backup: decided with jarvis to keep the backup runbook short; "
    "owner sentinel; revisit if it recurs (ticket {ticket})."
)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class FiveMinutes(AgentRuntime):
    """The runtime with the 5-minute cache forced, whatever its TTL rule would pick."""

    def _cache_ttl(self) -> CacheTTL:
        return CacheTTL.FIVE_MINUTES


def prepare(root: Path, fake: FakeAnthropic) -> Fleet:
    """The small template, gene on Claude served by the fake, MEMORY.md about 16,000 chars."""
    path = init_fleet(root, template="small")
    text = path.read_text()
    head = "[agents.gene]\n"
    start = text.index(head) + len(head)
    end = text.find("\n[", start)
    kept = [
        line
        for line in text[start:end].splitlines()
        if line.split("=", 1)[0].strip() not in ("model", "key")
    ]
    ours = [
        f'model = {{ provider = "anthropic", id = "{MODEL}", base_url = "{fake.url}" }}',
        'key = "env:GENE_ANTHROPIC_KEY"',
    ]
    path.write_text(text[:start] + "\n".join([*ours, *kept]) + text[end:])
    fleet = load_fleet(path)
    memory = fleet.workspace_path("gene") / "MEMORY.md"
    lines = [memory.read_text().rstrip()]
    day = 0
    while sum(len(x) for x in lines) < 16_000:
        day += 1
        lines.append(MEMORY_LINE.format(day=day % 28 + 1, ticket=100 + day))
    memory.write_text("\n".join(lines) + "\n")
    return fleet


@contextmanager
def mission_control(fleet: Fleet) -> Iterator[tuple[str, Client]]:
    """A real Mission Control for the fleet on a loopback port, and an operator client."""
    asyncio.run(_migrate(fleet.store_url))
    server = uvicorn.Server(
        uvicorn.Config(build_app(fleet), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    token = (fleet.state_dir / "operator.token").read_text().strip()
    with Client(url, token) as operator:
        try:
            yield url, operator
        finally:
            server.should_exit = True
            thread.join(10)


async def _migrate(url: str) -> None:
    store = make_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def report(title: str, fake: FakeAnthropic, first: int, fleet: Fleet) -> None:
    """One line per call since request ``first``, and the total."""
    price = price_for("anthropic", MODEL, fleet.price_table())
    assert price is not None
    say(f"\n{title}")
    say(f"{'call':>4} {'input':>8} {'cache write':>12} {'cache read':>11} {'USD':>9}")
    total = 0
    totals = [0, 0, 0]
    for n, recorded in enumerate(fake.requests[first:], start=1):
        u = recorded.usage
        assert u is not None, recorded.response_status
        usage = Usage(
            input=u["input_tokens"],
            output=0,  # the same scripted answers in every version: input only
            cache_read=u["cache_read_input_tokens"],
            cache_write=u["cache_creation_input_tokens"],
        )
        cost = price.cost(usage, START)
        total += cost
        row = (usage.input, usage.cache_write, usage.cache_read)
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        say(f"{n:>4} {row[0]:>8,} {row[1]:>12,} {row[2]:>11,} {cost / MICROS:>9.5f}")
    say(f"{'all':>4} {totals[0]:>8,} {totals[1]:>12,} {totals[2]:>11,} {total / MICROS:>9.5f}")


async def run(fleet: Fleet, url: str, operator: Client, fake: FakeAnthropic) -> None:
    clock = VirtualClock(START)
    fake.clock = lambda: clock.now().timestamp()
    token = operator.do(Calls.create_token(PrincipalKind.AGENT, "gene")).token
    price = price_for("anthropic", MODEL, fleet.price_table())
    assert price is not None
    async with AsyncClient(url, token, timeout=30) as client:
        model = AnthropicModel(MODEL, KEY, price, base_url=fake.url, sleep=_no_sleep)
        gene = FiveMinutes("gene", fleet, client, model, clock, settings=RuntimeSettings())
        try:
            for n in range(8):  # the session so far: eight reports read and noted
                fake.script(Text(f"Noted report {n}."))
                body = f"Nightly report {n}: " + "all services answered within 200 ms; " * 80
                await gene.turn(TurnKind.MAIN, f"- [message {n}] from sentinel: {body}")
                await clock.advance(clock.now() + timedelta(minutes=10))
            fake.clear_cache()
            first = len(fake.requests)
            fake.script(
                ToolUse("memory_search", {"query": "backup runbook"}),
                ToolUse("memory_search", {"query": "backup owner"}),
                Text("The backup runbook is short; sentinel owns it."),
            )
            await gene.turn(TurnKind.MAIN, "- [message 9] from jarvis: who owns the backup?")
            report("A 3-call turn (two searches, then the answer):", fake, first, fleet)
            fake.clear_cache()
            first = len(fake.requests)
            await clock.advance(clock.now() + timedelta(hours=1))
            fake.script(Text("HEARTBEAT_OK"), Text("Answered."))
            await gene.turn(TurnKind.HEARTBEAT, "- [check web] https://example.test failing")
            await clock.advance(clock.now() + timedelta(minutes=2))
            await gene.turn(TurnKind.MAIN, "- [message 10] from jarvis: is the site back?")
            report("A heartbeat turn, then a message turn 2 minutes later:", fake, first, fleet)
        finally:
            await gene.aclose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic(api_key=KEY) as fake:
        fleet = prepare(Path(tmp), fake)
        with mission_control(fleet) as (url, operator):
            asyncio.run(run(fleet, url, operator, fake))


if __name__ == "__main__":
    main()
