"""`mcos import openclaw`: an OpenClaw install (``~/.openclaw``) as a fleet file and workspaces.

What is read, as OpenClaw documents it: ``openclaw.json`` (JSON5) — ``agents.defaults`` and
``agents.list`` (id, workspace, model, heartbeat ``every`` and ``activeHours``), ``bindings``
(``agentId`` + ``match.channel``/``accountId``), ``channels.<kind>`` accounts — and
``cron/jobs.json``. Every workspace is copied as is (OpenClaw's files are mcos's files).

Secrets are written as key references only: ``${VAR}`` and env SecretRefs become ``env:VAR``,
a ``tokenFile`` becomes ``file:PATH``; a literal token or an API key in an auth profile is never
copied — the agent gets ``env:`` a variable named for it, and the report says to set it. Each
agent gets its own key variable (one key per agent).

The mapping is a pure function of what was read (:func:`plan`); writing is idempotent
(:func:`write`): the same install gives the same bytes, a file already right is left alone, and
a fleet file edited since the last import is not overwritten without ``force``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5
import tomli_w

from mcos.config.models import NAME
from mcos.domain.heartbeat import valid_cron
from mcos.exceptions import ConfigError

CONFIG_FILE = "openclaw.json"
CRON_FILE = Path("cron") / "jobs.json"
REPORT_FILE = "openclaw-import.md"
HEADER = "# Imported from OpenClaw by `mcos import openclaw`; sha256 of the rest: "
"""The first line of a written fleet file: the hash tells an edited file from an untouched one."""

_PROVIDERS = {"anthropic": "anthropic", "openai": "openai"}
_CHANNELS = ("telegram", "discord")
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_SKIPPED_DIRS = frozenset({".git", ".openclaw", "node_modules", "__pycache__"})


@dataclass
class Plan:
    """What an import writes: the fleet file's data, the workspaces to copy, what was left out."""

    fleet: dict[str, Any]
    workspaces: dict[str, Path]
    """Agent name → the OpenClaw workspace folder to copy into ``agents/<name>/``."""
    unmapped: list[str] = field(default_factory=list)
    """One line per thing that could not be carried over, naming it and what to do."""


def _name(raw: str, what: str, unmapped: list[str]) -> str:
    name = re.sub(r"[^a-z0-9_-]", "-", raw.strip().lower())
    if not re.match(NAME, name):
        name = f"a-{name}"[:63]
    if name != raw:
        unmapped.append(f"{what} {raw!r} is named {name!r} here (mcos names: a-z, 0-9, - and _)")
    return name


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", "_".join(parts).upper())


def _ref(value: Any, fallback: str, where: str, unmapped: list[str]) -> str:
    """A secret as a key reference; a literal is replaced by ``env:fallback`` and reported."""
    if isinstance(value, dict):
        source, ident = value.get("source"), value.get("id")
        if source == "env" and isinstance(ident, str):
            return f"env:{ident}"
        if source == "file" and isinstance(ident, str):
            return f"file:{ident}"
        unmapped.append(f"{where}: secret from {source!r} not mapped; set {fallback}")
        return f"env:{fallback}"
    if isinstance(value, str):
        found = _ENV_REF.match(value.strip())
        if found:
            return f"env:{found.group(1)}"
    unmapped.append(f"{where}: a literal secret in {CONFIG_FILE}, not copied; set {fallback}")
    return f"env:{fallback}"


def _path(raw: str, home: Path) -> Path:
    """An OpenClaw path: ``~/.openclaw/…`` is inside the install being imported."""
    text = raw.strip()
    for prefix in ("~/.openclaw/", "$OPENCLAW_STATE_DIR/"):
        if text.startswith(prefix):
            return home / text[len(prefix) :]
    path = Path(text).expanduser()
    return path if path.is_absolute() else home / path


def _model(raw: Any, name: str, unmapped: list[str]) -> dict[str, Any] | None:
    """``provider/model`` (or ``{primary, fallbacks}``) as an mcos model; None: offline."""
    if isinstance(raw, dict):
        if raw.get("fallbacks"):
            unmapped.append(
                f"agents.{name}: fallback models {raw['fallbacks']} not mapped (one model an "
                "agent; a failover key doubles the burn rate)"
            )
        raw = raw.get("primary")
    if not isinstance(raw, str) or "/" not in raw:
        if raw is not None:
            unmapped.append(f"agents.{name}: model {raw!r} has no provider/ prefix; offline")
        return None
    provider, model_id = raw.split("/", 1)
    if provider not in _PROVIDERS:
        unmapped.append(
            f"agents.{name}: model {raw!r}: provider {provider!r} not supported (anthropic, "
            "openai); the agent runs on the offline model"
        )
        return None
    return {"provider": _PROVIDERS[provider], "id": model_id}


