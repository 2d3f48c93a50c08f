"""A cheap first look, measured: one agent's 20 wake-ups with and without a ``triage_model``.

The same scripted mix of messages wakes gene (ops, Claude Sonnet 5.5, its workspace grown to a
month of notes) one message at a time, 24 virtual minutes apart, twice: once with no triage
model, once with Claude Haiku 5.5 taking the first look. Both runs use the runtime's own message
handling (``claim`` + ``handle_messages``) against a real Mission Control, which meters every
call, and the local fake of Anthropic's Messages API through the real SDK, which counts tokens
and bills the prompt cache on the same virtual clock. The fake answers as a careful model
would: the first look flags a message that asks something; the main model handles each
message with one action.

    .venv/bin/python benchmarks/triage_mix.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import serve
from tests.fakes.anthropic_server import FakeAnthropic, Text, ToolUse
from tests.runtime.conftest import _migrate_sync, write_fleet

from mcos.client import AsyncClient, Calls
from mcos.domain.budget import MICROS
from mcos.domain.first_look import TOOL
from mcos.domain.messages import MessageKind, Priority
from mcos.models.factory import make_provider
from mcos.runtime.agent import AgentRuntime, RuntimeSettings
from mcos.runtime.clock import VirtualClock
from mcos.server.factory import channel_bindings, page_routes

KEY = "sk-ant-triage-mix"
MAIN = "claude-sonnet-5-5"
TRIAGE = "claude-haiku-5-5"
GAP = timedelta(minutes=24)
MEMORY_CHARS = 16_000
"""A month of distilled notes, as in the fleet-day benchmark."""


@dataclass(frozen=True)
class WakeUp:
    """One message that wakes gene; ``sender`` None: a human (the operator)."""

    sender: str | None
    subject: str
    body: str
    kind: MessageKind = MessageKind.REPORT
    priority: Priority = Priority.NORMAL


MIX = [
    WakeUp("jarvis", "nightly backup done", "All 14 volumes backed up, 212 GB, checksums good."),
    WakeUp("sentinel", "certificate renewed", "api.example.com renewed until 2027-03-01."),
    WakeUp("jarvis", "deploy 41 finished", "Deploy 41 is live; error rate unchanged."),
    WakeUp("sentinel", "scan clean", "The weekly dependency scan found nothing new."),
    WakeUp("jarvis", "thanks", "Thanks for the runbook fix, it worked tonight."),
    WakeUp("sentinel", "login audit", "312 logins yesterday, none from new countries."),
    WakeUp("jarvis", "disk growth", "The log volume grew 30% this week; should we rotate daily?"),
    WakeUp("jarvis", "restart the worker", "Please restart the queue worker on vps-2.",
           MessageKind.REQUEST),
    WakeUp("sentinel", "uptime", "99.98% last week, one 4-minute blip on Tuesday."),
    WakeUp("jarvis", "status", "Quarter planning moved to Friday; nothing needed from ops."),
    WakeUp("jarvis", "api 5xx spike", "5xx at 12% on api for 6 minutes.", MessageKind.ALERT,
           Priority.URGENT),
    WakeUp("jarvis", "cdn bill", "The CDN bill came in at the usual 41 USD."),
    WakeUp("sentinel", "patches applied", "Kernel patches applied on vps-1 and vps-3."),
    WakeUp(None, "db snapshots", "Keep three weeks of database snapshots from now on."),
    WakeUp("jarvis", "closed", "Closing the thread on the staging DNS: resolved."),
    WakeUp("sentinel", "firewall", "Opened 8443 for the new admin panel as agreed; ok with you?"),
    WakeUp("jarvis", "ssh keys", "Rotate the deploy SSH keys before Friday.", MessageKind.REQUEST),
    WakeUp("sentinel", "ntp", "All hosts within 20 ms of the NTP pool."),
    WakeUp("jarvis", "thanks again", "Thanks, the new alert thresholds are quieter."),
    WakeUp("sentinel", "backup restore test", "Monthly restore test passed in 11 minutes."),
]  # fmt: skip


def respond(body: dict[str, Any]) -> Text | ToolUse:
    """The model's answers: a first look flags what asks something; the main model acts once."""
    last = body["messages"][-1]["content"]
    text = "\n".join(b.get("text", "") for b in last if isinstance(b, dict))
    if body.get("tool_choice", {}).get("name") == TOOL:
        items = []
        for block in text.split("\n- [message ")[1:]:
            ref = "message " + block.split("]", 1)[0]
            asks = "?" in block or "please" in block.lower()
            why = "asks for a decision" if asks else "informational"
            items.append({"item": ref, "needs_main": asks, "reason": why})
        needs = any(i["needs_main"] for i in items)
        return ToolUse(TOOL, {"needs_main": needs, "reason": "first look", "items": items})
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
        return Text("done")
    return ToolUse("memory_write", {"text": "handled: " + text.splitlines()[1][:120]})


