"""`mcos doctor`: every way an installation can be broken, one line each, with the fix.

A secret that resolves to nothing, a store one migration behind, a clock seven hours off, a
unit file that leaves children alive: each is found here before it costs an outage. Secret
values are never printed — only that they are present and how long they are.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mcos.config import load_fleet
from mcos.config.loader import shared_key_values
from mcos.config.models import Fleet
from mcos.config.secrets import GATEWAY_NOTE, Resolved, resolve_all
from mcos.domain.prices import ListedPrice, deprecation_of
from mcos.domain.redaction import redact
from mcos.exceptions import ConfigErrors, McosError
from mcos.runtime.clock import offset_from
from mcos.store import make_store
from mcos.store.migrations import latest
from mcos.supervisor import systemd

CLOCK_LIMIT = timedelta(seconds=2)
MIN_FREE_PERCENT = 10.0


@dataclass(frozen=True)
class Verdict:
    """One line of the diagnosis."""

    check: str
    status: str
    """``ok``, ``warn`` or ``fail``."""
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        """Whether this line makes doctor exit non-zero."""
        return self.status == "fail"

    def as_dict(self) -> dict[str, str]:
        """For ``--json``."""
        return asdict(self)


def _config(path: Path) -> tuple[Fleet | None, list[Verdict]]:
    try:
        fleet = load_fleet(path)
    except ConfigErrors as e:
        return None, [
            Verdict("config", "fail", err.message, "edit the fleet file; see docs/fleet-file.md")
            for err in e.errors
        ]
    out = [Verdict("config", "ok", f"{path}: {len(fleet.agents)} agents, {len(fleet.hosts)} hosts")]
    out += [Verdict("config", "warn", w) for w in fleet.warnings]
    return fleet, out


async def live_check(provider: str, key: str, base_url: str | None) -> str:
    """One cheap, free call with the key (list models); '' when the provider accepts it."""
    try:
        if provider == "anthropic":
            import anthropic  # noqa: PLC0415 (only when asked to go live)

            async with anthropic.AsyncAnthropic(
                api_key=key, base_url=base_url, max_retries=0, timeout=10
            ) as claude:
                await claude.models.list(limit=1)
        else:
            import openai  # noqa: PLC0415

            async with openai.AsyncOpenAI(
                api_key=key, base_url=base_url, max_retries=0, timeout=10
            ) as gpt:
                await gpt.models.list()
    except Exception as e:
        status = getattr(e, "status_code", None)
        why = "the key was refused" if status in (401, 403) else type(e).__name__
        return redact(f"{why} ({status or 'no answer'})")
    return ""


async def _secrets(fleet: Fleet, resolved: list[Resolved], *, live: bool = False) -> list[Verdict]:
    keys = {r.use.where: r for r in resolved}
    out = []
    for name, agent in sorted(fleet.agents.items()):
        if agent.key is None:
            if agent.model.provider != "offline":
                out.append(
                    Verdict(
                        f"secret {name}",
                        "fail",
                        "no key reference",
                        f'set agents.{name}.key = "env:VAR"',
                    )
                )
            continue
        key = keys[f"agents.{name}.key"]
        gateway = agent.model.through_gateway
        if key.problem:
            problem = key.problem + (GATEWAY_NOTE if gateway else "")
            out.append(Verdict(f"secret {name}", "fail", problem, _secret_fix(agent.key, gateway)))
            continue
        value = key.value
        detail = f"{agent.key} present ({len(value)} chars)"
        if live:
            problem = await live_check(agent.model.provider, value, agent.model.base_url)
            if problem:
                out.append(
                    Verdict(
                        f"secret {name}",
                        "fail",
                        f"{detail}; live check: {problem}",
                        "replace the key, or check the provider account",
                    )
                )
                continue
            detail += f"; accepted by {agent.model.provider}"
        out.append(Verdict(f"secret {name}", "ok", detail + (GATEWAY_NOTE if gateway else "")))
    if not out:
        out.append(Verdict("secrets", "ok", "no agent needs a key (offline models)"))
    return out


def _secret_fix(reference: str, gateway: bool = False) -> str:
    kind, _, name = reference.partition(":")
    service = "Mission Control's" if gateway else "the service's"
    return {
        "env": f"export {name}=… in {service} environment (a systemd credential is safer)",
        "file": f"write the key to {name} (mode 0600)",
        "credential": f"add LoadCredential={name}:/path/to/key to the unit",
    }.get(kind, "fix the key reference")


async def _store(fleet: Fleet) -> Verdict:
    store = make_store(fleet.store_url)
    try:
        version = await store.schema_version()
    except McosError as e:
        return Verdict("store", "fail", e.message, "start the database, or fix server.store")
    finally:
        await store.close()
    wanted = latest("sqlite" if fleet.store_url.startswith("sqlite") else "postgres")
    if version < wanted:
        return Verdict(
            "store",
            "fail",
            f"schema version {version}, this mcos needs {wanted}",
            "run `mcos db upgrade`",
        )
    return Verdict("store", "ok", f"{fleet.store_url.split(':', 1)[0]} at schema version {version}")


def _mission_control(fleet: Fleet) -> list[Verdict]:
    base = fleet.server.url.rstrip("/")
    try:
        health = httpx.get(base + "/healthz", timeout=3)
        sent = datetime.now(UTC)
        started = time.monotonic()
        answer = httpx.get(base + "/v1/time", timeout=3)
        received = sent + timedelta(seconds=time.monotonic() - started)
    except httpx.HTTPError as e:
        return [
            Verdict(
                "mission control",
                "warn",
                f"{base} does not answer ({type(e).__name__})",
                "start it with `mcos server` (or `mcos run`) to check the clock too",
            )
        ]
    out = [
        Verdict(
            "mission control",
            "ok" if health.status_code == 200 else "fail",
            f"{base}/healthz answered {health.status_code}",
        )
    ]
    if answer.status_code == 200:
        server = datetime.fromisoformat(answer.json()["now"])
        sample = offset_from(sent, server, received)
        skew = abs(sample.offset)
        status = "ok" if skew <= CLOCK_LIMIT else "fail"
        out.append(
            Verdict(
                "clock",
                status,
                f"this machine is {sample.offset.total_seconds():+.3f}s from Mission Control "
                f"(round trip {sample.round_trip.total_seconds() * 1000:.0f} ms)",
                "" if status == "ok" else "fix NTP on this host (chrony/systemd-timesyncd)",
            )
        )
    return out


def _metrics_exposure(fleet: Fleet) -> list[Verdict]:
    """``/metrics`` shows per-agent spend and queue depths: beyond loopback it wants a token."""
    host = urlsplit(fleet.server.url).hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if loopback or fleet.server.metrics_token is not None:
        return []
    return [
        Verdict(
            "metrics",
            "warn",
            f"/metrics is open to anyone who reaches {host} (per-agent spend, queue depths)",
            'set [server] metrics_token = "env:MCOS_METRICS_TOKEN" (see docs/ops.md)',
        )
    ]


def _channels(fleet: Fleet, resolved: list[Resolved]) -> list[Verdict]:
    """Each channel's credentials resolve (never echoed); a mock channel's folder is writable."""
    if not fleet.channels:
        return [Verdict("channels", "ok", "no channel accounts configured")]
    out = []
    for name, c in sorted(fleet.channels.items()):
        owner = f"for {c.agent}" if c.agent else "Mission Control's own (paging)"
        if not c.enabled:
            out.append(
                Verdict(f"channel {name}", "ok", f"{c.kind} {owner}: parked (enabled = false)")
            )
            continue
        mine = [r for r in resolved if r.use.where.startswith(f"channels.{name}.")]
        refs = [r.use.reference for r in mine]
        broken = next((r for r in mine if r.problem), None)
        if broken is not None:
            detail = f"{fleet.path}: {broken.use.where}: {broken.problem}"
            out.append(Verdict(f"channel {name}", "fail", detail, "set the secret it names"))
            continue
        if c.kind == "mock":
            folder = fleet.channel_path(name)
            ok = os.access(folder if folder.exists() else folder.parent, os.W_OK)
            detail = f"{c.kind} {owner}: folder {folder}" + ("" if ok else " is not writable")
            out.append(Verdict(f"channel {name}", "ok" if ok else "fail", detail))
            continue
        secrets = f"{len(refs)} secret(s) resolved" if refs else "no secrets"
        out.append(Verdict(f"channel {name}", "ok", f"{c.kind} {owner}: {secrets}"))
    return out


def _mcp_secrets(fleet: Fleet, resolved: list[Resolved]) -> list[Verdict]:
    """MCP servers' environment values written as key references resolve (never echoed)."""
    return [
        Verdict(
            f"mcp {r.use.where.split('.')[1]}",
            "fail" if r.problem else "ok",
            f"{r.use.where}: {r.problem or f'{r.use.reference} present ({len(r.value)} chars)'}",
            "set the secret it names" if r.problem else "",
        )
        for r in resolved
        if r.use.where.startswith("mcp.")
    ]


