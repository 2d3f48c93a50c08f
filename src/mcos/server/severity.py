"""Severity on every path of the send route, and the ping-pong loop breaker.

The rules are pure (``mcos.domain.severity``, ``mcos.domain.pingpong``); this module applies
them to a caller's sends: refusals are audited with the rule (403, or 429 for a rate), every
message that reaches an agent is counted for the ping-pong rule, and a loop pauses its agents
together and tells their managers once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mcos.api_models import SendRequest
from mcos.domain.agent_state import AgentStatus
from mcos.domain.approvals import ApprovalState
from mcos.domain.audit import AuditEvent
from mcos.domain.messages import MessageKind, NewMessage, Priority, RecipientKind, SendResult
from mcos.domain.pingpong import Hop, caught_by
from mcos.domain.severity import (
    BROADCAST_ACTION,
    RESERVED_META,
    Answered,
    SendLimits,
    direct_alarm_refusal,
    fanout_over,
    is_alarm,
    pair_over,
)
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden, TooManyMessages
from mcos.server.context import MissionControl
from mcos.server.governance import SYSTEM, Governance

PAUSED_BY = "mission-control"
"""``info.paused_by`` of a pause Mission Control set: only an operator lifts it."""


def _now() -> datetime:
    return datetime.now(UTC)


async def gate_sends(
    mc: MissionControl, caller: Principal, requests: Sequence[SendRequest]
) -> None:
    """Refuse (audited) what an agent may not send: reserved marks, alarms beyond its reach,
    more messages to one recipient than the pair limit. Humans and operators pass."""
    if caller.kind is not PrincipalKind.AGENT:
        return
    for i, r in enumerate(requests):
        reserved = sorted(RESERVED_META & r.meta.keys())
        if reserved:
            where = (f"messages[{i}]." if len(requests) > 1 else "") + f"meta.{reserved[0]}"
            rule = f"{where}: only Mission Control marks a message as an incident or a gate's"
            rule += " request"
            await mc.refuse(caller, "message.send", rule, to=r.to)
            raise Forbidden(rule, rule=rule, field=where)
    now = _now()
    limits = _configure(mc)
    alarmed = await _gate_alarms(mc, caller, requests, now)
    counts: dict[str, int] = {}
    for r in requests:
        counts[r.to] = counts.get(r.to, 0) + 1
    for to, adding in counts.items():
        over = pair_over(
            mc.windows.pairs.get((caller.name, to), ()),
            now,
            limits.pair_window,
            limits.pair_max,
            adding,
        )
        if over is not None:
            rule = (
                f"at most {limits.pair_max} messages from one agent to one recipient within "
                f"{limits.pair_window} (messaging.pair_max)"
            )
            await mc.refuse(caller, "message.send", rule, to=to)
            raise TooManyMessages(f"{caller.name} → {to}: {over} messages; {rule}", rule=rule)
    for to, adding in counts.items():
        mc.windows.sent(now, caller.name, to, adding)
    for to in alarmed:
        mc.windows.alarmed(now, caller.name, to)


def _configure(mc: MissionControl) -> SendLimits:
    """Size the windows for the settings (cheap; settings do not change while serving)."""
    limits, loop = mc.settings.send_limits, mc.settings.pingpong
    longest = max(limits.fanout_window, limits.pair_window, loop.window)
    mc.windows.configure(longest)
    return limits


async def _gate_alarms(
    mc: MissionControl, caller: Principal, requests: Sequence[SendRequest], now: datetime
) -> list[str]:
    """Refuse the alarms the caller may not send; return the agents it alarms directly (for
    the fan-out window)."""
    alarms = [r for r in requests if is_alarm(r.priority)]
    if not alarms:
        return []
    gov = Governance(mc)
    me = await gov.party(caller)
    refusal = mc.settings.matrix.may_alone(BROADCAST_ACTION, me)
    if refusal is None:
        return []  # the orchestrator (by default) may alarm anyone
    kinds = {r.to: await mc.store.recipient_kind(r.to) for r in alarms}
    agents = [r.to for r in alarms if kinds[r.to] is RecipientKind.AGENT]
    limits = mc.settings.send_limits
    why = ""
    if any(k is RecipientKind.TOPIC for k in kinds.values()):
        topic = next(r.to for r in alarms if kinds[r.to] is RecipientKind.TOPIC)
        why = f"an {alarms[0].priority.value} message to the topic {topic} is a broadcast"
    elif len(set(agents)) > 1:
        why = f"one send alarming {len(set(agents))} agents is a broadcast"
    elif agents and (
        n := fanout_over(
            mc.windows.alarms.get(caller.name, ()),
            agents,
            now,
            limits.fanout_window,
            limits.fanout_max,
        )
    ):
        why = (
            f"alarming {n} distinct agents within {limits.fanout_window} is a broadcast "
            f"(messaging.fanout_max = {limits.fanout_max})"
        )
    if why:
        if await _approved(mc, caller, alarms):
            return []
        rule = f"{why}: {refusal}"
        await mc.refuse(
            caller,
            "message.send",
            rule,
            governed=BROADCAST_ACTION,
            to=",".join(dict.fromkeys(r.to for r in alarms)),
        )
        raise Forbidden(rule, rule=rule)
    for r in alarms:
        kind = kinds[r.to]
        if kind is None:
            continue  # no such recipient: the store answers 404
        answered = None
        if r.reply_to is not None:
            m = await mc.store.get_message(r.reply_to)
            answered = Answered(m.sender, m.recipient, m.priority)
        reason = direct_alarm_refusal(
            caller.name,
            _manager(mc, caller.name),
            r.to,
            kind,
            r.priority,
            answered,
            _reports(mc, caller.name),
        )
        if reason is not None:
            await mc.refuse(caller, "message.send", reason, governed=BROADCAST_ACTION, to=r.to)
            raise Forbidden(reason, rule=reason)
    return agents


def _manager(mc: MissionControl, agent: str) -> str | None:
    directory = mc.settings.directory
    if directory is None:
        return None
    return next((a.reports_to for a in directory.agents if a.name == agent), None)


def _reports(mc: MissionControl, agent: str) -> set[str]:
    """The agents that report to ``agent``."""
    directory = mc.settings.directory
    return {a.name for a in (directory.agents if directory else ()) if a.reports_to == agent}


async def _approved(mc: MissionControl, caller: Principal, alarms: Sequence[SendRequest]) -> bool:
    """Whether every alarm names (``meta.approval``) an approved ``broadcast_urgent`` request of
    the caller for its recipient (payload ``{"to": NAME}``)."""
    for r in alarms:
        ref = r.meta.get("approval", "")
        request = await mc.store.approval(int(ref)) if ref.isdigit() else None
        if (
            request is None
            or request.action != BROADCAST_ACTION
            or request.state is not ApprovalState.APPROVED
            or request.requester != caller.actor
            or request.payload.get("to") != r.to
        ):
            return False
        await mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action=f"authorized.{BROADCAST_ACTION}",
                targets={"approval": str(request.id)},
                detail={"to": r.to},
            )
        )
    return True


async def after_sends(
    mc: MissionControl, caller: Principal, results: Sequence[SendResult]
) -> tuple[str, ...]:
    """Count what reached agents; pause a ping-pong loop it closes.

    Returns the agents paused (empty: none)."""
    now = _now()
    _configure(mc)
    loop = mc.settings.pingpong
    agents = await _agent_names(mc) if results else frozenset()
    from_agent = caller.kind is PrincipalKind.AGENT
    paused: tuple[str, ...] = ()
    for result in results:
        if not result.created:
            continue
        m = result.message
        if m.recipient_kind is RecipientKind.TOPIC:
            directory = mc.settings.directory
            reached = [
                s
                for s in (directory.topics.get(m.recipient, ()) if directory else ())
                if s in agents
            ]
        else:
            reached = [m.recipient] if m.recipient in agents else []
        # Judged on the message's own date (Mission Control's clock, as stored), so the rule
        # sees the same time as every other judgement of the bus.
        at = m.created_at
        for name in reached:
            outside = not from_agent or m.sender not in agents or "channel" in m.meta
            mc.windows.reached(Hop(at, m.sender, name, outside=outside))
        if (
            from_agent
            and m.recipient in agents
            and not paused
            and mc.windows.sent_since(m.recipient, at - loop.window)
        ):
            newest = Hop(at, m.sender, m.recipient)
            group = caught_by(newest, mc.windows.inbound, at, loop)
            if group:
                paused = await _pause(mc, sorted(group), now)
    return paused


async def _agent_names(mc: MissionControl) -> frozenset[str]:
    """The fleet's agents: the directory's (no store round trip on every send)."""
    if mc.settings.directory is not None:
        return mc.settings.directory.agent_names
    return frozenset(a.name for a in await mc.store.list_agents())


def outside_input(mc: MissionControl, agent: str, at: datetime) -> None:
    """Input from outside the fleet's agents (a channel item, stored ``at``) reached ``agent``:
    progress."""
    mc.windows.reached(Hop(at, agent, agent, outside=True))


async def _pause(mc: MissionControl, group: list[str], now: datetime) -> tuple[str, ...]:
    """Pause the loop's agents together (deliveries stay queued) and tell their managers once."""
    states = {s.name: s for s in await mc.store.agent_states()}
    if all(
        (s := states.get(a)) is not None
        and s.state == AgentStatus.PAUSED.value
        and s.info.get("paused_by") == PAUSED_BY
        for a in group
    ):
        return ()
    rule = mc.settings.pingpong
    names = ", ".join(group)
    why = (
        f"paused by Mission Control: {names} exchanged {rule.turns} or more messages within "
        f"{rule.window} with no outside progress (ping-pong); messages to them wait queued — "
        "resume with `mcos agent resume`"
    )
    mc.windows.forget(group)
    for a in group:
        await mc.store.set_agent_state(
            a,
            AgentStatus.PAUSED.value,
            why,
            None,
            {"paused_by": PAUSED_BY, "rule": "ping-pong", "with": [g for g in group if g != a]},
        )
    await mc.store.record(
        AuditEvent(
            actor=f"system:{SYSTEM}",
            action="agent.paused",
            targets={"agents": names},
            detail={"rule": "ping-pong", "why": why},
        )
    )
    directory = mc.settings.directory
    members = [a for a in (directory.agents if directory else ()) if a.name in group]
    managers = sorted({a.reports_to for a in members if a.reports_to is not None})
    told = managers or sorted(mc.settings.human_roles)
    for manager in told:
        sent = await mc.store.send(
            NewMessage(
                sender=SYSTEM,
                recipient=manager,
                kind=MessageKind.REPORT,
                priority=Priority.HIGH,
                subject=f"Paused (ping-pong): {names}"[:200],
                body=why,
                meta={"paused": names},
            )
        )
        if mc.pager is not None and manager in mc.settings.human_roles:
            await mc.pager.message_to_human(sent.message)
    return tuple(group)


async def held_paused(mc: MissionControl, agent: str) -> bool:
    """Whether Mission Control holds ``agent`` paused (only an operator lifts that)."""
    for s in await mc.store.agent_states([agent]):
        if s.name == agent:
            return s.state == AgentStatus.PAUSED.value and s.info.get("paused_by") == PAUSED_BY
    return False
