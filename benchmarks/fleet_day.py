"""The cost of a business day: the business fleet for 24 hours of virtual time, five strategies.

Every strategy is the runtime itself: ``AgentRuntime.step()`` is the whole loop body, driven on a
virtual clock against a real Mission Control (SQLite, on the same virtual clock), whose gateway
takes the agents' model calls (the real SDK) to the local fake of Anthropic's Messages API (which
counts tokens and bills the prompt cache as the API does). The same agents, models, prices and
scripted day for every strategy; the baselines are the runtime with only its beat decision
overridden (``fleet_strategies.py``):

(a) a model call per HEARTBEAT.md checklist item on every beat;
(b) a model call on every beat (the whole checklist at once);
(d) OpenClaw-style isolated heartbeat sessions: a fresh session on every beat;
(c) mcos: checks first, the model only for what needs judgement, at its cadence;
(c+) mcos with a ``triage_model`` taking the first look.

(a), (b) and (d) run at both cache settings (5-minute and 1-hour breakpoints) and are compared
at the cheaper one.

    .venv/bin/python benchmarks/fleet_day.py [--quick] [--hours H] [--only a b d c c+ c?]

benchmarks/README.md says what is counted and how; the figures are there too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.anthropic_server import FakeAnthropic, RecordedRequest, Text, ToolUse

from benchmarks.fleet_strategies import EveryBeat, IsolatedBeat, Mcos, PerItem
from mcos.client import AsyncClient, Calls, Client
from mcos.config import load_fleet
from mcos.config.models import AgentConfig, CheckConfig, Fleet, parse_duration
from mcos.config.scaffold import init_fleet
from mcos.config.secrets import resolve_key
from mcos.domain.budget import MICROS, Usage
from mcos.domain.heartbeat import ActiveHours, CacheTTL, next_cron_fire
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.prices import price_for
from mcos.domain.routines import Task, parse_interval, parse_routines
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import Forbidden
from mcos.models.base import ModelProvider
from mcos.models.factory import make_provider
from mcos.models.gateway import GatewayAccess
from mcos.models.offline import CURATE_MARKER
from mcos.runtime.checks import CheckResult
from mcos.runtime.clock import VirtualClock
from mcos.runtime.context import ISOLATED_FLUSH
from mcos.runtime.workspace import is_effectively_empty
from mcos.server.app import create_app
from mcos.server.factory import settings_for
from mcos.store import make_store
from mcos.store.sqlite import simulated_clock

START = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday: the weekly cron job runs too
MODEL = "claude-sonnet-5-5"
"""Judgement: every agent's model."""
TRIAGE_MODEL = "claude-haiku-5-5"
"""The first look in (c+)."""
ROUTE = "gateway"
"""How agents reach the model: through Mission Control's gateway, as mcos ships."""
KEY_ENV = "MCOS_FLEET_DAY_ANTHROPIC_KEY"
KEY = "sk-ant-fleet-day"
MEMORY_CHARS = 14_000
"""A month of distilled notes per agent (workspaces in the field are tens of kilobytes), under
the curated MEMORY.md's cap so curation keeps it at about this size."""
YESTERDAY_LOG_ENTRIES = 40
_MARKER = re.compile(r"\[(message \d+|check [^\]]+|cron [^\]]+|routine [^\]]+)\]")
_MEMORY = re.compile(r"<<<MEMORY\.md\n(.*?)\n>>>END MEMORY\.md", re.DOTALL)
_LOGS = re.compile(r"<<<LOGS\n(.*?)\n>>>END LOGS", re.DOTALL)
_CAP = re.compile(r"At most ([\d,]+) characters")
_NOTE = re.compile(r"^- 20\d\d-\d\d-\d\d: ")


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- the fleet ------------------------------------------------------------------------------------
def prepare(root: Path, fake_url: str) -> Path:
    """The business template, every agent on Claude through the fake, budgets off, memories grown
    to size (the same files for every strategy)."""
    path = init_fleet(root, template="business")
    text = path.read_text()
    text = re.sub(r"^(budget|daily_usd) = .*$", "", text, flags=re.MULTILINE)
    model = (
        f'model = {{ provider = "anthropic", id = "{MODEL}", context_window = 1000000, '
        f'base_url = "{fake_url}", route = "{ROUTE}" }}\nkey = "env:{KEY_ENV}"\n'
        "shared_key = true"
    )
    text = re.sub(r'^model = \{ provider = "offline".*\}$', model, text, flags=re.MULTILINE)
    path.write_text(text)
    rng = random.Random(7)
    topics = ["customer", "deploy", "invoice", "backup", "pricing", "incident", "hiring", "launch"]
    fleet = load_fleet(path)
    for name in fleet.agents:
        memory = fleet.workspace_path(name) / "MEMORY.md"
        lines = [memory.read_text().rstrip(), "\n## Notes (distilled from the daily logs)"]
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
        log = fleet.workspace_path(name) / "memory" / f"{START - timedelta(days=1):%Y-%m-%d}.md"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            "".join(
                f"- {8 + i // 4:02d}:{i % 4 * 15:02d}:00 main turn: handled a request from "
                f"{rng.choice(list(fleet.agents))} about the {rng.choice(topics)}; replied in "
                "the thread and logged the next step\n"
                for i in range(YESTERDAY_LOG_ENTRIES)
            )
        )
    return path