def _heartbeat(raw: dict[str, Any], name: str, unmapped: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    every = raw.get("every")
    if isinstance(every, str) and every.strip():
        if re.fullmatch(r"0+[smhd]?", every.strip()):
            out |= {"interval": "24h", "task_interval": "off"}
            unmapped.append(
                f"agents.{name}.heartbeat: disabled in OpenClaw (every {every!r}); mcos always "
                "beats: here once a day, with HEARTBEAT.md's routines off"
            )
        else:
            out["interval"] = every.strip()
    hours = raw.get("activeHours")
    if isinstance(hours, dict) and hours.get("start") and hours.get("end"):
        out["active_hours"] = f"{hours['start']}-{hours['end']}"
        zone = hours.get("timezone")
        if isinstance(zone, str) and zone not in ("user", "local"):
            out["timezone"] = zone
    for key in sorted(set(raw) - {"every", "activeHours"}):
        unmapped.append(f"agents.{name}.heartbeat.{key}: no mcos equivalent, not mapped")
    return out


def _agents(config: dict[str, Any], home: Path, host: str, plan: Plan) -> dict[str, str]:
    """Fill ``plan.fleet['agents']``; OpenClaw id → mcos name."""
    agents_cfg = config.get("agents") or {}
    defaults = agents_cfg.get("defaults") or {}
    listed = agents_cfg.get("list") or [{"id": "main", "default": True}]
    # OpenClaw: once any agent has its own heartbeat block, only those agents beat.
    selective = any("heartbeat" in entry for entry in listed)
    ids: dict[str, str] = {}
    out: dict[str, Any] = {}
    for entry in listed:
        raw_id = str(entry.get("id", "main"))
        name = _name(raw_id, "agent", plan.unmapped)
        ids[raw_id] = name
        default = bool(entry.get("default")) or len(listed) == 1
        workspace = entry.get("workspace") or (defaults.get("workspace") if default else None)
        folder = _path(
            workspace
            or ("~/.openclaw/workspace" if default else f"~/.openclaw/workspace-{raw_id}"),
            home,
        )
        if folder.is_dir():
            plan.workspaces[name] = folder
        else:
            plan.unmapped.append(f"agents.{name}: workspace {folder} not found; written empty")
        role = "orchestrator" if default else name
        if default:
            plan.unmapped.append(
                f"agents.{name}: OpenClaw has no roles; the default agent is the orchestrator, "
                "each other agent's role is its name: set real roles (governance gates use them)"
            )
        agent: dict[str, Any] = {"role": role, "host": host}
        model = _model(entry.get("model", defaults.get("model")), name, plan.unmapped)
        if model is not None:
            agent["model"] = model
            agent["key"] = f"env:{_env_name(model['provider'], 'API_KEY', name)}"
            plan.unmapped.append(
                f"agents.{name}.key: set {agent['key'][4:]} to this agent's own "
                f"{model['provider']} key (OpenClaw's auth profiles are not copied)"
            )
        heartbeat = {**(defaults.get("heartbeat") or {}), **(entry.get("heartbeat") or {})}
        if selective and "heartbeat" not in entry:
            heartbeat["every"] = "0m"  # other agents have heartbeat blocks and this one none
        beat = _heartbeat(heartbeat, name, plan.unmapped)
        if beat:
            agent["heartbeat"] = beat
        for key in sorted(set(entry) - {"id", "default", "name", "workspace", "model",
                                        "heartbeat", "agentDir"}):  # fmt: skip
            plan.unmapped.append(f"agents.list[{raw_id}].{key}: not mapped")
        out[name] = agent
    plan.fleet["agents"] = out
    return ids


def _account(config: dict[str, Any], kind: str, account: str) -> dict[str, Any] | None:
    section = (config.get("channels") or {}).get(kind)
    if not isinstance(section, dict):
        return None
    accounts = section.get("accounts") or {}
    if account in accounts:
        return {**{k: v for k, v in section.items() if k != "accounts"}, **accounts[account]}
    return section if account == "default" else None


def _channel(
    kind: str, account: str, agent: str, cfg: dict[str, Any], name: str, plan: Plan
) -> dict[str, Any] | None:
    where = f"channels.{kind}.accounts.{account}"
    fallback = _env_name(kind, account, "TOKEN")
    if kind == "telegram":
        if cfg.get("tokenFile"):
            token = f"file:{cfg['tokenFile']}"
        else:
            token = _ref(cfg.get("botToken"), fallback, where, plan.unmapped)
        chats = sorted(str(c) for c in (cfg.get("groups") or {}) if str(c) != "*")
        out: dict[str, Any] = {"kind": "telegram", "agent": agent, "token": token}
        if chats:
            out["chats"] = chats
        return out
    token = _ref(cfg.get("token"), fallback, where, plan.unmapped)
    chats = sorted(
        str(channel)
        for guild in (cfg.get("guilds") or {}).values()
        if isinstance(guild, dict)
        for channel in (guild.get("channels") or {})
    )
    if not chats:
        plan.unmapped.append(
            f"{where}: a Discord account with no guild channels listed; mcos needs the channel "
            f"ids it listens in (channels.{name}.chats): not imported"
        )
        return None
    return {"kind": "discord", "agent": agent, "token": token, "chats": chats}


def _bindings(config: dict[str, Any], ids: dict[str, str], plan: Plan) -> None:
    channels: dict[str, Any] = {}
    taken: dict[tuple[str, str], str] = {}
    for i, binding in enumerate(config.get("bindings") or []):
        match = binding.get("match") or {}
        kind, account = match.get("channel"), str(match.get("accountId") or "default")
        agent = ids.get(str(binding.get("agentId")))
        where = f"bindings[{i}]"
        if agent is None:
            plan.unmapped.append(f"{where}: unknown agent {binding.get('agentId')!r}")
            continue
        if kind not in _CHANNELS:
            plan.unmapped.append(f"{where}: channel {kind!r} has no mcos kind (telegram, discord)")
            continue
        if match.get("peer") or match.get("guildId") or match.get("teamId"):
            plan.unmapped.append(
                f"{where}: peer/guild routing not mapped; {agent} receives the whole account"
            )
        if (kind, account) in taken:
            plan.unmapped.append(
                f"{where}: {kind} account {account!r} already goes to {taken[kind, account]} "
                f"(one agent an account): not bound to {agent}"
            )
            continue
        cfg = _account(config, kind, account)
        if cfg is None:
            plan.unmapped.append(f"{where}: no channels.{kind} account {account!r}")
            continue
        name = _name(f"{kind}-{account}", "channel", [])
        made = _channel(kind, account, agent, cfg, name, plan)
        if made is not None:
            channels[name] = made
            taken[kind, account] = agent
    if channels:
        plan.fleet["channels"] = channels


def _cron(jobs: list[dict[str, Any]], ids: dict[str, str], default: str, plan: Plan) -> None:
    agents = plan.fleet["agents"]
    for job in jobs:
        label = str(job.get("name") or job.get("id") or "job")
        where = f"cron job {label!r}"
        if job.get("enabled") is False:
            plan.unmapped.append(f"{where}: disabled in OpenClaw; not imported")
            continue
        agent = ids.get(str(job.get("agentId") or ""), default)
        schedule = job.get("schedule") or {}
        payload = job.get("payload") or {}
        prompt = payload.get("message") or payload.get("text")
        if schedule.get("kind") != "cron" or not valid_cron(str(schedule.get("expr"))):
            plan.unmapped.append(
                f"{where}: schedule {schedule!r} is not a five-field cron expression; not imported"
            )
            continue
        if not isinstance(prompt, str) or not prompt.strip():
            plan.unmapped.append(f"{where}: no message to run; not imported")
            continue
        entry: dict[str, Any] = {
            "name": _name(label, "cron job", plan.unmapped),
            "schedule": str(schedule["expr"]),
            "session": "main" if job.get("sessionTarget") == "main" else "isolated",
            "prompt": prompt.strip(),
        }
        if schedule.get("tz"):
            entry["timezone"] = str(schedule["tz"])
        if job.get("delivery"):
            plan.unmapped.append(
                f"{where}: delivery {job['delivery']!r} not mapped; tell the agent in the "
                "prompt where to send the result"
            )
        agents[agent].setdefault("cron", []).append(entry)


def read_install(home: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``openclaw.json`` and the cron jobs of the install at ``home``; ConfigError naming the
    file when one cannot be read."""
    config_path = home / CONFIG_FILE if home.is_dir() else home
    try:
        config = json5.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(config_path), "", "no OpenClaw config here") from None
    except ValueError as e:
        raise ConfigError(str(config_path), "", f"not JSON5: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(str(config_path), "", "the top level must be an object")
    cron_path = config_path.parent / CRON_FILE
    jobs: list[dict[str, Any]] = []
    if cron_path.is_file():
        try:
            data = json5.loads(cron_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConfigError(str(cron_path), "", f"not JSON5: {e}") from None
        jobs = data.get("jobs", []) if isinstance(data, dict) else data
    return config, jobs


def plan(home: Path, *, host: str = "local", url: str = "http://127.0.0.1:8700") -> Plan:
    """What importing the OpenClaw install at ``home`` writes, and what it cannot map."""
    config, jobs = read_install(home)
    home = home if home.is_dir() else home.parent
    defaults = (config.get("agents") or {}).get("defaults") or {}
    zone = defaults.get("userTimezone") or "UTC"
    result = Plan(
        fleet={
            "fleet": {"name": "openclaw", "timezone": zone},
            "server": {"url": url, "store": "sqlite:///state/mcos.db", "state_dir": "state"},
            "hosts": {host: {"address": "127.0.0.1"}},
            "humans": {"owner": {"role": "founder"}},
        },
        workspaces={},
    )
    ids = _agents(config, home, host, result)
    listed = (config.get("agents") or {}).get("list") or []
    default_id = next((str(a.get("id")) for a in listed if a.get("default")), None)
    default = ids.get(default_id or "", next(iter(ids.values())))
    _bindings(config, ids, result)
    _cron(jobs, ids, default, result)
    for key in sorted(set(config) - {"agents", "bindings", "channels", "meta", "wizard"}):
        result.unmapped.append(f"{CONFIG_FILE}: {key}: not mapped")
    return result


def render(fleet: dict[str, Any]) -> str:
    """The fleet file's text: a header with the hash of the body, then TOML."""
    body = tomli_w.dumps(fleet)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"{HEADER}{digest}\n{body}"


def _untouched(text: str) -> bool:
    """A fleet file this import wrote and nobody edited since."""
    first, _, body = text.partition("\n")
    return (
        first.startswith(HEADER)
        and first[len(HEADER) :] == hashlib.sha256(body.encode()).hexdigest()
    )


def _sync(source: Path, target: Path, *, force: bool) -> list[Path]:
    """Copy ``source``'s files into ``target`` where missing (``force``: or different); files
    already there are the agent's now (it writes its memory), so they are kept."""
    written = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or any(p in _SKIPPED_DIRS for p in relative.parts):
            continue
        destination = target / relative
        data = path.read_bytes()
        if destination.is_file() and (not force or destination.read_bytes() == data):
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)
        written.append(destination)
    return written


def write(result: Plan, out: Path, *, force: bool = False) -> list[Path]:
    """Write the fleet file, the workspaces' missing files and the report under ``out``; the
    files written (none when everything already matches). ``force`` overwrites a fleet file
    edited since the last import and workspace files that differ from OpenClaw's."""
    out.mkdir(parents=True, exist_ok=True)
    fleet_path = out / "fleet.toml"
    text = render(result.fleet)
    written: list[Path] = []
    if fleet_path.exists():
        current = fleet_path.read_text(encoding="utf-8")
        if current != text and not _untouched(current) and not force:
            raise ConfigError(
                str(fleet_path), "", "edited since the last import (pass --force to overwrite)"
            )
    if not fleet_path.exists() or fleet_path.read_text(encoding="utf-8") != text:
        fleet_path.write_text(text, encoding="utf-8")
        written.append(fleet_path)
    for name in sorted(result.fleet["agents"]):
        target = out / "agents" / name
        (target / "memory").mkdir(parents=True, exist_ok=True)
        if name in result.workspaces:
            written += _sync(result.workspaces[name], target, force=force)
    lines = ["# What `mcos import openclaw` could not map", ""]
    lines += [f"- {line}" for line in result.unmapped] or ["- nothing"]
    report = "\n".join(lines) + "\n"
    report_path = out / REPORT_FILE
    if not report_path.exists() or report_path.read_text(encoding="utf-8") != report:
        report_path.write_text(report, encoding="utf-8")
        written.append(report_path)
    return written
