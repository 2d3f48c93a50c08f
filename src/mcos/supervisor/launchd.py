"""launchd (macOS): property lists for Mission Control and a host's supervisor, written right,
and a lint of launchd's documented keys for the mistakes ``launchctl`` lets through.

What the systemd units say, in launchd's terms (``man launchd.plist``):

- restart on failure: ``KeepAlive = {SuccessfulExit = false}`` restarts a job whose exit status
  is not zero, and ``ThrottleInterval`` spaces the restarts;
- no restart on a configuration error: launchd has no ``RestartPreventExitStatus``, so the job
  runs through ``mcos launchd exec``, which turns exit 78 into a successful exit (said loudly on
  standard error first) — launchd then leaves the job stopped, as systemd does;
- the whole group stops: ``AbandonProcessGroup = false`` (the default, written out) makes
  launchd kill the job's process group when the job stops — the ``KillMode=control-group`` of
  launchd, so no old poller outlives a restart;
- logs to files: ``StandardOutPath`` and ``StandardErrorPath`` (launchd otherwise discards them);
- secrets: never in ``EnvironmentVariables`` (any local user can read a plist, and
  ``launchctl print`` shows them); use ``file:`` key references to files only the user reads.
"""

from __future__ import annotations

import plistlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from mcos.config.models import Fleet
from mcos.exceptions import EX_CONFIG
from mcos.supervisor.systemd import Finding

THROTTLE_SECONDS = 10
"""Seconds launchd waits between two starts of a job (its own default, written out)."""
EXIT_TIMEOUT_SECONDS = 30
"""Seconds between SIGTERM and SIGKILL at stop (systemd's ``TimeoutStopSec``)."""

_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "Label": str,
    "Disabled": bool,
    "UserName": str,
    "GroupName": str,
    "inetdCompatibility": dict,
    "LimitLoadToHosts": list,
    "LimitLoadFromHosts": list,
    "LimitLoadToSessionType": (str, list),
    "LimitLoadToHardware": dict,
    "LimitLoadFromHardware": dict,
    "Program": str,
    "ProgramArguments": list,
    "EnableGlobbing": bool,
    "EnableTransactions": bool,
    "EnablePressuredExit": bool,
    "OnDemand": bool,
    "ServiceIPC": bool,
    "KeepAlive": (bool, dict),
    "RunAtLoad": bool,
    "RootDirectory": str,
    "WorkingDirectory": str,
    "EnvironmentVariables": dict,
    "Umask": (int, str),
    "TimeOut": int,
    "ExitTimeOut": int,
    "ThrottleInterval": int,
    "InitGroups": bool,
    "WatchPaths": list,
    "QueueDirectories": list,
    "StartOnMount": bool,
    "StartInterval": int,
    "StartCalendarInterval": (dict, list),
    "StandardInPath": str,
    "StandardOutPath": str,
    "StandardErrorPath": str,
    "Debug": bool,
    "WaitForDebugger": bool,
    "SoftResourceLimits": dict,
    "HardResourceLimits": dict,
    "Nice": int,
    "ProcessType": str,
    "AbandonProcessGroup": bool,
    "LowPriorityIO": bool,
    "LowPriorityBackgroundIO": bool,
    "MaterializeDatalessFiles": bool,
    "LaunchOnlyOnce": bool,
    "MachServices": dict,
    "Sockets": dict,
    "LaunchEvents": dict,
    "SessionCreate": bool,
    "LegacyTimers": bool,
    "AssociatedBundleIdentifiers": (str, list),
}
"""launchd.plist(5)'s keys and their types: any other key is ignored by launchd, silently."""

_KEEPALIVE: dict[str, type] = {
    "SuccessfulExit": bool,
    "NetworkState": bool,
    "PathState": dict,
    "OtherJobEnabled": dict,
    "Crashed": bool,
    "AfterInitialDemand": dict,
}
"""The conditions launchd.plist(5) documents under ``KeepAlive``."""

_PROCESS_TYPES = ("Background", "Standard", "Adaptive", "Interactive")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
EXEC_WORDS = ("launchd", "exec")
"""How a job's arguments go through the exit-78 guard: ``… -m mcos launchd exec -- …``."""


def launchd_exit(code: int) -> int:
    """The status to give launchd for an mcos exit status: a configuration error (78) becomes
    0, so ``KeepAlive = {SuccessfulExit = false}`` leaves the job stopped instead of restarting
    it every ``ThrottleInterval`` seconds; everything else is passed on."""
    return 0 if code == EX_CONFIG else code


@dataclass(frozen=True)
class Plist:
    """A property list to write: ``LABEL.plist``."""

    label: str
    content: dict[str, Any]

    @property
    def name(self) -> str:
        """The file name launchd expects: the label and ``.plist``."""
        return f"{self.label}.plist"

    def dumps(self) -> bytes:
        """XML property list bytes."""
        return plistlib.dumps(self.content, fmt=plistlib.FMT_XML, sort_keys=True)


def _job(label: str, args: list[str], workdir: Path, logs: Path, user: str | None) -> Plist:
    content: dict[str, Any] = {
        "Label": label,
        "ProgramArguments": [sys.executable, "-P", "-m", "mcos", *EXEC_WORDS, "--", *args],
        "WorkingDirectory": str(workdir),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ExitTimeOut": EXIT_TIMEOUT_SECONDS,
        "AbandonProcessGroup": False,
        "ProcessType": "Standard",
        "StandardOutPath": str(logs / f"{label}.out.log"),
        "StandardErrorPath": str(logs / f"{label}.err.log"),
    }
    if user:
        content["UserName"] = user
    return Plist(label, content)


