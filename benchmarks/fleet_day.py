"""The cost of a business day: the field report's fleet for 24 hours of virtual time.

Three strategies run the same fleet, the same workspaces and the same scripted day against the
local fake of Anthropic's Messages API (driven through the real SDK, so tokens, caching and
prices are counted as the API would bill them) and a real Mission Control:

(a) one scheduled model call per checklist item of HEARTBEAT.md on every beat, no caching;
(b) one model call on every heartbeat, no caching — what common gateways do;
(c) mcos: deterministic checks first, the model only when something needs it, prompt caching
    with the TTL chosen from the numbers, messages batched within a short window.

    .venv/bin/python benchmarks/fleet_day.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.anthropic_server import FakeAnthropic, Text, ToolUse

from mcos.client import AsyncClient, Calls, Client
from mcos.config import load_fleet
from mcos.config.models import CheckConfig, Fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.budget import MICROS
from mcos.domain.heartbeat import CacheTTL, Finding, Outcome, next_beat
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.prices import price_for
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden
from mcos.models.anthropic import AnthropicModel
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.checks import CheckResult
from mcos.runtime.clock import VirtualClock
from mcos.runtime.workspace import TurnKind, strip_frontmatter
from mcos.server.factory import build_app
from mcos.store import make_store

START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday: the weekly cron job runs too
MODEL = "claude-sonnet-4-6"
KEY = "sk-ant-fleet-day"
MEMORY_CHARS = 16_000
"""A month of distilled notes per agent: workspaces in the field are tens of kilobytes."""
_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+(.+)$", re.MULTILINE)
_FINDING = re.compile(r"^- \[(message \d+|check [^\]]+|cron [^\]]+)\]", re.MULTILINE)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- the fleet and its day ------------------------------------------------------------------------
def prepare(root: Path) -> Path:
    """The business template, every agent on Claude, budgets off, memories grown to size."""
    path = init_fleet(root, template="business")
    text = path.read_text()
    text = re.sub(r"^(budget|daily_usd) = .*$", "", text, flags=re.MULTILINE)
    path.write_text(text)
    rng = random.Random(7)
    topics = ["customer", "deploy", "invoice", "backup", "pricing", "incident", "hiring", "launch"]
    fleet = load_fleet(path)
    for name in fleet.agents:
        memory = fleet.workspace_path(name) / "MEMORY.md"
        lines = [memory.read_text().rstrip()]
        day = 1
        while sum(len(x) for x in lines) < MEMORY_CHARS:
            topic = rng.choice(topics)
            lines.append(
                f"- 2026-10-{day:02d}: {topic}: decided with jarvis to keep the {topic} runbook "
                f"short; owner {rng.choice(list(fleet.agents))}; revisit if it recurs "
                f"(ticket {rng.randint(100, 999)})."
            )
            day = day % 28 + 1
        memory.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Event:
    """One thing that happens to the fleet."""

    at: datetime
    kind: str  # "message" or "outage"
    target: str
    sender: str = ""
    subject: str = ""
    priority: Priority = Priority.NORMAL
    origin: str = ""
    ends: datetime | None = None


def day_events(fleet: Fleet, seed: int = 11) -> list[Event]:
    """A realistic day: directives and requests in working hours, urgent mail, three outages."""
    rng = random.Random(seed)
    events: list[Event] = []
    pairs = [
        ("founder", "jarvis"), ("jarvis", "elon"), ("jarvis", "gene"), ("jarvis", "donna"),
        ("jarvis", "atlas"), ("elon", "forge"), ("jarvis", "vault"), ("vault", "scout"),
        ("vault", "ledger"), ("donna", "jarvis"), ("gene", "jarvis"), ("atlas", "jarvis"),
        ("forge", "elon"), ("sentinel", "gene"), ("vault", "claw"), ("vault", "pulse"),
    ]  # fmt: skip
    for i in range(48):
        sender, target = rng.choice(pairs)
        at = START + timedelta(hours=8, minutes=rng.randrange(0, 12 * 60))
        urgent = rng.random() < 0.1
        verb = rng.choice(["review", "ship", "check", "answer", "plan"])
        priority = Priority.URGENT if urgent else Priority.NORMAL
        events.append(Event(at, "message", target, sender, f"item {i}: {verb}", priority))
    for i, minute in enumerate((9 * 60 + 12, 13 * 60 + 47, 16 * 60 + 5, 18 * 60 + 30)):
        events.append(
            Event(START + timedelta(minutes=minute), "message", "donna", "founder",
                  f"urgent mail {i}: customer escalation", Priority.URGENT, "email:inbox")
        )  # fmt: skip
    for start, minutes in ((10 * 60 + 5, 45), (15 * 60 + 20, 15), (2 * 60 + 10, 30)):
        at = START + timedelta(minutes=start)
        events.append(
            Event(at, "outage", "gene", subject="mission-control-http",
                  ends=at + timedelta(minutes=minutes))
        )  # fmt: skip
    assert {e.target for e in events} <= set(fleet.agents)
    return sorted(events, key=lambda e: e.at)


def respond(body: dict[str, Any]) -> Text | ToolUse:
    """The model's answers, the same for every strategy: act on findings, else HEARTBEAT_OK."""
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else [last["content"]]
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
        return Text(
            "Done. Summary for the log: each item was read, the owner confirmed, and the next "
            "step recorded; nothing needs escalation. " * 8
        )
    text = "\n".join(b if isinstance(b, str) else b.get("text", "") for b in blocks)
    if "FLUSH WORKSTATE" in text:
        return ToolUse(
            "write_workstate",
            {"current_task": "day work", "decisions": "-", "open_threads": "-", "next_steps": "-"},
        )
    found = _FINDING.findall(text)
    if found:
        return ToolUse(
            "memory_write",
            {"text": f"handled {len(found)} item(s): " + "; ".join(found)[:500]},
            text="Working through the items now.",
        )
    return Text("HEARTBEAT_OK")