def _models(fleet: Fleet, today: date) -> list[Verdict]:
    """Each hosted model: how it is priced today, and whether its id is deprecated or retired
    (with the replacement). An unpriced model with a dollar budget never gets here: the fleet
    file is refused at load."""
    out = []
    for name, agent in sorted(fleet.agents.items()):
        model = agent.model
        if model.provider == "offline":
            continue
        price = fleet.pricing(name)
        if price is None:
            source = "no price known: its calls count as free"
        else:
            rates = price.ceiling(0, datetime.combine(today, datetime.min.time(), UTC))
            origin = (
                f"genai-prices ({price.provider} {price.model})"
                if isinstance(price, ListedPrice)
                else "[prices]"
            )
            source = (
                f"priced by {origin}: {rates.input:g} in / {rates.output:g} out USD per "
                "million tokens"
            )
        found = deprecation_of(model.provider, model.id, model.base_url)
        if found is not None:
            out.append(
                Verdict(
                    f"model {name}",
                    "warn",
                    f"{found.message(today)} ({source})",
                    f'set agents.{name}.model.id = "{found.replacement}"'
                    if found.replacement
                    else "move to a current model",
                )
            )
        else:
            status = "ok" if price is not None else "warn"
            out.append(Verdict(f"model {name}", status, f"{model.id}: {source}"))
    return out


