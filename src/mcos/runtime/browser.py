"""The runtime's side of a browser MCP server (``kind = "browser"``): domains, refusals, audit.

The Playwright MCP server is told the agent's allowed domains (``--allowed-origins``), but its
authors say that check is no security boundary, so Mission Control's runtime checks too, on its
side of the wire: every ``url`` argument before a call is forwarded, and every page address a
result reports after it (a redirect or a script that left the allowlist: the content is
withheld and the browser sent to ``about:blank``). Tools that run arbitrary code in the server
or hand it files of the host are refused outright. Each call is audited
(``runtime.browser.fetch``), each refusal too (``runtime.browser.refused``).

Navigation within the allowlist counts as reading (it changes nothing but what the agent
sees), so it runs from a turn holding untrusted content; clicking, typing and the other tools
that act on a page stay writes, behind the runtime's one gate like any MCP tool that writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcos.domain.browsing import origins_arg, pages_shown, refusal

REFUSED_TOOLS: Mapping[str, str] = {
    "browser_run_code_unsafe": "it runs arbitrary code in the browser server, past the allowlist",
    "browser_file_upload": "it hands the page files of the host",
    "browser_drop": "it hands the page files of the host",
}
"""Browser tools never forwarded, with why."""
NAVIGATION = frozenset(
    {"browser_navigate", "browser_navigate_back", "browser_tabs", "browser_close"}
)
"""Tools that only change which (allowed) page is shown: reads, not writes."""
CHECKOUT_BIN = Path(__file__).resolve().parents[3] / "tools" / "browser" / "node_modules" / ".bin"
"""Where ``make browser-mcp`` installs the server's program in a source checkout of mcos."""
BLANK = "about:blank"
ERROR_PAGE = "chrome-error://chromewebdata/"
"""Chromium's own page for a load it refused or failed (the browser's allowlist shows so)."""


def locate(program: str, base_dir: Path) -> str:
    """The browser server's program: a relative path from the fleet's folder; a bare name from
    ``PATH``, else from this checkout's ``tools/browser`` (so ``playwright-mcp`` works in a
    fleet kept anywhere once ``make browser-mcp`` ran)."""
    if "/" in program:
        return program if Path(program).is_absolute() else str(base_dir / program)
    if shutil.which(program) is None and (CHECKOUT_BIN / program).exists():
        return str(CHECKOUT_BIN / program)
    return program


def _urls(value: Any, key: str = "") -> Iterator[str]:
    """Every string under a ``url`` key, at any depth of a tool's arguments."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _urls(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _urls(item, key)
    elif isinstance(value, str) and key.lower() == "url":
        yield value


@dataclass(frozen=True)
class BrowserGuard:
    """One agent's allowlist on one browser server."""

    server: str
    domains: tuple[str, ...]

    def args(self, output_dir: Path) -> list[str]:
        """What the runtime appends to the server's command for this agent."""
        return ["--allowed-origins", origins_arg(self.domains), "--output-dir", str(output_dir)]

    def reads(self, tool: str) -> bool:
        """Whether ``tool`` only moves between allowed pages (checked here, not gated)."""
        return tool in NAVIGATION

    def before(self, tool: str, arguments: Mapping[str, Any]) -> tuple[str, str] | None:
        """(rule, address) refusing a call before it is forwarded; None: forward it."""
        if tool in REFUSED_TOOLS:
            return f"{tool} is never allowed: {REFUSED_TOOLS[tool]}", ""
        for url in _urls(arguments):
            if (why := refusal(url, self.domains)) is not None:
                return why, url
        return None

    def after(self, text: str) -> tuple[str, str] | None:
        """(rule, address) when a result shows a page outside the allowlist; None: keep it."""
        for url in pages_shown(text):
            if url != ERROR_PAGE and (why := refusal(url, self.domains)) is not None:
                return f"the browser ended up outside the allowlist: {why}", url
        return None

    def target(self, arguments: Mapping[str, Any], text: str) -> str:
        """The address a call fetched, for the audit: its ``url``, else the page it shows."""
        return next(_urls(arguments), None) or next(iter(pages_shown(text)), "")
