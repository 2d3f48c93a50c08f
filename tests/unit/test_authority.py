"""The authority matrix: member specs, quorums, who may act alone, and the fleet's invariants."""

from __future__ import annotations

from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcos.domain.authority import (
    BUILTIN_ACTIONS,
    DEFAULT_RULES,
    Matrix,
    Party,
    Quorum,
    _absent,
    concerns,
    could_be_satisfied_by_one_agent,
    matches,
    normalize_spec,
    parse_quorum,
    requires,
    requires_party,
    satisfied,
    undecidable,
    validate,
)

JARVIS = Party.agent("jarvis", "orchestrator")
DONNA = Party.agent("donna", "comms")
ELON = Party.agent("elon", "cto")
GENE = Party.agent("gene", "ops")
FORGE = Party.agent("forge", "product-engineer")
ATLAS = Party.agent("atlas", "cio")
SENTINEL = Party.agent("sentinel", "security")
VAULT = Party.agent("vault", "revenue-lead")
FOUNDER = Party.human("founder", "founder")
OPERATOR = Party.human("olga", "operator")

FIELD_FLEET = [JARVIS, DONNA, ELON, GENE, FORGE, ATLAS, SENTINEL, VAULT, FOUNDER]
"""The fleet of the field report."""

DEFAULT = Matrix.build({})


def problems(overrides: dict[str, dict[str, object]], fleet: list[Party]) -> list[str]:
    return validate(Matrix.build(overrides), fleet)


class TestMatches:
    """Each member spec names the parties it says, and only those."""

    @pytest.mark.parametrize(
        ("spec", "yes", "no"),
        [
            ("founder", [FOUNDER], [OPERATOR, JARVIS, Party.agent("x", "founder")]),
            ("human", [FOUNDER, OPERATOR], [JARVIS]),
            ("human:olga", [OPERATOR], [FOUNDER, Party.agent("olga", "ops")]),
            ("role:security", [SENTINEL], [JARVIS, Party.human("sam", "security")]),
            ("agent:jarvis", [JARVIS], [ELON, Party.human("jarvis")]),
            ("jarvis", [JARVIS], [ELON]),
            ("agent:*", [JARVIS, ELON], [FOUNDER]),
        ],
    )
    def test_spec_matches_exactly_its_parties(
        self, spec: str, yes: list[Party], no: list[Party]
    ) -> None:
        """``role:`` matches agents only; ``founder`` only founder humans; names are exact."""
        assert all(matches(spec, p) for p in yes)
        assert not any(matches(spec, p) for p in no)

    def test_bare_word_is_an_agent_name_not_a_role(self) -> None:
        """``orchestrator`` is the agent called orchestrator; the explicit form says so."""
        assert normalize_spec("orchestrator") == "agent:orchestrator"
        assert not matches("orchestrator", JARVIS)
        assert matches("orchestrator", Party.agent("orchestrator", "ops"))

    @pytest.mark.parametrize("bad", ["", "Role:x", "role:", "human:*", "role:*", "a b", "bot:x"])
    def test_bad_spec_lists_the_forms(self, bad: str) -> None:
        """A spec that is not one of the forms is refused with the forms shown."""
        with pytest.raises(ValueError, match=r"not a member spec .*role:ROLE"):
            normalize_spec(bad)