def generate(
    fleet: Fleet, host: str, *, user: str | None = None, server: bool = True
) -> list[Plist]:
    """Property lists for the supervisor of ``host`` and (``server``) Mission Control.

    Labels are ``org.mcos.FLEET.HOST`` and ``org.mcos.FLEET.server``; logs go to the fleet's
    ``STATE/logs/``. Install them in ``/Library/LaunchDaemons`` (with ``user``) or
    ``~/Library/LaunchAgents`` and ``launchctl bootstrap`` them (docs/supervisor.md).
    """
    slug = re.sub(r"[^a-z0-9-]", "-", fleet.fleet.name.lower())
    workdir = fleet.base_dir
    logs = fleet.state_dir / "logs"
    path = str(fleet.path)
    out = [_job(f"org.mcos.{slug}.{host}", ["up", "--host", host, "--fleet", path], workdir,
                logs, user)]  # fmt: skip
    if server:
        out.insert(
            0, _job(f"org.mcos.{slug}.server", ["server", "--fleet", path], workdir, logs, user)
        )
    return out


def _types(file: str, data: dict[str, Any]) -> list[Finding]:
    out = []
    for key, value in data.items():
        expected = _TOP_LEVEL.get(key)
        if expected is None:
            out.append(Finding(file, 0, f"{key}: not a launchd key (launchd ignores it silently)"))
        elif not isinstance(value, expected) or (
            isinstance(value, bool) and expected in (int, (int, str))
        ):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(k.__name__ for k in kinds)
            out.append(Finding(file, 0, f"{key}: must be {names}, not {type(value).__name__}"))
    return out


_KEEPALIVE_TRUE = (
    "KeepAlive = true restarts every exit, a configuration error (78) too, in a loop; use "
    "KeepAlive = {SuccessfulExit = false}"
)
_UNGUARDED = (
    "a configuration error (exit 78) would be restarted in a loop: run the command through "
    "`mcos launchd exec --`"
)


def _keep_alive(file: str, data: dict[str, Any]) -> list[str]:
    """KeepAlive restarts failures only, never a configuration error, with a pause."""
    keep = data.get("KeepAlive")
    if keep is None:
        return [
            "no KeepAlive: a crash leaves the job down; add KeepAlive = {SuccessfulExit = false}"
        ]
    out = []
    if keep is True:
        out.append(_KEEPALIVE_TRUE)
    elif isinstance(keep, dict):
        for key, value in keep.items():
            expected = _KEEPALIVE.get(key)
            if expected is None:
                out.append(f"KeepAlive.{key}: not a KeepAlive condition")
            elif not isinstance(value, expected):
                out.append(f"KeepAlive.{key}: must be {expected.__name__}")
        if keep.get("SuccessfulExit") is not False:
            out.append(
                "KeepAlive without SuccessfulExit = false: a crash is not restarted, or a clean "
                "stop is"
            )
    if keep is not False:
        args = data.get("ProgramArguments")
        words = [str(a) for a in args] if isinstance(args, list) else []
        if not any(words[i : i + 2] == list(EXEC_WORDS) for i in range(len(words))):
            out.append(_UNGUARDED)
    throttle = data.get("ThrottleInterval")
    if isinstance(throttle, int) and not isinstance(throttle, bool) and throttle < 1:
        out.append(f"ThrottleInterval = {throttle}: restarts with no pause")
    return out


def _process(data: dict[str, Any]) -> list[str]:
    """The whole group stops with the job; its output goes to files."""
    out = []
    if data.get("AbandonProcessGroup") is True:
        out.append(
            "AbandonProcessGroup = true leaves child processes alive across a restart "
            "(duplicate pollers); set it to false"
        )
    out.extend(
        f"no {key}: launchd discards that output; log to a file"
        for key in ("StandardOutPath", "StandardErrorPath")
        if key not in data
    )
    process_type = data.get("ProcessType")
    if isinstance(process_type, str) and process_type not in _PROCESS_TYPES:
        out.append(f"ProcessType {process_type!r}: not one of {', '.join(_PROCESS_TYPES)}")
    return out


def _environment(data: dict[str, Any]) -> list[str]:
    """No secret, and no empty value, in EnvironmentVariables."""
    env = data.get("EnvironmentVariables")
    out: list[str] = []
    if not isinstance(env, dict):
        return out
    for name, value in env.items():
        if not str(value).strip():
            out.append(
                f"EnvironmentVariables.{name} is empty: the job starts with a missing secret; "
                "fix or remove it"
            )
        elif _SECRET_NAME.search(str(name)):
            out.append(
                f"EnvironmentVariables carries the secret {name}: any local user can read the "
                "plist; use a file: key reference"
            )
    return out


def check(path: Path) -> list[Finding]:
    """What ``launchctl`` accepts but breaks a fleet: unknown or mistyped keys, a restart loop
    on exit 78, an abandoned process group, lost logs, secrets in the environment."""
    file = str(path)
    try:
        data = plistlib.loads(path.read_bytes())
    except (plistlib.InvalidFileException, ValueError, ExpatError) as e:
        return [Finding(file, 0, f"not a property list: {e}")]
    except OSError as e:
        return [Finding(file, 0, f"cannot read: {e.strerror}")]
    if not isinstance(data, dict):
        return [Finding(file, 0, "not a launchd job: the top level must be a dictionary")]
    problems = []
    label = data.get("Label")
    if not isinstance(label, str) or not label:
        problems.append("no Label: launchd refuses the job")
    elif path.suffix == ".plist" and path.stem != label:
        problems.append(f"Label {label!r} differs from the file name {path.name}")
    if "ProgramArguments" not in data and "Program" not in data:
        problems.append("neither Program nor ProgramArguments: nothing to run")
    problems += _keep_alive(file, data) + _process(data) + _environment(data)
    return _types(file, data) + [Finding(file, 0, p) for p in problems]
