"""The authority matrix: who may do a governed action alone, and which quorum must approve it.

Pure functions over plain data (the fleet's parties, the votes cast), so Mission Control, the CLI's
checks and the tests reach the same decision from the same inputs.

A **member spec** names who may act or vote:

- ``founder`` — any human whose role is ``founder``; ``human`` — any human;
  ``human:NAME`` — that human;
- ``role:ROLE`` — any *agent* with that role (a human's role never matches ``role:``);
- ``agent:NAME`` or a bare ``NAME`` — that agent; ``agent:*`` — any agent.

A bare word other than ``founder``/``human`` is always an agent **name**, never a role:
``orchestrator + human`` needs the agent *called* ``orchestrator``; write
``role:orchestrator + human`` for "any orchestrator and a human". Specs are kept in their explicit
form (``agent:orchestrator``), so every message shows which reading was taken, and
:func:`validate` reports a name that no agent has, pointing at the role.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

PartyKind = Literal["agent", "human", "operator"]
"""``operator``: an operator token whose name is no configured human — no spec matches it."""
SpecKind = Literal["founder", "human", "named_human", "role", "agent", "named_agent"]

SPEC_FORMS = "founder, human, human:NAME, role:ROLE, agent:NAME, agent:* or a bare agent NAME"
"""The accepted member specs, as error messages show them."""
QUORUM_FORMS = (
    "a single spec (role:security), N of [a, b, c] (N distinct voters from the list), "
    "all of [a, b, c] (one voter for each) or a + b (+ c …) (one voter for each)"
)
"""The accepted quorum texts, as error messages show them."""
SEVERITIES = ("P0", "P1", "P2", "P3")
ACTION_NAME = re.compile(r"^[a-z][a-z0-9_.:-]*$")
"""What the fleet file's own action names look like (built-in ones are spelled as listed)."""

_NAME = r"[a-z][a-z0-9_-]{0,62}"
_SPEC = re.compile(rf"^(?:(?P<prefix>human|role|agent):)?(?P<value>{_NAME}|\*)$")
_LIST = re.compile(r"^(?P<count>\S+) of ?\[(?P<items>.*)\]$")