class TestParseQuorum:
    """Every quorum form parses to one canonical text; bad text says what is wrong."""

    @pytest.mark.parametrize(
        ("text", "canonical", "size"),
        [
            ("role:security", "role:security", 1),
            ("  role:security  ", "role:security", 1),
            ("2 of [jarvis, elon, gene]", "2 of [agent:jarvis, agent:elon, agent:gene]", 2),
            ("2 of [role:security]", "2 of [role:security]", 2),
            ("1 of [human]", "human", 1),
            ("1 of [human, role:cto]", "1 of [human, role:cto]", 1),
            ("all of [founder, role:cto]", "founder + role:cto", 2),
            ("role:orchestrator + human", "role:orchestrator + human", 2),
            ("orchestrator+human", "agent:orchestrator + human", 2),
            ("human + human", "human + human", 2),
            ("2  of  [ a ,b ]", "2 of [agent:a, agent:b]", 2),
        ],
    )
    def test_forms(self, text: str, canonical: str, size: int) -> None:
        """Each accepted form gives its canonical text back, and that text parses the same."""
        q = parse_quorum(text)
        assert q.describe() == canonical
        assert parse_quorum(q.describe()) == q
        assert q.size == size

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("", "empty"),
            ("all", "bare 'all'"),
            ("all of []", "empty entry"),
            ("2 of [a, , b]", "empty entry"),
            ("0 of [a, b]", "'0' is not a count"),
            ("some of [a, b]", "'some' is not a count"),
            ("2 of a, b", "a list is written"),
            ("[a, b]", "a list is written"),
            ("a + ", "nothing on one side"),
            ("2 of [a, agent:a]", "agent:a is listed twice"),
            ("jarvis + agent:jarvis", "one voter cannot fill two places"),
            ("role:Security", "not a member spec"),
        ],
    )
    def test_errors_say_what_and_show_the_forms(self, text: str, problem: str) -> None:
        """A bad quorum names the problem and lists every accepted form."""
        with pytest.raises(ValueError, match="not a quorum") as err:
            parse_quorum(text)
        assert problem in str(err.value)
        assert "N of [a, b, c]" in str(err.value)
        assert "all of [a, b, c]" in str(err.value)


class TestSatisfied:
    """A quorum counts distinct voters, each for one term, never the excluded ones."""

    def test_single_spec(self) -> None:
        """One matching voter meets a single-spec quorum; a non-matching one does not."""
        q = parse_quorum("role:security")
        assert satisfied(q, [SENTINEL])
        assert not satisfied(q, [JARVIS, ELON])

    def test_n_of_counts_distinct_voters(self) -> None:
        """The same voter voting twice is one vote."""
        q = parse_quorum("2 of [jarvis, elon, gene]")
        assert not satisfied(q, [JARVIS, JARVIS])
        assert satisfied(q, [JARVIS, GENE])
        assert not satisfied(q, [JARVIS, SENTINEL])

    def test_n_of_a_role_needs_that_many_holders(self) -> None:
        """``2 of [role:security]`` needs two security agents."""
        q = parse_quorum("2 of [role:security]")
        assert not satisfied(q, [SENTINEL])
        assert satisfied(q, [SENTINEL, Party.agent("warden", "security")])

    def test_requester_is_excluded(self) -> None:
        """The requester's own vote does not count towards its request."""
        q = parse_quorum("role:security")
        assert not satisfied(q, [SENTINEL], exclude={SENTINEL.key})
        two = parse_quorum("2 of [agent:*]")
        assert not satisfied(two, [JARVIS, ELON], exclude={("agent", "elon")})

    def test_plus_needs_a_different_voter_per_term(self) -> None:
        """One voter who could fill either term fills only one."""
        q = parse_quorum("human + human")
        assert not satisfied(q, [FOUNDER])
        assert satisfied(q, [FOUNDER, OPERATOR])

    def test_plus_finds_the_assignment_that_works(self) -> None:
        """A greedy pick would give the founder to ``human``; matching finds the fit."""
        q = parse_quorum("human + founder")
        assert satisfied(q, [FOUNDER, OPERATOR])
        assert not satisfied(q, [FOUNDER, JARVIS])

    def test_all_of(self) -> None:
        """``all of`` needs one voter for each listed spec."""
        q = parse_quorum("all of [founder, role:cto]")
        assert satisfied(q, [ELON, FOUNDER])
        assert not satisfied(q, [ELON, JARVIS])

    def test_p0_gate_needs_an_orchestrator_and_a_human(self) -> None:
        """Two agents, or a human alone, do not make a P0."""
        gate = DEFAULT.gate("P0")
        assert gate is not None
        assert satisfied(gate, [JARVIS, FOUNDER])
        assert not satisfied(gate, [JARVIS, SENTINEL, ELON])
        assert not satisfied(gate, [FOUNDER, OPERATOR])
        assert not satisfied(gate, [JARVIS, FOUNDER], exclude={FOUNDER.key})


