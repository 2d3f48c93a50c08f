"""Two agent runtimes (offline model) answering each other forever: Mission Control pauses
them together, tells their manager once, and the runtimes honour the pause (they stop taking
work, nothing is lost) until an operator resumes them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from mcos.client import AsyncClient, Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.pingpong import PingPongRule
from mcos.models.base import ModelReply, ModelRequest, TextBlock, Turn
from mcos.models.offline import OfflineModel
from mcos.runtime.agent import AgentRuntime
from tests.runtime.conftest import FAST, RigFactory
from tests.waiting import eventually

LOOP = PingPongRule(turns=6, window=timedelta(minutes=15))
SETTINGS = replace(FAST, pause_poll=0.2)


class ChattyModel(OfflineModel):
    """The offline model that also answers replies (it never lets a thread rest): two of them
    reply to each other forever, the loop the rule must catch."""

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Read every incoming reply as a request, then answer as the offline model does."""
        turns = list(request.turns)
        if turns and turns[-1].role == "user":
            blocks = tuple(
                TextBlock(b.text.replace(" (reply, ", " (request, "))
                if isinstance(b, TextBlock)
                else b
                for b in turns[-1].blocks
            )
            turns[-1] = Turn("user", blocks)
        return await super().complete(replace(request, turns=tuple(turns)))


async def test_two_agents_ping_ponging_are_paused_together(rig_factory: RigFactory) -> None:
    """Gene and sentinel answer each other without end; after the rule's six messages both
    are paused (in Mission Control and in their runtimes), jarvis hears once, nothing is
    dead-lettered, and an operator's resume lets them run again."""
    rig = rig_factory(pingpong=LOOP)
    gene = rig.runtime("gene", ChattyModel(), SETTINGS)
    sentinel = rig.runtime("sentinel", ChattyModel(), SETTINGS)
    op = rig.client()
    stop = asyncio.Event()
    loops = [asyncio.create_task(rt.run(stop), name=f"{rt.name}-run") for rt in (gene, sentinel)]

    async def both_paused() -> bool:
        shown = [await op.do(Calls.agent(n)) for n in ("gene", "sentinel")]
        return all(a.state is AgentStatus.PAUSED for a in shown) and gene.paused and sentinel.paused

    try:
        await eventually("gene and sentinel started", lambda: _started(op), timeout=60)
        await rig.client("gene").do(Calls.send("sentinel", "is the disk fine?", subject="disk"))
        await eventually("both are paused", both_paused, timeout=60)
        shown = await op.do(Calls.agent("gene"))
        assert "ping-pong" in shown.state_detail
        assert shown.state_info["with"] == ["sentinel"]
        gene_turns = gene.stats.turns
        turns_when_paused = gene_turns + sentinel.stats.turns
        # Paused runtimes take no work: a message to gene waits queued, not handled, not lost.
        await rig.client("jarvis").do(Calls.send("gene", "hold on", subject="hold"))
        await eventually("the message waits", lambda: _queued(op, "gene"), timeout=60)
        assert gene.stats.turns + sentinel.stats.turns == turns_when_paused
        for name in ("gene", "sentinel"):
            assert (await op.do(Calls.agent(name))).dead == 0
        jarvis = await rig.client("jarvis").do(Calls.inbox(limit=100))
        told = [d.message for d in jarvis.deliveries if d.message.meta.get("paused")]
        assert [m.subject for m in told] == ["Paused (ping-pong): gene, sentinel"]
        assert [m.sender for m in told] == ["mission-control"]
        # `mcos agent resume` sets the state as an operator: the runtimes take work again.
        for name in ("gene", "sentinel"):
            await op.do(Calls.report_state(name, AgentStatus.IDLE, "resumed by an operator"))
        await eventually("gene resumed", lambda: _not(gene), timeout=60)
        await eventually("gene handles what waited", lambda: _handled(gene, gene_turns), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)


async def _started(op: AsyncClient) -> bool:
    shown = [await op.do(Calls.agent(n)) for n in ("gene", "sentinel")]
    return all(a.state is AgentStatus.IDLE for a in shown)


async def _queued(op: AsyncClient, name: str) -> bool:
    return (await op.do(Calls.agent(name))).queued >= 1


async def _not(rt: AgentRuntime) -> bool:
    return not rt.paused


async def _handled(rt: AgentRuntime, before: int) -> bool:
    return rt.stats.turns > before