@dataclass(frozen=True)
class Party:
    """Someone who may act or vote: an agent with its role, or a human (founder, operator)."""

    kind: PartyKind
    name: str
    role: str

    @classmethod
    def agent(cls, name: str, role: str) -> Party:
        """An agent of the fleet."""
        return cls("agent", name, role)

    @classmethod
    def human(cls, name: str, role: str = "operator") -> Party:
        """A human of the fleet; ``role`` is ``founder`` or ``operator``."""
        return cls("human", name, role)

    @property
    def key(self) -> tuple[str, str]:
        """Who this is, whatever the role: a voter counts once per key."""
        return (self.kind, self.name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class _Spec:
    """A parsed member spec; ``value`` is the name or role it is about, if any."""

    kind: SpecKind
    value: str = ""

    @property
    def side(self) -> PartyKind:
        """Whether the spec can only match agents or only humans."""
        return "human" if self.kind in ("founder", "human", "named_human") else "agent"

    @property
    def text(self) -> str:
        """The canonical, explicit form."""
        prefix = {"named_human": "human:", "role": "role:", "named_agent": "agent:"}
        if self.kind in prefix:
            return prefix[self.kind] + self.value
        return "agent:*" if self.kind == "agent" else self.kind

    @property
    def identity(self) -> tuple[str, str] | None:
        """The one voter the spec can ever match, when it names one."""
        return (self.side, self.value) if self.kind in ("named_human", "named_agent") else None

    def admits(self, party: Party) -> bool:
        if party.kind != self.side:  # a plain operator (no configured human) matches no spec
            return False
        if self.kind in ("named_human", "named_agent"):
            return party.name == self.value
        if self.kind == "role":
            return party.role == self.value
        if self.kind == "founder":
            return party.role == "founder"
        return True

    def implies(self, other: _Spec) -> bool:
        """Whether every party this spec matches, in any fleet, also matches ``other``."""
        if self == other:
            return True
        return other.kind in ("human", "agent") and other.side == self.side


@lru_cache(maxsize=1024)
def _spec(text: str) -> _Spec:
    t = text.strip()
    if t == "founder":
        return _Spec("founder")
    if t == "human":
        return _Spec("human")
    m = _SPEC.match(t)
    if m is None or (m["value"] == "*" and m["prefix"] != "agent"):
        msg = f"{text!r} is not a member spec (use {SPEC_FORMS})"
        raise ValueError(msg)
    prefix, value = m["prefix"], m["value"]
    if prefix == "human":
        return _Spec("named_human", value)
    if prefix == "role":
        return _Spec("role", value)
    return _Spec("agent") if value == "*" else _Spec("named_agent", value)


def normalize_spec(text: str) -> str:
    """The explicit form of a member spec (``jarvis`` → ``agent:jarvis``); ValueError if bad."""
    return _spec(text).text


def matches(spec: str, party: Party) -> bool:
    """Whether ``party`` is someone ``spec`` names (``role:`` matches agents only)."""
    return _spec(spec).admits(party)


@dataclass(frozen=True)
class Quorum:
    """Which distinct voters together approve. Build it with :func:`parse_quorum`.

    ``need`` is None when each spec needs its own voter (``a + b``, ``all of [a, b]``, or a
    single spec); an int N when any N distinct voters each matching some spec will do
    (``N of [a, b, c]``). Specs are in their explicit form.
    """

    specs: tuple[str, ...]
    need: int | None = None

    def describe(self) -> str:
        """The canonical text: ``parse_quorum(q.describe()) == q``."""
        if self.need is None:
            return " + ".join(self.specs)
        return f"{self.need} of [{', '.join(self.specs)}]"

    def admits(self, party: Party) -> bool:
        """Whether ``party`` matches any term, i.e. its vote can count."""
        return any(matches(s, party) for s in self.specs)

    @property
    def size(self) -> int:
        """How many distinct voters it takes."""
        return len(self.specs) if self.need is None else self.need

    def __str__(self) -> str:
        return self.describe()


def parse_quorum(text: str) -> Quorum:
    """Read a quorum text (see :data:`QUORUM_FORMS`); a ValueError says what is wrong and how."""
    try:
        return _parse_quorum(" ".join(text.split()))
    except ValueError as e:
        msg = f"{text!r} is not a quorum: {e}; use {QUORUM_FORMS}"
        raise ValueError(msg) from None


def _parse_quorum(t: str) -> Quorum:
    if not t:
        msg = "it is empty"
        raise ValueError(msg)
    if t == "all":
        msg = "a bare 'all' does not say of whom: write all of [a, b, c]"
        raise ValueError(msg)
    if m := _LIST.match(t):
        items = [i.strip() for i in m["items"].split(",")]
        if not all(items):
            msg = "the list has an empty entry"
            raise ValueError(msg)
        specs = tuple(normalize_spec(i) for i in items)
        if m["count"] == "all":
            return _each(specs)
        if not m["count"].isdigit() or int(m["count"]) < 1:
            msg = f"{m['count']!r} is not a count: write a number from 1 up, or all"
            raise ValueError(msg)
        twice = _first_repeat(specs)
        if twice is not None:
            msg = f"{twice} is listed twice"
            raise ValueError(msg)
        need = int(m["count"])
        return Quorum(specs) if need == 1 and len(specs) == 1 else Quorum(specs, need)
    if "[" in t or "]" in t or "of" in t.split():
        msg = "a list is written N of [a, b] or all of [a, b]"
        raise ValueError(msg)
    terms = [x.strip() for x in t.split("+")]
    if not all(terms):
        msg = "a '+' has nothing on one side"
        raise ValueError(msg)
    return _each(tuple(normalize_spec(x) for x in terms))


def _each(specs: tuple[str, ...]) -> Quorum:
    twice = _first_repeat([s for s in specs if _spec(s).identity is not None])
    if twice is not None:
        msg = f"{twice} appears twice, but one voter cannot fill two places"
        raise ValueError(msg)
    return Quorum(specs)


def _first_repeat(items: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def _distinct(voters: Sequence[Party], exclude: AbstractSet[tuple[str, str]]) -> list[Party]:
    """Each voter once (the first vote of a key wins), without the excluded ones."""
    seen: dict[tuple[str, str], Party] = {}
    for v in voters:
        if v.key not in exclude:
            seen.setdefault(v.key, v)
    return list(seen.values())


def _assign(terms: Sequence[_Spec], voters: Sequence[Party]) -> bool:
    """Whether every term gets its own voter: bipartite matching by augmenting paths."""
    if len(voters) < len(terms):
        return False
    fits = [[i for i, v in enumerate(voters) if t.admits(v)] for t in terms]
    holder: dict[int, int] = {}  # voter index → the term it fills

    def place(term: int, tried: set[int]) -> bool:
        for i in fits[term]:
            if i in tried:
                continue
            tried.add(i)
            if i not in holder or place(holder[i], tried):
                holder[i] = term
                return True
        return False

    return all(place(t, set()) for t in range(len(terms)))


def satisfied(
    quorum: Quorum,
    voters: Sequence[Party],
    *,
    exclude: AbstractSet[tuple[str, str]] = frozenset(),
) -> bool:
    """Whether the distinct ``voters`` meet ``quorum``.

    A voter counts once however often it votes, and never for two terms at once; voters whose
    ``(kind, name)`` is in ``exclude`` (the requester, the reporter) do not count at all.
    """
    distinct = _distinct(voters, exclude)
    if quorum.need is None:
        return _assign([_spec(s) for s in quorum.specs], distinct)
    return sum(1 for v in distinct if quorum.admits(v)) >= quorum.need


def decides(
    quorum: Quorum,
    voters: Sequence[Party],
    reporters: Sequence[Party] = (),
    *,
    others_suffice: bool = False,
) -> bool:
    """Whether the ``voters`` decide an item that ``reporters`` raised (reported, requested).

    A reporter never votes on its own item: its votes among ``voters`` do not count. Where the
    rest of the fleet could not meet the quorum without it (``others_suffice`` False), its
    report fills the one seat it could have filled as a voter — pass only reporters who are
    eligible voters — but never alone: at least one other voter must have voted, and reporter
    plus voters together must meet the quorum. So where another human exists, a human's own P0
    needs the orchestrator *and* that human; the only human's P0 is confirmed by the
    orchestrator; the only orchestrator's P1 by any other P1 confirmer (a human); and no item is
    ever decided by one principal. Pass only eligible voters.
    """
    exclude = {r.key for r in reporters}
    others = _distinct(voters, exclude)
    if satisfied(quorum, others):
        return True
    if not others or others_suffice:
        return False
    return any(quorum.admits(r) and satisfied(quorum, [r, *others]) for r in reporters)


def could_be_satisfied_by_one_agent(quorum: Quorum, parties: Sequence[Party]) -> bool:
    """Whether some single agent among ``parties`` meets ``quorum`` alone."""
    return _lone_agent(quorum, parties) is not None


def _lone_agent(quorum: Quorum, parties: Sequence[Party]) -> Party | None:
    return next((p for p in parties if p.kind == "agent" and satisfied(quorum, [p])), None)


def requires_party(
    quorum: Quorum, parties: Sequence[Party], predicate: Callable[[Party], bool]
) -> bool:
    """Whether, within this fleet, every way to meet ``quorum`` includes a voter that fits.

    Brute force over the fleet: the parties that do not fit cannot meet it without help. True
    when the fleet cannot meet the quorum at all (nothing then happens without such a voter).
    """
    return not satisfied(quorum, [p for p in parties if not predicate(p)])


def requires(quorum: Quorum, spec: str) -> bool:
    """Whether every way to meet ``quorum``, in any fleet, includes a voter matching ``spec``.

    Judged from the text alone, so a rule stays safe when people join the fleet: ``human``
    does not require ``founder`` even where the only human today is the founder. A term implies
    the spec when every party it can match also matches the spec. For ``a + b`` the spec is
    required exactly when some term implies it (other terms can always be filled by someone
    else). For ``N of [...]`` it is required when the voters not matching it are fewer than N:
    a named voter is one, a role or ``human`` has no bound.
    """
    target = _spec(spec)
    terms = [_spec(s) for s in quorum.specs]
    if quorum.need is None:
        return any(t.implies(target) for t in terms)
    others: set[tuple[str, str]] = set()
    for t in terms:
        if t.implies(target):
            continue
        if t.identity is None:
            return False
        others.add(t.identity)
    return len(others) < quorum.need


@dataclass(frozen=True)
class Rule:
    """Who may do ``action`` alone, and which quorum approves anyone else doing it.

    ``approve`` None means nobody can approve: only those ``alone`` names may act.
    """

    action: str
    alone: tuple[str, ...]
    approve: Quorum | None


BUILTIN_ACTIONS = (
    "declare_incident:P3",
    "declare_incident:P2",
    "declare_incident:P1",
    "declare_incident:P0",
    "confirm_incident:P2",
    "confirm_incident:P1",
    "confirm_incident:P0",
    "revoke_token",
    "production_deploy",
    "send_external_email",
    "spend_over_budget",
    "modify_guardrails",
    "issue_directive",
    "broadcast_urgent",
    "post_to_channel",
    "recover",
    "mcp_call",
)
_GATED = frozenset({"declare_incident:P2", "declare_incident:P1", "declare_incident:P0"})


def _rule(action: str, alone: tuple[str, ...], approve: str = "") -> Rule:
    return Rule(action, alone, parse_quorum(approve) if approve else None)


DEFAULT_RULES: dict[str, Rule] = {
    r.action: r
    for r in (
        _rule("declare_incident:P3", ("agent:*", "human")),
        _rule("declare_incident:P2", (), "role:security"),
        _rule("declare_incident:P1", (), "role:orchestrator"),
        _rule("declare_incident:P0", (), "role:orchestrator + human"),
        _rule("confirm_incident:P2", ("role:security", "role:orchestrator", "human")),
        _rule("confirm_incident:P1", ("role:orchestrator", "human")),
        _rule("confirm_incident:P0", ("role:orchestrator", "human")),
        _rule("revoke_token", ("human",), "role:orchestrator + role:security"),
        _rule("production_deploy", ("founder",), "founder"),
        _rule("send_external_email", ("role:comms", "human"), "human"),
        _rule("spend_over_budget", ("human",), "human"),
        _rule("modify_guardrails", ("human",), "human"),
        _rule("issue_directive", ("role:orchestrator", "human"), "human"),
        _rule(
            "broadcast_urgent", ("role:orchestrator", "human"), "1 of [role:orchestrator, human]"
        ),
        # Outbound acts every agent does alone from a clean turn; from a turn holding untrusted
        # content they need an approved request for the exact payload (a human's, by default).
        _rule("post_to_channel", ("agent:*", "human"), "human"),
        _rule("recover", ("agent:*", "human"), "human"),
        _rule("mcp_call", ("agent:*", "human"), "human"),
    )
}
"""The escalation gates and committees of SPEC §3.4; the fleet file's ``[authority]`` overrides.

``declare_incident:Px`` says who may declare alone and which quorum confirms (the gate);
``confirm_incident:Px`` lists in ``alone`` who may cast a confirmation vote at that level.
``broadcast_urgent`` is an agent's urgent/high message to a topic or to several agents
(``mcos.domain.severity``). ``post_to_channel`` (a post or a reply on a channel), ``recover``
(an allowlisted recovery) and ``mcp_call`` (an MCP tool that writes) are what an agent does
alone — unless its turn holds untrusted content (``mcos.runtime.tools.untrusted_gate``).
"""


def _where(action: str, key: str | None = None) -> str:
    """The key path in the fleet file, so a message says where to look."""
    return f'authority."{action}"' + (f".{key}" if key else "")


class UnknownAction(ValueError):
    """An action name the matrix has no rule for; ``known`` lists the ones it has."""

    def __init__(self, action: str, known: Sequence[str]) -> None:
        self.action = action
        self.known = sorted(known)
        super().__init__(f"unknown action {action!r}; known actions: {', '.join(self.known)}")


@dataclass(frozen=True)
class Matrix:
    """Every governed action's rule: the defaults with the fleet file's overrides on top."""

    rules: dict[str, Rule]

    @classmethod
    def build(cls, overrides: Mapping[str, Mapping[str, object]]) -> Matrix:
        """Apply ``[authority."ACTION"]`` tables (``alone = [specs]``, ``approve = "quorum"``).

        A missing key keeps the default, ``approve = ""`` means nobody can approve, and a new
        action name adds a rule. Bad input raises ValueError naming the action and key.
        """
        rules = dict(DEFAULT_RULES)
        for action, table in overrides.items():
            rules[action] = _override(action, table, rules.get(action))
        return cls(rules)

    def rule(self, action: str) -> Rule:
        """The rule of ``action``; :class:`UnknownAction` (a ValueError) lists the known ones."""
        try:
            return self.rules[action]
        except KeyError:
            raise UnknownAction(action, list(self.rules)) from None

    def may_alone(self, action: str, party: Party) -> str | None:
        """None when ``party`` may do ``action`` without approval, else why not (names the rule)."""
        rule = self.rule(action)
        if any(matches(s, party) for s in rule.alone):
            return None
        if rule.approve is None:
            if not rule.alone:
                return f"{action} may not be done by anyone ({_where(action)} lists nobody)"
            return f"{action} may only be done by {', '.join(rule.alone)}, not by {party}"
        if not rule.alone:
            return f"{action} may not be done alone (needs {rule.approve})"
        return (
            f"{action} may not be done alone by {party} "
            f"(only {', '.join(rule.alone)}; otherwise needs {rule.approve})"
        )

    def gate(self, severity: str) -> Quorum | None:
        """The quorum that confirms a ``severity`` incident; None when it is self-logged (P3)."""
        if severity not in SEVERITIES:
            msg = f"{severity!r} is not a severity (use {', '.join(SEVERITIES)})"
            raise ValueError(msg)
        return self.rule(f"declare_incident:{severity}").approve

    def may_vote(self, action: str, party: Party) -> bool:
        """Whether a vote of ``party`` on ``action`` can count.

        For ``confirm_incident:Px`` the rule's ``alone`` list says who may cast a confirmation;
        for every other action, anyone matching a term of its approve quorum.
        """
        if action.startswith("confirm_incident:"):
            found = self.rules.get(action)
            return found is not None and any(matches(s, party) for s in found.alone)
        rule = self.rule(action)
        return rule.approve is not None and rule.approve.admits(party)

    def items(self) -> list[str]:
        """The actions whose items are decided by votes: gated incident levels (the
        ``declare_incident:Px`` with a gate) and every action with an approve quorum."""
        return [
            a
            for a, r in self.rules.items()
            if r.approve is not None and not a.startswith("confirm_incident:")
        ]

    def eligible(self, item: str, party: Party) -> bool:
        """Whether ``party``'s vote on an ``item`` (an incident gate or a request) can count."""
        return self.may_vote(vote_action(item), party)

    def confirmers(self, item: str, reporter: Party, parties: Sequence[Party]) -> list[Party]:
        """Who, in this fleet, may vote on ``item`` raised by ``reporter``: the eligible
        voters other than the reporter (a reporter never votes on its own item)."""
        return [p for p in parties if p.key != reporter.key and self.eligible(item, p)]

    def decided(
        self,
        item: str,
        voters: Sequence[Party],
        reporters: Sequence[Party] = (),
        parties: Sequence[Party] | None = None,
    ) -> bool:
        """Whether the yes-votes of ``voters`` decide ``item`` raised by ``reporters``
        (see :func:`decides`); votes and reports of ineligible parties do not count. Given the
        fleet's ``parties``, a reporter's seat counts only when the rest of the fleet could not
        meet the quorum without it."""
        quorum = self.rule(item).approve
        if quorum is None:
            return False
        raised = {r.key for r in reporters}
        rest = [p for p in parties or () if p.key not in raised and self.eligible(item, p)]
        return decides(
            quorum,
            [v for v in voters if self.eligible(item, v)],
            [r for r in reporters if self.eligible(item, r)],
            others_suffice=parties is not None and satisfied(quorum, rest),
        )

    def decidable(self, item: str, reporter: Party, parties: Sequence[Party]) -> bool:
        """Whether ``item`` raised by ``reporter`` can be decided by the rest of the fleet:
        all its other confirmers voting yes would decide it."""
        return self.decided(item, self.confirmers(item, reporter, parties), [reporter], parties)


def vote_action(item: str) -> str:
    """The rule saying who votes on ``item``: ``confirm_incident:Px`` for an incident's gate
    (``declare_incident:Px``), the action itself for a request."""
    if item.startswith("declare_incident:"):
        return "confirm_incident:" + item.removeprefix("declare_incident:")
    return item


def _override(action: str, table: object, current: Rule | None) -> Rule:
    _check_action(action)
    if not isinstance(table, Mapping):
        msg = f'{_where(action)}: expected a table with alone = [...] and/or approve = "..."'
        raise ValueError(msg)
    for key in table:
        if key not in ("alone", "approve"):
            msg = f'{_where(action, str(key))}: unknown key (use alone = [specs], approve = "...")'
            raise ValueError(msg)
    rule = current or Rule(action, (), None)
    alone = _alone(action, table["alone"]) if "alone" in table else rule.alone
    approve = _approve(action, table["approve"]) if "approve" in table else rule.approve
    return Rule(action, alone, approve)


def _check_action(action: str) -> None:
    if action in BUILTIN_ACTIONS:
        return
    for builtin in BUILTIN_ACTIONS:
        if action.lower() == builtin.lower():
            msg = f"{_where(action)}: not an action; did you mean {builtin}?"
            raise ValueError(msg)
    if not ACTION_NAME.match(action):
        msg = (
            f"{_where(action)}: not an action name; your own actions match "
            f"{ACTION_NAME.pattern}, built-in ones are {', '.join(BUILTIN_ACTIONS)}"
        )
        raise ValueError(msg)


def _alone(action: str, value: object) -> tuple[str, ...]:
    where = _where(action, "alone")
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
        msg = f'{where}: expected a list of member specs, e.g. ["human"] ({SPEC_FORMS})'
        raise ValueError(msg)
    try:
        specs = [normalize_spec(s) for s in value]
    except ValueError as e:
        msg = f"{where}: {e}"
        raise ValueError(msg) from None
    return tuple(dict.fromkeys(specs))


def _approve(action: str, value: object) -> Quorum | None:
    where = _where(action, "approve")
    if not isinstance(value, str):
        msg = f'{where}: expected a quorum text, e.g. "role:orchestrator + human", or ""'
        raise ValueError(msg)
    if not value.strip():
        if action in _GATED:
            msg = f"{where}: an incident gate cannot be empty, or the incident is never confirmed"
            raise ValueError(msg)
        return None
    try:
        return parse_quorum(value)
    except ValueError as e:
        msg = f"{where}: {e}"
        raise ValueError(msg) from None


def validate(matrix: Matrix, parties: Sequence[Party]) -> list[str]:
    """What is wrong with ``matrix`` for this fleet: one line per problem, naming the key path.

    Safety (SPEC §3.4): no single principal declares a P0, no single agent revokes a token, the
    founder decides production deploys. Liveness: every item — an incident at its gate, a
    request to its committee — raised by anyone in the fleet who may not act alone can be
    decided by the others (:meth:`Matrix.decidable`), so none can dead-end. And names in the
    fleet file's rules that nobody has (a typo would silently disable a rule). Each is a
    configuration error.
    """
    return [
        *_unknown_names(matrix, parties),
        *_no_single_agent(matrix, "declare_incident:P0", parties, "declare a P0 incident"),
        *_no_single_human_p0(matrix),
        *_no_single_agent(matrix, "revoke_token", parties, "revoke a token"),
        *_founder_deploys(matrix),
        *undecidable(matrix, parties),
    ]


def undecidable(matrix: Matrix, parties: Sequence[Party]) -> list[str]:
    """The items that could dead-end in this fleet: for each incident gate and committee, who
    could raise an item the rest of the fleet could never decide, and why (one line each).

    A quorum naming someone the fleet does not have at all (no security agent, no founder) is
    :func:`concerns`' warning instead: the fleet is still growing, and such items expire.
    """
    problems: list[str] = []
    named = _named(matrix)
    for item in matrix.items():
        quorum = matrix.rule(item).approve
        assert quorum is not None
        if _absent(quorum, parties):
            continue
        # Parties no rule tells apart (same kind and role, a name no spec names) raise items
        # that are decidable alike: asked once per kind of party, not once per party (each
        # asking walks the whole fleet — 500 agents of one role took seconds to check).
        verdicts: dict[tuple[str, str, str], bool] = {}
        stuck: list[Party] = []
        for p in parties:
            if matrix.may_alone(item, p) is None:
                continue
            like = (p.kind, p.role, p.name if p.key in named else "")
            if like not in verdicts:
                verdicts[like] = matrix.decidable(item, p, parties)
            if not verdicts[like]:
                stuck.append(p)
        if stuck:
            problems.append(_dead_end(matrix, item, quorum, stuck, parties))
    return problems


def _named(matrix: Matrix) -> set[tuple[str, str]]:
    """The parties some rule names (``agent:gene``, ``human:ana``), as ``Party.key``."""
    specs = [
        spec
        for rule in matrix.rules.values()
        for spec in (*rule.alone, *(rule.approve.specs if rule.approve is not None else ()))
    ]
    return {identity for spec in specs if (identity := _spec(spec).identity) is not None}


def concerns(matrix: Matrix, parties: Sequence[Party]) -> list[str]:
    """Worth a warning, not a refusal: items that wait for a member the fleet does not have
    (a quorum term nobody matches: no security agent for P2, no founder for deploys). They
    expire to a terminal state; adding the member makes them decidable."""
    problems: list[str] = []
    for item in matrix.items():
        quorum = matrix.rule(item).approve
        assert quorum is not None
        missing = _absent(quorum, parties)
        if missing:
            problems.append(
                f"{_where(item, 'approve')}: {_what(item)} could never be decided yet, since "
                f"nobody in the fleet can meet {quorum} ({'; '.join(missing)}); it would expire"
            )
    return problems


def _absent(quorum: Quorum, parties: Sequence[Party]) -> list[str]:
    """Why terms of ``quorum`` match nobody in the fleet, when the quorum needs them."""
    missing = [(s, why) for s in quorum.specs if (why := _nobody(s, parties))]
    if quorum.need is not None and len(missing) < len(quorum.specs):
        return []  # N of [...]: the other terms may still fill it
    return [f"{s}: {why}" if len(quorum.specs) > 1 else why for s, why in missing]


def _what(item: str) -> str:
    if item.startswith("declare_incident:"):
        return f"a {item.removeprefix('declare_incident:')} incident"
    return f"a request for {item}"


def _dead_end(
    matrix: Matrix, item: str, quorum: Quorum, stuck: list[Party], parties: Sequence[Party]
) -> str:
    voters = [p for p in parties if matrix.eligible(item, p)]
    who = ", ".join(str(p) for p in stuck)
    if not voters:
        rule = _where(vote_action(item), _vote_key(item))
        why = f"nobody in the fleet may vote on it ({rule})"
    else:
        names = ", ".join(str(p) for p in voters)
        why = f"its voters ({names}), without the one who raised it, cannot meet {quorum}"
    return (
        f"{_where(item, 'approve')}: {_what(item)} raised by {who} could never be decided: "
        f"{why}; add a member to the fleet, or widen the quorum or who may vote"
    )


def _vote_key(item: str) -> str:
    return "alone" if item.startswith("declare_incident:") else "approve"


def _nobody(spec: str, parties: Sequence[Party]) -> str | None:
    """Why ``spec`` matches nobody in the fleet, with a hint at the likely fix; None if fine."""
    s = _spec(spec)
    if any(map(s.admits, parties)):
        return None
    why = {
        "founder": "no human has role founder",
        "human": "the fleet has no humans",
        "named_human": f"no human is called {s.value}",
        "role": f"no agent has role {s.value}",
        "agent": "the fleet has no agents",
        "named_agent": f"no agent is called {s.value}",
    }[s.kind]
    agent_roles = {p.role for p in parties if p.kind == "agent"}
    humans = {p.name for p in parties if p.kind == "human"}
    human_roles = {p.role for p in parties if p.kind == "human"}
    if s.kind == "named_agent" and s.value in agent_roles:
        why += f"; a bare word is an agent name, for any {s.value} agent write role:{s.value}"
    elif s.kind == "named_agent" and s.value in humans:
        why += f"; for the human write human:{s.value}"
    elif s.kind == "role" and s.value in human_roles:
        why += "; role: matches agents only, for humans write human or founder"
    return why


def _unknown_names(matrix: Matrix, parties: Sequence[Party]) -> list[str]:
    """Names and roles nobody has, in what the fleet file set (not in untouched defaults).

    The defaults name roles a small fleet may not have (``role:comms``); whether the gates
    among them can be met is :func:`_gates_reachable`'s question.
    """
    problems: list[str] = []
    for action, rule in matrix.rules.items():
        default = DEFAULT_RULES.get(action)
        keys = {
            "alone": (rule.alone, default.alone if default else None),
            "approve": (rule.approve, default.approve if default else None),
        }
        for key, (value, default_value) in keys.items():
            if value is None or (default is not None and value == default_value):
                continue
            specs = value.specs if isinstance(value, Quorum) else value
            for spec in dict.fromkeys(specs):
                if _spec(spec).kind in ("named_agent", "named_human", "role"):
                    why = _nobody(spec, parties)
                    if why:
                        problems.append(f"{_where(action, key)}: {spec}: {why}")
    return problems


def _no_single_agent(matrix: Matrix, action: str, parties: Sequence[Party], what: str) -> list[str]:
    rule = matrix.rule(action)
    problems = [
        f"{_where(action, 'alone')}: {spec} lets a single agent {what} alone; list humans only"
        for spec in rule.alone
        if _spec(spec).side == "agent"
    ]
    q = rule.approve
    if q is not None:
        lone = _lone_agent(q, parties)
        if lone is not None:
            problems.append(
                f"{_where(action, 'approve')}: {q} can be met by one agent ({lone.name}) alone, "
                f"but no single agent may {what}; add a second voter, e.g. {q} + human"
            )
    return problems


def _no_single_human_p0(matrix: Matrix) -> list[str]:
    action = "declare_incident:P0"
    return [
        f"{_where(action, 'alone')}: {spec} lets a single human declare a P0 incident alone; "
        "a P0 always needs a second principal to confirm it, list nobody"
        for spec in matrix.rule(action).alone
        if _spec(spec).side == "human"
    ]


def _founder_deploys(matrix: Matrix) -> list[str]:
    action = "production_deploy"
    rule = matrix.rule(action)
    problems = [
        f"{_where(action, 'alone')}: {spec} lets someone other than the founder deploy to "
        "production; list only founder"
        for spec in rule.alone
        if spec != "founder"
    ]
    q = rule.approve
    if q is not None and not requires(q, "founder"):
        problems.append(
            f"{_where(action, 'approve')}: {q} can approve a production deploy without the "
            'founder; the founder decides, e.g. "founder" or "role:cto + founder"'
        )
    if q is None and "founder" not in rule.alone:
        problems.append(f'{_where(action)}: nobody can ever deploy; set approve = "founder"')
    return problems