class TestOneAgent:
    """Whether a single agent of the fleet could meet a quorum by itself."""

    def test_one_agent(self) -> None:
        """A role one agent holds can; two seats or a human seat cannot."""
        fleet = [JARVIS, SENTINEL, FOUNDER]
        assert could_be_satisfied_by_one_agent(parse_quorum("role:orchestrator"), fleet)
        assert could_be_satisfied_by_one_agent(parse_quorum("1 of [founder, agent:*]"), fleet)
        assert not could_be_satisfied_by_one_agent(parse_quorum("jarvis + role:security"), fleet)
        assert not could_be_satisfied_by_one_agent(parse_quorum("2 of [agent:*]"), fleet)
        assert not could_be_satisfied_by_one_agent(parse_quorum("founder"), fleet)


class TestRequires:
    """Whether every way to meet a quorum needs someone matching a spec."""

    @pytest.mark.parametrize(
        "text",
        ["founder", "role:cto + founder", "all of [founder, role:cto]", "2 of [founder, jarvis]"],
    )
    def test_founder_required(self, text: str) -> None:
        """The founder cannot be left out of these."""
        assert requires(parse_quorum(text), "founder")

    @pytest.mark.parametrize(
        "text",
        [
            "human",
            "human:olga",
            "role:cto",
            "2 of [founder, jarvis, elon]",
            "1 of [founder, human]",
        ],
    )
    def test_founder_not_required(self, text: str) -> None:
        """Each of these can be met without the founder, in some fleet."""
        assert not requires(parse_quorum(text), "founder")

    def test_broader_specs(self) -> None:
        """A human is required by anything made only of human terms, an agent likewise."""
        assert requires(parse_quorum("human:olga"), "human")
        assert requires(parse_quorum("2 of [founder, human:olga]"), "human")
        assert not requires(parse_quorum("2 of [human, role:ops]"), "human")
        assert requires(parse_quorum("role:ops + human"), "agent:*")
        assert requires(parse_quorum("3 of [jarvis, elon, role:ops]"), "role:ops")

    def test_in_a_fleet(self) -> None:
        """``requires_party`` judges one fleet: there ``human`` may mean the founder."""
        only_founder = [JARVIS, FOUNDER]

        def is_founder(p: Party) -> bool:
            return matches("founder", p)

        assert requires_party(parse_quorum("human"), only_founder, is_founder)
        assert not requires_party(parse_quorum("human"), [*only_founder, OPERATOR], is_founder)