# --- strategies -----------------------------------------------------------------------------------
@dataclass
class Tracker:
    """When each event happened and when an agent's model turn took it in."""

    sent: dict[int, tuple[datetime, str]] = field(default_factory=dict)
    handled: dict[int, datetime] = field(default_factory=dict)
    outages: list[Event] = field(default_factory=list)
    outage_seen: dict[int, datetime] = field(default_factory=dict)

    def took_in(self, agent: str, ids: list[int], checks: list[str], now: datetime) -> None:
        for i in ids:
            self.handled.setdefault(i, now)
        for n, o in enumerate(self.outages):
            if o.target == agent and f"check {o.subject}" in checks and o.at <= now:
                self.outage_seen.setdefault(n, now)


class Mcos(AgentRuntime):
    """(c): the runtime as it ships."""

    tracker: Tracker

    async def handle_messages(self, extra: list[Finding] | None = None) -> bool:
        ids = [d.message.id for d in self.pending.values()]
        checks = [f.source for f in extra or []]
        ok = await super().handle_messages(extra)
        if ok:
            self.tracker.took_in(self.name, ids, checks, self.clock.now())
        return ok


class McosCache1h(Mcos):
    """(c) with the 1-hour cache forced: what the TTL rule declined."""

    def _cache_ttl(self) -> CacheTTL:
        return CacheTTL.ONE_HOUR


class McosCache5m(Mcos):
    """(c) with the 5-minute cache forced."""

    def _cache_ttl(self) -> CacheTTL:
        return CacheTTL.FIVE_MINUTES


class EveryBeat(Mcos):
    """(b): one uncached model call on every beat; messages wait for the beat."""

    def _cache_ttl(self) -> CacheTTL:
        return CacheTTL.NONE

    def batch_due(self) -> bool:
        return False

    def next_wake(self) -> datetime:
        return min([self.next_beat_at, *self.cron_next.values()])

    def _beat_start(self) -> bool:
        """Count the beat, schedule the next; whether this one is in active hours."""
        now = self.clock.now()
        self.stats.beats += 1
        self.next_beat_at = next_beat(now, self.interval, self.jitter, self.rng.random())
        return self.active is None or self.active.contains(now)

    async def heartbeat(self) -> Outcome:
        if not self._beat_start():
            return Outcome.INACTIVE
        found = [f for f in await self.findings() if not f.source.startswith("message ")]
        found.append(Finding("heartbeat", "scheduled heartbeat: work through HEARTBEAT.md"))
        await self.handle_messages(extra=found)
        return Outcome.TURN


class PerCheck(EveryBeat):
    """(a): one uncached model call per checklist item, every beat."""

    async def heartbeat(self) -> Outcome:
        if not self._beat_start():
            return Outcome.INACTIVE
        path = self.workspace.root / "HEARTBEAT.md"
        items = _ITEM.findall(strip_frontmatter(path.read_text())) if path.exists() else []
        items = items or ["review the inbox"]
        found = [f for f in await self.findings() if not f.source.startswith("message ")]
        found.append(Finding("heartbeat", f"scheduled check 1/{len(items)}: {items[0]}"))
        await self.handle_messages(extra=found)
        for i, item in enumerate(items[1:], start=2):
            text = f"- [heartbeat] scheduled check {i}/{len(items)}: {item}"
            await self.turn(TurnKind.ISOLATED, text, main=False)
        return Outcome.TURN