def last_runs(tasks: tuple[Task, ...], k: int) -> dict[str, datetime]:
    """When each routine item of the ``k``-th agent last ran, as yesterday left it: one
    interval before a time spread over the morning, so today it falls due then."""
    return {
        t.name: START - t.interval + (timedelta(hours=9, minutes=7 * k) % t.interval)
        for t in tasks
        if t.interval is not None
    }


def last_curation(k: int) -> datetime:
    """When the ``k``-th agent's curation last ran: yesterday early in the morning."""
    return START - timedelta(days=1) + timedelta(hours=6, minutes=11 * k)


def as_of_yesterday(rt: Mcos, k: int) -> None:
    """The routine state a fleet that ran yesterday leaves (kept by the runtime itself)."""
    rt.routine_since = last_runs(rt.routines().tasks, k)
    rt._save_routines()
    rt.curator.last = last_curation(k)
    rt.curator.save()


def configure(path: Path, server_url: str, *, triage: bool) -> None:
    """Point the fleet at this run's Mission Control; (c+) gives every agent its triage model."""
    text = path.read_text()
    text = re.sub(r'^url = ".*"$', f'url = "{server_url}"', text, count=1, flags=re.MULTILINE)
    if triage:
        base = re.search(r'base_url = "([^"]+)"', text)
        assert base is not None
        line = (
            f'triage_model = {{ provider = "anthropic", id = "{TRIAGE_MODEL}", '
            f'context_window = 1000000, base_url = "{base.group(1)}", route = "{ROUTE}" }}'
        )
        text = re.sub(r"^(shared_key = true)$", rf"\1\n{line}", text, flags=re.MULTILINE)
    path.write_text(text)


# --- the day --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One scripted thing that happens to the fleet."""

    at: datetime
    kind: str  # "message" or "outage"
    target: str
    sender: str = ""
    subject: str = ""
    priority: Priority = Priority.NORMAL
    message_kind: MessageKind = MessageKind.REQUEST
    origin: str = ""
    ends: datetime | None = None


PAIRS = [
    ("founder", "jarvis"), ("jarvis", "elon"), ("jarvis", "gene"), ("jarvis", "donna"),
    ("jarvis", "atlas"), ("elon", "forge"), ("jarvis", "vault"), ("vault", "scout"),
    ("vault", "ledger"), ("donna", "jarvis"), ("gene", "jarvis"), ("atlas", "jarvis"),
    ("forge", "elon"), ("sentinel", "gene"), ("vault", "claw"), ("vault", "pulse"),
    ("gene", "sentinel"), ("elon", "jarvis"),
]  # fmt: skip