class TestBuild:
    """The fleet file's ``[authority]`` tables update the defaults, and bad ones are named."""

    def test_defaults(self) -> None:
        """Every built-in action has a rule, and the gates are SPEC §3.4's."""
        assert set(DEFAULT.rules) == set(BUILTIN_ACTIONS) == set(DEFAULT_RULES)
        assert [str(DEFAULT.gate(s)) for s in ("P2", "P1", "P0")] == [
            "role:security",
            "role:orchestrator",
            "role:orchestrator + human",
        ]
        assert DEFAULT.gate("P3") is None

    def test_override_one_key_keeps_the_other(self) -> None:
        """A missing key keeps its default."""
        m = Matrix.build({"revoke_token": {"approve": "2 of [human]"}})
        assert m.rule("revoke_token").alone == ("human",)
        assert str(m.rule("revoke_token").approve) == "2 of [human]"
        assert m.rule("production_deploy") == DEFAULT_RULES["production_deploy"]

    def test_empty_approve_means_nobody_approves(self) -> None:
        """``approve = ""`` leaves only those listed alone."""
        m = Matrix.build({"issue_directive": {"approve": ""}})
        assert m.rule("issue_directive").approve is None

    def test_own_action(self) -> None:
        """A fleet may govern its own actions."""
        m = Matrix.build({"refund.large": {"alone": ["founder"], "approve": "role:cio + human"}})
        assert m.may_alone("refund.large", FOUNDER) is None
        assert m.may_vote("refund.large", ATLAS)

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (
                {"production_deploy": {"approve": "2 of ["}},
                "authority.\"production_deploy\".approve: '2 of [' is not a quorum",
            ),
            ({"production_deploy": {"aprove": "founder"}}, 'authority."production_deploy".aprove'),
            (
                {"revoke_token": {"alone": ["Human"]}},
                "authority.\"revoke_token\".alone: 'Human' is not a member spec",
            ),
            ({"revoke_token": {"alone": "human"}}, "expected a list of member specs"),
            ({"revoke_token": {"approve": 2}}, "expected a quorum text"),
            ({"declare_incident:P1": {"approve": ""}}, "an incident gate cannot be empty"),
            ({"declare_incident:p0": {}}, "did you mean declare_incident:P0"),
            ({"Deploy": {}}, 'authority."Deploy": not an action name'),
        ],
    )
    def test_errors_name_action_and_key(self, overrides: dict[str, object], message: str) -> None:
        """A wrong table names where it is in the fleet file."""
        with pytest.raises(ValueError, match="authority") as err:
            Matrix.build(overrides)  # type: ignore[arg-type]
        assert message in str(err.value)

    def test_unknown_action_lists_the_known(self) -> None:
        """Asking for a rule that does not exist lists those that do."""
        with pytest.raises(ValueError, match=r"unknown action 'deploy'; known actions: .*revoke"):
            DEFAULT.rule("deploy")


class TestMayAlone:
    """Who may act without approval, and the refusal naming the rule otherwise."""

    def test_p3_self_logged(self) -> None:
        """Any agent or human may log a P3."""
        assert DEFAULT.may_alone("declare_incident:P3", GENE) is None
        assert DEFAULT.may_alone("declare_incident:P3", OPERATOR) is None

    def test_p0_never_alone(self) -> None:
        """Nobody declares P0 alone; the refusal shows the gate."""
        expected = "declare_incident:P0 may not be done alone (needs role:orchestrator + human)"
        assert DEFAULT.may_alone("declare_incident:P0", JARVIS) == expected
        assert DEFAULT.may_alone("declare_incident:P0", FOUNDER) == expected

    def test_revoke_token(self) -> None:
        """A human revokes alone; an agent is told who may and which quorum approves."""
        assert DEFAULT.may_alone("revoke_token", OPERATOR) is None
        assert DEFAULT.may_alone("revoke_token", SENTINEL) == (
            "revoke_token may not be done alone by agent:sentinel "
            "(only human; otherwise needs role:orchestrator + role:security)"
        )

    def test_no_approver(self) -> None:
        """With no approve quorum, only those listed may act."""
        m = Matrix.build({"issue_directive": {"approve": ""}})
        assert m.may_alone("issue_directive", ELON) == (
            "issue_directive may only be done by role:orchestrator, human, not by agent:elon"
        )


class TestMayVote:
    """Whose vote counts on a request or a confirmation."""

    def test_approve_terms(self) -> None:
        """Anyone matching a term of the approve quorum may vote."""
        assert DEFAULT.may_vote("revoke_token", SENTINEL)
        assert not DEFAULT.may_vote("revoke_token", ELON)
        assert DEFAULT.may_vote("production_deploy", FOUNDER)
        assert not DEFAULT.may_vote("production_deploy", OPERATOR)

    def test_confirmations_use_the_confirm_list(self) -> None:
        """Who may confirm a P2: security, the orchestrator, a human; not the CTO."""
        assert DEFAULT.may_vote("confirm_incident:P2", SENTINEL)
        assert DEFAULT.may_vote("confirm_incident:P2", JARVIS)
        assert DEFAULT.may_vote("confirm_incident:P2", OPERATOR)
        assert not DEFAULT.may_vote("confirm_incident:P2", ELON)
        assert not DEFAULT.may_vote("confirm_incident:P0", SENTINEL)


