"""Governance as Mission Control enforces it: incidents at their gates, approvals by committee.

Every decision is the authority matrix's (``mcos.domain.authority``); this module applies it to
the stored incidents and requests, audits every refusal with the rule that refused it, and
sends the messages a decision implies (to a gate's confirmers, to the fleet, to a committee).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mcos.domain.approvals import Approval, ApprovalState, payload_hash
from mcos.domain.audit import AuditEvent
from mcos.domain.authority import Party, Quorum
from mcos.domain.incidents import (
    OPEN,
    SEVERITIES,
    Incident,
    IncidentState,
    broadcast,
    claimed,
    fingerprint,
    rank,
    reporters,
    votes_at,
)
from mcos.domain.messages import MessageKind, NewMessage, Priority
from mcos.domain.paging import PageKind
from mcos.domain.redaction import redact, scrub
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Conflict, Forbidden, InvalidRequest, NotFound, TooManyReports
from mcos.server.context import MissionControl
from mcos.store.protocol import NewApproval, NewIncident

SYSTEM = "mission-control"
PENDING = ApprovalState.PENDING
UNTRUSTED_REQUEST = "[raised from a turn holding untrusted content] "
"""The mark on the rationale of a request raised from a tainted turn (``tainted``): the
committee reads it (and, for agents, the request fenced as untrusted), and the requester's own
seat never counts towards its quorum."""


def raised_from_untrusted(request: Approval) -> bool:
    """Whether a request was raised from a turn holding untrusted content."""
    return request.rationale.startswith(UNTRUSTED_REQUEST)


@dataclass(frozen=True)
class Outcome:
    """What a governance call did, for the answer and the tests."""

    incident: Incident | None = None
    approval: Approval | None = None
    grouped: bool = False
    gate_met: bool = False
    notified: tuple[str, ...] = ()


class Governance:
    """The rules of one Mission Control, over its store."""

    def __init__(self, mc: MissionControl) -> None:
        self.mc = mc
        self.matrix = mc.settings.matrix

    # --- parties ------------------------------------------------------------------------------
    async def parties(self) -> list[Party]:
        """Every agent (with its role) and every human (with theirs) who can act or vote."""
        agents = [Party("agent", a.name, a.role) for a in await self.mc.store.list_agents()]
        humans = [Party("human", n, r) for n, r in sorted(self.mc.settings.human_roles.items())]
        return agents + humans

    async def party(self, caller: Principal) -> Party:
        """The caller as the matrix sees it. An operator token named X is human X only when X
        is a configured human; any other operator is a plain operator, whom no member spec
        matches (it votes, vetoes and acts alone on governed actions as nobody)."""
        if caller.kind is PrincipalKind.OPERATOR:
            role = self.mc.settings.human_roles.get(caller.name)
            if role is None:
                return Party("operator", caller.name, "operator")
            return Party("human", caller.name, role)
        for a in await self.mc.store.list_agents():
            if a.name == caller.name:
                return Party("agent", a.name, a.role)
        return Party("agent", caller.name, "")

    def _actor_party(self, actor: str, parties: list[Party]) -> Party | None:
        kind, _, name = actor.partition(":")
        wanted = "human" if kind == "operator" else kind
        return next((p for p in parties if p.kind == wanted and p.name == name), None)

    async def refuse(self, caller: Principal, action: str, rule: str, **targets: str) -> None:
        """Audit a refusal and raise 403 with the rule."""
        await self.mc.refuse(caller, action, rule, **targets)
        raise Forbidden(rule, rule=rule)

    @contextlib.asynccontextmanager
    async def conflicts_audited(
        self, caller: Principal, action: str, **targets: str
    ) -> AsyncIterator[None]:
        """A 409 from the store (a second vote, a second confirmation, a duplicate request, a
        race lost to another decision) is audited as refused, like a 403, then raised."""
        try:
            yield
        except Conflict as e:
            await self.mc.refuse(caller, action, e.message, **targets)
            raise

    async def _send(
        self,
        to: str,
        subject: str,
        body: str,
        *,
        priority: Priority,
        kind: MessageKind = MessageKind.ALERT,
        meta: dict[str, str],
    ) -> None:
        sent = await self.mc.store.send(
            NewMessage(
                sender=SYSTEM,
                recipient=to,
                kind=kind,
                priority=priority,
                subject=subject[:200],
                body=body,
                meta=meta,
            )
        )
        if self.mc.pager is not None and to in self.mc.settings.human_roles:
            await self.mc.pager.message_to_human(sent.message)

    # --- incidents ----------------------------------------------------------------------------
    async def report(
        self, caller: Principal, severity: str, summary: str, evidence: str, observation: str
    ) -> Outcome:
        """A report: P3 is logged by the reporter alone; above it, a hypothesis for the gate."""
        summary, evidence, observation = redact(summary), redact(evidence), redact(observation)
        if severity not in SEVERITIES:
            raise InvalidRequest(
                f"severity: {severity!r} is not one of P3, P2, P1, P0", field="severity"
            )
        limit = self.mc.settings.reports_per_hour
        if await self.mc.store.reports_since(caller.actor, 3600) >= limit:
            rule = f"at most {limit} incident reports per hour per reporter"
            await self.mc.refuse(caller, "incident.report", rule)
            raise TooManyReports(
                f"{caller.actor} has made {limit} reports this hour: {rule}", rule=rule
            )
        key = fingerprint(observation or summary)
        open_ = await self.mc.store.open_incident(key)
        if open_ is not None:
            async with self.conflicts_audited(caller, "incident.report", incident=str(open_.id)):
                grouped = await self.mc.store.transition_incident(
                    open_.id,
                    open_.state,
                    open_.state,
                    open_.severity,
                    (caller.actor, "grouped", f"{severity}: {summary}"),
                    more_reports=1,
                )
            await self._audit(caller, "incident.grouped", grouped, severity=severity)
            return Outcome(incident=grouped, grouped=True)
        me = await self.party(caller)
        alone = self.matrix.may_alone(f"declare_incident:{severity}", me) is None
        state = IncidentState.CONFIRMED if alone else IncidentState.REPORTED
        events = [(caller.actor, "reported", severity, summary)]
        if alone:
            events.append((caller.actor, "confirmed", severity, "logged by the reporter"))
        made = await self.mc.store.create_incident(
            NewIncident(severity, state.value, summary, evidence, caller.actor, key, tuple(events))
        )
        await self._audit(caller, "incident.reported", made, severity=severity)
        notified: tuple[str, ...] = ()
        if not alone:
            notified = await self._ask_gate(made, severity, exclude={caller.actor})
        elif broadcast(severity):
            notified = await self._broadcast(made)
        return Outcome(incident=made, gate_met=alone, notified=notified)

    async def _ask_gate(
        self, incident: Incident, severity: str, exclude: set[str]
    ) -> tuple[str, ...]:
        """An unconfirmed report reaches only those who can help confirm it at its gate: a
        message from Mission Control to each (not an alarm to the fleet), and a page to each
        human among them (once per incident and level, however often it is reported)."""
        item = f"declare_incident:{severity}"
        gate = self.matrix.gate(severity)
        parties = await self.parties()
        reporter = next((p for p in parties if _actor(p) in exclude), None)
        seat = reporter is not None and self.matrix.eligible(item, reporter)
        needed = gate.describe() if gate else "nobody"
        told = []
        for p in parties:
            if _actor(p) in exclude or not self.matrix.eligible(item, p):
                continue
            if gate is not None and not (seat or _serves(gate, p)):
                continue  # its vote could not count towards this gate
            subject = f"{severity} report awaiting confirmation: {incident.summary}"
            body = (
                f"Incident {incident.id}, reported by {incident.reporter} as {severity}. It is "
                f"a hypothesis until confirmed ({needed}"
                + (f", with {incident.reporter}'s report filling its own seat" if seat else "")
                + "). Check the evidence yourself, then confirm or dismiss it."
                f"\n\nEvidence:\n{incident.evidence}"
            )
            await self._send(
                p.name,
                subject,
                body,
                priority=Priority.URGENT if severity == "P0" else Priority.HIGH,
                meta={"incident": str(incident.id), "gate": severity},
            )
            if p.kind == "human" and self.mc.pager is not None:
                await self.mc.pager.page(
                    [p.name],
                    f"incident:{incident.id}:{severity}",
                    PageKind.P0 if severity == "P0" else PageKind.URGENT,
                    subject,
                    body,
                )
            told.append(p.name)
        return tuple(told)

    async def _broadcast(self, incident: Incident) -> tuple[str, ...]:
        """A confirmed P1 or P0 reaches every agent (as a finding in its next turn)."""
        events = await self.mc.store.incident_events(incident.id)
        involved = reporters(events) | {e.actor for e in events if e.action == "confirm"}
        told = []
        for a in await self.mc.store.list_agents():
            if f"agent:{a.name}" in involved:
                continue
            await self._send(
                a.name,
                f"Confirmed {incident.severity}: {incident.summary}",
                f"Incident {incident.id} is confirmed at {incident.severity}. Act only within "
                f"your role.\n\nEvidence:\n{incident.evidence}",
                priority=Priority.URGENT if incident.severity == "P0" else Priority.HIGH,
                meta={"incident": str(incident.id), "severity": incident.severity},
            )
            told.append(a.name)
        if incident.severity == "P0" and self.mc.pager is not None:
            await self.mc.pager.page(
                sorted(self.mc.settings.human_roles),
                f"incident:{incident.id}:P0",
                PageKind.P0,
                f"Confirmed P0: {incident.summary}",
                f"Incident {incident.id} is confirmed at P0.\n\nEvidence:\n{incident.evidence}",
            )
        return tuple(told)

    async def confirm(
        self, caller: Principal, incident_id: int, severity: str | None, reason: str
    ) -> Outcome:
        """A confirmation vote; when the gate's quorum is met, the incident is confirmed (or
        escalated) and, from P1 up, reaches the fleet."""
        reason = redact(reason)
        incident = await self._incident(incident_id)
        target = severity or incident.severity
        if target not in SEVERITIES[1:]:
            raise InvalidRequest(
                f"severity: confirm at P2, P1 or P0, not {target!r}", field="severity"
            )
        if incident.state not in OPEN:
            rule = (
                f"incident {incident_id} is {incident.state.value}: it can no longer be confirmed"
            )
            await self.refuse(caller, "incident.confirm", rule, incident=str(incident_id))
        if incident.state is not IncidentState.REPORTED and rank(target) <= rank(incident.severity):
            rule = (
                f"incident {incident_id} is already {incident.state.value} at {incident.severity}"
            )
            await self.refuse(caller, "incident.confirm", rule, incident=str(incident_id))
        events = await self.mc.store.incident_events(incident_id)
        if caller.actor in reporters(events):
            rule = "a reporter never confirms its own report"
            await self.refuse(caller, "incident.confirm", rule, incident=str(incident_id))
        me = await self.party(caller)
        if not self.matrix.may_vote(f"confirm_incident:{target}", me):
            rule = self.matrix.may_alone(f"confirm_incident:{target}", me) or (
                f"confirm_incident:{target} is not for {caller.actor}"
            )
            await self.refuse(caller, "incident.confirm", rule, incident=str(incident_id))
        async with self.conflicts_audited(caller, "incident.confirm", incident=str(incident_id)):
            await self.mc.store.record_incident_event(
                incident_id, caller.actor, "confirm", target, reason
            )
        await self._audit(caller, "incident.confirm_vote", incident, severity=target)
        events = await self.mc.store.incident_events(incident_id)
        parties = await self.parties()
        voters = [
            p
            for a in votes_at(events, target)
            if a not in reporters(events) and (p := self._actor_party(a, parties))
        ]  # a vote cast before its voter re-reported the observation no longer counts
        gate = self.matrix.gate(target)
        raised = [
            p for a in sorted(claimed(events, target)) if (p := self._actor_party(a, parties))
        ]
        if gate is None or not self.matrix.decided(
            f"declare_incident:{target}", voters, raised, parties
        ):
            return Outcome(incident=incident, gate_met=False)
        new_state = (
            IncidentState.CONFIRMED
            if incident.state is IncidentState.REPORTED
            else IncidentState.ESCALATED
        )
        async with self.conflicts_audited(caller, "incident.confirm", incident=str(incident_id)):
            moved = await self.mc.store.transition_incident(
                incident_id,
                incident.state.value,
                new_state.value,
                target,
                (caller.actor, new_state.value, f"gate {target} met: {gate.describe()}"),
            )
        await self._audit(caller, f"incident.{new_state.value}", moved, severity=target)
        notified = await self._broadcast(moved) if broadcast(target) else ()
        return Outcome(incident=moved, gate_met=True, notified=notified)

    async def close(self, caller: Principal, incident_id: int, state: str, reason: str) -> Outcome:
        """Resolve or dismiss: the incident's gate confirmers or a human, with a reason."""
        reason = redact(reason)
        incident = await self._incident(incident_id)
        if incident.state not in OPEN:
            rule = f"incident {incident_id} is already {incident.state.value}"
            await self.refuse(caller, f"incident.{state}", rule, incident=str(incident_id))
        if state == "resolved" and incident.state is IncidentState.REPORTED:
            rule = (
                f"incident {incident_id} was never confirmed: dismiss a report, resolve an incident"
            )
            await self.refuse(caller, "incident.resolved", rule, incident=str(incident_id))
        me = await self.party(caller)
        level = max(incident.severity, "P2", key=rank)
        if me.kind != "human" and not self.matrix.may_vote(f"confirm_incident:{level}", me):
            rule = f"only a {level} confirmer or a human may mark incident {incident_id} {state}"
            await self.refuse(caller, f"incident.{state}", rule, incident=str(incident_id))
        async with self.conflicts_audited(caller, f"incident.{state}", incident=str(incident_id)):
            moved = await self.mc.store.transition_incident(
                incident_id,
                incident.state.value,
                state,
                incident.severity,
                (caller.actor, state, reason),
            )
        await self._audit(caller, f"incident.{state}", moved, severity=incident.severity)
        return Outcome(incident=moved)

    async def _incident(self, incident_id: int) -> Incident:
        found = await self.mc.store.incident(incident_id)
        if found is None:
            raise NotFound(f"no incident {incident_id}", incident=incident_id)
        return found

    async def _audit(
        self, caller: Principal, action: str, incident: Incident, **detail: Any
    ) -> None:
        await self.mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action=action,
                targets={"incident": str(incident.id)},
                detail={"summary": incident.summary[:200], **detail},
            )
        )

    # --- approvals ----------------------------------------------------------------------------
    async def request(
        self,
        caller: Principal,
        action: str,
        payload: dict[str, Any],
        rationale: str,
        executor: str | None,
        constraints: str,
        report_every: str | None = None,
        *,
        tainted: bool = False,
    ) -> Outcome:
        """A request for a governed action, to the committee the matrix names.

        No secret-shaped string is stored: the payload is redacted first, so a payload that
        carries one can never be authorized (it no longer matches what was approved).

        ``tainted``: raised from a turn holding untrusted content. It may be raised (it is how
        such a turn gets the approval its action needs) but never serves itself: its rationale
        carries :data:`UNTRUSTED_REQUEST`, agents on the committee read it fenced as untrusted,
        and the requester's own seat never counts towards the quorum."""
        payload, rationale, constraints = scrub(payload), redact(rationale), redact(constraints)
        rule = self.matrix.rule(action)
        if tainted and not rationale.startswith(UNTRUSTED_REQUEST):
            rationale = UNTRUSTED_REQUEST + rationale
        if rule.approve is None:
            refusal = (
                f"{action} has no committee: only {', '.join(rule.alone) or 'nobody'} may do it"
            )
            await self.refuse(caller, "approval.request", refusal)
        assert rule.approve is not None
        if executor is not None and await self.mc.store.recipient_kind(executor) != "agent":
            raise InvalidRequest(f"executor: no agent {executor!r}", field="executor")
        async with self.conflicts_audited(caller, "approval.request"):
            made = await self.mc.store.create_approval(
                NewApproval(
                    action,
                    payload,
                    payload_hash(action, payload),
                    caller.actor,
                    rationale,
                    rule.approve.describe(),
                    executor,
                    constraints,
                    self.mc.settings.approval_expiry,
                    report_every,
                )
            )
        await self.mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="approval.requested",
                targets={"approval": str(made.id)},
                detail={"action": action, "quorum": made.quorum}
                | ({"untrusted": "true"} if tainted else {}),
            )
        )
        told = await self._ask_committee(made, rule.approve, exclude=caller.actor)

        return Outcome(approval=made, notified=told)

    async def _ask_committee(
        self, request: Approval, quorum: Quorum, exclude: str
    ) -> tuple[str, ...]:
        told = []
        for p in await self.parties():
            if f"{'agent' if p.kind == 'agent' else 'operator'}:{p.name}" == exclude:
                continue
            if _serves(quorum, p):
                await self._send(
                    p.name,
                    f"Approval needed: {request.action} (request {request.id})",
                    f"{request.requester} asks for {request.action}: {request.rationale}\n"
                    f"Payload: {request.payload}\nCommittee: {request.quorum}. Expires "
                    f"{request.expires_at:%Y-%m-%d %H:%M} UTC. Vote with a rationale.",
                    # An agent's request is its claim: it never arrives as an alarm.
                    priority=Priority.NORMAL
                    if request.requester.startswith("agent:")
                    else Priority.HIGH,
                    kind=MessageKind.REQUEST,
                    meta={"approval": str(request.id)}
                    # Its payload and rationale came from outside: fenced for an agent voter.
                    | ({"origin": "an approval request raised from untrusted content"}
                       if raised_from_untrusted(request) else {}),
                )  # fmt: skip
                told.append(p.name)
        return tuple(told)

    async def vote(self, caller: Principal, approval_id: int, vote: str, rationale: str) -> Outcome:
        """A member's vote, once, with its rationale; the quorum decides."""
        rationale = redact(rationale)
        request = await self._approval(approval_id)
        request = await self._expire_if_due(request)
        if request.state is not ApprovalState.PENDING:
            rule = f"request {approval_id} is {request.state.value}: votes are closed"
            await self.refuse(caller, "approval.vote", rule, approval=str(approval_id))
        if caller.actor == request.requester:
            rule = "the requester never votes on its own request"
            await self.refuse(caller, "approval.vote", rule, approval=str(approval_id))
        quorum = self.matrix.rule(request.action).approve
        me = await self.party(caller)
        if quorum is None or not _serves(quorum, me):
            rule = f"{caller.actor} is not on the committee for {request.action} ({request.quorum})"
            await self.refuse(caller, "approval.vote", rule, approval=str(approval_id))
        assert quorum is not None
        async with self.conflicts_audited(caller, "approval.vote", approval=str(approval_id)):
            await self.mc.store.add_vote(approval_id, caller.actor, vote, rationale)
        await self.mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="approval.vote",
                targets={"approval": str(approval_id)},
                detail={"vote": vote, "rationale": rationale[:500]},
            )
        )
        async with self.conflicts_audited(caller, "approval.vote", approval=str(approval_id)):
            return await self._tally(request, quorum, caller)

    async def _tally(self, request: Approval, quorum: Quorum, caller: Principal) -> Outcome:
        """Approved when the yes-votes decide it (the requester's request may fill its own
        seat, never alone); denied as soon as even every undecided member voting yes could not."""
        del quorum  # the matrix's rule of the action decides, as for incidents
        parties = await self.parties()
        votes = await self.mc.store.votes(request.id)
        yes = [
            p for v in votes if v.vote == "approve" if (p := self._actor_party(v.voter, parties))
        ]
        voted = {v.voter for v in votes}
        requester = [
            p
            for p in parties
            if _actor(p) == request.requester and not raised_from_untrusted(request)
        ]  # a request raised from untrusted content never fills its requester's seat
        if self.matrix.decided(request.action, yes, requester, parties):
            done = await self.mc.store.decide_approval(
                request.id, "approved", caller.actor, "quorum met"
            )
            done = await self._issue_directive(done)
            return Outcome(approval=done, gate_met=True)
        undecided = [
            p for p in parties if _actor(p) not in voted and _actor(p) != request.requester
        ]
        if not self.matrix.decided(request.action, yes + undecided, requester, parties):
            done = await self.mc.store.decide_approval(
                request.id, "denied", caller.actor, "the quorum can no longer be met"
            )
            await self._tell_requester(done)
            return Outcome(approval=done)
        return Outcome(approval=request)

    async def _issue_directive(self, request: Approval) -> Approval:
        if request.executor is None:
            await self._tell_requester(request)
            return request
        sent = await self.mc.store.send(
            NewMessage(
                sender=SYSTEM,
                recipient=request.executor,
                kind=MessageKind.DIRECTIVE,
                priority=Priority.HIGH,
                subject=f"Directive (approval {request.id}): {request.action}"[:200],
                body=f"Approved by {request.quorum}: {request.rationale}\n"
                f"Payload: {request.payload}\nConstraints: {request.constraints or 'none'}\n"
                + (
                    f"Reports: on the schedule {request.report_every}, to {request.requester}.\n"
                    if request.report_every
                    else ""
                )
                + "Acknowledge this directive (acknowledge_directive) before acting.",
                meta={"approval": str(request.id), "constraints": request.constraints[:500]}
                | ({"reports": request.report_every} if request.report_every else {}),
            )
        )
        linked = await self.mc.store.set_directive(request.id, sent.message.id)
        await self._tell_requester(linked)
        return linked

    async def _tell_requester(self, request: Approval) -> None:
        kind, _, name = request.requester.partition(":")
        del kind
        await self._send(
            name,
            f"Request {request.id} {request.state.value}: {request.action}",
            f"{request.action} was {request.state.value} ({request.reason or request.quorum})."
            # The exact payload approved: what the requester acts on with this approval's id.
            + (
                f"\nPayload: {json.dumps(request.payload, ensure_ascii=False, sort_keys=True)}"
                if request.state is ApprovalState.APPROVED
                else ""
            ),
            priority=Priority.NORMAL,
            kind=MessageKind.REPORT,
            meta={"approval": str(request.id)},
        )

    async def authorize(
        self,
        caller: Principal,
        action: str,
        payload: dict[str, Any],
        approval_id: int | None,
        *,
        tainted: bool = False,
    ) -> str:
        """``alone`` or ``approval N`` if the caller may do ``action`` now; else 403, audited.

        ``tainted`` (the caller's turn holds untrusted content): acting alone is not enough —
        only an approved request for this action and exactly this payload allows it."""
        me = await self.party(caller)
        refusal = self.matrix.may_alone(action, me)
        if tainted:
            refusal = (
                f"untrusted content is in {caller.actor}'s turn: {action} needs an approved "
                "request for exactly this payload" + ("" if refusal is None else f" ({refusal})")
            )
        elif refusal is None:
            await self.mc.store.record(
                AuditEvent(actor=caller.actor, action=f"authorized.{action}",
                           detail={"by": "alone"})
            )  # fmt: skip
            return "alone"
        request = None if approval_id is None else await self.mc.store.approval(approval_id)
        if (
            request is not None
            and request.action == action
            and request.state is ApprovalState.APPROVED
            and request.payload == payload
            and caller.actor in (request.requester, f"agent:{request.executor}")
        ):
            await self.mc.store.record(
                AuditEvent(actor=caller.actor, action=f"authorized.{action}",
                           targets={"approval": str(request.id)},
                           detail={"by": "approval", "untrusted": str(tainted).lower()})
            )  # fmt: skip
            return f"approval {request.id}"
        if tainted:
            given = {"approval": str(approval_id)} if approval_id is not None else {}
            await self.refuse(caller, f"authorize.{action}", refusal, untrusted="true", **given)
        await self.refuse(caller, f"authorize.{action}", refusal)
        return ""  # unreachable: refuse raises

    async def veto(self, caller: Principal, approval_id: int, reason: str) -> Outcome:
        """A human stops a request: while it is pending, and after it was approved until the
        executing agent acknowledges its directive — the directive is then withdrawn and the
        executor told. Once acknowledged, the veto is refused (409) with the reason: stopping
        work under way is a new directive, not a veto."""
        reason = redact(reason)
        me = await self.party(caller)
        if me.kind != "human":
            await self.refuse(
                caller, "approval.veto", "only a human may veto", approval=str(approval_id)
            )
        request = await self._expire_if_due(await self._approval(approval_id))
        if request.state is ApprovalState.PENDING:
            with contextlib.suppress(Conflict):
                done = await self.mc.store.decide_approval(
                    request.id, "vetoed", caller.actor, reason
                )
                return await self._vetoed(caller, done, reason, withdrawn=False)
            request = await self._approval(approval_id)  # decided meanwhile: judge it anew
        if request.state is ApprovalState.APPROVED and request.acknowledged_at is None:
            withdrawn = await self.mc.store.withdraw_approval(request.id, caller.actor, reason)
            if withdrawn is not None:
                return await self._vetoed(caller, withdrawn, reason, withdrawn=True)
            request = await self._approval(approval_id)  # acknowledged meanwhile
        if request.state is ApprovalState.APPROVED:
            rule = (
                f"request {approval_id} was approved and its directive acknowledged by "
                f"{request.executor} at {request.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC: a veto "
                "holds only until then; send the executor a new directive to stop the work"
            )
        else:
            rule = f"request {approval_id} is already {request.state.value}: nothing to veto"
        await self.mc.refuse(caller, "approval.veto", rule, approval=str(approval_id))
        raise Conflict(rule, approval=approval_id, state=request.state.value)

    async def _vetoed(
        self, caller: Principal, done: Approval, reason: str, *, withdrawn: bool
    ) -> Outcome:
        await self.mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="approval.vetoed",
                targets={"approval": str(done.id)},
                detail={"reason": reason[:500], "directive_withdrawn": str(withdrawn).lower()},
            )
        )
        told: list[str] = []
        if withdrawn and done.executor is not None:
            await self._send(
                done.executor,
                f"Directive withdrawn (approval {done.id}): {done.action}",
                f"{caller.actor} vetoed request {done.id} before you acknowledged its directive"
                + (f" (message {done.directive_id})" if done.directive_id else "")
                + f": {reason}\nDo not act on it; acknowledging it is refused.",
                priority=Priority.HIGH,
                kind=MessageKind.DIRECTIVE,
                meta={"approval": str(done.id), "withdrawn": "true"},
            )
            told.append(done.executor)
        await self._tell_requester(done)
        return Outcome(approval=done, notified=(*told, done.requester.partition(":")[2]))

    async def acknowledge(self, caller: Principal, approval_id: int) -> Outcome:
        """The executing agent acknowledges its directive; from then on a veto is refused."""
        request = await self._approval(approval_id)
        if request.executor is None or caller.actor != f"agent:{request.executor}":
            rule = "only the executing agent acknowledges a directive"
            await self.refuse(caller, "directive.acknowledge", rule, approval=str(approval_id))
        if request.state is not ApprovalState.APPROVED:
            rule = _no_directive(request)
            await self.refuse(caller, "directive.acknowledge", rule, approval=str(approval_id))
        done = await self.mc.store.acknowledge_directive(approval_id)
        if done is None:
            current = await self._approval(approval_id)
            if current.state is not ApprovalState.APPROVED:  # a veto won the race
                rule = _no_directive(current)
                await self.refuse(caller, "directive.acknowledge", rule, approval=str(approval_id))
            done = current  # acknowledged before: the same answer again
        await self.mc.store.record(
            AuditEvent(
                actor=caller.actor,
                action="directive.acknowledged",
                targets={"approval": str(approval_id)},
                detail={"constraints": request.constraints[:500]},
            )
        )
        return Outcome(approval=done)

    async def _approval(self, approval_id: int) -> Approval:
        found = await self.mc.store.approval(approval_id)
        if found is None:
            raise NotFound(f"no request {approval_id}", approval=approval_id)
        return found

    async def _expire_if_due(self, request: Approval) -> Approval:
        """A pending request past its expiry is expired, and the humans are told."""
        if (
            request.state is not ApprovalState.PENDING
            or await self.mc.store.now() < request.expires_at
        ):
            return request
        try:
            done = await self.mc.store.decide_approval(
                request.id, "expired", SYSTEM, "no quorum in time"
            )
        except Conflict:  # decided meanwhile (a vote, a veto, another server's sweep)
            return await self._approval(request.id)
        await self.mc.store.record(
            AuditEvent(
                actor=SYSTEM,
                action="approval.expired",
                targets={"approval": str(done.id)},
                detail={"action": done.action, "quorum": done.quorum},
            )
        )
        for human in self.mc.settings.human_roles:
            await self._send(
                human,
                f"Expired without a decision: {done.action} (request {done.id})",
                f"{done.requester} asked for {done.action}; the committee ({done.quorum}) did not "
                "decide in time. It is yours to decide or drop.",
                priority=Priority.HIGH,
                kind=MessageKind.REQUEST,
                meta={"approval": str(done.id)},
            )
        await self._tell_requester(done)
        return done

    async def expire_incident(self, incident: Incident) -> Incident | None:
        """A report nobody confirmed within ``incident_expiry`` is dismissed as expired (a
        terminal state), and its reporter told; None if it moved on meanwhile."""
        expiry = self.mc.settings.incident_expiry
        try:
            moved = await self.mc.store.transition_incident(
                incident.id,
                IncidentState.REPORTED.value,
                IncidentState.DISMISSED.value,
                incident.severity,
                (SYSTEM, "expired", f"not confirmed within {expiry}: dismissed as expired"),
            )
        except Conflict:
            return None
        await self.mc.store.record(
            AuditEvent(
                actor=SYSTEM,
                action="incident.expired",
                targets={"incident": str(moved.id)},
                detail={"summary": moved.summary[:200], "severity": moved.severity},
            )
        )
        reporter = moved.reporter.partition(":")[2]
        if await self.mc.store.recipient_kind(reporter) is not None:
            await self._send(
                reporter,
                f"Report expired unconfirmed: {moved.summary}",
                f"Incident {moved.id} ({moved.severity}) was not confirmed within {expiry} and "
                "is dismissed as expired. Report it again if it still holds, with new evidence.",
                priority=Priority.NORMAL,
                kind=MessageKind.REPORT,
                meta={"incident": str(moved.id)},
            )
        return moved

    async def sweep(self) -> int:
        """Bring every overdue item to a terminal state — pending requests past their expiry
        are expired, reports unconfirmed after ``incident_expiry`` dismissed as expired — and
        remind members who have not voted by half-time. Run periodically; safe from several
        servers at once (every step is a compare-and-set). How many items it closed."""
        n = 0
        while due := await self.mc.store.approvals_due(limit=200):
            closed = [r for r in due if (await self._expire_if_due(r)).state is not PENDING]
            n += len(closed)
            if not closed:
                break  # nothing it can move (another server is on it): next sweep
        older = self.mc.settings.incident_expiry.total_seconds()
        while stale := await self.mc.store.incidents_unconfirmed(older, limit=200):
            moved = [i for i in stale if await self.expire_incident(i) is not None]
            n += len(moved)
            if not moved:
                break  # another server is on them: next sweep
        now = await self.mc.store.now()
        for request in await self.mc.store.approvals(state="pending", limit=500):
            half = request.created_at + (request.expires_at - request.created_at) / 2
            if now >= half and await self.mc.store.mark_reminded(request.id):
                await self._remind(request)
        return n

    async def _remind(self, request: Approval) -> None:
        quorum = self.matrix.rule(request.action).approve
        if quorum is None:
            return
        voted = {v.voter for v in await self.mc.store.votes(request.id)}
        for p in await self.parties():
            actor = _actor(p)
            if actor in voted or actor == request.requester or not _serves(quorum, p):
                continue
            await self._send(
                p.name,
                f"Reminder: your vote on {request.action} (request {request.id})",
                f"{request.requester} asked for {request.action}: {request.rationale}\n"
                f"It expires {request.expires_at:%Y-%m-%d %H:%M} UTC and then goes to the humans.",
                priority=Priority.HIGH,
                kind=MessageKind.REQUEST,
                meta={"approval": str(request.id)},
            )


def _no_directive(request: Approval) -> str:
    if request.state is ApprovalState.VETOED:
        return (
            f"request {request.id} was vetoed by {request.decided_by}: its directive is "
            f"withdrawn ({request.reason or 'no reason given'})"
        )
    return f"request {request.id} is {request.state.value}: no directive to acknowledge"


def _actor(p: Party) -> str:
    return f"{'agent' if p.kind == 'agent' else 'operator'}:{p.name}"


def _serves(quorum: Quorum, party: Party) -> bool:
    """Whether the party could fill some seat of the quorum."""
    return quorum.admits(party)
