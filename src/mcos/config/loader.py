"""Reading ``fleet.toml``: every problem reported at once, with file, key path and cause."""

from __future__ import annotations

import hashlib
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcos.config.models import BUILTIN_TOOLS, OPTIONAL_TOOLS, Fleet, FleetFile
from mcos.config.secrets import Resolved, resolve_all
from mcos.domain.authority import Matrix, concerns, validate
from mcos.domain.first_look import route_problem
from mcos.domain.prices import deprecation_of, price_for
from mcos.exceptions import ConfigError, ConfigErrors


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _problem(error: Any, model_fields: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(model_fields)) if model_fields else "none"
        return f"unknown key (allowed: {allowed})"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{error['input']!r} is not one of {expected.replace(chr(39), '')}"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} is not a valid name (lowercase letters, digits, - and _)"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _fields_at(loc: tuple[int | str, ...]) -> dict[str, Any]:
    """The fields allowed where an unknown key was found, to list them in the error."""
    model: Any = FleetFile
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return {}
        if part in fields:
            annotation = fields[part].annotation
            args = getattr(annotation, "__args__", ())
            model = args[-1] if args and hasattr(args[-1], "model_fields") else annotation
        # a dict key (an agent's name) keeps the value model
    return dict(getattr(model, "model_fields", {}))


def _agent_lists(fleet: Fleet, name: str, file: str) -> list[ConfigError]:
    """Tools that exist, and check and cron names unique within the agent."""
    agent = fleet.agents[name]
    errors = [
        ConfigError(
            file,
            f"agents.{name}.allowed_tools.{i}",
            f"unknown tool {tool!r} (known: {', '.join((*BUILTIN_TOOLS, *OPTIONAL_TOOLS))}; "
            "MCP tools as SERVER__TOOL or SERVER__*)",
        )
        for i, tool in enumerate(agent.allowed_tools)
        if tool not in (*BUILTIN_TOOLS, *OPTIONAL_TOOLS) and "__" not in tool
    ]
    errors.extend(
        ConfigError(
            file,
            f"agents.{name}.browser",
            f"missing: allowed_tools names browser MCP server {server!r}; say which domains "
            f"{name} may open ([agents.{name}.browser] allowed_domains = [...])",
        )
        for server in dict.fromkeys(t.partition("__")[0] for t in agent.allowed_tools if "__" in t)
        if server in fleet.mcp and fleet.mcp[server].kind == "browser" and agent.browser is None
    )
    errors.extend(
        ConfigError(
            file,
            f"agents.{name}.checks.{i}.recover",
            f"unknown recovery {c.recover!r} (known: {', '.join(fleet.recovery) or 'none'})",
        )
        for i, c in enumerate(agent.checks)
        if c.recover is not None and c.recover not in fleet.recovery
    )
    for key, names in (
        ("checks", [c.name for c in agent.checks]),
        ("cron", [j.name for j in agent.cron]),
    ):
        errors.extend(
            ConfigError(file, f"agents.{name}.{key}.{i}.name", f"duplicate name {n!r}")
            for i, n in enumerate(names)
            if n in names[:i]
        )
    return errors


def _authority(fleet: Fleet, file: str) -> list[ConfigError]:
    """The authority matrix builds, keeps its safety rules, and leaves no item undecidable."""
    try:
        matrix = Matrix.build(fleet.authority)
    except ValueError as e:
        return [ConfigError(file, "", str(e))]
    problems = validate(matrix, fleet.parties())
    fleet._warnings.extend(concerns(matrix, fleet.parties()))
    return [ConfigError(file, "", p) for p in problems]