class TestValidate:
    """The fleet's invariants, and typos that would silently disable a gate."""

    def test_default_matrix_over_the_field_fleet_is_clean(self) -> None:
        """The defaults fit the field report's fleet."""
        assert validate(DEFAULT, FIELD_FLEET) == []

    def test_p0_alone_for_agents_rejected(self) -> None:
        """``agent:*`` may not declare P0 alone."""
        found = problems({"declare_incident:P0": {"alone": ["agent:*"]}}, FIELD_FLEET)
        assert found == [
            'authority."declare_incident:P0".alone: agent:* lets a single agent declare a P0 '
            "incident alone; list humans only"
        ]

    def test_p0_alone_for_humans_rejected(self) -> None:
        """No single principal declares a P0, a human neither: a second must confirm it."""
        found = problems({"declare_incident:P0": {"alone": ["founder"]}}, FIELD_FLEET)
        assert found == [
            'authority."declare_incident:P0".alone: founder lets a single human declare a P0 '
            "incident alone; a P0 always needs a second principal to confirm it, list nobody"
        ]

    def test_p0_approved_by_one_agent_rejected(self) -> None:
        """A P0 gate one orchestrator can meet alone is refused."""
        found = problems({"declare_incident:P0": {"approve": "role:orchestrator"}}, FIELD_FLEET)
        assert len(found) == 1
        assert found[0].startswith('authority."declare_incident:P0".approve: role:orchestrator')
        assert "one agent (jarvis)" in found[0]

    def test_revoke_by_one_agent_rejected(self) -> None:
        """No single agent may revoke a token, alone or by approval."""
        found = problems(
            {"revoke_token": {"alone": ["role:security"], "approve": "1 of [human, role:ops]"}},
            FIELD_FLEET,
        )
        assert [p.split(":")[0] for p in found] == [
            'authority."revoke_token".alone',
            'authority."revoke_token".approve',
        ]

    def test_deploy_without_founder_rejected(self) -> None:
        """A production deploy the CTO can approve alone is refused."""
        found = problems({"production_deploy": {"approve": "role:cto"}}, FIELD_FLEET)
        assert found[0].startswith('authority."production_deploy".approve: role:cto can approve')
        # ... and the only CTO's own request would dead-end: nobody else may vote on it.
        assert len(found) == 2
        assert "raised by agent:elon could never be decided" in found[1]

    def test_deploy_by_humans_rejected(self) -> None:
        """Only the founder may deploy alone; ``role:cto + founder`` is a fine committee."""
        found = problems(
            {"production_deploy": {"alone": ["human"], "approve": "role:cto + founder"}},
            FIELD_FLEET,
        )
        assert len(found) == 1
        assert "human lets someone other than the founder deploy" in found[0]

    def test_fleet_without_security_cannot_confirm_p2(self) -> None:
        """Without a security agent the P2 gate waits for one: a warning, and such reports
        expire; revocation requests (which need role:security) likewise."""
        fleet = [p for p in FIELD_FLEET if p is not SENTINEL]
        assert validate(DEFAULT, fleet) == []  # a warning, not an error
        found = concerns(DEFAULT, fleet)
        assert len(found) == 2
        assert found[0].startswith(
            'authority."declare_incident:P2".approve: a P2 incident could never be decided yet'
        )
        assert "no agent has role security" in found[0]
        assert found[1].startswith('authority."revoke_token".approve: a request for revoke_token')

    def test_gate_voters_must_be_allowed_to_confirm(self) -> None:
        """A gate whose voters the confirm list shuts out dead-ends: refused, naming the key."""
        matrix = Matrix.build({"confirm_incident:P1": {"alone": ["human"]}})
        found = validate(matrix, FIELD_FLEET)
        assert len(found) == 1
        assert found[0].startswith(
            'authority."declare_incident:P1".approve: a P1 incident raised by agent:jarvis, '
        )
        assert "could never be decided: its voters (human:founder)" in found[0]

    def test_typos_in_names_are_reported(self) -> None:
        """A name or role nobody has is reported, with a hint for a bare role word."""
        found = problems(
            {
                "declare_incident:P1": {"approve": "orchestrator"},
                "send_external_email": {"alone": ["role:coms", "human:olga"]},
            },
            FIELD_FLEET,
        )
        assert (
            'authority."declare_incident:P1".approve: agent:orchestrator: no agent is called '
            "orchestrator; a bare word is an agent name, for any orchestrator agent write "
            "role:orchestrator"
        ) in found
        assert 'authority."send_external_email".alone: role:coms: no agent has role coms' in found
        assert 'authority."send_external_email".alone: human:olga: no human is called olga' in found

    def test_untouched_defaults_do_not_need_every_role(self) -> None:
        """A small fleet without a comms agent is fine: the default rule was not written by it."""
        assert validate(DEFAULT, [JARVIS, SENTINEL, FOUNDER]) == []