def grow_memory(path: Path) -> None:
    rng = random.Random(7)
    lines = [path.read_text().rstrip()]
    day = 1
    while sum(len(x) for x in lines) < MEMORY_CHARS:
        topic = rng.choice(["backup", "deploy", "dns", "certs", "disk", "queue", "firewall"])
        lines.append(
            f"- 2026-10-{day:02d}: {topic}: agreed with jarvis to keep the {topic} runbook short; "
            f"revisit if it recurs (ticket {rng.randint(100, 999)})."
        )
        day = day % 28 + 1
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Figures:
    main_calls: int = 0
    triage_calls: int = 0
    main_usd: float = 0.0
    triage_usd: float = 0.0
    recorded_usd: float = 0.0
    handled: int = 0
    settled: int = 0


async def run(triage: bool) -> Figures:
    """The 20 wake-ups, with or without the first look."""
    root = Path(tempfile.mkdtemp(prefix="triage-mix-"))
    clock = VirtualClock(datetime.now(UTC))
    with FakeAnthropic(api_key=KEY, clock=lambda: clock.now().timestamp()) as fake:
        fake.default = respond
        lines = [
            f'model = {{ provider = "anthropic", id = "{MAIN}", base_url = "{fake.url}", '
            'route = "direct" }',
            'key = "env:GENE_ANTHROPIC_KEY"',
        ]
        if triage:
            lines.append(f'triage_model = {{ provider = "anthropic", id = "{TRIAGE}" }}')
        fleet = write_fleet(root / "fleet", {"gene": "\n".join(lines)})
        grow_memory(fleet.workspace_path("gene") / "MEMORY.md")
        url = f"sqlite:///{root}/mcos.db"
        _migrate_sync(url)
        with serve(
            url,
            root,
            channels=channel_bindings(fleet),
            page_routes=page_routes(fleet),
            models={n: a.model for n, a in fleet.agents.items()},
            triage_models={n: a.triage_model for n, a in fleet.agents.items() if a.triage_model},
            prices=fleet.price_table(),
        ) as mc:
            clients = {
                name: AsyncClient(mc.url, mc.tokens[name] if name else mc.operator_token)
                for name in ("jarvis", "gene", "sentinel", None)
            }
            provider = make_provider(fleet.agents["gene"], KEY, fleet.price_table())
            settings = RuntimeSettings(batch_window=0, visibility=600)
            gene = AgentRuntime("gene", fleet, clients["gene"], provider, clock, settings=settings)
            try:
                for w in MIX:
                    await clients[w.sender].do(
                        Calls.send("gene", w.body, subject=w.subject, kind=w.kind,
                                   priority=w.priority)
                    )  # fmt: skip
                    await clock.advance(clock.now() + GAP)
                    await gene.claim()
                    await gene.handle_messages()
                rows = await clients[None].do(Calls.usage(agent="gene"))
            finally:
                await gene.aclose()
                for c in clients.values():
                    await c.aclose()
    stats, first = gene.stats, gene.triage_stats
    return Figures(
        main_calls=stats.model_calls - first.calls,
        triage_calls=first.calls,
        main_usd=(stats.cost_micros - first.cost_micros) / MICROS,
        triage_usd=first.cost_micros / MICROS,
        recorded_usd=sum(r.cost_usd for r in rows),
        handled=stats.handled,
        settled=first.settled,
    )


def main() -> None:
    without = asyncio.run(run(triage=False))
    with_triage = asyncio.run(run(triage=True))
    out = sys.stdout.write
    out(f"{len(MIX)} wake-ups of gene ({MAIN}), {GAP.total_seconds() / 60:.0f} minutes apart\n\n")
    out("| run | main calls | triage calls | settled by triage | handled | cost (recorded) |\n")
    out("|---|---:|---:|---:|---:|---:|\n")
    for name, f in (("main model only", without), (f"with {TRIAGE} first", with_triage)):
        out(
            f"| {name} | {f.main_calls} | {f.triage_calls} | {f.settled} | {f.handled} | "
            f"${f.main_usd + f.triage_usd:.4f} (${f.recorded_usd:.4f}) |\n"
        )
    total = with_triage.main_usd + with_triage.triage_usd
    out(
        f"\nwith triage: {total / (without.main_usd or 1):.0%} of the cost, of which the first "
        f"looks ${with_triage.triage_usd:.4f}; a main call costs "
        f"${with_triage.main_usd / (with_triage.main_calls or 1):.4f} against "
        f"${without.main_usd / (without.main_calls or 1):.4f} (fewer main turns: less cache)\n"
    )


if __name__ == "__main__":
    main()
