"""Safety and liveness of the authority matrix, over random fleets and every matrix the loader
accepts: no solo P0, revocation or deploy without the founder; every item decidable by the
fleet other than whoever raised it. And the harness catches a weakened rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, Phase, assume, find, given, settings
from hypothesis import strategies as st

from mcos.domain import authority
from mcos.domain.authority import Matrix, Party, Quorum, concerns, satisfied, validate

ROLES = ("orchestrator", "security", "ops", "cto")
SPECS = ("founder", "human", "agent:*", *(f"role:{r}" for r in ROLES), "agent:a0", "human:h0")


@st.composite
def fleets(draw: st.DrawFn) -> list[Party]:
    """One to five agents (one-member roles are common), and zero to three humans."""
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=5))
    humans = draw(st.lists(st.sampled_from(("founder", "operator")), max_size=3))
    return [Party.agent(f"a{i}", r) for i, r in enumerate(roles)] + [
        Party.human(f"h{i}", r) for i, r in enumerate(humans)
    ]


@st.composite
def full_fleets(draw: st.DrawFn) -> list[Party]:
    """A fleet with an orchestrator, a security agent and a founder (each possibly the only
    one of its kind), and random others."""
    extra = draw(fleets())
    base = [Party.agent("orch", "orchestrator"), Party.agent("sec", "security")]
    return [*base, *extra, Party.human("boss", "founder")]


@st.composite
def quorums(draw: st.DrawFn) -> str:
    terms = draw(st.lists(st.sampled_from(SPECS), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        return " + ".join(terms)
    return f"{draw(st.integers(1, 3))} of [{', '.join(terms)}]"


GOVERNED = (
    "declare_incident:P2",
    "declare_incident:P1",
    "declare_incident:P0",
    "confirm_incident:P1",
    "confirm_incident:P0",
    "revoke_token",
    "production_deploy",
    "send_external_email",
)


@st.composite
def matrices(draw: st.DrawFn, actions: Sequence[str] = GOVERNED) -> Matrix:
    """The defaults with random overrides of ``actions``: alone lists, approve quorums."""
    overrides: dict[str, dict[str, object]] = {}
    for action in draw(st.lists(st.sampled_from(actions), max_size=4, unique=True)):
        table: dict[str, object] = {}
        if draw(st.booleans()):
            table["alone"] = draw(st.lists(st.sampled_from(SPECS), max_size=2, unique=True))
        if not action.startswith("confirm_incident:") and draw(st.booleans()):
            table["approve"] = draw(quorums())
        overrides[action] = table
    try:
        return Matrix.build(overrides)
    except ValueError:
        assume(False)
        raise


@st.composite
def accepted(draw: st.DrawFn, actions: Sequence[str] = GOVERNED) -> tuple[Matrix, list[Party]]:
    """A fleet and a matrix the loader accepts for it (``validate`` finds nothing)."""
    fleet = draw(fleets())
    matrix = draw(st.one_of(st.just(Matrix.build({})), matrices(actions)))
    assume(validate(matrix, fleet) == [])
    return matrix, fleet


def safety_violations(matrix: Matrix, fleet: Sequence[Party]) -> list[str]:
    """Every way one principal alone (one agent, for a revocation; anyone but the founder,
    for a deploy) could bring about a P0, a revocation or a production deploy."""
    found: list[str] = []
    p0, revoke, deploy = "declare_incident:P0", "revoke_token", "production_deploy"
    for x in fleet:
        if matrix.may_alone(p0, x) is None:
            found.append(f"{x} declares a P0 alone")
        if matrix.decided(p0, [x], [x]):
            found.append(f"{x} confirms its own P0")
        if x.kind == "agent":
            if matrix.may_alone(revoke, x) is None:
                found.append(f"{x} revokes alone")
            if matrix.decided(revoke, [x], [x]) or matrix.decided(revoke, [x]):
                found.append(f"{x} gets a revocation approved by itself")
            if matrix.decided(p0, [x]):
                found.append(f"{x}'s vote alone confirms a P0")
        founder = x.kind == "human" and x.role == "founder"
        if not founder and matrix.may_alone(deploy, x) is None:
            found.append(f"{x} deploys to production without the founder")
    others = [p for p in fleet if not (p.kind == "human" and p.role == "founder")]
    for r in others:
        if matrix.decided(deploy, others, [r]):
            found.append(f"a deploy {r} asked for is approved without the founder")
    return found


def dead_ends(matrix: Matrix, fleet: Sequence[Party]) -> list[str]:
    """Items someone may raise that the rest of the fleet could never decide, except those
    the loader warned about (a quorum naming someone the fleet does not have: they expire)."""
    warned = {c.split(":", 2)[0] + ":" + c.split(":", 2)[1] for c in concerns(matrix, fleet)}
    found: list[str] = []
    for item in matrix.items():
        if any(w.startswith(f'authority."{item}"') for w in warned):
            continue
        for r in fleet:
            if matrix.may_alone(item, r) is not None and not matrix.decided(
                item, matrix.confirmers(item, r, fleet), [r]
            ):
                found.append(f"{item} raised by {r}")
    return found


class TestSafety:
    """No matrix the loader accepts lets one principal reach a P0, a revocation, a deploy."""

    @settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
    @given(accepted())
    def test_no_solo_p0_revocation_or_deploy(self, case: tuple[Matrix, list[Party]]) -> None:
        """Whatever the accepted matrix and fleet, nobody reaches them alone."""
        matrix, fleet = case
        assert safety_violations(matrix, fleet) == []

    @settings(max_examples=200)
    @given(fleets(), st.data())
    def test_agents_alone_never_confirm_a_default_p0(
        self, fleet: list[Party], data: st.DataObject
    ) -> None:
        """Under the defaults a P0 needs a human, as reporter or as voter, whoever reports."""
        agents = [p for p in fleet if p.kind == "agent"]
        voters = data.draw(st.lists(st.sampled_from(agents), max_size=6))
        reporters = data.draw(st.lists(st.sampled_from(agents), max_size=2))
        assert not Matrix.build({}).decided("declare_incident:P0", voters, reporters)


class TestLiveness:
    """Every item someone may raise can be decided by the others; a quorum naming someone the
    fleet lacks is warned about (and such items expire: see the store tests)."""

    @settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
    @given(accepted())
    def test_every_item_is_decidable_by_the_others(self, case: tuple[Matrix, list[Party]]) -> None:
        """For every item and every reporter of any role, the other confirmers decide it."""
        matrix, fleet = case
        assert dead_ends(matrix, fleet) == []

    @settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
    @given(accepted())
    def test_warnings_are_only_for_missing_members(self, case: tuple[Matrix, list[Party]]) -> None:
        """What the loader only warns about is truly out of reach: even the whole fleet voting
        could not meet the quorum."""
        matrix, fleet = case
        for warning in concerns(matrix, fleet):
            item = warning.split('"')[1]
            quorum = matrix.rule(item).approve
            assert quorum is not None
            assert not satisfied(quorum, [p for p in fleet if matrix.eligible(item, p)])

    @settings(max_examples=200)
    @given(full_fleets())
    def test_the_defaults_never_dead_end_a_full_fleet(self, fleet: list[Party]) -> None:
        """A fleet with an orchestrator, a security agent and a founder loads under the
        defaults — one-member roles and a lone human included."""
        assert validate(Matrix.build({}), fleet) == []
        assert concerns(Matrix.build({}), fleet) == []

    def test_the_issues_dead_ends_are_decided(self) -> None:
        """The only orchestrator's P1 by a human; the only human's P0 by the orchestrator."""
        jarvis, sentinel = Party.agent("jarvis", "orchestrator"), Party.agent("s", "security")
        founder = Party.human("founder", "founder")
        fleet = [jarvis, sentinel, founder]
        m = Matrix.build({})
        assert m.confirmers("declare_incident:P1", jarvis, fleet) == [founder]
        assert m.decided("declare_incident:P1", [founder], [jarvis])
        assert m.confirmers("declare_incident:P0", founder, fleet) == [jarvis]
        assert m.decided("declare_incident:P0", [jarvis], [founder])
        assert not m.decided("declare_incident:P0", [sentinel], [jarvis])  # needs a human

    def test_where_another_human_exists_a_humans_p0_needs_them(self) -> None:
        """The reporter's seat is for liveness only: with a second human, the founder's own P0
        is confirmed by the orchestrator *and* that human, not by the orchestrator alone."""
        jarvis, sentinel = Party.agent("jarvis", "orchestrator"), Party.agent("s", "security")
        founder, cofounder = Party.human("founder", "founder"), Party.human("ana", "human")
        fleet = [jarvis, sentinel, founder, cofounder]
        m, p0 = Matrix.build({}), "declare_incident:P0"
        assert not m.decided(p0, [jarvis], [founder], fleet)
        assert m.decided(p0, [jarvis, cofounder], [founder], fleet)
        assert m.decidable(p0, founder, fleet)
        assert m.decided(p0, [jarvis], [founder], [jarvis, sentinel, founder])  # the only human


def _without_reporter_seat(
    quorum: Quorum,
    voters: Sequence[Party],
    reporters: Sequence[Party] = (),
    *,
    others_suffice: bool = False,
) -> bool:
    """The old rule: reporters excluded, their report counts for nothing."""
    del others_suffice
    keys = {r.key for r in reporters}
    return satisfied(quorum, [v for v in voters if v.key not in keys])


def _seat_without_a_second(
    quorum: Quorum,
    voters: Sequence[Party],
    reporters: Sequence[Party] = (),
    *,
    others_suffice: bool = False,
) -> bool:
    """Weakened: the reporter's seat counts even when nobody else voted."""
    del others_suffice
    keys = {r.key for r in reporters}
    return satisfied(quorum, [*reporters, *(v for v in voters if v.key not in keys)])