# --- one simulated day ----------------------------------------------------------------------------
@contextmanager
def mission_control(fleet: Fleet) -> Iterator[tuple[str, Client]]:
    """A real Mission Control for the fleet on a loopback port, and an operator client."""
    asyncio.run(_migrate(fleet.store_url))
    app = build_app(fleet)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
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


@dataclass
class Result:
    """One strategy's day."""

    label: str
    calls: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    dollars: float = 0.0
    beats: int = 0
    beats_without_model: int = 0
    events: int = 0
    handled: int = 0
    worst_delay: timedelta = timedelta(0)
    late: int = 0
    """Events not taken in within one heartbeat interval of their agent."""
    per_agent: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    """Turns, model calls and dollars of each agent."""


def _outage_runner(agent: str, events: list[Event], clock: VirtualClock) -> Any:
    async def run(check: CheckConfig) -> CheckResult:
        now = clock.now()
        for e in events:
            if e.kind == "outage" and e.target == agent and e.subject == check.name:
                assert e.ends is not None
                if e.at <= now < e.ends:
                    return CheckResult(check.name, False, "HTTP 503 (expected 200)", 0.01)
        return CheckResult(check.name, True, "healthy", 0.001)

    return run


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def run_day(
    kind: type[Mcos], label: str, fleet: Fleet, url: str, operator: Client,
    fake: FakeAnthropic, hours: float,
) -> Result:  # fmt: skip
    clock = VirtualClock(START)
    fake.reset()
    fake.clock = lambda: clock.now().timestamp()
    fake.default = respond
    events = day_events(fleet)
    tracker = Tracker(outages=[e for e in events if e.kind == "outage"])
    price = price_for("anthropic", MODEL, fleet.price_table())
    assert price is not None
    clients: dict[str, AsyncClient] = {}
    for who in [*fleet.agents, "founder"]:
        token = (
            operator.do(Calls.create_token(PrincipalKind.AGENT, who)).token
            if who in fleet.agents
            else (fleet.state_dir / "operator.token").read_text().strip()
        )
        clients[who] = AsyncClient(url, token, timeout=30)
    runtimes: dict[str, Mcos] = {}
    for n, name in enumerate(sorted(fleet.agents)):
        model = AnthropicModel(MODEL, KEY, price, base_url=fake.url, sleep=_no_sleep)
        rt = kind(
            name, fleet, clients[name], model, clock,
            settings=RuntimeSettings(), rng=random.Random(100 + n),
            check_runner=_outage_runner(name, events, clock),
        )  # fmt: skip
        rt.tracker = tracker
        runtimes[name] = rt
        await rt.start()
    try:
        await drive(runtimes, clients, events, tracker, clock, START + timedelta(hours=hours))
    finally:
        for rt in runtimes.values():
            await rt.aclose()
        for c in clients.values():
            await c.aclose()
    return score(label, runtimes, tracker, START + timedelta(hours=hours))


async def drive(
    runtimes: dict[str, Mcos], clients: dict[str, AsyncClient], events: list[Event],
    tracker: Tracker, clock: VirtualClock, end: datetime,
) -> None:  # fmt: skip
    """Move virtual time from wake-up to wake-up, sending the day's messages as they fall due."""
    queue = [e for e in events if e.at < end]
    now = START
    while True:
        candidates = [e.at for e in queue[:1]] + [rt.next_wake() for rt in runtimes.values()]
        later = [t for t in candidates if t > now]
        if not later or min(later) >= end:
            break
        now = min(later)
        await clock.advance(now)
        woken: set[str] = set()
        while queue and queue[0].at <= now:
            e = queue.pop(0)
            if e.kind != "message":
                continue
            meta = {"origin": e.origin} if e.origin else None
            send = functools.partial(
                Calls.send, e.target, f"{e.subject}: details follow in the thread.",
                subject=e.subject, kind=MessageKind.REQUEST, meta=meta,
            )  # fmt: skip
            try:
                sent = await clients[e.sender].do(send(priority=e.priority))
            except Forbidden:  # an alarm off the chain of command: the agent sends it calmly
                sent = await clients[e.sender].do(send(priority=Priority.NORMAL))
            tracker.sent[sent.message.id] = (e.at, e.target)
            woken.add(e.target)
        for name, rt in runtimes.items():
            beat_due = now >= rt.next_beat_at
            if name in woken or beat_due:
                await rt.claim()
            if rt.batch_due() and not rt.cooling():
                await rt.handle_messages()
            if beat_due:
                await rt.heartbeat()
            await rt.run_due_cron()