ROLES = ("orchestrator", "security", "ops", "cto")


@st.composite
def fleets(draw: st.DrawFn) -> list[Party]:
    """One to six agents with random roles, and up to two humans."""
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=6))
    agents = [Party.agent(f"a{i}", role) for i, role in enumerate(roles)]
    human_roles = draw(st.lists(st.sampled_from(("founder", "operator")), max_size=2))
    return agents + [Party.human(f"h{i}", role) for i, role in enumerate(human_roles)]


def specs_for(fleet: list[Party]) -> st.SearchStrategy[str]:
    named = [f"agent:{p.name}" for p in fleet if p.kind == "agent"]
    named += [f"human:{p.name}" for p in fleet if p.kind == "human"]
    fixed = ["founder", "human", "agent:*", *(f"role:{r}" for r in ROLES)]
    return st.sampled_from(fixed + named)


class TestProperties:
    """Invariants over random small fleets and votes."""

    @settings(max_examples=150)
    @given(st.data())
    def test_no_agents_alone_make_a_p0_and_no_one_agent_revokes(self, data: st.DataObject) -> None:
        """Under the defaults no set of agents meets the P0 gate, and no single agent revokes."""
        fleet = data.draw(fleets())
        agents = [p for p in fleet if p.kind == "agent"]
        voters = data.draw(st.lists(st.sampled_from(agents), max_size=8))
        gate = DEFAULT.gate("P0")
        assert gate is not None
        assert not satisfied(gate, voters)
        revoke = DEFAULT.rule("revoke_token").approve
        assert revoke is not None
        for agent in agents:
            assert not satisfied(revoke, [agent, agent])
            assert DEFAULT.may_alone("revoke_token", agent) is not None
            assert DEFAULT.may_alone("declare_incident:P0", agent) is not None

    @settings(max_examples=150)
    @given(st.data())
    def test_n_of_counts_each_voter_once(self, data: st.DataObject) -> None:
        """``N of [...]`` is met exactly when N distinct eligible voters voted, repeats or not."""
        fleet = data.draw(fleets())
        specs = data.draw(st.lists(specs_for(fleet), min_size=1, max_size=3, unique=True))
        need = data.draw(st.integers(1, 5))
        q = parse_quorum(f"{need} of [{', '.join(specs)}]")
        voters = data.draw(st.lists(st.sampled_from(fleet), max_size=10))
        eligible = {v.key for v in voters if q.admits(v)}
        assert satisfied(q, voters) == (len(eligible) >= need)

    @settings(max_examples=150)
    @given(st.data())
    def test_plus_matches_like_brute_force(self, data: st.DataObject) -> None:
        """``a + b (+ c)`` is met exactly when some assignment gives each term its own voter."""
        fleet = data.draw(fleets())
        terms = data.draw(st.lists(specs_for(fleet), min_size=1, max_size=3))
        try:
            q = parse_quorum(" + ".join(terms))
        except ValueError:
            return  # the same named voter twice: refused at parse time
        voters = data.draw(st.lists(st.sampled_from(fleet), max_size=8))
        distinct = list({v.key: v for v in voters}.values())
        expected = any(
            all(matches(t, v) for t, v in zip(q.specs, pick, strict=True))
            for pick in permutations(distinct, len(q.specs))
        )
        assert satisfied(q, voters) == expected

    @settings(max_examples=150)
    @given(st.data())
    def test_requires_holds_in_every_fleet(self, data: st.DataObject) -> None:
        """What ``requires`` says is needed in any fleet is needed in this one; texts round-trip."""
        fleet = data.draw(fleets())
        specs = data.draw(st.lists(specs_for(fleet), min_size=1, max_size=3, unique=True))
        text = data.draw(
            st.sampled_from(
                [" + ".join(specs), f"{data.draw(st.integers(1, 3))} of [{', '.join(specs)}]"]
            )
        )
        q = parse_quorum(text)
        assert parse_quorum(q.describe()) == q
        target = data.draw(specs_for(fleet))
        if requires(q, target):
            assert requires_party(q, fleet, lambda p: matches(target, p))