def _reporter_votes(
    quorum: Quorum,
    voters: Sequence[Party],
    reporters: Sequence[Party] = (),
    *,
    others_suffice: bool = False,
) -> bool:
    """Weakened: the reporter's own vote counts."""
    del reporters, others_suffice
    return satisfied(quorum, voters)


Mutant = Callable[..., bool]


class TestTheHarnessCatchesWeakenedRules:
    """Not vacuous: with the rule weakened (or the old rule back), the properties above find a
    counterexample among the fleets and matrices they generate."""

    @pytest.mark.parametrize("mutant", [_seat_without_a_second, _reporter_votes])
    def test_a_weakened_rule_breaks_safety(
        self, mutant: Mutant, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reporter deciding its own item is found as a solo P0 or revocation."""
        monkeypatch.setattr(authority, "decides", mutant)
        # A counterexample must exist, not be the smallest: no shrinking phase, which took
        # 5 to 40 s of the test (any one found is asserted below all the same).
        example = find(
            accepted(("declare_incident:P0", "revoke_token")),
            lambda c: safety_violations(*c) != [],
            settings=settings(max_examples=3000, database=None, phases=[Phase.generate],
                              suppress_health_check=list(HealthCheck)),
        )  # fmt: skip
        assert safety_violations(*example)

    def test_the_old_rule_dead_ends(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the reporter's seat the defaults dead-end a fleet with one orchestrator."""
        monkeypatch.setattr(authority, "decides", _without_reporter_seat)
        example = find(
            full_fleets(),
            lambda f: validate(Matrix.build({}), f) != [],
            settings=settings(max_examples=3000, database=None, phases=[Phase.generate]),
        )
        assert any("could never be decided" in p for p in validate(Matrix.build({}), example))