def day_events(fleet: Fleet, seed: int = 11) -> list[Event]:
    """A working day: requests, reports and FYIs of every priority between the agents (most in
    working hours, some at night), urgent mail to the comms agent, three outages of the ops
    agent's health check."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(64):
        sender, target = rng.choice(PAIRS)
        night = i % 8 == 7
        start = 0 if night else 8 * 60
        at = START + timedelta(minutes=start + rng.randrange(0, 8 * 60 if night else 12 * 60))
        roll = rng.random()
        if roll < 0.2:  # for information: a report nobody has to act on
            priority, kind, what = Priority.LOW, MessageKind.REPORT, "FYI"
        elif roll < 0.75:
            priority, kind, what = Priority.NORMAL, MessageKind.REQUEST, "please"
        elif roll < 0.9:
            priority, kind, what = Priority.HIGH, MessageKind.REQUEST, "today"
        else:
            priority, kind, what = Priority.URGENT, MessageKind.REQUEST, "now"
        verb = rng.choice(["review", "ship", "check", "answer", "plan"])
        events.append(Event(at, "message", target, sender, f"{what}: item {i}: {verb}",
                            priority, kind))  # fmt: skip
    for i, minute in enumerate((9 * 60 + 12, 13 * 60 + 47, 16 * 60 + 5, 18 * 60 + 30)):
        events.append(
            Event(START + timedelta(minutes=minute), "message", "donna", "founder",
                  f"now: urgent mail {i}: customer escalation", Priority.URGENT,
                  MessageKind.REQUEST, "email:inbox")
        )  # fmt: skip
    for start, minutes in ((2 * 60 + 10, 30), (10 * 60 + 5, 45), (15 * 60 + 20, 15)):
        at = START + timedelta(minutes=start)
        events.append(
            Event(at, "outage", "gene", subject="mission-control-http",
                  ends=at + timedelta(minutes=minutes))
        )  # fmt: skip
    assert {e.target for e in events} <= set(fleet.agents)
    return sorted(events, key=lambda e: e.at)


def cron_fires(fleet: Fleet, end: datetime) -> list[tuple[datetime, str, str]]:
    """(time, agent, job) of every cron fire in the day."""
    fires = []
    for name, agent in fleet.agents.items():
        zone = agent.heartbeat.timezone or fleet.fleet.timezone
        for job in agent.cron:
            at = next_cron_fire(job.schedule, START - timedelta(seconds=1), job.timezone or zone)
            while at < end:
                fires.append((at, name, job.name))
                at = next_cron_fire(job.schedule, at, job.timezone or zone)
    return sorted(fires)


# --- the model and the API's own count ------------------------------------------------------------
def last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")


_SHOWN = re.compile(r"^- \[(message \d+)\] from [^:]*: (.*)$", re.MULTILINE)


def first_look(body: dict[str, Any], tool: str) -> ToolUse:
    """The triage model's answer, forced to call ``tool``: the main model is not needed for an
    FYI, and is for everything else."""
    items = [
        {"item": ref, "needs_main": not subject.startswith("FYI"),
         "reason": "for information only" if subject.startswith("FYI") else "asks for work"}
        for ref, subject in _SHOWN.findall(last_user_text(body))
    ]  # fmt: skip
    needs = any(i["needs_main"] for i in items) or not items
    reason = "something here needs the agent" if needs else "every item is for information"
    return ToolUse(tool, {"needs_main": needs, "reason": reason, "items": items})


def curated(prompt: str) -> ToolUse:
    """The model's curation: MEMORY.md with its oldest dated notes dropped to make room for a
    line distilled from each new log entry worth keeping, within the cap; every other line kept
    as it is (guardrails included)."""
    memory, logs, cap = _MEMORY.search(prompt), _LOGS.search(prompt), _CAP.search(prompt)
    assert memory, "no MEMORY.md in the curation prompt"
    assert logs, "no daily logs in the curation prompt"
    assert cap, "no cap in the curation prompt"
    limit = int(cap.group(1).replace(",", ""))
    lines = memory.group(1).splitlines()
    entries = [e for e in logs.group(1).splitlines() if "handled" in e or "turn:" in e]
    new = [f"- {START:%Y-%m-%d}: distilled: {e.lstrip('- ')[:140]}" for e in entries[-12:]]
    while len("\n".join(lines + new)) > limit * 0.9 and any(_NOTE.match(x) for x in lines):
        lines.pop(next(i for i, x in enumerate(lines) if _NOTE.match(x)))
    return ToolUse("curate_memory", {"text": "\n".join(lines + new) + "\n"})


def respond(body: dict[str, Any]) -> Text | ToolUse:
    """The model's answers, the same in every strategy: a tool round acting on what the prompt
    brings, a short summary after a tool result, HEARTBEAT_OK when there is nothing; a forced
    tool call (the triage model's first look) is answered by ``first_look``."""
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        return first_look(body, choice["name"])
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else [last["content"]]
    text = last_user_text(body)
    if "FLUSH WORKSTATE" in text:
        return ToolUse(
            "write_workstate",
            {"current_task": "day work", "decisions": "-", "open_threads": "-", "next_steps": "-"},
        )
    found = _MARKER.findall(text)
    if found or ISOLATED_FLUSH in text:
        return ToolUse(
            "memory_write",
            {"text": f"handled {len(found)} item(s): " + "; ".join(found)[:500]},
            text="Working through the items now.",
        )
    if text.startswith(CURATE_MARKER):
        return curated(text)
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
        return Text(
            "Done. Summary for the log: each item was read, the owner confirmed, and the next "
            "step recorded; nothing needs escalation. " * 8
        )
    return Text("HEARTBEAT_OK")


@dataclass
class Call:
    """One successful model call, as the API billed it."""

    at: datetime
    model: str
    agent: str
    usage: Usage
    markers: tuple[str, ...]
    """What the prompt's new turn carried: ``message 12``, ``check NAME``, ``cron NAME``,
    ``routine NAME``, ``curation``."""


_WHO = re.compile(r"You are (\w+) \(|first look for (\w+) \(")


def caller(body: dict[str, Any]) -> str:
    """Which agent made a call, from its system prompt."""
    system = body.get("system") or ""
    text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
    found = _WHO.search(text)
    return (found.group(1) or found.group(2)) if found else "?"


class CountingAnthropic(FakeAnthropic):
    """The fake API, keeping every billed call (its time, model, usage and what its prompt's new
    turn carried) — the figures come from the API's side, not the runtime's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[Call] = []
        self.now: Callable[[], datetime] = lambda: START

    def record(self, record: RecordedRequest) -> None:
        super().record(record)
        if record.response_status != 200 or record.usage is None:
            return
        u = record.usage
        one_hour = u.get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
        usage = Usage(
            input=u["input_tokens"], output=u["output_tokens"],
            cache_read=u["cache_read_input_tokens"],
            cache_write=u["cache_creation_input_tokens"], cache_write_1h=one_hour,
        )  # fmt: skip
        text = last_user_text(record.body)
        markers = tuple(_MARKER.findall(text)) + (
            ("curation",) if text.startswith(CURATE_MARKER) else ()
        )
        call = Call(self.now(), record.body["model"], caller(record.body), usage, markers)
        with self._lock:
            self.calls.append(call)

    def reset(self) -> None:
        super().reset()
        self.calls = []


# --- Mission Control and the loop -----------------------------------------------------------------
class SimClock(VirtualClock):
    """Virtual time that knows which tasks sleep on it (so the driver may move it)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.sleeping: set[asyncio.Task[Any]] = set()
        self.asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        if seconds <= 0 or task is None:
            await super().sleep(seconds)
            return
        self.sleeping.add(task)
        self.asleep.set()
        try:
            await super().sleep(seconds)
        finally:
            self.sleeping.discard(task)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def mission_control(fleet: Fleet, port: int) -> Iterator[Client]:
    """A real Mission Control for the fleet on ``port``, and an operator client.

    Long-polls answer at once: in virtual time the driver is what wakes an agent (when its
    inbox holds a message or its next wake-up comes), as a long-poll would in real time.
    """
    asyncio.run(_migrate(fleet.store_url))
    store = make_store(fleet.store_url, fleet.delivery.policy())
    app = create_app(store, replace(settings_for(fleet), max_wait_seconds=0.0))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    token = (fleet.state_dir / "operator.token").read_text().strip()
    with Client(f"http://127.0.0.1:{port}", token) as operator:
        try:
            yield operator
        finally:
            server.should_exit = True
            thread.join(10)


async def _migrate(url: str) -> None:
    store = make_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


def outage_checks(agent: str, events: list[Event], clock: VirtualClock) -> Any:
    """The agent's health checks as the scripted outages make them answer."""

    async def run(check: CheckConfig) -> CheckResult:
        now = clock.now()
        for e in events:
            if e.kind == "outage" and e.target == agent and e.subject == check.name:
                assert e.ends is not None
                if e.at <= now < e.ends:
                    return CheckResult(check.name, False, "HTTP 503 (expected 200)", 0.01)
        return CheckResult(check.name, True, "healthy", 0.001)

    return run


async def settle(tasks: dict[str, asyncio.Task[None]], clock: SimClock) -> None:
    """Wait until every step has returned or sleeps on the virtual clock."""
    while True:
        clock.asleep.clear()
        running = [t for t in tasks.values() if not t.done() and t not in clock.sleeping]
        if not running:
            return
        napping = asyncio.ensure_future(clock.asleep.wait())
        await asyncio.wait([*running, napping], return_when=asyncio.FIRST_COMPLETED)
        napping.cancel()


async def drive(
    runtimes: dict[str, Mcos], clients: dict[str, AsyncClient], operator: AsyncClient,
    events: list[Event], clock: SimClock, end: datetime, sent: list[Sent],
) -> None:  # fmt: skip
    """Move virtual time from wake-up to wake-up; at each, send the messages that fall due and
    run ``step()`` of every agent that has something to do (its wake-up came, or its inbox
    holds a message — what a long-poll would wake it for)."""
    queue = deque(e for e in events if e.kind == "message" and e.at < end)
    tasks: dict[str, asyncio.Task[None]] = {}
    while True:
        now = clock.now()
        while queue and queue[0].at <= now:
            sent.append(await send(clients, queue.popleft()))
        stepped: set[str] = set()
        while True:
            waiting = {a.name for a in await operator.do(Calls.agents()) if a.queued}
            due = [
                name for name, rt in runtimes.items()
                if name not in stepped and (name not in tasks or tasks[name].done())
                and (name in waiting or rt.next_wake() <= now)
            ]  # fmt: skip
            if not due:
                break
            for name in due:
                if name in tasks:
                    tasks[name].result()  # a step that failed fails the benchmark
                tasks[name] = asyncio.create_task(runtimes[name].step(), name=f"{name}-step")
                stepped.add(name)
            await settle(tasks, clock)
        for task in tasks.values():
            if task.done():
                task.result()
        wakes = [
            rt.next_wake() for name, rt in runtimes.items()
            if name not in tasks or tasks[name].done()
        ]  # fmt: skip
        wakes += [queue[0].at] if queue else []
        if (sleeper := clock.next_wake()) is not None:
            wakes.append(sleeper)
        later = [t for t in wakes if t > now]
        if not later or min(later) >= end:
            break
        await clock.advance(min(later))
    for task in tasks.values():
        task.cancel()


async def send(clients: dict[str, AsyncClient], e: Event) -> Sent:
    """Send a scripted message as its sender; what Mission Control stored."""
    meta = {"origin": e.origin} if e.origin else None

    def call(priority: Priority) -> Any:
        return Calls.send(e.target, f"{e.subject}: details follow in the thread.",
                          subject=e.subject, kind=e.message_kind, priority=priority,
                          meta=meta)  # fmt: skip

    priority = e.priority
    try:
        out = await clients[e.sender].do(call(priority))
    except Forbidden:  # an alarm off the chain of command: the agent sends it calmly
        priority = Priority.NORMAL
        out = await clients[e.sender].do(call(priority))
    return Sent(out.message.id, e, priority)


@dataclass(frozen=True)
class Sent:
    """A scripted message as sent: its id, and the priority Mission Control accepted."""

    id: int
    event: Event
    priority: Priority


# --- one strategy's day ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Strategy:
    """A row of the table: the runtime class, its cache setting, and whether it triages."""

    key: str
    label: str
    runtime: type[Mcos]
    ttl: CacheTTL | None = None
    triage: bool = False


STRATEGIES = (
    Strategy("a", "(a) a call per checklist item", PerItem, CacheTTL.FIVE_MINUTES),
    Strategy("a", "(a) a call per checklist item", PerItem, CacheTTL.ONE_HOUR),
    Strategy("b", "(b) a call every beat", EveryBeat, CacheTTL.FIVE_MINUTES),
    Strategy("b", "(b) a call every beat", EveryBeat, CacheTTL.ONE_HOUR),
    Strategy("d", "(d) isolated heartbeat sessions", IsolatedBeat, CacheTTL.FIVE_MINUTES),
    Strategy("d", "(d) isolated heartbeat sessions", IsolatedBeat, CacheTTL.ONE_HOUR),
    Strategy("c", "(c) mcos", Mcos),
    Strategy("c+", "(c+) mcos with triage", Mcos, triage=True),
    Strategy("c?", "(c) with its cache forced", Mcos, CacheTTL.FIVE_MINUTES),
    Strategy("c?", "(c) with its cache forced", Mcos, CacheTTL.ONE_HOUR),
)
"""``c?``: what mcos's TTL rule weighed, for the record (no verdict is drawn from them)."""


@dataclass
class Day:
    """What a strategy's day left behind: the API's calls, the agents' stats, the acks."""

    calls: list[Call]
    sent: list[Sent]
    acked: dict[int, datetime]
    ledger_usd: float
    """What Mission Control recorded as spent (cross-check of the API's figures)."""


async def run_day(
    strategy: Strategy, fleet: Fleet, operator_token: str, tokens: dict[str, str],
    fake: CountingAnthropic, clock: SimClock, events: list[Event], end: datetime,
) -> Day:  # fmt: skip
    url = fleet.server.url
    clients = {who: AsyncClient(url, token, timeout=60) for who, token in tokens.items()}
    operator = AsyncClient(url, operator_token, timeout=60)
    runtimes: dict[str, Mcos] = {}
    sent: list[Sent] = []
    try:
        for n, name in enumerate(sorted(fleet.agents)):
            provider = model_of(fleet, name, tokens[name], clock)
            rt = strategy.runtime(
                name, fleet, clients[name], provider, clock, rng=random.Random(100 + n),
                check_runner=outage_checks(name, events, clock),
            )  # fmt: skip
            rt.forced_ttl = strategy.ttl
            as_of_yesterday(rt, n)
            runtimes[name] = rt
            await rt.start()
        await drive(runtimes, clients, operator, events, clock, end, sent)
        ledger = sum(a.spent_today_usd for a in await operator.do(Calls.agents()))
    finally:
        for rt in runtimes.values():
            await rt.aclose()
        for c in [*clients.values(), operator]:
            await c.aclose()
    return Day(
        calls=list(fake.calls),
        sent=sent,
        acked={},
        ledger_usd=ledger,
    )


def model_of(fleet: Fleet, name: str, token: str, clock: SimClock) -> ModelProvider:
    """The agent's model as its process builds it (``mcos.runtime.process``): through Mission
    Control's gateway with the agent's token and no key, or (direct) with its key."""
    config = fleet.agents[name]
    if config.model.through_gateway:
        access = GatewayAccess(fleet.server.url, token)
        return make_provider(config, None, fleet.price_table(), sleep=clock.sleep, gateway=access)
    assert config.key is not None
    key = resolve_key(config.key, where=f"agents.{name}", base_dir=fleet.base_dir)
    return make_provider(config, key, fleet.price_table(), sleep=clock.sleep)


def acks(fleet: Fleet) -> dict[int, datetime]:
    """When each message was acknowledged by its recipient, from Mission Control's own store."""
    path = fleet.store_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT message_id, min(acked_at) FROM delivery_history GROUP BY 1")
        return {mid: datetime.fromtimestamp(us / 1_000_000, UTC) for mid, us in rows.fetchall()}


def run_strategy(
    strategy: Strategy, template: Path, fake: CountingAnthropic, hours: float
) -> tuple[Fleet, list[Event], Day]:
    """One strategy's day on a fresh copy of the fleet and a fresh Mission Control."""
    with tempfile.TemporaryDirectory(prefix="mcos-fleet-day-") as tmp:
        root = Path(tmp) / "fleet"
        shutil.copytree(template, root)
        port = free_port()
        configure(root / "fleet.toml", f"http://127.0.0.1:{port}", triage=strategy.triage)
        fleet = load_fleet(root / "fleet.toml")
        events = day_events(fleet)
        end = START + timedelta(hours=hours)
        clock = SimClock(START)
        fake.reset()
        fake.clock = lambda: clock.now().timestamp()
        fake.now = clock.now
        fake.default = respond
        with simulated_clock(clock.now), mission_control(fleet, port) as operator:
            tokens = {
                name: operator.do(Calls.create_token(PrincipalKind.AGENT, name)).token
                for name in fleet.agents
            }
            operator_token = (fleet.state_dir / "operator.token").read_text().strip()
            tokens["founder"] = operator_token
            day = asyncio.run(
                run_day(strategy, fleet, operator_token, tokens, fake, clock, events, end)
            )
            day.acked = acks(fleet)
        return fleet, events, day


# --- the score ------------------------------------------------------------------------------------
def stabbing(intervals: list[tuple[datetime, datetime]]) -> int:
    """The fewest instants that fall in every interval (each interval: when a piece of work may
    reach the model), greedily by the earliest end."""
    count, point = 0, None
    for start, stop in sorted(intervals, key=lambda iv: iv[1]):
        if point is None or start > point:
            count, point = count + 1, stop
    return count


Window = tuple[datetime, datetime]
"""When a piece of work may reach the model: from when it exists to when it is late."""


def first_active(fleet: Fleet, agent: str, at: datetime) -> datetime:
    """The first minute at or after ``at`` inside the agent's active hours."""
    hb = fleet.agents[agent].heartbeat
    if not hb.active_hours:
        return at
    hours = ActiveHours.parse(hb.active_hours, hb.timezone or fleet.fleet.timezone)
    while not hours.contains(at):
        at += timedelta(minutes=1)
    return at


@dataclass
class Routine:
    """The routine work of the day, from the fleet file, HEARTBEAT.md and yesterday's runs:
    each item due at its cadence (within half a beat either side, in active hours), and each
    agent's curation."""

    items: dict[str, list[Window]] = field(default_factory=dict)
    """Per agent, a window for each run of each item."""
    curations: dict[str, int] = field(default_factory=dict)


def routine_work(fleet: Fleet, end: datetime) -> Routine:
    work = Routine()
    for k, name in enumerate(sorted(fleet.agents)):
        hb = fleet.agents[name].heartbeat
        beat = parse_duration(hb.interval)
        path = fleet.workspace_path(name) / "HEARTBEAT.md"
        text = path.read_text() if path.exists() else ""
        if is_effectively_empty(text):
            continue
        tasks = parse_routines(
            text, default=parse_interval(hb.task_interval), overrides=hb.cadences()
        ).tasks
        ran = last_runs(tasks, k)
        for task in tasks:
            if task.interval is None:
                continue
            last = ran[task.name]
            while (due := first_active(fleet, name, last + task.interval - beat / 2)) < end:
                work.items.setdefault(name, []).append((due, due + beat))
                last = max(last + task.interval, due)
        every, last = parse_interval(hb.curate), last_curation(k)
        while every and (due := first_active(fleet, name, last + every - beat / 2)) < end:
            work.curations[name] = work.curations.get(name, 0) + 1
            last = max(last + every, due)
    return work


@dataclass(frozen=True)
class Needed:
    """The model calls the day's work needs, at the fewest."""

    events: int
    """Main-session work: messages (urgent at once, others within the agent's batch window),
    failing checks and routine items (within a heartbeat interval), shared where their windows
    overlap."""
    without_routines: int
    """``events`` were there no routine items (what the events alone need)."""
    cron: int
    """Cron runs: one call each (isolated sessions share nothing)."""
    curation: int
    """Curations: one call each (a turn of its own)."""

    @property
    def total(self) -> int:
        return self.events + self.cron + self.curation


def needed_calls(
    fleet: Fleet, sent: list[Sent], events: list[Event], fires: list[tuple[datetime, str, str]],
    routine: Routine, end: datetime,
) -> Needed:  # fmt: skip
    windows: dict[str, list[Window]] = {}
    for s in sent:
        hb = fleet.agents[s.event.target].heartbeat
        wait = timedelta(0) if s.priority is Priority.URGENT else parse_duration(hb.batch)
        windows.setdefault(s.event.target, []).append((s.event.at, s.event.at + wait))
    for e in events:
        if e.kind == "outage" and e.at < end:
            interval = parse_duration(fleet.agents[e.target].heartbeat.interval)
            windows.setdefault(e.target, []).append((e.at, e.at + interval))
    alone = sum(stabbing(w) for w in windows.values())
    for name, items in routine.items.items():
        windows.setdefault(name, []).extend(items)
    return Needed(
        sum(stabbing(w) for w in windows.values()), alone, len(fires),
        sum(routine.curations.values()),
    )  # fmt: skip


@dataclass
class Score:
    """One strategy's row."""

    strategy: Strategy
    calls: Counter[str]
    tokens: Counter[str]
    micros: int
    needed: Needed
    events: int
    handled: int
    missed: list[str]
    worst: timedelta
    worst_what: str
    ledger_usd: float
    routine_runs: int
    """Routine items the main model was given (an item batched with others counts once each)."""
    curations: int

    @property
    def dollars(self) -> float:
        return self.micros / MICROS

    @property
    def cache(self) -> str:
        ttl = self.strategy.ttl
        return "own rule" if ttl is None else {"5m": "5 min", "1h": "1 hour"}[ttl.value]


def score(
    strategy: Strategy, fleet: Fleet, events: list[Event], day: Day, routine: Routine,
    end: datetime,
) -> Score:  # fmt: skip
    prices = {m: price_for("anthropic", m, fleet.price_table()) for m in (MODEL, TRIAGE_MODEL)}
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    micros = 0
    for c in day.calls:
        price = prices[c.model]
        assert price is not None, c.model
        calls[c.model] += 1
        micros += price.cost(c.usage, c.at)
        tokens.update(
            input=c.usage.input, output=c.usage.output, cache_read=c.usage.cache_read,
            cache_write_5m=c.usage.cache_write - c.usage.cache_write_1h,
            cache_write_1h=c.usage.cache_write_1h,
        )  # fmt: skip
    taken: list[tuple[str, datetime, datetime | None]] = []
    for s in day.sent:
        taken.append((f"message {s.id} to {s.event.target}", s.event.at, day.acked.get(s.id)))
    judged = [c for c in day.calls if c.model == MODEL]
    for e in events:
        if e.kind == "outage" and e.at < end:
            seen = next(
                (c.at for c in judged if c.at >= e.at and f"check {e.subject}" in c.markers), None
            )
            taken.append((f"outage of {e.subject} at {e.at:%H:%M}", e.at, seen))
    fires = cron_fires(fleet, end)
    for at, _agent, job in fires:
        seen = next((c.at for c in judged if c.at >= at and f"cron {job}" in c.markers), None)
        taken.append((f"cron {job} at {at:%H:%M}", at, seen))
    routine_runs = sum(1 for c in judged for m in c.markers if m.startswith("routine "))
    curations = sum(1 for c in judged if "curation" in c.markers)
    missed = [what for what, _, seen in taken if seen is None]
    delays = [(seen - at, what) for what, at, seen in taken if seen is not None]
    worst, worst_what = max(delays, default=(timedelta(0), ""))
    return Score(
        strategy, calls, tokens, micros, needed_calls(fleet, day.sent, events, fires, routine, end),
        len(taken), len(delays), missed, worst, worst_what, day.ledger_usd, routine_runs,
        curations,
    )  # fmt: skip


# --- the table ------------------------------------------------------------------------------------
def minutes(d: timedelta) -> str:
    return f"{d.total_seconds() / 60:.1f} min"


def print_prices(fleet: Fleet) -> None:
    say(f"prices (genai-prices via mcos.domain.prices.price_for, at {START:%Y-%m-%d}), "
        "USD per million tokens:")  # fmt: skip
    for model in (MODEL, TRIAGE_MODEL):
        p = price_for("anthropic", model, fleet.price_table())
        assert p is not None, model
        r = p.rates(0, START)
        say(
            f"  {model:18} input {r.input:g}, output {r.output:g}, cache read {r.cache_read:g}, "
            f"cache write 5m {r.cache_write_5m:g}, cache write 1h {r.cache_write_1h:g}"
        )


def print_table(scores: list[Score], routine: Routine) -> None:
    due = sum(len(w) for w in routine.items.values())
    say(
        f"{'strategy':32} {'cache':8} {'calls':>6} {'triage':>6} {'needed':>6} {'made/need':>9} "
        f"{'events':>7} {'missed':>6} {'worst delay':>11} {'routine':>7} {'curation':>8}"
    )
    for s in scores:
        main, triage = s.calls[MODEL], s.calls[TRIAGE_MODEL]
        say(
            f"{s.strategy.label:32} {s.cache:8} {main:>6} {triage:>6} {s.needed.total:>6} "
            f"{(main + triage) / s.needed.total:>8.2f}x {s.handled:>3}/{s.events:<3} "
            f"{len(s.missed):>6} {minutes(s.worst):>11} {s.routine_runs:>3}/{due:<3} "
            f"{s.curations:>3}/{s.needed.curation:<4}"
        )
    say()
    say(
        f"{'strategy':32} {'cache':8} {'input':>10} {'output':>8} {'cache read':>11} "
        f"{'write 5m':>9} {'write 1h':>9} {'dollars':>8} {'MC ledger':>9}"
    )
    for s in scores:
        t = s.tokens
        say(
            f"{s.strategy.label:32} {s.cache:8} {t['input']:>10,} {t['output']:>8,} "
            f"{t['cache_read']:>11,} {t['cache_write_5m']:>9,} {t['cache_write_1h']:>9,} "
            f"{s.dollars:>8.2f} {s.ledger_usd:>9.2f}"
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_verdicts(scores: list[Score]) -> None:
    best: dict[str, Score] = {}
    for s in scores:
        if s.strategy.key not in best or s.dollars < best[s.strategy.key].dollars:
            best[s.strategy.key] = s
    say()
    baselines = [k for k in ("a", "b", "d") if k in best]
    if baselines:
        say("each baseline at its cheaper cache setting: " + ", ".join(
            f"({k}) {best[k].cache} ${best[k].dollars:.2f}" for k in baselines))  # fmt: skip
    for k, target in (("c", 0.20), ("c+", 0.10)):
        if k in best and "b" in best:
            share = best[k].dollars / best["b"].dollars
            say(f"({k}) / best (b): {share:.1%} (target ≤ {target:.0%}): "
                f"{verdict(share <= target)}")  # fmt: skip
    for k in ("c", "c+"):
        if k not in best:
            continue
        s = best[k]
        made = s.calls[MODEL] + s.calls[TRIAGE_MODEL]
        ratio = made / s.needed.total
        n = s.needed
        say(
            f"{s.strategy.label}: needed {n.total} = {n.without_routines} for the events + "
            f"{n.cron} cron runs + {n.events - n.without_routines} more for routine items + "
            f"{n.curation} curations"
        )
        say(
            f"{s.strategy.label}: {len(s.missed)} events missed (target 0): "
            f"{verdict(not s.missed)}; calls {made} for {s.needed.total} needed = {ratio:.2f}x "
            f"(target ≤ 1.2x): {verdict(ratio <= 1.2)}; worst delay {minutes(s.worst)} "
            f"({s.worst_what})"
        )
        for what in s.missed:
            say(f"  missed: {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="simulate 6 hours instead of 24")
    parser.add_argument("--hours", type=float, help="simulate this many hours")
    parser.add_argument(
        "--only", nargs="+", choices=sorted({s.key for s in STRATEGIES}), help="these strategies"
    )
    args = parser.parse_args()
    logging.getLogger("mcos").setLevel(logging.ERROR)
    hours = args.hours or (6.0 if args.quick else 24.0)
    os.environ[KEY_ENV] = KEY
    with (
        tempfile.TemporaryDirectory(prefix="mcos-fleet-template-") as tmp,
        CountingAnthropic(api_key=KEY, max_recorded=10) as fake,
    ):
        template = Path(tmp) / "fleet"
        prepare(template, fake.url)
        fleet = load_fleet(template / "fleet.toml")
        say(
            f"fleet-day: {len(fleet.agents)} agents, {hours:g} h of virtual time from "
            f"{START:%a %Y-%m-%d}, {MODEL} (triage: {TRIAGE_MODEL}), a real Mission Control, "
            "the fake Anthropic API through the SDK"
        )
        print_prices(fleet)
        end = START + timedelta(hours=hours)
        routine = routine_work(fleet, end)
        scores = []
        for strategy in STRATEGIES:
            if args.only and strategy.key not in args.only:
                continue
            if strategy.triage and "triage_model" not in AgentConfig.model_fields:
                say(f"  {strategy.label}: skipped, this build has no triage_model")
                continue
            started = time.monotonic()
            run_fleet, events, day = run_strategy(strategy, template, fake, hours)
            scores.append(score(strategy, run_fleet, events, day, routine, end))
            say(f"  {strategy.label} ({scores[-1].cache}): simulated in "
                f"{time.monotonic() - started:.1f}s")  # fmt: skip
    say()
    print_table(scores, routine)
    print_verdicts(scores)


if __name__ == "__main__":
    main()
