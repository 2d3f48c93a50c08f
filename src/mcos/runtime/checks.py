"""Deterministic health checks a heartbeat runs before deciding whether to call the model."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

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


async def run_check(check: CheckConfig, client: httpx.AsyncClient) -> CheckResult:
    """Run one check; a failure's detail says what was expected and what came."""
    timeout = parse_duration(check.timeout).total_seconds()
    started = time.monotonic()
    if check.http is not None:
        try:
            problem = await _http(check, check.http, timeout, client)
        except httpx.TimeoutException:
            problem = f"{check.http} did not answer within {timeout:g}s"
        except httpx.HTTPError as e:
            problem = f"{check.http}: {e.__class__.__name__} ({e})"
    else:
        problem = await _tcp(check.tcp or "", timeout)
    elapsed = time.monotonic() - started
    return CheckResult(check.name, not problem, problem or "healthy", elapsed)