def _cross_check(fleet: Fleet, file: str) -> list[ConfigError]:  # noqa: PLR0912 (one rule a branch)
    errors: list[ConfigError] = []
    hosts = sorted(fleet.hosts)
    kinds: dict[str, str] = {}
    for kind, names in (("agent", fleet.agents), ("human", fleet.humans), ("topic", fleet.topics)):
        for name in names:
            if name in kinds:
                errors.append(
                    ConfigError(
                        file,
                        f"{kind}s.{name}",
                        f"name already used by a {kinds[name]} (names are unique across agents, "
                        "humans and topics)",
                    )
                )
            kinds.setdefault(name, kind)
    people = set(fleet.agents) | set(fleet.humans)
    for name, agent in fleet.agents.items():
        if agent.host not in fleet.hosts:
            errors.append(
                ConfigError(
                    file,
                    f"agents.{name}.host",
                    f"unknown host {agent.host!r} (known: {', '.join(hosts) or 'none'})",
                )
            )
        for i, h in enumerate(agent.failover_hosts):
            if h not in fleet.hosts:
                errors.append(
                    ConfigError(file, f"agents.{name}.failover_hosts.{i}", f"unknown host {h!r}")
                )
        if agent.reports_to is not None and agent.reports_to not in people:
            errors.append(
                ConfigError(
                    file,
                    f"agents.{name}.reports_to",
                    f"unknown agent or human {agent.reports_to!r}",
                )
            )
        if agent.model.provider != "offline" and agent.key is None:
            errors.append(
                ConfigError(
                    file,
                    f"agents.{name}.key",
                    f"missing: a {agent.model.provider} model needs a key reference "
                    "(env:VAR, file:PATH or credential:NAME)",
                )
            )
        errors.extend(_agent_lists(fleet, name, file))
    for name in fleet.agents:
        seen = [name]
        current = fleet.agents[name].reports_to
        while current in fleet.agents:
            if current in seen:
                errors.append(
                    ConfigError(
                        file,
                        f"agents.{name}.reports_to",
                        "reporting cycle: " + " → ".join([*seen, current]),
                    )
                )
                break
            seen.append(current)
            current = fleet.agents[current].reports_to
    errors.extend(_authority(fleet, file))
    errors.extend(_shared_keys(fleet, file))
    errors.extend(_paths(fleet, file))
    errors.extend(_channels(fleet, file))
    errors.extend(_mcp_tools(fleet, file))
    errors.extend(_prices(fleet, file))
    errors.extend(_triage_models(fleet, file))
    errors.extend(
        ConfigError(file, f"knowledge.{name}.agents.{i}", f"unknown agent {agent!r}")
        for name, k in sorted(fleet.knowledge.items())
        for i, agent in enumerate(k.agents)
        if agent not in fleet.agents
    )
    for topic, config in fleet.topics.items():
        for i, s in enumerate(config.subscribers):
            if s not in people:
                errors.append(
                    ConfigError(
                        file, f"topics.{topic}.subscribers.{i}", f"unknown agent or human {s!r}"
                    )
                )
    errors.extend(
        ConfigError(file, f"calendars.{cal}.agents.{i}", f"unknown agent {a!r}")
        for cal, config in fleet.calendars.items()
        for i, a in enumerate(config.agents)
        if a not in fleet.agents
    )
    return errors


