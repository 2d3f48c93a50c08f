"""Security headers on every response of Mission Control, API and dashboard alike.

The dashboard has no inline script or style (its one script is ``/static/live.js``), so the
policy allows scripts, styles, fetches and form posts from Mission Control's own origin only, and
no framing at all. The interactive API docs (``/docs``, ``/redoc``) load their assets from
Mission Control itself (fastapi-offline ships them: no CDN, they work without internet) and start
with an inline script: those two pages alone get a policy that allows that.
"""

from __future__ import annotations

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")


def headers_for(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers of a response to ``path``."""
    policy = DOCS_POLICY if path in DOCS_PATHS else POLICY
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]
