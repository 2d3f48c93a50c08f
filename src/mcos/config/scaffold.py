"""`mcos init`: write a working fleet from a template, with a workspace per agent.

A template is a folder of ``mcos.templates``: its ``fleet.toml``, and the workspace files of
its agents, in one of two layouts. ``workspace/`` holds files every agent gets (``small``);
``shared/`` holds files every agent gets unless ``agents/<name>/`` has its own file of the same
name (``business``). Files are ``string.Template`` text: ``$name``, ``$role``, ``$title``,
``$mission``, ``$reports_to`` and ``$checks`` are filled in, anything else is left as written.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from mcos.config.loader import load_fleet
from mcos.exceptions import ConfigError

TEMPLATES = ("small", "business")
"""The templates `mcos init --template` knows."""

_ROLES: dict[str, tuple[str, str, str]] = {
    "orchestrator": (
        "Orchestrator",
        "You turn the founder's goals into directives for the other agents, run committee "
        "decisions, and confirm P1 incidents after checking the evidence yourself.",
        "1. Read the inbox; relay urgent items to the agent that owns them.\n"
        "2. Review open directives and who is late on them.\n"
        "3. Confirm or dismiss P1 reports waiting at your gate.",
    ),
    "ops": (
        "VP Operations",
        "You keep servers and services healthy: health checks, systemd units, disk, backups. "
        "You recover services only with the allowlisted commands in the fleet file.",
        "1. Read the inbox.\n"
        "2. Run the health checks; recover what is down with allowlisted commands only.\n"
        "3. Report what you could not fix to the orchestrator.",
    ),
    "security": (
        "Security",
        "Your scope is narrow on purpose: infrastructure health and incident detection. You are "
        "not an incident commander or a threat analyst. You report observations as hypotheses; "
        "the escalation gates decide what becomes an incident.",
        "1. Read the inbox.\n"
        "2. Look for failed logins, expiring certificates and unexpected open ports.\n"
        "3. Report findings with evidence; never declare a fleet-wide incident alone.",
    ),
}


def _files(template: str) -> Traversable:
    return resources.files("mcos.templates") / template


def _workspace_files(source: Traversable, agent: str) -> dict[str, Traversable]:
    """An agent's template files by name: its own folder's files over the shared ones."""
    found: dict[str, Traversable] = {}
    for folder in (source / "workspace", source / "shared", source / "agents" / agent):
        if folder.is_dir():
            found.update(
                {e.name: e for e in folder.iterdir() if e.is_file() and not e.name.startswith(".")}
            )
    return found


def init_fleet(directory: Path, *, template: str = "small", force: bool = False) -> Path:
    """Write ``DIR/fleet.toml`` and each agent's workspace; returns the fleet file's path.

    Without ``force`` an existing fleet file is refused and existing workspace files are kept
    (only missing ones are written); ``force`` overwrites both.
    """
    if template not in TEMPLATES:
        raise ConfigError(
            str(directory),
            "--template",
            f"unknown template {template!r} (known: {', '.join(TEMPLATES)})",
        )
    fleet_path = directory / "fleet.toml"
    if fleet_path.exists() and not force:
        raise ConfigError(str(fleet_path), "", "already exists (pass --force to overwrite)")
    source = _files(template)
    directory.mkdir(parents=True, exist_ok=True)
    fleet_path.write_text((source / "fleet.toml").read_text(encoding="utf-8"), encoding="utf-8")
    fleet = load_fleet(fleet_path)
    for name, agent in fleet.agents.items():
        title, mission, checks = _ROLES.get(agent.role, (agent.role, "", "1. Read the inbox."))
        values = {
            "name": name,
            "title": title,
            "role": agent.role,
            "mission": mission,
            "reports_to": agent.reports_to or "the founder",
            "checks": checks,
        }
        workspace = fleet.workspace_path(name)
        (workspace / "memory").mkdir(parents=True, exist_ok=True)
        for file_name, entry in sorted(_workspace_files(source, name).items()):
            target = workspace / file_name
            if target.exists() and not force:
                continue
            text = Template(entry.read_text(encoding="utf-8")).safe_substitute(values)
            target.write_text(text, encoding="utf-8")
    return fleet_path