def _disk(fleet: Fleet) -> Verdict:
    folder = fleet.state_dir if fleet.state_dir.exists() else fleet.base_dir
    usage = shutil.disk_usage(folder)
    free = usage.free / usage.total * 100 if usage.total else 0.0
    status = "ok" if free >= MIN_FREE_PERCENT else "fail"
    return Verdict(
        "disk",
        status,
        f"{folder}: {free:.0f}% free ({usage.free // 2**30} GiB)",
        "" if status == "ok" else "free space: logs, old backups, docker images",
    )


def _units(paths: list[Path]) -> list[Verdict]:
    out = []
    for path in paths:
        files = sorted(path.glob("*.service")) if path.is_dir() else [path]
        for f in files:
            problems = systemd.check(f)
            if not problems:
                out.append(Verdict(f"unit {f.name}", "ok", "no problems"))
            out += [
                Verdict(f"unit {f.name}", "fail", p.problem, f"line {p.line}") for p in problems
            ]
    return out


async def diagnose(
    fleet_path: Path, *, units: list[Path] | None = None, live: bool = False
) -> list[Verdict]:
    """Every check, in order; later ones are skipped when the fleet file does not load."""
    fleet, verdicts = _config(fleet_path)
    if fleet is None:
        return verdicts
    resolved = resolve_all(fleet)  # the same judgement as `mcos config check`
    verdicts += [
        Verdict("config", "fail", e.message, "one key per agent, or shared_key = true on each")
        for e in shared_key_values(fleet, str(fleet.path), resolved)
    ]
    verdicts += await _secrets(fleet, resolved, live=live)
    verdicts.append(await _store(fleet))
    verdicts += _mission_control(fleet)
    verdicts += _metrics_exposure(fleet)
    verdicts += _channels(fleet, resolved)
    verdicts += _mcp_secrets(fleet, resolved)
    verdicts += _models(fleet, datetime.now(UTC).date())
    verdicts += _units(units or [])
    verdicts.append(_disk(fleet))
    return verdicts