def score(label: str, runtimes: dict[str, Mcos], tracker: Tracker, end: datetime) -> Result:
    """Totals of the day, and each event's delay against its agent's heartbeat interval."""
    result = Result(label)
    result.per_agent = {
        n: (rt.stats.turns, rt.stats.model_calls, rt.stats.cost_micros / MICROS)
        for n, rt in runtimes.items()
    }
    for rt in runtimes.values():
        result.calls += rt.stats.model_calls
        result.dollars += rt.stats.cost_micros / MICROS
        result.beats += rt.stats.beats
        result.beats_without_model += rt.stats.beats_ok
        for k, v in rt.stats.tokens.items():
            result.tokens[k] = result.tokens.get(k, 0) + v
    taken: list[tuple[datetime, datetime | None, str]] = [
        (at, tracker.handled.get(mid), target) for mid, (at, target) in tracker.sent.items()
    ]
    taken += [
        (o.at, tracker.outage_seen.get(n), o.target)
        for n, o in enumerate(tracker.outages)
        if o.at < end
    ]
    for at, seen, target in taken:
        result.events += 1
        if seen is None:
            result.late += 1
            continue
        result.handled += 1
        result.worst_delay = max(result.worst_delay, seen - at)
        result.late += seen - at > runtimes[target].interval
    return result


def run_strategy(kind: type[Mcos], label: str, template: Path, hours: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="mcos-fleet-day-") as tmp:
        root = Path(tmp) / "fleet"
        shutil.copytree(template, root)
        fleet = load_fleet(root / "fleet.toml")
        with (
            FakeAnthropic(api_key=KEY, max_recorded=10) as fake,
            mission_control(fleet) as (url, operator),
        ):
            return asyncio.run(run_day(kind, label, fleet, url, operator, fake, hours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="simulate 12 hours instead of 24")
    args = parser.parse_args()
    logging.getLogger("mcos").setLevel(logging.ERROR)
    hours = 12.0 if args.quick else 24.0
    with tempfile.TemporaryDirectory(prefix="mcos-fleet-template-") as tmp:
        template = Path(tmp) / "fleet"
        prepare(template)
        fleet = load_fleet(template / "fleet.toml")
        say(
            f"fleet-day: {len(fleet.agents)} agents, {hours:g} h of virtual time from "
            f"{START:%a %Y-%m-%d}, model {MODEL} at list price, fake Anthropic API via the SDK"
        )
        results = []
        for kind, label in (
            (PerCheck, "(a) a call per check, no cache"),
            (EveryBeat, "(b) a call every beat, no cache"),
            (Mcos, "(c) mcos"),
            (McosCache1h, "(c) with the 1h cache forced"),
            (McosCache5m, "(c) with the 5m cache forced"),
        ):
            started = time.monotonic()
            results.append(run_strategy(kind, label, template, hours))
            say(f"  {label}: simulated in {time.monotonic() - started:.1f}s")
    say("")
    say(
        f"{'strategy':34} {'calls':>6} {'input':>10} {'output':>8} {'cache rd':>10} "
        f"{'cache wr':>9} {'dollars':>9} {'beats':>6} {'no-model':>8} {'handled':>9} "
        f"{'worst delay':>11} {'late':>4}"
    )
    for r in results:
        t = r.tokens
        say(
            f"{r.label:34} {r.calls:>6} {t['input']:>10,} {t['output']:>8,} "
            f"{t['cache_read']:>10,} {t['cache_write']:>9,} {r.dollars:>9.2f} {r.beats:>6} "
            f"{r.beats_without_model:>8} {r.handled:>4}/{r.events:<4} "
            f"{r.worst_delay.total_seconds() / 60:>9.1f} m {r.late:>4}"
        )
    a, b, c = results[:3]
    say("")
    say("per agent (turns / calls / dollars):")
    for name in sorted(c.per_agent):
        say(f"  {name:10} " + "   ".join(
            f"{r.label[:3]} {r.per_agent[name][0]:>3} / {r.per_agent[name][1]:>3} / "
            f"{r.per_agent[name][2]:>5.2f}" for r in results[:3]))  # fmt: skip
    share_a = c.dollars / a.dollars if a.dollars else 0
    share_b = c.dollars / b.dollars if b.dollars else 0
    say("")
    say(f"mcos / (a): {share_a:.1%} (target ≤ 10%): {'PASS' if share_a <= 0.10 else 'FAIL'}")
    say(f"mcos / (b): {share_b:.1%} (target ≤ 35%): {'PASS' if share_b <= 0.35 else 'FAIL'}")
    on_time = c.late == 0 and c.handled == c.events
    say(
        f"mcos handled {c.handled}/{c.events} events, none later than its agent's heartbeat "
        f"interval: {'PASS' if on_time else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
