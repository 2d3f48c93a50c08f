"""Property: whatever agents without the required roles do, in any order, no P0 is confirmed
and no token revocation is approved. Driven through the real governance service and store."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcos.domain.authority import Matrix
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import McosError
from mcos.server.auth import Authenticator
from mcos.server.context import MissionControl, ServerSettings
from mcos.server.governance import Governance
from mcos.store import make_store
from mcos.store.protocol import AgentEntry, Directory

ROLES = st.sampled_from(["ops", "security", "cto", "comms", "orchestrator"])
SEVERITY = st.sampled_from(["P3", "P2", "P1", "P0"])
ACTION = st.one_of(
    st.tuples(st.just("report"), st.integers(0, 5), SEVERITY, st.integers(0, 2)),
    st.tuples(st.just("confirm"), st.integers(0, 5), st.integers(0, 5), SEVERITY),
    st.tuples(st.just("request"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("vote"), st.integers(0, 5), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("close"), st.integers(0, 5), st.integers(0, 5), st.booleans()),
)


async def _play(
    roles: list[str], actions: list[tuple[object, ...]], matrix: Matrix | None = None
) -> tuple[int, int]:
    """Run the actions; (confirmed P0 incidents, approved revocations)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(f"sqlite:///{Path(tmp) / 'g.db'}")
        await store.upgrade()
        await store.open()
        agents = [AgentEntry(f"a{i}", role, "h") for i, role in enumerate(roles)]
        await store.sync_directory(Directory(agents=agents, humans=["founder"], topics={}))
        config = ServerSettings(token_key=secrets.token_bytes(32),
                                human_roles={"founder": "founder"},
                                matrix=matrix or Matrix.build({}))  # fmt: skip
        mc = MissionControl(store=store, settings=config,
                            auth=Authenticator(store, config.token_key))  # fmt: skip
        gov = Governance(mc)
        who = [Principal(PrincipalKind.AGENT, a.name) for a in agents]
        try:
            for step in actions:
                kind, actor = step[0], who[int(step[1]) % len(who)]  # type: ignore[call-overload]
                incidents = await store.incidents(limit=50)
                requests = await store.approvals(limit=50)
                with contextlib.suppress(McosError):
                    if kind == "report":
                        await gov.report(actor, str(step[2]), f"obs {step[3]}", "e", "")
                    elif kind == "confirm" and incidents:
                        target = incidents[int(step[2]) % len(incidents)]  # type: ignore[call-overload]
                        await gov.confirm(actor, target.id, str(step[3]), "checked")
                    elif kind == "request":
                        await gov.request(actor, "revoke_token", {"token_id": int(step[2])},  # type: ignore[call-overload]
                                          "leaked", None, "")  # fmt: skip
                    elif kind == "vote" and requests:
                        target_r = requests[int(step[2]) % len(requests)]  # type: ignore[call-overload]
                        await gov.vote(actor, target_r.id, "approve" if step[3] else "deny", "r")
                    elif kind == "close" and incidents:
                        target = incidents[int(step[2]) % len(incidents)]  # type: ignore[call-overload]
                        state = "dismissed" if step[3] else "resolved"
                        await gov.close(actor, target.id, state, "done")
            p0 = [
                i for i in await store.incidents(limit=500)
                if i.severity == "P0" and i.state.value in ("confirmed", "escalated", "resolved")
            ]  # fmt: skip
            approved = [
                a for a in await store.approvals(state="approved", limit=500)
                if a.action == "revoke_token"
            ]  # fmt: skip
            return len(p0), len(approved)
        finally:
            await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROLES, min_size=1, max_size=5), st.lists(ACTION, min_size=1, max_size=25))
def test_agents_alone_never_reach_a_confirmed_p0(
    roles: list[str], actions: list[tuple[object, ...]]
) -> None:
    """No sequence of agent actions confirms a P0: its gate needs a human."""
    p0, _ = asyncio.run(_play(roles, actions))
    assert p0 == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["ops", "security", "cto", "comms"]), min_size=1, max_size=5),
    st.lists(ACTION, min_size=1, max_size=25),
)
def test_without_an_orchestrator_no_revocation_is_approved(
    roles: list[str], actions: list[tuple[object, ...]]
) -> None:
    """revoke_token needs role:orchestrator + role:security: lacking one, nothing passes."""
    _, approved = asyncio.run(_play(roles, actions))
    assert approved == 0


def test_the_harness_sees_a_violation_when_the_rules_allow_one() -> None:
    """Not vacuous: with a P0 gate weakened to the orchestrator alone, the same kind of play
    does confirm a P0, and the property would fail."""
    weak = Matrix.build({"declare_incident:P0": {"approve": "role:orchestrator"}})
    steps: list[tuple[object, ...]] = [("report", 1, "P0", 0), ("confirm", 0, 0, "P0")]
    assert asyncio.run(_play(["orchestrator", "security"], steps, weak)) == (1, 0)
    assert asyncio.run(_play(["orchestrator", "security"], steps)) == (0, 0)
