"""Which web addresses an agent may browse: its fleet file's ``allowed_domains``, as pure rules.

A pattern is a host name (``example.com``: that host only, any port) or ``*.`` and a suffix
(``*.gov``: every host under ``gov``, not ``gov`` itself). Only ``http``/``https`` addresses to
an allowed host pass, plus ``about:blank``; an address with a user or password in it never does
(``https://x.gov:pw@evil.example/`` names the host ``evil.example``, and glob matchers misread
it). The same list becomes the Playwright MCP server's ``--allowed-origins`` (its own check,
which its authors say is no security boundary: the runtime checks too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
NOWHERE = "mcos-nothing.invalid"
"""The one origin given to the browser when no domain is allowed (``.invalid`` never resolves;
an empty ``--allowed-origins`` would allow everything)."""
_PAGE_URL = re.compile(r"^- Page URL: (\S+)", re.MULTILINE)


def check_pattern(pattern: str) -> str:
    """A valid domain pattern, lowercased; else ``ValueError`` saying what is wrong."""
    p = pattern.strip().lower()
    if "://" in p or "/" in p or ":" in p or "@" in p:
        msg = f"{pattern!r} is not a domain: give the host only (example.com or *.example.com)"
        raise ValueError(msg)
    if p in {"*", "*."} or not _HOST.match(p):
        msg = (
            f"{pattern!r} is not a domain pattern (a host such as example.com, or *.example.com "
            "for the hosts under it; international names in their xn-- form)"
        )
        raise ValueError(msg)
    return p


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` is one a pattern allows (exactly, or under a ``*.`` suffix)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def refusal(url: str, patterns: Sequence[str]) -> str | None:  # noqa: PLR0911 (one rule a return)
    """Why ``url`` may not be opened (None: it may)."""
    if url.strip() == "about:blank":
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        _ = parts.port  # a malformed port raises here
    except ValueError as e:
        return f"{url!r} is not a valid address ({e})"
    if parts.scheme.lower() not in {"http", "https"}:
        return f"only http and https addresses may be opened, not {parts.scheme or 'none'}:"
    if parts.username is not None or parts.password is not None:
        return "an address with a user name or password in it is never opened"
    if not host:
        return f"{url!r} names no host"
    if not host_allowed(host, patterns):
        allowed = ", ".join(patterns) or "none"
        return f"{host} is not an allowed domain (allowed: {allowed})"
    return None


def origins_arg(patterns: Sequence[str]) -> str:
    """``--allowed-origins`` for @playwright/mcp: each pattern on any port (``host`` and
    ``host:*``), semicolon-separated; a never-resolving origin when nothing is allowed."""
    if not patterns:
        return NOWHERE
    return ";".join(item for p in patterns for item in (p, f"{p}:*"))


def pages_shown(result: str) -> list[str]:
    """The page addresses a Playwright MCP result reports (``- Page URL: …`` lines)."""
    return _PAGE_URL.findall(result)
