"""The field report's P0 cascade replayed on every path an agent has: sentinel (security) tries
to raise "P0 … ATTACK" through its tools and its own API token, and no agent but the gate's
confirmers hears an alarm; every refusal is in the audit log.

Real Mission Control over uvicorn, real agent runtimes (offline model), the business template.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mcos.api_models import ChannelInboundIn, SendRequest
from mcos.client import Calls
from mcos.domain.messages import MessageKind, Priority
from mcos.exceptions import McosError
from mcos.models.base import ToolCall
from mcos.runtime.context import format_message
from tests.e2e import test_governance_replays as replays
from tests.e2e.test_governance_replays import Business

business = replays.business
"""The business fleet with Mission Control running (the governance replays' fixture)."""

P0 = "P0 ATTACK: metric directories missing fleet-wide"
ALARMS = (Priority.URGENT, Priority.HIGH)


async def _api_refused(biz: Business, call: Any) -> str:
    """A call sentinel makes with its own token directly: it must be refused."""
    with pytest.raises(McosError) as refused:
        await biz.client("sentinel").do(call)
    assert refused.value.status in (403, 429), refused.value.message
    return str(refused.value.message)


async def test_sentinel_cannot_raise_a_p0_through_any_path(business: Business) -> None:
    """Incident report, a direct message to each agent, the all-hands topic, a directive, a
    reply in a thread, a batch, a forged incident mark, an approval request, a channel post
    (tool and inbound API) and a recovery — the last three outside sentinel's tool allowlist
    altogether: only jarvis (the P0 gate's agent confirmer) hears an
    alarm, nobody sees a confirmed incident, and each refusal is audited."""
    biz = business
    agents = sorted(biz.fleet.agents)
    others = [a for a in agents if a != "sentinel"]
    confirmers = {"jarvis"}  # the P0 gate: role:orchestrator + human
    sentinel = biz.runtime("sentinel")
    # Gene asks sentinel something ordinary: the thread sentinel will try to answer loudly.
    asked = await biz.client("gene").do(Calls.send("sentinel", "is the disk fine?", subject="disk"))

    async def tool(tool_name: str, **args: Any) -> str:
        call = ToolCall(f"t-{tool_name}-{len(args)}", tool_name, args)
        result = await sentinel.tools.call(call)
        return str(result.content)

    # 1. The incident report: a hypothesis that reaches only its gate.
    said = await tool("report_incident", severity="P0", summary=P0, evidence="ls: no such file")
    assert "error" not in said.lower(), said
    # 2. A direct urgent message to every agent (its manager jarvis may hear it: escalation).
    refused_direct = []
    for name in others:
        out = await tool("send_message", to=name, subject=P0, body=P0, kind="alert",
                         priority="urgent")  # fmt: skip
        if name != "jarvis":
            assert out.startswith("error:"), f"{name}: {out}"
            refused_direct.append(name)
    # 3. The topic every agent reads, urgent and high.
    for priority in ("urgent", "high"):
        out = await tool("send_message", to="all-hands", subject=P0, body=P0, kind="alert",
                         priority=priority)  # fmt: skip
        assert out.startswith("error:"), out
        assert "broadcast" in out, out
    # 4. A directive (issue_directive is governed).
    out = await tool("send_message", to="gene", subject=P0, body=P0, kind="directive")
    assert out.startswith("error:"), out
    # 5. A reply in gene's thread: the tool replies at normal priority; the raw API at urgent
    #    is refused (gene asked calmly).
    await tool("reply", message_id=asked.message.id, body=P0)
    loud = Calls.send("gene", P0, subject=P0, kind=MessageKind.REPLY, priority=Priority.URGENT,
                      reply_to=asked.message.id)  # fmt: skip
    await _api_refused(biz, loud)
    # 6. One batch alarming several agents, and a forged "incident" mark at normal priority.
    batch = [
        SendRequest(to=n, subject=P0, body=P0, priority=Priority.HIGH) for n in ("gene", "elon")
    ]
    await _api_refused(biz, Calls.send_batch(batch))
    await _api_refused(biz, Calls.send("gene", P0, subject=P0,
                                       meta={"incident": "1", "severity": "P0"}))  # fmt: skip
    # 7. An approval request: sentinel's narrow scope has no request_approval (lesson 3); the
    #    tool allowlist refuses it before anything is sent.
    out = await tool("request_approval", action="broadcast_urgent", payload={"to": "all-hands"},
                     rationale=P0)  # fmt: skip
    assert out.startswith("refused: tool 'request_approval' is not allowed"), out
    # 8. A channel post: sentinel has no channel and no post_to_channel; posting to vault's and
    #    feeding its inbound.
    out = await tool("post_to_channel", channel="leads", text=P0)
    assert out.startswith("refused: tool 'post_to_channel' is not allowed"), out
    item = ChannelInboundIn(sender="attacker", text=P0, at=datetime.now(UTC), ref="p0-1",
                            urgent=True)  # fmt: skip
    await _api_refused(biz, Calls.channel_inbound("leads", item))
    # 9. A recovery request: sentinel recovers nothing (no recover tool at all).
    out = await tool("recover", name="p0-lockdown", reason=P0)
    assert out.startswith("refused: tool 'recover' is not allowed"), out

    # Nobody but the confirmers got an alarm or an incident; nobody sees a confirmed incident.
    for name in others:
        rt = biz.runtime(name)
        await rt.claim()
        for d in rt.pending.values():
            m = d.message
            text = format_message(d, biz.fleet.agents)
            assert "CONFIRMED INCIDENT" not in text, f"{name}: {text}"
            if name in confirmers:
                continue
            assert m.priority not in ALARMS, f"{name} got an alarm: {m.subject} from {m.sender}"
            assert "incident" not in m.meta, f"{name} got an incident turn: {m.subject}"
            if m.sender == "sentinel":
                assert "UNCONFIRMED" in text, text
    jarvis = next(rt for rt in biz.runtimes if rt.name == "jarvis")
    gate = [d for d in jarvis.pending.values() if d.message.meta.get("incident")]
    assert len(gate) == 1
    assert "NOT CONFIRMED" in format_message(gate[0], biz.fleet.agents)
    incidents = await biz.client().do(Calls.incidents())
    assert [(i.severity, i.state) for i in incidents] == [("P0", "reported")]

    # Every refusal is audited, naming the rule.
    records = await biz.client().do(Calls.audit(actor="agent:sentinel", limit=500))
    refused = [r for r in records if r.outcome == "refused"]
    by_action: dict[str, list[Any]] = {}
    for r in refused:
        by_action.setdefault(r.action, []).append(r)
    sends = by_action.get("message.send", [])
    to = [r.targets.get("to") for r in sends]
    for name in refused_direct:
        assert name in to, f"the refused alarm to {name} is not audited"
    assert to.count("all-hands") == 2
    assert "gene,elon" in to
    # The directive is refused at the tool's gate (Mission Control's authorize), before a send.
    assert by_action.get("authorize.issue_directive"), "the refused directive is not audited"
    assert all(r.detail.get("rule") for r in sends)
    assert by_action.get("channel.inbound"), "the forged channel item is not audited"
    tools = {r.targets.get("tool") for r in by_action.get("runtime.tool.refused", [])}
    assert {"post_to_channel", "recover", "request_approval"} <= tools, tools
    assert any(r.action == "incident.reported" for r in records)


async def test_alarming_many_agents_one_by_one_is_a_broadcast(business: Business) -> None:
    """Vault's four reports each alarm it (upward, allowed); vault may answer each urgently, but
    the fourth distinct agent alarmed within the window is a broadcast: refused and audited."""
    team = ["scout", "ledger", "claw", "pulse"]
    asked = {}
    for name in team:
        sent = await business.client(name).do(
            Calls.send("vault", "lead went cold", subject="urgent", priority=Priority.URGENT)
        )
        asked[name] = sent.message.id
    vault = business.client("vault")
    for name in team[:3]:
        await vault.do(Calls.send(name, "on it", priority=Priority.URGENT, reply_to=asked[name]))
    with pytest.raises(McosError) as refused:
        await vault.do(
            Calls.send("pulse", "on it", priority=Priority.URGENT, reply_to=asked["pulse"])
        )
    assert refused.value.status == 403
    assert "messaging.fanout_max = 3" in refused.value.message
    # At normal priority the answer goes through: only the alarm is limited.
    await vault.do(Calls.send("pulse", "on it", reply_to=asked["pulse"]))
    records = await business.client().do(Calls.audit(actor="agent:vault", action="message.send"))
    assert [(r.outcome, r.targets.get("to")) for r in records] == [("refused", "pulse")]