def load_fleet(path: str | Path) -> Fleet:
    """Load, validate and cross-check a fleet file; ``ConfigErrors`` lists every problem."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise ConfigErrors(
            [ConfigError(file, "", "no such file; create a fleet with `mcos init DIR`")]
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigErrors([ConfigError(file, "", f"not valid TOML: {e}")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(file, "", f"cannot read: {e}")]) from None
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as e:
        raise ConfigErrors(
            [
                ConfigError(
                    file, _key(tuple(err["loc"])), _problem(err, _fields_at(tuple(err["loc"])))
                )
                for err in e.errors()
            ]
        ) from None
    fleet._path = path.resolve()
    errors = _cross_check(fleet, file)
    if errors:
        raise ConfigErrors(errors)
    if not any(h.role == "founder" for h in fleet.humans.values()):
        fleet._warnings.append(
            "no human has role 'founder': nobody has the final call on production deploys"
        )
    return fleet


def _prices(fleet: Fleet, file: str) -> list[ConfigError]:
    """A dollar budget needs a price: an agent whose model neither genai-prices nor ``[prices]``
    knows would spend uncounted (priced at zero) — refused when it or the fleet has a
    ``daily_usd``, a warning otherwise."""
    errors = []
    for name, agent in sorted(fleet.agents.items()):
        if fleet.pricing(name) is not None:
            continue
        model = agent.model
        capped = [
            where
            for where, cap in (
                (f"agents.{name}.budget.daily_usd", agent.budget.daily_usd),
                ("fleet.daily_usd", fleet.fleet.daily_usd),
            )
            if cap is not None
        ]
        problem = (
            f"{name}: no price is known for model {model.id!r} ({model.provider}) — neither "
            f"genai-prices nor [prices] has it"
        )
        fix = f'add [prices."{model.id}"] input = …, output = … (USD per million tokens)'
        if capped:
            errors.append(
                ConfigError(
                    file,
                    f"agents.{name}.model.id",
                    f"{problem}, so {' and '.join(capped)} cannot be kept; {fix}",
                )
            )
        else:
            fleet._warnings.append(f"{problem}: its calls are counted as free; {fix}")
    return errors


def _triage_models(fleet: Fleet, file: str) -> list[ConfigError]:
    """A ``triage_model`` must be reachable with the agent's own credential and route, and is
    priced like the main model: one nothing prices is refused under a dollar budget."""
    errors = []
    for name, agent in sorted(fleet.agents.items()):
        triage, where = agent.triage_model, f"agents.{name}.triage_model"
        if triage is None:
            continue
        problem = route_problem(
            agent.model.provider,
            triage.provider,
            triage.base_url,
            agent.model.base_url,
            agent.model.route,
        )
        if problem is not None:
            errors.append(ConfigError(file, f"{where}.provider", f"{name}: {problem}"))
        capped = agent.budget.daily_usd is not None or fleet.fleet.daily_usd is not None
        known = price_for(triage.provider, triage.id, fleet.price_table(), triage.base_url)
        if capped and known is None:
            errors.append(
                ConfigError(
                    file,
                    f"{where}.id",
                    f"{name}: no price is known for triage model {triage.id!r} "
                    f"({triage.provider}), so the dollar budget cannot be kept; add "
                    f'[prices."{triage.id}"] input = …, output = … (USD per million tokens)',
                )
            )
    return errors


def deprecation_warnings(fleet: Fleet, today: date | None = None) -> list[str]:
    """One line per agent whose model id is deprecated or retired, naming the replacement."""
    today = today or datetime.now(UTC).date()
    out = []
    for name, agent in sorted(fleet.agents.items()):
        found = deprecation_of(agent.model.provider, agent.model.id, agent.model.base_url)
        if found is not None:
            out.append(f"agents.{name}.model.id: {found.message(today)}")
        triage = agent.triage_model
        if triage is None:
            continue
        found = deprecation_of(triage.provider, triage.id, triage.base_url)
        if found is not None:
            out.append(f"agents.{name}.triage_model.id: {found.message(today)}")
    return out


def check_fleet(path: str | Path) -> list[str]:
    """Warnings of a fleet file that loads and whose every key reference resolves to a key, as
    ``mcos doctor`` judges them; raises ``ConfigErrors`` naming each problem otherwise."""
    fleet = load_fleet(path)
    file = str(path)
    resolved = resolve_all(fleet)
    errors = [
        ConfigError(file, r.use.where, f"{r.use.owner}: {r.problem}{r.use.note}")
        for r in resolved
        if r.problem
    ]
    errors.extend(shared_key_values(fleet, file, resolved))
    if errors:
        raise ConfigErrors(errors)
    return fleet.warnings + deprecation_warnings(fleet)


def _shared(fleet: Fleet, file: str, names: list[str], what: str) -> list[ConfigError]:
    """Agents ``names`` share one key: refused, unless every one of them says shared_key."""
    unmarked = [n for n in names if not fleet.agents[n].shared_key]
    if not unmarked:
        fleet._warnings.append(
            f"agents {', '.join(names)} share {what} (shared_key = true): revoking it stops them "
            "all, and the audit log cannot tell them apart at the provider"
        )
        return []
    return [
        ConfigError(
            file,
            f"agents.{n}.key",
            f"{what} is also the key of {', '.join(m for m in names if m != n)}: one key per "
            "agent, so that one can be revoked alone (or write shared_key = true on each of them)",
        )
        for n in unmarked
    ]


def _shared_keys(fleet: Fleet, file: str) -> list[ConfigError]:
    """Two agents never name one key reference unless each says ``shared_key = true``."""
    by_ref: dict[str, list[str]] = {}
    for name, a in sorted(fleet.agents.items()):
        if a.key is not None:
            by_ref.setdefault(a.key, []).append(name)
    errors: list[ConfigError] = []
    for ref, names in by_ref.items():
        if len(names) > 1:
            errors.extend(_shared(fleet, file, names, f"the key reference {ref}"))
    return errors


def shared_key_values(fleet: Fleet, file: str, resolved: list[Resolved]) -> list[ConfigError]:
    """Different references of two agents that hold one key are one key shared all the same
    (for `mcos config check` and `mcos doctor`, which resolve the references)."""
    by_value: dict[str, list[tuple[str, str]]] = {}
    for r in resolved:
        if r.value and r.use.where.startswith("agents."):
            digest = hashlib.sha256(r.value.encode()).hexdigest()
            by_value.setdefault(digest, []).append((r.use.where.split(".")[1], r.use.reference))
    errors: list[ConfigError] = []
    for holders in by_value.values():
        if len({ref for _, ref in holders}) > 1:  # one reference is _shared_keys's case
            what = "the key behind " + " and ".join(sorted({ref for _, ref in holders}))
            errors.extend(_shared(fleet, file, [n for n, _ in holders], what))
    return errors


def _paths(fleet: Fleet, file: str) -> list[ConfigError]:
    """Workspaces, mock channel folders, the state folder and a SQLite store resolve (symlinks
    followed) inside the fleet file's folder or a folder of ``[fleet] allow_paths``; and no
    workspace holds the state folder (the token key and the operator token)."""
    base = fleet.base_dir.resolve()
    roots = [base]
    errors = []
    for i, allowed in enumerate(fleet.fleet.allow_paths):
        if Path(allowed).is_absolute():
            roots.append(Path(allowed).resolve())
        else:
            errors.append(
                ConfigError(file, f"fleet.allow_paths.{i}", f"{allowed!r} is not an absolute path")
            )
    places: list[tuple[str, str, Path]] = [
        ("server.state_dir", str(fleet.server.state_dir), fleet.state_dir)
    ]
    store = fleet.store_url
    if store.startswith("sqlite:///") and ":memory:" not in store:
        places.append(
            (
                "server.store",
                fleet.server.store,
                Path(store.removeprefix("sqlite:///").partition("?")[0]),
            )
        )
    for name, a in sorted(fleet.agents.items()):
        workspace = fleet.workspace_path(name)
        places.append((f"agents.{name}.workspace", a.workspace or f"agents/{name}", workspace))
        if fleet.state_dir.is_relative_to(workspace):
            errors.append(
                ConfigError(
                    file,
                    f"agents.{name}.workspace",
                    f"{workspace} holds the state folder {fleet.state_dir} (the token key and "
                    "the operator token): the agent could read them; give it a folder of its own",
                )
            )
    for name, a in sorted(fleet.agents.items()):
        places += [
            (f"agents.{name}.knowledge.{i}", k, fleet.base_dir / k)
            for i, k in enumerate(a.knowledge)
        ]
    places += [
        (f"knowledge.{n}.path", k.path, fleet.base_dir / k.path)
        for n, k in sorted(fleet.knowledge.items())
    ]
    for name, c in sorted(fleet.channels.items()):
        if c.kind == "mock":
            places.append(
                (f"channels.{name}.path", c.path or f"channels/{name}", fleet.channel_path(name))
            )
    for where, configured, resolved in places:
        target = resolved.resolve()
        if not any(target.is_relative_to(root) for root in roots):
            errors.append(
                ConfigError(
                    file,
                    where,
                    f"{configured!r} resolves to {target}, outside the fleet folder {base}; "
                    f'to allow it, add it (or a parent) to [fleet] allow_paths (["{target}"])',
                )
            )
    return errors


_ADDRESS_FIELD = {"telegram": "telegram", "discord": "discord", "email": "email", "m365": "email"}


def _channels(fleet: Fleet, file: str) -> list[ConfigError]:
    """Channels name real agents; humans are paged on Mission Control's own channels where they
    have an address; one credential is never used by two channels; MCP tools name servers."""
    errors = [
        ConfigError(file, f"channels.{name}.agent", f"unknown agent {c.agent!r}")
        for name, c in fleet.channels.items()
        if c.agent is not None and c.agent not in fleet.agents
    ]
    seen: dict[str, str] = {}
    for name, c in sorted(fleet.channels.items()):
        for ref in (c.token, c.password if c.kind == "email" else None):
            if ref is None:
                continue
            key = f"{ref}@{c.username}" if c.kind == "email" else ref
            if key in seen:
                errors.append(
                    ConfigError(
                        file,
                        f"channels.{name}",
                        f"uses the same account as channels.{seen[key]} (one poller per account)",
                    )
                )
            seen.setdefault(key, name)
    for human, h in fleet.humans.items():
        for i, channel in enumerate(h.page):
            where = f"humans.{human}.page.{i}"
            pager = fleet.channels.get(channel)
            if pager is None:
                errors.append(ConfigError(file, where, f"unknown channel {channel!r}"))
            elif not pager.enabled:
                errors.append(
                    ConfigError(file, where, f"channel {channel!r} is parked (enabled = false)")
                )
            elif pager.agent is not None:
                errors.append(
                    ConfigError(
                        file,
                        where,
                        f"channel {channel!r} belongs to agent {pager.agent}; pages go out on "
                        "Mission Control's own channels (a channel without agent)",
                    )
                )
            elif pager.kind == "mock":
                continue
            elif getattr(h, _ADDRESS_FIELD[pager.kind]) is None:
                errors.append(
                    ConfigError(
                        file,
                        where,
                        f"paged on {pager.kind} channel {channel!r} but humans.{human}."
                        f"{_ADDRESS_FIELD[pager.kind]} is not set",
                    )
                )
    return errors


def _mcp_tools(fleet: Fleet, file: str) -> list[ConfigError]:
    """An MCP tool in an allowlist names a server of the fleet file."""
    return [
        ConfigError(file, f"agents.{agent}.allowed_tools.{i}", f"unknown MCP server {server!r}")
        for agent, a in fleet.agents.items()
        for i, tool in enumerate(a.allowed_tools)
        for server, sep, _ in [tool.partition("__")]
        if sep and server not in fleet.mcp
    ]
