"""Deterministic health checks a heartbeat runs before deciding whether to call the model."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass

import httpx
import psutil

from mcos.config.models import CheckConfig, parse_duration


@dataclass(frozen=True)
class CheckResult:
    """One run of one check."""

    name: str
    ok: bool
    detail: str
    seconds: float


async def _http(check: CheckConfig, url: str, timeout: float, client: httpx.AsyncClient) -> str:
    response = await client.get(url, timeout=timeout, follow_redirects=False)
    if response.status_code != check.expect_status:
        return f"HTTP {response.status_code} from {url} (expected {check.expect_status})"
    if check.contains is not None and check.contains not in response.text:
        return f"{url} answered {response.status_code} without {check.contains!r}"
    return ""


async def _tcp(address: str, timeout: float) -> str:
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return f"no TCP connection to {address} within {timeout:g}s"
    except OSError as e:
        return f"no TCP connection to {address} ({e.strerror or e.__class__.__name__})"
    writer.close()
    await writer.wait_closed()
    return ""


def _process(pattern: str) -> str:
    for p in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if pattern in (p.info["name"] or "") or pattern in " ".join(p.info["cmdline"] or []):
                return ""
    return f"no running process matches {pattern!r}"


async def _systemd(unit: str, timeout: float) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            "systemctl", "is-active", unit,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except FileNotFoundError:
        return f"cannot check {unit}: systemctl is not installed on this host"
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        return f"systemctl is-active {unit} did not answer within {timeout:g}s"
    state = out.decode(errors="replace").strip() or "unknown"
    return "" if proc.returncode == 0 else f"{unit} is {state}"


def _disk(path: str, min_free: float) -> str:
    try:
        usage = shutil.disk_usage(path)
    except OSError as e:
        return f"cannot read disk usage of {path}: {e.strerror or e}"
    free = usage.free / usage.total * 100 if usage.total else 0.0
    if free < min_free:
        return f"{path}: {free:.1f}% free, below {min_free:g}% ({usage.free // 2**20} MiB left)"
    return ""


async def run_check(check: CheckConfig, client: httpx.AsyncClient) -> CheckResult:
    """Run one check; a failure's detail says what was expected and what came."""
    timeout = parse_duration(check.timeout).total_seconds()
    started = time.monotonic()
    problem = ""
    if check.http is not None:
        try:
            problem = await _http(check, check.http, timeout, client)
        except httpx.TimeoutException:
            problem = f"{check.http} did not answer within {timeout:g}s"
        except httpx.HTTPError as e:
            problem = f"{check.http}: {e.__class__.__name__} ({e})"
        limit = parse_duration(check.max_latency).total_seconds() if check.max_latency else None
        slow = time.monotonic() - started
        if not problem and limit is not None and slow > limit:
            problem = f"{check.http} answered in {slow:.2f}s, over {limit:g}s"
    elif check.tcp is not None:
        problem = await _tcp(check.tcp, timeout)
    elif check.process is not None:
        problem = await asyncio.to_thread(_process, check.process)
    elif check.systemd is not None:
        problem = await _systemd(check.systemd, timeout)
    elif check.disk is not None:
        problem = _disk(check.disk, check.min_free_percent)
    elapsed = time.monotonic() - started
    return CheckResult(check.name, not problem, problem or "healthy", elapsed)