def test_quorum_is_plain_data() -> None:
    """A quorum compares and hashes by value, so rules can be compared with the defaults."""
    assert parse_quorum("all of [human, role:ops]") == Quorum(("human", "role:ops"))
    assert len({parse_quorum("human"), parse_quorum("1 of [human]")}) == 1


class TestUndecidableAtScale:
    """Items that could dead-end are found per kind of party, as if asked for each party."""

    @settings(max_examples=150)
    @given(st.data())
    def test_same_findings_as_asking_every_party(self, data: st.DataObject) -> None:
        """Random quorums over random fleets (named parties included): the same dead ends as
        asking :meth:`Matrix.decidable` of every party in turn."""
        fleet = data.draw(fleets())
        overrides: dict[str, dict[str, object]] = {}
        for action in data.draw(st.lists(st.sampled_from(["deploy", "spend"]), unique=True)):
            terms = data.draw(st.lists(specs_for(fleet), min_size=1, max_size=3, unique=True))
            need = data.draw(st.integers(1, 3))
            overrides[action] = {"approve": f"{need} of [{', '.join(terms)}]"}
        matrix = Matrix.build(overrides)
        expected = []
        for item in matrix.items():
            quorum = matrix.rule(item).approve
            assert quorum is not None
            stuck = [
                p
                for p in fleet
                if matrix.may_alone(item, p) is not None and not matrix.decidable(item, p, fleet)
            ]
            if stuck and not _absent(quorum, fleet):
                expected.append(", ".join(str(p) for p in stuck))
        found = undecidable(matrix, fleet)
        assert len(found) == len(expected)
        for line, who in zip(found, expected, strict=True):
            assert f"raised by {who} could never" in line

    def test_five_hundred_agents_of_one_role(self) -> None:
        """A large fleet is checked in one pass per kind of party: a 500-agent fleet of one role
        is judged like a fleet of one agent of that role (it was seconds of CPU each load)."""
        many = [Party.agent(f"agent{i:03d}", "ops") for i in range(500)]
        one = [many[0]]
        for fleet in ([*many, JARVIS, SENTINEL, FOUNDER], [*one, JARVIS, SENTINEL, FOUNDER]):
            assert validate(DEFAULT, fleet) == []
